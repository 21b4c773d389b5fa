# Quick start: `make demo` (the main job, on sqlite:///mlflow.db) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The distributed tests launch torchrun (gloo, CPU). 2.13.0 is pinned because this
# team's machines carry its CPU build; elsewhere override it, e.g. `make test TORCH=torch`.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint bench bench-quick clean

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

# Each benchmark saves bench/results/<name>.json and regenerates docs/benchmarks.md (about
# 15 minutes in all; timings want a quiet machine: BENCH_ARGS="--wait-quiet 600" waits for it).
# bench/gpu_validation.py needs an NVIDIA GPU: run it by hand where there is one.
BENCHES := overhead import_cost run_overhead accuracy short_runs rank_scale gate_latency distributed
BENCH_ARGS ?=

bench: $(STAMP)
	@for b in $(BENCHES); do echo "== bench/$$b.py"; \
		$(BIN)/python bench/$$b.py $(BENCH_ARGS) || exit 1; done

# The same, each under a minute: indicative figures in bench/results/quick/, never published.
bench-quick: $(STAMP)
	@for b in $(BENCHES); do echo "== bench/$$b.py --quick"; \
		$(BIN)/python bench/$$b.py --quick $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info mlruns mlflow.db pareto.png report.html .pytest_cache
