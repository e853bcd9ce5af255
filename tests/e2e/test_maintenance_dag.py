"""The tillflow_maintenance DAG through Airflow (`dag.test()`): retention with a Param from the trigger form."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

pytestmark = pytest.mark.e2e


def test_the_maintenance_dag_purges_with_the_params_given(store, airflow_db, mail_server):
    from airflow.dag_processing.dagbag import DagBag
    from tillflow.sources.base import Window
    from tillflow.specs import parse_settings

    account = store.upsert_account("ajour_to_planday", "m", name="M", conn_id="x", settings=parse_settings({}))
    for i, age in enumerate((40, 20, 1)):
        store.activity_start("d", f"run{i}", account.id, "revenue", Window(date(2026, 11, 1), date(2026, 11, 1)))
        store.conn.execute(
            "UPDATE tillflow.activity SET started_at = now() - %s WHERE run_id = %s", (timedelta(days=age), f"run{i}")
        )
    store.conn.commit()
    from pathlib import Path

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "tillflow_maintenance.py")).dags[
        "tillflow_maintenance"
    ]
    dr = dag.test(run_conf={"activity": 30}, logical_date=datetime.now().astimezone())
    assert dr.state == "success"
    assert [r["run_id"] for r in store.activity(account_id=account.id)] == ["run1", "run2"]
    (ti,) = dr.get_task_instances()
    assert ti.xcom_pull(task_ids="purge")["activity"] == 1
