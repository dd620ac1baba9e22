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
WITH_DB := python -m media_db.dev.local_server exec --
REV ?= -1
RANGE ?=
M ?=
# PYTEST_ARGS replaces a suite's workers: four for the suite on 2 cores, where a test waits on
# PostgreSQL, subprocesses and conditions much of its time (tests/deploy, 282 tests, quiet:
# -n 2 4:50, -n 3 4:16, -n 4 3:46, -n 6 4:00); two for the failover tests, each starting a
# formation of three servers.
PYTEST_ARGS ?=
SIZE ?= full
# `make bench ONLY="peers limits"` runs those parts alone (bench/run.py: PARTS).
ONLY ?=
# The major `make test-image` builds (13, 15 or 17: the Debian packages of bullseye, bookworm, trixie).
PG ?= 15
# `make test-matrix MAJORS="13 17"` runs a subset of the tested majors.
MAJORS ?=

# User values reach commands as environment variables ("$$REV"), never pasted into a recipe:
# the shell never parses them, and `$(value ...)` keeps make from expanding $(...) inside them.
# So does every other variable given on the command line, read by a target or not: make would
# expand it to export it (`make upgrade FOO='$(shell ...)'` would run the command).
USER_VALUES := REV RANGE M ONTO UPTO PYTEST_ARGS SIZE ONLY PG MAJORS JSON VERBOSE BACKUP STATUS ID WORKFLOW PYTHON
COMMAND_LINE := $(strip $(foreach name,$(.VARIABLES),$(if $(filter command line,$(origin $(name))),$(name))))
# The values each target reads (PYTHON: every target, through install). A value given on the
# command line that no goal reads, in lower case, or naming one of the Makefile's own is refused
# before anything runs.
TAKES.downgrade := REV
TAKES.sql := RANGE
TAKES.revision := M
TAKES.status := JSON
TAKES.history := VERBOSE
TAKES.restore := BACKUP
TAKES.jobs := STATUS WORKFLOW ID
TAKES.retry := ID WORKFLOW
TAKES.limits := JSON
TAKES.schedules := JSON
TAKES.rebase := ONTO
TAKES.squash := UPTO
TAKES.test := PYTEST_ARGS
TAKES.test-failover := PYTEST_ARGS
TAKES.test-docker := PYTEST_ARGS PG
TAKES.test-image := PG
TAKES.test-matrix := MAJORS
TAKES.bench := SIZE ONLY
TAKES.bench-upgrade := SIZE
TAKES.bench-prune := SIZE
read_by = $(patsubst TAKES.%,make %,$(foreach v,$(filter TAKES.%,$(.VARIABLES)),$(if $(filter $(1),$($(v))),$(v))))
# make has no lower-case function.
lower = $(subst Z,z,$(subst Y,y,$(subst X,x,$(subst W,w,$(subst V,v,$(subst U,u,$(subst T,t,$(subst S,s,$(subst R,r,$(subst Q,q,$(subst P,p,$(subst O,o,$(subst N,n,$(subst M,m,$(subst L,l,$(subst K,k,$(subst J,j,$(subst I,i,$(subst H,h,$(subst G,g,$(subst F,f,$(subst E,e,$(subst D,d,$(subst C,c,$(subst B,b,$(subst A,a,$(1)))))))))))))))))))))))))))
GOALS := $(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))
$(foreach name,$(USER_VALUES),\
  $(if $(filter $(call lower,$(name)),$(COMMAND_LINE)),\
    $(error $(call lower,$(name))=... is not read: the variable is $(name) (upper case)))\
  $(if $(filter $(name),$(COMMAND_LINE)),\
    $(if $(filter $(name),PYTHON $(foreach goal,$(GOALS),$(TAKES.$(goal)))),,\
      $(error make $(GOALS) takes no $(name): $(name) is for $(call read_by,$(name))))))
# The Makefile's own names (what it assigns, but for the user values) are not settable: `make
# downgrade REVISION=0005` would replace the pattern REV is checked with. A name in lower case
# is no setting of ours, nor of the environment's.
upper = $(subst z,Z,$(subst y,Y,$(subst x,X,$(subst w,W,$(subst v,V,$(subst u,U,$(subst t,T,$(subst s,S,$(subst r,R,$(subst q,Q,$(subst p,P,$(subst o,O,$(subst n,N,$(subst m,M,$(subst l,L,$(subst k,K,$(subst j,J,$(subst i,I,$(subst h,H,$(subst g,G,$(subst f,F,$(subst e,E,$(subst d,D,$(subst c,C,$(subst b,B,$(subst a,A,$(1)))))))))))))))))))))))))))
OWN := $(filter-out $(USER_VALUES),$(shell sed -nE \
  's/^(override +)?([A-Za-z_][A-Za-z0-9_.-]*) *[:?+]?=.*/\2/p' $(firstword $(MAKEFILE_LIST))))
$(foreach name,$(COMMAND_LINE),\
  $(if $(filter $(name),$(OWN)),\
    $(error $(name)=... is this Makefile's own, not a setting: it takes $(USER_VALUES)))\
  $(if $(filter-out $(call upper,$(name)),$(name)),\
    $(error $(name)=... is not read by make $(GOALS): settings are upper case ($(USER_VALUES), and the environment's, e.g. DATABASE_URL))))
$(foreach name,$(sort $(USER_VALUES) $(COMMAND_LINE)),$(eval override $(name) := $$(value $(name))))
export $(USER_VALUES) $(COMMAND_LINE)
# What Alembic takes as a revision here: an id (or its prefix), base, head(s), a relative step.
REVISION := (base|heads?|[0-9a-f]{4,40})?([-+][0-9]{1,4})?
bad_revision = { printf '%s=%q is not a revision: use an id (e.g. 0004), base, head, -N or +N%s\n' \
  $(1) "$$$(1)" $(2) >&2; exit 2; }
# A switch: unset, empty or 1.
switch = [[ -z $$$(1) || $$$(1) == 1 ]] || { printf '%s=%q: use %s=1 (or leave it out)\n' \
  $(1) "$$$(1)" $(1) >&2; exit 2; }

.PHONY: help install upgrade downgrade current history status adopt verify sql revision rebase squash \
        records erd \
        db-check test test-failover test-image test-docker test-matrix \
        bench bench-upgrade bench-prune lint lint-sql db-start db-stop db-url psql prune restore jobs retry limits schedules

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(INSTALLED) ## Build .venv/ from uv.lock (only python3 needed; idempotent)

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on CI's machines),
# Python would otherwise compile SQLAlchemy and Alembic from source in every process (measured:
# 2.7 s -> 0.9 s to import them; every `alembic` command and hook pays it).
$(INSTALLED): pyproject.toml uv.lock
	@[ -x $(BIN)/uv ] || { "$$PYTHON" -m venv $(VENV) && \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); }
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --no-python-downloads \
	  --python $(BIN)/python --compile-bytecode
	@touch $@

upgrade: install ## Apply every revision up to head (logs the revision reached)
	$(WITH_DB) alembic upgrade head

downgrade: install ## Roll back one revision (REV=-1), or to REV=<id> / REV=base
	@[[ $$REV =~ ^$(REVISION)$$ && -n $$REV ]] || $(call bad_revision,REV,' (e.g. REV=-1)')
	$(WITH_DB) alembic downgrade "$$REV"

current: install ## Print the database's revision
	$(WITH_DB) alembic current

history: install ## List the revisions, newest first, one line each (VERBOSE=1: with their docstrings)
	@$(call switch,VERBOSE)
	alembic history $${VERBOSE:+--verbose}

status: install ## Revision vs head, pending Locks, drift, blockers; exit 1 if it needs attention (JSON=1)
	@$(call switch,JSON)
	@$(WITH_DB) python -m media_db.deploy.status $${JSON:+--json}

adopt: install ## Stamp a database built by hand with the plan's SQL at 0001, if it matches exactly
	$(WITH_DB) python -m media_db.deploy.adopt

verify: install ## Compare the live catalog with the models object by object, then alembic check
	$(WITH_DB) python -m media_db.deploy.verify  # then alembic check, in the same process

sql: install ## Print as SQL what is pending on the configured database (none: base to head; RANGE=0001:head for a span)
	@[[ -z $$RANGE || $$RANGE =~ ^($(REVISION):)?$(REVISION)$$ ]] || \
	  $(call bad_revision,RANGE,' or two joined by a colon (e.g. RANGE=0001:head)')
	@python -m media_db.deploy.pending_sql "$$RANGE"

revision: install ## Autogenerate a lock-safe revision; regenerate records and the ERD (M="…")
	@[ -n "$$M" ] || { echo 'usage: make revision M="what the revision does"' >&2; exit 2; }
	$(WITH_DB) alembic revision --autogenerate -m "$$M"  # its post-write hooks: records, diagram

rebase: install ## Put this branch's revisions on top of ONTO's head (main): renumbered, records and ERD rewritten
	python -m media_db.dev.rebase "$$ONTO"

# UPTO is one revision's id: base, head or a relative step would name no fixed point in history.
squash: install ## Replace the revisions up to UPTO=<id> by one baseline built from their schema; archive them
	@[[ $$UPTO =~ ^[0-9a-f]{4,40}$$ ]] || { printf 'UPTO=%q is not a revision id: use one (e.g. UPTO=0005; `make history` lists them)\n' "$$UPTO" >&2; exit 2; }
	$(WITH_DB) python -m media_db.dev.squash "$$UPTO"

records: install ## Write media_db/records.py (the repositories' records) from the models
	python -m media_db.dev.gen_records

erd: install ## Write the Mermaid ER diagram of the models to docs/schema.md
	python -m media_db.dev.erd

db-check: install ## Connect, print "Database connection successful" and the server version
	$(WITH_DB) python -m media_db.deploy.check

# Every run names its 15 slowest tests: the next slow one is seen when it is written.
DURATIONS := --durations=15 --durations-min=1

test: install ## Run the test suite on real PostgreSQL (see docs/testing.md: which server it uses)
	pytest $(DURATIONS) $${PYTEST_ARGS:--n 4}

test-failover: install ## The failover tests: workers through a pg_auto_failover primary failover
	pytest $(DURATIONS) -m failover $${PYTEST_ARGS:--n 2}

test-image: ## Make a Docker engine available and build the local PostgreSQL test image (PG=13|15|17)
	scripts/test-image.sh  # reads PG from the environment

test-docker: install test-image ## Run the suite on PostgreSQL in Docker (testcontainers)
	TEST_DB_BACKEND=docker pytest $(DURATIONS) $${PYTEST_ARGS:--n 4}

test-matrix: install ## The migration tests on every tested major, one line each (images built if missing)
	python -m tests.matrix $$MAJORS  # split into words on purpose: MAJORS="13 17"

bench: install ## Benchmark against raw psycopg in the same run (SIZE=full|tiny, ONLY="peers limits": some parts); JSON in results/
	$(WITH_DB) python -m bench --size "$$SIZE" --only "$$ONLY"

bench-upgrade: install ## Revisions applied to 1M jobs under a continuous writer (SIZE=full|tiny)
	$(WITH_DB) python -m bench.upgrade_under_load --size "$$SIZE"

bench-prune: install ## make prune on 1M finished jobs beside a writer: its worst stall (SIZE=full|tiny)
	$(WITH_DB) python -m bench.prune_under_load --size "$$SIZE"

lint: install ## ruff (lint + format check) and mypy
	ruff check .
	ruff format --check .
	mypy

lint-sql: install ## squawk over the offline SQL of every revision (no database needed)
	python -m media_db.dev.lint_sql

db-start: install ## Start the embedded PostgreSQL (data in .local/postgres)
	python -m media_db.dev.local_server start

db-stop: install ## Stop the embedded PostgreSQL (its data stays)
	python -m media_db.dev.local_server stop

db-url: install ## Print the database URL, without its password (the embedded one if none is set)
	@python -m media_db.dev.local_server url

psql: install ## Open psql on the database (the embedded one if none is set)
	@python -m media_db.dev.local_server psql

prune: install ## Delete finished jobs past their retention in batches (MEDIA_DB_PRUNE_JOBS_AFTER=7d)
	$(WITH_DB) python -m media_db.deploy.prune

jobs: install ## List jobs with their last error (STATUS=failed by default, WORKFLOW=…); ID=<id>: one job and its traceback
	@$(WITH_DB) python -m media_db.deploy.jobs list --status "$$STATUS" --workflow "$$WORKFLOW" --id "$$ID"

retry: install ## Requeue failed jobs, due now, attempts reset: ID=<id>[,<id>…] or WORKFLOW=<workflow type>
	@$(WITH_DB) python -m media_db.deploy.jobs retry --id "$$ID" --workflow "$$WORKFLOW"

limits: install ## The limits per key (processing_limits): running, starts, due jobs, paused or at its limit (JSON=1)
	@$(call switch,JSON)
	@$(WITH_DB) python -m media_db.deploy.limits $${JSON:+--json}

schedules: install ## Each periodic job's last period enqueued and what became of its job (JSON=1)
	@$(call switch,JSON)
	@$(WITH_DB) python -m media_db.deploy.schedules $${JSON:+--json}

restore: install ## Put back what a consented drop backed up (BACKUP=<directory it printed>)
	$(WITH_DB) python -m media_db.deploy.backup restore "$${BACKUP:?usage: make restore BACKUP=<directory>}"
