"""The sync-health view: one row per account, unhealthy ones flagged (real store, FastAPI test client)."""

from datetime import date
from decimal import Decimal

from fastapi.testclient import TestClient
from tillflow.health import create_app
from tillflow.records import TargetRow
from tillflow.specs import AccountSettings
from tillflow.store import Store


def test_health_lists_accounts_and_flags_pending_and_failures(store, pg_url):
    ok = store.upsert_account("ajour_to_planday", "ok_bar", name="OK Bar", conn_id="c", settings=AccountSettings())
    bad = store.upsert_account("ajour_to_planday", "bad_bar", name="Bad Bar", conn_id="c", settings=AccountSettings())
    store.set_status(bad.id, "needs_mapping", "unmapped location(s): L5")
    row = TargetRow(target_key="1001", business_date=date(2026, 11, 20), amount=Decimal("10.00"))
    store.upsert_revenue(ok.id, [row], mode="overwrite")
    app = create_app(lambda: Store.open(pg_url))  # the store fixture migrated it
    client = TestClient(app)

    rows = {r["account"]: r for r in client.get("/health.json").json()}
    assert rows["ok_bar"]["pending_delivery"] == 1 and rows["ok_bar"]["healthy"] is False
    assert rows["bad_bar"]["status"] == "needs_mapping" and "L5" in rows["bad_bar"]["detail"]

    store.record_delivery(ok.id, row, "delivered")
    rows = {r["account"]: r for r in client.get("/health.json").json()}
    assert rows["ok_bar"]["pending_delivery"] == 0 and rows["ok_bar"]["healthy"] is True
    page = client.get("/health")
    assert page.status_code == 200 and "1 need attention" in page.text and "Bad Bar" in page.text


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
