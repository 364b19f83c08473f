# Tidemark tasks. `make help` lists them. Every target bootstraps .venv/ first.
.DEFAULT_GOAL := help
PY := .venv/bin/python

UNIT := not postgres and not debezium and not kafka and not connect and not s3 and not slow and not soak

.PHONY: help bootstrap up test unit test-slow lint bench
help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

bootstrap: ## install everything into .venv/ (fast when nothing changed)
	@bash scripts/bootstrap.sh

up: bootstrap ## the embedded demo: local Postgres, simulator, pipeline, live progress
	@.venv/bin/tidemark up

test: bootstrap lint ## the default test run (what CI runs): lint and types, then tests without slow/soak
	@$(PY) -m pytest

unit: bootstrap lint ## lint, types and the tests that need no service (under a minute)
	@$(PY) -m pytest -m "$(UNIT)"

test-slow: bootstrap ## the slow and soak tests
	@$(PY) -m pytest -m 'slow or soak'

lint: bootstrap ## ruff (lint and format) and mypy
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@bash scripts/typecheck.sh

bench: bootstrap ## every benchmark; JSON reports land in bench/results/
	@$(PY) -m pip install -q -e ".[dev,bench]"
	@for b in simulator decode core capture sinks faust_ceiling distributed e2e; do $(PY) bench/$$b.py || exit 1; done
