"""Reconciliation: per account and business day, the POS total tillflow holds against what the target holds.

No Airflow import; the ``tillflow_reconcile`` DAG and ``python -m tillflow reconcile`` wire it.

**POS side** — tillflow's canonical copy in PostgreSQL, not a new POS call (the POS is not called again, so a
reconcile run costs the target's read endpoints only):

* revenue (Planday units, Shiftbase team days, Eitje groups per hour): ``tillflow.revenue`` summed per
  business day over the account's target keys (and hours): the POS's revenue after mapping and VAT choice,
  with any value entered by hand in tillflow in place of the POS's for its key and day;
* ledger (Pennylane): the live entry of each source event in the outbox (its latest revision, not reversed;
  posted or not) — the day's total is the sum of the entries' debits: each order's total, each payment, and
  each till closing's expected takings (its global lines) plus its cash differences. The target side sums the
  same debits of the same entries, so a closing's global lines count once on each side, never as sales.

**Target side** — read back through the target client's public API (``read_revenue``: Planday ``GET
/revenue/v1.0/revenue``, Eitje ``GET /open_api/revenue_groups/revenues``, Shiftbase ``GET /team_days``;
Pennylane ``ledger_entries``: ``GET /ledger_entries`` + ``GET /ledger_entry_lines`` of the account's journals,
entries whose piece number carries the account's posting-key prefix, a reversal counted negative).

A day whose totals differ by more than one cent is **drift** — unless every differing key is one tillflow
skipped on purpose and recorded so (Planday 409 no opening day, ``keep_manual``/``insert_only`` keeping a
value the target holds): then it is **explained**. Every checked day is a row in ``tillflow.reconciliation``;
each account gets one activity row (flow ``reconcile``, status ``success``, ``drift`` or ``failed``) naming the
drift days and amounts; drift is mailed (plain text, ``smtp_default``) to the integration's owners, one mail
per integration and run. Left out: orders/products/stock (CCV ↔ eAccounting) and clock times — no day total.
"""

from __future__ import annotations

import logging
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tillflow.masking import one_line
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.specs import FlowSpec, IntegrationSpec

log = logging.getLogger(__name__)

#: drift is a difference beyond one cent
TOLERANCE = Decimal("0.01")
#: the activity log's flow name of a reconcile row
FLOW = "reconcile"
#: days a scheduled check covers, and the days before it left to settle (late runs, lookbacks, retries)
DEFAULT_DAYS = 7
SETTLE_DAYS = 1
REVENUE_KINDS = ("revenue", "revenue_hourly")
LEDGER_KINDS = ("ledger",)
_ZERO = Decimal("0.00")
_MAX_CELLS = 8


@dataclass(frozen=True)
class DayCheck:
    """One account's business day: the two totals and what their difference means."""

    account_key: str
    name: str
    business_date: date
    kind: str  # revenue | ledger
    pos: Decimal
    target: Decimal
    status: str  # ok | drift | explained
    detail: str = ""

    @property
    def diff(self) -> Decimal:
        return self.target - self.pos


@dataclass
class AccountCheck:
    account: Any
    integration: str
    target: str
    kind: str
    window: Window | None
    days: list[DayCheck] = field(default_factory=list)
    error: str = ""
    skipped: str = ""  # why the account was not checked (paused, no reconcilable flow, window before start)

    @property
    def drift(self) -> list[DayCheck]:
        return [d for d in self.days if d.status == "drift"]

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        if self.skipped:
            return "skipped"
        return "drift" if self.drift else "success"


def reconcilable_flow(spec: IntegrationSpec) -> FlowSpec | None:
    """The flow whose data reconciliation compares (the first revenue or ledger flow), or None."""
    for flow in spec.flows:
        if flow.kind in REVENUE_KINDS + LEDGER_KINDS:
            return flow
    return None


def default_window(settings: Any, at: datetime) -> Window:
    """The :data:`DEFAULT_DAYS` closed business days before the last :data:`SETTLE_DAYS` (in the account's
    timezone and cutoff): a run on Monday morning checks Sunday a week ago up to Saturday."""
    from tillflow.windows import last_closed_business_date

    end = last_closed_business_date(at, settings.timezone, settings.business_day_cutoff) - timedelta(days=SETTLE_DAYS)
    return Window(end - timedelta(days=DEFAULT_DAYS - 1), end)


def _days(window: Window) -> list[date]:
    return [window.start + timedelta(days=i) for i in range((window.end - window.start).days + 1)]


def _money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


# ---------------------------------------------------------------------------------------- revenue


def _cell(key: tuple[str, date, int | None]) -> str:
    return key[0] if key[2] is None else f"{key[0]} {key[2]:02d}h"


def check_revenue(
    store: Any, spec: IntegrationSpec, flow: FlowSpec, account: Any, window: Window, client: Any
) -> list[DayCheck]:
    """Per day: ``tillflow.revenue`` of the account against the target's values for the same keys."""
    from tillflow.flows import get_kind
    from tillflow.sources import get_source

    kind = get_kind(flow.kind)
    mapping_kind = kind.mapping_kinds(get_source(spec.source_of(flow)))[0]
    rows = store.revenue(account.id, window)
    pos: dict[tuple[str, date, int | None], Decimal] = {
        (r["target_key"], r["business_date"], r["hour"]): _money(r["amount"]) for r in rows
    }
    keys = {k[0] for k in pos} | {
        rule.target_key for rule in store.mappings(account.id, mapping_kind).values() if rule.target_key
    }
    client.set_business_day(account.settings.timezone, account.settings.business_day_cutoff)
    held = {k: _money(v) for k, v in (client.read_revenue(sorted(keys), window) if keys else {}).items()}
    held = {k: v for k, v in held.items() if k[0] in keys}
    states = {(d["target_key"], d["business_date"], d["hour"]): d for d in store.delivery_state(account.id)}
    target_name = spec.target_of(flow)
    out = []
    for day in _days(window):
        ours = {k: v for k, v in pos.items() if k[1] == day}
        theirs = {k: v for k, v in held.items() if k[1] == day}
        pos_total = sum(ours.values(), _ZERO)
        target_total = sum(theirs.values(), _ZERO)
        status, detail = "ok", ""
        if abs(target_total - pos_total) > TOLERANCE:
            differing = sorted(
                (k for k in ours.keys() | theirs.keys() if ours.get(k, _ZERO) != theirs.get(k, _ZERO)),
                key=lambda k: (k[0], -1 if k[2] is None else k[2]),
            )
            explained = bool(differing)
            parts = []
            for k in differing:
                state = states.get(k)
                why = ""
                if state is not None and state["status"] in ("skipped", "failed") and state["detail"]:
                    why = f" ({state['status']}: {one_line(state['detail'], limit=160)})"
                if state is None or state["status"] != "skipped":
                    explained = False
                held_text = f"{theirs[k]:.2f}" if k in theirs else "nothing"
                parts.append(f"{_cell(k)}: POS {ours.get(k, _ZERO):.2f}, {target_name} {held_text}{why}")
            more = f"; +{len(parts) - _MAX_CELLS} more" if len(parts) > _MAX_CELLS else ""
            detail = "; ".join(parts[:_MAX_CELLS]) + more
            status = "explained" if explained else "drift"
        out.append(DayCheck(account.key, account.name, day, "revenue", pos_total, target_total, status, detail))
    return out


# ---------------------------------------------------------------------------------------- ledger


def _debit(payload: dict[str, Any]) -> Decimal:
    return sum((_money(line.get("debit") or "0") for line in payload.get("lines") or []), _ZERO)


def check_ledger(
    store: Any, spec: IntegrationSpec, flow: FlowSpec, account: Any, window: Window, client: Any
) -> list[DayCheck]:
    """Per day: the live entries of the account's outbox (their debits) against the entries Pennylane holds
    with the account's piece-number prefix (a reversal counts negative)."""
    from tillflow.flows.ledger import OUTBOX_FLOW
    from tillflow.store.outbox import POSTED

    rows = store.conn.execute(
        """
        SELECT kind, state, posting_key, payload, reversed_by_id, target_ref, (payload->>'date')::date AS day
          FROM tillflow.outbox
         WHERE account_id = %s AND flow = %s AND (payload->>'date')::date BETWEEN %s AND %s
         ORDER BY id
        """,
        (account.id, OUTBOX_FLOW, window.start, window.end),
    ).fetchall()
    store.conn.commit()
    pos: dict[date, Decimal] = defaultdict(lambda: _ZERO)
    unposted: dict[date, list[str]] = defaultdict(list)
    posted: dict[date, set[str]] = defaultdict(set)
    known = set()
    for r in rows:
        known.add(r["posting_key"])
        if r["state"] in POSTED or (r["state"] == "superseded" and r["target_ref"]):
            posted[r["day"]].add(r["posting_key"])
        if r["kind"] == "entry" and r["reversed_by_id"] is None and r["state"] != "superseded":
            pos[r["day"]] += _debit(r["payload"])
            if r["state"] not in POSTED:
                unposted[r["day"]].append(f"{r['posting_key']} ({r['state']})")
    journals = sorted({str(r["payload"].get("journal")) for r in rows if r["payload"].get("journal")})
    entries = client.ledger_entries(journals, window, piece_prefix=f"{account.key}:") if journals else []
    target: dict[date, Decimal] = defaultdict(lambda: _ZERO)
    pieces: dict[date, list[str]] = defaultdict(list)
    for e in entries:
        sign = -1 if e["piece_number"].endswith(":rev") else 1
        target[e["date"]] += sign * _money(e["debit"])
        pieces[e["date"]].append(e["piece_number"])
    out = []
    for day in _days(window):
        status, detail = "ok", ""
        if abs(target[day] - pos[day]) > TOLERANCE:
            status = "drift"
            held = pieces[day]
            parts = []
            if missing := sorted(posted[day] - set(held)):
                parts.append(f"missing at {spec.target_of(flow)}: {', '.join(missing[:5])}")
            if twice := sorted({p for p in held if held.count(p) > 1}):
                parts.append(f"posted twice: {', '.join(twice[:5])}")
            if unknown := sorted(set(held) - known):
                parts.append(f"unknown to tillflow: {', '.join(unknown[:5])}")
            if unposted[day]:
                parts.append(f"not posted yet: {', '.join(unposted[day][:5])}")
            detail = "; ".join(parts)
        out.append(DayCheck(account.key, account.name, day, "ledger", pos[day], target[day], status, detail))
    return out


# ---------------------------------------------------------------------------------------- the run


def check_account(
    store: Any,
    spec: IntegrationSpec,
    account: Any,
    conns: Callable[[str], ConnectionInfo],
    *,
    window: Window | None = None,
    at: datetime | None = None,
) -> AccountCheck:
    """Compare one account's days in ``window`` (default: :func:`default_window`). Never raises: a read that
    fails is the check's ``error``."""
    from tillflow.sync import _close, conn_ids, target_client
    from tillflow.windows import clip

    flow = reconcilable_flow(spec)
    kind = "ledger" if flow is not None and flow.kind in LEDGER_KINDS else "revenue"
    check = AccountCheck(account, spec.integration, spec.target_of(flow) if flow else spec.target, kind, None)
    if flow is None:
        check.skipped = f"{spec.integration} has no revenue or ledger flow to reconcile"
        return check
    settings = account.settings
    if not settings.active:
        check.skipped = "paused"
        return check
    if (settings.flows.get(flow.settings_key) or {}).get("enabled") is False:
        check.skipped = f"{flow.name} is off for this account"
        return check
    window = clip(window or default_window(settings, at or datetime.now(UTC)), settings)
    if window is None:
        check.skipped = f"window lies before the start date {settings.start_date}"
        return check
    check.window = window
    client = None
    try:
        client = target_client(spec, conns(conn_ids(spec, flow, account)[1]), flow)
        compare = check_ledger if kind == "ledger" else check_revenue
        check.days = compare(store, spec, flow, account, window, client)
    except Exception as exc:  # one account's failure never stops the others
        check.error = one_line(exc)
        log.error("%s (%s): reconcile failed: %s", account.name, account.key, check.error)
    finally:
        if client is not None:
            _close(client)
    return check


def record(store: Any, check: AccountCheck, *, run_id: str, dag_id: str) -> None:
    """The check's days in ``tillflow.reconciliation`` and one activity row (flow ``reconcile``)."""
    if check.skipped:
        return
    account = check.account
    store.record_reconciliation(
        run_id,
        account.id,
        check.integration,
        [
            {"kind": d.kind, "business_date": d.business_date, "pos": d.pos, "target": d.target, "diff": d.diff}
            | {"status": d.status, "detail": d.detail}
            for d in check.days
        ],
    )
    store.activity_start(dag_id, run_id, account.id, FLOW, check.window)
    drift = check.drift
    explained = [d for d in check.days if d.status == "explained"]
    if check.error:
        detail = ""
    elif drift:
        detail = f"drift on {len(drift)} day(s): " + "; ".join(
            f"{d.business_date} POS {d.pos:.2f} {check.target} {d.target:.2f} (diff {d.diff:+.2f})"
            + (f" [{d.detail[:200]}]" if d.detail else "")
            for d in drift
        )
    else:
        detail = f"{len(check.days)} day(s) match"
    if explained:
        detail += f"; {len(explained)} day(s) differ as recorded: " + ", ".join(str(d.business_date) for d in explained)
    store.activity_update(
        run_id, account.id, FLOW, status=check.status, detail=detail, error=check.error or "", finished=True
    )


def compose_mail(spec: IntegrationSpec, checks: Iterable[AccountCheck], *, run_id: str) -> tuple[str, str] | None:
    """One plain-text alert naming every drifting day of every account, or None without drift."""
    drifting = [c for c in checks if c.drift]
    if not drifting:
        return None
    days = sum(len(c.drift) for c in drifting)
    subject = (
        f"[tillflow] {spec.integration}: drift on {days} day(s) in {len(drifting)} account(s) — POS vs "
        f"{drifting[0].target}"
    )
    lines = [
        f"Reconciliation of {spec.integration} ({run_id}) found totals that differ by more than one cent",
        f"between what tillflow took from the POS and what {drifting[0].target} holds:",
        "",
    ]
    for c in drifting:
        lines.append(f"{c.account.name} ({c.account.key}), {c.window}:")
        for d in c.drift:
            lines.append(f"  {d.business_date}  POS {d.pos:>12.2f}  {c.target} {d.target:>12.2f}  diff {d.diff:+.2f}")
            if d.detail:
                lines.append(f"    {d.detail}")
        lines.append("")
    lines += [
        "What to do: re-send the days with a manual run of the integration's DAG (Params accounts, date_from,",
        "date_to, overwrite: overwrite), or correct the value by hand in the target; then run",
        f"`python -m tillflow reconcile -i {spec.integration} --account <key> --from <day> --to <day>` to confirm.",
        "Rows: tillflow.reconciliation; the account's activity log shows a 'drift' row.",
        "",
        "-- tillflow",
    ]
    return textwrap.shorten(subject, 240, placeholder=" ..."), "\n".join(lines)  # never cut mid-word


def reconcile(
    store: Any,
    spec: IntegrationSpec,
    conns: Callable[[str], ConnectionInfo],
    *,
    run_id: str,
    dag_id: str = "tillflow_reconcile",
    accounts: list[str] | None = None,
    window: Window | None = None,
    at: datetime | None = None,
    notify: bool = True,
    send: Callable[[str, str, str], None] | None = None,
) -> list[AccountCheck]:
    """Check every account of the integration (or the ones named), record the results and mail drift to the
    spec's owners (``send(to, subject, body)``; by default over the ``smtp_default`` connection). A mail that
    cannot be sent is logged, never raised."""
    from tillflow.errors import ConfigError

    known = {a.key: a for a in store.list_accounts(spec.integration)}
    if unknown := [k for k in accounts or [] if k not in known]:
        raise ConfigError(
            f"account: unknown account(s) {', '.join(unknown)} for {spec.integration}; "
            f"known: {', '.join(sorted(known)) or 'none'}"
        )
    if any(spec.target_of(f) in ("pennylane", "eaccounting") for f in spec.flows):
        from tillflow.store.db import database_url
        from tillflow.tokens import DbTokenStore, set_default

        set_default(DbTokenStore(database_url()))  # rotating refresh tokens live in the tillflow database
    chosen = [known[k] for k in accounts] if accounts else list(known.values())
    checks = []
    for account in chosen:
        check = check_account(store, spec, account, conns, window=window, at=at)
        record(store, check, run_id=run_id, dag_id=dag_id)
        checks.append(check)
    mail = compose_mail(spec, checks, run_id=run_id)
    if mail and notify and spec.owners:
        try:
            if send is None:
                from tillflow.problem_mail import smtp_sender

                send = smtp_sender(conns("smtp_default"))
            send(", ".join(spec.owners), *mail)
        except Exception as exc:  # the rows and the activity log keep the drift; the next run mails again
            log.error("%s: could not mail the reconciliation alert: %s", spec.integration, one_line(exc))
    return checks


def table(checks: Iterable[AccountCheck]) -> str:
    """Per account and day: POS, target, diff, status (the CLI's and the task log's report)."""
    lines = [f"{'account':<24} {'day':<10} {'pos':>12} {'target':>12} {'diff':>10}  status     detail"]
    for c in checks:
        if c.skipped or c.error:
            why = c.skipped or c.error
            lines.append(f"{c.account.key:<24} {'-':<10} {'':>12} {'':>12} {'':>10}  {c.status:<10} {why}")
            continue
        for d in c.days:
            lines.append(
                (
                    f"{c.account.key:<24} {d.business_date!s:<10} {d.pos:>12.2f} {d.target:>12.2f} {d.diff:>+10.2f}  "
                    f"{d.status:<10} {d.detail}"
                ).rstrip()
            )
    return "\n".join(lines)
