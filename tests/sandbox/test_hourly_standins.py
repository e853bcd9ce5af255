"""The Kassatellen and Eitje stand-ins are as strict as their (documented or assumed) contracts."""

from __future__ import annotations

import pytest
import requests

EITJE_HEADERS = {
    "Partner-Username": "tillflow",
    "Partner-Password": "pp-tillflow",
    "Api-Username": "env-x",
    "Api-Password": "pw-env-x",
}


def _token(sb, user="a@b.nl"):
    r = requests.post(f"{sb.kassatellen_url}/auth/login", json={"username": user, "password": f"pw-{user}"}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["success"] is True and body["data"]["tokenType"] == "Bearer" and body["data"]["expiresIn"] == 3600
    assert body["data"]["accessToken"].count(".") == 2  # a JWT
    return body["data"]["accessToken"]


def test_kassatellen_login_refuses_a_wrong_password_and_a_form_body(sandbox):
    r = requests.post(f"{sandbox.kassatellen_url}/auth/login", json={"username": "a@b.nl", "password": "x"}, timeout=5)
    assert r.status_code == 401 and r.json() == {"success": False, "message": "Invalid username or password"}
    r = requests.post(f"{sandbox.kassatellen_url}/auth/login", data={"username": "a", "password": "b"}, timeout=5)
    assert r.status_code == 415


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"from": "2026-11-18T00:00:00", "to": "2026-11-19T00:00:00Z"}, "with an offset"),
        ({"from": "2026-11-18T00:30:00Z", "to": "2026-11-19T00:00:00Z"}, "whole hour"),
        ({"to": "2026-11-19T00:00:00Z"}, "'from' is required"),
        ({"from": "2026-11-19T00:00:00Z", "to": "2026-11-18T00:00:00Z"}, "must be after"),
        ({"from": "2026-09-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "at most 768"),
        ({"from": "2026-11-18T00:00:00Z", "to": "2026-11-19T00:00:00Z", "group": "11"}, "unknown parameter"),
    ],
)
def test_kassatellen_revenue_refuses_bad_ranges_naming_the_parameter(sandbox, params, needle):
    r = requests.get(
        f"{sandbox.kassatellen_url}/api/v1/revenue/hourly",
        params=params,
        headers={"Authorization": f"Bearer {_token(sandbox)}"},
        timeout=5,
    )
    assert r.status_code == 400 and needle in r.json()["message"]


def test_kassatellen_amounts_are_json_numbers_and_an_expired_token_is_401(sandbox):
    token = _token(sandbox)
    r = requests.get(
        f"{sandbox.kassatellen_url}/api/v1/revenue/hourly",
        headers={"Authorization": f"Bearer {token}"},
        params={"from": "2026-11-18T10:00:00Z", "to": "2026-11-18T14:00:00Z"},
        timeout=5,
    )
    assert r.status_code == 200
    assert b'"amountInclVat": "' not in r.content and b'"amountInclVat": ' in r.content
    assert all(isinstance(row["revenueGroupId"], int) for row in r.json()["data"])
    requests.post(f"{sandbox.kassatellen_url}/_sandbox/tokens/expire", timeout=5).raise_for_status()
    r = requests.get(
        f"{sandbox.kassatellen_url}/api/v1/revenue-groups", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert r.status_code == 401 and r.json()["message"] == "jwt expired"
    r = requests.get(
        f"{sandbox.kassatellen_url}/api/v1/revenue-groups",
        headers={"Authorization": f"Bearer {token[:-2]}xx"},
        timeout=5,
    )
    assert r.status_code == 401


def test_kassatellen_bad_rows_come_in_their_span_and_stray_rows_with_every_answer(sandbox):
    user = "a@b.nl"
    bad = {"hourStart": "2026-11-18T12:00:00Z", "revenueGroupId": 11, "amountInclVat": -5, "amountExclVat": -4}
    stray = {"hourStart": "2026-12-01T12:00:00Z", "revenueGroupId": 12, "amountInclVat": 3, "amountExclVat": 2}
    requests.post(
        f"{sandbox.kassatellen_url}/_sandbox/users/{user}", json={"bad_rows": [bad], "stray_rows": [stray]}, timeout=5
    ).raise_for_status()
    headers = {"Authorization": f"Bearer {_token(sandbox, user)}"}

    def hours(start, end):
        params = {"from": start, "to": end}
        r = requests.get(f"{sandbox.kassatellen_url}/api/v1/revenue/hourly", headers=headers, params=params, timeout=5)
        return [row["hourStart"] for row in r.json()["data"] if row["amountInclVat"] in (-5, 3)]

    assert hours("2026-11-18T10:00:00Z", "2026-11-18T14:00:00Z") == [bad["hourStart"], stray["hourStart"]]
    assert hours("2026-11-19T10:00:00Z", "2026-11-19T14:00:00Z") == [stray["hourStart"]]
    r = requests.post(f"{sandbox.kassatellen_url}/_sandbox/users/{user}", json={"stray_rows": [1]}, timeout=5)
    assert r.status_code == 400 and "'stray_rows': a list of rows" in r.json()["message"]


def test_eitje_needs_all_four_headers(sandbox):
    for missing in EITJE_HEADERS:
        headers = {k: v for k, v in EITJE_HEADERS.items() if k != missing}
        assert (
            requests.get(f"{sandbox.eitje_url}/open_api/revenue_groups", headers=headers, timeout=5).status_code == 401
        )
    r = requests.get(f"{sandbox.eitje_url}/open_api/revenue_groups", headers=EITJE_HEADERS, timeout=5)
    assert [g["id"] for g in r.json()["revenue_groups"]] == [501, 502, 503]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ('{"date": "2026-11-18", "hour_start": null, "amount": "12.50"}', 422, "must be a JSON number, got string"),
        ('{"date": "2026-11-18", "hour_start": null, "amount": 12.505}', 422, "more than 2 decimals"),
        ('{"date": "2026-11-18", "hour_start": null, "amount": true}', 422, "got boolean"),
        ('{"date": "2026-11-18", "amount": 1}', 422, "'hour_start' is required"),
        ('{"date": "18-11-2026", "hour_start": null, "amount": 1}', 422, "date"),
        ('{"date": "2026-11-18", "hour_start": "2026-11-18T12:00:00", "amount": 1}', 422, "with an offset"),
        ('{"date": "2026-11-18", "hour_start": "2026-11-25T12:00:00Z", "amount": 1}', 422, "does not lie in"),
        ('{"date": "2026-11-18", "hour_start": null, "amount": 1, "vat": "incl"}', 422, "unknown field"),
    ],
)
def test_eitje_write_is_strict_about_types(sandbox, body, status, needle):
    r = requests.put(
        f"{sandbox.eitje_url}/open_api/revenue_groups/501/revenues",
        data=body,
        headers={**EITJE_HEADERS, "Content-Type": "application/json"},
        timeout=5,
    )
    assert r.status_code == status and needle in r.json()["message"], r.text


def test_eitje_upserts_one_record_per_hour_instant_and_refuses_unknown_groups(sandbox):
    h = {**EITJE_HEADERS, "Content-Type": "application/json"}
    url = f"{sandbox.eitje_url}/open_api/revenue_groups/501/revenues"
    first = '{"date": "2026-10-24", "hour_start": "2026-10-25T00:00:00Z", "amount": 1.00}'
    second = '{"date": "2026-10-24", "hour_start": "2026-10-25T01:00:00Z", "amount": 2.00}'  # the 2nd 02:00 local
    assert requests.put(url, data=first, headers=h, timeout=5).status_code == 201
    assert requests.put(url, data=second, headers=h, timeout=5).status_code == 201
    again = requests.put(url, data=second.replace("2.00", "3.00"), headers=h, timeout=5)
    assert again.status_code == 200 and again.json()["revenue"]["updated_count"] == 1
    r = requests.get(
        f"{sandbox.eitje_url}/open_api/revenue_groups/revenues",
        headers=EITJE_HEADERS,
        timeout=5,
        params={"filters[start_date]": "2026-10-24", "filters[end_date]": "2026-10-24"},
    )
    assert [(x["hour_start"], str(x["amount"])) for x in r.json()["revenues"]] == [
        ("2026-10-25T00:00:00Z", "1.0"),
        ("2026-10-25T01:00:00Z", "3.0"),
    ]
    r = requests.put(f"{sandbox.eitje_url}/open_api/revenue_groups/999/revenues", data=first, headers=h, timeout=5)
    assert r.status_code == 404 and "999" in r.json()["message"]
    r = requests.put(url, data=first, headers={**EITJE_HEADERS, "Content-Type": "text/plain"}, timeout=5)
    assert r.status_code == 415
