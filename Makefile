# One-command set-up and tests. `make test` creates .venv (if needed), installs the package with its dev
# tools, runs the linter and the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint bench demo benchmark clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --use-pep517 -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m clip_seg3d_ros.tools.bench $(ARGS)

# The main job on a machine without data: train on the synthetic world, evaluate, say where the results are.
demo: setup
	$(BIN)/python training/train.py --config config/train/synthetic.yaml --out runs/demo $(ARGS)

# The ablation table of the README (a)-(e) + annotation-free, on the synthetic world.
benchmark: setup
	$(BIN)/python training/benchmark.py --out runs/benchmark $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache runs
