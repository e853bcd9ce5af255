"""The ledger outbox: exactly-once posting to an accounting API that has no idempotency header.

Every posting (an entry, or the reversal of one) is claimed here with a deterministic posting key and
its payload hash *before* the call; the key goes to the target's ``piece_number`` so an entry whose
answer was lost can be found again. States::

    claimed ─▶ sent ─▶ confirmed ─▶ superseded (its reversal is confirmed)
                 │ └──▶ claimed   (certainly not processed: connect failure, 429/503)
                 └──▶ unknown ─▶ reconciled (found at the target by its posting key)
                            └──▶ claimed    (certainly absent: post again)
    claimed / sent / unknown ─▶ failed (refused for good, with the vendor's message) ─▶ claimed (retried by hand)

A source event that changes after posting gets a reversal plus a new revision — never an edit; a
deleted event gets a reversal. The reversal's payload is the caller's to build (``reverse``: the posted
payload in, its mirror out — debit and credit swapped are a ledger rule, not the outbox's); the outbox
keeps it beside the entry it reverses (``reverses_id``), and a replacement entry is only posted once that
reversal is (:meth:`Outbox.waiting_for`). One posting pass per account and flow at a time
(:meth:`Outbox.posting`), so a row found ``sent`` at the start of a pass was left by a pass that died
mid-call and is looked up like ``unknown``. No Airflow import.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import pq
from psycopg.types.json import Jsonb

from tillflow.errors import TillflowError, TransientError

TRANSITIONS: dict[str, frozenset[str]] = {
    "claimed": frozenset({"sent", "failed", "superseded"}),
    "sent": frozenset({"confirmed", "unknown", "claimed", "failed"}),
    "unknown": frozenset({"reconciled", "claimed", "failed"}),
    "confirmed": frozenset({"superseded"}),
    "reconciled": frozenset({"superseded"}),
    "failed": frozenset({"claimed", "superseded"}),
    "superseded": frozenset(),
}
POSTED = ("confirmed", "reconciled")


class OutboxStateError(TillflowError):
    """A transition the state machine does not allow."""


def payload_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def posting_key(account_key: str, event_key: str, revision: int, *, reversal: bool = False) -> str:
    return f"{account_key}:{event_key}:r{revision}{':rev' if reversal else ''}"


class Outbox:
    """The outbox over one connection (the Store's: dict rows). Each method is its own transaction."""

    def __init__(self, conn: Any):
        self.conn = conn

    # ---------------------------------------------------------------- what to post

    def enqueue(
        self,
        account_id: int,
        account_key: str,
        flow: str,
        event_key: str,
        payload: dict[str, Any],
        *,
        reverse: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Record the current version of a source event; returns the rows created or changed.

        New event → revision 1, claimed. Same payload → nothing. Changed before it was sent → the claim
        takes the new payload. Changed after posting → a reversal of the posted revision (``reverse``
        builds its payload from the old one) and a new revision. Changed while the outcome of a post is
        not known yet → nothing now: it is decided once the post is confirmed or reconciled.
        """
        digest = payload_hash(payload)
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{account_id}:{flow}:{event_key}",))
            latest = self._latest_entry(account_id, flow, event_key)
            if latest is None:
                return [self._insert(account_id, flow, event_key, 1, account_key, "entry", payload, digest)]
            if (
                latest["payload_hash"] == digest
                and latest["state"] != "superseded"
                and latest["reversed_by_id"] is None
            ):
                return []  # unchanged (and not on its way out: a deleted event that came back is posted again)
            if latest["state"] in ("claimed", "failed"):  # never reached the target: take the new payload
                row = self.conn.execute(
                    "UPDATE tillflow.outbox SET payload = %s, payload_hash = %s, state = 'claimed', error = '',"
                    " updated_at = now() WHERE id = %s RETURNING *",
                    (Jsonb(payload), digest, latest["id"]),
                ).fetchone()
                return [row]
            if latest["state"] in ("sent", "unknown"):
                return []
            created = []
            if latest["state"] in POSTED and latest["reversed_by_id"] is None:
                created.append(self._reversal(latest, account_key, reverse))
            revision = latest["revision"] + 1
            created.append(self._insert(account_id, flow, event_key, revision, account_key, "entry", payload, digest))
            return created

    def delete_event(
        self, account_id: int, account_key: str, flow: str, event_key: str, *, reverse: Callable[[dict], dict]
    ) -> list[dict[str, Any]]:
        """The source event is gone: reverse what was posted; drop a claim that was never sent."""
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{account_id}:{flow}:{event_key}",))
            latest = self._latest_entry(account_id, flow, event_key)
            if latest is None:
                return []
            if latest["state"] in ("claimed", "failed"):
                return [self._move(latest, "superseded", error="source event deleted before it was posted")]
            if latest["state"] in POSTED and latest["reversed_by_id"] is None:
                return [self._reversal(latest, account_key, reverse)]
            return []

    def due(self, account_id: int, flow: str) -> list[dict[str, Any]]:
        """Rows to work on (claimed or unknown), oldest first: a reversal before its replacement entry."""
        rows = self.conn.execute(
            "SELECT * FROM tillflow.outbox WHERE account_id = %s AND flow = %s AND state IN ('claimed', 'unknown')"
            " ORDER BY id",
            (account_id, flow),
        ).fetchall()
        self.conn.commit()
        return rows

    def waiting_for(self, row: dict[str, Any]) -> str | None:
        """For a replacement entry (revision 2, 3, …): the posting key of an earlier revision's reversal
        that is not posted yet (claimed, sent, unknown or failed) — the entry waits for it, so the ledger
        never holds the old and the new amount at once. None when it may go."""
        if row["kind"] != "entry" or row["revision"] <= 1:
            return None
        found = self.conn.execute(
            "SELECT posting_key FROM tillflow.outbox WHERE account_id = %s AND flow = %s AND event_key = %s"
            " AND kind = 'reversal' AND revision < %s AND state IN ('claimed', 'sent', 'unknown', 'failed')"
            " ORDER BY id LIMIT 1",
            (row["account_id"], row["flow"], row["event_key"], row["revision"]),
        ).fetchone()
        self.conn.commit()
        return found["posting_key"] if found else None

    @contextmanager
    def posting(self, account_id: int, flow: str) -> Iterator[None]:
        """Hold the account's and flow's posting lock (a session advisory lock, released with the
        connection if the worker dies); a second pass at the same time gets a :class:`TransientError`."""
        key = f"{account_id}:{flow}"
        got = self.conn.execute(
            "SELECT pg_try_advisory_lock(hashtext('tillflow.outbox'), hashtext(%s)) AS ok", (key,)
        ).fetchone()
        self.conn.commit()
        if not got["ok"]:
            raise TransientError(f"outbox: another pass is posting for account {account_id} flow {flow}; try later")
        try:
            yield
        finally:
            if not self.conn.closed:
                if self.conn.info.transaction_status == pq.TransactionStatus.INERROR:
                    self.conn.rollback()
                self.conn.execute("SELECT pg_advisory_unlock(hashtext('tillflow.outbox'), hashtext(%s))", (key,))
                self.conn.commit()

    def recover_sent(self, account_id: int, flow: str) -> int:
        """Sent rows at the start of a pass were left by a pass that died during the call (only one pass
        runs at a time): their outcome is unknown, to be looked up before any re-post."""
        with self.conn.transaction():
            cur = self.conn.execute(
                "UPDATE tillflow.outbox SET state = 'unknown', updated_at = now(),"
                " error = 'the pass that sent it ended without recording the answer'"
                " WHERE account_id = %s AND flow = %s AND state = 'sent'",
                (account_id, flow),
            )
        return cur.rowcount

    def history(self, account_id: int, flow: str, event_key: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM tillflow.outbox WHERE account_id = %s AND flow = %s AND event_key = %s ORDER BY id",
            (account_id, flow, event_key),
        ).fetchall()
        self.conn.commit()
        return rows

    # ---------------------------------------------------------------- transitions

    def mark_sent(self, row: dict[str, Any], run_id: str | None) -> dict[str, Any]:
        """Claimed → sent, committed *before* the call: a crash after it leaves a row to look up, not to re-post."""
        return self._move(row, "sent", claimed_by=run_id, attempts=row["attempts"] + 1)

    def confirm(self, row: dict[str, Any], target_ref: str) -> dict[str, Any]:
        with self.conn.transaction():
            done = self._move(row, "confirmed", target_ref=target_ref, error="")
            self._supersede_reversed(done)
        return done

    def not_processed(self, row: dict[str, Any], error: str) -> dict[str, Any]:
        """Sent → claimed: the target certainly did not process the call (connect failure, 429/503)."""
        return self._move(row, "claimed", error=error)

    def mark_unknown(self, row: dict[str, Any], error: str) -> dict[str, Any]:
        return self._move(row, "unknown", error=error)

    def reconcile(self, row: dict[str, Any], found_ref: str | None) -> dict[str, Any]:
        """Unknown → reconciled (found at the target) or → claimed (certainly absent: post again)."""
        if found_ref is None:
            return self._move(row, "claimed", error="not found at the target after a lost answer: post again")
        with self.conn.transaction():
            done = self._move(row, "reconciled", target_ref=found_ref, error="")
            self._supersede_reversed(done)
        return done

    def fail(self, row: dict[str, Any], error: str) -> dict[str, Any]:
        """Refused for good (the vendor's message in ``error``): not posted again until :meth:`retry`."""
        return self._move(row, "failed", error=error)

    def retry(self, row: dict[str, Any]) -> dict[str, Any]:
        """Failed → claimed: post it again at the next pass (after the cause was fixed)."""
        return self._move(row, "claimed", error="")

    # ---------------------------------------------------------------- internals

    def _latest_entry(self, account_id: int, flow: str, event_key: str) -> dict[str, Any] | None:
        return self.conn.execute(
            "SELECT * FROM tillflow.outbox WHERE account_id = %s AND flow = %s AND event_key = %s AND kind = 'entry'"
            " ORDER BY revision DESC LIMIT 1 FOR UPDATE",
            (account_id, flow, event_key),
        ).fetchone()

    def _insert(self, account_id, flow, event_key, revision, account_key, kind, payload, digest, reverses=None):
        key = posting_key(account_key, event_key, revision, reversal=kind == "reversal")
        return self.conn.execute(
            """
            INSERT INTO tillflow.outbox (account_id, flow, event_key, revision, posting_key, kind, reverses_id,
                                         payload, payload_hash)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *
            """,
            (account_id, flow, event_key, revision, key, kind, reverses, Jsonb(payload), digest),
        ).fetchone()

    def _reversal(self, posted: dict[str, Any], account_key: str, reverse: Callable[[dict], dict]) -> dict[str, Any]:
        payload = reverse(dict(posted["payload"]))
        row = self._insert(
            posted["account_id"],
            posted["flow"],
            posted["event_key"],
            posted["revision"],
            account_key,
            "reversal",
            payload,
            payload_hash(payload),
            reverses=posted["id"],
        )
        self.conn.execute("UPDATE tillflow.outbox SET reversed_by_id = %s WHERE id = %s", (row["id"], posted["id"]))
        return row

    def _supersede_reversed(self, row: dict[str, Any]) -> None:
        if row["kind"] == "reversal" and row["reverses_id"] is not None:
            self.conn.execute(
                "UPDATE tillflow.outbox SET state = 'superseded', updated_at = now() WHERE id = %s"
                " AND state IN ('confirmed', 'reconciled')",
                (row["reverses_id"],),
            )

    def _move(self, row: dict[str, Any], to: str, **fields: Any) -> dict[str, Any]:
        allowed_from = [s for s, targets in TRANSITIONS.items() if to in targets]
        sets = ", ".join([f"{k} = %({k})s" for k in fields] + ["state = %(to)s", "updated_at = now()"])
        with self.conn.transaction():
            moved = self.conn.execute(
                f"UPDATE tillflow.outbox SET {sets} WHERE id = %(id)s AND state = ANY(%(from)s) RETURNING *",
                {**fields, "to": to, "id": row["id"], "from": allowed_from},
            ).fetchone()
            if moved is None:
                now = self.conn.execute("SELECT state FROM tillflow.outbox WHERE id = %s", (row["id"],)).fetchone()
                raise OutboxStateError(
                    f"outbox {row['posting_key']}: cannot go from {now['state'] if now else 'nowhere'} to {to}"
                )
        return moved
