"""Keyed upsert: one value per target key (and day, and hour) that the target stores and replaces.

Planday and Eitje revenue, Shiftbase team days and timesheets. Only rows whose value changed since
their last delivery are sent; the target's own id for a row is remembered (``delivery_state.target_id``)
so a later change updates that object. Finishes what it can: a row the target refuses (a permanent 4xx)
is recorded failed with the vendor's message and the other rows still go; a transient failure that
outlived the HTTP retries stops the account (the rest stays pending for the next attempt).
"""

from __future__ import annotations

import logging
from typing import Any

from tillflow import progress
from tillflow.errors import DeliveryRefused, RemoteError
from tillflow.records import TargetRow
from tillflow.sources.base import Window

log = logging.getLogger(__name__)


def _kept_by_target(mode: str, row: TargetRow, existing: dict, last: dict) -> str | None:
    """Why the target's current value wins over ours under the write mode, or None to send."""
    current = existing.get((row.target_key, row.business_date, row.hour))
    if current is None or mode == "overwrite" or current == row.amount:
        return None
    if mode == "insert_only":
        return f"insert_only: target already holds {current}"
    ours = last.get((row.target_key, row.business_date, row.hour))
    if ours is None or ours != current:
        return f"keep_manual: target holds {current}, not written by tillflow"
    return None


def deliver_keyed(
    store: Any, item: Any, client: Any, *, kind: str, hourly: bool | None, run_id: str, label: str = ""
) -> dict[str, int]:
    """Send the account's rows that changed since their last delivery (any day: a failed delivery is
    retried from the store, never by calling the POS again). Returns delivered/skipped/failed/pending."""
    pending = store.pending_deliveries(
        item.account_id, window=item.window if item.force_delivery else None, force=item.force_delivery, hourly=hourly
    )
    if item.force_delivery:  # a forced window re-send plus anything else still pending
        seen = {(r.target_key, r.business_date, r.hour) for r in pending}
        pending += [
            r
            for r in store.pending_deliveries(item.account_id, hourly=hourly)
            if (r.target_key, r.business_date, r.hour) not in seen
        ]
    delivered = skipped = 0
    refused: list[str] = []
    try:
        existing: dict = {}
        last: dict = {}
        if pending and item.mode != "overwrite":
            span = Window(min(r.business_date for r in pending), max(r.business_date for r in pending))
            existing = client.existing(kind, sorted({r.target_key for r in pending}), span)
            last = {
                (d["target_key"], d["business_date"], d["hour"]): d["amount"]
                for d in store.delivery_state(item.account_id)
                if d["status"] == "delivered"
            }
        for row in pending:
            progress.rows(delivered + skipped + len(refused), len(pending))  # the shard's 10 s progress line
            reason = _kept_by_target(item.mode, row, existing, last)
            if reason:
                store.record_delivery(item.account_id, row, "skipped", detail=reason, run_id=run_id)
                skipped += 1
                continue
            try:
                result = client.deliver(kind, row)
            except RemoteError as exc:
                if not exc.permanent:
                    store.record_delivery(item.account_id, row, "failed", detail=str(exc), run_id=run_id)
                    raise
                # the target refused this row: record why, go on with the others
                store.record_delivery(item.account_id, row, "failed", detail=str(exc), run_id=run_id)
                refused.append(
                    f"{row.target_key} {row.business_date}{'' if row.hour is None else f' {row.hour}h'}: {exc}"
                )
                log.warning("%s: %s refused %s %s: %s", label, client.name, row.target_key, row.business_date, exc)
                continue
            except Exception as exc:
                store.record_delivery(item.account_id, row, "failed", detail=str(exc), run_id=run_id)
                raise
            store.record_delivery(
                item.account_id, row, result.status, detail=result.detail, run_id=run_id, target_id=result.target_id
            )
            if result.status == "delivered":
                delivered += 1
            else:
                skipped += 1
                log.info(
                    "%s: %s %s skipped by %s: %s", label, row.target_key, row.business_date, client.name, result.detail
                )
    finally:
        store.activity_update(
            run_id, item.account_id, item.flow, delivered=delivered, skipped=skipped, failed=len(refused)
        )
    if refused:
        raise DeliveryRefused(
            f"{client.name} refused {len(refused)} of {len(pending)} row(s), {delivered} delivered; "
            f"first: {refused[0]}",
            refused=refused,
        )
    return {"delivered": delivered, "skipped": skipped, "failed": 0, "pending": len(pending)}
