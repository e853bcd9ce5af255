"""Replay: map the pages landed for a window again (after a mapping or settings change) and deliver — no POS call.

``fetch`` lands every payload in ``tillflow.raw_landing`` (immutable), so a window can be re-mapped from
there with the account's current mappings and settings: parse → map → upsert (write mode: the run's
``overwrite`` choice, else the account's) → deliver, with the flow kind's own strategy (keyed upsert,
create-if-absent, ledger outbox). The gate that needs the POS's *list* of keys (``all_listed``) is not
checked — keys that carry data must still be mapped.

**Preview** (``dry_run``): the same steps on a connection whose transaction is rolled back at the end, so
the preview is exactly what the replay would do and nothing durable changes (no canonical row, reject,
status or delivery state; nothing is sent). Per account, key and day (and hour where the kind has one) it
shows what the target holds now — what tillflow last delivered for that key (``delivery_state``,
``object_delivery``, the outbox), plus what the target reads when the target client can be asked
(``existing``) — and what would be sent; unchanged rows are marked.

Snapshot kinds (products, stock) are refused: a landed snapshot is the state at the tick it was fetched,
and re-sending it would overwrite what changed at the target since; their next run takes a fresh one.
No Airflow import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from tillflow.errors import ConfigError, NeedsMapping
from tillflow.flows import get_kind
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.specs import IntegrationSpec
from tillflow.store import Store

log = logging.getLogger(__name__)

#: why a kind cannot be replayed from raw landing (None: it can)
_SNAPSHOT_WHY = (
    "{kind} is a snapshot kind: a landed snapshot is the state at the tick it was fetched, and sending it again "
    "would overwrite what changed at the target since; its next run takes a fresh snapshot (run the flow instead)"
)


def why_not_replayable(kind_name: str) -> str | None:
    """The reason a flow kind cannot be replayed from raw landing, or None when it can."""
    kind = get_kind(kind_name)
    if tuple(kind.windows) == ("snapshot",):
        return _SNAPSHOT_WHY.format(kind=kind.name)
    return None


@dataclass
class PreviewRow:
    account: str
    flow: str
    key: str
    day: date | None
    hour: int | None
    target_now: str  # what the target holds now (what tillflow last delivered; "—": nothing yet)
    would_send: str  # the value that would go ("" when nothing would be sent)
    note: str  # unchanged | changed | new | kept … | pending from an earlier run | …

    @property
    def unchanged(self) -> bool:
        return not self.would_send

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "flow": self.flow,
            "key": self.key,
            "day": self.day.isoformat() if self.day else None,
            "hour": self.hour,
            "target_now": self.target_now,
            "would_send": self.would_send,
            "note": self.note,
        }


@dataclass
class ReplayResult:
    account: str
    flow: str
    window: Window
    pages: int
    rows: list[PreviewRow] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    dry_run: bool = True
    error: str = ""

    @property
    def would_send(self) -> int:
        return sum(1 for r in self.rows if r.would_send)

    def summary(self) -> dict[str, Any]:
        """A small summary for XCom / the activity log (never the rows themselves)."""
        return {
            "account": self.account,
            "flow": self.flow,
            "window": str(self.window),
            "pages": self.pages,
            "rows": len(self.rows),
            "would_send" if self.dry_run else "sent": self.would_send,
            "unchanged": sum(1 for r in self.rows if r.unchanged),
            **({"error": self.error} if self.error else {}),
        }


def format_table(rows: list[PreviewRow]) -> str:
    """The preview as a plain-text table (CLI and task log)."""
    head = (
        f"{'account':<18} {'flow':<14} {'key':<22} {'day':<10} {'hour':>4}  {'target now':<24} {'would send':<24} note"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r.account[:18]:<18} {r.flow[:14]:<14} {r.key[:22]:<22} {r.day.isoformat() if r.day else '-':<10} "
            f"{'' if r.hour is None else r.hour:>4}  {r.target_now[:24]:<24} "
            f"{(r.would_send or '-')[:24]:<24} "
            f"{r.note}"
        )
    return "\n".join(lines)


class _Uncommitted:
    """A connection whose ``commit()`` does nothing: every unit of work of the store stays inside one open
    transaction (its own ``transaction()`` blocks become savepoints), which the preview rolls back."""

    def __init__(self, conn: Any):
        object.__setattr__(self, "_conn", conn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)

    def commit(self) -> None:  # noqa: D102 - on purpose: nothing is committed
        pass


def replay_item(
    store: Store,
    spec: IntegrationSpec,
    item: Any,
    *,
    run_id: str,
    target_conn: ConnectionInfo | Callable[[], ConnectionInfo] | None = None,
    dry_run: bool,
    url: str | None = None,
) -> ReplayResult:
    """Replay one account's flow for ``item.window`` from raw landing; deliver unless ``dry_run``.

    ``target_conn``: the target's connection (delivery; in a dry run only to read what the target holds —
    optional there). Raises ConfigError (nothing landed, a snapshot kind), NeedsMapping, or what delivery
    raises; in a dry run nothing durable changes whatever happens.
    """
    from tillflow import sync

    flow = spec.flow(item.flow)
    kind = get_kind(flow.kind)
    why = why_not_replayable(kind.name)
    if why:
        raise ConfigError(f"replay: {why}")
    pages = store.landed_for_window(item.account_id, kind.name, item.window)
    if not pages:
        raise ConfigError(
            f"replay: nothing landed for {item.account_key} {item.flow} in {item.window}; a replay never calls "
            "the POS — run the flow for these dates first"
        )
    result = ReplayResult(item.account_key, item.flow, item.window, len(pages), dry_run=dry_run)
    work = store
    if dry_run:
        work = Store(_Uncommitted(Store.open(url).conn))
        work.conn.execute("SELECT 1")  # open the transaction everything below stays in
    client = None
    try:
        if target_conn is not None and (not dry_run or kind.delivery == "keyed_upsert"):
            try:
                conn = target_conn() if callable(target_conn) else target_conn
                client = sync.target_client(spec, conn, flow)
            except ConfigError:
                if not dry_run:
                    raise
                log.info("%s: no connection to read the target with; the preview shows what was sent", item.label)
        before = _state(work, kind, item)
        rows = sync.map_rows(work, spec, item, pages, run_id=run_id)
        result.counts = sync.upsert(work, spec, item, rows, run_id=run_id)
        result.rows = _preview(work, kind, item, rows, before, client if dry_run else None)
        if not dry_run:
            if client is None:
                raise ConfigError(f"replay: no connection to {spec.target_of(flow)} to deliver with")
            result.counts |= kind.deliver(store, item, client, run_id=run_id, log=log)
    finally:
        if client is not None:
            sync._close(client)
        if dry_run:
            work.conn.rollback()
            work.conn.close()
    return result


def landed_value(
    store: Store, spec: IntegrationSpec, account: Any, target_key: str, day: date, hour: int | None = None
) -> Decimal | None:
    """What the POS says for one target key on business day ``day`` (and ``hour``; None: the whole-day
    value), mapped again from the pages landed for that day with the account's current mappings and
    settings — the POS is not called, nothing is written (no rejects, no status). What ``revenue delete``
    puts back in place of a hand value.

    0 when the pages landed for the day hold nothing for that key (the POS sold nothing there; an hourly
    source never has a whole-day value); None when no page of the integration's revenue flows covers the
    day. Raises NeedsMapping when a POS key with data on that day has no mapping.
    """
    from tillflow import sync

    seen = set()
    for flow in spec.flows:  # a revenue kind lands under its kind's name, whichever of its flows fetched it
        kind = get_kind(flow.kind)
        if kind.table != "revenue" or kind.name in seen:
            continue
        seen.add(kind.name)
        pages = store.landed_for_window(account.id, kind.name, Window(day, day))
        if not pages:
            continue
        lines, _ = sync.parse_pages(spec, flow, pages, account.settings, Window(day, day))
        rows = sync.map_lines(store, spec, flow, account, lines)[0]
        return sum(
            (r.amount for r in rows if (r.target_key, r.business_date, r.hour) == (target_key, day, hour)),
            Decimal("0.00"),
        )
    return None


# ------------------------------------------------------------------------------------ state and diff


def _state(store: Store, kind: Any, item: Any) -> dict[Any, Any]:
    """What the store holds before the replay where the preview needs it (the shifts last sent)."""
    if kind.name == "clock_times":
        return {r["shift_number"]: r for r in _timesheets(store, item)}
    return {}


def _preview(store: Store, kind: Any, item: Any, rows: list, before: dict, client: Any) -> list[PreviewRow]:
    if kind.name in ("revenue", "revenue_hourly"):
        return _preview_revenue(store, kind, item, rows, client)
    if kind.name == "clock_times":
        return _preview_timesheets(store, item, before)
    if kind.delivery == "ledger_outbox":
        return _preview_outbox(store, item)
    if kind.delivery == "create_if_absent":
        return _preview_documents(store, item, kind.name)
    return []


def _money(value: Any) -> str:
    return f"{Decimal(value):.2f}" if value is not None else "—"


def _preview_revenue(store: Store, kind: Any, item: Any, rows: list, client: Any) -> list[PreviewRow]:
    """Keyed upsert: per target key, day (and hour) — last delivered vs the canonical value after the replay."""
    from tillflow.delivery.keyed import _kept_by_target

    hourly = None if kind.name == "revenue_hourly" else False
    force = bool(item.force_delivery)
    pending = store.pending_deliveries(
        item.account_id, window=item.window if force else None, force=force, hourly=hourly
    )
    if force:
        pending += store.pending_deliveries(item.account_id, hourly=hourly)
    pending_keys = {(r.target_key, r.business_date, r.hour): r for r in pending}
    canonical = {
        (r["target_key"], r["business_date"], r["hour"]): r
        for r in store.revenue(item.account_id, item.window)
        if hourly is None or (r["hour"] is not None) == hourly
    }
    delivered = {(d["target_key"], d["business_date"], d["hour"]): d for d in store.delivery_state(item.account_id)}
    mapped = {(r.target_key, r.business_date, r.hour): r.amount for r in rows}
    existing: dict = {}
    last_sent = {k: d["amount"] for k, d in delivered.items() if d["status"] == "delivered"}
    if client is not None and pending_keys and hasattr(client, "existing"):
        days = [k[1] for k in pending_keys]
        try:
            s = store.account_by_id(item.account_id).settings
            client.set_business_day(s.timezone, s.business_day_cutoff)
            existing = client.existing(kind.name, sorted({k[0] for k in pending_keys}), Window(min(days), max(days)))
        except Exception as exc:  # a read-back is a courtesy: the preview stands without it
            log.warning("%s: could not read what %s holds: %s", item.label, getattr(client, "name", "target"), exc)
    out = []
    for key in sorted(set(canonical) | set(pending_keys) | set(mapped), key=lambda k: (k[1], k[0], k[2] or -1)):
        target_key, day, hour = key
        last = delivered.get(key)
        if last is None:
            now = "—"
        elif last["status"] == "delivered":
            now = _money(last["amount"])
        else:
            now = f"{_money(last['amount'])} ({last['status']})"
        if key in existing and (last is None or existing[key] != last["amount"]):
            now += f" (reads {_money(existing[key])})"
        canon = canonical.get(key)
        send = ""
        notes = []
        if key in pending_keys:
            row = pending_keys[key]
            reason = _kept_by_target(item.mode, row, existing, last_sent) if existing else None
            if reason:
                notes.append(f"skipped at the target: {reason}")
            else:
                send = _money(row.amount)
                notes.append("new" if last is None else "re-sent" if last["amount"] == row.amount else "changed")
            if not item.window.start <= day <= item.window.end:
                notes.append("pending from an earlier run")
        else:
            notes.append("unchanged")
        if key in mapped and canon is not None and canon["amount"] != mapped[key]:
            notes.append(f"kept {canon['origin']} value {_money(canon['amount'])} (mode {item.mode})")
        out.append(PreviewRow(item.account_key, item.flow, target_key, day, hour, now, send, "; ".join(notes)))
    return out


def _timesheets(store: Store, item: Any) -> list[dict[str, Any]]:
    rows = store.conn.execute(
        """
        SELECT t.*, d.payload_hash AS sent_hash, d.status AS sent_status, d.target_id
          FROM tillflow.timesheets t
          LEFT JOIN tillflow.object_delivery d
            ON d.account_id = t.account_id AND d.flow = 'clock_times' AND d.object_key = t.shift_number
         WHERE t.account_id = %(a)s
           AND (t.business_date BETWEEN %(s)s AND %(e)s
                OR d.object_key IS NULL OR d.payload_hash <> t.payload_hash OR d.status = 'failed')
         ORDER BY t.business_date, t.shift_number
        """,
        {"a": item.account_id, "s": item.window_start, "e": item.window_end},
    ).fetchall()
    store.conn.commit()
    return rows


def _shift(t: dict[str, Any]) -> str:
    end = f"{t['clock_out']:%H:%M}" if t.get("clock_out") else "open"
    return f"{t['user_id']} {t['clock_in']:%H:%M}-{end} {t['department']}"


def _preview_timesheets(store: Store, item: Any, before: dict) -> list[PreviewRow]:
    """Clock times: per shift — the content last sent (when the store still holds it) vs what would go."""
    out = []
    for t in _timesheets(store, item):
        old = before.get(t["shift_number"])
        if t["sent_status"] is None:
            now = "—"
        elif t["sent_status"] == "failed":
            now = "(failed)"
        elif old is not None and old["payload_hash"] == t["sent_hash"]:
            now = _shift(old)
        else:
            now = f"timesheet {t['target_id']}"
        pending = (
            t["sent_status"] is None
            or t["sent_hash"] != t["payload_hash"]
            or t["sent_status"] == "failed"
            or (item.force_delivery and item.window_start <= t["business_date"] <= item.window_end)
        )
        note = "unchanged" if not pending else "new" if t["sent_status"] is None else "changed"
        out.append(
            PreviewRow(
                item.account_key,
                item.flow,
                f"shift {t['shift_number']}",
                t["business_date"],
                None,
                now,
                _shift(t) if pending else "",
                note,
            )
        )
    return out


def _entry_total(payload: dict[str, Any]) -> str:
    return f"{sum(Decimal(str(line['debit'])) for line in payload.get('lines', [])):.2f}"


def _preview_outbox(store: Store, item: Any) -> list[PreviewRow]:
    """Ledger: per event — the entry posted now vs what the outbox would post (a reversal and a new revision)."""
    from tillflow.flows.ledger import OUTBOX_FLOW
    from tillflow.store.outbox import POSTED

    rows = store.conn.execute(
        "SELECT * FROM tillflow.outbox WHERE account_id = %s AND flow = %s ORDER BY event_key, id",
        (item.account_id, OUTBOX_FLOW),
    ).fetchall()
    store.conn.commit()
    by_event: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_event.setdefault(r["event_key"], []).append(r)
    out = []
    for event, history in by_event.items():
        due = [r for r in history if r["state"] in ("claimed", "unknown")]
        posted = [r for r in history if r["kind"] == "entry" and r["state"] in POSTED and r["reversed_by_id"] is None]
        day_text = (due or history)[-1]["payload"].get("date")
        day = date.fromisoformat(day_text) if day_text else None
        in_window = day is not None and item.window_start <= day <= item.window_end
        if not due and not in_window:
            continue
        reversed_now = [r for r in history if r["kind"] == "entry" and r["state"] in POSTED]
        now = "—"
        if posted:
            now = f"r{posted[-1]['revision']} {_entry_total(posted[-1]['payload'])}"
        elif reversed_now:
            now = f"r{reversed_now[-1]['revision']} {_entry_total(reversed_now[-1]['payload'])} (reversal due)"
        send = "; ".join(
            f"{'reversal of ' if r['kind'] == 'reversal' else ''}r{r['revision']} {_entry_total(r['payload'])}"
            for r in due
        )
        note = "unchanged" if not due else "new" if now == "—" else "changed: reversal and a new revision"
        out.append(PreviewRow(item.account_key, item.flow, event, day, None, now, send, note))
    return out


def _preview_documents(store: Store, item: Any, kind_name: str) -> list[PreviewRow]:
    """Create-if-absent (orders): per document — created already (never re-created) or would be created."""
    rows = store.conn.execute(
        """
        SELECT doc.doc_key, doc.payload, doc.payload_hash, o.status, o.target_id, o.payload_hash AS sent_hash
          FROM tillflow.documents doc
          LEFT JOIN tillflow.object_delivery o
            ON o.account_id = doc.account_id AND o.flow = %(f)s AND o.object_key = doc.doc_key
         WHERE doc.account_id = %(a)s AND doc.flow = %(k)s ORDER BY doc.doc_key
        """,
        {"a": item.account_id, "f": item.flow, "k": kind_name},
    ).fetchall()
    store.conn.commit()
    out = []
    for d in rows:
        order = (d["payload"] or {}).get("order") or {}
        created = str(order.get("created") or "")[:10]
        day = date.fromisoformat(created) if created else None
        done = d["status"] in ("created", "exists")
        in_window = day is not None and item.window_start <= day <= item.window_end
        if done and not in_window:
            continue
        now = f"{d['status']} {d['target_id'] or ''}".strip() if d["status"] else "—"
        if done:
            note = (
                "unchanged" if d["sent_hash"] == d["payload_hash"] else "changed, but create-if-absent never re-creates"
            )
            send = ""
        else:
            note, send = "new", f"create {d['doc_key']}"
        out.append(PreviewRow(item.account_key, item.flow, d["doc_key"], day, None, now, send, note))
    return out


def needs_mapping_row(item: Any, exc: NeedsMapping) -> PreviewRow:
    return PreviewRow(item.account_key, item.flow, "-", None, None, "", "", f"needs mapping: {exc}")


def run_replay_item(
    store: Store,
    spec: IntegrationSpec,
    item: Any,
    conns: Callable[[str], ConnectionInfo],
    *,
    dag_id: str,
    run_id: str,
    dry_run: bool,
    secrets: list[str] | None = None,
    url: str | None = None,
) -> Any:
    """The run task's replay of one work item (``replay``/``dry_run`` Params): like :func:`tillflow.sync.run_item`
    without the fetch. Never raises; the activity row says what happened. A replay does not move the flow's
    last success (the POS was not read); a dry run changes nothing but its activity row."""
    from tillflow.masking import one_line
    from tillflow.sync import Outcome, conn_ids

    store.activity_start(dag_id, run_id, item.account_id, item.flow, item.window)
    what = "dry run (replay preview)" if dry_run else "replay from raw landing"
    try:
        account = store.account_by_id(item.account_id)
        _, target = conn_ids(spec, spec.flow(item.flow), account)
        result = replay_item(
            store, spec, item, run_id=run_id, target_conn=lambda: conns(target), dry_run=dry_run, url=url
        )
    except NeedsMapping as exc:
        if dry_run:  # the rolled-back preview left no trace: say it on the activity row
            store.activity_update(
                run_id, item.account_id, item.flow, status="needs_mapping", error=str(exc), finished=True
            )
        log.info("%s: %s: needs mapping — %s", item.label, what, exc)
        return Outcome(item, "needs_mapping", str(exc))
    except Exception as exc:
        from tillflow.errors import is_permanent

        message = one_line(exc, secrets or [])
        permanent = is_permanent(exc) or isinstance(exc, ConfigError)
        try:
            if not dry_run:
                store.set_status(item.account_id, "failing", message, flow=item.flow)
            store.activity_finish(run_id, item.account_id, item.flow, "failed", error=message, retryable=not permanent)
        except Exception:
            log.exception("%s: could not record the failure", item.label)
        log.error("%s: %s failed: %s", item.label, what, message)
        return Outcome(item, "failed", message, retryable=not permanent)
    summary = result.summary()
    log.info("%s: %s, %d landed page(s), no POS call\n%s", item.label, what, result.pages, format_table(result.rows))
    detail = (
        f"{what}: {result.pages} landed page(s), {result.would_send} row(s) "
        f"{'would be sent' if dry_run else 'to send'}, {len(result.rows) - result.would_send} unchanged"
    )
    store.activity_update(run_id, item.account_id, item.flow, status="success", detail=detail, finished=True)
    counts = {k: v for k, v in result.counts.items() if isinstance(v, int)}
    return Outcome(item, "success", counts=counts, preview=summary)
