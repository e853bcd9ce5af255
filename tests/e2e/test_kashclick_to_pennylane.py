"""End to end: kashclick_to_pennylane through Airflow (``dag.test()``) with a 429 storm and lost responses,
and a worker killed (SIGKILL) in the middle of posting, then retried: exactly one entry per event in the
Pennylane stand-in, every entry balanced. Real PostgreSQL, the stand-ins over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DAY = date.today() - timedelta(days=2)
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "read_timeout": 5, "max_retry_after": 1, "max_attempts": 8}


@pytest.fixture(scope="module")
def dags(airflow_db, mail_server):
    from tillflow.factory import build_dags
    from tillflow.specs import load_spec

    spec = load_spec(ROOT / "dags" / "kashclick_to_pennylane.yaml")
    return build_dags(spec.model_copy(update={"retry_delay_seconds": 1}))


def add_account(store, sandbox, key, orders_per_day=4, fiscal_year_start=DAY - timedelta(days=30)):
    from tillflow.specs import load_spec, parse_settings

    spec = load_spec(ROOT / "dags" / "kashclick_to_pennylane.yaml")
    requests.post(
        f"{sandbox.kashclick_url}/_sandbox/shops/{key}", json={"orders_per_day": orders_per_day}, timeout=5
    ).raise_for_status()
    conns = {
        f"kashclick_{key}": {
            "conn_type": "http",
            "host": sandbox.kashclick_url,
            "login": key,
            "password": f"pw-{key}",
            "extra": FAST,
        },
        f"pennylane_{key}": {
            "conn_type": "http",
            "host": f"{sandbox.pennylane_url}/api/external/v2",
            "login": "tillflow-app",
            "password": f"prt-{key}",
            "extra": {"client_secret": "cs-e2e", **FAST},
        },
    }
    for conn_id, conn in conns.items():
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    settings = {
        "timezone": "Europe/Paris",
        "lookback_days": 1,
        "flows": {"ledger": {"fiscal_year_start": str(fiscal_year_start)}},
    }
    account = store.upsert_account(
        spec.integration,
        key,
        name=key.title(),
        conn_id=f"kashclick_{key}",
        target_conn_id=f"pennylane_{key}",
        settings=parse_settings(settings, spec=spec),
    )
    return account, conns


def entries(sandbox, key):
    return requests.get(f"{sandbox.pennylane_url}/_sandbox/companies/{key}", timeout=10).json()["company"]["entries"]


def pos_events(sandbox, key, days):
    """The POS's own events of ``days`` (read from the Kash.click stand-in): each gets one ledger entry."""
    events = set()
    for day in days:
        pos = requests.get(f"{sandbox.kashclick_url}/_sandbox/shops/{key}/day/{day}", timeout=10).json()
        events |= {f"order:{o['id']}" for o in pos["orders"]} | {f"payment:{p['id']}" for p in pos["payments"]}
        events |= {f"closing:{c['id']}" for c in pos["closings"]}
    return events


def assert_once_and_balanced(store, sandbox, account, key, days=(DAY,)):
    posted = entries(sandbox, key)
    pieces = Counter(e["piece_number"] for e in posted)
    assert posted and max(pieces.values()) == 1, [p for p, n in pieces.items() if n > 1]
    # every event the POS has for those days, exactly once — none missing, none extra
    assert pieces == Counter(f"{key}:{event}:r1" for event in pos_events(sandbox, key, days))
    for e in posted:
        lines = e.get("ledger_entry_lines") or e.get("lines")
        assert sum(Decimal(x["debit"]) for x in lines) == sum(Decimal(x["credit"]) for x in lines)
    states = Counter(
        r["state"]
        for r in store.conn.execute("SELECT state FROM tillflow.outbox WHERE account_id = %s", (account.id,)).fetchall()
    )
    store.conn.commit()
    assert set(states) <= {"confirmed", "reconciled"}, states
    assert states["confirmed"] + states["reconciled"] == len(posted)


def test_a_429_storm_and_lost_responses_still_post_every_event_exactly_once(store, sandbox, dags, mail):
    account, _ = add_account(store, sandbox, "storm")
    requests.post(
        f"{sandbox.pennylane_url}/_sandbox/faults", json={"rate_429": 0.3, "retry_after": "0", "seed": 11}, timeout=5
    ).raise_for_status()
    requests.post(
        f"{sandbox.pennylane_url}/_sandbox/lose",
        json={"count": 4, "paths": ["/api/external/v2/ledger_entries"]},
        timeout=5,
    ).raise_for_status()
    conf = {"accounts": ["storm"], "date_from": str(DAY), "date_to": str(DAY)}
    dagrun = dags["kashclick_to_pennylane"].test(run_conf=conf)
    assert dagrun.state == "success"
    log = requests.get(f"{sandbox.pennylane_url}/_sandbox/requests", timeout=10).json()
    assert sum(r["status"] == 429 for r in log) > 3  # it was a storm
    assert_once_and_balanced(store, sandbox, account, "storm")
    assert (
        store.conn.execute(
            "SELECT count(*) AS n FROM tillflow.outbox WHERE account_id = %s AND state = 'reconciled'", (account.id,)
        ).fetchone()["n"]
        == 4
    )  # each lost answer looked up, none posted again
    store.conn.commit()


CHILD = """
import json, sys
from tillflow import sync
from tillflow.sources.base import ConnectionInfo
from tillflow.specs import load_spec
spec = load_spec(sys.argv[1])
conns = {k: ConnectionInfo(conn_id=k, **{f: v for f, v in c.items() if f != "conn_type"})
         for k, c in json.load(open(sys.argv[2])).items()}
sync.run_shard(spec, dag_id=sys.argv[3], run_id="kill-ledger", shard=0, conns=conns.__getitem__)
"""


@pytest.mark.parametrize("flow", ["ledger", "history"])
def test_a_worker_killed_mid_posting_and_retried_posts_each_event_exactly_once(store, sandbox, tmp_path, flow):
    """The daily flow (a manual range) and the history import (due after activation, from the fiscal-year
    start): the worker is SIGKILLed mid-posting, the retry finishes it, every POS event is posted once."""
    from tillflow.sources.base import ConnectionInfo
    from tillflow.specs import load_spec
    from tillflow.sync import RunParams, plan_run, run_shard

    spec = load_spec(ROOT / "dags" / "kashclick_to_pennylane.yaml")
    now = datetime.now(UTC)
    key = f"killed-{flow}"
    if flow == "ledger":
        account, conns = add_account(store, sandbox, key, orders_per_day=6)
        days = [DAY - timedelta(days=1), DAY]
        params, manual = RunParams(date_from=days[0], date_to=days[-1]), True
    else:  # a week of history, activated ten minutes ago: the activation DAG's tick runs it
        account, conns = add_account(store, sandbox, key, orders_per_day=2, fiscal_year_start=DAY - timedelta(days=6))
        settings = account.settings.model_copy(update={"activated_at": now - timedelta(minutes=10)})
        store.update_settings(account.id, settings)
        params, manual = RunParams(), False
    dag_id = spec.flow(flow).dag_id
    planned = plan_run(
        store, spec, [spec.flow(flow)], dag_id=dag_id, run_id="kill-ledger", logical_date=now, params=params,
        manual=manual,
    )  # fmt: skip
    assert len(planned.items) == 1, planned.not_run
    if flow == "history":
        window = planned.items[0].window
        days = [window.start + timedelta(days=n) for n in range((window.end - window.start).days + 1)]
        assert window.start == DAY - timedelta(days=6) and len(days) >= 7
    conn_file = tmp_path / "conns.json"
    conn_file.write_text(json.dumps(conns))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROOT / "dags" / "kashclick_to_pennylane.yaml"), str(conn_file), dag_id],
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            confirmed = store.conn.execute(
                "SELECT count(*) AS n FROM tillflow.outbox WHERE account_id = %s AND state = 'confirmed'", (account.id,)
            ).fetchone()["n"]
            store.conn.commit()
            if confirmed >= 5:
                break
            assert child.poll() is None, "the posting finished before it could be killed"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    states = Counter(
        r["state"]
        for r in store.conn.execute("SELECT state FROM tillflow.outbox WHERE account_id = %s", (account.id,)).fetchall()
    )
    store.conn.commit()
    assert states["confirmed"] >= 5 and (states["claimed"] + states["sent"]) > 0, states  # killed mid-posting

    def retry():
        return run_shard(
            spec,
            dag_id=dag_id,
            run_id="kill-ledger",
            shard=0,
            conns=lambda cid: ConnectionInfo(conn_id=cid, **{f: v for f, v in conns[cid].items() if f != "conn_type"}),
        )

    result = retry()
    if result.outcomes and result.outcomes[0].status != "success":  # an unknown outcome: the next retry looks it up
        result = retry()
    assert_once_and_balanced(store, sandbox, account, key, days)
    if flow == "history":  # done once: the next tick of the activation DAG does not run it again
        later = plan_run(
            store, spec, [spec.flow(flow)], dag_id=dag_id, run_id="kill-ledger-later",
            logical_date=now + timedelta(hours=2), params=RunParams(), manual=False,
        )  # fmt: skip
        assert not later.items and "done" in later.not_run[key], later.not_run
