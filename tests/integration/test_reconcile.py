"""Reconciliation against the stand-ins and real PostgreSQL: after a sync the POS totals equal what each
target holds (no drift); a value changed in the target afterwards (by hand, as a person would) is drift —
a reconciliation row, an activity row naming day and amounts, one mail to the owners — and the CLI prints
it with a non-zero exit code. Targets: Planday (daily), Eitje (hourly), Shiftbase (team days), Pennylane."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from runs import run_flows
from tillflow.reconcile import reconcile, table
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.specs import load_spec, parse_settings
from tillflow.sync import RunParams

ROOT = Path(__file__).resolve().parents[2]
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "read_timeout": 5, "max_retry_after": 1}
WEEK = Window(date(2026, 11, 9), date(2026, 11, 15))


def spec_of(name):
    return load_spec(ROOT / "dags" / f"{name}.yaml")


def smtp(mail) -> ConnectionInfo:
    return ConnectionInfo(
        conn_id="smtp_default",
        host="127.0.0.1",
        port=mail.port,
        extra={"disable_tls": True, "disable_ssl": True, "from_email": "tillflow@localhost"},
    )


def sync(store, spec, conns, window, *, flow=None, run_id):
    params = RunParams(date_from=window.start, date_to=window.end)
    _, outcomes = run_flows(store, spec, conns, run_id=run_id, flows=[flow or spec.flows[0].name], params=params)
    assert [o.status for o in outcomes] == ["success"], [o.error for o in outcomes]


def rows(store, run_id):
    out = store.conn.execute(
        "SELECT business_date, pos_total, target_total, diff, status, detail FROM tillflow.reconciliation"
        " WHERE run_id = %s ORDER BY business_date",
        (run_id,),
    ).fetchall()
    store.conn.commit()
    return out


def reconcile_activity(store, run_id):
    return [r for r in store.activity(run_id=run_id) if r["flow"] == "reconcile"]


# ------------------------------------------------------------------------------------------ Ajour → Planday


def test_planday_matches_after_a_sync_and_a_hand_edit_is_drift_logged_and_mailed(store, sandbox, mail, ajour_account):
    spec, (account, conns) = spec_of("ajour_to_planday"), ajour_account(http=FAST)
    conns["smtp_default"] = smtp(mail)
    sync(store, spec, conns, WEEK, run_id="sync-planday")

    checks = reconcile(store, spec, conns.__getitem__, run_id="rec-1", window=WEEK)
    print(table(checks))
    (check,) = checks
    assert check.status == "success" and len(check.days) == 7 and not check.drift
    canonical = sum((r["amount"] for r in store.revenue(account.id, WEEK)), Decimal(0))
    assert sum((d.pos for d in check.days), Decimal(0)) == canonical > 0
    assert all(d.status in ("ok", "explained") for d in check.days)
    assert [r["status"] for r in reconcile_activity(store, "rec-1")] == ["success"]
    assert mail.messages == []

    # someone types another turnover for unit 1001 on the 11th in Planday itself
    held = requests.get(f"{sandbox.planday_url}/_sandbox/state", timeout=5).json()["portals"]["nord"]["revenue"]
    before = next(Decimal(str(r["turnover"])) for r in held if r["revenueUnitId"] == 1001 and r["date"] == "2026-11-11")
    requests.post(
        f"{sandbox.planday_url}/_sandbox/portals/nord/revenue",
        json={"revenueUnitId": 1001, "date": "2026-11-11", "turnover": "12.34"},
        timeout=5,
    ).raise_for_status()

    (check,) = reconcile(store, spec, conns.__getitem__, run_id="rec-2", window=WEEK)
    (drift,) = check.drift
    assert drift.business_date == date(2026, 11, 11)
    assert drift.diff == Decimal("12.34") - before
    assert "1001: POS" in drift.detail and "planday 12.34" in drift.detail
    got = {r["business_date"]: r for r in rows(store, "rec-2")}
    assert len(got) == 7 and got[date(2026, 11, 11)]["status"] == "drift"
    assert got[date(2026, 11, 11)]["diff"] == drift.diff
    (act,) = reconcile_activity(store, "rec-2")
    assert act["status"] == "drift" and "2026-11-11" in act["detail"] and "planday 12.34" in act["detail"]
    (msg,) = mail.messages
    assert msg["To"] == "data-team@tillflow.example"
    assert "ajour_to_planday: drift on 1 day(s) in 1 account(s)" in msg["Subject"]
    body = msg.get_body(preferencelist=("plain",)).get_content()
    assert "2026-11-11" in body and "12.34" in body and "cafe_nord" in body

    # a 409 "no opening day" (recorded skipped) is explained, never drift: a Monday for the Takeaway unit
    from tillflow.records import TargetRow

    store.set_revenue_by_hand(account.id, "1003", date(2026, 11, 9), Decimal("50.00"))
    row = TargetRow(target_key="1003", business_date=date(2026, 11, 9), hour=None, amount=Decimal("50.00"))
    store.record_delivery(account.id, row, "skipped", detail="No opening day on date 2026-11-09")
    requests.post(
        f"{sandbox.planday_url}/_sandbox/portals/nord/revenue",
        json={"revenueUnitId": 1001, "date": "2026-11-11", "turnover": str(before)},
        timeout=5,
    ).raise_for_status()
    (check,) = reconcile(
        store, spec, conns.__getitem__, run_id="rec-3", window=Window(date(2026, 11, 9), date(2026, 11, 11))
    )
    statuses = {d.business_date: d.status for d in check.days}
    assert statuses[date(2026, 11, 9)] == "explained" and "No opening day" in check.days[0].detail
    assert statuses[date(2026, 11, 11)] == "ok" and not check.drift


def test_cli_prints_each_day_and_exits_non_zero_on_drift(store, sandbox, mail, capsys, ajour_account):
    from tillflow.cli import main

    spec, (account, conns) = spec_of("ajour_to_planday"), ajour_account(http=FAST)
    sync(store, spec, conns, WEEK, run_id="sync-cli")
    args = ["reconcile", "-i", spec.integration, "--account", account.key, "--from", "2026-11-10", "--to", "2026-11-12"]
    assert main([*args, "--no-mail"]) == 0
    out = capsys.readouterr().out
    assert out.count("cafe_nord") == 3 and "2026-11-10" in out and "2026-11-12" in out
    assert "3 day(s) of 1 account(s) checked, 0 drift, 0 failed" in out

    requests.post(
        f"{sandbox.planday_url}/_sandbox/portals/nord/revenue",
        json={"revenueUnitId": 1002, "date": "2026-11-12", "turnover": "0.00"},
        timeout=5,
    ).raise_for_status()
    assert main([*args, "--no-mail"]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "2026-11-12" in x)
    assert "drift" in line and "1002: POS" in line and "planday 0.00" in line
    assert "1 drift" in out
    assert mail.messages == []  # --no-mail
    assert main(["reconcile", "-i", spec.integration, "--from", "2026-11-12", "--to", "2026-11-10"]) == 2


# ------------------------------------------------------------------------------------------ Kassatellen → Eitje


def test_eitje_hourly_totals_match_and_an_edited_hour_is_drift(store, sandbox, mail):
    spec = spec_of("kassatellen_to_eitje")
    key = "cafe"
    account = store.upsert_account(
        spec.integration,
        key,
        name="Café",
        conn_id=f"kassatellen_{key}",
        target_conn_id=f"eitje_{key}",
        settings=parse_settings({"timezone": "Europe/Amsterdam", "lookback_days": 1}, spec=spec),
    )
    for src, dst in {"11": "501", "12": "502", "13": None}.items():
        store.set_mapping(account.id, "revenue_group", src, dst)
    eitje_headers = {
        "Partner-Username": "tillflow",
        "Partner-Password": "pp-tillflow",
        "Api-Username": f"env-{key}",
        "Api-Password": f"pw-env-{key}",
    }
    conns = {
        f"kassatellen_{key}": ConnectionInfo(
            conn_id=f"kassatellen_{key}",
            host=sandbox.kassatellen_url,
            login=f"{key}@example.nl",
            password=f"pw-{key}@example.nl",
            extra=FAST,
        ),
        f"eitje_{key}": ConnectionInfo(
            conn_id=f"eitje_{key}",
            host=sandbox.eitje_url,
            login=f"env-{key}",
            password=f"pw-env-{key}",
            extra={"partner_username": "tillflow", "partner_password": "pp-tillflow", **FAST},
        ),
        "smtp_default": smtp(mail),
    }
    days = Window(date(2026, 10, 24), date(2026, 10, 26))  # the autumn DST change falls in the 24th's business day
    sync(store, spec, conns, days, run_id="sync-eitje")
    (check,) = reconcile(store, spec, conns.__getitem__, run_id="rec-eitje-1", window=days)
    assert check.status == "success" and [d.status for d in check.days] == ["ok"] * 3
    assert all(d.pos == d.target > 0 for d in check.days)

    recs = requests.get(
        f"{sandbox.eitje_url}/open_api/revenue_groups/revenues",
        headers=eitje_headers,
        params={"filters[start_date]": "2026-10-25", "filters[end_date]": "2026-10-25"},
        timeout=5,
    ).json()["revenues"]
    rec = next(r for r in recs if r["revenue_group_id"] == 502 and r["hour_start"])
    requests.put(  # a manager corrects one hour in Eitje
        f"{sandbox.eitje_url}/open_api/revenue_groups/502/revenues",
        headers={**eitje_headers, "Content-Type": "application/json"},
        data=json.dumps({"date": rec["date"], "hour_start": rec["hour_start"], "amount": 0}),
        timeout=5,
    ).raise_for_status()
    (check,) = reconcile(store, spec, conns.__getitem__, run_id="rec-eitje-2", window=days)
    (drift,) = check.drift
    assert drift.business_date == date(2026, 10, 25) and drift.diff == -Decimal(str(rec["amount"]))
    assert "502 " in drift.detail and "eitje 0.00" in drift.detail
    assert [r["status"] for r in reconcile_activity(store, "rec-eitje-2")] == ["drift"]
    assert len(mail.messages) == 1 and "kassatellen_to_eitje" in mail.messages[0]["Subject"]


# ------------------------------------------------------------------------------------------ MplusKASSA → Shiftbase


def test_shiftbase_team_days_match_and_an_edited_turnover_is_drift(store, sandbox, mail):
    from sandbox.shiftbase import ShiftbaseApp

    spec = spec_of("mpluskassa_to_shiftbase")
    key, port = "centrum", 7001
    ident = f"shop{port}"
    org = ShiftbaseApp.org_for(f"sb-{key}")
    account = store.upsert_account(
        spec.integration,
        key,
        name="Centrum",
        conn_id=f"mpluskassa_{key}",
        target_conn_id=f"shiftbase_{key}",
        settings=parse_settings(
            {"timezone": "Europe/Amsterdam", "vat": "excl", "lookback_days": 1, "start_date": "2026-01-01"}, spec=spec
        ),
    )
    store.set_mapping(account.id, "branch", "1", org["teams"][0]["id"])
    store.set_mapping(account.id, "branch", "2", org["teams"][2]["id"])
    store.set_mapping(account.id, "branch", "3", None)
    conns = {
        f"mpluskassa_{key}": ConnectionInfo(
            conn_id=f"mpluskassa_{key}",
            host=f"{sandbox.mpluskassa_url}/{port}",
            login=ident,
            password=f"secret-{ident}",
            extra=FAST,
        ),
        f"shiftbase_{key}": ConnectionInfo(
            conn_id=f"shiftbase_{key}", host=f"{sandbox.shiftbase_url}/api", password=f"sb-{key}", extra=FAST
        ),
        "smtp_default": smtp(mail),
    }
    days = Window(date.today() - timedelta(days=3), date.today() - timedelta(days=2))
    sync(store, spec, conns, days, flow="revenue", run_id="sync-shiftbase")
    (check,) = reconcile(store, spec, conns.__getitem__, run_id="rec-sb-1", window=days)
    assert check.status == "success" and len(check.days) == 2 and not check.drift
    assert all(d.pos == d.target for d in check.days) and any(d.pos > 0 for d in check.days)

    api = {"Authorization": f"API sb-{key}", "Content-Type": "application/json"}
    listed = requests.get(
        f"{sandbox.shiftbase_url}/api/team_days",
        headers=api,
        params={"min_date": days.end.isoformat(), "max_date": days.end.isoformat()},
        timeout=5,
    ).json()["data"]
    team_day = next(i["TeamDay"] for i in listed if i["TeamDay"].get("turnover") not in (None, "0.00"))
    requests.put(
        f"{sandbox.shiftbase_url}/api/team_days/{team_day['id']}", headers=api, json={"turnover": "1.00"}, timeout=5
    ).raise_for_status()
    (check,) = reconcile(store, spec, conns.__getitem__, run_id="rec-sb-2", window=days)
    (drift,) = check.drift
    assert drift.business_date == days.end
    assert drift.diff == Decimal("1.00") - Decimal(team_day["turnover"])
    assert f"{team_day['team_id']}: POS" in drift.detail and "shiftbase 1.00" in drift.detail
    assert [r["status"] for r in reconcile_activity(store, "rec-sb-2")] == ["drift"]
    assert len(mail.messages) == 1


# ------------------------------------------------------------------------------------------ Kash.click → Pennylane


def test_pennylane_books_match_the_events_and_a_duplicate_entry_is_drift(store, sandbox, mail):
    spec = spec_of("kashclick_to_pennylane")
    key, day = "bistro", date.today() - timedelta(days=2)
    requests.post(f"{sandbox.kashclick_url}/_sandbox/shops/{key}", json={"orders_per_day": 3}, timeout=5)
    account = store.upsert_account(
        spec.integration,
        key,
        name="Bistro",
        conn_id=f"kashclick_{key}",
        target_conn_id=f"pennylane_{key}",
        settings=parse_settings(
            {
                "timezone": "Europe/Paris",
                "lookback_days": 1,
                "flows": {"ledger": {"fiscal_year_start": str(day - timedelta(days=2))}},
            },
            spec=spec,
        ),
    )
    pennylane = ConnectionInfo(
        conn_id=f"pennylane_{key}",
        host=f"{sandbox.pennylane_url}/api/external/v2",
        login="tillflow-app",
        password=f"prt-{key}",
        extra={"client_secret": "cs-test", **FAST},
    )
    conns = {
        f"kashclick_{key}": ConnectionInfo(
            conn_id=f"kashclick_{key}", host=sandbox.kashclick_url, login=key, password=f"pw-{key}", extra=FAST
        ),
        f"pennylane_{key}": pennylane,
        "smtp_default": smtp(mail),
    }
    window = Window(day, day)
    sync(store, spec, conns, window, run_id="sync-ledger")
    (check,) = reconcile(store, spec, conns.__getitem__, run_id="rec-pl-1", window=window)
    (d,) = check.days
    assert check.status == "success" and d.status == "ok" and d.pos == d.target > 0
    company = requests.get(f"{sandbox.pennylane_url}/_sandbox/companies/{key}", timeout=10).json()["company"]
    entries = company.get("entries") or company.get("ledger_entries")
    books = sum(Decimal(line["debit"]) for e in entries for line in e["ledger_entry_lines"])
    assert d.target == books  # nothing reversed yet: every entry counts
    # like with like, from the POS day itself: each order's total, each payment, and each till closing's entry
    # (its global lines carry the expected takings once; a cash difference adds its own amount)
    pos = requests.get(f"{sandbox.kashclick_url}/_sandbox/shops/{key}/day/{day}", timeout=10).json()
    closings = [(Decimal(m["expected"]), Decimal(m["counted"])) for c in pos["closings"] for m in c["methods"]]
    assert d.pos == (
        sum(Decimal(o["totalIncl"]) for o in pos["orders"])
        + sum(Decimal(p["amount"]) for p in pos["payments"])
        + sum(expected + abs(counted - expected) for expected, counted in closings)
    )

    # an entry posted a second time with the same piece number (what the outbox exists to prevent)
    from tillflow.targets.pennylane import PennylaneClient

    posted = store.conn.execute(
        "SELECT posting_key, payload FROM tillflow.outbox WHERE account_id = %s AND state = 'confirmed'"
        " ORDER BY id LIMIT 1",
        (account.id,),
    ).fetchone()
    store.conn.commit()
    PennylaneClient.from_connection(pennylane).post(posted["payload"], posted["posting_key"])
    (check,) = reconcile(store, spec, conns.__getitem__, run_id="rec-pl-2", window=window)
    (drift,) = check.drift
    extra = sum(Decimal(line["debit"]) for line in posted["payload"]["lines"])
    assert drift.diff == extra and f"posted twice: {posted['posting_key']}" in drift.detail
    assert [r["status"] for r in reconcile_activity(store, "rec-pl-2")] == ["drift"]
    (msg,) = mail.messages
    assert "kashclick_to_pennylane" in msg["Subject"] and "posted twice" in msg.get_body().get_content()


def test_a_target_that_cannot_be_read_fails_that_account_only(store, sandbox, mail, ajour_account):
    spec, (_, conns) = spec_of("ajour_to_planday"), ajour_account(http=FAST)
    other, conns2 = ajour_account("bar_syd", company="2002", client="syd", http=FAST)
    conns = {**conns, **conns2, "smtp_default": smtp(mail)}
    conns["planday_cafe_nord"] = ConnectionInfo(
        conn_id="planday_cafe_nord", host=sandbox.planday_url, login="nord", password="rt-wrong", extra=FAST
    )
    checks = reconcile(store, spec, conns.__getitem__, run_id="rec-auth", window=Window(WEEK.start, WEEK.start))
    by_key = {c.account.key: c for c in checks}
    assert by_key["cafe_nord"].status == "failed" and "refused" in by_key["cafe_nord"].error
    assert by_key["bar_syd"].status == "success"  # nothing synced, nothing held: 0 = 0
    acts = {r["account_key"]: r for r in reconcile_activity(store, "rec-auth")}
    assert acts["cafe_nord"]["status"] == "failed" and acts["bar_syd"]["status"] == "success"
    assert mail.messages == []  # a failure is the task's (FailureEmail), not a drift alert
    with pytest.raises(Exception, match="unknown account"):
        reconcile(store, spec, conns.__getitem__, run_id="rec-x", accounts=["nope"])


# ------------------------------------------------------------------------------------------ pure parts


def test_default_window_is_the_seven_settled_days_before_the_last_closed_one():
    from tillflow.reconcile import default_window

    settings = parse_settings({"timezone": "Europe/Amsterdam", "business_day_cutoff": "05:00"})
    monday_six = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # Monday 06:00 in Amsterdam: Sunday has closed
    assert default_window(settings, monday_six) == Window(date(2026, 11, 15), date(2026, 11, 21))


def test_outlet_extras_name_only_flows_that_moved_rows():
    from types import SimpleNamespace

    from tillflow.assets import flow_asset, outlet_extras

    spec = spec_of("mpluskassa_to_shiftbase")

    def outcome(key, flow, status="success", **counts):
        item = SimpleNamespace(
            account_key=key, flow=flow, window_start=date(2026, 11, 10), window_end=date(2026, 11, 11)
        )
        return SimpleNamespace(item=item, status=status, counts=counts)

    extras = outlet_extras(
        spec,
        [
            outcome("a", "revenue", upserted=2, unchanged=5, delivered=2),
            outcome("b", "revenue", upserted=0, unchanged=7, delivered=0),  # nothing moved: not named
            outcome("c", "clock_times", status="failed", upserted=3),  # failed: not named
            outcome("d", "clock_times", upserted=0, delivered=0),
        ],
        run_id="r1",
    )
    assert list(extras) == [flow_asset(spec.integration, "revenue").uri]
    extra = extras["tillflow://mpluskassa_to_shiftbase/revenue"]
    assert extra["accounts"] == ["a"] and extra["rows"] == 4 and extra["run_id"] == "r1"
    assert (extra["window_start"], extra["window_end"]) == ("2026-11-10", "2026-11-11")
