# Quick start: `make demo` (the main job, on sqlite:///mlflow.db) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The distributed tests launch torchrun (gloo, CPU). 2.13.0 is pinned because this
# team's machines carry its CPU build; elsewhere override it, e.g. `make test TORCH=torch`.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

# Each prints its figures; docs/benchmarks.md records them with these commands.
bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/run_overhead.py
	$(BIN)/python bench/rank_scale.py
	$(BIN)/python bench/gate_latency.py

clean:
	rm -rf $(VENV) build *.egg-info mlruns mlflow.db .pytest_cache
