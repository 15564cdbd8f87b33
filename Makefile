# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MANAGE := $(BIN)/python manage.py
MEMBERS ?= 5000
SEED ?= 7
# The simulator's fixed "today": history before it, the horizon after it.
AS_OF ?= 2026-06-30
HORIZON ?= 90
# make test runs against the machine's Postgres and Redis unless told otherwise.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_BROKER_URL ?= redis://127.0.0.1:6379/0

.PHONY: venv demo demo-data serve test lint bench load clean

$(BIN)/activate: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/activate

venv: $(BIN)/activate

# Embedded SQLite, tasks in-process: a full program, a trained model and a scored queue.
demo: venv demo-data serve

demo-data: venv
	env -u DATABASE_URL -u CELERY_BROKER_URL $(MANAGE) migrate --noinput
	env -u DATABASE_URL -u CELERY_BROKER_URL $(MANAGE) simulate --members $(MEMBERS) --seed $(SEED) --replace
	env -u DATABASE_URL -u CELERY_BROKER_URL $(MANAGE) seed_demo_users
	env -u DATABASE_URL -u CELERY_BROKER_URL $(MANAGE) train --as-of $(AS_OF) --horizon-days $(HORIZON)
	env -u DATABASE_URL -u CELERY_BROKER_URL $(MANAGE) score --as-of $(AS_OF) --wait

serve: venv
	env -u DATABASE_URL -u CELERY_BROKER_URL $(MANAGE) runserver 127.0.0.1:8000

test: venv
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)} \
	$(BIN)/pytest $(PYTEST_ARGS)

# On Postgres, Redis and real workers (the local services unless DATABASE_URL and
# CELERY_BROKER_URL say otherwise); each size gets a fresh `<db>_bench` database. Writes
# docs/bench/latest.{json,md,html} and the table in the README.
# The bench process streams the simulated program into the database (one block of 20k
# members at a time): about 8 GiB peak at 1M; above 100k the import and the retraining are
# skipped (timed at 100k). BENCH_SIZES="100000 1000000" took 22-40 minutes here with the README's Postgres settings (the host varies).
BENCH_SIZES ?= 100000
BENCH_QUEUE_ROWS ?= 1000000
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/loyalty
BENCH_BROKER_URL ?= redis://127.0.0.1:6379/5
bench: venv
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(BENCH_BROKER_URL)} \
	$(MANAGE) bench_report --sizes $(BENCH_SIZES) --queue-rows $(BENCH_QUEUE_ROWS) \
		--out docs/bench --readme README.md

# 50 managers for 60 s through gunicorn on Postgres (a fresh `<db>_load` database): prints the
# figures, fails on any error, a p95 over 200 ms or a decision lost or stored twice.
LOAD_USERS ?= 50
LOAD_SECONDS ?= 60
load: venv
	DATABASE_URL=$${DATABASE_URL:-$(BENCH_DATABASE_URL)} \
	$(MANAGE) load --users $(LOAD_USERS) --seconds $(LOAD_SECONDS)

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf var .pytest_cache .ruff_cache
