"""``python -m tillflow …``: accounts, mappings, test-connection, hand-entered revenue, replay, demo.

Every bad input gets one error line naming the field, exit code 2, and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tillflow.errors import AuthError, ConfigError, TillflowError
from tillflow.masking import one_line
from tillflow.sources.base import Window
from tillflow.specs import WEEKDAYS, IntegrationSpec, check_account_key, load_spec, parse_settings

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

# CLI flag → settings field
_SETTING_FLAGS = {
    "timezone": "timezone",
    "vat": "vat",
    "write_mode": "write_mode",
    "lookback": "lookback_days",
    "run_time": "run_time",
    "weekdays": "weekdays",
    "start_date": "start_date",
    "cutoff": "business_day_cutoff",
    "owner_email": "owner_email",
}


def specs() -> dict[str, IntegrationSpec]:
    return {p.stem: load_spec(p) for p in sorted(DAGS.glob("*.yaml"))}


def spec_for(integration: str | None) -> IntegrationSpec:
    found = specs()
    if integration is None:
        if len(found) == 1:
            return next(iter(found.values()))
        raise ConfigError(f"--integration: required, one of {', '.join(found)}")
    if integration not in found:
        raise ConfigError(f"--integration: unknown integration {integration!r}; known: {', '.join(found)}")
    return found[integration]


def _integration_of(key: str, *, new: bool = False) -> str | None:
    """The integration of an account key when ``-i`` is left out: the only integration, or the only one
    holding an account with that key (None: let :func:`spec_for` ask for ``-i``)."""
    found = specs()
    if len(found) == 1:
        return next(iter(found))
    try:
        with _open_store() as store:
            hits = [i for i in found if store.find_account(i, key) is not None]
    except Exception:  # no database yet: spec_for asks for -i
        return None
    if not hits and not new:
        raise ConfigError(f"account: unknown account {key!r} (in every integration: {', '.join(found)})")
    return hits[0] if len(hits) == 1 else None


def _open_store():
    from tillflow.store import Store, ensure_schema

    ensure_schema()
    return Store.open()


def _settings_from_args(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    data = dict(base)
    for flag, field in _SETTING_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag == "weekdays":
            value = [d.strip().lower()[:3] for d in value.split(",") if d.strip()]
            bad = [d for d in value if d not in WEEKDAYS]
            if bad:
                raise ConfigError(f"weekdays: unknown day(s) {', '.join(bad)}; use {','.join(WEEKDAYS)}")
        data[field] = value
    for item in getattr(args, "flow_setting", None) or []:
        name, sep, raw = item.partition("=")
        flow, dot, key = name.partition(".")
        if not sep or not dot or not flow or not key:
            raise ConfigError(f"--flow-setting: expected FLOW.KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # a plain string (an e-mail address)
        flows = {k: dict(v) for k, v in (data.get("flows") or {}).items()}
        flows.setdefault(flow, {})[key] = value
        data["flows"] = flows
    return data


def cmd_accounts_add(args: argparse.Namespace, *, update: bool) -> int:
    spec = spec_for(args.integration)
    check_account_key(args.key)
    with _open_store() as store:
        existing = store.find_account(spec.integration, args.key)
        if update and existing is None:
            store.get_account(spec.integration, args.key)  # raises the "unknown account" error
        if not update and existing is not None:
            raise ConfigError(f"account: {args.key!r} already exists for {spec.integration}; use `accounts update`")
        base = (
            existing.settings.to_json()
            if existing
            else {
                "lookback_days": spec.flows[0].lookback_days.default,
                "business_day_cutoff": f"{spec.flows[0].business_day_cutoff:%H:%M}",
            }
        )
        settings = parse_settings(_settings_from_args(args, base), spec=spec, where="")
        if settings.active and (existing is None or not existing.settings.active):
            settings = settings.model_copy(update={"activated_at": datetime.now(UTC)})  # activation backfill
        target_conn = args.target_conn_id or (existing.target_conn_id if existing else f"{spec.target}_{args.key}")
        departments = {
            mode
            for flow in settings.flows.values()
            for mode in (flow.get("cost_centers") or {}).values()
            if mode not in ("skip", "auto")
        }
        if departments and getattr(args, "check", True):  # a department the target does not list: refused now
            from tillflow.sync import target_client

            client = target_client(spec, _connection(target_conn))
            try:
                known = {i.key for i in client.reference_data().get("department", [])}
            finally:
                client.close()
            unknown = sorted(departments - known)
            if unknown:
                raise ConfigError(
                    f"settings.flows.clock_times.cost_centers: {spec.target} has no department "
                    f"{', '.join(unknown)} (known: {', '.join(sorted(known)) or 'none'})"
                )
        account = store.upsert_account(
            spec.integration,
            args.key,
            name=args.name or (existing.name if existing else args.key),
            conn_id=args.conn_id or (existing.conn_id if existing else f"{spec.source}_{args.key}"),
            target_conn_id=args.target_conn_id
            or (existing.target_conn_id if existing else f"{spec.target}_{args.key}"),
            settings=settings,
        )
        store.set_paused(account.id, settings.pause_reasons(spec))
    print(
        f"{'updated' if update else 'added'} {account.key} ({account.name}) for {spec.integration}: "
        f"{json.dumps(account.settings.to_json(), sort_keys=True)}"
    )
    return 0


def cmd_accounts_active(args: argparse.Namespace, *, active: bool) -> int:
    spec = spec_for(args.integration)
    with _open_store() as store:
        account = store.get_account(spec.integration, args.key)
        update: dict[str, Any] = {"active": active}
        if active and not account.settings.active:
            update["activated_at"] = datetime.now(UTC)  # a re-activation gets its own activation backfill
        settings = account.settings.model_copy(update=update)
        store.update_settings(account.id, settings)
        store.set_paused(account.id, settings.pause_reasons(spec))
    print(f"{'resumed' if active else 'paused'} {account.key}")
    return 0


def cmd_accounts_list(args: argparse.Namespace) -> int:
    integration = spec_for(args.integration).integration if args.integration else None
    with _open_store() as store:
        accounts = store.list_accounts(integration)
        last = store.last_runs(integration)
        flows = store.flow_states(a.id for a in accounts)
    rows = []
    for a in accounts:
        run = last.get(a.id)
        rows.append(
            {
                "integration": a.integration,
                "account": a.key,
                "name": a.name,
                "active": a.settings.active,
                "status": a.status,
                "detail": a.status_detail,
                "run_time": f"{a.settings.run_time:%H:%M}",
                "weekdays": ",".join(a.settings.weekdays),
                "lookback": a.settings.lookback_days,
                "vat": a.settings.vat,
                "write_mode": a.settings.write_mode,
                "flows": {f: _flow_json(st) for (acc_id, f), st in sorted(flows.items()) if acc_id == a.id},
                "last_run": None
                if not run
                else {
                    "at": run["started_at"].isoformat(timespec="seconds"),
                    "status": run["status"],
                    "window": f"{run['window_start']}..{run['window_end']}",
                    "delivered": run["delivered"],
                    "error": run["error"],
                },
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no accounts")
        return 0
    print(f"{'account':<18} {'name':<22} {'active':<6} {'status':<14} {'runs':<20} {'last run':<44} detail")
    for r in rows:
        lr = r["last_run"]
        last_text = "never" if not lr else f"{lr['at']} {lr['status']} {lr['window']}"
        runs = f"{r['run_time']} {r['weekdays'] if len(r['weekdays']) < 27 else 'daily'}"
        detail = r["detail"] or (lr["error"] if lr else "")
        print(
            f"{r['account']:<18} {r['name'][:22]:<22} {'yes' if r['active'] else 'no':<6} {r['status']:<14} "
            f"{runs:<20} {last_text:<44} {detail}"
        )
    return 0


def _flow_json(state: dict[str, Any]) -> dict[str, Any]:
    """One flow's state for the CLI (status, last success, the due time it served, last window)."""
    window = f"{state['last_window_start']}..{state['last_window_end']}" if state["last_window_start"] else None
    return {
        "status": state["status"],
        "detail": state["status_detail"],
        "last_success": state["last_success_at"].isoformat(timespec="seconds") if state["last_success_at"] else None,
        "last_due": state["last_due_at"].isoformat(timespec="minutes") if state["last_due_at"] else None,
        "last_window": window,
        "backfill_due": state["backfill_due_at"],
        "backfill_done": state["backfill_done_at"],
    }


def cmd_accounts_show(args: argparse.Namespace) -> int:
    spec = spec_for(args.integration)
    with _open_store() as store:
        a = store.get_account(spec.integration, args.key)
        from tillflow.sources import get_source

        kind = get_source(spec.source).mapping_kind
        rules = store.mappings(a.id, kind)
        flows = {f: _flow_json(st) for (_, f), st in sorted(store.flow_states([a.id]).items())}
    print(
        json.dumps(
            {
                "account": a.key,
                "name": a.name,
                "integration": a.integration,
                "conn_id": a.conn_id,
                "target_conn_id": a.target_conn_id,
                "status": a.status,
                "status_detail": a.status_detail,
                "settings": a.settings.to_json(),
                "flows": flows,
                "mappings": {k: (r.target_key if not r.inactive else "inactive") for k, r in sorted(rules.items())},
            },
            indent=2,
            default=str,
        )
    )
    return 0


def cmd_mappings_set(args: argparse.Namespace) -> int:
    spec = spec_for(args.integration)
    from tillflow.sources import get_source

    kind = args.kind or get_source(spec.source).mapping_kind
    if args.inactive == bool(args.target_key):
        raise ConfigError("target_key: give a target key, or --inactive to ignore this source key on purpose")
    with _open_store() as store:
        account = store.get_account(spec.integration, args.key)
        if args.check and not args.inactive:
            known = _target_items(spec, account, kind)
            if args.target_key not in known:
                raise ConfigError(
                    f"target_key: {spec.target} has no {_target_kind(spec, kind)} {args.target_key!r} "
                    f"(known: {', '.join(sorted(known)[:30]) or 'none'})"
                )
        store.set_mapping(account.id, kind, args.source_key, None if args.inactive else args.target_key)
    print(f"{account.key}: {kind} {args.source_key} → {'inactive' if args.inactive else args.target_key}")
    return 0


def _target_kind(spec: IntegrationSpec, source_kind: str) -> str:
    """The target's reference kind a source kind maps to (a branch → a Shiftbase team, an employee → a user)."""
    from tillflow.targets import get_target

    cls = get_target(spec.target)
    return getattr(cls, "reference_for", {}).get(source_kind, cls.mapping_kind)


def _target_items(spec: IntegrationSpec, account, source_kind: str) -> dict[str, str]:
    """key → name of what the target lists for the kind a source kind maps to."""
    from tillflow.sync import target_client

    client = target_client(spec, _connection(account.target_conn(spec.target)))
    try:
        items = client.reference_data().get(_target_kind(spec, source_kind), [])
    finally:
        client.close()
    return {i.key: i.name for i in items}


def cmd_mappings_list(args: argparse.Namespace) -> int:
    """Every item the POS lists per kind (branches, employees, cost centres…), its mapping, and what is unmapped."""
    spec = spec_for(args.integration)
    from tillflow.sync import source_client

    with _open_store() as store:
        account = store.get_account(spec.integration, args.key)
        source = source_client(spec, _connection(account.conn_id))
        try:
            listed = source.reference_data()
        finally:
            source.close()
        rules = {kind: store.mappings(account.id, kind) for kind in listed}
        settings = account.settings.flows
    from tillflow.flows import get_kind

    notes = {get_kind(f.kind).mapped_through.format(flow=f.settings_key) for f in spec.flows} - {""}
    for note in sorted(notes):
        print(f"(mapped through {note})")
    unmapped_total = 0
    for kind, items in listed.items():
        print(f"{_plural(kind)} ({len(items)}):")
        for item in items:
            # a flow kind may map an item through its own settings (the ledger's chart, clock times' cost
            # centres) rather than through the mapping table
            by_settings = next(
                (
                    found
                    for f in spec.flows
                    if (found := get_kind(f.kind).settings_mapping(
                        settings.get(f.settings_key) or {}, kind, item.key, flow_name=f.settings_key
                    )) is not None
                ),
                None,
            )  # fmt: skip
            if by_settings is not None:
                state, mapped = by_settings
                unmapped_total += not mapped
            else:
                rule = rules[kind].get(item.key)
                if rule is None:
                    unmapped_total += 1
                    state = "UNMAPPED: map it or mark it inactive"
                else:
                    state = "inactive (do not import)" if rule.inactive else f"→ {rule.target_key}"
            print(f"  {item.key:<10} {item.name:<30} {state}")
        if kind == "employee":
            print("  (an employee missing here usually has no authorisation group in the POS)")
    print(f"{unmapped_total} unmapped")
    return 1 if unmapped_total else 0


def cmd_mappings_remove(args: argparse.Namespace) -> int:
    spec = spec_for(args.integration)
    from tillflow.sources import get_source

    kind = args.kind or get_source(spec.source).mapping_kind
    with _open_store() as store:
        account = store.get_account(spec.integration, args.key)
        if not store.remove_mapping(account.id, kind, args.source_key):
            raise ConfigError(f"source_key: {args.source_key!r} has no {kind} mapping for {account.key}")
    print(f"{account.key}: {kind} {args.source_key} unmapped")
    return 0


def _connection(conn_id: str):
    """An Airflow Connection for the CLI: env vars, secrets backends and the metadata DB."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    from tillflow.sources.base import ConnectionInfo

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        raise ConfigError(f"connection: {conn_id!r} is not defined; add it with `airflow connections add`") from None
    return ConnectionInfo.from_airflow(conn_id, conn)


def cmd_test_connection(args: argparse.Namespace) -> int:
    """The seeds' "test settings and fetch units": check both sides and list what maps to what."""
    spec = spec_for(args.integration)
    from tillflow.mapping import validate_mapping
    from tillflow.sync import source_client, target_client

    with _open_store() as store:
        account = store.get_account(spec.integration, args.key)
        source = source_client(spec, _connection(account.conn_id))
        items = source.test_connection()
        print(f"{spec.source}: credentials OK for {account.key}; {len(items)} {source.mapping_kind}(s)")
        targets = None
        target_conn = account.target_conn(spec.target)
        target = target_client(spec, _connection(target_conn))
        targets = target.test_connection()
        print(f"{spec.target}: credentials OK; {len(targets)} {target.mapping_kind}(s)")
        names = {t.key: t.name for t in targets}
        report = validate_mapping(store.mappings(account.id, source.mapping_kind).values(), items, targets)
    for item in items:
        if item.key in report.mapped:
            key = report.mapped[item.key]
            state = f"→ {key} {names.get(key, '')}"
        elif item.key in report.inactive:
            state = "inactive (ignored on purpose)"
        elif item.key in report.unknown_targets:
            state = f"→ {report.unknown_targets[item.key]} which {spec.target} does not have: FIX"
        else:
            state = "UNMAPPED: map it or mark it inactive"
        print(f"  {item.key:<10} {item.name:<30} {state}")
    shown = ", ".join(f"{t.key} {t.name}" for t in targets[:50]) + (" …" if len(targets) > 50 else "")
    print(f"{spec.target} {_plural(target.mapping_kind)}: {shown}")
    for key in report.stale:
        print(f"  {key:<10} (mapped, but {spec.source} no longer lists it)")
    if not report.complete:
        print(f"mapping incomplete: {len(report.unmapped)} unmapped, {len(report.unknown_targets)} unknown target(s)")
        return 1
    print("mapping complete")
    return 0


def _parse_amount(value: str, where: str) -> Decimal:
    from tillflow.manual_revenue import parse_amount

    return parse_amount(value, where)


def _parse_date(value: Any, where: str) -> date:
    from tillflow.manual_revenue import parse_day

    return parse_day(value, where)


def _target_keys(spec: IntegrationSpec, account) -> set[str]:
    """The target's own list of keys (Eitje revenue groups, Planday revenue units) for this account."""
    from tillflow.sync import target_client

    client = target_client(spec, _connection(account.target_conn(spec.target)))
    try:
        return {item.key for item in client.test_connection()}
    finally:
        client.close()


def _check_target_keys(spec: IntegrationSpec, store, entries, accounts, *, check: bool) -> list[str]:
    """Problems for entries whose target key the target does not list (naming key and row)."""
    if not check:
        return []
    problems = []
    for key in sorted({e.account_key for e in entries}):
        known = _target_keys(spec, accounts[key])
        for e in entries:
            if e.account_key == key and e.target_key not in known:
                where = f"row {e.row}, column group: " if e.row else ""
                problems.append(
                    f"{where}{spec.target} has no {e.target_key!r} for {key} "
                    f"(known: {', '.join(sorted(known)) or 'none'})"
                )
    return problems


def cmd_revenue_set(args: argparse.Namespace) -> int:
    from tillflow.manual_revenue import Entry, apply, hour_label, parse_hour, plan_changes

    spec = spec_for(args.integration)
    amount = _parse_amount(args.amount, "amount")
    day = _parse_date(args.date, "date")
    with _open_store() as store:
        account = store.get_account(spec.integration, args.key)
        s = account.settings
        hour = parse_hour(args.hour, day, s.timezone, s.business_day_cutoff) if args.hour else None
        entry = Entry(
            account.key, args.target_key, day, hour, amount, hour_label(day, hour, s.timezone, s.business_day_cutoff)
        )
        accounts = {account.key: account}
        problems = _check_target_keys(spec, store, [entry], accounts, check=args.check)
        if problems:
            raise ConfigError(f"{'target key' if not args.hour else 'group'}: {problems[0]}")
        plan = plan_changes(store, accounts, [entry])
        if args.dry_run:
            print("\n".join(plan.lines()) or f"{entry.describe()} (unchanged)")
            print(f"dry run: {len(plan.changes)} change(s), nothing written")
            return 0
        apply(store, accounts, [entry], origin="manual")
    print(f"{entry.describe()} (manual; keep_manual protects it; the next run delivers it)")
    return 0


def cmd_revenue_import(args: argparse.Namespace) -> int:
    """An Excel file, checked whole: any bad row refuses the file (every bad row listed); else one transaction."""
    from tillflow.manual_revenue import apply, plan_changes, read_excel

    spec = spec_for(args.integration)
    path = Path(args.file)
    with _open_store() as store:
        accounts = {a.key: a for a in store.list_accounts(spec.integration)}
        entries, problems = read_excel(path, accounts)
        problems += _check_target_keys(spec, store, entries, accounts, check=args.check)
        if problems:
            for p in problems:
                print(p, file=sys.stderr)
            print(
                f"refused {path.name}: {len(problems)} problem(s); nothing imported (fix the file and import it again)"
            )
            return 1
        plan = plan_changes(store, accounts, entries)
        for line in plan.lines():
            print(line)
        if args.dry_run:
            print(
                f"dry run: {len(plan.changes)} change(s), {plan.unchanged} unchanged, {len(entries)} row(s); "
                "nothing written"
            )
            return 0
        apply(store, accounts, entries, origin="excel")
    print(f"imported {len(entries)} row(s) from {path.name}: {len(plan.changes)} changed, {plan.unchanged} unchanged")
    return 0


def cmd_revenue_list(args: argparse.Namespace) -> int:
    from tillflow.manual_revenue import hour_label

    spec = spec_for(args.integration)
    with _open_store() as store:
        account = store.get_account(spec.integration, args.key)
        window = None
        if args.date_from:
            window = Window(_parse_date(args.date_from, "--from"), _parse_date(args.date_to or args.date_from, "--to"))
        rows = [r for r in store.revenue(account.id, window) if args.all or r["origin"] in ("manual", "excel")]
    s = account.settings
    print(f"{'group':<10} {'date':<10} {'hour':<12} {'amount':>12} origin")
    for r in rows:
        label = hour_label(r["business_date"], r["hour"], s.timezone, s.business_day_cutoff) or "(day)"
        print(f"{r['target_key']:<10} {r['business_date'].isoformat():<10} {label:<12} {r['amount']:>12} {r['origin']}")
    print(f"{len(rows)} row(s)" + ("" if args.all else " entered by hand or imported (--all: every row)"))
    return 0


def cmd_revenue_delete(args: argparse.Namespace) -> int:
    """Undo a hand-entered or imported value: the key takes back what the POS says, mapped again from the pages
    landed for that day (the POS is not called). Refused when the value reached the target and nothing landed
    for the day: run a manual sync for it first."""
    from tillflow.manual_revenue import parse_hour
    from tillflow.replay import landed_value

    spec = spec_for(args.integration)
    day = _parse_date(args.date, "date")
    with _open_store() as store:
        account = store.get_account(spec.integration, args.key)
        s = account.settings
        hour = parse_hour(args.hour, day, s.timezone, s.business_day_cutoff) if args.hour else None
        try:
            pos = landed_value(store, spec, account, args.target_key, day, hour)
        except TillflowError as exc:  # a POS key with data that day is unmapped now: its value is unknown
            raise ConfigError(f"revenue: cannot tell what the POS says for {day}: {exc}") from None
        outcome = store.delete_revenue_by_hand(account.id, args.target_key, day, hour=hour, pos_amount=pos)
    what = f"{args.target_key} on {day}{'' if hour is None else ' hour ' + args.hour}"
    if outcome is None:
        raise ConfigError(f"revenue: no hand-entered value for {what} of {account.key}")
    if outcome == "kept":
        dag_id = next(iter(spec.dags()))
        conf = json.dumps({"accounts": [account.key], "date_from": day.isoformat(), "date_to": day.isoformat()})
        raise ConfigError(
            f"revenue: the hand value for {what} was sent to {spec.target} and nothing from the POS has landed "
            f"for {day}, so there is no POS value to put back; nothing changed. Run a manual sync for that day "
            f"first (airflow dags trigger {dag_id} -c '{conf}'; in write mode overwrite it replaces the hand value "
            "itself), then delete it again"
        )
    if outcome == "restored":
        print(
            f"deleted the hand value for {what}; back to the POS value {pos} (from the pages landed for {day}), "
            "which the next run sends"
        )
    else:
        print(f"deleted the hand value for {what}; it was never sent, so nothing changes at {spec.target}")
    return 0


def _plural(noun: str) -> str:
    """``branch`` → ``branches``, ``location`` → ``locations`` (headings of the mapping lists)."""
    return noun + ("es" if noun.endswith(("ch", "sh", "s", "x")) else "s")


def cmd_replay(args: argparse.Namespace) -> int:
    """Map the pages landed for a date range again (after a mapping change) and deliver — the POS is not called.

    Every flow of the integration that can be replayed (or ``--flow``); ``--dry-run`` prints what the target
    holds now and what would be sent, and changes nothing."""
    from tillflow.flows import get_kind
    from tillflow.replay import format_table, replay_item, why_not_replayable
    from tillflow.sync import WorkItem, conn_ids
    from tillflow.windows import manual_window

    spec = spec_for(args.integration)
    date_from = _parse_date(args.date_from, "--from")
    date_to = _parse_date(args.date_to, "--to") if args.date_to else date_from
    if date_to < date_from:
        raise ConfigError(f"--to: {date_to} lies before --from {date_from}")
    try:
        window = manual_window(date_from, date_to)
    except ValueError as exc:
        raise ConfigError(f"--from/--to: {exc}") from None
    if args.flow:
        flows = [f for f in spec.flows if f.name == args.flow]
        if not flows:
            known = ", ".join(f.name for f in spec.flows)
            raise ConfigError(f"--flow: {spec.integration} has no flow {args.flow!r}; known: {known}")
        why = why_not_replayable(flows[0].kind)
        if why:
            raise ConfigError(f"--flow: {why}")
    else:
        flows = [f for f in spec.flows if not why_not_replayable(f.kind)]
        if not flows:
            raise ConfigError(f"replay: {why_not_replayable(spec.flows[0].kind)}")
    run_id = f"replay__{datetime.now(UTC):%Y%m%dT%H%M%S}_{args.key}"
    results = []
    with _open_store() as store:
        account = store.get_account(spec.integration, args.key)
        mode = account.settings.write_mode
        if args.overwrite:
            mode = "overwrite"
        elif args.keep_existing:
            mode = "insert_only"
        for flow in flows:
            item = WorkItem(
                account.id,
                account.key,
                account.name,
                flow.name,
                window.start,
                window.end,
                mode,
                force_delivery=bool(args.overwrite),
            )
            if not store.landed_for_window(account.id, get_kind(flow.kind).name, window):
                if args.flow or len(flows) == 1:
                    raise ConfigError(
                        f"--from/--to: nothing landed for {account.key} {flow.name} in {window}; a replay never "
                        "calls the POS — run the flow for these dates first"
                    )
                print(f"{account.key} {flow.name}: nothing landed in {window}; skipped")
                continue
            _, target = conn_ids(spec, flow, account)
            if not args.dry_run:
                store.activity_start("cli", run_id, account.id, flow.name, window)
            try:
                result = replay_item(
                    store, spec, item, run_id=run_id, target_conn=lambda t=target: _connection(t), dry_run=args.dry_run
                )
            except Exception as exc:
                if not args.dry_run:
                    store.activity_finish(run_id, account.id, flow.name, "failed", error=one_line(exc))
                raise
            if not args.dry_run:
                detail = f"replay from raw landing (CLI): {result.pages} landed page(s), no POS call"
                store.activity_update(run_id, account.id, flow.name, status="success", finished=True, detail=detail)
            results.append(result)
    rows = [r for res in results for r in res.rows]
    print(format_table(rows))
    for res in results:
        counts = " ".join(f"{k}={v}" for k, v in res.counts.items())
        verb = "would send" if args.dry_run else "sent"
        print(
            f"{res.account} {res.flow}: replayed {res.pages} landed page(s) for {res.window} (no POS call): "
            f"{verb} {res.would_send}, unchanged {len(res.rows) - res.would_send}; {counts}"
        )
    if args.dry_run:
        print("dry run: nothing written, nothing sent")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Per account and business day: the POS total tillflow holds against what the target holds (read back).
    Prints POS, target, diff and status per day; records the check (tillflow.reconciliation, activity log)
    and mails drift to the integration's owners (unless --no-mail). Exit 1 when a day drifts or a check failed."""
    spec = spec_for(args.integration)
    from tillflow.reconcile import reconcilable_flow, reconcile, table

    if reconcilable_flow(spec) is None:
        raise ConfigError(f"--integration: {spec.integration} has no revenue or ledger flow to reconcile")
    window = None
    if args.date_from or args.date_to:
        start = _parse_date(args.date_from or args.date_to, "--from")
        end = _parse_date(args.date_to or args.date_from, "--to")
        if end < start:
            raise ConfigError(f"--to: {end} is before --from {start}")
        window = Window(start, end)
    run_id = f"cli__reconcile__{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    with _open_store() as store:
        checks = reconcile(
            store,
            spec,
            _connection,
            run_id=run_id,
            dag_id="cli",
            accounts=args.account or None,
            window=window,
            notify=not args.no_mail,
        )
    print(table(checks))
    drift = sum(len(c.drift) for c in checks)
    failed = [c for c in checks if c.error]
    print(
        f"{spec.integration}: {sum(len(c.days) for c in checks)} day(s) of {len(checks)} account(s) checked, "
        f"{drift} drift, {len(failed)} failed ({run_id})"
    )
    return 1 if drift or failed else 0


def cmd_activity(args: argparse.Namespace) -> int:
    """The activity log, newest first: per account and flow, from which system to which, the window, what
    happened and the counts."""
    with _open_store() as store:
        rows = store.activity(integration=args.integration, account_key=args.key, flow=args.flow, limit=args.limit)
    if args.json:
        print(json.dumps([dict(r) for r in rows], indent=2, default=str))
        return 0
    for r in rows:
        route = f"{r['source'] or '?'} -> {r['target'] or '?'}"
        window = f"{r['window_start']}..{r['window_end']}" if r["window_start"] else "-"
        counts = " ".join(f"{k}={r[k]}" for k in ("fetched", "upserted", "delivered", "skipped", "rejected") if r[k])
        print(
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}  {r['account_key']:<16} {r['flow']:<10} {route:<28} {window:<23} "
            f"{r['status']:<13} {counts}{'  ' + r['error'] if r['error'] else ''}"
        )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from tillflow.store import ensure_schema
    from tillflow.store.db import database_url

    applied = ensure_schema()
    url = database_url()
    done = f"applied migration(s) {', '.join(f'{v:03d}' for v in applied)}; " if applied else ""
    print(f"{done}tillflow schema is up to date ({url.split('@')[-1]})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tillflow.demo import main as demo_main

    return demo_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tillflow", description=__doc__.splitlines()[0])
    p.add_argument("-i", "--integration", help="integration (DAG id); optional when only one exists")
    sub = p.add_subparsers(dest="command", required=True)

    acc = sub.add_parser("accounts", help="add, update, pause, resume, list accounts").add_subparsers(
        dest="action", required=True
    )
    for action in ("add", "update"):
        a = acc.add_parser(action)
        a.add_argument("key", help="account key: lower-case letters, digits, - and _")
        a.add_argument("--name")
        a.add_argument("--conn-id", help="Airflow connection with the POS credentials (default <source>_<key>)")
        a.add_argument("--target-conn-id", help="Airflow connection of the target (default <target>_<key>)")
        a.add_argument("--timezone")
        a.add_argument("--vat", help="incl or excl")
        a.add_argument("--write-mode", help="overwrite, insert_only or keep_manual")
        a.add_argument("--lookback", type=str, help="days back, 1–31")
        a.add_argument("--run-time", help="HH:00, 05:00 at the earliest")
        a.add_argument("--weekdays", help="fetch days, e.g. mon,tue,fri")
        a.add_argument("--start-date", help="YYYY-MM-DD; no data is fetched before it")
        a.add_argument("--cutoff", help="business-day cutoff HH:MM (default 05:00)")
        a.add_argument("--owner-email")
        a.add_argument(
            "--flow-setting",
            action="append",
            metavar="FLOW.KEY=VALUE",
            help="a setting of one flow, JSON or text: clock_times.notify_email=ops@bar.example, "
            'revenue.enabled=false, \'clock_times.cost_centers={"10": "skip"}\' (repeatable)',
        )
        a.add_argument(
            "--no-check",
            dest="check",
            action="store_false",
            help="do not check department ids against the target's own list",
        )
        a.set_defaults(func=lambda ns, u=(action == "update"): cmd_accounts_add(ns, update=u))
    for action, active in (("pause", False), ("resume", True)):
        a = acc.add_parser(action)
        a.add_argument("key")
        a.set_defaults(func=lambda ns, act=active: cmd_accounts_active(ns, active=act))
    a = acc.add_parser("list")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_accounts_list)
    a = acc.add_parser("show")
    a.add_argument("key")
    a.set_defaults(func=cmd_accounts_show)

    mp = sub.add_parser("mappings", help="map source keys to target keys").add_subparsers(dest="action", required=True)
    a = mp.add_parser("set")
    a.add_argument("key")
    a.add_argument("source_key")
    a.add_argument("target_key", nargs="?")
    a.add_argument("--inactive", action="store_true", help="ignore this source key on purpose")
    a.add_argument("--kind")
    a.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="do not check the target key against the target's own list",
    )
    a.set_defaults(func=cmd_mappings_set)
    a = mp.add_parser("list", help="what the POS lists (per kind), its mapping and what is unmapped")
    a.add_argument("key")
    a.set_defaults(func=cmd_mappings_list)
    a = mp.add_parser("remove")
    a.add_argument("key")
    a.add_argument("source_key")
    a.add_argument("--kind")
    a.set_defaults(func=cmd_mappings_remove)

    a = sub.add_parser("test-connection", help="check credentials, list POS items and their mapping")
    a.add_argument("key")
    a.set_defaults(func=cmd_test_connection)

    rv = sub.add_parser("revenue", help="hand-entered revenue").add_subparsers(dest="action", required=True)
    a = rv.add_parser("set", help="enter one value by hand (per day, or per hour with --hour)")
    a.add_argument("key")
    a.add_argument("target_key", help="the target's key: an Eitje revenue group id, a Planday revenue unit id")
    a.add_argument("date", help="business date YYYY-MM-DD")
    a.add_argument("amount")
    a.add_argument("--hour", help="local clock hour (14, 14:00; 02:00+01:00 on the autumn DST day)")
    a.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    a.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="do not check the target key against the target's own list",
    )
    a.set_defaults(func=cmd_revenue_set)
    a = rv.add_parser("import", help="import an .xlsx file, all or nothing")
    a.add_argument("file", help="Excel file with columns account, group, date, hour (optional), amount")
    a.add_argument("--dry-run", action="store_true", help="check the file and show what would change")
    a.add_argument("--no-check", dest="check", action="store_false")
    a.set_defaults(func=cmd_revenue_import)
    a = rv.add_parser("list", help="values entered by hand or imported (--all: every row)")
    a.add_argument("key")
    a.add_argument("--from", dest="date_from")
    a.add_argument("--to", dest="date_to")
    a.add_argument("--all", action="store_true")
    a.set_defaults(func=cmd_revenue_list)
    a = rv.add_parser("delete", help="undo a hand-entered or imported value")
    a.add_argument("key")
    a.add_argument("target_key")
    a.add_argument("date")
    a.add_argument("--hour")
    a.set_defaults(func=cmd_revenue_delete)

    a = sub.add_parser(
        "replay", help="re-map landed payloads (no POS call) after a mapping change and deliver (--dry-run: preview)"
    )
    a.add_argument("key")
    a.add_argument("--from", dest="date_from", required=True, help="first business date YYYY-MM-DD")
    a.add_argument("--to", dest="date_to", help="last business date (default: --from)")
    a.add_argument("--flow", help="one flow of the integration (default: every flow that can be replayed)")
    how = a.add_mutually_exclusive_group()
    how.add_argument("--overwrite", action="store_true", help="overwrite existing values and re-send the window")
    how.add_argument("--keep-existing", action="store_true", help="keep values already held (insert_only)")
    a.add_argument(
        "--dry-run", action="store_true", help="show what the target holds now and what would be sent; change nothing"
    )
    a.set_defaults(func=cmd_replay)

    a = sub.add_parser("reconcile", help="POS totals per account and day against what the target holds")
    a.add_argument("-i", "--integration", default=argparse.SUPPRESS, help="integration (DAG id)")
    a.add_argument("--account", action="append", help="account key (repeatable); default: every account")
    a.add_argument("--from", dest="date_from", help="first business date; default: the last 7 settled days")
    a.add_argument("--to", dest="date_to", help="last business date; default: --from")
    a.add_argument("--no-mail", action="store_true", help="do not mail drift to the integration's owners")
    a.set_defaults(func=cmd_reconcile)

    a = sub.add_parser("activity", help="the activity log: per flow, from where to where, window, outcome, counts")
    a.add_argument("key", nargs="?", help="one account (default: every account)")
    a.add_argument("--flow", help="one flow (orders, products, stock, revenue…)")
    a.add_argument("--limit", type=int, default=50, help="newest N rows (default 50)")
    a.add_argument("--json", action="store_true", help="as JSON")
    a.set_defaults(func=cmd_activity)

    a = sub.add_parser("migrate", help="create/upgrade the tillflow schema")
    a.set_defaults(func=cmd_migrate)

    a = sub.add_parser("demo", help="seed demo accounts and run ajour_to_planday once through Airflow")
    a.add_argument("--seed-only", action="store_true", help="seed accounts and connections, do not run")
    a.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "lookback", None) is not None:
        try:
            args.lookback = int(args.lookback)
        except ValueError:
            print(f"error: lookback_days: expected a whole number, got {args.lookback!r}", file=sys.stderr)
            return 2
    try:
        if getattr(args, "integration", None) is None and getattr(args, "key", None):
            args.integration = _integration_of(args.key, new=getattr(args, "action", None) == "add")
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AuthError as exc:
        print(f"error: credentials refused: {one_line(exc)}", file=sys.stderr)
        return 1
    except TillflowError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
