# Everything starts from a plain Python >= 3.11: the first target run creates .venv and installs into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run relay nats watch test lint fmt demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the API on http://127.0.0.1:8000 (embedded PostgreSQL unless DATABASE_URL is set)
run: install
	$(BIN)/orders-svc serve $(ARGS)

## The outbox relay, printing events (ARGS='--publisher nats' for NATS) and a local NATS JetStream server for it
relay: install
	$(BIN)/orders-svc relay $(or $(ARGS),--publisher log)

nats: install
	$(BIN)/nats-server -js -sd .nats

## Print the events arriving on NATS (ARGS=--all to replay the stream first)
watch: install
	$(BIN)/python scripts/watch_events.py $(ARGS)

## Run the whole test suite against a real PostgreSQL (see README: which one)
test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy orders_svc

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The cURL walkthrough against a running service (make run in another terminal)
demo:
	bash scripts/demo.sh

## Benchmarks (on demand, never part of the tests)
bench: install
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .orders-data .nats .pytest_cache .mypy_cache .ruff_cache .hypothesis
