"""End to end through Airflow (``dag.test()``): an integration DAG's run task emits its flow's asset event with
what it delivered (and none when a re-run delivers nothing), and the ``tillflow_reconcile`` DAG finds no
drift after it, then drift once the target is edited by hand — a row, an activity row and one mail."""

from __future__ import annotations

import runpy
from datetime import date
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {"L1": "1001", "L2": "1002", "L3": "1001", "L4": None}  # L4 inactive
FAST_HTTP = {"backoff_base": 0.05, "backoff_max": 0.5, "max_retry_after": 1.5, "read_timeout": 2}
CONF = {"date_from": "2026-11-10", "date_to": "2026-11-11"}


@pytest.fixture(scope="module")
def dags(airflow_db, mail_server):
    from tillflow.factory import build_dag
    from tillflow.specs import load_spec

    spec = load_spec(ROOT / "dags" / "ajour_to_planday.yaml").model_copy(update={"retry_delay_seconds": 1})
    return build_dag(spec), runpy.run_path(str(ROOT / "dags" / "tillflow_reconcile.py"))["dag"]


def asset_events(run_id):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra, AssetEvent.source_task_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_run_id == run_id)
        ).all()
        return [(uri, dict(extra or {}), task_id) for uri, extra, task_id in rows]


def test_run_task_emits_the_flow_asset_only_when_it_delivers(store, sandbox, dags, ajour_account):
    integration_dag, _ = dags
    ajour_account(mapping=MAPPING, http=FAST_HTTP)
    dr = integration_dag.test(run_conf=CONF)
    assert dr.state == "success"
    (event,) = asset_events(dr.run_id)
    uri, extra, task_id = event
    assert uri == "tillflow://ajour_to_planday/revenue" and task_id == "run"
    assert extra["accounts"] == ["cafe_nord"] and extra["integration"] == "ajour_to_planday"
    assert extra["upserted"] == 4 and extra["delivered"] == 4 and extra["rows"] == 8  # 2 units × 2 days
    assert (extra["window_start"], extra["window_end"]) == ("2026-11-10", "2026-11-11")

    again = integration_dag.test(run_conf=CONF)  # nothing changed: nothing landed or delivered, no event
    assert again.state == "success"
    assert asset_events(again.run_id) == []


def test_weekly_reconcile_dag_no_drift_then_drift_mailed(store, sandbox, dags, mail, ajour_account):
    integration_dag, reconcile_dag = dags
    account, _ = ajour_account(mapping=MAPPING, http=FAST_HTTP)
    assert integration_dag.test(run_conf=CONF).state == "success"
    conf = {"integrations": ["ajour_to_planday"], **CONF}

    dr = reconcile_dag.test(run_conf=conf)
    assert dr.state == "success", {ti.task_id: ti.state for ti in dr.get_task_instances()}
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["reconcile_ajour_to_planday"] == "success" and len(states) >= 4
    (act,) = [r for r in store.activity(run_id=dr.run_id) if r["flow"] == "reconcile"]
    assert act["account_id"] == account.id and act["status"] == "success" and act["dag_id"] == "tillflow_reconcile"
    assert mail.messages == []

    requests.post(
        f"{sandbox.planday_url}/_sandbox/portals/nord/revenue",
        json={"revenueUnitId": 1002, "date": "2026-11-10", "turnover": "99.99"},
        timeout=5,
    ).raise_for_status()
    dr = reconcile_dag.test(run_conf=conf)
    assert dr.state == "success"  # drift is data, mailed; not a task failure
    (act,) = [r for r in store.activity(run_id=dr.run_id) if r["flow"] == "reconcile"]
    assert act["status"] == "drift" and "2026-11-10" in act["detail"] and "planday 99.99" in act["detail"]
    row = store.conn.execute(
        "SELECT status, target_total FROM tillflow.reconciliation WHERE run_id = %s AND business_date = %s",
        (dr.run_id, date(2026, 11, 10)),
    ).fetchone()
    store.conn.commit()
    assert row["status"] == "drift"
    (msg,) = [m for m in mail.messages if "drift" in m["Subject"]]
    assert msg["To"] == "data-team@tillflow.example" and "2026-11-10" in msg.get_body().get_content()


def test_an_asset_triggered_run_checks_the_accounts_and_days_of_the_event(store, sandbox, dags, mail, ajour_account):
    from types import SimpleNamespace

    from tillflow.assets import flow_asset

    integration_dag, reconcile_dag = dags
    ajour_account(mapping=MAPPING, http=FAST_HTTP)
    ajour_account("bar_syd", company="2002", client="syd", mapping=MAPPING, http=FAST_HTTP)
    assert integration_dag.test(run_conf=CONF).state == "success"
    event = SimpleNamespace(
        extra={
            "integration": "ajour_to_planday",
            "flow": "revenue",
            "accounts": ["bar_syd"],
            "window_start": "2026-11-11",
            "window_end": "2026-11-11",
        }
    )
    run = SimpleNamespace(dag_id="tillflow_reconcile", run_after=None)
    kwargs = {"dag_run": run, "run_id": "asset-triggered-1", "logical_date": None}
    events = {flow_asset("ajour_to_planday", "revenue"): [event]}
    check = reconcile_dag.get_task("reconcile_ajour_to_planday").python_callable
    summary = check(params={}, triggering_asset_events=events, **kwargs)
    assert summary == {"integration": "ajour_to_planday", "accounts": 1, "days": 1, "drift": 0, "failed": 0}
    (act,) = [r for r in store.activity(run_id="asset-triggered-1") if r["flow"] == "reconcile"]
    assert act["account_key"] == "bar_syd" and act["window_start"] == act["window_end"] == date(2026, 11, 11)
    other = reconcile_dag.get_task("reconcile_kashclick_to_pennylane").python_callable
    assert other(params={}, triggering_asset_events=events, **kwargs)["checked"] == 0  # not its integration
