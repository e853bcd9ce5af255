"""Ledger outbox delivery: post what the outbox holds, exactly once (see :mod:`tillflow.store.outbox`).

For every due row: a row whose last answer was lost (``unknown``) is first looked up at the target by
its posting key — found: reconciled, never posted again; absent: posted. A claimed row is marked sent
(committed) before the call, then confirmed with the target's id. A lost answer makes it ``unknown``
(no re-post in the same pass). A refusal (a permanent 4xx) fails that row with the vendor's message and
the others still go; a transient failure stops the pass with the rest left claimed.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from tillflow.errors import DeliveryRefused, RemoteError, TransientError
from tillflow.store.outbox import Outbox

log = logging.getLogger(__name__)


class LedgerPoster(Protocol):
    name: str

    def post(self, payload: dict[str, Any], posting_key: str) -> str:
        """Create the entry with ``posting_key`` as its piece number; returns the target's id."""

    def find(self, posting_key: str) -> str | None:
        """The target's id of the entry with this piece number, or None."""


def _outcome_unknown(exc: TransientError) -> bool:
    return "outcome unknown" in str(exc).lower() or "outcome is unknown" in str(exc).lower()


def post_outbox(
    outbox: Outbox, account_id: int, flow: str, poster: LedgerPoster, *, run_id: str | None, label: str = ""
) -> dict[str, int]:
    counts = {"posted": 0, "reconciled": 0, "failed": 0, "unknown": 0}
    refused: list[str] = []
    for row in outbox.due(account_id, flow):
        if row["state"] == "unknown":
            found = poster.find(row["posting_key"])
            row = outbox.reconcile(row, found)
            if found is not None:
                counts["reconciled"] += 1
                log.info("%s: %s was posted after all (%s): reconciled", label, row["posting_key"], found)
                continue
        row = outbox.mark_sent(row, run_id)
        try:
            ref = poster.post(dict(row["payload"]), row["posting_key"])
        except TransientError as exc:
            if _outcome_unknown(exc):
                outbox.mark_unknown(row, str(exc))
                counts["unknown"] += 1
                log.warning("%s: %s outcome unknown; looked up before any re-post", label, row["posting_key"])
                continue
            outbox.not_processed(row, str(exc))
            raise
        except RemoteError as exc:
            if not exc.permanent:
                outbox.mark_unknown(row, str(exc))
                raise
            outbox.fail(row, str(exc))
            counts["failed"] += 1
            refused.append(f"{row['posting_key']}: {exc}")
            continue
        outbox.confirm(row, ref)
        counts["posted"] += 1
    if refused:
        raise DeliveryRefused(f"{poster.name} refused {len(refused)} posting(s); first: {refused[0]}", refused=refused)
    return counts
