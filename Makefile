# Thin wrappers over the Invoke tasks, for Makefile-style workflows and cron.
# Usage: make deploy ENV=staging
ENV ?= development
VENV ?= .venv
INVOKE := $(VENV)/bin/invoke
PYTHON := $(VENV)/bin/python

.PHONY: install discover validate render plan deploy test test-fast bench lint

install: $(VENV)/bin/invoke

$(VENV)/bin/invoke: pyproject.toml
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

discover: install
	$(INVOKE) discover

validate: install
	$(INVOKE) validate --env $(ENV)

render: install
	$(INVOKE) render --env $(ENV)

plan: install
	$(INVOKE) plan --env $(ENV)

deploy: install
	$(INVOKE) deploy --env $(ENV)

test: install
	$(PYTHON) -m pytest

# The tests that need no Prefect server (about half a minute).
test-fast: install
	$(PYTHON) -m pytest -m "not e2e"

bench: install
	$(PYTHON) bench/discover.py
	$(PYTHON) bench/pipeline.py
	$(PYTHON) bench/deploy.py

lint: install
	$(VENV)/bin/ruff check deploy_lib tests tasks.py bench
	$(VENV)/bin/mypy
