"""End to end: kassatellen_to_eitje through Airflow (``dag.test()``) against the stand-ins on real PostgreSQL,
with injected faults (429, 5xx, timeouts) and a token that expires mid-run; expected values come straight
from the Kassatellen stand-in. Plus the activation DAG and a manual range that is idempotent."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from vendor_reads import eitje_records, kassatellen_rows

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {"11": "501", "12": "502", "13": None}
FAST_HTTP = {"backoff_base": 0.02, "backoff_max": 0.2, "max_retry_after": 0.5, "read_timeout": 1, "max_attempts": 8}


@pytest.fixture(scope="module")
def dags(airflow_db, mail_server):
    from tillflow.factory import build_dags
    from tillflow.specs import load_spec

    spec = load_spec(ROOT / "dags" / "kassatellen_to_eitje.yaml")
    return build_dags(spec.model_copy(update={"retry_delay_seconds": 1}))


def add_account(store, sandbox, key, **settings):
    from tillflow.specs import load_spec, parse_settings

    spec = load_spec(ROOT / "dags" / "kassatellen_to_eitje.yaml")
    email = f"{key}@example.nl"
    os.environ[f"AIRFLOW_CONN_KASSATELLEN_{key.upper()}"] = json.dumps(
        {
            "conn_type": "http",
            "host": sandbox.kassatellen_url,
            "login": email,
            "password": f"pw-{email}",
            "extra": FAST_HTTP,
        }
    )
    os.environ[f"AIRFLOW_CONN_EITJE_{key.upper()}"] = json.dumps(
        {
            "conn_type": "http",
            "host": sandbox.eitje_url,
            "login": f"env-{key}",
            "password": f"pw-env-{key}",
            "extra": {"partner_username": "tillflow", "partner_password": "pp-tillflow", **FAST_HTTP},
        }
    )
    account = store.upsert_account(
        "kassatellen_to_eitje",
        key,
        name=key.title(),
        conn_id=f"kassatellen_{key}",
        target_conn_id=f"eitje_{key}",
        settings=parse_settings({"timezone": "Europe/Amsterdam", "lookback_days": 1, **settings}, spec=spec),
    )
    for src, dst in MAPPING.items():
        store.set_mapping(account.id, "revenue_group", src, dst)
    return account


def pos_totals(sandbox, key, start: datetime, end: datetime) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for r in kassatellen_rows(sandbox.kassatellen_url, f"{key}@example.nl", start, end):
        if MAPPING.get(str(r["revenueGroupId"])):
            out[MAPPING[str(r["revenueGroupId"])]] += Decimal(str(r["amountInclVat"]))
    return dict(out)


def eitje(sandbox, key) -> list[dict]:
    return eitje_records(sandbox.eitje_url, f"env-{key}")


def test_hourly_tick_with_faults_and_an_expiring_token_lands_every_hour_once(store, sandbox, dags, mail):
    add_account(store, sandbox, "zuid")
    add_account(store, sandbox, "noord")
    for app in ("kassatellen", "eitje"):
        requests.post(
            f"{sandbox.urls[app]}/_sandbox/faults",
            json={
                "rate_429": 0.1,
                "rate_5xx": 0.1,
                "rate_timeout": 0.03,
                "timeout_seconds": 1.5,
                "retry_after": "0",
                "seed": 7,
            },
            timeout=5,
        ).raise_for_status()
    requests.post(f"{sandbox.kassatellen_url}/_sandbox/auth", json={"token_ttl": 1}, timeout=5).raise_for_status()
    tick = datetime(2026, 11, 21, 0, 7, tzinfo=UTC)  # 01:07 local: business day 20 Nov still open, plus the 19th
    dagrun = dags["kassatellen_to_eitje"].test(logical_date=tick)
    assert dagrun.state == "success"
    faults = requests.get(f"{sandbox.kassatellen_url}/_sandbox/requests", timeout=5).json()
    assert any(f["status"] in (429, 500, 502, 503, 504) for f in faults)  # faults were really injected
    # a token lives 1 s: tokens expired mid-run, and each was renewed by exactly one login — one login per
    # account's client to start with, then one per GET refused as expired (a 401 twice in a row fails the account)
    expired = [f for f in faults if f["path"].startswith("/api/") and f["status"] == 401]
    logins = [f for f in faults if f["path"] == "/auth/login" and f["status"] == 200]
    assert expired and len(logins) == 2 + len(expired)
    for app in ("kassatellen", "eitje"):
        requests.post(f"{sandbox.urls[app]}/_sandbox/faults", json={}, timeout=5).raise_for_status()
    for key in ("zuid", "noord"):
        start = datetime(2026, 11, 19, 4, tzinfo=UTC)  # business day 19 Nov starts 05:00 CET
        end = datetime(2026, 11, 21, 4, tzinfo=UTC)  # the stand-in has every past hour already
        pos = pos_totals(sandbox, key, start, end)
        rows = eitje(sandbox, key)
        held: dict[str, Decimal] = defaultdict(Decimal)
        for r in rows:
            held[str(r["revenue_group_id"])] += Decimal(str(r["amount"]))
        assert dict(held) == pos  # to the cent, nothing lost or doubled
        assert len({(r["revenue_group_id"], r["hour_start"]) for r in rows}) == len(rows)
        assert all(r["updated_count"] == 0 for r in rows)  # every hour written once despite retries

    # the next tick: nothing changed at the POS, so nothing is re-sent
    before = len(
        requests.get(f"{sandbox.eitje_url}/_sandbox/requests?path=/open_api/revenue_groups/5", timeout=5).json()
    )
    dags["kassatellen_to_eitje"].test(logical_date=tick + timedelta(hours=1))
    writes = requests.get(f"{sandbox.eitje_url}/_sandbox/requests?path=/open_api/revenue_groups/5", timeout=5).json()
    new = [w for w in writes[before:] if w["method"] == "PUT"]
    assert new == []


def test_manual_range_is_idempotent_and_the_activation_dag_fetches_the_month_once(store, sandbox, dags, mail):
    activated = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    account = add_account(store, sandbox, "west", activated_at=activated.isoformat())
    conf = {"accounts": ["west"], "date_from": "2026-11-10", "date_to": "2026-11-12"}
    assert dags["kassatellen_to_eitje"].test(run_conf=conf).state == "success"
    first = eitje(sandbox, "west")
    assert {r["date"] for r in first} == {"2026-11-10", "2026-11-11", "2026-11-12"}
    assert dags["kassatellen_to_eitje"].test(run_conf=conf).state == "success"
    assert eitje(sandbox, "west") == first  # idempotent: nothing re-sent

    act = dags["kassatellen_to_eitje_activation"]
    assert act.test(logical_date=activated + timedelta(minutes=5)).state == "success"
    days = {r["date"] for r in eitje(sandbox, "west")}
    assert min(days) == "2026-10-21" and len(days) == 32
    assert store.flow_state(account.id, "activation")["backfill_done_at"] is not None  # not due again
