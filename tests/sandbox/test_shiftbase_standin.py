"""The Shiftbase stand-in is as strict as Shiftbase's OpenAPI: envelope, types, required fields, ids."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import requests
from sandbox.server import _Server
from sandbox.shiftbase import ShiftbaseApp

KEY = "sb-standin-test"
H = {"Authorization": f"API {KEY}"}


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


@pytest.fixture
def org():
    return ShiftbaseApp.org_for(KEY)


def _errors(r) -> dict:
    body = r.json()
    assert body["data"] == [] and body["meta"]["status"] == "error"
    return body["meta"].get("validation_errors", {})


@pytest.mark.parametrize("auth", [None, "API nope", "Bearer sb-x", f"USER {KEY}", "API "])
def test_a_missing_or_bad_key_is_401_in_the_envelope_and_never_echoed(sb, auth):
    _, url = sb
    headers = {"Authorization": auth} if auth else {}
    r = requests.get(f"{url}/api/teams", headers=headers, timeout=5)
    assert r.status_code == 401
    body = r.json()
    assert body["meta"]["status"] == "error" and body["meta"]["status_message"] == "Unauthorized"
    assert "nope" not in r.text and "sb-x" not in r.text


def test_reference_data_is_deterministic_per_key_and_in_the_envelope(sb, org):
    _, url = sb
    teams = requests.get(f"{url}/api/teams", headers=H, timeout=5).json()
    assert teams["meta"]["status"] == "ok" and teams["meta"]["feedback"] == []
    assert [t["Team"]["id"] for t in teams["data"]] == [t["id"] for t in org["teams"]]
    assert len(org["departments"]) == 2 and len(org["teams"]) == 3 and len(org["users"]) == 5
    dept_ids = {
        d["Department"]["id"] for d in requests.get(f"{url}/api/departments", headers=H, timeout=5).json()["data"]
    }
    assert {t["Team"]["department_id"] for t in teams["data"]} <= dept_ids
    users = requests.get(f"{url}/api/users", headers=H, timeout=5).json()["data"]
    assert all(u["UsersGroup"][0]["department_id"] in dept_ids for u in users)
    other = ShiftbaseApp.org_for("sb-another")
    assert other["teams"][0]["id"] != org["teams"][0]["id"]
    shifts = requests.get(f"{url}/api/shifts", headers=H, timeout=5).json()["data"]
    assert shifts and "Shift" not in shifts[0]  # documented: Shift objects, not wrapped


def test_unknown_query_parameters_and_bad_dates_are_refused(sb):
    _, url = sb
    r = requests.get(f"{url}/api/team_days", headers=H, params={"from": "2026-01-01"}, timeout=5)
    assert r.status_code == 400 and "from" in r.json()["meta"]["status_message"]
    r = requests.get(f"{url}/api/team_days", headers=H, params={"min_date": "2026-13-01"}, timeout=5)
    assert r.status_code == 422 and "min_date" in _errors(r)


def test_rosters_plan_each_user_with_a_department_and_team(sb, org):
    _, url = sb
    day = dt.date(2026, 3, 2)
    r = requests.get(
        f"{url}/api/rosters", headers=H, params={"min_date": str(day), "max_date": str(day)}, timeout=5
    ).json()
    rosters = [x["Roster"] for x in r["data"]]
    assert rosters == ShiftbaseApp.roster_for(KEY, day)
    assert 1 <= len(rosters) <= 5
    teams = {t["id"]: t for t in org["teams"]}
    assert all(teams[x["team_id"]]["department_id"] == x["department_id"] for x in rosters)
    user = rosters[0]["user_id"]
    r = requests.get(
        f"{url}/api/rosters", headers=H, params={"min_date": str(day), "max_date": str(day), "user_id": user}, timeout=5
    ).json()
    assert [x["Roster"]["user_id"] for x in r["data"]] == [user]


def test_some_user_is_loaned_to_another_department_within_a_week(org):
    loaned = [
        r
        for d in range(7)
        for r in ShiftbaseApp.roster_for(KEY, dt.date(2026, 3, 1) + dt.timedelta(days=d))
        if r["loaned"]
    ]
    homes = {u["id"]: u["department_id"] for u in org["users"]}
    assert loaned and all(homes[r["user_id"]] != r["department_id"] for r in loaned)


# --------------------------------------------------------------------------------------------- team days


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"date": "2026-03-02", "turnover": "10.00"}, "team_id", "cannot be left blank"),
        ({"team_id": 4000811, "date": "2026-03-02", "turnover": "10.00"}, "team_id", "got integer"),
        ({"team_id": "abc", "date": "2026-03-02"}, "team_id", "has to be numeric"),
        ({"team_id": "{team}", "turnover": "10.00"}, "date", "cannot be left blank"),
        ({"team_id": "{team}", "date": "02-03-2026"}, "date", "is not a valid date"),
        ({"team_id": "{team}", "date": "2026-03-02", "turnover": 1234.5}, "turnover", "got number 1234.5"),
        ({"team_id": "{team}", "date": "2026-03-02", "turnover": "-5.00"}, "turnover", "non-negative"),
        ({"team_id": "{team}", "date": "2026-03-02", "turnover": "1.005"}, "turnover", "at most 2 decimals"),
        ({"team_id": "{team}", "date": "2026-03-02", "turnover": "1,50"}, "turnover", "decimal"),
        ({"team_id": "{team}", "date": "2026-03-02", "revenue": "1.00"}, "revenue", "does not exist"),
        ({"team_id": "1", "date": "2026-03-02"}, "team_id", "Team does not exist"),
    ],
)
def test_team_day_post_refuses_naming_the_field(sb, org, body, field, needle):
    _, url = sb
    body = {k: (v.replace("{team}", org["teams"][0]["id"]) if isinstance(v, str) else v) for k, v in body.items()}
    r = requests.post(f"{url}/api/team_days", headers=H, json=body, timeout=5)
    assert r.status_code == 422
    errors = _errors(r)
    assert field in errors and needle in " ".join(errors[field])
    fb = r.json()["meta"]["feedback"]
    assert fb[0] == {"message": "Failed to save", "level": "error"}
    assert any(f.get("field") == field and f["level"] == "validate" for f in fb)


def test_team_day_writes_need_json_and_a_body(sb, org):
    _, url = sb
    r = requests.post(f"{url}/api/team_days", headers=H, data="team_id=1", timeout=5)
    assert r.status_code == 415 and r.json()["meta"]["status"] == "error"
    r = requests.post(f"{url}/api/team_days", headers={**H, "Content-Type": "application/json"}, data="{", timeout=5)
    assert r.status_code == 422 and r.json()["meta"]["status_message"] == "Malformed request data"
    r = requests.post(f"{url}/api/team_days", headers=H, json={}, timeout=5)
    assert r.status_code == 400 and r.json()["meta"]["status_message"] == "Missing POST data"
    r = requests.put(f"{url}/api/team_days/abc", headers=H, json={"turnover": "1.00"}, timeout=5)
    assert r.status_code == 400 and r.json()["meta"]["status_message"] == "Id should be numeric"
    r = requests.put(f"{url}/api/team_days/999", headers=H, json={"turnover": "1.00"}, timeout=5)
    assert r.status_code == 404 and "999" in r.json()["meta"]["status_message"]


def test_a_second_post_for_the_same_team_and_date_updates_it_and_put_edits(sb, org):
    app, url = sb
    team = org["teams"][1]["id"]
    r1 = requests.post(
        f"{url}/api/team_days", headers=H, json={"team_id": team, "date": "2026-03-02", "turnover": "1000"}, timeout=5
    )
    assert r1.status_code == 200 and r1.json()["meta"]["status"] == "ok"
    rec = r1.json()["data"]["TeamDay"]
    assert rec["turnover"] == "1000.00" and rec["team_id"] == team and rec["expenses"] is None
    r2 = requests.post(
        f"{url}/api/team_days",
        headers=H,
        json={"team_id": team, "date": "2026-03-02", "turnover": "1234.50"},
        timeout=5,
    )
    assert r2.json()["data"]["TeamDay"]["id"] == rec["id"] and r2.json()["data"]["TeamDay"]["turnover"] == "1234.50"
    r3 = requests.put(f"{url}/api/team_days/{rec['id']}", headers=H, json={"turnover": "99.95", "note": "x"}, timeout=5)
    assert r3.status_code == 200
    assert isinstance(r3.json()["data"], list) and r3.json()["data"][0]["TeamDay"]["turnover"] == "99.95"
    assert r3.json()["data"][0]["Team"]["id"] == team
    r4 = requests.put(f"{url}/api/team_days/{rec['id']}", headers=H, json={"date": "2026-03-03"}, timeout=5)
    assert r4.status_code == 422 and "date" in _errors(r4)
    listed = requests.get(
        f"{url}/api/team_days",
        headers=H,
        params={"min_date": "2026-03-01", "max_date": "2026-03-31", "team_id[]": [team]},
        timeout=5,
    ).json()
    assert [x["TeamDay"]["turnover"] for x in listed["data"]] == ["99.95"]
    state = requests.get(f"{url}/_sandbox/accounts/{KEY}", timeout=5).json()["account"]
    assert [(d["team_id"], d["date"], d["turnover"], d["writes"]) for d in state["team_days"]] == [
        (team, "2026-03-02", "99.95", 3)
    ]
    assert KEY in requests.get(f"{url}/_sandbox/state", timeout=5).json()["accounts"]
    app.reset()
    assert requests.get(f"{url}/_sandbox/state", timeout=5).json() == {"accounts": {}}


# --------------------------------------------------------------------------------------------- timesheets


def _ts(org, **over):
    user = org["users"][0]
    base = {
        "user_id": user["id"],
        "team_id": user["team_id"],
        "shift_id": org["shifts"][0]["id"],
        "date": "2026-03-02",
        "starttime": "09:00:00",
        "endtime": "17:30:00",
        "break": "30",
        "status": "Approved",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.mark.parametrize(
    ("over", "field", "needle"),
    [
        ({"user_id": ...}, "user_id", "cannot be left blank"),
        ({"shift_id": ...}, "shift_id", "cannot be left blank"),
        ({"starttime": ...}, "starttime", "cannot be left blank"),
        ({"user_id": 4000821}, "user_id", "got integer"),
        ({"user_id": "1"}, "user_id", "Unknown or inactive user"),
        ({"team_id": "1"}, "team_id", "Team does not exist"),
        ({"shift_id": "1"}, "shift_id", "Shift does not exist"),
        ({"department_id": "1"}, "department_id", "Department does not exist"),
        ({"starttime": "9:00"}, "starttime", "not a valid time"),
        ({"endtime": 17}, "endtime", "got integer"),
        ({"clocked_in": "2026-03-02T09:00:00Z"}, "clocked_in", "not a valid datetime"),
        ({"break": "half an hour"}, "break", "minutes"),
        ({"break": True}, "break", "minutes"),
        ({"status": "approved"}, "status", "Approved, Declined, Pending"),
        ({"start_time": "09:00:00"}, "start_time", "does not exist"),
    ],
)
def test_timesheet_post_refuses_naming_the_field(sb, org, over, field, needle):
    _, url = sb
    r = requests.post(f"{url}/api/timesheets", headers=H, json=_ts(org, **over), timeout=5)
    assert r.status_code == 422, r.text
    errors = _errors(r)
    assert field in errors and needle in " ".join(errors[field])


def test_timesheet_department_must_be_the_teams(sb, org):
    _, url = sb
    other = next(d["id"] for d in org["departments"] if d["id"] != org["users"][0]["department_id"])
    r = requests.post(f"{url}/api/timesheets", headers=H, json=_ts(org, department_id=other), timeout=5)
    assert r.status_code == 422 and "department_id" in _errors(r)


def test_timesheet_create_update_and_list(sb, org):
    _, url = sb
    r = requests.post(f"{url}/api/timesheets", headers=H, json=_ts(org, **{"break": 30}), timeout=5)
    assert r.status_code == 200
    ts = r.json()["data"]["Timesheet"]
    assert ts["total"] == "8.000000" and ts["break"] == "30" and ts["department_id"] == org["users"][0]["department_id"]
    assert r.json()["meta"]["status_message"] == "Timesheet has been successfully added."
    r = requests.put(f"{url}/api/timesheets/{ts['id']}", headers=H, json={"endtime": "18:00:00"}, timeout=5)
    assert r.status_code == 200 and r.json()["data"]["Timesheet"]["total"] == "8.500000"
    r = requests.put(f"{url}/api/timesheets/{ts['id']}", headers=H, json={"team_id": 5}, timeout=5)
    assert r.status_code == 422 and "team_id" in _errors(r)
    r = requests.put(f"{url}/api/timesheets/42", headers=H, json={"endtime": "18:00:00"}, timeout=5)
    assert r.status_code == 404
    listed = requests.get(
        f"{url}/api/timesheets", headers=H, params={"min_date": "2026-03-02", "max_date": "2026-03-02"}, timeout=5
    ).json()
    assert [(x["Timesheet"]["id"], x["Timesheet"]["endtime"]) for x in listed["data"]] == [(ts["id"], "18:00:00")]
    assert listed["data"][0]["ClockBreak"] == []


def test_timesheet_batch_is_all_or_nothing_and_updates_by_id(sb, org):
    _, url = sb
    first = requests.post(f"{url}/api/timesheets", headers=H, json=_ts(org), timeout=5).json()["data"]["Timesheet"]
    bad = [{"id": first["id"], "status": "Pending"}, _ts(org, user_id=...)]
    r = requests.post(f"{url}/api/timesheets/batch", headers=H, json=bad, timeout=5)
    assert r.status_code == 422 and r.json()["meta"]["status_message"] == "Failed to save batch for timesheet"
    assert any(f.get("field") == "user_id" and f.get("index") == 1 for f in r.json()["meta"]["feedback"])
    good = [{"id": first["id"], "status": "Pending"}, _ts(org, date="2026-03-03")]
    r = requests.post(f"{url}/api/timesheets/batch", headers=H, json=good, timeout=5)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data[0]["Timesheet"]["id"] == first["id"] and data[0]["Timesheet"]["status"] == "Pending"
    assert data[1]["Timesheet"]["id"] != first["id"] and data[1]["Timesheet"]["date"] == "2026-03-03"
    r = requests.post(f"{url}/api/timesheets/batch", headers=H, json=_ts(org), timeout=5)
    assert r.status_code == 422  # the batch body is an array
    r = requests.post(f"{url}/api/timesheets/batch", headers=H, json=[], timeout=5)
    assert r.status_code == 400
