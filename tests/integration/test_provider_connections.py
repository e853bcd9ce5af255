"""The provider's connection types against the sandbox: each hook's ``test_connection`` (the UI's Test
button, ``airflow connections test``) says yes to good credentials and no, in one line without the
secret, to bad ones; through the API's test endpoint too. Pennylane and eAccounting refresh tokens rotate
and work once: a test goes through tillflow's token store and never spends the token a run needs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from tillflow_provider.hooks import HOOKS

BAD = "hunter2-secret-value"


def _vendors(sb) -> dict[str, tuple[dict, dict]]:
    """conn_type → (good connection fields, the same with one wrong secret: ``BAD``)."""
    good = {
        "ajour": {
            "host": sb.ajour_url,
            "login": "api",
            "password": "pw-77x",
            "schema": "db",
            "extra": {"company_id": "77x"},
        },
        "planday": {"host": sb.planday_url, "login": "popup", "password": "rt-popup"},
        "kassatellen": {"host": sb.kassatellen_url, "login": "anna@example.com", "password": "pw-anna@example.com"},
        "eitje": {
            "host": sb.eitje_url,
            "login": "leeuw",
            "password": "pw-leeuw",
            "extra": {"partner_username": "tillflow", "partner_password": "pp-tillflow"},
        },
        "mpluskassa": {"host": f"{sb.mpluskassa_url}/7001", "login": "shop7001", "password": "secret-shop7001"},
        "shiftbase": {"host": f"{sb.shiftbase_url}/api", "password": "sb-dept"},
        "kashclick": {"host": sb.kashclick_url, "login": "shopx", "password": "pw-shopx"},
        "ccv_salespos": {"host": sb.ccv_url, "login": "pk-shopx", "password": "sk-shopx"},
    }
    out = {}
    for conn_type, fields in good.items():
        bad = json.loads(json.dumps(fields))
        if conn_type == "eitje":
            bad["extra"]["partner_password"] = BAD  # a secret extra, masked like the password
        else:
            bad["password"] = BAD
        out[conn_type] = (fields, bad)
    return out


def _define(monkeypatch, conn_id: str, conn_type: str, fields: dict) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, **fields}))


FAST = {"max_attempts": 1, "timeout": 5}


@pytest.mark.parametrize(
    "conn_type", ["ajour", "planday", "kassatellen", "eitje", "mpluskassa", "shiftbase", "kashclick", "ccv_salespos"]
)
def test_good_credentials_pass_and_bad_ones_fail_without_the_secret(sandbox, monkeypatch, conn_type):
    good, bad = _vendors(sandbox)[conn_type]
    hook_class = HOOKS[conn_type]
    _define(monkeypatch, f"{conn_type}_good", conn_type, good)
    ok, message = hook_class(f"{conn_type}_good").test_connection()
    assert ok, message
    assert "credentials OK" in message and hook_class.hook_name in message

    bad.setdefault("extra", {}).update(FAST)
    _define(monkeypatch, f"{conn_type}_bad", conn_type, bad)
    ok, message = hook_class(f"{conn_type}_bad").test_connection()
    assert not ok
    assert message.startswith(f"{hook_class.hook_name}: ") and "\n" not in message
    assert BAD not in message and BAD[:8] not in message
    assert "refused" in message or "401" in message or "403" in message, message


def test_the_old_http_connections_read_the_same(sandbox, monkeypatch):
    """The forms add no storage layout: a connection made as conn_type http tests the same."""
    good, _ = _vendors(sandbox)["ajour"]
    _define(monkeypatch, "ajour_http", "http", good)
    ok, message = HOOKS["ajour"]("ajour_http").test_connection()
    assert ok, message


def test_a_missing_field_is_named(sandbox, monkeypatch):
    good, _ = _vendors(sandbox)["ajour"]
    _define(monkeypatch, "ajour_nocompany", "ajour", {**good, "extra": {}})
    ok, message = HOOKS["ajour"]("ajour_nocompany").test_connection()
    assert not ok
    assert "connection incomplete" in message and "CompanyID" in message and "pw-77x" not in message


def test_an_unreachable_host_is_one_line(monkeypatch):
    _define(
        monkeypatch,
        "kassatellen_down",
        "kassatellen",
        {"host": "http://127.0.0.1:9", "login": "a@b.c", "password": BAD, "extra": FAST},
    )
    ok, message = HOOKS["kassatellen"]("kassatellen_down").test_connection()
    assert not ok and "\n" not in message and BAD not in message


# ------------------------------------------------------------------ rotating refresh tokens (eAccounting)


def _ea_fields(sb, company: str, secret: str = "cs-test") -> dict:
    return {
        "host": f"{sb.eaccounting_url}/v2",
        "login": "tillflow-app",
        "password": f"ert-{company}",
        "extra": {"client_secret": secret, "token_url": f"{sb.eaccounting_url}/connect/token", **FAST},
    }


def _chain_keys(store, token: str) -> list[str]:
    suffix = hashlib.sha256(token.encode()).hexdigest()[:16]
    rows = store.conn.execute(
        "SELECT conn_id FROM tillflow.oauth_tokens WHERE conn_id LIKE %s ORDER BY conn_id", (f"%:{suffix}",)
    ).fetchall()
    store.conn.commit()
    return [r["conn_id"] for r in rows]


def _run_client(conn_id: str, fields: dict):
    """The client as a DAG run builds it (tillflow's database token store)."""
    from tillflow.sources.base import ConnectionInfo
    from tillflow.targets.eaccounting import EaccountingClient
    from tillflow.tokens import DbTokenStore

    info = ConnectionInfo(conn_id=conn_id, **fields)
    return EaccountingClient.from_connection(info, token_store=DbTokenStore())


@pytest.fixture
def api(airflow_db, monkeypatch):
    """Airflow's API app (FastAPI TestClient), connection testing enabled, every user an admin."""
    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "tillflow-provider-test-jwt-secret")
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as client:
        yield client


def _body(conn_id: str, fields: dict) -> dict:
    return {"connection_id": conn_id, "conn_type": "eaccounting", **fields, "extra": json.dumps(fields["extra"])}


def test_eaccounting_test_keeps_the_rotation_chain_a_run_uses(store, sandbox, api):
    fields = _ea_fields(sandbox, "provshop")
    assert api.post("/api/v2/connections", json=_body("eaccounting_provshop", fields)).status_code == 201
    try:
        # the Test button on the saved connection: the API tests a copy under a random id, and the hook
        # starts the chain under the saved connection's id
        r = api.post("/api/v2/connections/test", json=_body("eaccounting_provshop", fields))
        assert r.status_code == 200 and r.json()["status"] is True, r.json()
        assert "eaccounting_provshop" in r.json()["message"] and "ert-provshop" not in r.json()["message"]
        assert _chain_keys(store, "ert-provshop") == [f"eaccounting_provshop:{_sha16('ert-provshop')}"]

        # the seed token is spent (single-use), yet a run still works: it reads the rotated one
        client = _run_client("eaccounting_provshop", fields)
        assert client.test_connection()
        client.http.close()

        # testing again (`airflow connections test`: the hook by the saved id, then the button) keeps one chain
        cli = subprocess.run(
            [sys.executable, "-m", "airflow", "connections", "test", "eaccounting_provshop"],
            capture_output=True,
            text=True,
            env={**os.environ, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled", "PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=120,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "Connection success" in cli.stdout and "ert-provshop" not in cli.stdout + cli.stderr
        r = api.post("/api/v2/connections/test", json=_body("eaccounting_provshop", fields))
        assert r.json()["status"] is True, r.json()
        assert len(_chain_keys(store, "ert-provshop")) == 1
        client = _run_client("eaccounting_provshop", fields)
        assert client.test_connection()
        client.http.close()
    finally:
        api.delete("/api/v2/connections/eaccounting_provshop")


def test_eaccounting_an_unsaved_form_is_not_tested_and_its_token_stays_unspent(store, sandbox, api):
    fields = _ea_fields(sandbox, "newshop")
    r = api.post("/api/v2/connections/test", json=_body("eaccounting_newshop", fields))
    assert r.status_code == 200
    assert r.json()["status"] is False and "not tested" in r.json()["message"], r.json()
    assert "save the connection first" in r.json()["message"]
    assert _chain_keys(store, "ert-newshop") == []
    client = _run_client("eaccounting_newshop", fields)  # the single-use seed still works
    assert client.test_connection()
    client.http.close()


def test_eaccounting_a_refused_refresh_token_fails_without_a_secret(store, sandbox, api):
    fields = {**_ea_fields(sandbox, "secretshop", secret="cs-hidden-secret"), "password": BAD}
    assert api.post("/api/v2/connections", json=_body("eaccounting_secretshop", fields)).status_code == 201
    try:
        r = api.post("/api/v2/connections/test", json=_body("eaccounting_secretshop", fields))
        assert r.json()["status"] is False, r.json()
        assert "credentials refused" in r.json()["message"]
        assert BAD not in r.json()["message"] and "cs-hidden-secret" not in r.json()["message"]
        got = api.get("/api/v2/connections/eaccounting_secretshop").json()  # the API masks the secret extra
        assert json.loads(got["extra"])["client_secret"] == "***" and got["password"] == "***"
    finally:
        api.delete("/api/v2/connections/eaccounting_secretshop")


def test_the_ui_form_metadata_lists_every_vendor(api):
    meta = {m["connection_type"]: m for m in api.get("/ui/connections/hook_meta").json()}
    ajour = meta["ajour"]
    assert ajour["hook_name"] == "Ajour POS"
    assert ajour["standard_fields"]["url_schema"]["title"] == "Database"
    assert ajour["standard_fields"]["login"]["title"] == "User"
    assert ajour["extra_fields"]["company_id"]["schema"]["title"] == "CompanyID"
    assert meta["eaccounting"]["extra_fields"]["client_secret"]["schema"]["format"] == "password"
    assert meta["shiftbase"]["standard_fields"]["login"]["hidden"] is True
    assert set(HOOKS) <= set(meta)


def _sha16(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def test_pennylane_test_rotates_through_the_token_store_under_the_saved_id(store, sandbox, api):
    import requests

    requests.post(f"{sandbox.pennylane_url}/_sandbox/seeds", json={"strict": True}, timeout=5).raise_for_status()
    fields = {
        "host": f"{sandbox.pennylane_url}/api/external/v2",
        "login": "tillflow-app",
        "password": "prt-provco",
        "extra": {"client_secret": "cs-provider", **FAST},
    }
    body = {**_body("pennylane_provco", fields), "conn_type": "pennylane"}
    assert api.post("/api/v2/connections", json=body).status_code == 201
    try:
        r = api.post("/api/v2/connections/test", json=body)
        assert r.json()["status"] is True, r.json()
        assert "journal" in r.json()["message"] and "prt-provco" not in r.json()["message"]
        assert _chain_keys(store, "prt-provco") == [f"pennylane_provco:{_sha16('prt-provco')}"]
    finally:
        api.delete("/api/v2/connections/pennylane_provco")
