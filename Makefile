# Tidemark tasks. `make help` lists them. Every target bootstraps .venv/ first.
.DEFAULT_GOAL := help
PY := .venv/bin/python

.PHONY: help bootstrap up test test-slow lint bench
help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

bootstrap: ## install everything into .venv/ (fast when nothing changed)
	@bash scripts/bootstrap.sh

up: bootstrap ## the embedded demo: local Postgres, simulator, pipeline, live progress
	@.venv/bin/tidemark up

test: bootstrap ## the default test run (what CI runs): lint, then tests without slow/soak
	@.venv/bin/ruff check .
	@$(PY) -m pytest

test-slow: bootstrap ## the slow and soak tests
	@$(PY) -m pytest -m 'slow or soak'

lint: bootstrap ## ruff
	@.venv/bin/ruff check .

bench: bootstrap ## every benchmark; JSON reports land in bench/results/
	@$(PY) -m pip install -q -e ".[dev,bench]"
	@for b in simulator decode core capture sinks faust_ceiling distributed e2e; do $(PY) bench/$$b.py || exit 1; done
