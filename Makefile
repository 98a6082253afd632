# The two commands that matter: `make run` and `make test`. Both set up what they need.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: run test setup lint typecheck unit bench clean

run: setup ## set up and run the whole stack (embedded NATS and PostgreSQL; no Docker)
	@command -v bwrap >/dev/null || echo "warning: bubblewrap is not installed (apt-get install bubblewrap); generated code cannot be run until it is"
	$(UV) run vdo up

test: setup lint typecheck ## set up and run every check and test
	$(UV) run pytest

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --frozen

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
	rm -rf .vdo .pytest_cache .mypy_cache .ruff_cache
