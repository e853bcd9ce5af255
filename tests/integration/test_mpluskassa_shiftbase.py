"""MplusKASSA → Shiftbase on real PostgreSQL against the SOAP and REST stand-ins: the mapping CLI (list, and a
Shiftbase id that does not exist refused on save), incl vs excl VAT on team days, refused credentials, and the
two notification addresses fed by real flow runs (a rejected turnover → revenue address, an employee the POS
does not list → import address, each once a day)."""

from __future__ import annotations

import json
import os
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from runs import run_flows
from tillflow.cli import main
from tillflow.sources.base import ConnectionInfo
from tillflow.specs import load_spec, parse_settings
from tillflow.sync import RunParams

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "dags" / "mpluskassa_to_shiftbase.yaml")
PORT = 7001
DAY = date(2026, 3, 3)  # a Tuesday in the past: the stand-in's data for it never changes (all three branches open)
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "read_timeout": 5, "max_retry_after": 1}


def org(key: str) -> dict:
    from sandbox.shiftbase import ShiftbaseApp

    return ShiftbaseApp.org_for(f"sb-{key}")


@pytest.fixture
def mplus_account(store, sandbox, mail_server):
    """Factory: an MplusKASSA → Shiftbase account on the stand-ins — branches 1 and 2 on teams, 3 not selected;
    employees 101–104 on users, 105 do not import — and its connections (``ConnectionInfo`` for runs,
    ``AIRFLOW_CONN_*`` for the CLI, removed after the test)."""
    names: list[str] = []

    def make(key="centrum", *, secret=None, vat="excl", flows=None, employees=True):
        ident = f"shop{PORT}"
        conns = {
            f"mpluskassa_{key}": ConnectionInfo(
                conn_id=f"mpluskassa_{key}",
                host=f"{sandbox.mpluskassa_url}/{PORT}",
                login=ident,
                password=secret or f"secret-{ident}",
                extra=FAST,
            ),
            f"shiftbase_{key}": ConnectionInfo(
                conn_id=f"shiftbase_{key}", host=f"{sandbox.shiftbase_url}/api", password=f"sb-{key}", extra=FAST
            ),
            "smtp_default": ConnectionInfo(
                conn_id="smtp_default",
                host="127.0.0.1",
                port=mail_server.port,
                extra={"disable_tls": True, "disable_ssl": True, "from_email": "tillflow@localhost"},
            ),
        }
        for conn_id in (f"mpluskassa_{key}", f"shiftbase_{key}"):
            info, env = conns[conn_id], f"AIRFLOW_CONN_{conn_id.upper()}"
            os.environ[env] = json.dumps(
                {"conn_type": "http", "host": info.host, "login": info.login, "password": info.password}
                | {"extra": info.extra}
            )
            names.append(env)
        o = org(key)
        settings = {"timezone": "Europe/Amsterdam", "vat": vat, "lookback_days": 1, "flows": flows or {}}
        account = store.upsert_account(
            SPEC.integration,
            key,
            name=key.title(),
            conn_id=f"mpluskassa_{key}",
            target_conn_id=f"shiftbase_{key}",
            settings=parse_settings(settings, spec=SPEC),
        )
        store.set_mapping(account.id, "branch", "1", o["teams"][0]["id"])
        store.set_mapping(account.id, "branch", "2", o["teams"][2]["id"])
        store.set_mapping(account.id, "branch", "3", None)
        if employees:
            for number, user in zip(("101", "102", "103", "104"), o["users"], strict=False):
                store.set_mapping(account.id, "employee", number, user["id"])
            store.set_mapping(account.id, "employee", "105", None)
        return account, conns, o

    yield make
    for env in names:
        os.environ.pop(env, None)


def run(store, conns, run_id, flows=("revenue", "clock_times"), day=DAY):
    params = RunParams(date_from=day, date_to=day)
    _, outcomes = run_flows(store, SPEC, conns, run_id=run_id, flows=flows, params=params)
    return {o.item.flow: o for o in outcomes}


def shiftbase(sandbox, key: str) -> dict:
    return requests.get(f"{sandbox.shiftbase_url}/_sandbox/accounts/sb-{key}", timeout=10).json()["account"]


def customer(sandbox, changes: dict) -> None:
    requests.post(f"{sandbox.mpluskassa_url}/_sandbox/customers/{PORT}", json=changes, timeout=5).raise_for_status()


def pos_turnover(sandbox, day: date) -> dict[str, tuple[int, int]]:
    """branch → (incl, excl) cents of ``day``, read from the SOAP stand-in with zeep directly (not tillflow)."""
    import zeep
    from zeep.transports import Transport

    session = requests.Session()
    session.params = {"ident": f"shop{PORT}", "secret": f"secret-shop{PORT}"}
    client = zeep.Client(f"{sandbox.mpluskassa_url}/{PORT}/MplusQapi?wsdl", transport=Transport(session=session))
    rows = client.service.reportTurnoverByBranch(fromFinancialDate=day, throughFinancialDate=day)
    rows = rows.turnover if hasattr(rows, "turnover") else rows
    return {str(r.branchNumber): (r.totalInclAmount, r.totalExclAmount) for r in rows}


# ------------------------------------------------------------------------------------------ mapping CLI


def test_mappings_list_shows_employees_with_the_hint_cost_centres_and_branches(store, sandbox, mplus_account, capsys):
    o = org("centrum")
    dept = o["departments"][1]["id"]
    account, _, _ = mplus_account(flows={"clock_times": {"cost_centers": {"20": dept, "30": "skip"}}}, employees=False)
    store.set_mapping(account.id, "employee", "101", o["users"][0]["id"])
    store.set_mapping(account.id, "employee", "105", None)
    store.set_mapping(account.id, "branch", "2", None)
    store.remove_mapping(account.id, "branch", "2")  # branch 2 unmapped

    code = main(["-i", SPEC.integration, "mappings", "list", "centrum"])
    out = capsys.readouterr().out
    assert code == 1, out  # something is unmapped
    sections: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        if not line.startswith("  "):
            current = sections.setdefault(line.split(" (")[0], {})
        elif not line.strip().startswith("("):
            current[line.split()[0]] = line
    branches, employees, cost_centres = sections["branches"], sections["employees"], sections["cost_centers"]
    assert set(branches) == {"1", "2", "3"} and set(cost_centres) == {"10", "20", "30"}
    assert f"→ {o['teams'][0]['id']}" in branches["1"] and "Centrum" in branches["1"]
    assert "UNMAPPED" in branches["2"] and "inactive (do not import)" in branches["3"]
    assert set(employees) == {"101", "102", "103", "104", "105"}  # 106 has no authorisation group: not listed
    assert f"→ {o['users'][0]['id']}" in employees["101"] and "Anna de Vries" in employees["101"]
    assert "inactive (do not import)" in employees["105"]
    assert all("UNMAPPED" in employees[n] for n in ("102", "103", "104"))
    assert "an employee missing here usually has no authorisation group in the POS" in out
    assert (
        "mode auto" in cost_centres["10"] and f"mode {dept}" in cost_centres["20"] and "mode skip" in cost_centres["30"]
    )
    assert out.rstrip().endswith("4 unmapped")  # branch 2 and employees 102–104


SOURCE_CONNECTIONS = {
    "ajour_to_planday": lambda sb: {
        "host": sb.ajour_url,
        "login": "api",
        "password": "pw-77x",
        "schema": "db",
        "extra": {"company_id": "77x"},
    },
    "kassatellen_to_eitje": lambda sb: {
        "host": sb.kassatellen_url,
        "login": "anna@example.com",
        "password": "pw-anna@example.com",
    },
    "mpluskassa_to_shiftbase": lambda sb: {
        "host": f"{sb.mpluskassa_url}/{PORT}",
        "login": f"shop{PORT}",
        "password": f"secret-shop{PORT}",
    },
    "kashclick_to_pennylane": lambda sb: {"host": sb.kashclick_url, "login": "shopx", "password": "pw-shopx"},
    "ccv_salespos_to_eaccounting": lambda sb: {"host": sb.ccv_url, "login": "pk-shopx", "password": "sk-shopx"},
}


@pytest.mark.parametrize("integration", sorted(SOURCE_CONNECTIONS))
def test_mappings_list_works_for_every_integrations_source(store, sandbox, capsys, monkeypatch, integration):
    assert {p.stem for p in (ROOT / "dags").glob("*.yaml")} == set(SOURCE_CONNECTIONS)
    spec = load_spec(ROOT / "dags" / f"{integration}.yaml")
    monkeypatch.setenv("AIRFLOW_CONN_LISTED_SOURCE", json.dumps(SOURCE_CONNECTIONS[integration](sandbox)))
    store.upsert_account(
        integration,
        "listed",
        name="Listed",
        conn_id="listed_source",
        target_conn_id="unused",
        settings=spec_settings(spec),
    )
    code = main(["-i", integration, "mappings", "list", "listed"])
    captured = capsys.readouterr()
    assert "error:" not in captured.err, captured.err  # a list, not a crash
    if spec.integration == "kashclick_to_pennylane":  # the ledger maps through its chart; the default one covers all
        assert code == 0 and "flows.ledger.chart" in captured.out, captured.out
        assert captured.out.rstrip().endswith("0 unmapped") and "→ account 530000" in captured.out
    else:  # nothing mapped yet
        assert code == 1 and captured.out.rstrip().endswith("unmapped") and "UNMAPPED" in captured.out


def spec_settings(spec):
    settings = {
        "timezone": spec.timezone,
        "start_date": "2026-01-01",
        "lookback_days": spec.flows[0].lookback_days.default,
    }
    if spec.integration == "kashclick_to_pennylane":
        settings["flows"] = {"ledger": {"fiscal_year_start": "2026-01-01"}}
    return parse_settings(settings, spec=spec)


def test_a_team_or_user_shiftbase_does_not_list_is_refused_when_the_mapping_is_saved(
    store, sandbox, mplus_account, capsys
):
    account, _, o = mplus_account(employees=False)
    store.remove_mapping(account.id, "branch", "1")
    capsys.readouterr()
    assert main(["-i", SPEC.integration, "mappings", "set", "centrum", "1", "999999"]) == 2
    err = capsys.readouterr().err
    assert "target_key: shiftbase has no team '999999'" in err and str(o["teams"][0]["id"]) in err
    assert main(["-i", SPEC.integration, "mappings", "set", "centrum", "101", "888888", "--kind", "employee"]) == 2
    err = capsys.readouterr().err
    assert "target_key: shiftbase has no user '888888'" in err and str(o["users"][0]["id"]) in err
    assert "1" not in store.mappings(account.id, "branch") and store.mappings(account.id, "employee") == {}

    team, user = str(o["teams"][0]["id"]), str(o["users"][0]["id"])
    assert main(["-i", SPEC.integration, "mappings", "set", "centrum", "1", team]) == 0
    assert main(["-i", SPEC.integration, "mappings", "set", "centrum", "101", user, "--kind", "employee"]) == 0
    assert main(["-i", SPEC.integration, "mappings", "set", "centrum", "105", "--inactive", "--kind", "employee"]) == 0
    assert store.mappings(account.id, "branch")["1"].target_key == team
    employees = store.mappings(account.id, "employee")
    assert employees["101"].target_key == user and employees["105"].inactive


# ------------------------------------------------------------------------------------------ revenue


@pytest.mark.parametrize("vat", ["incl", "excl"])
def test_the_team_day_turnover_is_incl_or_excl_vat_as_the_account_is_set(store, sandbox, mplus_account, vat):
    _, conns, o = mplus_account(key=f"vat{vat}", vat=vat)
    outcome = run(store, conns, f"vat-{vat}", flows=("revenue",))["revenue"]
    assert outcome.status == "success", outcome.error
    pos = pos_turnover(sandbox, DAY)
    assert pos["1"][0] > pos["1"][1] > 0  # the day has VAT: incl and excl differ
    column = 0 if vat == "incl" else 1
    expected = {
        (str(o["teams"][0]["id"]), DAY.isoformat()): Decimal(pos["1"][column]) / 100,
        (str(o["teams"][2]["id"]), DAY.isoformat()): Decimal(pos["2"][column]) / 100,
    }  # branch 3: not selected
    held = {
        (str(t["team_id"]), t["date"]): Decimal(t["turnover"]) for t in shiftbase(sandbox, f"vat{vat}")["team_days"]
    }
    assert held == expected


def test_a_refused_ident_or_secret_marks_the_account_auth_failed_with_one_error_and_no_retries(
    store, sandbox, mplus_account
):
    account, conns, _ = mplus_account(key="refused", secret="hunter2-not-it")
    outcomes = run(store, conns, "refused")
    assert set(outcomes) == {"revenue", "clock_times"}
    for flow, outcome in outcomes.items():
        assert outcome.status == "failed" and not outcome.retryable, flow  # Airflow does not retry it either
        assert outcome.error.count("ident/secret refused") == 1 and "hunter2" not in outcome.error
        assert "check the API ident and secret" in outcome.error
    flows = {f: st for (_, f), st in store.flow_states([account.id]).items()}
    assert {f: st["status"] for f, st in flows.items()} == {"revenue": "auth_failed", "clock_times": "auth_failed"}
    assert store.get_account(SPEC.integration, "refused").status == "auth_failed"
    log = requests.get(f"{sandbox.mpluskassa_url}/_sandbox/requests", timeout=5).json()
    calls = sorted((e["operation"], e["status"]) for e in log)
    assert calls == [("getShifts", 500), ("reportTurnoverByBranch", 500)]  # one call per flow, never repeated
    assert shiftbase(sandbox, "refused")["team_days"] == [] and shiftbase(sandbox, "refused")["timesheets"] == []


# ------------------------------------------------------------------------------------------ notifications


def test_a_revenue_problem_mails_the_revenue_address_and_a_clock_times_problem_the_import_address_once_a_day(
    store, sandbox, mplus_account, mail
):
    flows = {
        "revenue": {"notify_email": "revenue@centrum.example"},
        "clock_times": {"notify_email": "import@centrum.example"},
    }
    account, conns, _ = mplus_account(flows=flows)
    bad = {"branchNumber": 2, "financialDate": DAY.isoformat(), "totalInclAmount": -500, "totalExclAmount": -413}
    unlisted = {
        "shiftNumber": 990106,
        "branchNumber": 3,
        "financialDate": DAY.isoformat(),
        "employeeNumber": 106,  # no authorisation group: getEmployees does not list him
        "startTimestamp": f"{DAY}T09:00:00+01:00",
        "endTimestamp": f"{DAY}T13:00:00+01:00",
        "ended": True,
        "costCenterNumber": 10,
    }
    customer(sandbox, {"turnover": [bad], "add_shifts": [unlisted]})

    outcomes = run(store, conns, "notify-1")
    assert {f: o.status for f, o in outcomes.items()} == {"revenue": "success", "clock_times": "success"}
    by_address = {m["To"]: m for m in mail.messages}
    assert sorted(by_address) == ["import@centrum.example", "revenue@centrum.example"] and len(mail.messages) == 2
    revenue = by_address["revenue@centrum.example"].get_body(preferencelist=("plain",)).get_content()
    clock = by_address["import@centrum.example"].get_body(preferencelist=("plain",)).get_content()
    assert f"negative turnover for branch 2 on {DAY}" in revenue and "employee 106" not in revenue
    assert "employee 106 is not listed by the POS" in clock and "authorisation group" in clock
    assert "negative turnover" not in clock
    reasons = [r["reason"] for r in store.rejects(account.id)]
    assert any(r.startswith("employee 106 is not listed by the POS") for r in reasons)
    assert not any("employee 106 is not mapped" in r for r in reasons)  # unlisted, not "listed but unmapped"
    held = {t["team_id"] for t in shiftbase(sandbox, "centrum")["team_days"]}
    assert held == {account_team(store, account, "1")}  # branch 1 landed; branch 2's day went to rejects

    assert all(o.status == "success" for o in run(store, conns, "notify-2").values())  # 15 minutes later: same
    assert len(mail.messages) == 2  # once a day per problem and address, not every tick


def account_team(store, account, branch: str) -> str:
    return store.mappings(account.id, "branch")[branch].target_key
