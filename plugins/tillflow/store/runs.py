"""Run bookkeeping of the store: the work list of a sharded run (activity rows) and the state per
account and flow (``tillflow.flow_state``). Mixed into :class:`tillflow.store.Store`. No Airflow import."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

#: worst first: an account's summary status is the worst over its flows — ``paused`` last, so an account with one
#: flow switched off is summarised by the flows that run, and is ``paused`` only when every flow is
STATUS_ORDER = ("auth_failed", "failing", "needs_mapping", "ok", "paused")
#: what a shard (and its retry) still has to do
UNFINISHED = ("pending", "running")


class RunStateMixin:
    conn: Any

    # ---------------------------------------------------------------- the work list of a run

    def plan_activity(self, dag_id: str, run_id: str, items: Iterable[dict[str, Any]]) -> int:
        """One 'pending' activity row per planned account and flow, with its shard, window, mode and due time.
        A re-planned run (the plan task retried) resets its rows; finished rows of another run are untouched."""
        rows = [
            (
                dag_id,
                run_id,
                i["account_id"],
                i["flow"],
                i["window_start"],
                i["window_end"],
                i.get("shard", 0),
                i["mode"],
                bool(i.get("force_delivery")),
                i.get("due_at"),
            )
            for i in items
        ]
        if not rows:
            return 0
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO tillflow.activity (dag_id, run_id, account_id, flow, window_start, window_end, shard,
                                               mode, force_delivery, due_at, status)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending')
                ON CONFLICT (run_id, account_id, flow) DO UPDATE
                   SET window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end,
                       shard = EXCLUDED.shard, mode = EXCLUDED.mode, force_delivery = EXCLUDED.force_delivery,
                       due_at = EXCLUDED.due_at, status = 'pending', error = '', finished_at = NULL
                """,
                rows,
            )
        return len(rows)

    def run_items(self, run_id: str, shard: int, *, all_rows: bool = False) -> list[dict[str, Any]]:
        """The activity rows of one shard that did not finish (pending, running — a killed worker —, or
        failed with an error a retry may cure), with the account's key and name."""
        rows = self.conn.execute(
            """
            SELECT a.*, acc.account_key, acc.name FROM tillflow.activity a
              JOIN tillflow.accounts acc ON acc.id = a.account_id
             WHERE a.run_id = %(r)s AND a.shard = %(s)s
               AND (%(all)s OR a.status IN ('pending', 'running') OR (a.status = 'failed' AND a.retryable))
             ORDER BY acc.account_key, a.flow
            """,
            {"r": run_id, "s": shard, "all": all_rows},
        ).fetchall()
        self.conn.commit()
        return rows

    def activity_finish(
        self, run_id: str, account_id: int, flow: str, status: str, *, error: str = "", retryable: bool = True
    ) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "UPDATE tillflow.activity SET status = %s, error = %s, retryable = %s, finished_at = now()"
                " WHERE run_id = %s AND account_id = %s AND flow = %s",
                (status, (error or "")[:1000], retryable, run_id, account_id, flow),
            )

    # ---------------------------------------------------------------- state per account and flow

    def flow_states(self, account_ids: Iterable[int] | None = None) -> dict[tuple[int, str], dict[str, Any]]:
        ids = None if account_ids is None else list(account_ids)
        rows = self.conn.execute(
            "SELECT * FROM tillflow.flow_state WHERE %(ids)s::bigint[] IS NULL OR account_id = ANY(%(ids)s)",
            {"ids": ids},
        ).fetchall()
        self.conn.commit()
        return {(r["account_id"], r["flow"]): r for r in rows}

    def flow_state(self, account_id: int, flow: str) -> dict[str, Any] | None:
        return self.flow_states([account_id]).get((account_id, flow))

    def set_flow_status(self, account_id: int, flow: str, status: str, detail: str = "") -> None:
        """Set one flow's status (never another flow's) and the account's summary status (the worst)."""
        with self.conn.transaction():
            self.conn.execute(
                """
                INSERT INTO tillflow.flow_state (account_id, flow, status, status_detail) VALUES (%s, %s, %s, %s)
                ON CONFLICT (account_id, flow) DO UPDATE
                   SET status = EXCLUDED.status, status_detail = EXCLUDED.status_detail, updated_at = now()
                """,
                (account_id, flow, status, detail[:1000]),
            )
            self._summarise_status(account_id)

    def set_paused(self, account_id: int, reasons: dict[str, str]) -> None:
        """Pausing is a status too: each flow with a reason (account paused, flow switched off) becomes ``paused``
        with it; a paused flow whose reason is gone becomes ``ok`` until its next run says otherwise (that run
        checks mapping and credentials again). Other statuses of running flows are left alone."""
        with self.conn.transaction():
            for flow, reason in reasons.items():
                if reason:
                    self.conn.execute(
                        """
                        INSERT INTO tillflow.flow_state (account_id, flow, status, status_detail)
                        VALUES (%s, %s, 'paused', %s)
                        ON CONFLICT (account_id, flow) DO UPDATE
                           SET status = 'paused', status_detail = EXCLUDED.status_detail, updated_at = now()
                        """,
                        (account_id, flow, reason),
                    )
                else:
                    self.conn.execute(
                        "UPDATE tillflow.flow_state SET status = 'ok', status_detail = '', updated_at = now()"
                        " WHERE account_id = %s AND flow = %s AND status = 'paused'",
                        (account_id, flow),
                    )
            self._summarise_status(account_id)

    def flow_success(
        self, account_id: int, flow: str, *, due_at: datetime | None, window: Any, run_id: str | None
    ) -> None:
        """A successful run: status ok, last success now, the due time it served (kept at its latest)."""
        with self.conn.transaction():
            self.conn.execute(
                """
                INSERT INTO tillflow.flow_state (account_id, flow, status, status_detail, last_success_at,
                                                 last_due_at, last_window_start, last_window_end, last_run_id)
                VALUES (%(a)s, %(f)s, 'ok', '', now(), %(due)s, %(ws)s, %(we)s, %(run)s)
                ON CONFLICT (account_id, flow) DO UPDATE
                   SET status = 'ok', status_detail = '', last_success_at = now(),
                       last_due_at = GREATEST(tillflow.flow_state.last_due_at, EXCLUDED.last_due_at),
                       last_window_start = EXCLUDED.last_window_start, last_window_end = EXCLUDED.last_window_end,
                       last_run_id = EXCLUDED.last_run_id, updated_at = now()
                """,
                {
                    "a": account_id,
                    "f": flow,
                    "due": due_at,
                    "ws": window.start if window else None,
                    "we": window.end if window else None,
                    "run": run_id,
                },
            )
            self._summarise_status(account_id)

    def set_backfill_due(self, account_id: int, flow: str, due_at: datetime) -> None:
        """Activation backfill: the earliest time of its next attempt (plan sets it when it schedules one)."""
        with self.conn.transaction():
            self.conn.execute(
                """
                INSERT INTO tillflow.flow_state (account_id, flow, backfill_due_at) VALUES (%s, %s, %s)
                ON CONFLICT (account_id, flow) DO UPDATE SET backfill_due_at = EXCLUDED.backfill_due_at,
                                                            updated_at = now()
                """,
                (account_id, flow, due_at),
            )

    def backfill_done(self, account_id: int, flow: str, *, due_at: datetime | None = None) -> None:
        """The activation backfill succeeded; ``due_at`` (the attempt's due time, after the activation it
        served) is recorded, so a later activation is told apart from this one."""
        with self.conn.transaction():
            self.conn.execute(
                """
                INSERT INTO tillflow.flow_state (account_id, flow, backfill_done_at)
                VALUES (%s, %s, COALESCE(%s, now()))
                ON CONFLICT (account_id, flow) DO UPDATE SET backfill_done_at = EXCLUDED.backfill_done_at,
                                                            updated_at = now()
                """,
                (account_id, flow, due_at),
            )

    # ---------------------------------------------------------------- what a source lists

    def set_source_items(self, account_id: int, kind: str, items: Iterable[Any]) -> None:
        """Replace what the source lists for ``kind`` (RefItems: key, name)."""
        items = list(items)
        with self.conn.transaction():
            self.conn.execute(
                "DELETE FROM tillflow.source_items WHERE account_id = %s AND kind = %s AND NOT key = ANY(%s)",
                (account_id, kind, [i.key for i in items]),
            )
            with self.conn.cursor() as cur:
                cur.executemany(
                    """
                    INSERT INTO tillflow.source_items (account_id, kind, key, name) VALUES (%s, %s, %s, %s)
                    ON CONFLICT (account_id, kind, key) DO UPDATE SET name = EXCLUDED.name, seen_at = now()
                    """,
                    [(account_id, kind, i.key, i.name) for i in items],
                )

    def source_items(self, account_id: int, kind: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT key, name, seen_at FROM tillflow.source_items WHERE account_id = %s AND kind = %s ORDER BY key",
            (account_id, kind),
        ).fetchall()
        self.conn.commit()
        return rows

    def _summarise_status(self, account_id: int) -> None:
        order = "CASE f.status " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(STATUS_ORDER)) + " END"
        self.conn.execute(
            f"""
            UPDATE tillflow.accounts acc
               SET status = w.status, status_detail = w.detail, updated_at = now()
              FROM (SELECT f.status, CASE WHEN f.status = 'ok' THEN '' ELSE f.flow || ': ' || f.status_detail END
                           AS detail
                      FROM tillflow.flow_state f WHERE f.account_id = %(a)s ORDER BY {order} LIMIT 1) w
             WHERE acc.id = %(a)s AND (acc.status, acc.status_detail) IS DISTINCT FROM (w.status, w.detail)
            """,
            {"a": account_id},
        )
