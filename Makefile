# rewardseg: `make study` sets up and runs the default study; `make test` runs the tests.
# Neither needs an activated venv: the recipes put the venv's bin folder first on PATH,
# so the workflow's jobs find `rewardseg`, `jupyter`, ... by name.
#   make study STUDY=configs/studies/smoke.yaml   # another study (its config file)
#   make study CORES=4                            # at most 4 cores (default: all)
#   make figures        # figures, tables, deck, notebook from paper/recorded/default: no training
# TORCH selects the PyTorch build installed into the venv (default: the CPU build used in
# CI). On a GPU machine pass your CUDA build, e.g.
#   make setup TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CORES ?= all
# a study config file; empty: the default study (configs/studies/default.yaml)
STUDY ?=
# a study's recorded results (rewardseg record): `make figures` rebuilds from them
RECORDED ?= paper/recorded/default
BIN := $(VENV)/bin
WITH_VENV := PATH="$(abspath $(BIN)):$$PATH"

.PHONY: setup study figures test bench

$(BIN)/rewardseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

setup: $(BIN)/rewardseg

# --show-failed-logs (a failing job's log on the console) comes from profiles/default.
study: setup
	$(WITH_VENV) $(BIN)/snakemake --cores $(CORES) $(if $(STUDY),--configfile $(STUDY))

# Every figure, table, the deck and the notebook from the recorded results, no training.
figures: setup
	$(WITH_VENV) $(BIN)/snakemake --cores $(CORES) --configfile $(RECORDED)/study.yaml \
		--config recorded=$(RECORDED)

test: setup
	$(WITH_VENV) $(BIN)/python -m pytest -q

bench: setup
	$(WITH_VENV) $(BIN)/python bench/bench_reward.py
	$(WITH_VENV) $(BIN)/python bench/bench_step.py
	$(WITH_VENV) $(BIN)/python bench/bench_gradients.py
