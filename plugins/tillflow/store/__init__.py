"""PostgreSQL store: accounts, mappings, raw landing, canonical revenue (COPY → staging → merge),
delivery state, rejects and the activity log. No Airflow import.

Usage::

    ensure_schema()                    # once, from an explicit step (CLI, the plan task, a test fixture)
    with Store.open() as store:        # resolves the database; never migrates on its own
        store.upsert_revenue(account.id, rows, mode="keep_manual", run_id=run_id)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tillflow.errors import ConfigError
from tillflow.mapping import MappingRule
from tillflow.records import RawPage, Reject, TargetRow
from tillflow.sources.base import Window
from tillflow.specs import AccountSettings, WriteMode, check_account_key, parse_settings
from tillflow.store.db import connect, database_url
from tillflow.store.migrate import migrate
from tillflow.store.runs import RunStateMixin

_MODE_CONDITION = {
    "overwrite": "TRUE",
    "insert_only": "FALSE",
    "keep_manual": "r.origin = 'integration'",
}


@dataclass(frozen=True)
class Account:
    id: int
    integration: str
    key: str
    name: str
    conn_id: str
    target_conn_id: str | None
    settings: AccountSettings
    status: str = "ok"
    status_detail: str = ""
    created_at: Any = None

    def target_conn(self, target: str) -> str:
        """The Airflow connection of the target side: its own, or ``<target>_<account key>``."""
        return self.target_conn_id or f"{target}_{self.key}"

    def ref(self) -> dict[str, Any]:
        """What travels in XCom: keys only, never settings or credentials."""
        return {"id": self.id, "key": self.key, "name": self.name}


@dataclass(frozen=True)
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    kept: int = 0  # existing values the write mode protected

    @property
    def upserted(self) -> int:
        return self.inserted + self.updated


def _row_to_account(row: dict[str, Any]) -> Account:
    return Account(
        id=row["id"],
        integration=row["integration"],
        key=row["account_key"],
        name=row["name"],
        conn_id=row["conn_id"],
        target_conn_id=row["target_conn_id"],
        settings=parse_settings(row["settings"], where=f"account {row['account_key']} settings"),
        status=row["status"],
        status_detail=row["status_detail"],
        created_at=row.get("created_at"),
    )


class Store(RunStateMixin):
    """One open connection to the tillflow database. Methods commit their own unit of work."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.conn.row_factory = dict_row

    @classmethod
    def open(cls, url: str | None = None, *, migrate_schema: bool = False) -> Store:
        """A connection to the tillflow database. Migrations run from an explicit step (:func:`ensure_schema`:
        ``python -m tillflow migrate``, the CLI, each DAG's plan task), not on every open."""
        conn = connect(url or database_url())
        if migrate_schema:
            migrate(conn)
        return cls(conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and not self.conn.closed:
            self.conn.rollback()
        self.close()

    # ---------------------------------------------------------------- accounts

    def upsert_account(
        self,
        integration: str,
        key: str,
        *,
        name: str,
        conn_id: str,
        settings: AccountSettings,
        target_conn_id: str | None = None,
    ) -> Account:
        check_account_key(key)
        with self.conn.transaction():
            row = self.conn.execute(
                """
                INSERT INTO tillflow.accounts (integration, account_key, name, conn_id, target_conn_id, settings)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (integration, account_key) DO UPDATE
                   SET name = EXCLUDED.name, conn_id = EXCLUDED.conn_id, target_conn_id = EXCLUDED.target_conn_id,
                       settings = EXCLUDED.settings, updated_at = now()
                RETURNING *
                """,
                (integration, key, name, conn_id, target_conn_id, Jsonb(settings.to_json())),
            ).fetchone()
        return _row_to_account(row)

    def find_account(self, integration: str, key: str) -> Account | None:
        row = self.conn.execute(
            "SELECT * FROM tillflow.accounts WHERE integration = %s AND account_key = %s", (integration, key)
        ).fetchone()
        self.conn.commit()
        return _row_to_account(row) if row else None

    def get_account(self, integration: str, key: str) -> Account:
        account = self.find_account(integration, key)
        if account is None:
            known = [a.key for a in self.list_accounts(integration)]
            raise ConfigError(
                f"account: unknown account {key!r} for {integration}; known: {', '.join(known) or 'none'}"
            )
        return account

    def account_by_id(self, account_id: int) -> Account:
        row = self.conn.execute("SELECT * FROM tillflow.accounts WHERE id = %s", (account_id,)).fetchone()
        self.conn.commit()
        if row is None:
            raise ConfigError(f"account: no account with id {account_id}")
        return _row_to_account(row)

    def list_accounts(self, integration: str | None = None) -> list[Account]:
        rows = self.conn.execute(
            "SELECT * FROM tillflow.accounts WHERE %(i)s::text IS NULL OR integration = %(i)s"
            " ORDER BY integration, account_key",
            {"i": integration},
        ).fetchall()
        self.conn.commit()
        return [_row_to_account(r) for r in rows]

    def delete_account(self, integration: str, key: str) -> bool:
        """Delete an account and everything tillflow holds for it (revenue, landing, log, mappings)."""
        with self.conn.transaction():
            cur = self.conn.execute(
                "DELETE FROM tillflow.accounts WHERE integration = %s AND account_key = %s", (integration, key)
            )
        return cur.rowcount > 0

    def update_settings(self, account_id: int, settings: AccountSettings) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "UPDATE tillflow.accounts SET settings = %s, updated_at = now() WHERE id = %s",
                (Jsonb(settings.to_json()), account_id),
            )

    def set_status(self, account_id: int, status: str, detail: str = "", *, flow: str | None = None) -> None:
        """An account's status; with ``flow``, that flow's status (the account's becomes the worst of its flows)."""
        if flow is not None:
            return self.set_flow_status(account_id, flow, status, detail)
        with self.conn.transaction():
            self.conn.execute(
                "UPDATE tillflow.accounts SET status = %s, status_detail = %s, updated_at = now() WHERE id = %s",
                (status, detail, account_id),
            )

    def last_runs(self, integration: str | None = None) -> dict[int, dict[str, Any]]:
        """The latest activity row per account (for ``accounts list`` and the health view)."""
        rows = self.conn.execute(
            """
            SELECT DISTINCT ON (a.account_id) a.*
              FROM tillflow.activity a JOIN tillflow.accounts acc ON acc.id = a.account_id
             WHERE %(i)s::text IS NULL OR acc.integration = %(i)s
             ORDER BY a.account_id, a.started_at DESC, a.id DESC
            """,
            {"i": integration},
        ).fetchall()
        self.conn.commit()
        return {r["account_id"]: r for r in rows}

    # ---------------------------------------------------------------- mappings

    def set_mapping(self, account_id: int, kind: str, source_key: str, target_key: str | None) -> None:
        """Map ``source_key`` to ``target_key``; ``None`` marks it explicitly inactive."""
        with self.conn.transaction():
            self.conn.execute(
                """
                INSERT INTO tillflow.mappings (account_id, kind, source_key, target_key) VALUES (%s, %s, %s, %s)
                ON CONFLICT (account_id, kind, source_key) DO UPDATE
                   SET target_key = EXCLUDED.target_key, updated_at = now()
                """,
                (account_id, kind, source_key, target_key),
            )

    def remove_mapping(self, account_id: int, kind: str, source_key: str) -> bool:
        with self.conn.transaction():
            cur = self.conn.execute(
                "DELETE FROM tillflow.mappings WHERE account_id = %s AND kind = %s AND source_key = %s",
                (account_id, kind, source_key),
            )
        return cur.rowcount > 0

    def mappings(self, account_id: int, kind: str) -> dict[str, MappingRule]:
        rows = self.conn.execute(
            "SELECT source_key, target_key FROM tillflow.mappings WHERE account_id = %s AND kind = %s",
            (account_id, kind),
        ).fetchall()
        self.conn.commit()
        return {r["source_key"]: MappingRule(r["source_key"], r["target_key"]) for r in rows}

    # ---------------------------------------------------------------- raw landing

    def land(self, account_id: int, source: str, window: Window, page: RawPage, *, run_id: str | None) -> int:
        """Store a fetched page (gzip) unless the identical payload for the same window is there already
        (a unique key decides, so two concurrent landers of the same page get the same id)."""
        digest = hashlib.sha256(page.body).hexdigest()
        with self.conn.transaction():
            row = self.conn.execute(
                """
                INSERT INTO tillflow.raw_landing (account_id, source, flow, window_start, window_end, request,
                                                  content_type, body_gz, sha256, run_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (account_id, flow, window_start, window_end, sha256) DO NOTHING
                RETURNING id
                """,
                (
                    account_id,
                    source,
                    page.flow,
                    window.start,
                    window.end,
                    Jsonb(page.request),
                    page.content_type,
                    gzip.compress(page.body),
                    digest,
                    run_id,
                ),
            ).fetchone()
            if row is None:
                row = self.conn.execute(
                    "SELECT id FROM tillflow.raw_landing WHERE account_id = %s AND flow = %s AND window_start = %s"
                    " AND window_end = %s AND sha256 = %s",
                    (account_id, page.flow, window.start, window.end, digest),
                ).fetchone()
        return row["id"]

    def landed(self, landing_ids: Iterable[int]) -> list[tuple[int, RawPage]]:
        rows = self.conn.execute(
            "SELECT id, flow, request, content_type, body_gz FROM tillflow.raw_landing WHERE id = ANY(%s) ORDER BY id",
            (list(landing_ids),),
        ).fetchall()
        self.conn.commit()
        return [(r["id"], self._page(r)) for r in rows]

    def landed_for_window(self, account_id: int, flow: str, window: Window) -> list[tuple[int, RawPage]]:
        """Every landed page overlapping ``window``, oldest first (later pages win when replayed)."""
        rows = self.conn.execute(
            """
            SELECT id, flow, request, content_type, body_gz FROM tillflow.raw_landing
             WHERE account_id = %s AND flow = %s AND window_start <= %s AND window_end >= %s
             ORDER BY fetched_at, id
            """,
            (account_id, flow, window.end, window.start),
        ).fetchall()
        self.conn.commit()
        return [(r["id"], self._page(r)) for r in rows]

    @staticmethod
    def _page(row: dict[str, Any]) -> RawPage:
        return RawPage(
            flow=row["flow"],
            request=row["request"],
            content_type=row["content_type"],
            body=gzip.decompress(bytes(row["body_gz"])),
        )

    # ---------------------------------------------------------------- map → upsert hand-off

    def put_batch(
        self, account_id: int, flow: str, window: Window, rows: list[TargetRow], *, run_id: str | None
    ) -> int:
        """Keep mapped rows for the upsert step (XCom carries the batch id, not the data)."""
        payload = [[r.target_key, r.business_date.isoformat(), r.hour, str(r.amount)] for r in rows]
        with self.conn.transaction():
            row = self.conn.execute(
                "INSERT INTO tillflow.batches (account_id, flow, run_id, window_start, window_end, rows)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (account_id, flow, run_id, window.start, window.end, Jsonb(payload)),
            ).fetchone()
        return row["id"]

    def get_batch(self, batch_id: int) -> list[TargetRow]:
        row = self.conn.execute("SELECT rows FROM tillflow.batches WHERE id = %s", (batch_id,)).fetchone()
        self.conn.commit()
        if row is None:
            raise LookupError(f"batch {batch_id} is gone (batches are kept 14 days): re-run the map task")
        return [
            TargetRow(target_key=k, business_date=date.fromisoformat(d), hour=h, amount=Decimal(a))
            for k, d, h, a in row["rows"]
        ]

    # ---------------------------------------------------------------- rejects

    def add_rejects(
        self, account_id: int, flow: str, rejects: Iterable[Reject], *, landing_id: int | None, run_id: str | None
    ) -> int:
        """Record rejects once (a replay of the same page adds nothing); return how many are new."""
        new = 0
        with self.conn.transaction():
            for rej in rejects:
                cur = self.conn.execute(
                    """
                    INSERT INTO tillflow.rejects (account_id, flow, landing_id, ref, reason, payload, run_id)
                    VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
                    """,
                    (account_id, flow, landing_id, rej.ref, rej.reason, Jsonb(rej.payload), run_id),
                )
                new += cur.rowcount
        return new

    def rejects(self, account_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM tillflow.rejects WHERE account_id = %s ORDER BY id", (account_id,)
        ).fetchall()
        self.conn.commit()
        return rows

    # ---------------------------------------------------------------- canonical revenue

    def upsert_revenue(
        self, account_id: int, rows: Iterable[TargetRow], *, mode: WriteMode, run_id: str | None = None
    ) -> UpsertResult:
        """COPY rows into a staging table, then merge them into ``tillflow.revenue`` with the write mode.

        ``overwrite`` replaces existing values; ``insert_only`` keeps any existing value;
        ``keep_manual`` updates what integrations wrote but never a value entered by hand or from Excel.
        Unchanged rows are not rewritten.
        """
        return self.upsert_revenue_many(
            [(account_id, r.target_key, r.business_date, r.hour, r.amount) for r in rows], mode=mode, run_id=run_id
        )

    def upsert_revenue_many(
        self,
        tuples: Iterable[tuple[int, str, date, int | None, Decimal]],
        *,
        mode: WriteMode,
        run_id: str | None = None,
    ) -> UpsertResult:
        """The bulk path of :meth:`upsert_revenue`: ``(account_id, target_key, date, hour, amount)`` tuples.

        One transaction: COPY into a per-connection TEMP staging table, count what matches existing rows,
        then write only what must change. When nothing matches (a first load, new days) the rows go in
        with a plain INSERT; otherwise unchanged and protected rows are filtered out before
        ``INSERT … ON CONFLICT DO UPDATE``, which still re-checks each conflict, so a concurrent writer is
        merged with, never duplicated or blindly overwritten.
        """
        if mode not in _MODE_CONDITION:
            raise ConfigError(f"write_mode: must be one of {', '.join(_MODE_CONDITION)}, got {mode!r}")
        may_update = _MODE_CONDITION[mode]  # a condition on the existing row ``r``
        conn = self.conn
        nested = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        if isinstance(tuples, list) and tuples:
            first = self._first_load(tuples, run_id=run_id)
            if first is not None:
                return first
        with conn.transaction():
            # hour None (the whole day) is stored as -1: derived by the server, so rows are sent as they come
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS revenue_stage ("
                " account_id bigint, target_key text, business_date date, hour_in smallint, amount numeric(14,2),"
                " hour smallint GENERATED ALWAYS AS (coalesce(hour_in, -1)) STORED)"
                " ON COMMIT DELETE ROWS"
            )
            if nested:  # an outer transaction is open: ON COMMIT DELETE ROWS has not emptied the stage
                conn.execute("TRUNCATE revenue_stage")
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY revenue_stage (account_id, target_key, business_date, hour_in, amount) FROM STDIN"
                ) as copy:
                    write = copy.write_row
                    for row in tuples:
                        write(row)
                staged = cur.rowcount
            if staged <= 0:
                return UpsertResult()
            if staged >= 10_000:  # temp tables get no autovacuum: give the planner real numbers for big batches
                conn.execute("ANALYZE revenue_stage")
            # tillflow.revenue has no foreign key (a per-row check halves bulk loads): check the batch once
            unknown = conn.execute(
                "SELECT DISTINCT s.account_id FROM revenue_stage s"
                " WHERE NOT EXISTS (SELECT FROM tillflow.accounts a WHERE a.id = s.account_id)"
            ).fetchall()
            if unknown:
                ids = ", ".join(str(r["account_id"]) for r in unknown)
                raise ConfigError(f"account_id: no account with id {ids}; nothing of this batch was written")
            count_sql = f"""
                SELECT count(*) AS matched,
                       count(*) FILTER (WHERE r.amount = s.amount) AS unchanged,
                       count(*) FILTER (WHERE r.amount <> s.amount AND {may_update}) AS to_update
                  FROM revenue_stage s
                  JOIN tillflow.revenue r USING (account_id, target_key, business_date, hour)
                """
            same = conn.execute(count_sql).fetchone()
            if same["matched"] == 0:
                # Nothing to merge with: a plain INSERT. If a concurrent writer committed one of these keys
                # meanwhile (or a key comes twice in this batch) it fails: recount and merge as below.
                try:
                    with conn.transaction():
                        inserted = conn.execute(
                            """
                            INSERT INTO tillflow.revenue
                                   (account_id, target_key, business_date, hour, amount, origin, run_id)
                            SELECT account_id, target_key, business_date, hour, amount, 'integration', %(run)s
                              FROM revenue_stage
                            """,
                            {"run": run_id},
                        ).rowcount
                    return UpsertResult(inserted=inserted)
                except psycopg.errors.UniqueViolation:
                    same = conn.execute(count_sql).fetchone()
            differing = same["matched"] - same["unchanged"]
            if same["matched"] == staged and same["to_update"] == 0:  # nothing new, nothing to update
                return UpsertResult(unchanged=same["unchanged"], kept=differing)
            merged = conn.execute(
                f"""
                WITH up AS (
                    INSERT INTO tillflow.revenue AS r
                           (account_id, target_key, business_date, hour, amount, origin, run_id)
                    SELECT s.account_id, s.target_key, s.business_date, s.hour, s.amount, 'integration', %(run)s
                      FROM revenue_stage s
                     WHERE NOT EXISTS (  -- leave out rows that are unchanged or that the write mode protects
                           SELECT FROM tillflow.revenue r
                            WHERE r.account_id = s.account_id AND r.target_key = s.target_key
                              AND r.business_date = s.business_date AND r.hour = s.hour
                              AND NOT (r.amount <> s.amount AND {may_update}))
                    ON CONFLICT (account_id, target_key, business_date, hour) DO UPDATE
                       SET amount = EXCLUDED.amount, origin = 'integration', run_id = EXCLUDED.run_id,
                           updated_at = now()
                     WHERE r.amount <> EXCLUDED.amount AND {may_update}
                    RETURNING (xmax = 0) AS inserted
                )
                SELECT count(*) FILTER (WHERE inserted) AS inserted,
                       count(*) FILTER (WHERE NOT inserted) AS updated
                  FROM up
                """,
                {"run": run_id},
            ).fetchone()
        return UpsertResult(
            inserted=merged["inserted"],
            updated=merged["updated"],
            unchanged=same["unchanged"],
            kept=differing - merged["updated"],
        )

    def _first_load(self, rows: list[tuple], *, run_id: str | None) -> UpsertResult | None:
        """COPY straight into ``tillflow.revenue`` when its accounts have no revenue yet (a first or
        history load): nothing to merge with, so no staging. ``None`` when the merge path must run."""
        conn = self.conn
        ids = sorted({r[0] for r in rows})
        with conn.transaction():
            known = {r["id"] for r in conn.execute("SELECT id FROM tillflow.accounts WHERE id = ANY(%s)", (ids,))}
            if missing := [i for i in ids if i not in known]:
                raise ConfigError(
                    f"account_id: no account with id {', '.join(map(str, missing))}; nothing of this batch was written"
                )
            if conn.execute("SELECT 1 FROM tillflow.revenue WHERE account_id = ANY(%s) LIMIT 1", (ids,)).fetchone():
                return None
            try:
                with conn.transaction(), conn.cursor() as cur:
                    with cur.copy(
                        "COPY tillflow.revenue (account_id, target_key, business_date, hour, amount, origin, run_id)"
                        " FROM STDIN"
                    ) as copy:
                        write = copy.write_row
                        for account_id, key, day, hour, amount in rows:
                            write((account_id, key, day, -1 if hour is None else hour, amount, "integration", run_id))
                    return UpsertResult(inserted=cur.rowcount)
            except psycopg.errors.UniqueViolation:
                return None  # a key twice in the batch, or a concurrent writer: merge instead

    def set_revenue_by_hand(
        self,
        account_id: int,
        target_key: str,
        day: date,
        amount: Decimal,
        *,
        origin: str = "manual",
        hour: int | None = None,
    ) -> None:
        """A value entered by hand or imported from Excel: it always wins, and keep_manual protects it."""
        if origin not in ("manual", "excel"):
            raise ConfigError(f"origin: must be manual or excel, got {origin!r}")
        with self.conn.transaction():
            self.conn.execute(
                """
                INSERT INTO tillflow.revenue (account_id, target_key, business_date, hour, amount, origin)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (account_id, target_key, business_date, hour) DO UPDATE
                   SET amount = EXCLUDED.amount, origin = EXCLUDED.origin, run_id = NULL, updated_at = now()
                 WHERE tillflow.revenue.amount IS DISTINCT FROM EXCLUDED.amount
                    OR tillflow.revenue.origin <> EXCLUDED.origin
                """,
                (account_id, target_key, day, -1 if hour is None else hour, amount, origin),
            )

    def delete_revenue_by_hand(
        self, account_id: int, target_key: str, day: date, *, hour: int | None = None, pos_amount: Decimal | None = None
    ) -> str | None:
        """Undo a hand-entered or imported value; ``pos_amount`` is what the POS says for that key (mapped
        again from the pages landed for the day, :func:`tillflow.replay.landed_value`), None when unknown.

        Returns ``"restored"`` (the row takes the POS value, origin integration: the next run sends it, on any
        day, and later fetches overwrite it), ``"removed"`` (never sent to the target, nothing there to put
        back), ``"kept"`` (nothing changed: the target may hold the hand value and the POS value is unknown —
        removing the row would leave the hand value at the target, and 0 would be a figure the POS never
        said), or None when the key holds no hand value.
        """
        h = -1 if hour is None else hour
        key = (account_id, target_key, day, h)
        with self.conn.transaction():
            row = self.conn.execute(
                "SELECT r.amount, d.account_id IS NOT NULL AS sent FROM tillflow.revenue r"
                " LEFT JOIN tillflow.delivery_state d USING (account_id, target_key, business_date, hour)"
                " WHERE r.account_id = %s AND r.target_key = %s AND r.business_date = %s AND r.hour = %s"
                " AND r.origin IN ('manual', 'excel') FOR UPDATE OF r",
                key,
            ).fetchone()
            if row is None:
                return None
            # any delivery state (delivered, or failed/skipped after an earlier delivery): the target may hold it
            if pos_amount is not None and (row["sent"] or pos_amount != 0):
                self.conn.execute(
                    "UPDATE tillflow.revenue SET amount = %s, origin = 'integration', run_id = NULL, updated_at = now()"
                    " WHERE account_id = %s AND target_key = %s AND business_date = %s AND hour = %s",
                    (pos_amount, *key),
                )
                return "restored"
            if row["sent"]:
                return "kept"
            self.conn.execute(
                "DELETE FROM tillflow.revenue WHERE account_id = %s AND target_key = %s AND business_date = %s"
                " AND hour = %s",
                key,
            )
            return "removed"

    def revenue(self, account_id: int, window: Window | None = None) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            """
            SELECT target_key, business_date, NULLIF(hour, -1) AS hour, amount, origin FROM tillflow.revenue
             WHERE account_id = %(a)s AND (%(s)s::date IS NULL OR business_date BETWEEN %(s)s AND %(e)s)
             ORDER BY target_key, business_date, hour
            """,
            {"a": account_id, "s": window.start if window else None, "e": window.end if window else None},
        ).fetchall()
        self.conn.commit()
        return rows

    # ---------------------------------------------------------------- delivery

    def pending_deliveries(
        self, account_id: int, *, window: Window | None = None, force: bool = False, hourly: bool | None = None
    ) -> list[TargetRow]:
        """Canonical rows whose value differs from what was last delivered (or never was, or failed).

        ``force`` re-sends every row of ``window`` (a manual re-sync). ``hourly`` picks hour rows (True)
        or whole-day rows (False); ``None`` both.
        """
        rows = self.conn.execute(
            """
            SELECT r.target_key, r.business_date, NULLIF(r.hour, -1) AS hour, r.amount
              FROM tillflow.revenue r
              LEFT JOIN tillflow.delivery_state d USING (account_id, target_key, business_date, hour)
             WHERE r.account_id = %(a)s
               AND (%(s)s::date IS NULL OR r.business_date BETWEEN %(s)s AND %(e)s)
               AND (%(force)s OR d.account_id IS NULL OR d.amount <> r.amount OR d.status = 'failed')
               AND (%(hourly)s::boolean IS NULL OR (r.hour >= 0) = %(hourly)s)
             ORDER BY r.business_date, r.target_key, r.hour
            """,
            {
                "hourly": hourly,
                "a": account_id,
                "s": window.start if window else None,
                "e": window.end if window else None,
                "force": force,
            },
        ).fetchall()
        self.conn.commit()
        return [
            TargetRow(target_key=r["target_key"], business_date=r["business_date"], hour=r["hour"], amount=r["amount"])
            for r in rows
        ]

    def record_delivery(
        self,
        account_id: int,
        row: TargetRow,
        status: str,
        *,
        detail: str = "",
        run_id: str | None = None,
        target_id: str | None = None,
    ) -> None:
        """What was sent for one canonical row, and the target's own id for it when it told us one."""
        with self.conn.transaction():
            self.conn.execute(
                """
                INSERT INTO tillflow.delivery_state
                       (account_id, target_key, business_date, hour, amount, status, detail, run_id, target_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (account_id, target_key, business_date, hour) DO UPDATE
                   SET amount = EXCLUDED.amount, status = EXCLUDED.status, detail = EXCLUDED.detail,
                       run_id = EXCLUDED.run_id, attempts = tillflow.delivery_state.attempts + 1, updated_at = now(),
                       target_id = coalesce(EXCLUDED.target_id, tillflow.delivery_state.target_id)
                """,
                (
                    account_id,
                    row.target_key,
                    row.business_date,
                    -1 if row.hour is None else row.hour,
                    row.amount,
                    status,
                    detail[:500],
                    run_id,
                    target_id,
                ),
            )

    def delivery_state(self, account_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT target_key, business_date, NULLIF(hour, -1) AS hour, amount, status, detail, attempts, target_id"
            " FROM tillflow.delivery_state WHERE account_id = %s ORDER BY business_date, target_key",
            (account_id,),
        ).fetchall()
        self.conn.commit()
        return rows

    # ---------------------------------------------------------------- activity log

    def activity_start(
        self,
        dag_id: str,
        run_id: str,
        account_id: int,
        flow: str,
        window: Window | None,
        *,
        source: str = "",
        target: str = "",
    ) -> None:
        """Open the activity row of one account's flow in a run; ``source``/``target`` name the systems the data
        came from and went to (``ccv_salespos`` → ``eaccounting``), so the log shows each flow's direction."""
        with self.conn.transaction():
            self.conn.execute(
                """
                INSERT INTO tillflow.activity
                       (dag_id, run_id, account_id, flow, window_start, window_end, source, target)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (run_id, account_id, flow) DO UPDATE
                   SET status = 'running', error = '', started_at = now(), window_start = EXCLUDED.window_start,
                       window_end = EXCLUDED.window_end, finished_at = NULL, source = EXCLUDED.source,
                       target = EXCLUDED.target
                """,
                (
                    dag_id,
                    run_id,
                    account_id,
                    flow,
                    window.start if window else None,
                    window.end if window else None,
                    source,
                    target,
                ),
            )

    _COUNTERS = ("fetched", "upserted", "unchanged", "kept", "rejected", "delivered", "skipped", "failed")

    def activity_update(
        self,
        run_id: str,
        account_id: int,
        flow: str,
        *,
        status: str | None = None,
        error: str | None = None,
        detail: str | None = None,
        add_retries: int = 0,
        finished: bool = False,
        **counters: int,
    ) -> None:
        """Set the counters a step owns (set, not add: a task retry does not double them)."""
        unknown = set(counters) - set(self._COUNTERS)
        if unknown:
            raise ValueError(f"unknown activity counters: {sorted(unknown)}")
        sets = [f"{k} = %({k})s" for k in counters]
        if status is not None:
            sets.append("status = %(status)s")
        if error is not None:
            sets.append("error = %(error)s")
        if detail is not None:
            sets.append("detail = %(detail)s")
        if finished:
            sets.append("finished_at = now()")
        sets.append("retries = retries + %(add_retries)s")
        params = {
            **counters,
            "status": status,
            "error": (error or "")[:1000],
            "detail": (detail or "")[:1000],
            "add_retries": add_retries,
            "run": run_id,
            "acc": account_id,
            "flow": flow,
        }
        with self.conn.transaction():
            self.conn.execute(
                f"UPDATE tillflow.activity SET {', '.join(sets)}"
                " WHERE run_id = %(run)s AND account_id = %(acc)s AND flow = %(flow)s",
                params,
            )

    def activity(
        self,
        *,
        run_id: str | None = None,
        account_id: int | None = None,
        integration: str | None = None,
        account_key: str | None = None,
        flow: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Activity rows with the account's key, name and integration. Without ``limit``: oldest first (a run's
        story); with ``limit``: the newest ``limit`` rows, newest first (the CLI's log)."""
        order = "a.started_at DESC, a.id DESC LIMIT %(n)s" if limit is not None else "a.started_at, a.id"
        rows = self.conn.execute(
            f"""
            SELECT a.*, acc.account_key, acc.name, acc.integration FROM tillflow.activity a
              JOIN tillflow.accounts acc ON acc.id = a.account_id
             WHERE (%(r)s::text IS NULL OR a.run_id = %(r)s) AND (%(a)s::bigint IS NULL OR a.account_id = %(a)s)
               AND (%(i)s::text IS NULL OR acc.integration = %(i)s)
               AND (%(k)s::text IS NULL OR acc.account_key = %(k)s)
               AND (%(f)s::text IS NULL OR a.flow = %(f)s)
             ORDER BY {order}
            """,
            {"r": run_id, "a": account_id, "i": integration, "k": account_key, "f": flow, "n": limit},
        ).fetchall()
        self.conn.commit()
        return rows

    def record_reconciliation(self, run_id: str, account_id: int, integration: str, days: list[dict[str, Any]]) -> None:
        """One row per checked day in ``tillflow.reconciliation`` (keys: kind, business_date, pos, target, diff,
        status, detail); a re-check in the same run replaces the day's row."""
        if not days:
            return
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO tillflow.reconciliation (run_id, account_id, integration, kind, business_date, pos_total,
                                                     target_total, diff, status, detail)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (run_id, account_id, kind, business_date) DO UPDATE
                   SET pos_total = EXCLUDED.pos_total, target_total = EXCLUDED.target_total, diff = EXCLUDED.diff,
                       status = EXCLUDED.status, detail = EXCLUDED.detail, checked_at = now()
                """,
                [
                    (run_id, account_id, integration, d["kind"], d["business_date"], d["pos"], d["target"], d["diff"])
                    + (d["status"], d["detail"][:2000])
                    for d in days
                ],
            )

    def snapshot(self, account_id: int) -> dict[str, Any]:
        """Everything an account has in the store except the activity log (tests: a re-run changes nothing)."""

        def q(sql: str) -> list[tuple]:
            out = [tuple(r.values()) for r in self.conn.execute(sql, (account_id,)).fetchall()]
            self.conn.commit()
            return out

        return {
            "revenue": q(
                "SELECT target_key, business_date, hour, amount, origin, updated_at FROM tillflow.revenue"
                " WHERE account_id = %s ORDER BY 1, 2, 3"
            ),
            "delivery": q(
                "SELECT target_key, business_date, hour, amount, status, attempts, updated_at"
                " FROM tillflow.delivery_state WHERE account_id = %s ORDER BY 1, 2, 3"
            ),
            "landing": q("SELECT id, sha256 FROM tillflow.raw_landing WHERE account_id = %s ORDER BY id"),
            "rejects": q("SELECT id, ref, reason FROM tillflow.rejects WHERE account_id = %s ORDER BY id"),
        }

    # ---------------------------------------------------------------- health view (plugins/tillflow/health.py)

    def last_activity_by_flow(self, account_ids: Iterable[int] | None = None) -> dict[tuple[int, str], dict[str, Any]]:
        """The latest activity row per account and flow (health view: last run, window, counts)."""
        ids = None if account_ids is None else list(account_ids)
        rows = self.conn.execute(
            """
            SELECT DISTINCT ON (account_id, flow) * FROM tillflow.activity
             WHERE %(ids)s::bigint[] IS NULL OR account_id = ANY(%(ids)s)
             ORDER BY account_id, flow, started_at DESC, id DESC
            """,
            {"ids": ids},
        ).fetchall()
        self.conn.commit()
        return {(r["account_id"], r["flow"]): r for r in rows}

    def open_reject_counts(self) -> dict[tuple[int, str], int]:
        """Rejects not yet acknowledged, per account and flow."""
        rows = self.conn.execute(
            "SELECT account_id, flow, count(*) AS n FROM tillflow.rejects WHERE acknowledged_at IS NULL"
            " GROUP BY account_id, flow"
        ).fetchall()
        self.conn.commit()
        return {(r["account_id"], r["flow"]): r["n"] for r in rows}

    def list_rejects(
        self, account_id: int, *, flow: str | None = None, include_acknowledged: bool = False, limit: int = 500
    ) -> list[dict[str, Any]]:
        """An account's rejects, newest first (open ones only unless ``include_acknowledged``)."""
        rows = self.conn.execute(
            """
            SELECT id, flow, ref, reason, payload, run_id, created_at, acknowledged_at, acknowledged_by
              FROM tillflow.rejects
             WHERE account_id = %(a)s AND (%(f)s::text IS NULL OR flow = %(f)s)
               AND (%(all)s OR acknowledged_at IS NULL)
             ORDER BY id DESC LIMIT %(n)s
            """,
            {"a": account_id, "f": flow, "all": include_acknowledged, "n": limit},
        ).fetchall()
        self.conn.commit()
        return rows

    def acknowledge_rejects(
        self, account_id: int, *, by: str, flow: str | None = None, ids: Iterable[int] | None = None
    ) -> int:
        """Acknowledge an account's open rejects (all, one flow's, or the ``ids`` given); returns how many."""
        id_list = None if ids is None else [int(i) for i in ids]
        with self.conn.transaction():
            cur = self.conn.execute(
                """
                UPDATE tillflow.rejects SET acknowledged_at = now(), acknowledged_by = %(by)s
                 WHERE account_id = %(a)s AND acknowledged_at IS NULL AND (%(f)s::text IS NULL OR flow = %(f)s)
                   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s))
                """,
                {"a": account_id, "by": by[:200], "f": flow, "ids": id_list},
            )
        return cur.rowcount

    def unmapped_keys(self) -> dict[tuple[int, str], list[dict[str, Any]]]:
        """What a source lists (``source_items``) with no mapping yet, per account and mapping kind."""
        rows = self.conn.execute(
            """
            SELECT s.account_id, s.kind, s.key, s.name FROM tillflow.source_items s
              LEFT JOIN tillflow.mappings m ON (m.account_id, m.kind, m.source_key) = (s.account_id, s.kind, s.key)
             WHERE m.account_id IS NULL ORDER BY s.account_id, s.kind, s.key
            """
        ).fetchall()
        self.conn.commit()
        out: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault((r["account_id"], r["kind"]), []).append({"key": r["key"], "name": r["name"]})
        return out


_migrated: set[str] = set()
_migrating = threading.Lock()


def ensure_schema(url: str | None = None) -> list[int]:
    """Bring the schema up to date once per process and database (under an advisory lock); cheap after
    (a set lookup). Returns the migration versions applied now."""
    url = url or database_url()
    if url in _migrated:
        return []
    with _migrating:  # threads of one process: one migrates, the others wait and find it done
        if url in _migrated:
            return []
        with connect(url) as conn:
            applied = migrate(conn)
        _migrated.add(url)
    return applied


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)
