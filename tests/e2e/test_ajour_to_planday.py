"""End to end: ajour_to_planday through Airflow (``dag.test()``) against the sandbox, on real PostgreSQL.

Expected values are computed here straight from the Ajour stand-in (not through tillflow), so a
client bug cannot hide behind the same bug in the check.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "ajour_to_planday"
MAPPING = {"L1": "1001", "L2": "1002", "L3": "1001", "L4": "1003"}  # the terrace feeds the restaurant unit
FAST_HTTP = {"backoff_base": 0.05, "backoff_max": 0.5, "max_retry_after": 1.5, "read_timeout": 2}


@pytest.fixture(scope="module")
def build(airflow_db, mail_server):
    """A factory of the real DAG from the real spec, with quick task retries for the test clock."""
    from tillflow.factory import build_dag
    from tillflow.specs import load_spec

    spec = load_spec(ROOT / "dags" / f"{DAG_ID}.yaml")

    def make(**overrides):
        return build_dag(spec.model_copy(update={"retry_delay_seconds": 1, **overrides}))

    return make


def add_account(store, sandbox, key, *, company, client, password=None, mapping=MAPPING, **settings):
    from tillflow.specs import parse_settings

    os.environ[f"AIRFLOW_CONN_AJOUR_{key.upper()}"] = json.dumps(
        {
            "conn_type": "http",
            "host": sandbox.ajour_url,
            "login": "api",
            "password": password or f"pw-{company}",
            "schema": f"{key}_db",
            "extra": {"company_id": company, **FAST_HTTP},
        }
    )
    os.environ[f"AIRFLOW_CONN_PLANDAY_{key.upper()}"] = json.dumps(
        {
            "conn_type": "http",
            "host": sandbox.planday_url,
            "login": client,
            "password": f"rt-{client}",
            "extra": FAST_HTTP,
        }
    )
    base = {"timezone": "Europe/Copenhagen", "start_date": "2026-01-01", "lookback_days": 3}
    account = store.upsert_account(
        DAG_ID,
        key,
        name=key.replace("_", " ").title(),
        conn_id=f"ajour_{key}",
        target_conn_id=f"planday_{key}",
        settings=parse_settings({**base, **settings}),
    )
    for loc, unit in mapping.items():
        store.set_mapping(account.id, "location", loc, unit)
    return account


def expected(sandbox, company, day_from, day_to, *, vat="incl", mapping=MAPPING):
    """Sum per unit and day, computed directly from the Ajour stand-in."""
    r = requests.get(
        f"{sandbox.ajour_url}/api/v1/revenue",
        params={"from": day_from, "to": day_to},
        headers={"X-Ajour-Company": company, "X-Ajour-Database": "x"},
        auth=("api", f"pw-{company}"),
        timeout=10,
    )
    r.raise_for_status()
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in r.json()["days"]:
        unit = mapping.get(row["locationId"])
        if unit:
            out[(unit, row["date"])] += Decimal(row["totalInclVat" if vat == "incl" else "totalExclVat"])
    return dict(out)


def planday(sandbox, client):
    state = requests.get(f"{sandbox.planday_url}/_sandbox/state", timeout=10).json()["portals"].get(client, {})
    return {
        (str(r["revenueUnitId"]), r["date"]): (Decimal(r["turnover"]), r["writes"], r["manual"])
        for r in state.get("revenue", [])
    }


def is_monday(day: str) -> bool:
    return date.fromisoformat(day).weekday() == 0


def run(dag, conf=None, logical_date=None):
    return dag.test(run_conf=conf or {}, logical_date=logical_date)


def ti_states(dagrun):
    return {(ti.task_id, ti.map_index): ti.state for ti in dagrun.get_task_instances()}


SYD_MAPPING = {"L1": "1001", "L2": "1002", "L3": "1003", "L4": None}  # Terrace → Takeaway unit, Takeaway off


def test_manual_range_lands_every_day_once_and_rerun_changes_nothing(store, sandbox, build, mail):
    a = add_account(store, sandbox, "cafe_nord", company="1001", client="nord", vat="incl")
    b = add_account(
        store,
        sandbox,
        "bistro_syd",
        company="2002",
        client="syd",
        vat="excl",
        write_mode="overwrite",
        mapping=SYD_MAPPING,
    )
    dag = build()
    conf = {"date_from": "2026-11-09", "date_to": "2026-11-22"}  # two weeks: two Mondays
    dr = run(dag, conf)
    assert dr.state == "success", ti_states(dr)
    labels = [ti.rendered_map_index for ti in dr.get_task_instances() if ti.task_id == "run"]
    assert labels == ["shard 1/1: 2 account(s) bistro_syd…cafe_nord"]  # few accounts: one shard runs both

    closed_by_client = {}
    for account, company, client, vat, mapping in (
        (a, "1001", "nord", "incl", MAPPING),
        (b, "2002", "syd", "excl", SYD_MAPPING),
    ):
        want = expected(sandbox, company, "2026-11-09", "2026-11-22", vat=vat, mapping=mapping)
        got = planday(sandbox, client)
        closed = [k for k in want if k[0] == "1003" and is_monday(k[1])]  # Planday: no opening day → 409
        assert {k: v[0] for k, v in got.items()} == {k: v for k, v in want.items() if k not in closed}
        assert all(v[1] == 1 for v in got.values()), "a day was written twice"
        states = {(d["target_key"], d["business_date"].isoformat()): d for d in store.delivery_state(account.id)}
        assert all(states[k]["status"] == "skipped" and "No opening day" in states[k]["detail"] for k in closed)
        closed_by_client[client] = closed
    assert closed_by_client == {"nord": [], "syd": [("1003", "2026-11-09"), ("1003", "2026-11-16")]}
    act = {r["account_key"]: r for r in store.activity(run_id=dr.run_id)}
    assert act["cafe_nord"]["status"] == "success" and act["cafe_nord"]["skipped"] == 0
    assert act["cafe_nord"]["delivered"] == len(planday(sandbox, "nord")) == 14 * 3 - 2  # Takeaway shut Mondays
    assert act["bistro_syd"]["skipped"] == 2 and act["bistro_syd"]["delivered"] == 14 * 3 - 2
    assert act["bistro_syd"]["detail"] == "12 line(s) of inactive locations ignored"  # Takeaway shut on Mondays
    assert mail.messages == []

    before = (store.snapshot(a.id), store.snapshot(b.id), planday(sandbox, "nord"), planday(sandbox, "syd"))
    dr2 = run(dag, conf)
    assert dr2.state == "success"
    assert (store.snapshot(a.id), store.snapshot(b.id), planday(sandbox, "nord"), planday(sandbox, "syd")) == before
    act2 = {r["account_key"]: r for r in store.activity(run_id=dr2.run_id)}
    assert act2["cafe_nord"]["upserted"] == 0 and act2["cafe_nord"]["unchanged"] == 14 * 3 - 2
    assert act2["cafe_nord"]["delivered"] == 0 and act2["bistro_syd"]["delivered"] == 0


def test_faults_5xx_and_429_every_day_lands_once(store, sandbox, build):
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    for url, paths in ((sandbox.ajour_url, ["/api/v1/"]), (sandbox.planday_url, ["/revenue"])):
        requests.post(
            f"{url}/_sandbox/faults",
            json={"rate_5xx": 0.2, "rate_429": 0.1, "retry_after": "1", "seed": 7, "paths": paths},
            timeout=5,
        ).raise_for_status()
    dr = run(build(), {"date_from": "2026-10-01", "date_to": "2026-10-31"})
    assert dr.state == "success", ti_states(dr)
    requests.post(f"{sandbox.ajour_url}/_sandbox/faults", json={}, timeout=5).raise_for_status()
    want = expected(sandbox, "1001", "2026-10-01", "2026-10-31")
    got = planday(sandbox, "nord")
    assert {k: v[0] for k, v in got.items()} == {
        k: v for k, v in want.items() if not (k[0] == "1003" and is_monday(k[1]))
    }
    assert all(v[1] == 1 for v in got.values()), "a day was written twice"
    log = requests.get(f"{sandbox.planday_url}/_sandbox/requests", timeout=5).json()
    assert any(r["status"] == 429 for r in log) and any(r["status"] >= 500 for r in log), "faults were injected"
    (act,) = store.activity(run_id=dr.run_id)
    assert act["status"] == "success" and act["retries"] > 0 and act["delivered"] == len(got)


def test_manual_run_without_params_runs_every_active_account(store, sandbox, build):
    add_account(store, sandbox, "early", company="1001", client="early", run_time="05:00")
    add_account(
        store, sandbox, "friday", company="2002", client="friday", run_time="07:00", weekdays=["fri"], lookback_days=1
    )
    add_account(store, sandbox, "paused", company="3003", client="paused", run_time="07:00", active=False)
    dag = build()
    # dag.test() makes a manual run: every active account runs now for its own lookback window, whatever
    # its hour and weekdays (the scheduled semantics are tested on tillflow.sync.plan); paused ones never
    dr = dag.test(logical_date=datetime(2026, 11, 20, 6, 0, tzinfo=UTC))
    assert dr.state == "success"
    keys = {r["account_key"]: r for r in store.activity(run_id=dr.run_id)}
    assert set(keys) == {"early", "friday"}
    assert (keys["friday"]["window_start"], keys["friday"]["window_end"]) == (date(2026, 11, 19), date(2026, 11, 19))
    assert (keys["early"]["window_start"], keys["early"]["window_end"]) == (date(2026, 11, 17), date(2026, 11, 19))
    assert planday(sandbox, "paused") == {}


def test_unmapped_location_marks_account_and_others_run(store, sandbox, build):
    ok = add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    bad = add_account(store, sandbox, "popup_x", company="500x", client="popup")  # 500x also has L5 Pop-up
    dr = run(build(), {"date_from": "2026-11-16", "date_to": "2026-11-17"})
    assert dr.state == "success", ti_states(dr)
    acc = store.account_by_id(bad.id)
    assert acc.status == "needs_mapping" and "L5" in acc.status_detail
    assert planday(sandbox, "popup") == {}
    assert len(planday(sandbox, "nord")) == 2 * 3 - 1  # Monday 16th: Takeaway closed
    act = {r["account_key"]: r for r in store.activity(run_id=dr.run_id)}
    assert act["popup_x"]["status"] == "needs_mapping" and "L5" in act["popup_x"]["error"]
    assert store.account_by_id(ok.id).status == "ok"
    # mapping the new location lets the next run through
    store.set_mapping(bad.id, "location", "L5", None)
    dr2 = run(build(), {"date_from": "2026-11-16", "date_to": "2026-11-17", "accounts": ["popup_x"]})
    assert dr2.state == "success" and store.account_by_id(bad.id).status == "ok"
    assert len(planday(sandbox, "popup")) == 5


def test_wrong_credentials_fail_once_email_owners_and_others_land(store, sandbox, build, mail):
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    add_account(store, sandbox, "wrong_pw", company="2002", client="wrong", password="hunter2-secret")
    dr = run(build(retries=2), {"date_from": "2026-11-17", "date_to": "2026-11-18"})
    assert dr.state == "failed"
    assert len(planday(sandbox, "nord")) == 6 and planday(sandbox, "wrong") == {}
    calls = [r for r in requests.get(f"{sandbox.ajour_url}/_sandbox/requests", timeout=5).json() if r["status"] == 401]
    assert len(calls) == 1, "refused credentials must not be retried"
    act = {r["account_key"]: r for r in store.activity(run_id=dr.run_id)}
    assert act["wrong_pw"]["status"] == "failed" and "hunter2" not in act["wrong_pw"]["error"]
    assert act["cafe_nord"]["status"] == "success"
    subjects = [m["subject"] for m in mail.messages]
    assert len(mail.messages) == 1, subjects  # one e-mail per run, not one per task instance
    assert mail.messages[0]["subject"] == f"[tillflow] {DAG_ID} failed: 1 account(s): wrong_pw"
    body = mail.messages[0].get_body(preferencelist=("plain",)).get_content()
    for needle in ("1 account(s) failed", "Wrong Pw (wrong_pw)", "window 2026-11-17..2026-11-18", "AuthError"):
        assert needle in body
    assert f"/dags/{DAG_ID}/runs/{dr.run_id}/tasks/run/mapped/0" in body  # the log of the shard that ran it
    assert all("hunter2" not in m.as_string() for m in mail.messages)


def test_malformed_records_go_to_rejects_and_the_rest_lands(store, sandbox, build):
    a = add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    requests.post(
        f"{sandbox.ajour_url}/_sandbox/faults", json={"rate_malformed": 0.3, "seed": 3}, timeout=5
    ).raise_for_status()
    dr = run(build(), {"date_from": "2026-11-03", "date_to": "2026-11-05"})
    assert dr.state == "success", ti_states(dr)
    rejects = store.rejects(a.id)
    assert rejects and all("totalInclVat" in r["reason"] for r in rejects)
    (act,) = store.activity(run_id=dr.run_id)
    assert act["rejected"] == len(rejects) and act["fetched"] == 12 - len(rejects)
    assert len(planday(sandbox, "nord")) > 0


def test_keep_manual_in_target_and_overwrite_param(store, sandbox, build):
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord", write_mode="keep_manual")
    # a value typed into Planday by hand before tillflow ever wrote that day
    requests.post(
        f"{sandbox.planday_url}/_sandbox/portals/nord/revenue",
        json={"revenueUnitId": 1002, "date": "2026-11-18", "turnover": "42.00"},
        timeout=5,
    ).raise_for_status()
    conf = {"date_from": "2026-11-18", "date_to": "2026-11-18"}
    dr = run(build(), conf)
    assert dr.state == "success"
    assert planday(sandbox, "nord")[("1002", "2026-11-18")][0] == Decimal("42.00")
    dr = run(build(), {**conf, "overwrite": "overwrite"})
    assert dr.state == "success"
    want = expected(sandbox, "1001", "2026-11-18", "2026-11-18")
    assert planday(sandbox, "nord")[("1002", "2026-11-18")][0] == want[("1002", "2026-11-18")]


def test_unknown_account_param_fails_the_plan_clearly(store, sandbox, build):
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    dr = run(build(), {"accounts": ["nope"]})
    assert dr.state == "failed"
    assert ti_states(dr)[("plan", -1)] == "failed"
    assert planday(sandbox, "nord") == {}


def test_airflow_dags_test_cli_alerts_by_mail_without_secrets(store, sandbox, mail, airflow_db):
    """The same run through the `airflow dags test` command (a separate process, the real CLI)."""
    import subprocess
    import sys

    add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    add_account(store, sandbox, "wrong_pw", company="2002", client="wrong", password="hunter2-secret")
    conf = json.dumps({"date_from": "2026-11-10", "date_to": "2026-11-11"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "-c", conf],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert "hunter2" not in output
    assert len(planday(sandbox, "nord")) == 2 * 3 - 0  # Tue/Wed: every unit open
    assert planday(sandbox, "wrong") == {}
    subjects = [m["subject"] for m in mail.messages]
    assert subjects == [f"[tillflow] {DAG_ID} failed: 1 account(s): wrong_pw"]
    body = mail.messages[0].get_body(preferencelist=("plain",)).get_content()
    assert "Wrong Pw (wrong_pw), flow revenue, window 2026-11-10..2026-11-11" in body
    assert all("hunter2" not in m.as_string() for m in mail.messages)
    runs = {r["run_id"] for r in store.activity()}
    assert len(runs) == 1
    act = {r["account_key"]: r["status"] for r in store.activity()}
    assert act == {"cafe_nord": "success", "wrong_pw": "failed"}


def test_nothing_due_is_a_quiet_success(store, sandbox, build):
    add_account(store, sandbox, "paused", company="1001", client="paused", active=False)
    dr = run(build())
    assert dr.state == "success", ti_states(dr)
    assert store.activity() == []
    assert requests.get(f"{sandbox.ajour_url}/_sandbox/requests", timeout=5).json() == []


def test_replay_after_a_mapping_change_needs_no_pos_call(store, sandbox, build, capsys):
    from tillflow.cli import main

    a = add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    conf = {"date_from": "2026-11-17", "date_to": "2026-11-18"}
    assert run(build(), conf).state == "success"
    ajour_calls = len(requests.get(f"{sandbox.ajour_url}/_sandbox/requests", timeout=5).json())

    # the customer decides the terrace belongs to the bar unit: re-map the landed payloads, no POS call,
    # and deliver only what changed (tests/integration/test_replay.py and tests/e2e/test_replay_e2e.py: the preview)
    store.set_mapping(a.id, "location", "L3", "1002")
    assert main(["replay", "cafe_nord", "--from", "2026-11-17", "--to", "2026-11-18"]) == 0
    out = capsys.readouterr().out
    assert "upserted=4" in out and "delivered=4" in out  # 1001 and 1002 change on both days
    assert len(requests.get(f"{sandbox.ajour_url}/_sandbox/requests", timeout=5).json()) == ajour_calls
    remapped = {**MAPPING, "L3": "1002"}
    want = expected(sandbox, "1001", "2026-11-17", "2026-11-18", mapping=remapped)
    got = {(r["target_key"], r["business_date"].isoformat()): r["amount"] for r in store.revenue(a.id)}
    assert got == want
    assert {k: v[0] for k, v in planday(sandbox, "nord").items()} == want
    assert planday(sandbox, "nord")[("1002", "2026-11-17")][1] == 2  # written once per mapping

    # the next run finds nothing left to do
    dr = run(build(), conf)
    assert dr.state == "success"
    (act,) = store.activity(run_id=dr.run_id)
    assert act["upserted"] == 0 and act["unchanged"] == 6  # the replay already put the figures in place
    assert act["delivered"] == 0  # ...and sent them


def test_a_manual_run_naming_accounts_runs_one_labelled_instance_each(store, sandbox, build, mail):
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    add_account(store, sandbox, "wrong_pw", company="2002", client="wrong", password="hunter2-secret")
    add_account(store, sandbox, "not_named", company="3003", client="other")
    dr = run(build(), {"accounts": ["cafe_nord", "wrong_pw"], "date_from": "2026-11-17", "date_to": "2026-11-17"})
    assert dr.state == "failed"
    tis = {ti.rendered_map_index: ti.state for ti in dr.get_task_instances() if ti.task_id == "run"}
    assert tis == {
        "Cafe Nord (cafe_nord) 2026-11-17..2026-11-17": "success",
        "Wrong Pw (wrong_pw) 2026-11-17..2026-11-17": "failed",
    }
    assert planday(sandbox, "other") == {} and len(planday(sandbox, "nord")) == 3
    assert len(mail.messages) == 1 and "wrong_pw" in mail.messages[0]["subject"]


def test_a_target_refusing_one_row_of_fifty_delivers_49_and_is_not_retried(store, sandbox, build, mail):
    two_units = {"L1": "1001", "L2": "1002", "L3": "1001", "L4": None}
    a = add_account(store, sandbox, "cafe_nord", company="1001", client="nord", mapping=two_units)
    requests.post(
        f"{sandbox.planday_url}/_sandbox/refuse",
        json=[{"revenueUnitId": 1002, "date": "2026-11-05", "status": 400, "message": "Turnover exceeds the maximum"}],
        timeout=5,
    ).raise_for_status()
    dr = run(build(retries=2), {"date_from": "2026-10-26", "date_to": "2026-11-19"})  # 25 days × 2 units
    assert dr.state == "failed"
    (ti,) = [ti for ti in dr.get_task_instances() if ti.task_id == "run"]
    assert (ti.state, ti.try_number) == ("failed", 1), "a refused row is not retried by Airflow"
    assert len(planday(sandbox, "nord")) == 49 and ("1002", "2026-11-05") not in planday(sandbox, "nord")
    states = {(d["target_key"], d["business_date"].isoformat()): d for d in store.delivery_state(a.id)}
    assert len(states) == 50 and states[("1002", "2026-11-05")]["status"] == "failed"
    assert "Turnover exceeds the maximum" in states[("1002", "2026-11-05")]["detail"]
    (act,) = store.activity(run_id=dr.run_id)
    assert (act["status"], act["delivered"], act["failed"], act["retryable"]) == ("failed", 49, 1, False)
    posts = [
        r for r in requests.get(f"{sandbox.planday_url}/_sandbox/requests", timeout=5).json() if r["method"] == "POST"
    ]
    assert sum(r["status"] == 400 for r in posts) == 1  # asked once, not three times
    assert len(mail.messages) == 1
    assert "refused 1 of 50" in mail.messages[0].get_body(preferencelist=("plain",)).get_content()
