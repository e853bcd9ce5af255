"""Retention of the tillflow store, run daily by the ``tillflow_maintenance`` DAG. No Airflow import.

Rows older than their table's retention are deleted in small batches (short transactions, no long
locks, no table-wide deletes in the hot path). Raw landing is kept longest: replays after a mapping
change read it. Canonical tables, delivery state, the outbox and account state are never purged.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from tillflow.errors import ConfigError

log = logging.getLogger(__name__)

#: days kept per table (README "Database")
DEFAULT_RETENTION_DAYS = {"raw_landing": 400, "batches": 14, "activity": 400, "rejects": 180}
_TIME_COLUMN = {"raw_landing": "fetched_at", "batches": "created_at", "activity": "started_at", "rejects": "created_at"}


def retention(days: dict[str, Any] | None = None) -> dict[str, int]:
    """The defaults overlaid with ``days``; a bad value is refused naming the table."""
    out = dict(DEFAULT_RETENTION_DAYS)
    for table, value in (days or {}).items():
        if table not in out:
            raise ConfigError(f"retention: unknown table {table!r}; known: {', '.join(out)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"retention.{table}: must be a whole number of days >= 1, got {value!r}")
        out[table] = value
    return out


def purge(
    conn: Any, days: dict[str, Any] | None = None, *, batch_size: int = 10_000, now: datetime | None = None
) -> dict[str, int]:
    """Delete rows older than each table's retention, ``batch_size`` rows per transaction; returns counts."""
    keep = retention(days)
    deleted: dict[str, int] = {}
    for table, n_days in keep.items():
        column = _TIME_COLUMN[table]
        total = 0
        while True:
            with conn.transaction():
                cur = conn.execute(
                    f"""
                    DELETE FROM tillflow.{table} WHERE ctid IN (
                        SELECT ctid FROM tillflow.{table}
                         WHERE {column} < coalesce(%(now)s::timestamptz, now()) - make_interval(days => %(days)s)
                         LIMIT %(n)s)
                    """,
                    {"now": now, "days": n_days, "n": batch_size},
                )
            total += cur.rowcount
            if cur.rowcount < batch_size:
                break
        deleted[table] = total
        log.info("retention: %s older than %d day(s): %d row(s) deleted", table, n_days, total)
    return deleted
