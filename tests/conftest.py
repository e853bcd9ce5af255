"""Shared fixtures: a real PostgreSQL database, the sandbox, an SMTP catcher and one Airflow home.

PostgreSQL: ``TILLFLOW_TEST_DATABASE_URL`` (a server URL; a throwaway database is created on it) or,
by default, the embedded pgserver under ``.tillflow/test-pgdata`` — the same default a fresh machine
gets. Airflow: one session-wide ``AIRFLOW_HOME`` in a temp dir with a SQLite metadata DB (set before
anything imports Airflow).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "include")]

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="tillflow-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "TILLFLOW_HOME": str(ROOT / ".tillflow"),
    }
)
os.environ.pop("TILLFLOW_DATABASE_URL", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of a fresh, empty database for this test session (dropped at the end)."""
    import logging

    import psycopg

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    server = os.environ.get("TILLFLOW_TEST_DATABASE_URL")
    if not server:
        import pgserver

        (ROOT / ".tillflow").mkdir(exist_ok=True)  # a fresh clone has none
        server = pgserver.get_server(ROOT / ".tillflow" / "test-pgdata", cleanup_mode=None).get_uri()
    name = f"tillflow_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(server, name)
    os.environ["TILLFLOW_DATABASE_URL"] = url
    yield url
    os.environ.pop("TILLFLOW_DATABASE_URL", None)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_dbname(url: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)


_TABLES = "accounts, mappings, raw_landing, revenue, delivery_state, rejects, activity, batches, oauth_tokens"


@pytest.fixture
def store(pg_url):
    """An open Store on an empty tillflow schema."""
    from tillflow.store import Store, ensure_schema

    ensure_schema(pg_url)
    s = Store.open(pg_url)
    s.conn.execute(f"TRUNCATE {', '.join('tillflow.' + t for t in _TABLES.split(', '))} RESTART IDENTITY CASCADE")
    s.conn.commit()
    yield s
    s.close()


# ------------------------------------------------------------------ sandbox


@pytest.fixture(scope="session")
def sandbox_server():
    from sandbox.server import Sandbox

    sb = Sandbox(ajour_port=0, planday_port=0).start()
    yield sb
    sb.stop()


@pytest.fixture
def sandbox(sandbox_server):
    """The vendor stand-ins, reset (state, faults, request log) for each test."""
    import requests

    for url in sandbox_server.urls.values():
        requests.post(f"{url}/_sandbox/reset", timeout=5).raise_for_status()
    return sandbox_server


AJOUR_MAPPING = {"L1": "1001", "L2": "1002", "L3": "1001", "L4": "1003"}
FAST_HTTP = {"backoff_base": 0.01, "backoff_max": 0.05, "read_timeout": 5, "max_retry_after": 1}


@pytest.fixture
def ajour_account(store, sandbox):
    """Factory: an Ajour → Planday account on the stand-ins — its location mapping (``None`` marks a location
    inactive) and its two connections, returned as ``ConnectionInfo`` (for ``run_shard``) and set as
    ``AIRFLOW_CONN_*`` variables (for the CLI and Airflow runs; removed after the test)."""
    from tillflow.sources.base import ConnectionInfo
    from tillflow.specs import parse_settings

    names: list[str] = []

    def make(key="cafe_nord", *, company="1001", client="nord", mapping=None, http=None, name="Cafe Nord"):
        http = dict(FAST_HTTP if http is None else http)
        account = store.upsert_account(
            "ajour_to_planday",
            key,
            name=name,
            conn_id=f"ajour_{key}",
            target_conn_id=f"planday_{key}",
            settings=parse_settings({"timezone": "Europe/Copenhagen", "start_date": "2026-01-01", "lookback_days": 3}),
        )
        for loc, unit in (AJOUR_MAPPING if mapping is None else mapping).items():
            store.set_mapping(account.id, "location", loc, unit)
        conns = {
            f"ajour_{key}": ConnectionInfo(
                conn_id=f"ajour_{key}",
                host=sandbox.ajour_url,
                login="api",
                password=f"pw-{company}",
                schema=f"{key}_db",
                extra={"company_id": company, **http},
            ),
            f"planday_{key}": ConnectionInfo(
                conn_id=f"planday_{key}", host=sandbox.planday_url, login=client, password=f"rt-{client}", extra=http
            ),
        }
        for conn_id, info in conns.items():
            env = f"AIRFLOW_CONN_{conn_id.upper()}"
            os.environ[env] = json.dumps(
                {"conn_type": "http", "host": info.host, "login": info.login, "password": info.password}
                | {"schema": info.schema, "extra": info.extra}
            )
            names.append(env)
        return account, conns

    yield make
    for env in names:
        os.environ.pop(env, None)


# ------------------------------------------------------------------ SMTP catcher


class MailCatcher:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.port = free_port()
        catcher = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
                from email import message_from_bytes
                from email.policy import default

                catcher.messages.append(message_from_bytes(envelope.content, policy=default))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.lock = threading.Lock()

    def start(self) -> MailCatcher:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture(scope="session")
def mail_server():
    catcher = MailCatcher().start()
    os.environ["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": catcher.port,
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "tillflow@localhost", "retry_limit": 0},
    })
    yield catcher
    catcher.stop()


@pytest.fixture
def mail(mail_server):
    mail_server.messages.clear()
    return mail_server


# ------------------------------------------------------------------ Airflow


@pytest.fixture(scope="session")
def airflow_db():
    """Migrate the session's Airflow metadata DB once (SQLite in a temp AIRFLOW_HOME)."""
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return _AIRFLOW_HOME
