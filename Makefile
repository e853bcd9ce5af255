# tillflow — `make demo` and `make test` work on a fresh machine (Python 3.11 + make).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

export TILLFLOW_HOME ?= $(CURDIR)/.tillflow
export AIRFLOW_HOME ?= $(TILLFLOW_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL := 30
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS := admin:admin
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)/plugins$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: venv demo test test-fast lint up down bench bench-scale lock clean

venv: $(STAMP)
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

## Set up and run ajour_to_planday once end to end on the embedded defaults
demo: venv
	$(PY) -m tillflow demo

## Set up and pass the tests (real PostgreSQL, sandbox HTTP, SMTP catcher, Airflow runs)
test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not e2e"

lint: venv
	$(PY) -m ruff check .

## airflow standalone + sandbox + mail catcher; UI on http://localhost:8080 (login printed)
up: venv
	$(PY) -m tillflow demo --seed-only
	@(nohup $(PY) -m aiosmtpd -n -l 127.0.0.1:8025 > $(TILLFLOW_HOME)/mail.log 2>&1 & echo $$! > $(TILLFLOW_HOME)/mail.pid)
	@echo "UI: http://localhost:8080  login: admin / $$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated)"
	@echo "mail catcher: $(TILLFLOW_HOME)/mail.log   sandbox: $(TILLFLOW_HOME)/sandbox.json"
	$(VENV)/bin/airflow standalone

down:
	-$(PY) include/sandbox/run.py stop --state-dir $(TILLFLOW_HOME)
	-@test -f $(TILLFLOW_HOME)/mail.pid && kill $$(cat $(TILLFLOW_HOME)/mail.pid) && rm -f $(TILLFLOW_HOME)/mail.pid
	-$(PY) -c "from tillflow.store.db import stop_embedded; print('embedded postgres stopped' if stop_embedded() else 'embedded postgres not running')"

bench: venv
	$(PY) bench/bench_upsert.py

## one cycle of 2,000 accounts through airflow standalone, and the pre-platform baseline (bench/README.md)
bench-scale: venv
	$(PY) bench/scale/bench_scale.py --accounts 2000 --baseline-cap-seconds 300

lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q -r requirements.in
	(echo "# Pinned: pip freeze of a clean venv built from requirements.in (Python 3.11). Regenerate with 'make lock'."; \
	 .venv-lock/bin/pip freeze) > requirements.txt && rm -rf .venv-lock

clean: down
	rm -rf $(TILLFLOW_HOME)
