# Every target works without Docker. `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_ENV := DEBUG=1 LOG_LEVEL=WARNING DATABASE_URL= REDIS_URL= CELERY_BROKER_URL= STRIPE_API_BASE=http://127.0.0.1:12111 \
	STRIPE_SECRET_KEY=sk_test_toolbooth_demo SITE_URL=http://$(HOST):$(PORT) \
	GATEWAY_UPSTREAM_ALLOWLIST=127.0.0.1:18080

.PHONY: help install lint typecheck test run demo worker beat bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed ## create .venv and install the project with its dev tools

lint: install ## ruff check + format check, and no missing migrations
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py makemigrations --check --dry-run

typecheck: install ## mypy (billing/ and gateway/ strict)
	$(BIN)/mypy .

test: install ## the whole suite against PostgreSQL and Redis on localhost (started if stopped)
	scripts/ensure-services
	scripts/install-test-deps
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install ## the marketplace on embedded defaults (SQLite, no Redis) with demo data at http://127.0.0.1:8000
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput
	$(DEMO_ENV) $(BIN)/python manage.py demo --host $(HOST) --port $(PORT)

run: install ## serve over ASGI with the environment's settings
	$(BIN)/uvicorn config.asgi:application --host $(HOST) --port $(PORT)

worker: install ## a Celery worker
	$(BIN)/celery -A config worker -l info

beat: install ## Celery beat (the hourly registry sync, usage drains)
	$(BIN)/celery -A config beat -l info

bench: install ## all benchmarks (prints numbers)
	$(BIN)/python benchmarks/registry_sync_bench.py
	$(BIN)/python benchmarks/search_bench.py
	$(BIN)/python benchmarks/pages_bench.py
	$(BIN)/python benchmarks/gateway_bench.py
	$(BIN)/python benchmarks/billing_pipeline_bench.py

clean: ## remove the venv and local state
	rm -rf $(VENV) var
