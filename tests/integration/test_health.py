"""The sync-health app behind Airflow's login (real store, Airflow's own auth manager, FastAPI test client).

Tokens are minted the way Airflow's login does (``auth_manager.generate_jwt`` of a simple-auth-manager
user); the "Airflow REST API" a manual sync goes to is a stand-in app that authorises with Airflow's own
``requires_access_dag`` dependency, so the forwarded token decides.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from tillflow.health import create_app, health_rows, load_specs
from tillflow.records import RefItem, Reject, TargetRow
from tillflow.sources.base import Window
from tillflow.specs import AccountSettings
from tillflow.store import Store

INTEGRATION = "ajour_to_planday"


@pytest.fixture(scope="module")
def tokens(airflow_db):
    """JWTs of an admin and a viewer, signed by the session's auth manager (the simple auth manager)."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    am = create_auth_manager()
    return {
        role: am.generate_jwt(SimpleAuthManagerUser(username=f"{role}_user", role=role)) for role in ("admin", "viewer")
    }


@pytest.fixture
def airflow_api():
    """A stand-in for Airflow's REST API trigger endpoint, authorised by Airflow's own dependency."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    api = FastAPI()
    api.state.calls = []

    @api.post(
        "/api/v2/dags/{dag_id}/dagRuns",
        dependencies=[Depends(requires_access_dag(method="POST", access_entity=DagAccessEntity.RUN))],
    )
    async def trigger(dag_id: str, request: Request):
        body = await request.json()
        api.state.calls.append({"dag_id": dag_id, "body": body, "auth": request.headers.get("authorization")})
        return {"dag_id": dag_id, "dag_run_id": "manual__2026-11-25T10:00:00+00:00", "conf": body["conf"]}

    return api


@pytest.fixture
def app(pg_url, store, airflow_api):
    return create_app(
        lambda: Store.open(pg_url), api_client=lambda base: TestClient(airflow_api, base_url=base or "http://af")
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add(store, key, **settings):
    return store.upsert_account(
        INTEGRATION, key, name=key.replace("_", " ").title(), conn_id="c", settings=AccountSettings(**settings)
    )


def test_anonymous_is_refused_and_a_logged_in_user_is_served(app, tokens, store):
    add(store, "ok_bar")
    client = TestClient(app)
    assert client.get("/health.json").status_code == 401
    assert client.get("/health.json", headers=bearer("not-a-jwt")).status_code in (401, 403)
    assert client.get("/rejects.json", params={"integration": INTEGRATION, "account": "ok_bar"}).status_code == 401
    assert client.post("/rejects/ack.json", json={"integration": INTEGRATION, "account": "ok_bar"}).status_code == 401
    assert client.post("/sync.json", json={"integration": INTEGRATION, "account": "ok_bar"}).status_code == 401
    page = client.get("/health?status=ok", follow_redirects=False)  # a browser: to Airflow's login, then back
    assert page.status_code == 303 and "/auth/login" in page.headers["location"]
    assert "next=" in page.headers["location"] and "health" in page.headers["location"]
    form = client.post("/rejects/ack", data={"integration": INTEGRATION, "account": "ok_bar"}, follow_redirects=False)
    assert form.status_code == 303 and "/auth/login" in form.headers["location"]  # back to the page, not the POST
    assert form.headers["location"].endswith("next=http%3A%2F%2Ftestserver%2Fhealth")

    served = client.get("/health.json", headers=bearer(tokens["viewer"]))
    assert served.status_code == 200 and [r["account"] for r in served.json()] == ["ok_bar"]
    client.cookies.set("_token", tokens["admin"])  # what the Airflow UI sets at login
    page = client.get("/health")
    assert page.status_code == 200 and "Ok Bar" in page.text and "Signed in as admin_user" in page.text


def test_every_status_kind_links_counts_and_filters(app, tokens, store, pg_url):
    ok = add(store, "ok_bar")
    unmapped = add(store, "unmapped_bar")
    failing = add(store, "failing_bar")
    refused = add(store, "refused_bar")
    add(store, "paused_bar", active=False)
    other = store.upsert_account(
        "kassatellen_to_eitje",
        "de_leeuw",
        name="De Leeuw",
        conn_id="c",
        settings=AccountSettings(timezone="Europe/Amsterdam", lookback_days=1),
    )
    run_id = "scheduled__2026-11-24T04:00:00+00:00"
    store.plan_activity(
        INTEGRATION,
        run_id,
        [
            {
                "account_id": ok.id,
                "flow": "revenue",
                "window_start": date(2026, 11, 21),
                "window_end": date(2026, 11, 23),
                "shard": 2,
                "mode": "keep_manual",
            },
        ],
    )
    store.activity_update(
        run_id, ok.id, "revenue", status="success", fetched=12, upserted=9, delivered=9, finished=True
    )
    store.flow_success(
        ok.id,
        "revenue",
        due_at=datetime(2026, 11, 24, 4, tzinfo=UTC),
        window=Window(date(2026, 11, 21), date(2026, 11, 23)),
        run_id=run_id,
    )
    store.set_source_items(unmapped.id, "location", [RefItem(key="L5", name="Terrace"), RefItem(key="L1", name="Bar")])
    store.set_mapping(unmapped.id, "location", "L1", "501")
    store.set_status(unmapped.id, "needs_mapping", "unmapped location(s): L5 (Terrace)", flow="revenue")
    store.set_status(failing.id, "failing", "Planday answered 500", flow="revenue")
    store.set_status(refused.id, "auth_failed", "credentials refused", flow="revenue")
    store.set_status(other.id, "failing", "Eitje answered 502", flow="revenue")
    client = TestClient(app, headers=bearer(tokens["viewer"]))

    rows = {(r["account"], r["flow"]): r for r in client.get("/health.json").json()}
    assert {k[0]: r["status"] for k, r in rows.items() if k[0] != "de_leeuw"} == {
        "ok_bar": "ok",
        "unmapped_bar": "needs_mapping",
        "failing_bar": "failing",
        "refused_bar": "auth_failed",
        "paused_bar": "paused",
    }
    assert {k[1] for k in rows if k[0] == "de_leeuw"} == {"revenue", "activation"}  # every flow of the spec
    r = rows[("ok_bar", "revenue")]
    assert r["healthy"] is True and r["rows_fetched"] == 12 and r["rows_landed"] == 9
    assert r["last_window"] == "2026-11-21..2026-11-23" and r["last_success_at"] and r["next_due_at"]
    assert r["last_run_url"].endswith(f"/dags/{INTEGRATION}/runs/scheduled__2026-11-24T04%3A00%3A00%2B00%3A00")
    assert r["task_log_url"] == r["last_run_url"] + "/tasks/run/mapped/2"
    u = rows[("unmapped_bar", "revenue")]
    assert u["unmapped_keys"] == [{"key": "L5", "name": "Terrace", "kind": "location"}] and u["healthy"] is False
    assert "L5" in u["detail"]
    assert rows[("paused_bar", "revenue")]["next_due_at"] is None and rows[("paused_bar", "revenue")]["healthy"]

    only = client.get("/health.json", params={"integration": INTEGRATION, "status": "failing"}).json()
    assert [(r["account"], r["status"]) for r in only] == [("failing_bar", "failing")]
    assert {r["integration"] for r in client.get("/health.json", params={"status": "failing"}).json()} == {
        INTEGRATION,
        "kassatellen_to_eitje",
    }
    assert client.get("/health.json", params={"status": "bogus"}).status_code == 422
    page = client.get("/health", params={"integration": INTEGRATION, "status": "needs_mapping"})
    assert page.status_code == 200 and 'data-account="unmapped_bar"' in page.text
    assert 'data-account="ok_bar"' not in page.text and "location L5 (Terrace)" in page.text


def test_next_due_follows_the_accounts_own_run_time(store):
    acc = add(store, "late_bar", run_time="09:00", weekdays=["wed"], timezone="Europe/Copenhagen")
    hourly = store.upsert_account(
        "kassatellen_to_eitje",
        "hourly",
        name="Hourly",
        conn_id="c",
        settings=AccountSettings(timezone="Europe/Amsterdam", lookback_days=1),
    )
    assert acc and hourly
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday
    rows = {(r["account"], r["flow"]): r for r in health_rows(store, load_specs(), now=now)}
    assert rows[("late_bar", "revenue")]["next_due_at"] == "2026-11-25T08:00:00+00:00"  # Wed 09:00 Copenhagen
    assert rows[("hourly", "revenue")]["next_due_at"] == "2026-11-23T12:07:00+00:00"  # "7 * * * *"
    assert rows[("hourly", "activation")]["next_due_at"] is None  # never activated


def test_rejects_are_listed_and_acknowledged(app, tokens, store):
    acc = add(store, "reject_bar")
    store.add_rejects(
        acc.id,
        "revenue",
        [
            Reject(reason="amount is not a number", payload={"amount": "x"}, ref="L2/1"),
            Reject(reason="no date", payload={}, ref="L2/2"),
        ],
        landing_id=None,
        run_id="r1",
    )
    viewer = TestClient(app, headers=bearer(tokens["viewer"]))
    admin = TestClient(app, headers=bearer(tokens["admin"]))
    q = {"integration": INTEGRATION, "account": "reject_bar"}

    (row,) = viewer.get("/health.json").json()
    assert row["open_rejects"] == 2 and row["healthy"] is False
    listed = viewer.get("/rejects.json", params=q).json()
    assert {r["reason"] for r in listed} == {"amount is not a number", "no date"}
    page = viewer.get("/rejects", params=q)
    assert "amount is not a number" in page.text and 'id="ack"' not in page.text  # a viewer may not acknowledge
    assert viewer.post("/rejects/ack.json", json=q).status_code == 403
    assert admin.get("/rejects", params=q).text.count('id="ack"') == 1

    first = listed[-1]["id"]
    assert admin.post("/rejects/ack.json", json=q | {"ids": [first]}).json() == {"acknowledged": 1}
    assert viewer.get("/health.json").json()[0]["open_rejects"] == 1
    done = admin.post("/rejects/ack", data=q, follow_redirects=False)  # the page's form
    assert done.status_code == 303 and "acked=1" in done.headers["location"]
    assert viewer.get("/health.json").json()[0]["open_rejects"] == 0
    assert viewer.get("/rejects.json", params=q).json() == []
    kept = viewer.get("/rejects.json", params=q | {"all": 1}).json()
    assert len(kept) == 2 and {r["acknowledged_by"] for r in kept} == {"admin_user"}
    assert admin.post("/rejects/ack.json", json={**q, "account": "nobody"}).status_code == 404
    cross = admin.post("/rejects/ack", data=q, headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert cross.status_code == 403


def test_manual_sync_triggers_the_dag_through_airflows_api_with_the_users_token(app, tokens, store, airflow_api):
    add(store, "ok_bar")
    admin = TestClient(app, headers=bearer(tokens["admin"]))
    form = {
        "integration": INTEGRATION,
        "account": "ok_bar",
        "flow": "revenue",
        "date_from": "2026-11-01",
        "date_to": "2026-11-03",
    }

    page = admin.post("/sync", data=form)
    assert page.status_code == 200 and "Started ajour_to_planday run manual__" in page.text
    (call,) = airflow_api.state.calls
    assert call["dag_id"] == INTEGRATION and call["auth"] == f"Bearer {tokens['admin']}"
    assert call["body"]["conf"] == {"accounts": ["ok_bar"], "date_from": "2026-11-01", "date_to": "2026-11-03"}
    assert call["body"]["logical_date"] is None and "admin_user" in call["body"]["note"]

    one_day = admin.post("/sync.json", json=form | {"date_to": ""})
    assert one_day.status_code == 201 and one_day.json()["conf"]["date_to"] == "2026-11-01"
    assert one_day.json()["last_run_url"].endswith("/runs/manual__2026-11-25T10%3A00%3A00%2B00%3A00")

    refused = TestClient(app, headers=bearer(tokens["viewer"])).post("/sync.json", json=form)
    assert refused.status_code == 403  # Airflow's own check refused the viewer's token
    assert len(airflow_api.state.calls) == 2
    assert admin.post("/sync.json", json=form | {"date_to": "2026-10-01"}).status_code == 422
    assert admin.post("/sync.json", json=form | {"account": "nobody"}).status_code == 404
    assert admin.post("/sync.json", json=form | {"flow": "nope"}).status_code == 404
    assert len(airflow_api.state.calls) == 2


def test_pending_deliveries_still_flag_an_account(app, tokens, store):
    ok = add(store, "ok_bar")
    row = TargetRow(target_key="1001", business_date=date(2026, 11, 20), amount=Decimal("10.00"))
    store.upsert_revenue(ok.id, [row], mode="overwrite")
    client = TestClient(app, headers=bearer(tokens["viewer"]))
    (r,) = client.get("/health.json").json()
    assert r["pending_delivery"] == 1 and r["healthy"] is False
    store.record_delivery(ok.id, row, "delivered")
    (r,) = client.get("/health.json").json()
    assert r["pending_delivery"] == 0 and r["healthy"] is True


def test_a_gated_kassatellen_run_names_the_unmapped_groups_in_accounts_show_and_the_health_json(
    app, tokens, store, sandbox, capsys
):
    import json

    from test_kassatellen_eitje import _account, _run
    from tillflow.cli import main

    account, conns = _account(store, sandbox, mapped=False)
    store.set_mapping(account.id, "revenue_group", "11", "501")  # 12 (Dranken) and 13 (Cadeaubonnen) are not
    _, outcomes = _run(store, conns, run_id="gated", at=datetime(2026, 11, 20, 12, 7, tzinfo=UTC), manual=False)
    assert [o.status for o in outcomes] == ["needs_mapping"]

    assert main(["-i", "kassatellen_to_eitje", "accounts", "show", "cafe"]) == 0
    shown = json.loads(capsys.readouterr().out)
    flow = shown["flows"]["revenue"]
    assert flow["status"] == "needs_mapping" and shown["status"] == "needs_mapping"
    for text in (flow["detail"], shown["status_detail"]):
        assert "12 (Dranken)" in text and "13 (Cadeaubonnen)" in text and "11 (" not in text

    client = TestClient(app, headers=bearer(tokens["viewer"]))
    rows = client.get("/health.json", params={"integration": "kassatellen_to_eitje"}).json()
    (r,) = [r for r in rows if r["flow"] == "revenue"]
    assert (r["account"], r["status"], r["healthy"]) == ("cafe", "needs_mapping", False)
    assert "12 (Dranken)" in r["detail"] and "13 (Cadeaubonnen)" in r["detail"]
    assert r["unmapped_keys"] == [
        {"key": "12", "name": "Dranken", "kind": "revenue_group"},
        {"key": "13", "name": "Cadeaubonnen", "kind": "revenue_group"},
    ]
    gated = client.get("/health.json", params={"status": "needs_mapping"}).json()
    assert ("cafe", "revenue") in {(r["account"], r["flow"]) for r in gated}


def test_the_plugin_registers_the_app():
    import importlib.util
    from pathlib import Path

    from airflow.plugins_manager import AirflowPlugin  # noqa: F401 - the import path the plugin uses

    path = Path(__file__).resolve().parents[2] / "plugins" / "tillflow_plugin.py"
    spec = importlib.util.spec_from_file_location("tillflow_plugin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.TillflowPlugin
    assert plugin.fastapi_apps[0]["url_prefix"] == "/tillflow"
    assert plugin.external_views[0]["href"] == "tillflow/health"
