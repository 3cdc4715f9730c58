# Two entry points, each self-contained on a fresh machine:
#   make demo   set up .venv and run the headline job
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench-graph figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/surgeon inspect resnet50

test: $(STAMP)
	$(BIN)/python -m pytest -q

figures: $(STAMP)
	$(BIN)/python examples/block_graph.py

bench-graph: $(STAMP)
	$(BIN)/python bench/graph_coverage.py --models resnet50,vit_base_patch16_224 --repeat 5 --out bench/out/speed.jsonl

clean:
	rm -rf $(VENV) build *.egg-info
