"""The steps of every integration, as plain Python (no Airflow import): plan, fetch, map, upsert,
deliver, report. Operators only wire these to Airflow (context, connections, XCom, exceptions).

Each step reads and writes one account's window and is idempotent: re-running it changes nothing
that is already right. Counters land in the activity log (one row per account, run and flow).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from tillflow.errors import AuthError, ConfigError, NeedsMapping, TillflowError
from tillflow.mapping import apply_mapping
from tillflow.records import RevenueLine, TargetRow
from tillflow.sources import get_source
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.specs import IntegrationSpec
from tillflow.store import Store
from tillflow.targets import get_target
from tillflow.windows import clip, is_due, lookback_window, manual_window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunParams:
    """What a manual run (or the CLI) may ask for; all optional."""

    accounts: list[str] = field(default_factory=list)
    date_from: date | None = None
    date_to: date | None = None
    overwrite: bool | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> RunParams:
        params = params or {}

        def as_date(name: str) -> date | None:
            value = params.get(name)
            if value in (None, ""):
                return None
            try:
                return value if isinstance(value, date) else date.fromisoformat(str(value))
            except ValueError:
                raise ConfigError(f"{name}: expected YYYY-MM-DD, got {value!r}") from None

        accounts = params.get("accounts") or []
        if isinstance(accounts, str):
            accounts = [a.strip() for a in accounts.split(",") if a.strip()]
        overwrite = params.get("overwrite")
        if overwrite is not None and not isinstance(overwrite, bool):
            raise ConfigError(f"overwrite: expected true, false or null, got {overwrite!r}")
        date_from, date_to = as_date("date_from"), as_date("date_to")
        if date_to and not date_from:
            raise ConfigError("date_from: required when date_to is given")
        return cls(accounts=list(accounts), date_from=date_from, date_to=date_to, overwrite=overwrite)

    @property
    def targeted(self) -> bool:
        return bool(self.accounts or self.date_from)


@dataclass(frozen=True)
class WorkItem:
    """One account's work in one run: what the mapped task instances receive (keys only, no data)."""

    account_id: int
    account_key: str
    name: str
    flow: str
    window_start: date
    window_end: date
    mode: str
    force_delivery: bool = False

    @property
    def window(self) -> Window:
        return Window(self.window_start, self.window_end)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.account_key}) {self.window}"

    def to_xcom(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "account_key": self.account_key,
            "name": self.name,
            "flow": self.flow,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "mode": self.mode,
            "force_delivery": self.force_delivery,
        }

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> WorkItem:
        return cls(
            **{
                **data,
                "window_start": date.fromisoformat(data["window_start"]),
                "window_end": date.fromisoformat(data["window_end"]),
            }
        )


@dataclass
class Plan:
    items: list[WorkItem]
    not_run: dict[str, str]  # account key → why not


def plan(store: Store, spec: IntegrationSpec, *, logical_date: datetime, params: RunParams, manual: bool) -> Plan:
    """Which accounts run now, for which window and write mode.

    Scheduled (and backfill) ticks run each active account at its own hour on its own weekdays, for
    its lookback window. A manual run runs every active account (or the ones named) now, for the
    dates asked (or each account's lookback window); paused accounts never run.
    """
    accounts = store.list_accounts(spec.dag_id)
    by_key = {a.key: a for a in accounts}
    unknown = [k for k in params.accounts if k not in by_key]
    if unknown:
        raise ConfigError(
            f"accounts: unknown account(s) {', '.join(unknown)} for {spec.dag_id}; "
            f"known: {', '.join(sorted(by_key)) or 'none'}"
        )
    chosen = [by_key[k] for k in params.accounts] if params.accounts else accounts
    items: list[WorkItem] = []
    not_run: dict[str, str] = {}
    for account in chosen:
        s = account.settings
        if not s.active:
            not_run[account.key] = "paused"
            continue
        if manual:
            window = (
                manual_window(params.date_from, params.date_to)
                if params.date_from
                else lookback_window(s, logical_date)
            )
            window = window and clip(window, s)
        else:
            due = is_due(s, logical_date)
            if not due.due:
                not_run[account.key] = due.reason
                continue
            window = lookback_window(s, logical_date)
        if window is None:
            not_run[account.key] = f"window lies before the start date {s.start_date}"
            continue
        mode = s.write_mode
        if params.overwrite is True:
            mode = "overwrite"
        elif params.overwrite is False:
            mode = "insert_only"
        for flow in spec.flows:
            items.append(
                WorkItem(
                    account.id,
                    account.key,
                    account.name,
                    flow,
                    window.start,
                    window.end,
                    mode,
                    force_delivery=bool(manual and params.overwrite),
                )
            )
    return Plan(items, not_run)


def source_client(spec: IntegrationSpec, conn: ConnectionInfo):
    return get_source(spec.source).from_connection(conn)


def target_client(spec: IntegrationSpec, conn: ConnectionInfo):
    return get_target(spec.target).from_connection(conn)


def _retries(client: Any) -> int:
    """HTTP retries the client spent (its :class:`tillflow.http.HttpStats`)."""
    stats = getattr(getattr(client, "http", None), "stats", None)
    return int(getattr(stats, "retries", 0))


def fetch(
    store: Store, spec: IntegrationSpec, item: WorkItem, conn: ConnectionInfo, *, dag_id: str, run_id: str
) -> list[int]:
    """Call the POS for the window and land every payload; returns the landing ids."""
    store.activity_start(dag_id, run_id, item.account_id, item.flow, item.window)
    client = source_client(spec, conn)
    try:
        pages = client.fetch(item.flow, item.window)
    except AuthError as exc:
        store.set_status(item.account_id, "auth_failed", str(exc))
        raise
    finally:
        store.activity_update(run_id, item.account_id, item.flow, add_retries=_retries(client))
    ids = [store.land(item.account_id, spec.source, item.window, page, run_id=run_id) for page in pages]
    account = store.account_by_id(item.account_id)
    if account.status == "auth_failed":
        store.set_status(item.account_id, "ok")
    log.info("%s: landed %d page(s) for %s", item.label, len(ids), item.window)
    return ids


def parse_landed(
    store: Store, spec: IntegrationSpec, item: WorkItem, landing_ids: list[int], *, run_id: str | None
) -> tuple[list[RevenueLine], int]:
    """Parse landed pages (later pages win per key/day/hour), record rejects; lines inside the window."""
    parser = get_source(spec.source)
    lines: dict[tuple[str, date, int | None], RevenueLine] = {}
    rejected = 0
    for landing_id, page in store.landed(landing_ids):
        parsed, rejects = parser.parse_page(page)
        store.add_rejects(item.account_id, item.flow, rejects, landing_id=landing_id, run_id=run_id)
        rejected += len(rejects)
        for line in parsed:
            if item.window_start <= line.business_date <= item.window_end:
                lines[(line.source_key, line.business_date, line.hour)] = line
    return list(lines.values()), rejected


def map_rows(store: Store, spec: IntegrationSpec, item: WorkItem, landing_ids: list[int], *, run_id: str) -> int:
    """Parse, validate and map the landed pages; returns the id of the batch for the upsert step.

    Raises NeedsMapping (and marks the account) when a source key with data has no mapping.
    """
    account = store.account_by_id(item.account_id)
    lines, rejected = parse_landed(store, spec, item, landing_ids, run_id=run_id)
    kind = get_source(spec.source).mapping_kind
    rules = store.mappings(item.account_id, kind)
    try:
        rows, ignored = apply_mapping(lines, rules, vat=account.settings.vat, kind=kind)
    except NeedsMapping as exc:
        store.set_status(item.account_id, "needs_mapping", str(exc))
        store.activity_update(
            run_id,
            item.account_id,
            item.flow,
            fetched=len(lines),
            rejected=rejected,
            status="needs_mapping",
            error=str(exc),
            finished=True,
        )
        raise
    if account.status == "needs_mapping":
        store.set_status(item.account_id, "ok")
    store.activity_update(
        run_id,
        item.account_id,
        item.flow,
        fetched=len(lines),
        rejected=rejected,
        detail=f"{ignored} line(s) of inactive {kind}s ignored" if ignored else "",
    )
    return store.put_batch(item.account_id, item.flow, item.window, rows, run_id=run_id)


def upsert(store: Store, item: WorkItem, batch_id: int, *, run_id: str) -> dict[str, int]:
    rows = store.get_batch(batch_id)
    result = store.upsert_revenue(item.account_id, rows, mode=item.mode, run_id=run_id)
    counts = {"upserted": result.upserted, "unchanged": result.unchanged, "kept": result.kept}
    store.activity_update(run_id, item.account_id, item.flow, **counts)
    return counts


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


def deliver(
    store: Store, spec: IntegrationSpec, item: WorkItem, conn: ConnectionInfo, *, run_id: str
) -> dict[str, int]:
    """Send rows that changed since their last delivery (any day, not only this window: a failed
    delivery is retried from the store, never by refetching the POS)."""
    pending = store.pending_deliveries(
        item.account_id, window=item.window if item.force_delivery else None, force=item.force_delivery
    )
    if item.force_delivery:  # a forced window re-send plus anything else still pending
        seen = {(r.target_key, r.business_date, r.hour) for r in pending}
        pending += [
            r for r in store.pending_deliveries(item.account_id) if (r.target_key, r.business_date, r.hour) not in seen
        ]
    client = target_client(spec, conn)
    delivered = skipped = 0
    try:
        existing: dict = {}
        last: dict = {}
        if pending and item.mode != "overwrite":
            span = Window(min(r.business_date for r in pending), max(r.business_date for r in pending))
            existing = client.existing(item.flow, sorted({r.target_key for r in pending}), span)
            last = {
                (d["target_key"], d["business_date"], d["hour"]): d["amount"]
                for d in store.delivery_state(item.account_id)
                if d["status"] == "delivered"
            }
        for row in pending:
            reason = _kept_by_target(item.mode, row, existing, last)
            if reason:
                store.record_delivery(item.account_id, row, "skipped", detail=reason, run_id=run_id)
                skipped += 1
                continue
            try:
                result = client.deliver(item.flow, row)
            except TillflowError as exc:
                store.record_delivery(item.account_id, row, "failed", detail=str(exc), run_id=run_id)
                raise
            store.record_delivery(item.account_id, row, result.status, detail=result.detail, run_id=run_id)
            if result.status == "delivered":
                delivered += 1
            else:
                skipped += 1
                log.info(
                    "%s: %s %s skipped by %s: %s",
                    item.label,
                    row.target_key,
                    row.business_date,
                    spec.target,
                    result.detail,
                )
    finally:
        store.activity_update(
            run_id, item.account_id, item.flow, delivered=delivered, skipped=skipped, add_retries=_retries(client)
        )
    store.activity_update(run_id, item.account_id, item.flow, status="success", finished=True)
    return {"delivered": delivered, "skipped": skipped, "pending": len(pending)}


def mark_failed(store: Store, item: WorkItem, run_id: str, error: str) -> None:
    store.activity_update(run_id, item.account_id, item.flow, status="failed", error=error, finished=True)


def report(store: Store, run_id: str, not_run: dict[str, str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """A per-account summary of one run; returns (text, failed rows). Rows left 'running' failed."""
    rows = store.activity(run_id=run_id)
    lines = [
        f"{'account':<24} {'window':<23} {'status':<14} fetched upserted unchanged kept rejected "
        f"delivered skipped retries  error"
    ]
    failed = []
    for r in rows:
        status = r["status"]
        if status == "running":
            status = "failed"
            store.activity_update(
                run_id,
                r["account_id"],
                r["flow"],
                status="failed",
                finished=True,
                error=r["error"] or "a step of this account did not finish (see its task log)",
            )
        if status == "failed":
            failed.append(r)
        window = f"{r['window_start']}..{r['window_end']}"
        lines.append(
            f"{r['account_key']:<24} {window:<23} {status:<14} {r['fetched']:>7} {r['upserted']:>8} "
            f"{r['unchanged']:>9} {r['kept']:>4} {r['rejected']:>8} {r['delivered']:>9} {r['skipped']:>7} "
            f"{r['retries']:>7}  {(r['error'] or '').splitlines()[0] if r['error'] else ''}"
        )
    for key, why in sorted((not_run or {}).items()):
        lines.append(f"{key:<24} {'-':<23} {'not run':<14} {why}")
    return "\n".join(lines), failed
