"""Read the stand-ins directly (not through tillflow), so a client bug cannot hide behind the same bug in
a test's expectation. Importable from every test directory (``tests/`` is on ``sys.path`` via conftest)."""

from __future__ import annotations

from datetime import datetime

import requests


def kassatellen_rows(kassatellen_url: str, user: str, start: datetime, end: datetime) -> list[dict]:
    """Every hourly row the Kassatellen stand-in holds for ``user`` in [start, end) (UTC instants)."""
    token = requests.post(
        f"{kassatellen_url}/auth/login", json={"username": user, "password": f"pw-{user}"}, timeout=5
    ).json()["data"]["accessToken"]
    response = requests.get(
        f"{kassatellen_url}/api/v1/revenue/hourly",
        headers={"Authorization": f"Bearer {token}"},
        params={"from": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "to": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["data"]


def eitje_records(eitje_url: str, api_username: str) -> list[dict]:
    """Every revenue record the Eitje stand-in holds for one environment (read-back)."""
    return requests.get(f"{eitje_url}/_sandbox/environments/{api_username}", timeout=10).json()["revenue"]
