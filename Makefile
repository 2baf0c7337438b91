# predq: `make run` starts everything on a laptop; `make test` runs the suite.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
T      ?= tests
N      ?= 2

.DEFAULT_GOAL := help
.PHONY: help install run test lint bench chaos cluster soak fuzz clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## Create .venv and install predq with its dev tools

run: install ## Start Redis, API, worker on http://127.0.0.1:8000 (SQLite under var/)
	$(VENV)/bin/predq up

test: install ## Run the tests (T=tests/path narrows; N=1 runs them in one process; TEST_DATABASE_URL=postgresql+psycopg://... for PostgreSQL)
	$(PY) -m pytest -n $(N) --dist loadfile $(T)

lint: install ## ruff, mypy and the import contracts (pyproject.toml: tool.importlinter)
	$(VENV)/bin/ruff check service workers migrations tests bench
	$(VENV)/bin/mypy service workers bench
	$(VENV)/bin/lint-imports

bench: install ## Benchmark predq against a hand-written Celery service (QUICK=1: smaller; ONLY=mixed,fair: some scenarios)
	$(PY) -m bench $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

chaos: install ## Kill workers, Redis and PostgreSQL under load; fail on any lost job (QUICK=1: one cycle)
	$(PY) -m tests.chaos $(if $(QUICK),--quick)

cluster: install ## predq on 11 netns hosts (Sentinel, a PostgreSQL standby) behind HAProxy; cut links, partitions, both primaries die; fail on any lost job (root; QUICK=1: CI)
	$(PY) -m tests.cluster $(if $(QUICK),--quick)

soak: install ## Steady mixed load for MINUTES (20) at RATE req/s (100); fail on growth that does not level off
	$(PY) -m tests.soak --minutes $(or $(MINUTES),20) --rate $(or $(RATE),100) $(if $(AUTOVACUUM),--autovacuum $(AUTOVACUUM))

fuzz: install ## schemathesis against the live API: every check, links followed, ~4,000 requests
	PREDQ_FUZZ_EXAMPLES=100 $(PY) -m pytest tests/fuzz --timeout 900

clean: ## Remove var/ (local database, Redis socket, models)
	rm -rf var
