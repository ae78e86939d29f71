# afhub: the two commands a fresh machine needs are `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.afhub-installed
CHP := node_modules/.bin/configurable-http-proxy

.PHONY: up install test lint format bench bench-spawn bench-batched clean

up: install
	$(BIN)/afhub up

install: $(STAMP) $(CHP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CHP): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $(CHP)

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bench-spawn

bench-spawn: install
	$(BIN)/python benchmarks/spawn.py

bench-batched: install
	$(BIN)/python benchmarks/batched.py

clean:
	rm -rf $(VENV) node_modules
