"""End to end: a replay through Airflow (``dag.test()`` with the trigger form's ``dry_run`` and ``replay``) against
the sandbox, on real PostgreSQL — after a mapping change the dry run previews and sends nothing, the replay
re-delivers from raw landing, and the POS is not called by either."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "ajour_to_planday"
FAST_HTTP = {"backoff_base": 0.05, "backoff_max": 0.5, "max_retry_after": 1.5, "read_timeout": 2}
DATES = {"date_from": "2026-11-17", "date_to": "2026-11-18"}


class _Dag:
    """A fresh DAG object per run: under ``dag.test()`` every task runs in this process and the run's conf is
    merged into the task's Params in place, so one DAG object would carry a run's Params into the next."""

    def __init__(self, spec):
        self.spec = spec

    def test(self, run_conf):
        from tillflow.factory import build_dag

        return build_dag(self.spec).test(run_conf=run_conf)


@pytest.fixture(scope="module")
def dag(airflow_db, mail_server):
    from tillflow.specs import load_spec

    spec = load_spec(ROOT / "dags" / f"{DAG_ID}.yaml")
    return _Dag(spec.model_copy(update={"retry_delay_seconds": 1}))


def _planday(sandbox, client="nord"):
    state = requests.get(f"{sandbox.planday_url}/_sandbox/state", timeout=10).json()["portals"].get(client, {})
    return {
        (str(r["revenueUnitId"]), r["date"]): (Decimal(r["turnover"]), r["writes"]) for r in state.get("revenue", [])
    }


def _ajour_calls(sandbox):
    return len(requests.get(f"{sandbox.ajour_url}/_sandbox/requests", timeout=5).json())


def _run_xcom(dr):
    (ti,) = [ti for ti in dr.get_task_instances() if ti.task_id == "run"]
    return ti.xcom_pull(task_ids="run", map_indexes=ti.map_index)


def test_a_dry_run_then_a_replay_through_airflow(store, sandbox, dag, ajour_account):
    account, _ = ajour_account(http=FAST_HTTP)
    assert dag.test(run_conf=DATES).state == "success"
    held = _planday(sandbox)
    assert len(held) == 6
    calls = _ajour_calls(sandbox)
    snapshot = store.snapshot(account.id)

    store.set_mapping(account.id, "location", "L3", "1002")  # the terrace now belongs to the bar

    dr = dag.test(run_conf={**DATES, "accounts": ["cafe_nord"], "dry_run": True})
    assert dr.state == "success"
    summary = _run_xcom(dr)
    (preview,) = summary["replay"]
    assert preview == {
        "account": "cafe_nord",
        "flow": "revenue",
        "window": "2026-11-17..2026-11-18",
        "pages": preview["pages"],
        "rows": 6,
        "would_send": 4,
        "unchanged": 2,
    }
    assert preview["pages"] >= 1
    assert _planday(sandbox) == held
    assert _ajour_calls(sandbox) == calls
    after = store.snapshot(account.id)
    assert {k: after[k] for k in ("revenue", "delivery", "rejects")} == {
        k: snapshot[k] for k in ("revenue", "delivery", "rejects")
    }
    (act,) = store.activity(run_id=dr.run_id)
    assert act["status"] == "success" and "dry run" in act["detail"] and act["delivered"] == 0

    dr = dag.test(run_conf={**DATES, "replay": True, "overwrite": "account_default"})
    assert dr.state == "success"
    (result,) = _run_xcom(dr)["replay"]
    assert result["sent"] == 4 and result["unchanged"] == 2
    now = _planday(sandbox)
    changed = {k for k in held if now[k][0] != held[k][0]}
    assert {unit for unit, _ in changed} == {"1001", "1002"} and len(changed) == 4
    for day in ("2026-11-17", "2026-11-18"):  # the terrace's sales moved, the total stayed
        assert sum(now[(u, day)][0] for u in ("1001", "1002", "1003")) == sum(
            held[(u, day)][0] for u in ("1001", "1002", "1003")
        )
    assert _ajour_calls(sandbox) == calls  # neither the dry run nor the replay called the POS
    (act,) = store.activity(run_id=dr.run_id)
    assert act["delivered"] == 4 and "replay from raw landing" in act["detail"]

    # an ordinary run afterwards finds nothing left to send
    dr = dag.test(run_conf=DATES)
    assert dr.state == "success"
    (act,) = store.activity(run_id=dr.run_id)
    assert act["delivered"] == 0 and act["upserted"] == 0


def test_date_to_before_date_from_fails_the_plan_naming_both_fields(store, sandbox, dag, ajour_account):
    ajour_account(http=FAST_HTTP)
    dr = dag.test(run_conf={"date_from": "2026-11-18", "date_to": "2026-11-17"})
    assert dr.state == "failed"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["plan"] == "failed"
    assert store.activity() == []
    assert _ajour_calls(sandbox) == 0
