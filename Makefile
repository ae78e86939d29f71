# afhub: the two commands a fresh machine needs are `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.afhub-installed
CHP := node_modules/.bin/configurable-http-proxy

.PHONY: up install test lint format bench bench-spawn bench-batched bench-fitting bench-quota bench-profiles bench-dask bench-spawn-form clean

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
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bench-spawn bench-quota bench-batched bench-fitting bench-profiles bench-dask bench-spawn-form

bench-quota: install
	$(BIN)/python benchmarks/quota.py

bench-profiles: install
	$(BIN)/python benchmarks/profiles.py

bench-dask: install
	$(BIN)/python benchmarks/dask.py

bench-spawn: install
	$(BIN)/python benchmarks/spawn.py

bench-spawn-form: install
	$(BIN)/python benchmarks/spawn_form.py

bench-batched: install
	$(BIN)/python benchmarks/batched.py

# FIT_PATCHES=16 for a subset of the 217 sbottom RegionA patches
bench-fitting: install
	$(BIN)/python benchmarks/fitting.py --patches $(or $(FIT_PATCHES),217)

clean:
	rm -rf $(VENV) node_modules
