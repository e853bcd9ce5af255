"""Versioned migrations of the ``tillflow`` schema, applied idempotently (under an advisory lock)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg
from psycopg.rows import tuple_row

from tillflow.store.db import SQL_DIR

log = logging.getLogger(__name__)

_LOCK_KEY = 0x7111F10  # any constant: serialises concurrent migrators
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


def migration_files(sql_dir: Path = SQL_DIR) -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"{path.name}: migration files are named NNN_name.sql")
        found.append((int(m.group(1)), m.group(2), path))
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise ValueError(f"duplicate migration versions in {sql_dir}")
    return found


def migrate(conn: psycopg.Connection, sql_dir: Path = SQL_DIR) -> list[int]:
    """Apply every migration not yet recorded; return the versions applied now."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS tillflow")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tillflow.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = conn.cursor(row_factory=tuple_row)  # whatever row factory the caller's connection uses
        done = {v for (v,) in cur.execute("SELECT version FROM tillflow.schema_migrations")}
        for version, name, path in migration_files(sql_dir):
            if version in done:
                continue
            log.info("applying migration %03d_%s", version, name)
            conn.execute(path.read_text())
            conn.execute("INSERT INTO tillflow.schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(version)
    return applied_now
