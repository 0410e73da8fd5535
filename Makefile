# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-servers lint bench chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

## Start the HTTP service on the embedded SQLite default (http://127.0.0.1:8000/docs).
run: install
	$(BIN)/eventbank serve

## Install what the tests need and run the whole suite against real engines.
test: install test-servers
	$(BIN)/ruff check src tests bench reliability
	$(BIN)/ruff format --check src tests bench reliability
	$(BIN)/pytest

## Everything the engine tests need that pip does not install (one line per engine).
test-servers:
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-dynamodb-local.sh
	bash scripts/ensure-browser.sh

## Benchmark (README, "Performance"): eventbank vs the eventsourcing library vs raw-SQL floors
## on every engine; table printed, JSON + PNG in benchmarks/results/. make bench [QUICK=1]
bench: install
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-dynamodb-local.sh
	$(BIN)/python -m bench $(if $(QUICK),--quick)

## Chaos soak: faults injected under load, then every invariant checked (README, "Reliability").
## make chaos [ENGINE=sqlite|postgres|dynamodb|all] [DURATION=seconds] [INTERVAL=min:max]
ENGINE ?= all
DURATION ?= 600
INTERVAL ?= 0.5:3
chaos: install
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-dynamodb-local.sh
	$(BIN)/python -m reliability.chaos --engine $(ENGINE) --duration $(DURATION) --interval $(INTERVAL)

lint: install
	$(BIN)/ruff check src tests bench reliability
	$(BIN)/ruff format --check src tests bench reliability

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
