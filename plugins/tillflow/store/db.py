"""Where the tillflow database is, and connections to it.

Resolution order: ``TILLFLOW_DATABASE_URL``; else the Airflow connection ``tillflow_db`` (from
``AIRFLOW_CONN_TILLFLOW_DB``, or from any secrets backend when running inside Airflow); else an embedded PostgreSQL (the
``pgserver`` wheel) under ``$TILLFLOW_HOME/pgdata`` (``.tillflow/`` in the project by default), left
running so every Airflow task process shares it. No Airflow import at module level.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SQL_DIR = PROJECT_ROOT / "include" / "sql"


def tillflow_home() -> Path:
    return Path(os.environ.get("TILLFLOW_HOME") or PROJECT_ROOT / ".tillflow")


def _airflow_conn_url() -> str | None:
    # Only consult Airflow when it is already loaded (inside an Airflow process) or the connection is
    # given as an environment variable: importing Airflow costs ~1.5 s on every CLI call otherwise.
    if not (os.environ.get("AIRFLOW_CONN_TILLFLOW_DB") or "airflow.sdk" in sys.modules):
        return None
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection("tillflow_db")
    except Exception:  # no Airflow, or no such connection: fall through to the embedded server
        return None
    uri = conn.get_uri()
    return uri.replace("postgres://", "postgresql://", 1).replace("postgresql+psycopg2://", "postgresql://", 1)


def embedded_url() -> str:
    """Start (or reuse) the embedded PostgreSQL and return its URL."""
    import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata = tillflow_home() / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def stop_embedded() -> bool:
    """Stop the embedded server if it runs (``make down``)."""
    pgdata = tillflow_home() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    import pgserver

    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None  # pgserver's own user under root
    pgserver.pg_ctl(["-m", "fast", "-w", "stop"], pgdata=pgdata, user=user)
    return True


_resolved: str | None = None


def database_url(*, refresh: bool = False) -> str:
    global _resolved
    if _resolved and not refresh and not os.environ.get("TILLFLOW_DATABASE_URL"):
        return _resolved
    url = os.environ.get("TILLFLOW_DATABASE_URL") or _airflow_conn_url() or embedded_url()
    _resolved = url
    return url


def connect(url: str | None = None, *, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(url or database_url(), autocommit=autocommit, application_name="tillflow")
