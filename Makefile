# The few commands everyone runs. `make quickstart` and `make test` set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quickstart reference test test-slow lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,serve]'
	touch $(STAMP)

quickstart: setup
	$(BIN)/unimm quickstart --out runs/quickstart

# The reference tier: the same recipe trained for 45 minutes, full evaluation, <= 60 min on 2 cores.
reference: setup
	$(BIN)/unimm quickstart --preset reference --out runs/reference

test: setup lint
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_train_throughput.py
	$(BIN)/python benchmarks/bench_kv_cache.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
