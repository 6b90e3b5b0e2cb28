# Paystream — every command runs from the repository root of a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: run observe test test-cluster lint format bench install lock clean asyncapi docs docs-build image-check \
	console-assets

# The venv holds exactly what requirements.lock pins (hash-checked), with the stock pip of a new venv:
# nothing is resolved at install time, so an install does not depend on the day it runs.
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

install: $(VENV)/.installed

## lock: resolve what pyproject.toml added into requirements.lock (and the image's requirements-runtime.lock), keeping
## every pin already there (commit all three);
## `make lock LOCK_ARGS=--upgrade` re-resolves everything to today's releases.
LOCK_ARGS ?=
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra test --extra dev --extra build --generate-hashes --universal \
		--python-version 3.11 $(LOCK_ARGS) -o requirements.lock
	@# The image's lock: the runtime dependencies alone, at exactly the versions requirements.lock pins.
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 \
		--constraint requirements.lock -o requirements-runtime.lock

## run: every service in the foreground, each log line prefixed by its service; one that exits is restarted with
## backoff while the others keep running (tools/runner.py); Ctrl-C stops them all and exits 0.
## REPLICAS=N runs N of each service but the sandbox, replica k on its port + 1000*(k-1) (tools/stack.py).
REPLICAS ?= 1
# The demo shop registers its webhook endpoint on localhost: development allows private webhook URLs.
run: export WEBHOOK_ALLOW_PRIVATE_URLS ?= true
# The sandbox keeps its intents and webhook schedule here across restarts, as a real provider would.
run: export SANDBOX_DATA_DIR ?= $(CURDIR)/.sandbox
run: install
	@$(BIN)/python -m tools.stack prepare --print-urls --replicas $(REPLICAS)
	@$(BIN)/python -m tools.stack procfile --replicas $(REPLICAS) > $(VENV)/Procfile.run
	@exec $(BIN)/python -m tools.stack foreground $(VENV)/Procfile.run $(CURDIR)

## observe: Prometheus and Alertmanager (Debian's packages) watching the services of `make run` on this machine.
## The scrape targets become localhost ports (REPLICAS as for make run); files and data go to .observe/.
RUNBOOK_BASE_URL ?= file://$(CURDIR)/docs/runbooks
observe: install
	@$(BIN)/python -m tools.observe --dir $(CURDIR)/.observe --replicas $(REPLICAS) --runbook-base-url '$(RUNBOOK_BASE_URL)'
	@# A Ctrl-C or SIGTERM that honcho handled (exit 130/143) stopped both cleanly: exit 0.
	@trap '' INT TERM; $(BIN)/honcho start --no-colour -f $(CURDIR)/.observe/Procfile -d $(CURDIR); rc=$$?; \
		if [ $$rc -eq 130 ] || [ $$rc -eq 143 ]; then exit 0; fi; exit $$rc

## node_modules: the browser files package-lock.json pins (axe-core for the console's accessibility test, htmx),
## installed with `npm ci` whenever the lock changes.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## console-assets: copy htmx from the locked npm package into the console's static files (commit the copy;
## tests/unit/test_console_assets.py checks they match). No build step: the file is served as npm ships it.
console-assets: node_modules/.package-lock.json
	cp node_modules/htmx.org/dist/htmx.min.js services/console/static/vendor/htmx.min.js

## test: the whole suite against a real RabbitMQ and PostgreSQL (see tests/conftest.py for which ones).
## Then the container image (make image-check) wherever podman is installed; CI installs it, and IMAGE_CHECK=required
## (set by .ci/run) makes a missing podman a failure rather than a skipped check.
IMAGE_CHECK ?= auto
test: install node_modules/.package-lock.json
	$(BIN)/python -m pytest
	@if command -v podman >/dev/null 2>&1 || [ "$(IMAGE_CHECK)" = required ]; then $(MAKE) --no-print-directory image-check; \
	else echo "make test: podman is not installed here, so the image was not built (make image-check; apt-get install podman runc)"; fi

## image-check: build the Dockerfile with podman and run a payment through the image, as the manifests run it
## (read-only, uid 10001, no capabilities), against the local PostgreSQL and RabbitMQ (tools/image_check.py).
image-check: install
	$(BIN)/python -m tools.image_check

## asyncapi: regenerate docs/asyncapi.json from the message models and consumer groups (commit it; a test checks).
asyncapi: install
	$(BIN)/python -m tools.asyncapi

## docs: the documentation site (mkdocs.yml, docs/) served with live reload; the storefront has port 8000.
DOCS_ADDRESS ?= 127.0.0.1:8001
docs: install
	$(BIN)/mkdocs serve --dev-addr $(DOCS_ADDRESS)

## docs-build: the site into site/, strict: a broken link, a missing page or a stale anchor fails (make test runs it too).
docs-build: install
	$(BIN)/mkdocs build --strict --site-dir $(CURDIR)/site

## test-cluster: the full scale-out run: 500 payments, two replicas of every service, a three-node RabbitMQ
## cluster, a node stopped and started and a replica of each service SIGKILLed under load (tests/e2e/test_cluster.py).
test-cluster: install
	$(BIN)/python -m pytest -m cluster_full -s tests/e2e/test_cluster.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tools tests
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: the project's throughput, CPU, latency and memory beside the raw limits of this machine.
## Options through BENCH_ARGS, e.g. `make bench BENCH_ARGS="--seconds 5 --rate 100"` (see --help).
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info node_modules test-output site
