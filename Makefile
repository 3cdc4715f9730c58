# Two entry points, each self-contained on a fresh machine:
#   make demo   set up .venv and run the headline job
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all test-numeric bench-graph bench-alternate bench-probes bench-curvature bench-train bench-search figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/surgeon alternate resnet50 --stages c2,c3 --out alternet.safetensors --force
	$(BIN)/surgeon info alternet.safetensors
	$(BIN)/surgeon probe fourier resnet50 alternet.safetensors --out fourier.png --force

PYTEST := $(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

test: $(STAMP)   # one pytest-xdist worker per core (at most 4), a test file per worker; tests/conftest.py shares the threads
	$(PYTEST) -m "not slow"

test-all: $(STAMP)   # the default tier and the slow tier (full Ray / torchrun runs): before every submission
	$(PYTEST)

test-numeric: $(STAMP)   # tests that assert float results, on the portable kernels (another CPU's last bits)
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q -m numeric

figures: $(STAMP)
	$(BIN)/python examples/block_graph.py
	$(BIN)/python examples/alternate.py
	$(BIN)/python examples/probes.py
	$(BIN)/python examples/curvature.py
	$(BIN)/python examples/training.py
	$(BIN)/python examples/robustness.py
	$(BIN)/python examples/lesions.py
	OMP_NUM_THREADS=1 $(BIN)/python examples/search.py
	$(BIN)/python examples/compare_digits.py   # trains three models (cached), then surgeon compare: docs/compare-digits/

bench-graph: $(STAMP)
	$(BIN)/python bench/graph_coverage.py --models resnet50,vit_base_patch16_224 --repeat 5 --out bench/out/speed.jsonl

bench-alternate: $(STAMP)
	$(BIN)/python bench/alternate_speed.py --repeat 5

bench-probes: $(STAMP)
	$(BIN)/python bench/probe_overhead.py --repeat 9 --threads 2

bench-curvature: $(STAMP)   # PyHessian is the baseline: installed into the bench environment only
	$(BIN)/python -m pip install --quiet --no-deps pyhessian
	$(BIN)/python bench/hessian_speed.py --repeat 3 --threads 2

bench-train: $(STAMP)
	$(BIN)/python bench/train_speed.py --model resnet18 --repeat 3 --threads 2

bench-search: $(STAMP)
	$(BIN)/python bench/search_speed.py --threads 1

clean:
	rm -rf $(VENV) build *.egg-info
