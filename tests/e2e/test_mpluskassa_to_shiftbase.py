"""End to end: mpluskassa_to_shiftbase through Airflow (``dag.test()``) against the SOAP and REST stand-ins on
real PostgreSQL, with injected faults: revenue on team days (excl VAT, to the cent, from the POS read with
zeep directly), clock times one timesheet per shift (open → closed), cost-centre modes, do-not-import, the
unlisted employee to rejects and the import notification (real SMTP), once a day."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PORT = 7001  # the customer's MplusKASSA "port"
FAST_HTTP = {"backoff_base": 0.02, "backoff_max": 0.2, "max_retry_after": 0.5, "read_timeout": 3, "max_attempts": 6}


@pytest.fixture(scope="module")
def dag(airflow_db, mail_server):
    from tillflow.factory import build_dag
    from tillflow.specs import load_spec

    spec = load_spec(ROOT / "dags" / "mpluskassa_to_shiftbase.yaml")
    return build_dag(spec.model_copy(update={"retry_delay_seconds": 1}))


def org(key):
    from sandbox.shiftbase import ShiftbaseApp

    return ShiftbaseApp.org_for(key)


def add_account(store, sandbox, key="centrum"):
    from tillflow.specs import load_spec, parse_settings

    spec = load_spec(ROOT / "dags" / "mpluskassa_to_shiftbase.yaml")
    ident = f"shop{PORT}"
    os.environ[f"AIRFLOW_CONN_MPLUSKASSA_{key.upper()}"] = json.dumps(
        {
            "conn_type": "http",
            "host": f"{sandbox.mpluskassa_url}/{PORT}",
            "login": ident,
            "password": f"secret-{ident}",
            "extra": FAST_HTTP,
        }
    )
    os.environ[f"AIRFLOW_CONN_SHIFTBASE_{key.upper()}"] = json.dumps(
        {"conn_type": "http", "host": f"{sandbox.shiftbase_url}/api", "password": f"sb-{key}", "extra": FAST_HTTP}
    )
    o = org(f"sb-{key}")
    teams, users, depts = o["teams"], o["users"], o["departments"]
    settings = {
        "timezone": "Europe/Amsterdam",
        "vat": "excl",
        "lookback_days": 1,
        "flows": {
            "revenue": {"notify_email": "revenue@centrum.example"},
            "clock_times": {
                "notify_email": "import@centrum.example",
                "cost_centers": {"10": "auto", "20": depts[1]["id"], "30": "skip"},
            },
        },
    }
    account = store.upsert_account(
        spec.integration,
        key,
        name="Centrum",
        conn_id=f"mpluskassa_{key}",
        target_conn_id=f"shiftbase_{key}",
        settings=parse_settings(settings, spec=spec),
    )
    store.set_mapping(account.id, "branch", "1", teams[0]["id"])
    store.set_mapping(account.id, "branch", "2", teams[2]["id"])
    store.set_mapping(account.id, "branch", "3", None)  # a sector not selected
    for number, user in zip(("101", "102", "103", "104"), users, strict=False):
        store.set_mapping(account.id, "employee", number, user["id"])
    store.set_mapping(account.id, "employee", "105", None)  # do not import
    return account, o


def pos(sandbox, operation, **params):
    """Call the SOAP stand-in straight with zeep (not through tillflow)."""
    import zeep
    from zeep.transports import Transport

    session = requests.Session()
    session.params = {"ident": f"shop{PORT}", "secret": f"secret-shop{PORT}"}
    client = zeep.Client(f"{sandbox.mpluskassa_url}/{PORT}/MplusQapi?wsdl", transport=Transport(session=session))
    return getattr(client.service, operation)(**params)


def shiftbase(sandbox, key="centrum"):
    return requests.get(f"{sandbox.shiftbase_url}/_sandbox/accounts/sb-{key}", timeout=10).json()["account"]


def pin_the_pos_clock(sandbox) -> tuple[datetime, date]:
    """Pin the POS stand-in's "now" for the whole test, so no hour's turnover and no shift begins between the DAG
    runs and the read-backs, at whatever hour the test runs. Returns (the pinned instant, the business day the
    flows run for): now, or 23:00 of the current business day between midnight and the 05:00 cutoff, so the
    stand-in's "today" (where its open shift is) is the flows' current business day."""
    from tillflow.windows import business_date_of

    now = datetime.now(UTC).replace(microsecond=0)
    day = business_date_of(now, "Europe/Amsterdam")
    pinned = min(now, datetime.combine(day, time(23, 0), ZoneInfo("Europe/Amsterdam")).astimezone(UTC))
    requests.post(
        f"{sandbox.mpluskassa_url}/_sandbox/clock", json={"now": pinned.isoformat()}, timeout=5
    ).raise_for_status()
    return pinned, day


def test_revenue_and_clock_times_with_faults_then_a_shift_closes(store, sandbox, dag, mail):
    account, o = add_account(store, sandbox)
    now, business_day = pin_the_pos_clock(sandbox)
    # employee 106 (not listed: no authorisation group) works only some days in the stand-in: give them a shift on
    # the current business day, so the unlisted-employee reject and mail do not depend on the date the test runs
    requests.post(
        f"{sandbox.mpluskassa_url}/_sandbox/customers/{PORT}",
        timeout=5,
        json={
            "add_shifts": [
                {
                    "shiftNumber": 990106,
                    "branchNumber": 3,
                    "financialDate": str(business_day),
                    "employeeNumber": 106,
                    "startTimestamp": (now - timedelta(hours=2)).isoformat(),
                    "endTimestamp": (now - timedelta(hours=1)).isoformat(),
                    "ended": True,
                    "costCenterNumber": 10,
                }
            ]
        },
    ).raise_for_status()
    requests.post(
        f"{sandbox.mpluskassa_url}/_sandbox/faults", json={"rate_5xx": 0.15, "seed": 3}, timeout=5
    ).raise_for_status()
    requests.post(
        f"{sandbox.shiftbase_url}/_sandbox/faults",
        json={"rate_5xx": 0.1, "rate_429": 0.05, "retry_after": "0", "seed": 5},
        timeout=5,
    ).raise_for_status()
    dagrun = dag.test()
    assert dagrun.state == "success"
    for url in (sandbox.mpluskassa_url, sandbox.shiftbase_url):
        requests.post(f"{url}/_sandbox/faults", json={}, timeout=5).raise_for_status()
    activity = {r["flow"]: r for r in store.activity() if r["account_id"] == account.id}
    assert activity["revenue"]["status"] == "success" and activity["clock_times"]["status"] == "success"
    start, end = activity["revenue"]["window_start"], activity["revenue"]["window_end"]
    assert (start, end) == (business_day - timedelta(days=1), business_day)  # the current and the previous one

    # revenue: excl VAT per branch and day, on the mapped team, to the cent; branch 3 not selected
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    team_of = {"1": o["teams"][0]["id"], "2": o["teams"][2]["id"]}
    rows = pos(sandbox, "reportTurnoverByBranch", fromFinancialDate=start, throughFinancialDate=end)
    for r in rows.turnover if hasattr(rows, "turnover") else rows:
        if str(r.branchNumber) in team_of:
            expected[(team_of[str(r.branchNumber)], str(r.financialDate))] += Decimal(r.totalExclAmount) / 100
    held = {(str(t["team_id"]), t["date"]): Decimal(t["turnover"]) for t in shiftbase(sandbox)["team_days"]}
    assert held == dict(expected) and held

    # clock times: one timesheet per shift of a mapped employee, except 105 (do not import) and cost centre 30
    # (do not import); cost centre 20 books on its fixed department
    sheets = shiftbase(sandbox)["timesheets"]
    user_of = {n: u["id"] for n, u in zip(("101", "102", "103", "104"), o["users"], strict=False)}
    shifts = pos(sandbox, "getShifts", fromFinancialDate=start, throughFinancialDate=end)
    shifts = shifts.shift if hasattr(shifts, "shift") else shifts
    imported = [s for s in shifts if str(s.employeeNumber) in user_of and s.costCenterNumber != 30]
    assert any(s.costCenterNumber == 30 for s in shifts if str(s.employeeNumber) in user_of)  # there was one to skip
    assert Counter(str(s["user_id"]) for s in sheets) == Counter(str(user_of[str(s.employeeNumber)]) for s in imported)
    fixed = o["departments"][1]["id"]
    on_20 = {str(user_of[str(s.employeeNumber)]) for s in imported if s.costCenterNumber == 20}
    assert on_20 and all(str(s["department_id"]) == str(fixed) for s in sheets if str(s["user_id"]) in on_20)
    rejects = store.rejects(account.id)
    assert any(r["reason"].startswith("employee 106 is not listed by the POS") for r in rejects)  # no auth. group
    [note] = [m for m in mail.messages if m["To"] == "import@centrum.example"]
    assert "employee 106 is not listed" in note.get_body(preferencelist=("plain",)).get_content()

    # the open shift closes in the POS: the next tick updates its timesheet, no second one, no second mail
    view = requests.get(f"{sandbox.mpluskassa_url}/_sandbox/customers/{PORT}", timeout=5).json()
    open_shift = view["open_shift"]
    assert open_shift is not None and view["today"] == str(business_day)  # employee 101's, begun two hours ago
    assert any(str(s["user_id"]) == str(user_of["101"]) and not s["clocked_out"] for s in sheets)
    closing = now - timedelta(minutes=1)
    requests.post(
        f"{sandbox.mpluskassa_url}/_sandbox/customers/{PORT}",
        timeout=5,
        json={"shifts": {str(open_shift): {"endTimestamp": closing.isoformat(), "ended": True}}},
    ).raise_for_status()
    assert dag.test().state == "success"
    after = shiftbase(sandbox)["timesheets"]
    assert sorted(s["id"] for s in after) == sorted(s["id"] for s in sheets)  # updated in place, none added
    today_101 = [s for s in after if str(s["user_id"]) == str(user_of["101"]) and s["date"] == str(business_day)]
    assert today_101 and all(s["clocked_out"] for s in today_101)
    assert len([m for m in mail.messages if m["To"] == "import@centrum.example"]) == 1  # once a day
