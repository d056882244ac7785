# Two commands for a fresh machine: `make demo` (offline investigation) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= demo-out

.PHONY: setup demo test evals clean

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

evals: setup
	$(BIN)/python -m pytest -q evals

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
