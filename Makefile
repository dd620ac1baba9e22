# Thin wrappers over alembic and pytest: every target is one or two plain commands, so an operator
# can always drop to `.venv/bin/alembic ...` with DATABASE_URL set.
#
# Database targets use DATABASE_URL / POSTGRES_* when set; with none of them set they use the
# embedded PostgreSQL in .local/postgres (started on demand, kept running; `make db-stop`).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Runs its arguments against the configured database, or else the embedded one.
WITH_DB := python -m media_db.local_server exec --
REV ?= -1
RANGE ?= head
# Two workers (2 cores): most of the suite's time is subprocesses starting Python.
PYTEST_ARGS ?= -n 2
SIZE ?= full
# The major `make test-image` builds (13, 15 or 17: the Debian packages of bullseye, bookworm, trixie).
PG ?= 15
# `make test-matrix MAJORS="13 17"` runs a subset of the tested majors.
MAJORS ?=

.PHONY: help install upgrade downgrade current history adopt verify sql revision erd db-check test \
        test-image test-docker test-matrix \
        bench bench-upgrade lint lint-sql db-start db-stop

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(INSTALLED) ## Build .venv/ from uv.lock (only python3 needed; idempotent)

$(INSTALLED): pyproject.toml uv.lock
	@[ -x $(BIN)/uv ] || { $(PYTHON) -m venv $(VENV) && \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); }
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --no-python-downloads \
	  --python $(BIN)/python
	@touch $@

upgrade: install ## Apply every revision up to head (logs the revision reached)
	$(WITH_DB) alembic upgrade head

downgrade: install ## Roll back one revision (REV=-1), or to REV=<id> / REV=base
	$(WITH_DB) alembic downgrade '$(REV)'

current: install ## Print the database's revision
	$(WITH_DB) alembic current

history: install ## List the revisions, newest first
	alembic history --verbose

adopt: install ## Stamp a database built by hand with the plan's SQL at 0001, if it matches exactly
	$(WITH_DB) python -m media_db.adopt

verify: install ## alembic check, then compare the live catalog with the models object by object
	$(WITH_DB) bash -c 'alembic check && python -m media_db.verify'

sql: install ## Print the upgrade as SQL without a database (RANGE=0001:head for a span)
	@alembic upgrade '$(RANGE)' --sql

revision: install ## Autogenerate a revision from the models: make revision M="add thumbnail path"
	@[ -n "$(M)" ] || { echo 'usage: make revision M="what the revision does"' >&2; exit 2; }
	$(WITH_DB) alembic revision --autogenerate -m '$(M)'

erd: install ## Write the Mermaid ER diagram of the models to docs/schema.md
	python -m media_db.erd

db-check: install ## Connect, print "Database connection successful" and the server version
	$(WITH_DB) python -m media_db.check

test: install ## Run the test suite on real PostgreSQL (see README: which server it uses)
	pytest $(PYTEST_ARGS)

test-image: ## Make a Docker engine available and build the local PostgreSQL test image (PG=13|15|17)
	PG='$(PG)' scripts/test-image.sh

test-docker: install test-image ## Run the suite on PostgreSQL in Docker (testcontainers)
	TEST_DB_BACKEND=docker pytest $(PYTEST_ARGS)

test-matrix: install ## The migration tests on every tested major, one line each (images built if missing)
	python -m tests.matrix $(MAJORS)

bench: install ## Benchmark against raw psycopg in the same run (SIZE=full|tiny); JSON in results/
	$(WITH_DB) python -m bench --size '$(SIZE)'

bench-upgrade: install ## Upgrade 0001 -> head on 1M jobs under a continuous writer (SIZE=full|tiny)
	$(WITH_DB) python -m bench.upgrade_under_load --size '$(SIZE)'

lint: install ## ruff (lint + format check) and mypy
	ruff check .
	ruff format --check .
	mypy

lint-sql: install ## squawk over the offline SQL of every revision (no database needed)
	python -m media_db.lint_sql

db-start: install ## Start the embedded PostgreSQL (data in .local/postgres)
	python -m media_db.local_server start

db-stop: install ## Stop the embedded PostgreSQL (its data stays)
	python -m media_db.local_server stop
