# The two commands that matter: `make run` and `make test`. Both set up what they need.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: run test setup web web-deps web-test lint typecheck unit bench clean

run: setup web ## set up, build the dashboard and run the whole stack (embedded NATS and PostgreSQL; no Docker)
	@command -v bwrap >/dev/null || echo "warning: bubblewrap is not installed (apt-get install bubblewrap); generated code cannot be run until it is"
	$(UV) run vdo up

test: setup lint typecheck web web-test ## set up and run every check and test (the dashboard's too)
	$(UV) run pytest

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --frozen

# The dashboard (web/): its packages when package-lock.json is newer than what is installed,
# then the build (the API's schema, the client's types from it, the typecheck, the bundle).
web/node_modules/.package-lock.json: web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: apt-get install nodejs npm" >&2; exit 1; }
	cd web && npm install --no-audit --no-fund
	@touch $@

web-deps: setup web/node_modules/.package-lock.json

web: web-deps
	cd web && npm run build

web-test: web-deps ## the dashboard's component tests (its typecheck is part of its build)
	cd web && npm test

lint:
	$(UV) run ruff format --check .
	$(UV) run ruff check .

typecheck:
	$(UV) run mypy kernel/src models/src cli/src services/*/src bench conftest.py tests kernel/tests models/tests cli/tests services/gateway/tests services/projector/tests services/sandbox/tests services/scheduler/tests

unit: setup ## the fast tests only (no servers)
	$(UV) run pytest kernel/tests/test_domain.py kernel/tests/test_blobs.py

bench: setup ## the pipeline benchmark (see bench/pipeline)
	$(UV) run python bench/pipeline --jobs 200

clean:
	rm -rf .vdo .pytest_cache .mypy_cache .ruff_cache web/dist
