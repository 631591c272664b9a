# `make run` and `make test` do all the set-up on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit integration bench reliability venv clean

$(STAMP): pyproject.toml
	@scripts/ensure-python-venv.sh "$(PYTHON)" "$(VENV)"
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@scripts/run.sh

test: $(STAMP)
	@scripts/ensure-program.sh redis-server
	@scripts/ensure-postgres-server.sh
	$(MAKE) --no-print-directory lint
	@# Two pytest processes, a test file each at a time: alone, the suite kept one of CI's two cores busy (most
	@# tests wait on the processes they start), 8:21 against 6:30 split in two.
	$(BIN)/pytest -n 2 --dist loadfile

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	@scripts/ensure-program.sh redis-server
	$(BIN)/pytest tests/integration

bench: $(STAMP)
	@scripts/ensure-program.sh redis-server
	@scripts/ensure-program.sh wrk
	$(BIN)/python -m bench.fan_out 2>/dev/null
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.fast_lane

# Fault scenarios at scale: 6 x 20,000 emails on fresh stacks (relay-down waits out a 5-minute SMTP outage), about
# 12 minutes; writes bench/reliability.md.
# A quick look: make reliability ARGS="--emails 2000".
reliability: $(STAMP)
	@scripts/ensure-program.sh redis-server
	$(BIN)/python -m bench.reliability $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
