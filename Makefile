# Quick start: `make demo` runs the demo, `make test` runs the whole test suite.
# Both create the virtual environment in .venv and install the project into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tessera demo

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/central_payments.py
	$(BIN)/python bench/issue_cards.py
	$(BIN)/python bench/sync_ingest.py
	$(BIN)/python bench/edge_latency.py
	$(BIN)/python bench/swipe_latency.py
	$(BIN)/python bench/earning_eval.py
	$(BIN)/python bench/edge_earning.py
	$(BIN)/python bench/segment_job.py

clean:
	rm -rf $(VENV) var .pytest_cache
