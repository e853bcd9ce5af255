"""One pool per rate-limited vendor (tillflow.pools): slots from the documented limits, the pool of each DAG's
run tasks, and the factory using it only when TILLFLOW_POOLS is on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tillflow.pools import DEFAULT_POOL, POOLS, as_import, enabled, main, pool_for, vendor_pool
from tillflow.specs import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "dags").glob("*.yaml"))
ON = {"TILLFLOW_POOLS": "1"}


def _dags():
    for path in SPECS:
        spec = load_spec(path)
        for dag_id, flows in spec.dags().items():
            yield spec, dag_id, flows


def test_every_rate_limited_target_has_a_pool():
    assert {"planday", "eitje", "shiftbase", "pennylane", "eaccounting"} <= set(POOLS)
    assert all(p.name == f"tillflow_{system}" and p.slots >= 1 for system, p in POOLS.items())


@pytest.mark.parametrize("pool", [p for p in POOLS.values() if p.scope == "global"], ids=lambda p: p.system)
def test_a_global_limit_holds_across_workers(pool):
    """slots × the clients' per-process pace stays under the documented limit (and one more slot would not)."""
    assert pool.slots * pool.pace <= pool.limit < (pool.slots + 1) * pool.pace


def test_global_paces_are_the_clients_defaults():
    from tillflow.targets.eaccounting import EaccountingClient
    from tillflow.targets.planday import PlandayClient

    assert POOLS["planday"].pace == PlandayClient.default_client_rate_per_second
    assert POOLS["eaccounting"].pace == EaccountingClient.default_rate_per_second


def test_each_dag_runs_in_its_vendors_pool():
    got = {dag_id: vendor_pool(spec, flows) for spec, dag_id, flows in _dags()}
    assert got["ajour_to_planday"] == "tillflow_planday"
    assert got["kassatellen_to_eitje"] == got["kassatellen_to_eitje_activation"] == "tillflow_eitje"
    assert got["mpluskassa_to_shiftbase"] == "tillflow_shiftbase"
    assert got["kashclick_to_pennylane"] == got["kashclick_to_pennylane_history"] == "tillflow_pennylane"
    # orders go to eAccounting, products and stock come from it: all three share its client-wide limit
    ccv = {d: p for d, p in got.items() if d.startswith("ccv_salespos_to_eaccounting")}
    assert len(ccv) == 3 and set(ccv.values()) == {"tillflow_eaccounting"}
    assert set(got.values()) <= {p.name for p in POOLS.values()}, "every DAG of every spec has a vendor pool"


def test_pools_are_opt_in():
    spec, _dag_id, flows = next(_dags())
    assert pool_for(spec, flows, environ={}) == DEFAULT_POOL
    assert pool_for(spec, flows, environ={"TILLFLOW_POOLS": "0"}) == DEFAULT_POOL
    assert pool_for(spec, flows, environ=ON) == vendor_pool(spec, flows) != DEFAULT_POOL
    assert enabled({"TILLFLOW_POOLS": " True "}) and not enabled({"TILLFLOW_POOLS": "no"})


def test_a_dag_touching_no_pooled_system_keeps_the_default_pool():
    spec = load_spec(ROOT / "dags" / "ajour_to_planday.yaml")
    flow = spec.flows[0].model_copy(update={"target": "nowhere", "source": "nothing"})
    assert vendor_pool(spec, [flow]) == DEFAULT_POOL


@pytest.mark.parametrize("env", [{}, ON], ids=["off", "on"])
def test_the_factory_puts_run_tasks_in_the_pool(monkeypatch, env):
    from tillflow.factory import build_dags

    monkeypatch.delenv("TILLFLOW_POOLS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dags = build_dags(ROOT / "dags" / "ccv_salespos_to_eaccounting.yaml")
    for dag in dags.values():
        want = "tillflow_eaccounting" if env else DEFAULT_POOL
        assert dag.get_task("run").pool == want
        assert dag.get_task("plan").pool == dag.get_task("report").pool == DEFAULT_POOL, "only run calls vendors"


def test_the_import_file_is_what_airflow_pools_import_reads(capsys, tmp_path):
    data = as_import()
    assert set(data) == {p.name for p in POOLS.values()}
    for name, entry in data.items():
        assert set(entry) == {"slots", "description", "include_deferred"}
        assert entry["slots"] == POOLS[name.removeprefix("tillflow_")].slots
        assert "requests" in entry["description"] or "limit" in entry["description"], entry["description"]
    assert main(["json"]) == 0
    assert json.loads(capsys.readouterr().out) == data
    out = tmp_path / "pools.json"
    assert main(["json", "--output", str(out)]) == 0 and json.loads(out.read_text()) == data
