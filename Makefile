# tillflow — `make demo` and `make test` work on a fresh machine (Python 3.11 + make).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt providers/tillflow-provider/pyproject.toml | cksum | cut -d' ' -f1)

export TILLFLOW_HOME ?= $(CURDIR)/.tillflow
export AIRFLOW_HOME ?= $(TILLFLOW_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL := 30
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS := admin:admin
export AIRFLOW__CORE__TEST_CONNECTION := Enabled
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)/plugins$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: venv system-deps demo test test-fast lint up down bench bench-scale lock clean

venv: $(STAMP)
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

## Set up and run ajour_to_planday once end to end on the embedded defaults
demo: venv
	$(PY) -m tillflow demo

## Debian packages the tests use: headless Chromium + ChromeDriver (health page in a browser), docker-compose
## (checks docker-compose.yaml without an engine). Installed with apt-get when missing (as root, or via sudo).
SYSTEM_PACKAGES := chromium:chromium chromedriver:chromium-driver docker-compose:docker-compose
system-deps:
	@need=""; for pair in $(SYSTEM_PACKAGES); do command -v $${pair%%:*} > /dev/null || need="$$need $${pair#*:}"; done; \
	if [ -n "$$need" ]; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
		echo "installing Debian packages:$$need"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$sudo apt-get install -y -q $$need || { $$sudo apt-get update -q && $$sudo apt-get install -y -q $$need; }; \
	fi

## Set up and pass the tests (real PostgreSQL, sandbox HTTP, SMTP catcher, Airflow runs, headless Chromium)
test: venv system-deps
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=20

test-fast: venv
	$(PY) -m pytest -q -m "not e2e"

lint: venv
	$(PY) -m ruff check .

## airflow standalone in the background + sandbox + mail catcher; prints the UI's URL and login (make down stops all)
# MAIL_PORT: the mail catcher's SMTP port (smtp_default follows it); AIRFLOW_PORT: the UI / API server's port
MAIL_PORT ?= 8025
AIRFLOW_PORT ?= 8080
UP_TIMEOUT ?= 240
PORT_FREE = $(PY) -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
	s.bind(("127.0.0.1", int(sys.argv[1])))' 2>/dev/null
up: venv
	$(PY) -m tillflow demo --seed-only
	@# the demo seeds smtp_default on port 8025: point it at this mail catcher
	@$(PY) -c 'import json, sys; c = json.load(open(sys.argv[1]))["smtp_default"]; c["port"] = int(sys.argv[2]); \
		json.dump({"smtp_default": c}, open(sys.argv[3], "w"))' \
		$(TILLFLOW_HOME)/demo_connections.json $(MAIL_PORT) $(TILLFLOW_HOME)/mail_connection.json
	@$(PY) -m airflow connections import --overwrite $(TILLFLOW_HOME)/mail_connection.json > /dev/null
	@# before the scheduler starts: it never schedules a task whose pool does not exist
	$(PY) -m tillflow.pools apply
	@if [ -f $(TILLFLOW_HOME)/mail.pid ] && kill -0 $$(cat $(TILLFLOW_HOME)/mail.pid) 2>/dev/null; then \
		echo "mail catcher already running (pid $$(cat $(TILLFLOW_HOME)/mail.pid))"; \
	else \
		$(PORT_FREE) $(MAIL_PORT) || { echo "port $(MAIL_PORT) is taken: make up MAIL_PORT=<a free port>"; exit 1; }; \
		nohup $(PY) -m aiosmtpd -n -l 127.0.0.1:$(MAIL_PORT) > $(TILLFLOW_HOME)/mail.log 2>&1 < /dev/null & \
		echo $$! > $(TILLFLOW_HOME)/mail.pid; \
		for i in $$(seq 50); do $(PY) -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
			$(MAIL_PORT) 2>/dev/null && break; sleep 0.2; done; \
		if ! kill -0 $$(cat $(TILLFLOW_HOME)/mail.pid) 2>/dev/null; then \
			rm -f $(TILLFLOW_HOME)/mail.pid; cat $(TILLFLOW_HOME)/mail.log; \
			echo "the mail catcher did not start (log above)"; exit 1; \
		fi; \
	fi
	@# in its own session, so make down finds every process it started (task runners have their own process
	@# groups); SIGINT restored (a background job starts with it ignored): standalone shuts down on SIGINT only
	@if [ -f $(TILLFLOW_HOME)/airflow.pid ] && kill -0 $$(cat $(TILLFLOW_HOME)/airflow.pid) 2>/dev/null; then \
		echo "airflow standalone already running (pid $$(cat $(TILLFLOW_HOME)/airflow.pid))"; \
	else \
		$(PORT_FREE) $(AIRFLOW_PORT) || { echo "port $(AIRFLOW_PORT) is taken: make up AIRFLOW_PORT=<a free port>"; exit 1; }; \
		TILLFLOW_POOLS=1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
		AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$(AIRFLOW_PORT)/execution/ \
		nohup $(PY) -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.setsid(); \
			os.execv(sys.argv[1], sys.argv[1:])' $(VENV)/bin/airflow standalone > $(TILLFLOW_HOME)/airflow.log 2>&1 < /dev/null & \
		echo $$! > $(TILLFLOW_HOME)/airflow.pid; \
		echo "airflow standalone starting (pid $$!, log $(TILLFLOW_HOME)/airflow.log) ..."; \
	fi
	@for i in $$(seq $(UP_TIMEOUT)); do \
		$(PY) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
			http://localhost:$(AIRFLOW_PORT)/api/v2/monitor/health 2>/dev/null && break; \
		kill -0 $$(cat $(TILLFLOW_HOME)/airflow.pid) 2>/dev/null || { tail -n 40 $(TILLFLOW_HOME)/airflow.log; \
			echo "airflow standalone exited (log above)"; exit 1; }; \
		[ $$i = $(UP_TIMEOUT) ] && { tail -n 40 $(TILLFLOW_HOME)/airflow.log; \
			echo "the UI did not answer within $(UP_TIMEOUT) s; make down stops what started"; exit 1; }; \
		sleep 1; \
	done
	@echo "UI: http://localhost:$(AIRFLOW_PORT)  login: admin / $$($(PY) -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' \
		$(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated)"
	@echo "mail catcher: 127.0.0.1:$(MAIL_PORT), $(TILLFLOW_HOME)/mail.log   sandbox: $(TILLFLOW_HOME)/sandbox.json"
	@echo "airflow log: $(TILLFLOW_HOME)/airflow.log   stop everything: make down"

## stop what make up started: airflow standalone (its whole session), the mail catcher, the sandbox, the embedded PostgreSQL
down:
	-@if [ -f $(TILLFLOW_HOME)/airflow.pid ]; then \
		sid=$$(cat $(TILLFLOW_HOME)/airflow.pid); \
		left() { awk -v sid=$$sid '{ sub(/^.*\) /, ""); if ($$4 == sid) { split(FILENAME, p, "/"); print p[3] } }' \
			/proc/[0-9]*/stat 2>/dev/null; }; \
		if [ -n "$$(left)" ]; then \
			echo "stopping airflow standalone (session $$sid: $$(left | wc -l) processes)"; \
			kill -INT $$sid 2>/dev/null; \
			for i in $$(seq 60); do [ -z "$$(left)" ] && break; sleep 0.5; done; \
			[ -n "$$(left)" ] && { kill -TERM $$(left) 2>/dev/null; sleep 5; }; \
			[ -n "$$(left)" ] && { echo "SIGKILL: $$(left | tr '\n' ' ')"; kill -KILL $$(left) 2>/dev/null; sleep 1; }; \
			if [ -n "$$(left)" ]; then echo "airflow processes still running: $$(left | tr '\n' ' ')"; exit 1; fi; \
			echo "airflow stopped"; \
		else echo "airflow not running"; fi; \
		rm -f $(TILLFLOW_HOME)/airflow.pid; \
	else echo "airflow not running"; fi
	-@if [ -f $(TILLFLOW_HOME)/mail.pid ]; then \
		pid=$$(cat $(TILLFLOW_HOME)/mail.pid); \
		if grep -q aiosmtpd /proc/$$pid/cmdline 2>/dev/null && kill $$pid 2>/dev/null; then \
			for i in $$(seq 50); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; echo "mail catcher stopped"; \
		else echo "mail catcher not running"; fi; \
		rm -f $(TILLFLOW_HOME)/mail.pid; \
	else echo "mail catcher not running"; fi
	-$(PY) include/sandbox/run.py stop --state-dir $(TILLFLOW_HOME)
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
