# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# make run PORT=8080 HOST=0.0.0.0 (HOST is not read from the environment, where it may name the
# machine rather than an interface to listen on)
PORT ?= 8000
HOST := 127.0.0.1

.PHONY: install install-dev run test test-servers lint bench chaos clean

# Serving needs eventbank alone; the test, lint, bench and chaos tools are the dev extras.
$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# The dev extras hold everything serving needs too, so they make the run stamp as well.
$(DEV_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

## Start the HTTP service on the embedded SQLite default: make run [PORT=8000] [HOST=127.0.0.1].
## It prints the dashboard and API docs URLs, the admin token on first start, then the logs.
run: install
	$(BIN)/eventbank serve --host $(HOST) --port $(PORT)

## Install what the tests need and run the whole suite against real engines.
test: install-dev test-servers
	$(BIN)/ruff check src tests bench reliability
	$(BIN)/ruff format --check src tests bench reliability
	$(BIN)/mypy
	$(BIN)/pytest

## Everything the engine tests need that pip does not install (one line per engine).
test-servers:
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-dynamodb-local.sh
	bash scripts/ensure-browser.sh
	bash scripts/ensure-wrk.sh

## Benchmark (docs/performance.md): eventbank vs the eventsourcing library vs raw-SQL floors
## on every engine; table printed, JSON + PNG in benchmarks/results/. make bench [QUICK=1]
bench: install-dev
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-dynamodb-local.sh
	bash scripts/ensure-wrk.sh
	$(BIN)/python -m bench $(if $(QUICK),--quick)

## Chaos soak: faults injected under load, then every invariant checked (docs/reliability.md).
## make chaos [ENGINE=sqlite|sqlite-ledger|postgres|postgres-2|dynamodb|all] [DURATION=seconds] [INTERVAL=min:max]
ENGINE ?= all
DURATION ?= 600
INTERVAL ?= 0.5:3
chaos: install-dev
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-dynamodb-local.sh
	$(BIN)/python -m reliability.chaos --engine $(ENGINE) --duration $(DURATION) --interval $(INTERVAL)

## Lint, format check and type check (mypy over src/, settings in pyproject.toml).
lint: install-dev
	$(BIN)/ruff check src tests bench reliability
	$(BIN)/ruff format --check src tests bench reliability
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
