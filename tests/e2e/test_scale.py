"""The small version of bench/scale in `make test`: 200 accounts on the 15-minute intra-day revenue
flow (bench/scale/intraday.yaml: today and yesterday) through Airflow (`dag.test()`), the sandbox
answering every vendor call after 50 ms. Checks every account's activity row and its rows in the
Planday stand-in against sums computed straight from the Ajour stand-in, the vendor calls per account,
and that a second run changes nothing. No timing assertions: the timing lives in bench/scale and
bench/results."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "bench" / "scale" / "intraday.yaml"
DAG_ID = "ajour_to_planday_intraday"
N = 200
MAPPING = {"L1": "1001", "L2": "1002", "L3": "1001", "L4": "1003"}  # as bench/scale: 3 units
TICK = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)  # Friday 11:15 in Copenhagen: Friday is still open
DAYS = ("2026-11-19", "2026-11-20")  # yesterday and the open business day: 3 units × 2 days = 6 rows
LATENCY_MS = 50


def _key(i: int) -> str:
    return f"s{i:03d}"


def _client(i: int) -> str:
    return f"scale{i:03d}"


def _company(i: int) -> str:
    return str(5000 + i)


@pytest.fixture
def dag(tmp_path, monkeypatch, airflow_db, mail_server):
    """The bench's DAG from its spec, in a dags folder of its own (`dag.test()` serializes it from there)."""
    from tillflow.factory import build_dags

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.yaml").write_text(SPEC.read_text())
    (dags / f"{DAG_ID}.py").write_text(
        '"""airflow DAG of bench/scale. Runbook: tests only."""\nfrom pathlib import Path\n\n'
        "from tillflow.factory import build_dags\n\n"
        "globals().update(build_dags(Path(__file__).with_suffix('.yaml'), doc_md=__doc__))\n"
    )
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    monkeypatch.setattr("airflow.settings.DAGS_FOLDER", str(dags))  # read once at import; the bundle uses it
    return build_dags(dags / f"{DAG_ID}.yaml")[DAG_ID]


@pytest.fixture
def accounts(store, sandbox, monkeypatch):
    """N accounts, each with its own Ajour company and Planday portal; connections as AIRFLOW_CONN_*."""
    from tillflow.specs import load_spec, parse_settings

    spec = load_spec(SPEC)
    settings = parse_settings({"lookback_days": 1, "start_date": "2026-01-01", "write_mode": "overwrite"}, spec=spec)
    fast = {"backoff_base": 0.05, "backoff_max": 0.5, "read_timeout": 5}
    for i in range(N):
        key, company, client = _key(i), _company(i), _client(i)
        monkeypatch.setenv(
            f"AIRFLOW_CONN_AJOUR_{key.upper()}",
            json.dumps(
                {
                    "conn_type": "http",
                    "host": sandbox.ajour_url,
                    "login": "api",
                    "password": f"pw-{company}",
                    "schema": "db",
                    "extra": {"company_id": company, **fast},
                }
            ),
        )
        monkeypatch.setenv(
            f"AIRFLOW_CONN_PLANDAY_{key.upper()}",
            json.dumps(
                {
                    "conn_type": "http",
                    "host": sandbox.planday_url,
                    "login": client,
                    "password": f"rt-{client}",
                    "extra": fast,
                }
            ),
        )
        account = store.upsert_account(
            spec.integration,
            key,
            name=f"Scale {i}",
            conn_id=f"ajour_{key}",
            target_conn_id=f"planday_{key}",
            settings=settings,
        )
        for loc, unit in MAPPING.items():
            store.set_mapping(account.id, "location", loc, unit)
    for url in (sandbox.ajour_url, sandbox.planday_url):
        requests.post(f"{url}/_sandbox/config", json={"latency_ms": LATENCY_MS}, timeout=5).raise_for_status()
    yield spec
    for url in (sandbox.ajour_url, sandbox.planday_url):  # the session's sandbox: back to no latency
        requests.post(f"{url}/_sandbox/reset", timeout=5)


def _expected(sandbox) -> dict[str, dict[tuple[str, str], Decimal]]:
    """Sums per unit and day straight from the Ajour stand-in (not through tillflow)."""
    out = {}
    with requests.Session() as http:
        for i in range(N):
            r = http.get(
                f"{sandbox.ajour_url}/api/v1/revenue",
                params={"from": DAYS[0], "to": DAYS[-1]},
                headers={"X-Ajour-Company": _company(i), "X-Ajour-Database": "db"},
                auth=("api", f"pw-{_company(i)}"),
                timeout=10,
            )
            r.raise_for_status()
            sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
            for row in r.json()["days"]:
                sums[(MAPPING[row["locationId"]], row["date"])] += Decimal(row["totalInclVat"])
            out[_client(i)] = dict(sums)
    return out


def _calls(url: str) -> Counter:
    entries = requests.get(f"{url}/_sandbox/requests", timeout=30).json()
    return Counter((e["method"], e["path"], e["status"]) for e in entries)


def test_two_hundred_accounts_in_a_few_shards_every_row_right(store, sandbox, accounts, dag):
    dr = dag.test(logical_date=TICK)  # a manual run naming no account: the plan shards every active one
    assert dr.state == "success"
    shards = [ti for ti in dr.get_task_instances() if ti.task_id == "run"]
    assert len(shards) == 8  # 200 accounts: max_shards 8 (≥ 25 each), not 200 task groups
    assert all(ti.state == "success" for ti in shards)
    activity = store.activity(run_id=dr.run_id)
    assert len(activity) == N
    assert all(r["status"] == "success" for r in activity), [r for r in activity if r["status"] != "success"][:3]
    assert {(str(r["window_start"]), str(r["window_end"])) for r in activity} == {DAYS}
    assert all(r["upserted"] == 6 and r["delivered"] == 6 for r in activity)

    # the vendor calls: one Ajour read for both days, one Planday token and one POST per row
    assert _calls(sandbox.ajour_url) == {("GET", "/api/v1/revenue", 200): N}
    assert _calls(sandbox.planday_url) == {
        ("POST", "/connect/token", 200): N,
        ("POST", "/revenue/v1.0/revenue", 200): 6 * N,
    }

    for url in (sandbox.ajour_url, sandbox.planday_url):  # the check's own reads need no latency
        requests.post(f"{url}/_sandbox/config", json={"latency_ms": 0}, timeout=5).raise_for_status()
    want = _expected(sandbox)
    state = requests.get(f"{sandbox.planday_url}/_sandbox/state", timeout=30).json()["portals"]
    for client, sums in want.items():
        assert len(sums) == 6, client
        got = {
            (str(r["revenueUnitId"]), r["date"]): (Decimal(r["turnover"]), r["writes"])
            for r in state[client]["revenue"]
        }
        assert {k: v[0] for k, v in got.items()} == sums, client
        assert all(w == 1 for _, w in got.values()), client

    # the next tick: same window, nothing changed in the POS → nothing written, nothing sent
    for url in (sandbox.ajour_url, sandbox.planday_url):
        requests.post(f"{url}/_sandbox/config", json={"latency_ms": LATENCY_MS}, timeout=5).raise_for_status()
    before = {r["account_key"]: store.snapshot(r["account_id"]) for r in activity}
    again = dag.test(logical_date=TICK.replace(minute=30))
    assert again.state == "success"
    after = store.activity(run_id=again.run_id)
    assert len(after) == N
    assert all(r["status"] == "success" and r["upserted"] == 0 and r["delivered"] == 0 for r in after)
    assert {r["account_key"]: store.snapshot(r["account_id"]) for r in after} == before
    state_again = requests.get(f"{sandbox.planday_url}/_sandbox/state", timeout=30).json()["portals"]
    assert all(r["writes"] == 1 for p in state_again.values() for r in p["revenue"])
