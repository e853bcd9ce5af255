"""Retention of the tillflow store, run daily by the ``tillflow_maintenance`` DAG. No Airflow import.

Rows older than their table's retention are deleted in small batches (short transactions, no long
locks, no table-wide deletes in the hot path). Raw landing is kept longest: replays after a mapping
change read it. Canonical tables, delivery state, the outbox and account state are never purged.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from psycopg.rows import tuple_row

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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"retention.batch_size: must be a whole number >= 1, got {batch_size!r}")
    deleted: dict[str, int] = {}
    # rejects before raw landing: fewer rejects are left to unlink from the pages deleted after them
    for table in sorted(keep, key=lambda t: t == "raw_landing"):
        n_days, column = keep[table], _TIME_COLUMN[table]
        total = 0
        while True:
            with conn.transaction():
                params = {"now": now, "days": n_days, "n": batch_size}
                if table == "raw_landing":
                    n = _delete_landings(conn, params)
                else:
                    n = conn.execute(
                        f"""
                        DELETE FROM tillflow.{table} WHERE ctid IN (
                            SELECT ctid FROM tillflow.{table}
                             WHERE {column} < coalesce(%(now)s::timestamptz, now()) - make_interval(days => %(days)s)
                             LIMIT %(n)s)
                        """,
                        params,
                    ).rowcount
            total += n
            if n < batch_size:
                break
        deleted[table] = total
        log.info("retention: %s older than %d day(s): %d row(s) deleted", table, n_days, total)
    return {table: deleted[table] for table in keep}


def _delete_landings(conn: Any, params: dict[str, Any]) -> int:
    """One batch of old pages. Their rejects stay (``landing_id`` becomes NULL), but a reject the batch's
    pages share with another unlinked one (same account, flow, ref and reason) would break the rejects'
    unique key once unlinked: that duplicate goes, the oldest of each such group stays."""
    ids = [
        r[0]
        for r in conn.cursor(row_factory=tuple_row).execute(
            "SELECT id FROM tillflow.raw_landing"
            " WHERE fetched_at < coalesce(%(now)s::timestamptz, now()) - make_interval(days => %(days)s)"
            " LIMIT %(n)s",
            params,
        )
    ]
    if not ids:
        return 0
    conn.execute(
        """
        DELETE FROM tillflow.rejects r
         WHERE r.landing_id = ANY(%(ids)s)
           AND EXISTS (SELECT 1 FROM tillflow.rejects o
                        WHERE o.account_id = r.account_id AND o.flow = r.flow AND o.ref = r.ref
                          AND o.reason = r.reason AND o.id <> r.id
                          AND (o.landing_id IS NULL OR (o.landing_id = ANY(%(ids)s) AND o.id < r.id)))
        """,
        {"ids": ids},
    )
    return conn.execute("DELETE FROM tillflow.raw_landing WHERE id = ANY(%s)", (ids,)).rowcount
