"""A shard whose worker is killed mid-run (SIGKILL): its retry finishes the accounts that did not
finish, and nothing is doubled. Real PostgreSQL, the sandbox over HTTP, a real child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {"L1": "1001", "L2": "1002", "L3": "1001", "L4": "1003"}
KEYS = [f"acct{i:02d}" for i in range(8)]
CHILD = """
import json, sys
from tillflow import sync
from tillflow.sources.base import ConnectionInfo
from tillflow.specs import load_spec
spec = load_spec(sys.argv[1])
conns = {k: ConnectionInfo(conn_id=k, **v) for k, v in json.load(open(sys.argv[2])).items()}
sync.run_shard(spec, dag_id="ajour_to_planday", run_id="kill-run", shard=0, conns=conns.__getitem__, threads=2)
"""


def _expected_rows(sandbox, company):
    r = requests.get(
        f"{sandbox.ajour_url}/api/v1/revenue",
        params={"from": "2026-11-17", "to": "2026-11-19"},
        headers={"X-Ajour-Company": company, "X-Ajour-Database": "x"},
        auth=("api", f"pw-{company}"),
        timeout=10,
    )
    r.raise_for_status()
    return {(MAPPING[d["locationId"]], d["date"]) for d in r.json()["days"]}


def test_a_killed_shard_is_finished_by_its_retry_and_nothing_doubles(store, sandbox, tmp_path):
    from tillflow.sources.base import ConnectionInfo
    from tillflow.specs import load_spec, parse_settings
    from tillflow.sync import RunParams, plan_run, run_shard

    spec = load_spec(ROOT / "dags" / "ajour_to_planday.yaml")
    conns = {}
    for i, key in enumerate(KEYS):
        account = store.upsert_account(
            spec.integration,
            key,
            name=key,
            conn_id=f"ajour_{key}",
            target_conn_id=f"planday_{key}",
            settings=parse_settings({"start_date": "2026-01-01"}, spec=spec),
        )
        for loc, unit in MAPPING.items():
            store.set_mapping(account.id, "location", loc, unit)
        fast = {"backoff_base": 0.05, "backoff_max": 0.2, "read_timeout": 5}
        conns[f"ajour_{key}"] = {
            "host": sandbox.ajour_url,
            "login": "api",
            "password": f"pw-{1000 + i}",
            "schema": "db",
            "extra": {"company_id": str(1000 + i), **fast},
        }
        conns[f"planday_{key}"] = {
            "host": sandbox.planday_url,
            "login": f"client{i}",
            "password": f"rt-client{i}",
            "extra": fast,
        }
    conn_file = tmp_path / "conns.json"
    conn_file.write_text(json.dumps(conns))
    planned = plan_run(
        store,
        spec,
        spec.flows,
        dag_id="ajour_to_planday",
        run_id="kill-run",
        logical_date=datetime(2026, 11, 20, 6, 0, tzinfo=UTC),
        params=RunParams(date_from=date(2026, 11, 17), date_to=date(2026, 11, 19)),
        manual=True,
    )
    assert [s["shard"] for s in planned.shards] == [0] and len(planned.items) == len(KEYS)
    requests.post(f"{sandbox.planday_url}/_sandbox/config", json={"latency_ms": 150}, timeout=5).raise_for_status()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROOT / "dags" / "ajour_to_planday.yaml"), str(conn_file)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = [r for r in store.activity(run_id="kill-run") if r["status"] == "success"]
            if len(done) >= 2:
                break
            assert child.poll() is None, "the shard finished before it could be killed: slow the sandbox down"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    before = {r["account_key"]: r["status"] for r in store.activity(run_id="kill-run")}
    finished_before = {k for k, s in before.items() if s == "success"}
    assert 2 <= len(finished_before) < len(KEYS), before
    assert "running" in before.values() or "pending" in before.values()

    requests.post(f"{sandbox.planday_url}/_sandbox/config", json={"latency_ms": 0}, timeout=5).raise_for_status()
    retry = run_shard(
        spec,
        dag_id="ajour_to_planday",
        run_id="kill-run",
        shard=0,
        conns=lambda cid: ConnectionInfo(conn_id=cid, **conns[cid]),
        threads=2,
    )
    assert {o.item.account_key for o in retry.outcomes} == set(KEYS) - finished_before  # only the unfinished
    assert all(o.status == "success" for o in retry.outcomes), [o.error for o in retry.outcomes]
    assert all(r["status"] == "success" for r in store.activity(run_id="kill-run"))

    state = requests.get(f"{sandbox.planday_url}/_sandbox/state", timeout=10).json()["portals"]
    in_flight = len(KEYS) - len(finished_before)
    rewrites = 0
    for i, key in enumerate(KEYS):
        account = store.get_account(spec.integration, key)
        want = _expected_rows(sandbox, str(1000 + i))
        got = {(str(r["revenueUnitId"]), r["date"]): r for r in state[f"client{i}"]["revenue"]}
        assert set(got) == want, key  # Tue–Thu: no closed (409) days
        canonical = {(r["target_key"], r["business_date"].isoformat()): r["amount"] for r in store.revenue(account.id)}
        assert {k: str(v) for k, v in canonical.items()} == {k: str(r["turnover"]) for k, r in got.items()}, key
        rewrites += sum(r["writes"] - 1 for r in got.values())
    # a POST whose answer the killed worker never recorded is sent again — the same value, at most one per
    # account that was in flight; never a doubled amount
    assert rewrites <= in_flight
