# Two entry points, each self-contained on a fresh machine:
#   make demo   set up .venv and run the headline job
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench-graph bench-alternate figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/surgeon alternate resnet50 --stages c2,c3 --out alternet.safetensors --force
	$(BIN)/surgeon info alternet.safetensors

test: $(STAMP)
	$(BIN)/python -m pytest -q

figures: $(STAMP)
	$(BIN)/python examples/block_graph.py
	$(BIN)/python examples/alternate.py

bench-graph: $(STAMP)
	$(BIN)/python bench/graph_coverage.py --models resnet50,vit_base_patch16_224 --repeat 5 --out bench/out/speed.jsonl

bench-alternate: $(STAMP)
	$(BIN)/python bench/alternate_speed.py --repeat 5

clean:
	rm -rf $(VENV) build *.egg-info
