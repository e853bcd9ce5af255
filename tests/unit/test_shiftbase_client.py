"""ShiftbaseClient against the Shiftbase stand-in: team days, timesheets, rosters, errors and masking."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
import requests
from sandbox.server import _Server
from sandbox.shiftbase import ShiftbaseApp
from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError
from tillflow.http import HttpPolicy
from tillflow.records import TargetRow
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.targets.shiftbase import ShiftbaseClient

KEY = "sb-client-secret-7f3a"
DAY = dt.date(2026, 3, 2)


@pytest.fixture(scope="module")
def server():
    app = ShiftbaseApp()
    srv = _Server(("127.0.0.1", 0), app)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sb(server):
    app, url = server
    app.reset()
    return app, url


def _client(url: str, key: str = KEY) -> ShiftbaseClient:
    conn = ConnectionInfo(conn_id="shiftbase_test", host=f"{url}/api", password=key)
    return ShiftbaseClient.from_connection(conn, policy=HttpPolicy(max_attempts=1), sleep=lambda s: None)


def _account(url: str) -> dict:
    return requests.get(f"{url}/_sandbox/accounts/{KEY}", timeout=5).json()["account"]


def _requests(url: str, path: str) -> list[dict]:
    return requests.get(f"{url}/_sandbox/requests", params={"path": path}, timeout=5).json()


@pytest.fixture
def org():
    return ShiftbaseApp.org_for(KEY)


def test_from_connection_needs_a_key_and_defaults_the_host():
    with pytest.raises(ConfigError, match="API key"):
        ShiftbaseClient.from_connection(ConnectionInfo(conn_id="c"))
    client = ShiftbaseClient.from_connection(ConnectionInfo(conn_id="c", password="sb-x"))
    assert client.http.base_url == "https://api.shiftbase.com/api"
    assert client.name == "shiftbase" and client.mapping_kind == "team"
    assert client.flows == ("revenue", "clock_times")


def test_connection_and_reference_data(sb, org):
    _, url = sb
    client = _client(url)
    teams = client.test_connection()
    assert [(t.key, t.name, t.extra["department_id"]) for t in teams] == [
        (t["id"], t["name"], t["department_id"]) for t in org["teams"]
    ]
    ref = client.reference_data()
    assert {"team", "user", "department"} <= set(ref)
    assert [u.key for u in ref["user"]] == [u["id"] for u in org["users"]]
    assert [d.key for d in ref["department"]] == [d["id"] for d in org["departments"]]
    assert all(u.extra["department_id"] for u in ref["user"])


def test_a_refused_key_is_an_auth_error_without_the_key(sb):
    _, url = sb
    bad = "not-a-shiftbase-key-99"
    with pytest.raises(AuthError) as info:
        _client(url, key=bad).test_connection()
    assert bad not in str(info.value) and "401" in str(info.value)


def test_team_day_created_then_updated_and_an_unchanged_value_is_not_resent(sb, org):
    _, url = sb
    client = _client(url)
    team = org["teams"][0]["id"]
    row = TargetRow(target_key=team, business_date=DAY, amount=Decimal("1234.50"))
    created = client.deliver("revenue", row)
    assert created.status == "delivered" and created.detail == "created" and created.target_id
    days = _account(url)["team_days"]
    assert [(d["team_id"], d["date"], d["turnover"], d["writes"]) for d in days] == [(team, str(DAY), "1234.50", 1)]

    again = client.deliver("revenue", row)
    assert again.detail == "unchanged" and again.target_id == created.target_id
    assert _account(url)["team_days"][0]["writes"] == 1
    assert not [r for r in _requests(url, "/api/team_days") if r["method"] in ("POST", "PUT")][1:]

    updated = client.deliver("revenue", row.model_copy(update={"amount": Decimal("99.90")}))
    assert updated.detail == "updated" and updated.target_id == created.target_id
    days = _account(url)["team_days"]
    assert [(d["turnover"], d["writes"]) for d in days] == [("99.90", 2)]
    puts = [r for r in _requests(url, "/api/team_days/") if r["method"] == "PUT"]
    assert [r["path"] for r in puts] == [f"/api/team_days/{created.target_id}"]

    window = Window(DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1))
    assert client.existing("revenue", [team, org["teams"][1]["id"]], window) == {(team, DAY, None): Decimal("99.90")}
    assert client.existing("clock_times", [team], window) == {}


def test_team_day_refusals_are_remote_errors_naming_the_field(sb, org):
    _, url = sb
    client = _client(url)
    with pytest.raises(RemoteError) as info:
        client.deliver("revenue", TargetRow(target_key="1", business_date=DAY, amount=Decimal("1.00")))
    assert info.value.status == 422 and "team_id" in str(info.value) and "Team does not exist" in str(info.value)
    assert info.value.permanent
    with pytest.raises(RemoteError) as info:
        client.deliver("revenue", TargetRow(target_key=org["teams"][0]["id"], business_date=DAY, amount=Decimal("-5")))
    assert info.value.status == 422 and "turnover" in str(info.value)
    with pytest.raises(ConfigError):
        client.deliver("revenue", TargetRow(target_key="abc", business_date=DAY, amount=Decimal("1")))
    with pytest.raises(ConfigError):
        client.deliver("revenue", TargetRow(target_key=org["teams"][0]["id"], business_date=DAY, hour=12, amount=1))
    with pytest.raises(ValueError, match="no flow"):
        client.deliver("revenue_hourly", TargetRow(target_key="1", business_date=DAY, amount=Decimal("1")))


def _timesheet(org, **over) -> dict:
    user = org["users"][1]
    ts = {
        "user_id": user["id"],
        "team_id": user["team_id"],
        "shift_id": org["shifts"][0]["id"],
        "date": str(DAY),
        "starttime": "10:00:00",
        "endtime": "16:00:00",
        "clocked_in": f"{DAY} 09:58:12",
        "clocked_out": f"{DAY} 16:01:40",
        "break": "0",
        "status": "Pending",
    }
    ts.update(over)
    return ts


def test_timesheet_create_then_update_keeps_one_timesheet(sb, org):
    _, url = sb
    client = _client(url)
    tid = client.upsert_timesheet(_timesheet(org), None)
    assert tid.isdigit()
    same = client.upsert_timesheet(_timesheet(org, endtime="17:15:00", **{"break": "15"}), tid)
    assert same == tid
    sheets = _account(url)["timesheets"]
    assert [(t["id"], t["endtime"], t["break"], t["total"], t["writes"]) for t in sheets] == [
        (tid, "17:15:00", "15", "7.000000", 2)
    ]
    read = client.timesheets(Window(DAY, DAY), user_id=org["users"][1]["id"])
    assert [t["id"] for t in read] == [tid]


def test_a_refused_timesheet_raises_remote_error_naming_the_field_without_the_key(sb, org):
    _, url = sb
    client = _client(url)
    with pytest.raises(RemoteError) as info:
        client.upsert_timesheet(_timesheet(org, starttime=1000), None)
    err = info.value
    assert err.status == 422 and err.permanent
    assert "starttime" in str(err) and "got integer" in str(err) and KEY not in str(err)
    with pytest.raises(RemoteError) as info:
        client.upsert_timesheet(_timesheet(org, user_id="1"), None)
    assert "user_id" in str(info.value) and "Unknown or inactive user" in str(info.value)
    with pytest.raises(RemoteError) as info:
        client.upsert_timesheet({"endtime": "18:00:00"}, "424242")
    assert info.value.status == 404 and "424242" in str(info.value)
    assert _account(url)["timesheets"] == []


def test_planned_department_comes_from_the_roster_of_that_day(sb, org):
    _, url = sb
    client = _client(url)
    checked_loaned = checked_off = False
    for offset in range(10):
        day = DAY + dt.timedelta(days=offset)
        planned = {r["user_id"]: r for r in ShiftbaseApp.roster_for(KEY, day)}
        for user in org["users"]:
            want = planned[user["id"]]["department_id"] if user["id"] in planned else None
            if user["id"] in planned and planned[user["id"]]["loaned"]:
                checked_loaned = True
                assert want != user["department_id"]
            elif user["id"] not in planned:
                checked_off = True
            else:
                continue
            assert client.planned_department(user["id"], day) == want
    assert checked_loaned and checked_off
    user = org["users"][0]
    home_day = next(
        DAY + dt.timedelta(days=i)
        for i in range(10)
        if any(
            r["user_id"] == user["id"] and not r["loaned"]
            for r in ShiftbaseApp.roster_for(KEY, DAY + dt.timedelta(days=i))
        )
    )
    assert client.planned_department(user["id"], home_day) == user["department_id"]
    shift = client.planned_shift(user["id"], home_day)
    assert shift["team_id"] == user["team_id"] and shift["shift_id"]


def test_user_department(sb, org):
    _, url = sb
    client = _client(url)
    assert [client.user_department(u["id"]) for u in org["users"]] == [u["department_id"] for u in org["users"]]
    assert client.user_department("1") is None


def test_the_key_is_masked_in_transient_errors(sb):
    _, url = sb
    requests.post(f"{url}/_sandbox/faults", json={"rate_5xx": 1}, timeout=5)
    client = _client(url)
    with pytest.raises(TransientError) as info:
        client.test_connection()
    assert KEY not in str(info.value) and "HTTP 50" in str(info.value)
    assert KEY not in client.http.mask(f"Authorization: API {KEY}")
