"""The steps of every integration, as plain Python (no Airflow import): plan, run a shard of accounts
(fetch → map → upsert → deliver per account, concurrently), report. Operators only wire these to
Airflow (context, connections, XCom, exceptions).

Each step reads and writes one account's window and is idempotent: re-running it changes nothing
that is already right. The flow's kind (:mod:`tillflow.flows`) says how each step is done for its data.
Counters land in the activity log (one row per account, run and flow), which is also the run's work
list: a shard's retry runs only the accounts of its shard that did not finish.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tillflow.errors import AuthError, ConfigError, NeedsMapping, is_permanent
from tillflow.flows import get_kind
from tillflow.masking import one_line
from tillflow.replay import why_not_replayable
from tillflow.sources import get_source
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.specs import FlowSpec, IntegrationSpec
from tillflow.store import Store
from tillflow.targets import get_target
from tillflow.windows import (
    activation_due,
    activation_window,
    clip,
    due_on_tick,
    flow_window,
    manual_window,
    run_time_window,
)

log = logging.getLogger(__name__)


#: the trigger form's three choices for ``overwrite`` → RunParams.overwrite (True/False/None are still accepted)
OVERWRITE_CHOICES: dict[str, bool | None] = {"account_default": None, "overwrite": True, "keep_existing": False}


@dataclass(frozen=True)
class RunParams:
    """What a manual run (or the CLI) may ask for; all optional.

    ``overwrite``: None = each account's write mode, True = overwrite (and re-send the window), False = keep
    existing values (insert_only). ``replay``: map the pages landed for the window again (no POS call) and
    deliver; ``dry_run``: only preview such a replay (implies ``replay``): nothing is written or sent.
    """

    accounts: list[str] = field(default_factory=list)
    date_from: date | None = None
    date_to: date | None = None
    overwrite: bool | None = None
    replay: bool = False
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.dry_run and not self.replay:  # a dry run previews a replay
            object.__setattr__(self, "replay", True)

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

        def as_flag(name: str) -> bool:
            value = params.get(name)
            if value is None:
                return False
            if not isinstance(value, bool):
                raise ConfigError(f"{name}: expected true or false, got {value!r}")
            return value

        accounts = params.get("accounts") or []
        if isinstance(accounts, str):
            accounts = [a.strip() for a in accounts.split(",") if a.strip()]
        overwrite = params.get("overwrite")
        if isinstance(overwrite, str) and overwrite in OVERWRITE_CHOICES:
            overwrite = OVERWRITE_CHOICES[overwrite]
        elif overwrite is not None and not isinstance(overwrite, bool):
            raise ConfigError(
                f"overwrite: expected {', '.join(OVERWRITE_CHOICES)} (or true, false, null), got {overwrite!r}"
            )
        date_from, date_to = as_date("date_from"), as_date("date_to")
        if date_to and not date_from:
            raise ConfigError("date_from: required when date_to is given")
        if date_from and date_to and date_to < date_from:
            raise ConfigError(f"date_to: {date_to} lies before date_from {date_from}; date_to must be on or after it")
        if date_from:
            try:
                manual_window(date_from, date_to)
            except ValueError as exc:
                raise ConfigError(f"date_from/date_to: {exc}") from None
        dry_run = as_flag("dry_run")
        return cls(
            accounts=list(accounts),
            date_from=date_from,
            date_to=date_to,
            overwrite=overwrite,
            replay=as_flag("replay") or dry_run,
            dry_run=dry_run,
        )

    @property
    def targeted(self) -> bool:
        return bool(self.accounts or self.date_from)


@dataclass(frozen=True)
class WorkItem:
    """One account's work for one flow in one run: what a shard reads from the activity log (keys only)."""

    account_id: int
    account_key: str
    name: str
    flow: str
    window_start: date
    window_end: date
    mode: str
    force_delivery: bool = False
    due_at: datetime | None = None
    shard: int = 0

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
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "shard": self.shard,
        }

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> WorkItem:
        due = data.get("due_at")
        return cls(
            **{
                **data,
                "window_start": date.fromisoformat(data["window_start"]),
                "window_end": date.fromisoformat(data["window_end"]),
                "due_at": datetime.fromisoformat(due) if isinstance(due, str) else due,
            }
        )

    @classmethod
    def from_activity(cls, row: dict[str, Any]) -> WorkItem:
        return cls(
            account_id=row["account_id"],
            account_key=row["account_key"],
            name=row["name"],
            flow=row["flow"],
            window_start=row["window_start"],
            window_end=row["window_end"],
            mode=row["mode"] or "keep_manual",
            force_delivery=bool(row["force_delivery"]),
            due_at=row["due_at"],
            shard=row["shard"] or 0,
        )


@dataclass
class Plan:
    items: list[WorkItem]
    not_run: dict[str, str]  # account key (and flow, when the DAG has several) → why not


def plan(
    store: Store,
    spec: IntegrationSpec,
    *,
    logical_date: datetime,
    params: RunParams,
    manual: bool,
    flows: list[FlowSpec] | None = None,
    backfill: bool = False,
) -> Plan:
    """Which accounts run now, for which flow, window and write mode.

    Scheduled ticks run every active account of an ``every_tick`` flow, and each account of an
    ``account_run_time`` flow at its own time on its own weekdays — or at the first tick after that
    time when it was missed (see :func:`tillflow.windows.due_on_tick`). A backfill tick runs exactly
    the accounts due at it. A manual run runs every active account (or the ones named) now, for the
    dates asked (or each account's window); paused accounts never run.
    """
    flows = list(flows or spec.flows)
    if manual and params.replay and all(why_not_replayable(f.kind) for f in flows):
        raise ConfigError(f"replay: {'; '.join(sorted({why_not_replayable(f.kind) for f in flows}))}")
    accounts = store.list_accounts(spec.integration)
    by_key = {a.key: a for a in accounts}
    unknown = [k for k in params.accounts if k not in by_key]
    if unknown:
        raise ConfigError(
            f"accounts: unknown account(s) {', '.join(unknown)} for {spec.integration}; "
            f"known: {', '.join(sorted(by_key)) or 'none'}"
        )
    chosen = [by_key[k] for k in params.accounts] if params.accounts else accounts
    states = store.flow_states(a.id for a in chosen) if chosen and not manual else {}
    items: list[WorkItem] = []
    not_run: dict[str, str] = {}
    for account in chosen:
        s = account.settings
        for flow in flows:
            label = account.key if len(flows) == 1 else f"{account.key} {flow.name}"
            if not s.active:
                not_run[label] = "paused"
                continue
            if (s.flows.get(flow.settings_key) or {}).get("enabled") is False:
                not_run[label] = f"{flow.name} is off for this account"
                continue
            if manual and params.replay and (why := why_not_replayable(flow.kind)):
                not_run[label] = f"replay: {why}"
                continue
            state = states.get((account.id, flow.name)) or {}
            due_at = None
            if manual:
                if params.date_from:
                    window = manual_window(params.date_from, params.date_to)
                elif flow.due == "activation":
                    window = activation_window(s, flow.activation, logical_date, flow.settings_key)
                else:
                    window = flow_window(flow.window_strategy, flow, s, logical_date)
                window = window and clip(window, s)
            elif flow.due == "activation":
                due = activation_due(s, flow.activation, logical_date, state=state)
                if not due.due:
                    not_run[label] = due.reason
                    continue
                due_at = due.due_at
                window = activation_window(s, flow.activation, logical_date, flow.settings_key)
            else:
                due = due_on_tick(
                    s,
                    flow.due,
                    logical_date,
                    last_due_at=state.get("last_due_at"),
                    known_since=account.created_at,
                    catch_up=timedelta(hours=flow.catch_up_hours),
                    backfill=backfill,
                )
                if not due.due:
                    not_run[label] = due.reason
                    continue
                due_at = due.due_at
                if backfill:
                    window = flow_window(flow.window_strategy, flow, s, due_at)
                elif flow.due == "every_tick":
                    since = state.get("last_success_at")
                    window = flow_window(flow.window_strategy, flow, s, due_at, since=since)
                else:
                    last = state.get("last_due_at")
                    window = run_time_window(flow.window_strategy, flow, s, due_at, last_due_at=last)
            if window is None:
                not_run[label] = f"window lies before the start date {s.start_date}"
                continue
            mode = s.write_mode
            if params.overwrite is True:
                mode = "overwrite"
            elif params.overwrite is False:
                mode = "insert_only"
            items.append(
                WorkItem(
                    account.id,
                    account.key,
                    account.name,
                    flow.name,
                    window.start,
                    window.end,
                    mode,
                    force_delivery=bool(manual and params.overwrite),
                    due_at=due_at,
                )
            )
    return Plan(items, not_run)


# ---------------------------------------------------------------------------------------- sharding


@dataclass
class RunPlan:
    shards: list[dict[str, Any]]  # what the mapped task expands over: {"shard": n, "label": …}
    not_run: dict[str, str]
    items: list[WorkItem]


#: a manual run naming at most this many accounts maps one labelled instance per account
PER_ACCOUNT_LIMIT = 100


def assign_shards(items: list[WorkItem], spec: IntegrationSpec, *, per_account: bool) -> list[dict[str, Any]]:
    """Spread the items over shards; an account's flows stay in one shard.

    ``per_account``: one shard per account, labelled with its name (a manual run that names accounts) — up to
    ``PER_ACCOUNT_LIMIT`` accounts; a run naming more is sharded like a scheduled one (one mapped instance per
    account would near ``[core] max_map_length``, 1,024, and crowd the grid). Otherwise at most
    ``execution.max_shards``, with at least ``min_accounts_per_shard`` accounts each.
    """
    accounts = sorted({(i.account_key, i.account_id, i.name) for i in items})
    if not accounts:
        return []
    ex = spec.execution
    if per_account and len(accounts) > PER_ACCOUNT_LIMIT:
        log.info("%d accounts named: sharded (one instance per account up to %d)", len(accounts), PER_ACCOUNT_LIMIT)
        per_account = False
    if per_account:
        n = len(accounts)
    else:
        n = max(1, min(ex.max_shards, math.ceil(len(accounts) / ex.min_accounts_per_shard)))
    shard_of = {acc_id: idx % n for idx, (_, acc_id, _) in enumerate(accounts)}
    for idx, item in enumerate(items):
        items[idx] = WorkItem(**{**item.__dict__, "shard": shard_of[item.account_id]})
    shards = []
    for shard in range(n):
        members = [a for a in accounts if shard_of[a[1]] == shard]
        if per_account:
            key, _, name = members[0]
            windows = sorted({str(i.window) for i in items if i.account_key == key})
            label = f"{name} ({key}) {', '.join(windows)}"
        else:
            label = f"shard {shard + 1}/{n}: {len(members)} account(s) {members[0][0]}…{members[-1][0]}"
        shards.append({"shard": shard, "label": label[:250], "accounts": len(members)})
    return shards


def plan_run(
    store: Store,
    spec: IntegrationSpec,
    flows: list[FlowSpec],
    *,
    dag_id: str,
    run_id: str,
    logical_date: datetime,
    params: RunParams,
    manual: bool,
    backfill: bool = False,
) -> RunPlan:
    """Plan the run and write its work list (pending activity rows with their shard)."""
    planned = plan(store, spec, logical_date=logical_date, params=params, manual=manual, flows=flows, backfill=backfill)
    items = list(planned.items)
    shards = assign_shards(items, spec, per_account=manual and bool(params.accounts))
    store.plan_activity(dag_id, run_id, (i.to_xcom() | {"due_at": i.due_at} for i in items))
    if not manual:  # an activation backfill attempted now is tried again retry_minutes later unless it succeeds
        for i in items:
            flow = spec.flow(i.flow)
            if flow.due == "activation":
                store.set_backfill_due(
                    i.account_id, i.flow, logical_date + timedelta(minutes=flow.activation.retry_minutes)
                )
    return RunPlan(shards, planned.not_run, items)


# ---------------------------------------------------------------------------------------- clients


def source_client(spec: IntegrationSpec, conn: ConnectionInfo, flow: FlowSpec | None = None):
    return get_source(spec.source_of(flow) if flow else spec.source).from_connection(conn)


def target_client(spec: IntegrationSpec, conn: ConnectionInfo, flow: FlowSpec | None = None):
    return get_target(spec.target_of(flow) if flow else spec.target).from_connection(conn)


def _close(client: Any) -> None:
    """Close a client's HTTP session: a shard runs hundreds of accounts, and a session left open keeps
    its keep-alive connection (and a handler on the vendor's side) until garbage collection."""
    close = getattr(client, "close", None)
    if callable(close):
        close()


def _retries(client: Any) -> int:
    """HTTP retries the client spent (its :class:`tillflow.http.HttpStats`)."""
    stats = getattr(getattr(client, "http", None), "stats", None)
    return int(getattr(stats, "retries", 0))


def conn_ids(spec: IntegrationSpec, flow: FlowSpec, account: Any) -> tuple[str, str]:
    """The Airflow connections of an account's source and target side for one flow. The account's
    ``conn_id`` is its connection to the integration's source system and ``target_conn`` the one to the
    target system, whichever way a flow goes (CCV → eAccounting orders, eAccounting → CCV products)."""

    def conn_of(system: str) -> str:
        return account.conn_id if system == spec.source else account.target_conn(system)

    return conn_of(spec.source_of(flow)), conn_of(spec.target_of(flow))


# ---------------------------------------------------------------------------------------- the steps


def fetch(
    store: Store, spec: IntegrationSpec, item: WorkItem, conn: ConnectionInfo, *, dag_id: str, run_id: str
) -> list[tuple[int, Any]]:
    """Call the POS for the window and land every payload; returns (landing id, page) pairs."""
    flow = spec.flow(item.flow)
    kind = get_kind(flow.kind)
    account = store.account_by_id(item.account_id)
    window = Window(
        item.window_start, item.window_end, tz=account.settings.timezone, cutoff=account.settings.business_day_cutoff
    )
    client = source_client(spec, conn, flow)
    try:
        if kind.gate == "all_listed":
            check_gate(store, spec, item, client, run_id=run_id)
        pages = client.fetch(kind.name, window)
    except AuthError as exc:
        store.set_status(item.account_id, "auth_failed", str(exc), flow=item.flow)
        raise
    finally:
        store.activity_update(run_id, item.account_id, item.flow, add_retries=_retries(client))
        _close(client)
    landed = [(store.land(item.account_id, spec.source_of(flow), item.window, p, run_id=run_id), p) for p in pages]
    log.info("%s: landed %d page(s) for %s", item.label, len(landed), item.window)
    return landed


def check_gate(store: Store, spec: IntegrationSpec, item: WorkItem, client: Any, *, run_id: str) -> None:
    """The ``all_listed`` mapping gate: every key the source lists (e.g. every POS revenue group, also one
    without sales today) must be mapped or marked inactive before the account syncs. Keeps the list for
    the CLI and the health view; raises NeedsMapping naming the unmapped keys (status and activity row
    say so; the next tick tries again, and a key the source lists later closes the gate again)."""
    flow = spec.flow(item.flow)
    mapping_kind = get_kind(flow.kind).mapping_kinds(get_source(spec.source_of(flow)))[0]
    listed = client.reference_data()[mapping_kind]
    store.set_source_items(item.account_id, mapping_kind, listed)
    rules = store.mappings(item.account_id, mapping_kind)
    unmapped = [i for i in listed if i.key not in rules]
    if unmapped:
        exc = NeedsMapping(mapping_kind, [f"{i.key} ({i.name})" for i in unmapped])
        store.set_status(item.account_id, "needs_mapping", str(exc), flow=item.flow)
        store.activity_update(run_id, item.account_id, item.flow, status="needs_mapping", error=str(exc), finished=True)
        raise exc


def parse_pages(
    spec: IntegrationSpec, flow: FlowSpec, pages: list[tuple[int, Any]], settings: Any, window: Window
) -> tuple[list[Any], list[tuple[int, list[Any]]]]:
    """Parse landed pages without side effects: the records inside ``window`` (later pages win per record key)
    and each page's rejects, as (landing id, rejects)."""
    kind = get_kind(flow.kind)
    parser = get_source(spec.source_of(flow))
    lines: dict[tuple, Any] = {}
    rejects_by_page: list[tuple[int, list[Any]]] = []
    for landing_id, page in pages:
        parsed, rejects = kind.parse(parser, page)
        if rejects:
            rejects_by_page.append((landing_id, rejects))
        for line in parsed:
            day = kind.record_day(line, settings)  # an instant's business day: timezone and cutoff
            if day is None or window.start <= day <= window.end:
                lines[kind.record_key(line)] = line
    return list(lines.values()), rejects_by_page


def parse_landed(
    store: Store,
    spec: IntegrationSpec,
    item: WorkItem,
    landed: list[int] | list[tuple[int, Any]],
    *,
    run_id: str | None,
    problems: dict[str, str] | None = None,
) -> tuple[list[Any], int]:
    """Parse landed pages (later pages win per key/day/hour), record rejects; records inside the window."""
    pages = landed if landed and isinstance(landed[0], tuple) else store.landed(landed)
    settings = store.account_by_id(item.account_id).settings
    lines, rejects_by_page = parse_pages(spec, spec.flow(item.flow), pages, settings, item.window)
    rejected = 0
    for landing_id, rejects in rejects_by_page:
        store.add_rejects(item.account_id, item.flow, rejects, landing_id=landing_id, run_id=run_id)
        if problems is not None:
            problems.update({f"rejected {r.ref}: {r.reason}": f"rejected {r.ref}: {r.reason}" for r in rejects})
        rejected += len(rejects)
    return lines, rejected


def map_lines(store: Store, spec: IntegrationSpec, flow: FlowSpec, account: Any, lines: list[Any]) -> tuple:
    """Map parsed records with the account's current mappings and flow settings, without side effects:
    (rows, ignored, map rejects, mapping kind). Raises NeedsMapping naming what is unmapped."""
    kind = get_kind(flow.kind)
    mapping_kind = kind.mapping_kinds(get_source(spec.source_of(flow)))[0]
    rules = store.mappings(account.id, mapping_kind)
    flow_settings = kind.check_settings(account.settings.flows.get(flow.settings_key, {}), flow_name=flow.settings_key)
    mapped = kind.map(lines, rules, account=account, flow_settings=flow_settings, mapping_kind=mapping_kind)
    rows, ignored, map_rejects = mapped if len(mapped) == 3 else (*mapped, [])
    return rows, ignored, map_rejects, mapping_kind


def map_rows(
    store: Store,
    spec: IntegrationSpec,
    item: WorkItem,
    landed: list,
    *,
    run_id: str,
    account: Any = None,
    problems: dict[str, str] | None = None,
) -> list[Any]:
    """Parse, validate and map the landed pages; returns the canonical rows.

    Raises NeedsMapping (and marks the account's flow) when a source key with data has no mapping.
    """
    account = account or store.account_by_id(item.account_id)
    lines, rejected = parse_landed(store, spec, item, landed, run_id=run_id, problems=problems)
    try:
        rows, ignored, map_rejects, mapping_kind = map_lines(store, spec, spec.flow(item.flow), account, lines)
    except NeedsMapping as exc:
        store.set_status(item.account_id, "needs_mapping", str(exc), flow=item.flow)
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
    if map_rejects:  # records the kind cannot map (an unmapped employee): kept with the reason, the rest goes on
        store.add_rejects(item.account_id, item.flow, map_rejects, landing_id=None, run_id=run_id)
        rejected += len(map_rejects)
        if problems is not None:
            problems.update({r.reason: f"{r.reason} ({r.ref})" for r in map_rejects})
    store.activity_update(
        run_id,
        item.account_id,
        item.flow,
        fetched=len(lines),
        rejected=rejected,
        detail=f"{ignored} line(s) of inactive {mapping_kind}s ignored" if ignored else "",
    )
    return rows


def upsert(store: Store, spec: IntegrationSpec, item: WorkItem, rows: list[Any], *, run_id: str) -> dict[str, int]:
    kind = get_kind(spec.flow(item.flow).kind)
    counts = kind.upsert(store, item.account_id, rows, mode=item.mode, run_id=run_id)
    store.activity_update(run_id, item.account_id, item.flow, **counts)
    return counts


def deliver(
    store: Store, spec: IntegrationSpec, item: WorkItem, conn: ConnectionInfo, *, run_id: str
) -> dict[str, int]:
    """Send what changed since its last delivery with the kind's delivery strategy."""
    flow = spec.flow(item.flow)
    client = target_client(spec, conn, flow)
    try:
        return get_kind(flow.kind).deliver(store, item, client, run_id=run_id, log=log)
    finally:
        store.activity_update(run_id, item.account_id, item.flow, add_retries=_retries(client))
        _close(client)


@dataclass
class Outcome:
    item: WorkItem
    status: str  # success | needs_mapping | failed
    error: str = ""
    retryable: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    #: a replay's (or dry run's) small summary: rows, would_send/sent, unchanged (see tillflow.replay)
    preview: dict[str, Any] | None = None


#: run id → (replay, dry_run), set by the run task from the run's Params (see :func:`set_run_mode`)
_RUN_MODES: dict[str, tuple[bool, bool]] = {}


def set_run_mode(run_id: str, params: RunParams) -> None:
    """Make :func:`run_item` replay from raw landing (no POS call) — or only preview — in this run."""
    if params.replay or params.dry_run:
        _RUN_MODES[run_id] = (True, params.dry_run)
    else:
        _RUN_MODES.pop(run_id, None)


def run_item(
    store: Store,
    spec: IntegrationSpec,
    item: WorkItem,
    conns: Callable[[str], ConnectionInfo],
    *,
    dag_id: str,
    run_id: str,
    secrets: list[str] | None = None,
) -> Outcome:
    """One account's flow from the POS to the target, in this thread: fetch → map → upsert → deliver.

    Never raises: the outcome (and the activity row, and the flow's state) says what happened. In a run
    with the ``replay`` Param the fetch is skipped: the landed pages are mapped again (:mod:`tillflow.replay`).
    """
    replay, dry_run = _RUN_MODES.get(run_id, (False, False))
    if replay:
        from tillflow.replay import run_replay_item

        return run_replay_item(store, spec, item, conns, dag_id=dag_id, run_id=run_id, dry_run=dry_run, secrets=secrets)
    route = spec.flow(item.flow)
    store.activity_start(
        dag_id,
        run_id,
        item.account_id,
        item.flow,
        item.window,
        source=spec.source_of(route),
        target=spec.target_of(route),
    )
    problems: dict[str, str] = {}
    try:
        account = store.account_by_id(item.account_id)
        flow = spec.flow(item.flow)
        source_conn, target_conn = conn_ids(spec, flow, account)
        landed = fetch(store, spec, item, conns(source_conn), dag_id=dag_id, run_id=run_id)
        rows = map_rows(store, spec, item, landed, run_id=run_id, account=account, problems=problems)
        counts = upsert(store, spec, item, rows, run_id=run_id)
        counts |= deliver(store, spec, item, conns(target_conn), run_id=run_id)
    except NeedsMapping as exc:
        log.info("%s: needs mapping — %s", item.label, exc)
        notify_problems(store, spec, item, {str(exc): str(exc)} | problems, conns, secrets=secrets)
        return Outcome(item, "needs_mapping", str(exc))
    except Exception as exc:
        message = one_line(exc, secrets or [])
        permanent = is_permanent(exc)
        status = "auth_failed" if isinstance(exc, AuthError) else "failing"
        try:
            store.set_status(item.account_id, status, message, flow=item.flow)
            store.activity_finish(run_id, item.account_id, item.flow, "failed", error=message, retryable=not permanent)
        except Exception:  # the store itself failed: the row stays 'running' and the retry redoes it
            log.exception("%s: could not record the failure", item.label)
        log.error("%s: failed (%s): %s", item.label, "permanent" if permanent else "retryable", message)
        notify_problems(
            store, spec, item, problems | {"the import failed": f"the import failed: {message}"}, conns, secrets=secrets
        )
        return Outcome(item, "failed", message, retryable=not permanent)
    store.flow_success(item.account_id, item.flow, due_at=item.due_at, window=item.window, run_id=run_id)
    if spec.flow(item.flow).due == "activation":
        store.backfill_done(item.account_id, item.flow, due_at=item.due_at)
    store.activity_update(run_id, item.account_id, item.flow, status="success", finished=True)
    log.info("%s: done %s", item.label, " ".join(f"{k}={v}" for k, v in counts.items()))
    notify_problems(store, spec, item, problems, conns, secrets=secrets)
    return Outcome(item, "success", counts=counts)


def notify_problems(
    store: Store,
    spec: IntegrationSpec,
    item: WorkItem,
    problems: dict[str, str],
    conns: Callable[[str], ConnectionInfo],
    *,
    secrets: list[str] | None = None,
) -> int:
    """Mail this run's import problems to the flow's ``notify_email`` (once a day per problem and address,
    again when a cleared problem comes back). Never raises: a notification never fails an import."""
    try:
        account = store.account_by_id(item.account_id)
        address = (account.settings.flows.get(spec.flow(item.flow).settings_key) or {}).get("notify_email")
        if not address:
            return 0
        from tillflow.problem_mail import notify, smtp_sender

        send = smtp_sender(conns("smtp_default"))
        return notify(
            store, account, item.flow, str(item.window), address, problems, send, now=datetime.now(UTC), secrets=secrets
        )
    except Exception as exc:
        log.error("%s: could not notify import problems: %s", item.label, one_line(exc, secrets or []))
        return 0


@dataclass
class ShardResult:
    outcomes: list[Outcome]
    seconds: float

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def retryable(self) -> list[Outcome]:
        return [o for o in self.failed if o.retryable]


def run_shard(
    spec: IntegrationSpec,
    *,
    dag_id: str,
    run_id: str,
    shard: int,
    conns: Callable[[str], ConnectionInfo],
    secrets: list[str] | None = None,
    url: str | None = None,
    threads: int | None = None,
) -> ShardResult:
    """Run the unfinished accounts of one shard concurrently (one database connection per thread).

    ``conns`` gives an account's connection by id; it is called from the worker threads and must be
    thread-safe (the operator serialises Airflow's lookups and caches them per shard).
    """
    started = time.monotonic()
    with Store.open(url) as store:
        rows = store.run_items(run_id, shard)
    if rows:  # rotating refresh tokens (Pennylane, eAccounting) are kept in this run's tillflow database
        from tillflow.tokens import DbTokenStore, set_default

        set_default(DbTokenStore(url))
    items = [WorkItem.from_activity(r) for r in rows]
    if not items:
        return ShardResult([], 0.0)
    local = threading.local()
    opened: list[Store] = []
    lock = threading.Lock()

    def thread_store() -> Store:
        store = getattr(local, "store", None)
        if store is None or store.conn.closed:
            store = Store.open(url)
            local.store = store
            with lock:
                opened.append(store)
        return store

    from tillflow.logctx import account_context
    from tillflow.progress import Progress

    # a line every 10 s while the shard runs: account flows done / total, rows or events done / total, rates
    progress = Progress(f"shard {shard}", total=len(items), unit="account flow", logger=log)

    def work(item: WorkItem) -> Outcome:
        with account_context(item.label), progress.item(f"{item.account_key} {item.flow}"):
            return run_item(thread_store(), spec, item, conns, dag_id=dag_id, run_id=run_id, secrets=secrets)

    n_threads = max(1, min(threads or spec.execution.threads, len(items)))
    log.info("shard %d: %d account flow(s) on %d thread(s)", shard, len(items), n_threads)
    try:
        with progress, ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix=f"shard{shard}") as pool:
            outcomes = list(pool.map(work, items))
    finally:
        for store in opened:
            store.close()
    result = ShardResult(outcomes, time.monotonic() - started)
    log.info(
        "shard %d: %d ok, %d needs mapping, %d failed in %.1f s",
        shard,
        sum(o.status == "success" for o in outcomes),
        sum(o.status == "needs_mapping" for o in outcomes),
        len(result.failed),
        result.seconds,
    )
    return result


def report(store: Store, run_id: str, not_run: dict[str, str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """A per-account summary of one run; returns (text, failed rows). Rows that never finished failed."""
    rows = store.activity(run_id=run_id)
    lines = [
        f"{'account':<24} {'flow':<10} {'window':<23} {'status':<14} fetched upserted unchanged kept rejected "
        f"delivered skipped failed retries  error"
    ]
    failed = []
    for r in rows:
        status = r["status"]
        if status in ("running", "pending"):
            status = "failed"
            r["error"] = r["error"] or "this account did not finish (its shard was killed or timed out; see its log)"
            store.activity_update(run_id, r["account_id"], r["flow"], status="failed", finished=True, error=r["error"])
        if status == "failed":
            failed.append(r)
        window = f"{r['window_start']}..{r['window_end']}"
        lines.append(
            f"{r['account_key']:<24} {r['flow']:<10} {window:<23} {status:<14} {r['fetched']:>7} {r['upserted']:>8} "
            f"{r['unchanged']:>9} {r['kept']:>4} {r['rejected']:>8} {r['delivered']:>9} {r['skipped']:>7} "
            f"{r['failed']:>6} {r['retries']:>7}  {(r['error'] or '').splitlines()[0] if r['error'] else ''}"
        )
    for key, why in sorted((not_run or {}).items()):
        lines.append(f"{key:<24} {'-':<10} {'-':<23} {'not run':<14} {why}")
    return "\n".join(lines), failed
