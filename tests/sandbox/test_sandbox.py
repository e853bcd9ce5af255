"""Tests for the vendor sandbox (include/sandbox, contract in include/sandbox/CONTRACT.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include"))

from sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = ROOT / "include" / "sandbox" / "run.py"
MONDAY = "2026-11-23"


@pytest.fixture(scope="module")
def sb():
    sandbox = Sandbox(ajour_port=0, planday_port=0).start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(autouse=True)
def _reset(sb):
    for url in (sb.ajour_url, sb.planday_url):
        assert requests.post(f"{url}/_sandbox/reset", timeout=5).status_code == 200
    yield


# ------------------------------------------------------------------------------------------ Ajour helpers


def ajour_headers(company: str = "c100", database: str = "db1") -> dict[str, str]:
    return {"X-Ajour-Company": company, "X-Ajour-Database": database}


def ajour_get(sb, path: str, company: str = "c100", password: str | None = None, **params) -> requests.Response:
    return requests.get(
        f"{sb.ajour_url}{path}",
        params=params,
        headers=ajour_headers(company),
        auth=("user", password if password is not None else f"pw-{company}"),
        timeout=5,
    )


def revenue(sb, company: str = "c100", **params) -> list[dict]:
    resp = ajour_get(sb, "/api/v1/revenue", company=company, **params)
    assert resp.status_code == 200, resp.text
    return resp.json()["days"]


# ------------------------------------------------------------------------------------------ Planday helpers


def planday_token(sb, client_id: str) -> str:
    resp = requests.post(
        f"{sb.planday_url}/connect/token",
        data={"client_id": client_id, "grant_type": "refresh_token", "refresh_token": f"rt-{client_id}"},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    return body["access_token"]


def planday_session(sb, client_id: str) -> requests.Session:
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {planday_token(sb, client_id)}", "X-ClientId": client_id})
    return session


def portal_state(sb, client_id: str) -> dict:
    return requests.get(f"{sb.planday_url}/_sandbox/state", timeout=5).json()["portals"].get(client_id, {})


# ------------------------------------------------------------------------------------------ Ajour


def test_ajour_auth_ok_and_401_never_echoes_password(sb):
    assert ajour_get(sb, "/api/v1/locations").status_code == 200
    secret = "hunter2-very-secret"
    for resp in (
        ajour_get(sb, "/api/v1/locations", password=secret),
        requests.get(
            f"{sb.ajour_url}/api/v1/locations", headers=ajour_headers(database=""), auth=("u", "pw-c100"), timeout=5
        ),
        requests.get(f"{sb.ajour_url}/api/v1/revenue", headers=ajour_headers(), timeout=5),
    ):
        assert resp.status_code == 401
        assert resp.json()["error"] == "invalid_credentials"
        assert secret not in resp.text and "pw-c100" not in resp.text
    log = requests.get(f"{sb.ajour_url}/_sandbox/requests", timeout=5).json()
    assert secret not in json.dumps(log) and "Authorization" not in json.dumps(log)
    assert [e["status"] for e in log] == [200, 401, 401, 401]


def test_ajour_locations(sb):
    ids = [loc["id"] for loc in ajour_get(sb, "/api/v1/locations").json()["locations"]]
    assert ids == ["L1", "L2", "L3", "L4"]
    popup = ajour_get(sb, "/api/v1/locations", company="c200x").json()["locations"]
    assert popup[-1] == {"id": "L5", "name": "Pop-up"} and len(popup) == 5


def test_ajour_revenue_deterministic_and_vat(sb):
    first = revenue(sb, **{"from": "2026-11-20", "to": "2026-11-26"})
    second = revenue(sb, **{"from": "2026-11-20", "to": "2026-11-26"})
    assert first == second
    assert len(first) == 7 * 4 - 1  # Takeaway has no Monday row
    by_key = {(r["date"], r["locationId"]): r for r in first}
    assert by_key[("2026-11-20", "L1")]["totalInclVat"] != by_key[("2026-11-21", "L1")]["totalInclVat"]
    for row in first:
        incl, excl = Decimal(row["totalInclVat"]), Decimal(row["totalExclVat"])
        assert Decimal(0) <= incl <= Decimal("5000.00")
        assert row["totalInclVat"] == f"{incl:.2f}" and row["totalExclVat"] == f"{excl:.2f}"
        assert excl == (incl / Decimal("1.25")).quantize(Decimal("0.01"))
        assert isinstance(row["receipts"], int)
    # A narrower query and a single location return the same figures.
    single = revenue(sb, location="L2", **{"from": "2026-11-21", "to": "2026-11-21"})
    assert single == [by_key[("2026-11-21", "L2")]]
    # Another company has other figures.
    other = revenue(sb, company="c101", location="L2", **{"from": "2026-11-21", "to": "2026-11-21"})
    assert other[0]["totalInclVat"] != single[0]["totalInclVat"]


def test_ajour_takeaway_closed_on_mondays(sb):
    rows = revenue(sb, location="L4", **{"from": "2026-11-01", "to": "2026-11-30"})
    dates = {r["date"] for r in rows}
    assert MONDAY not in dates and "2026-11-24" in dates
    assert len(rows) == 30 - 5  # November 2026 has five Mondays


def test_ajour_enabled_from_and_bump(sb):
    assert revenue(sb, **{"from": "2025-12-30", "to": "2026-01-01"}) != []
    assert {r["date"] for r in revenue(sb, **{"from": "2025-12-30", "to": "2026-01-01"})} == {"2026-01-01"}
    params = {"from": "2026-11-20", "to": "2026-11-21"}
    before = {(r["date"], r["locationId"]): r for r in revenue(sb, **params)}
    resp = requests.post(
        f"{sb.ajour_url}/_sandbox/companies/c100",
        json={"enabled_from": "2026-11-21", "bump": {"L1": "10.00"}},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    after = {(r["date"], r["locationId"]): r for r in revenue(sb, **params)}
    assert {d for d, _ in after} == {"2026-11-21"}
    old, new = before[("2026-11-21", "L1")], after[("2026-11-21", "L1")]
    assert Decimal(new["totalInclVat"]) == Decimal(old["totalInclVat"]) + Decimal("10.00")
    assert Decimal(new["totalExclVat"]) == (Decimal(new["totalInclVat"]) / Decimal("1.25")).quantize(Decimal("0.01"))
    assert after[("2026-11-21", "L2")] == before[("2026-11-21", "L2")]
    state = requests.get(f"{sb.ajour_url}/_sandbox/state", timeout=5).json()
    assert state["companies"]["c100"] == {"enabled_from": "2026-11-21", "bump": {"L1": "10.00"}}


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"to": "2026-11-20"}, "from"),
        ({"from": "2026-11-20"}, "to"),
        ({"from": "20261120", "to": "2026-11-21"}, "from"),
        ({"from": "2026-11-20", "to": "2026-02-30"}, "to"),
        ({"from": "2026-11-20", "to": "2026-11-19"}, "to"),
        ({"from": "2026-01-01", "to": "2026-03-04"}, "from"),  # 63 days
        ({"from": "2026-11-20", "to": "2026-11-20", "location": "L9"}, "location"),
    ],
)
def test_ajour_bad_range_400(sb, params, named):
    resp = ajour_get(sb, "/api/v1/revenue", **params)
    assert resp.status_code == 400
    assert f"'{named}'" in resp.json()["message"]


def test_ajour_62_days_is_allowed(sb):
    assert len({r["date"] for r in revenue(sb, **{"from": "2026-01-01", "to": "2026-03-03"})}) == 62


# ------------------------------------------------------------------------------------------ Planday


def test_planday_token_flow_and_401(sb):
    bad = requests.post(
        f"{sb.planday_url}/connect/token",
        data={"client_id": "p1", "grant_type": "refresh_token", "refresh_token": "nope"},
        timeout=5,
    )
    assert bad.status_code == 400 and bad.json() == {"error": "invalid_grant"}
    token = planday_token(sb, "p1")
    url = f"{sb.planday_url}/revenue/v1.0/revenueunits"
    ok = requests.get(url, headers={"Authorization": f"Bearer {token}", "X-ClientId": "p1"}, timeout=5)
    assert ok.status_code == 200
    for headers in (
        {"X-ClientId": "p1"},
        {"Authorization": "Bearer deadbeef", "X-ClientId": "p1"},
        {"Authorization": f"Bearer {token}", "X-ClientId": "p2"},
        {"Authorization": f"Bearer {token}"},
    ):
        assert requests.get(url, headers=headers, timeout=5).status_code == 401
    # Expiring tokens via the control endpoint makes the next call 401.
    assert requests.post(f"{sb.planday_url}/_sandbox/tokens/expire", json={}, timeout=5).json()["expired"] == 1
    assert (
        requests.get(url, headers={"Authorization": f"Bearer {token}", "X-ClientId": "p1"}, timeout=5).status_code
        == 401
    )


def test_planday_units_paging(sb):
    session = planday_session(sb, "p-small")
    small = session.get(f"{sb.planday_url}/revenue/v1.0/revenueunits", timeout=5).json()
    assert small["paging"] == {"offset": 0, "limit": 50, "total": 3}
    assert [u["id"] for u in small["data"]] == [1001, 1002, 1003]
    assert small["data"][2] == {"id": 1003, "name": "Takeaway", "departmentId": 1}

    big = planday_session(sb, "big-portal")
    ids, offset, pages = [], 0, 0
    while True:
        page = big.get(f"{sb.planday_url}/revenue/v1.0/revenueunits", params={"offset": offset, "limit": 50}, timeout=5)
        body = page.json()
        assert set(body) == {"paging", "data"}
        assert body["paging"] == {"offset": offset, "limit": 50, "total": 120}
        pages += 1
        ids += [u["id"] for u in body["data"]]
        offset += 50
        if offset >= body["paging"]["total"]:
            break
    assert pages == 3 and ids == list(range(2001, 2121))
    for bad in ({"limit": 51}, {"limit": 0}, {"offset": -1}, {"limit": "x"}):
        resp = big.get(f"{sb.planday_url}/revenue/v1.0/revenueunits", params=bad, timeout=5)
        assert resp.status_code == 400 and resp.json()["message"]


def test_planday_revenue_upsert_and_read_back(sb):
    session = planday_session(sb, "p-rev")
    url = f"{sb.planday_url}/revenue/v1.0/revenue"
    first = session.post(url, json={"revenueUnitId": 1001, "date": "2026-11-24", "turnover": 1234.5}, timeout=5)
    assert first.status_code == 200, first.text
    assert b'"turnover": 1234.50' in first.content  # a JSON number with the exact digits
    second = session.post(
        url,
        data=b'{"revenueUnitId": 1001, "date": "2026-11-24", "turnover": 99.9, "description": "x"}',
        timeout=5,
        headers={"Content-Type": "application/json"},
    )
    assert second.status_code == 200
    revenue_state = portal_state(sb, "p-rev")["revenue"]
    day_schedule = first.json()["data"]["dayScheduleId"]
    assert revenue_state == [
        {
            "revenueUnitId": 1001,
            "date": "2026-11-24",
            "turnover": "99.90",
            "description": "x",
            "dayScheduleId": day_schedule,
            "writes": 2,
            "manual": False,
        }
    ]
    assert second.json(parse_float=Decimal) == {
        "data": {
            "revenueUnitId": 1001,
            "dayScheduleId": day_schedule,  # the same record: Planday keeps one value per unit and day
            "date": "2026-11-24",
            "turnover": Decimal("99.90"),
            "description": "x",
        }
    }
    read = session.get(url, params={"revenueUnitId": 1001, "from": "2026-11-01", "to": "2026-11-30"}, timeout=5)
    assert read.json(parse_float=Decimal) == {
        "paging": {"offset": 0, "limit": 50, "total": 1},
        "data": [
            {
                "revenueUnitId": 1001,
                "dayScheduleId": day_schedule,
                "date": "2026-11-24",
                "turnover": Decimal("99.90"),
                "description": "x",
            }
        ],
    }
    assert session.get(url, params={"revenueUnitId": 1002}, timeout=5).json() == {
        "paging": {"offset": 0, "limit": 50, "total": 0},
        "data": [],
    }

    # A value entered by hand is not an API write.
    manual = requests.post(
        f"{sb.planday_url}/_sandbox/portals/p-rev/revenue",
        json={"revenueUnitId": 1002, "date": "2026-11-24", "turnover": "5"},
        timeout=5,
    )
    assert manual.status_code == 200
    rec = next(r for r in portal_state(sb, "p-rev")["revenue"] if r["revenueUnitId"] == 1002)
    assert rec["manual"] is True and rec["writes"] == 0 and rec["turnover"] == "5.00"


def test_planday_revenue_validation_and_409(sb):
    session = planday_session(sb, "p-val")
    url = f"{sb.planday_url}/revenue/v1.0/revenue"
    cases = [
        ({"revenueUnitId": 9999, "date": "2026-11-24", "turnover": 1}, 404),
        ({"revenueUnitId": "1001", "date": "2026-11-24", "turnover": 1}, 400),
        ({"revenueUnitId": 1001, "date": "24-11-2026", "turnover": 1}, 400),
        ({"revenueUnitId": 1001, "date": "2026-11-24", "turnover": "12,34,5"}, 400),
        ({"revenueUnitId": 1001, "date": "2026-11-24"}, 400),
        ({"date": "2026-11-24", "turnover": 1}, 400),
        ({"revenueUnitId": 1001, "turnover": 1}, 400),
        ({"revenueUnitId": 1001, "date": "2026-11-24", "turnover": 1, "description": 5}, 400),
        ({"revenueUnitId": 1003, "date": MONDAY, "turnover": 10}, 409),
    ]
    for body, status in cases:
        time.sleep(0.11)  # under the portal's 10 requests/s
        resp = session.post(url, json=body, timeout=5)
        assert resp.status_code == status, (body, resp.text)
    time.sleep(1)
    # Planday's DTO types turnover as a number: a string is refused, naming the field and the type
    refused = session.post(url, json={"revenueUnitId": 1001, "date": "2026-11-24", "turnover": "10.00"}, timeout=5)
    assert refused.status_code == 400
    assert refused.json() == {"message": "'turnover' must be a JSON number, got string \"10.00\""}
    assert session.post(url, json={"revenueUnitId": 1003, "date": MONDAY, "turnover": 1}, timeout=5).json() == {
        "message": f"No opening day on date {MONDAY}"
    }
    assert session.post(url, json={"revenueUnitId": 1001, "date": MONDAY, "turnover": 1}, timeout=5).status_code == 200
    assert portal_state(sb, "p-val")["revenue"][0]["date"] == MONDAY
    assert len(portal_state(sb, "p-val")["revenue"]) == 1
    big = planday_session(sb, "big-409")
    assert big.post(url, json={"revenueUnitId": 2003, "date": MONDAY, "turnover": 1}, timeout=5).status_code == 200


def test_planday_rate_limit(sb):
    session = planday_session(sb, "p-rate")
    url = f"{sb.planday_url}/revenue/v1.0/revenueunits"
    responses = [session.get(url, timeout=5) for _ in range(15)]
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 10 and 429 in statuses, statuses
    assert statuses[:10] == [200] * 10
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["Retry-After"] == "1"
    # Planday's format: the nearest window's quota, then the whole policy (per portal, per client id)
    assert limited.headers["x-ratelimit-limit"] == "10, 10;w=1, 500;w=60, 100;w=1, 2000;w=60"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) >= 1
    ok = responses[0]
    assert ok.headers["x-ratelimit-limit"].startswith("10, ") and ok.headers["x-ratelimit-remaining"] == "9"
    # Another portal is not affected, and the token endpoint is never limited.
    assert planday_session(sb, "p-other").get(url, timeout=5).status_code == 200
    time.sleep(1.05)
    assert session.get(url, timeout=5).status_code == 200


# ------------------------------------------------------------------------------------------ faults and control


def set_faults(url: str, **cfg) -> dict:
    resp = requests.post(f"{url}/_sandbox/faults", json=cfg, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["faults"]


def test_fault_5xx_leaves_state_unchanged(sb):
    session = planday_session(sb, "p-5xx")
    set_faults(sb.planday_url, rate_5xx=1.0, seed=7, paths=["/revenue"])
    codes = set()
    for day in ("2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27", "2026-11-28"):
        resp = session.post(
            f"{sb.planday_url}/revenue/v1.0/revenue",
            json={"revenueUnitId": 1001, "date": day, "turnover": 1},
            timeout=5,
        )
        codes.add(resp.status_code)
    assert codes <= {500, 502, 503} and codes
    assert portal_state(sb, "p-5xx")["revenue"] == []
    log = requests.get(f"{sb.planday_url}/_sandbox/requests", params={"path": "/revenue"}, timeout=5).json()
    assert len(log) == 5 and all(e["status"] >= 500 for e in log)
    # The token endpoint does not match `paths`, so it is unaffected.
    planday_token(sb, "p-5xx")
    set_faults(sb.planday_url)  # {} clears
    assert (
        session.post(
            f"{sb.planday_url}/revenue/v1.0/revenue", json={"revenueUnitId": 1001, "date": "2026-11-24", "turnover": 1}
        ).status_code
        == 200
    )


def test_fault_sequence_is_seeded(sb):
    url = f"{sb.planday_url}/revenue/v1.0/revenueunits"

    def run(client_id: str) -> list[int]:
        session = planday_session(sb, client_id)  # a fresh portal each time: no rate limit in the way
        set_faults(sb.planday_url, rate_5xx=0.5, seed=42, paths=["/revenue/v1.0/revenueunits"])
        return [session.get(url, timeout=5).status_code for _ in range(8)]

    first = run("p-seed-1")
    assert first == run("p-seed-2")
    assert 200 in first and any(code >= 500 for code in first)


def test_fault_429_carries_retry_after(sb):
    set_faults(sb.ajour_url, rate_429=1.0, retry_after="Wed, 25 Nov 2026 10:00:00 GMT")
    resp = ajour_get(sb, "/api/v1/locations")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "Wed, 25 Nov 2026 10:00:00 GMT"
    set_faults(sb.planday_url, rate_429=1.0, retry_after="3", paths=["/revenue"])
    session = planday_session(sb, "p-429")
    resp = session.get(f"{sb.planday_url}/revenue/v1.0/revenueunits", timeout=5)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "3"


def test_fault_timeout_then_504(sb):
    set_faults(sb.ajour_url, rate_timeout=1.0, timeout_seconds=0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sb.ajour_url}/api/v1/locations", headers=ajour_headers(), auth=("u", "pw-c100"), timeout=0.1)
    started = time.monotonic()
    assert ajour_get(sb, "/api/v1/locations").status_code == 504
    assert time.monotonic() - started >= 0.25


def test_fault_malformed(sb):
    params = {"from": "2026-11-01", "to": "2026-11-30"}
    clean = revenue(sb, **params)
    set_faults(sb.ajour_url, rate_malformed=0.3, seed=3)
    faulty = revenue(sb, **params)
    assert len(faulty) == len(clean)
    broken = [i for i, row in enumerate(faulty) if row["totalInclVat"] == "12,34,5"]
    assert 0 < len(broken) < len(faulty)
    for i, (good, bad) in enumerate(zip(clean, faulty, strict=True)):
        if i in broken:
            assert {**bad, "totalInclVat": good["totalInclVat"]} == good
        else:
            assert bad == good
    # Elsewhere malformed means a 200 whose body is not JSON.
    set_faults(sb.ajour_url, rate_malformed=1.0)
    resp = ajour_get(sb, "/api/v1/locations")
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        json.loads(resp.text)


def test_faults_validation(sb):
    assert requests.post(f"{sb.ajour_url}/_sandbox/faults", json={"rate_500": 1}, timeout=5).status_code == 400
    assert requests.post(f"{sb.ajour_url}/_sandbox/faults", json={"rate_5xx": 2}, timeout=5).status_code == 400
    assert (
        requests.post(f"{sb.ajour_url}/_sandbox/faults", json={"rate_5xx": 0.6, "rate_429": 0.6}, timeout=5).status_code
        == 400
    )


def test_reset_forgets_everything(sb):
    session = planday_session(sb, "p-reset")
    session.post(
        f"{sb.planday_url}/revenue/v1.0/revenue", json={"revenueUnitId": 1001, "date": "2026-11-24", "turnover": 1}
    )
    requests.post(f"{sb.ajour_url}/_sandbox/companies/c100", json={"bump": {"L1": 5}}, timeout=5)
    set_faults(sb.planday_url, rate_5xx=1.0, paths=["/revenue"])
    for url in (sb.ajour_url, sb.planday_url):
        assert requests.post(f"{url}/_sandbox/reset", timeout=5).json() == {"ok": True}
        assert requests.get(f"{url}/_sandbox/requests", timeout=5).json() == []
    assert requests.get(f"{sb.planday_url}/_sandbox/state", timeout=5).json() == {"portals": {}}
    assert requests.get(f"{sb.ajour_url}/_sandbox/state", timeout=5).json() == {"companies": {}}
    assert requests.get(f"{sb.planday_url}/_sandbox/faults", timeout=5).json()["faults"]["rate_5xx"] == 0
    # Tokens are forgotten too.
    resp = session.get(f"{sb.planday_url}/revenue/v1.0/revenueunits", timeout=5)
    assert resp.status_code == 401


# ------------------------------------------------------------------------------------------ run.py


def run_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN_PY), *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )


ANY_PORTS = (
    "--ajour-port",
    "0",
    "--planday-port",
    "0",
    "--kassatellen-port",
    "0",
    "--eitje-port",
    "0",
    "--shiftbase-port",
    "0",
    "--mpluskassa-port",
    "0",
    "--kashclick-port",
    "0",
    "--pennylane-port",
    "0",
    "--ccv-port",
    "0",
    "--eaccounting-port",
    "0",
)


def test_run_py_start_status_stop(tmp_path):
    state_dir = tmp_path / "state"
    common = ["--state-dir", str(state_dir)]
    assert run_py("status", *common, cwd=tmp_path).returncode == 1
    assert run_py("start", "--latency-ms", "-1", *common, cwd=tmp_path).returncode == 2
    started = run_py("start", *ANY_PORTS, "--latency-ms", "20", *common, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    try:
        info = json.loads((state_dir / "sandbox.json").read_text())
        for url in (info["ajour_url"], info["planday_url"]):
            assert requests.get(f"{url}/_sandbox/config", timeout=5).json()["latency_ms"] == 20.0
        assert int((state_dir / "sandbox.pid").read_text()) == info["pid"]
        assert info["ajour_url"] in started.stdout and info["planday_url"] in started.stdout
        assert requests.get(f"{info['ajour_url']}/_sandbox/state", timeout=5).status_code == 200
        assert requests.get(f"{info['planday_url']}/_sandbox/state", timeout=5).status_code == 200

        status = run_py("status", *common, cwd=tmp_path)
        assert status.returncode == 0 and info["planday_url"] in status.stdout
        again = run_py("start", *ANY_PORTS, *common, cwd=tmp_path)
        assert again.returncode == 0 and "already running" in again.stdout
        assert json.loads((state_dir / "sandbox.json").read_text())["pid"] == info["pid"]
    finally:
        stopped = run_py("stop", *common, cwd=tmp_path)
    assert stopped.returncode == 0
    assert not (state_dir / "sandbox.json").exists() and not (state_dir / "sandbox.pid").exists()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{info['ajour_url']}/_sandbox/state", timeout=2)
    assert run_py("status", *common, cwd=tmp_path).returncode == 1
    assert run_py("stop", *common, cwd=tmp_path).returncode == 0


def test_planday_refuses_chosen_rows_with_a_vendor_message(sb):
    session = planday_session(sb, "p-ref")
    url = f"{sb.planday_url}/revenue/v1.0/revenue"
    rule = [{"revenueUnitId": 1002, "date": "2026-11-20", "status": 400, "message": "Turnover exceeds the maximum"}]
    assert requests.post(f"{sb.planday_url}/_sandbox/refuse", json=rule, timeout=5).json() == {"refused": 1}
    bad = session.post(url, json={"revenueUnitId": 1002, "date": "2026-11-20", "turnover": 5}, timeout=5)
    assert (bad.status_code, bad.json()) == (400, {"message": "Turnover exceeds the maximum"})
    ok = session.post(url, json={"revenueUnitId": 1001, "date": "2026-11-20", "turnover": 5}, timeout=5)
    assert ok.status_code == 200
    assert requests.post(f"{sb.planday_url}/_sandbox/refuse", json={"x": 1}, timeout=5).status_code == 400


def test_latency_delays_every_api_call_and_concurrent_calls_overlap(sb):
    import time
    from concurrent.futures import ThreadPoolExecutor

    config = f"{sb.ajour_url}/_sandbox/config"
    assert requests.post(config, json={"latency_ms": 300}, timeout=5).json() == {
        "latency_ms": 300.0,
        "lenient_types": False,
    }
    assert requests.post(config, json={"latency_ms": "fast"}, timeout=5).status_code == 400
    assert requests.post(config, json={"delay": 1}, timeout=5).status_code == 400

    def call(_):
        start = time.monotonic()
        requests.get(f"{sb.ajour_url}/api/v1/locations", timeout=5)
        return time.monotonic() - start

    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        each = list(pool.map(call, range(10)))
    assert min(each) >= 0.3  # every call waited
    assert time.monotonic() - started < 1.5  # side by side, not one after the other (10 × 0.3 s = 3 s)
    requests.post(f"{sb.ajour_url}/_sandbox/reset", timeout=5)
    assert requests.get(config, timeout=5).json() == {"latency_ms": 0.0, "lenient_types": False}


# ------------------------------------------------------------------------------------------ strictness


def post_revenue(session: requests.Session, sb, body, **kwargs) -> requests.Response:
    return session.post(f"{sb.planday_url}/revenue/v1.0/revenue", json=body, timeout=5, **kwargs)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"revenueUnitId": 1001, "date": "2026-11-24", "turnover": "12.50"}, "'turnover' must be a JSON number"),
        ({"revenueUnitId": 1001, "date": "2026-11-24", "turnover": True}, "'turnover' must be a JSON number"),
        ({"revenueUnitId": 1001, "date": "2026-11-24", "turnover": [1]}, "'turnover' must be a JSON number"),
        ({"revenueUnitId": "1001", "date": "2026-11-24", "turnover": 1}, "'revenueUnitId' must be a JSON integer"),
        ({"revenueUnitId": 1001.0, "date": "2026-11-24", "turnover": 1}, "'revenueUnitId' must be a JSON integer"),
        ({"revenueUnitId": 1001, "turnover": 1}, "'date' is required"),
        ({"revenueUnitId": 1001, "date": None, "turnover": 1}, "'date' is required"),
        ({"date": "2026-11-24"}, "'revenueUnitId' and 'turnover' are required"),
        ({"revenueUnitId": 1001, "date": "2026-11-24T00:00:00", "turnover": 1}, "'date' must be a string YYYY-MM-DD"),
        ({"revenueUnitId": 1001, "date": 20261124, "turnover": 1}, "'date' must be a string YYYY-MM-DD"),
        ({"revenueUnitId": 1001, "date": "2026-02-30", "turnover": 1}, "'date'"),
        ({"revenueUnitId": 1001, "date": "2026-11-24", "turnover": 1, "description": 5}, "'description' must be"),
        ([{"revenueUnitId": 1001}], "body must be a JSON object"),
    ],
)
def test_planday_revenue_refuses_wrong_types_with_a_message_naming_the_field(sb, body, named):
    session = planday_session(sb, f"p-type-{abs(hash(json.dumps(body))) % 10**6}")
    resp = post_revenue(session, sb, body)
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"message"} and named in resp.json()["message"]
    assert portal_state(sb, session.headers["X-ClientId"])["revenue"] == []


def test_planday_revenue_body_rules_that_the_dto_allows(sb):
    session = planday_session(sb, "p-dto")
    url = f"{sb.planday_url}/revenue/v1.0/revenue"
    # a field Planday's DTO does not have is ignored (model binding drops it), not stored
    extra = post_revenue(session, sb, {"revenueUnitId": 1001, "date": "2026-11-24", "turnover": 1, "currency": "DKK"})
    assert extra.status_code == 200 and "currency" not in extra.json()["data"]
    # description is optional; null is the same as leaving it out
    assert post_revenue(session, sb, {"revenueUnitId": 1002, "date": "2026-11-24", "turnover": 2}).status_code == 200
    nulled = {"revenueUnitId": 1002, "date": "2026-11-25", "turnover": 2, "description": None}
    assert post_revenue(session, sb, nulled).status_code == 200
    # more than two decimals: accepted (a JSON number), stored rounded half-up to cents
    precise = session.post(
        url,
        data=b'{"revenueUnitId": 1001, "date": "2026-11-26", "turnover": 10.005}',
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert precise.status_code == 200 and b'"turnover": 10.01' in precise.content
    # JSON only: NaN is not JSON, and a body without Content-Type application/json is 415
    nan = session.post(
        url,
        data=b'{"revenueUnitId": 1001, "date": "2026-11-27", "turnover": NaN}',
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert nan.status_code == 400 and "not valid JSON" in nan.json()["message"]
    form = session.post(url, data={"revenueUnitId": "1001", "date": "2026-11-27", "turnover": "1"}, timeout=5)
    assert form.status_code == 415 and "application/json" in form.json()["message"]
    revenue = {(r["revenueUnitId"], r["date"]): r for r in portal_state(sb, "p-dto")["revenue"]}
    assert set(revenue) == {(1001, "2026-11-24"), (1002, "2026-11-24"), (1002, "2026-11-25"), (1001, "2026-11-26")}
    assert revenue[(1001, "2026-11-26")]["turnover"] == "10.01" and revenue[(1002, "2026-11-25")]["description"] == ""
    # one schedule day per department and date: units of the same department share it
    assert revenue[(1001, "2026-11-24")]["dayScheduleId"] == revenue[(1002, "2026-11-24")]["dayScheduleId"]
    assert revenue[(1002, "2026-11-24")]["dayScheduleId"] != revenue[(1002, "2026-11-25")]["dayScheduleId"]


def test_planday_paging_limits_on_every_list(sb):
    session = planday_session(sb, "p-pages")
    url = f"{sb.planday_url}/revenue/v1.0/revenue"
    for day in range(1, 8):
        body = {"revenueUnitId": 1001, "date": f"2026-11-{day:02d}", "turnover": day}
        assert post_revenue(session, sb, body).status_code == 200
    time.sleep(1.05)  # under the portal's 10 requests/s
    page = session.get(url, params={"revenueUnitId": 1001, "offset": 5, "limit": 2}, timeout=5).json()
    assert page["paging"] == {"offset": 5, "limit": 2, "total": 7}
    assert [r["date"] for r in page["data"]] == ["2026-11-06", "2026-11-07"]
    for params, named in (
        ({"limit": 51}, "'limit'"),
        ({"limit": 0}, "'limit'"),
        ({"offset": -1}, "'offset'"),
        ({"offset": "x"}, "'offset'"),
    ):
        for path in ("/revenue/v1.0/revenue", "/revenue/v1.0/revenueunits"):
            resp = session.get(f"{sb.planday_url}{path}", params=params, timeout=5)
            assert resp.status_code == 400 and named in resp.json()["message"], (path, params)
        time.sleep(0.25)


def test_planday_reject_fault_refuses_one_row_of_fifty_with_the_vendors_message(sb):
    rule = {
        "revenueUnitId": 1002,
        "date": "2026-11-20",
        "status": 400,
        "message": "Turnover exceeds the allowed maximum",
    }
    faults = set_faults(sb.planday_url, reject=[rule])
    assert faults["reject"] == [rule]
    assert requests.get(f"{sb.planday_url}/_sandbox/faults", timeout=5).json()["faults"]["reject"] == [rule]
    sessions = [planday_session(sb, f"p-rej{i}") for i in range(5)]  # 10 rows per portal: under its limit
    answers = {}
    for n, (unit, day) in enumerate((u, d) for u in (1001, 1002) for d in range(1, 26)):
        body = {"revenueUnitId": unit, "date": f"2026-11-{day:02d}", "turnover": 100 + day}
        answers[(unit, day)] = post_revenue(sessions[n % 5], sb, body)
    refused = {key: r for key, r in answers.items() if r.status_code != 200}
    assert list(refused) == [(1002, 20)]
    assert refused[(1002, 20)].status_code == 400
    assert refused[(1002, 20)].json() == {"message": "Turnover exceeds the allowed maximum"}
    stored = sum(len(portal_state(sb, f"p-rej{i}")["revenue"]) for i in range(5))
    assert stored == 49
    # the body is validated first: a wrong type gets its own 400, not the rule's
    time.sleep(1.05)
    bad = post_revenue(sessions[0], sb, {"revenueUnitId": 1002, "date": "2026-11-20", "turnover": "1"})
    assert "'turnover' must be a JSON number" in bad.json()["message"]
    set_faults(sb.planday_url)  # {} clears the rules too
    ok = post_revenue(sessions[0], sb, {"revenueUnitId": 1002, "date": "2026-11-20", "turnover": 1})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "rules",
    [
        {"revenueUnitId": 1002},
        [{"revenueUnitId": "1002", "date": "2026-11-20"}],
        [{"revenueUnitId": 1002, "date": "20-11-2026"}],
        [{"revenueUnitId": 1002, "date": "2026-11-20", "status": 200}],
        [{"revenueUnitId": 1002, "date": "2026-11-20", "turnover": 5}],
    ],
)
def test_planday_reject_rules_are_validated(sb, rules):
    resp = requests.post(f"{sb.planday_url}/_sandbox/faults", json={"reject": rules}, timeout=5)
    assert resp.status_code == 400, resp.text
    assert requests.get(f"{sb.planday_url}/_sandbox/faults", timeout=5).json()["faults"]["reject"] == []


def test_ajour_has_no_rows_to_reject(sb):
    resp = requests.post(f"{sb.ajour_url}/_sandbox/faults", json={"reject": [{"location": "L1"}]}, timeout=5)
    assert resp.status_code == 400 and "not supported" in resp.json()["message"]
    assert requests.post(f"{sb.ajour_url}/_sandbox/faults", json={"reject": []}, timeout=5).status_code == 200


def test_planday_per_minute_window_of_the_portal():
    from sandbox.server import PlandayApp

    now = [1000.0]
    app = PlandayApp(clock=lambda: now[0])
    seen = []
    for _ in range(500):
        allowed, headers = app._rate_limit("p")
        seen.append(allowed)
        now[0] += 0.11  # under 10 per second: 500 calls in 55 s
    assert all(seen)
    assert headers["x-ratelimit-limit"].startswith("500, ") and headers["x-ratelimit-remaining"] == "0"
    allowed, headers = app._rate_limit("p")  # 501st within the minute
    assert not allowed and headers["x-ratelimit-limit"].startswith("500, ")
    assert int(headers["Retry-After"]) == int(headers["x-ratelimit-reset"]) >= 1
    assert app._rate_limit("other")[0]  # per portal
    now[0] += 60
    assert app._rate_limit("p")[0]


def test_planday_latency_concurrent_requests_overlap(sb):
    from concurrent.futures import ThreadPoolExecutor

    sessions = [planday_session(sb, f"p-lat{i}") for i in range(10)]
    config = f"{sb.planday_url}/_sandbox/config"
    assert requests.post(config, json={"latency_ms": 200}, timeout=5).json()["latency_ms"] == 200.0

    def call(session):
        start = time.monotonic()
        resp = session.get(f"{sb.planday_url}/revenue/v1.0/revenueunits", timeout=5)
        return resp.status_code, time.monotonic() - start

    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(call, sessions))
    elapsed = time.monotonic() - started
    assert {status for status, _ in results} == {200}
    assert min(took for _, took in results) >= 0.2  # every answer waited
    assert elapsed < 1.0, elapsed  # side by side: one after the other would take 10 × 0.2 s = 2 s
    # control endpoints answer at once
    started = time.monotonic()
    requests.get(f"{sb.planday_url}/_sandbox/state", timeout=5)
    assert time.monotonic() - started < 0.2


def test_sandbox_serves_many_clients_and_keeps_its_log_bounded(sb):
    from sandbox.server import LOG_SIZE, Sandbox, _Server

    assert _Server.daemon_threads and _Server.request_queue_size >= 128
    assert sb.planday.log.maxlen == sb.ajour.log.maxlen == LOG_SIZE
    with pytest.raises(ValueError, match="latency_ms"):
        Sandbox(latency_ms=-1)
    assert requests.post(f"{sb.planday_url}/_sandbox/config", json={"latency_ms": 60001}, timeout=5).status_code == 400
    refused = requests.post(f"{sb.planday_url}/_sandbox/config", json={"lenient_types": True, "latency_ms": -5})
    assert refused.status_code == 400
    assert requests.get(f"{sb.planday_url}/_sandbox/config", timeout=5).json() == {
        "latency_ms": 0.0,
        "lenient_types": False,  # a refused config changes nothing
    }


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/api/v1/revenue", {"from": "2026-11-20", "to": "2026-11-21", "locaton": "L1"}, "'locaton'"),
        ("/api/v1/revenue", [("from", "2026-11-20"), ("from", "2026-11-21"), ("to", "2026-11-21")], "'from'"),
        ("/api/v1/locations", {"page": "2"}, "'page'"),
    ],
)
def test_ajour_refuses_unknown_and_repeated_parameters(sb, path, params, named):
    resp = requests.get(
        f"{sb.ajour_url}{path}", params=params, headers=ajour_headers(), auth=("u", "pw-c100"), timeout=5
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "bad_request" and named in resp.json()["message"]
