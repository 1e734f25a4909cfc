# rewardseg: `make study` sets up and runs the default study; `make test` runs the tests.
# TORCH selects the PyTorch build installed into the venv (default: the CPU build used in
# CI). On a GPU machine pass your CUDA build, e.g.
#   make setup TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CORES ?= all
BIN := $(VENV)/bin

.PHONY: setup study test bench clean-results

$(BIN)/rewardseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

setup: $(BIN)/rewardseg

study: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_reward.py
	$(BIN)/python bench/bench_step.py
