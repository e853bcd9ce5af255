"""Ledger outbox delivery: post what the outbox holds, exactly once (see :mod:`tillflow.store.outbox`).

One pass per account and flow at a time (an advisory lock; a second pass gets a ``TransientError``). A
row found ``sent`` at the start was left by a pass that died mid-call: it becomes ``unknown``. For every
due row, oldest first: an ``unknown`` row is first looked up at the target by its posting key — found:
reconciled, never posted again; absent: posted. A claimed row is marked sent (committed) before the call,
then confirmed with the target's id. A lost answer (``TransientError`` saying "outcome unknown", or a
408/409/429 ``RemoteError``) makes it ``unknown``: no re-post in the same pass, the next pass looks it up.
A replacement entry is held (stays claimed) while the reversal of what it replaces is not posted. A
refusal (a permanent 4xx) fails that row with the vendor's message and the others still go; the pass then
raises :class:`DeliveryRefused` naming them (the account fails, like keyed delivery). A transient failure
that is certainly not processed stops the pass with that row and the rest left claimed.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from tillflow.errors import AuthError, DeliveryRefused, RemoteError, TransientError
from tillflow.store.outbox import Outbox

_log = logging.getLogger(__name__)


class LedgerPoster(Protocol):
    name: str

    def post(self, payload: dict[str, Any], posting_key: str) -> str:
        """Create the entry with ``posting_key`` as its piece number; returns the target's id. Raises
        ``TransientError`` saying "outcome unknown" when the answer was lost, ``RemoteError`` (4xx) when
        refused."""

    def find(self, posting_key: str) -> str | None:
        """The target's id of the entry with this piece number, or None."""


def _outcome_unknown(exc: TransientError) -> bool:
    return "outcome unknown" in str(exc).lower() or "outcome is unknown" in str(exc).lower()


def post_outbox(
    outbox: Outbox,
    account_id: int,
    flow: str,
    poster: LedgerPoster,
    *,
    run_id: str | None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    label: str = "",
    progress: Any = None,
) -> dict[str, int]:
    """Post the account's due rows for ``flow``; returns counts: posted, reconciled, failed, unknown
    (answers lost in this pass: the next pass looks them up — fail or retry the task so it comes) and
    held (replacements waiting for their reversal). ``progress(done, total)`` is called before each row and
    at the end (a long history import logs its pace from it)."""
    log = log or _log
    name = getattr(poster, "name", type(poster).__name__)
    counts = {"posted": 0, "reconciled": 0, "failed": 0, "unknown": 0, "held": 0}
    refused: list[str] = []
    with outbox.posting(account_id, flow):
        if recovered := outbox.recover_sent(account_id, flow):
            log.warning("%s: %d posting(s) left sent by a dead pass: looked up before any re-post", label, recovered)
        due = outbox.due(account_id, flow)
        for done, row in enumerate(due):
            if progress is not None:
                progress(done, len(due))
            if row["state"] == "unknown":
                found = poster.find(row["posting_key"])
                row = outbox.reconcile(row, found)
                if found is not None:
                    counts["reconciled"] += 1
                    log.info("%s: %s was posted after all (%s): reconciled", label, row["posting_key"], found)
                    continue
            if waiting := outbox.waiting_for(row):
                counts["held"] += 1
                log.info("%s: %s waits for %s to be posted first", label, row["posting_key"], waiting)
                continue
            row = outbox.mark_sent(row, run_id)
            try:
                ref = poster.post(dict(row["payload"]), row["posting_key"])
            except TransientError as exc:
                if not _outcome_unknown(exc):
                    outbox.not_processed(row, str(exc))
                    raise
                outbox.mark_unknown(row, str(exc))
                counts["unknown"] += 1
                log.warning("%s: %s outcome unknown; looked up before any re-post", label, row["posting_key"])
                continue
            except RemoteError as exc:
                if not exc.permanent:  # 408/409/429: it may have been processed (409: the piece number exists)
                    outbox.mark_unknown(row, str(exc))
                    counts["unknown"] += 1
                    log.warning("%s: %s answered %s: looked up at the next pass", label, row["posting_key"], exc)
                    continue
                outbox.fail(row, str(exc))
                counts["failed"] += 1
                refused.append(f"{row['posting_key']}: {exc}")
                log.warning("%s: %s refused %s: %s", label, name, row["posting_key"], exc)
                continue
            except AuthError as exc:  # refused before processing
                outbox.not_processed(row, str(exc))
                raise
            except BaseException as exc:  # anything else: it may have reached the target
                outbox.mark_unknown(row, f"{type(exc).__name__}: {exc}")
                raise
            outbox.confirm(row, ref)
            counts["posted"] += 1
        if progress is not None:
            progress(len(due), len(due))
    if refused:
        raise DeliveryRefused(
            f"{name} refused {len(refused)} posting(s), {counts['posted']} posted; first: {refused[0]}",
            refused=refused,
        )
    return counts
