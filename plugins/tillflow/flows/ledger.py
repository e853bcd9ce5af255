"""Ledger: POS events (orders, payments, till closings) become balanced ledger entries, posted exactly once.

Each source event has a deterministic key (``order:<id>``, ``payment:<id>``, ``closing:<id>``: one entry
per till closing, its global lines and its cash differences together) and its entry is built by the pure
posting rules (:mod:`tillflow.posting`, Decimal, balanced before it is queued) from the account's chart
("accounting chapters", settings ``flows.<flow>.chart``). The entry is queued in the outbox
(:mod:`tillflow.store.outbox`): claimed with a payload hash before any call, its posting key written to the
target's ``piece_number``, a lost answer looked up before any re-post, a changed event reversed and posted
anew (never edited), a deleted event reversed — and a closing left with no entry (no takings, no
difference) reversed too. A change is seen when the event's day is read again: by the daily run's
lookback, or a manual day, range or replay. Every flow of this kind shares one outbox per account
(``OUTBOX_FLOW``): the daily run and the history import never post an event twice.

A record the rules cannot post (an unknown VAT rate, a payment method without an account, a closing for a
register without a journal, an order whose lines do not add up) goes to rejects naming the record and
field; the other events are posted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import date
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, EmailStr

from tillflow import progress as shard_progress
from tillflow.delivery.outbox import post_outbox
from tillflow.flows.base import FlowKind
from tillflow.records import LedgerEntry, Reject, SaleOrder
from tillflow.store.outbox import Outbox

log = logging.getLogger(__name__)

OUTBOX_FLOW = "ledger"
PROGRESS_EVERY_SECONDS = 10.0


def _chart_model():
    from tillflow.posting import Chart

    return Chart


class LedgerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the first day of the fiscal year: where the history import starts (required)
    fiscal_year_start: date
    #: the account's chart ("accounting chapters"); French defaults (:class:`tillflow.posting.Chart`)
    chart: dict[str, Any] = {}
    notify_email: EmailStr | None = None
    enabled: bool = True

    def chart_model(self):
        return _chart_model().model_validate({**self.chart, "fiscal_year_start": self.fiscal_year_start})


def entry_payload(entry: LedgerEntry) -> dict[str, Any]:
    """The outbox payload of an entry: JSON, amounts as 2-decimal strings, accounts as numbers; a VAT line
    also names its rate (``"vat_rate": "5.5"``)."""
    from tillflow.posting import rate_key

    return {
        "event_key": entry.event_key,
        "date": entry.date.isoformat(),
        "label": entry.label,
        "journal": entry.journal,
        "currency": "EUR",
        "lines": [
            {
                "account": line.account,
                "label": line.label,
                "debit": f"{line.debit:.2f}",
                "credit": f"{line.credit:.2f}",
                "customer": line.customer,
                **({"vat_rate": rate_key(line.vat_rate)} if line.vat_rate is not None else {}),
            }
            for line in entry.lines
        ],
        "customer": entry.customer.model_dump(mode="json") if entry.customer else None,
    }


def reverse_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The reversal of a posted entry: every debit becomes a credit and back, same accounts and journal."""
    return {
        **payload,
        "label": f"Reversal of {payload['label']}"[:240],
        "lines": [{**line, "debit": line["credit"], "credit": line["debit"]} for line in payload["lines"]],
    }


class Ledger(FlowKind):
    name: ClassVar[str] = "ledger"
    record = SaleOrder
    table: ClassVar[str] = "outbox"
    key: ClassVar[tuple[str, ...]] = ("flow", "event_key", "revision")
    windows = ("closed_days",)
    gate = "with_data"
    delivery = "ledger_outbox"
    settings_model = LedgerSettings
    mapped_through = "the chart of accounts, settings flows.{flow}.chart; not `mappings set`"

    def parse(self, source_cls: Any, page: Any):
        return source_cls.parse_page(page)

    def settings_mapping(self, flow_settings: dict[str, Any], item_kind: str, key: str, *, flow_name: str):
        """Payment methods, registers and VAT rates post through the account's chart of accounts."""
        from tillflow.posting import Chart

        chapter = Chart.model_validate((flow_settings or {}).get("chart") or {}).chapter(item_kind, key)
        if chapter is None:
            return f"NOT IN THE CHART: add it to flows.{flow_name}.chart (its events go to rejects)", False
        return chapter, True

    def record_key(self, record: Any) -> tuple:
        return ("event", _event_key(record))

    def record_day(self, record: Any, settings: Any = None) -> Any:
        return getattr(record, "business_date", None)  # a deleted event has no day: always kept

    def map(self, records: Sequence[Any], rules, *, account, flow_settings, mapping_kind: str = ""):
        """Records → (event key, entries or None for a deleted event); a record the rules refuse → reject."""
        from tillflow.posting import PostingError, closing_entries, order_entry, payment_entry

        chart = flow_settings.chart_model()
        rows: list[tuple[str, LedgerEntry | None]] = []
        rejects: list[Reject] = []
        for record in records:
            key = _event_key(record)
            try:
                if type(record).__name__ == "DeletedEvent":
                    rows.append((key, None))
                elif type(record).__name__ == "SaleOrder":
                    rows.append((key, order_entry(record, chart)))
                elif type(record).__name__ == "SalePayment":
                    rows.append((key, payment_entry(record, chart)))
                elif type(record).__name__ == "TillClosing":
                    # no takings and no difference (now): no entry, and one posted before is reversed
                    rows += [(e.event_key, e) for e in closing_entries(record, chart)] or [(key, None)]
                else:
                    raise PostingError(f"{key}: no posting rule for {type(record).__name__}")
            except PostingError as exc:
                rejects.append(Reject(reason=str(exc), payload=record.model_dump(mode="json"), ref=key))
        return rows, 0, rejects

    def upsert(self, store, account_id, rows, *, mode, run_id) -> dict[str, int]:
        """Queue each event's entry in the outbox (a changed one: reversal + new revision; deleted: reversal)."""
        outbox = Outbox(store.conn)
        account = store.account_by_id(account_id)
        queued = unchanged = 0
        for event_key, entry in rows:
            if entry is None:
                changed = outbox.delete_event(account_id, account.key, OUTBOX_FLOW, event_key, reverse=reverse_payload)
            else:
                changed = outbox.enqueue(
                    account_id, account.key, OUTBOX_FLOW, event_key, entry_payload(entry), reverse=reverse_payload
                )
            if changed:
                queued += len(changed)
            else:
                unchanged += 1
        return {"upserted": queued, "unchanged": unchanged}

    def deliver(self, store, item, client, *, run_id, log=None) -> dict[str, int]:
        """Post the account's due outbox rows, logging progress (done / total, rate) every 10 s."""
        logger = log or globals()["log"]
        outbox = Outbox(store.conn)
        started = last = time.monotonic()

        def progress(done: int, total: int) -> None:
            nonlocal last
            shard_progress.rows(done, total, "event")  # the shard's 10 s progress line
            now = time.monotonic()
            if total and (now - last >= PROGRESS_EVERY_SECONDS or done == total) and done:
                rate = done / max(now - started, 1e-6)
                left = (total - done) / rate if rate else 0
                logger.info("%s: posted %d / %d event(s), %.1f/s, ~%.0f s left", item.label, done, total, rate, left)
                store.activity_update(run_id, item.account_id, item.flow, detail=f"posting {done}/{total}")
                last = now

        counts = post_outbox(
            outbox,
            item.account_id,
            OUTBOX_FLOW,
            _Poster(client, store),
            run_id=run_id,
            log=logger,
            label=item.label,
            progress=progress,
        )
        store.activity_update(
            run_id,
            item.account_id,
            item.flow,
            delivered=counts["posted"] + counts["reconciled"],
            failed=counts["failed"],
        )
        if counts["unknown"]:
            from tillflow.errors import TransientError

            raise TransientError(f"{counts['unknown']} posting(s) with an unknown outcome: the retry looks them up")
        return {"delivered": counts["posted"], "reconciled": counts["reconciled"], "held": counts["held"]}


class _Poster:
    """The target client as the outbox's poster: ``find`` gets the row's payload (journal and date) too."""

    def __init__(self, client: Any, store: Any):
        self.client, self.store = client, store
        self.name = getattr(client, "name", "target")

    def post(self, payload: dict[str, Any], posting_key: str) -> str:
        from tillflow.errors import ConfigError, RemoteError

        try:
            return self.client.post(payload, posting_key)
        except ConfigError as exc:  # refused before sending (a malformed payload): that row fails, the rest goes
            raise RemoteError(f"{self.name}: {posting_key} not sent: {exc}", status=422) from None

    def find(self, posting_key: str) -> str | None:
        row = self.store.conn.execute(
            "SELECT payload FROM tillflow.outbox WHERE posting_key = %s ORDER BY id DESC LIMIT 1", (posting_key,)
        ).fetchone()
        self.store.conn.commit()
        return self.client.find(posting_key, row["payload"] if row else None)


def _event_key(record: Any) -> str:
    """``order:<id>``, ``payment:<id>``, ``closing:<id>`` — or the record's own ``event_key`` (a deleted event)."""
    if getattr(record, "event_key", None):
        return record.event_key
    prefix, attr = {
        "SaleOrder": ("order", "order_id"),
        "SalePayment": ("payment", "payment_id"),
        "TillClosing": ("closing", "closing_id"),
    }.get(type(record).__name__, ("", ""))
    if not prefix:
        raise ValueError(f"no event key for {type(record).__name__}")
    return f"{prefix}:{getattr(record, attr)}"
