# Everything starts from a plain Python >= 3.11: the first target run creates .venv and installs into it.
PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
NATS_PORT ?= 4222
# The relay and the watcher follow `make nats NATS_PORT=…` unless ORDERS_NATS_URL names another server.
NATS_URL  := $(or $(ORDERS_NATS_URL),nats://127.0.0.1:$(NATS_PORT))

.DEFAULT_GOAL := help
.PHONY: help install run relay nats watch test lint fmt demo bench clean

help: ## Show this list (a bare `make` does the same)
	@echo "orders-svc: make TARGET [ARGS='…']"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the service with its dev tools (every target does this first)

# The webhook secret `make run` and `make demo` share when ORDERS_WEBHOOK_SECRETS is not set: for trying the
# payment flow on this machine only (a fixed, published value; never use it for a real provider).
DEV_WEBHOOK_SECRETS := whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
run demo: export ORDERS_WEBHOOK_SECRETS ?= $(DEV_WEBHOOK_SECRETS)
demo: export ORDERS_SVC ?= $(BIN)/orders-svc

run: install ## Start the API on http://127.0.0.1:8000, on an embedded PostgreSQL unless DATABASE_URL is set (ARGS='--port 8080')
	$(BIN)/orders-svc serve $(ARGS)

relay: install ## The outbox relay, printing events (ARGS='--publisher nats' sends them to `make nats`)
	ORDERS_NATS_URL=$(NATS_URL) $(BIN)/orders-svc relay $(or $(ARGS),--publisher log)

nats: install ## A local NATS JetStream server on 127.0.0.1 only, port 4222 (NATS_PORT=4223 for another)
	$(BIN)/nats-server -js -sd .nats -a 127.0.0.1 -p $(NATS_PORT)

watch: install ## Print the events arriving on NATS (ARGS=--all to replay the stream first)
	ORDERS_NATS_URL=$(NATS_URL) $(BIN)/python scripts/watch_events.py $(ARGS)

test: install ## Run the whole test suite against a real PostgreSQL (pytest's header names which one)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install ## ruff and mypy, as CI runs them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy orders_svc

fmt: install ## Format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: ## The cURL walkthrough against a running service (make run in another terminal)
	bash scripts/demo.sh

bench: install ## Benchmarks (on demand, never part of the tests)
	$(BIN)/python bench/run.py $(ARGS)

clean: ## Remove .venv and every local state (.orders-data, .nats, caches)
	rm -rf $(VENV) .orders-data .nats .pytest_cache .mypy_cache .ruff_cache .hypothesis
