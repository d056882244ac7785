# Two commands for a fresh machine: `make demo` (offline investigation) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= demo-out

.PHONY: setup demo test unit lint evals eval-report clean

$(BIN)/incident-graph: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/incident-graph

demo: setup
	$(BIN)/incident-graph demo --fault conn_pool_exhaustion --seed 1 --out $(OUT)

test: setup
	$(BIN)/python -m pytest -q

# The fast tier: no servers, no CLI processes (under a minute).
unit: setup
	$(BIN)/python -m pytest -q -m "not integration and not slow" tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

evals: setup
	$(BIN)/python -m pytest -q evals

# Refresh the committed evals/results.md (make test writes its report under evals/out/).
eval-report: setup
	INCIDENT_GRAPH_EVAL_REPORT=evals/results.md $(BIN)/python -m pytest -q evals

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
