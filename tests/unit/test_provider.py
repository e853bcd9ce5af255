"""The tillflow provider distribution: its provider info, the connection forms, what Airflow makes of them."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import pytest
from tillflow_provider import PACKAGE_NAME, get_provider_info
from tillflow_provider.forms import FORMS, STANDARD_FIELDS
from tillflow_provider.hooks import HOOKS, TillflowVendorHook, _close, _failure

SYSTEMS = {
    "ajour",
    "planday",
    "kassatellen",
    "eitje",
    "mpluskassa",
    "shiftbase",
    "kashclick",
    "pennylane",
    "ccv_salespos",
    "eaccounting",
}


def _types() -> dict[str, dict]:
    return {c["connection-type"]: c for c in get_provider_info()["connection-types"]}


def test_the_entry_point_gives_the_provider_info():
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("tillflow_provider")]
    info = ep.load()()
    assert info["package-name"] == PACKAGE_NAME == "tillflow-airflow-provider"
    assert info["name"] and info["description"] and info["versions"]


def test_one_connection_type_per_system_with_an_importable_hook():
    types = _types()
    assert set(types) == SYSTEMS == set(HOOKS) == set(FORMS)
    for conn_type, entry in types.items():
        module, _, name = entry["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert issubclass(hook, TillflowVendorHook) and hook is HOOKS[conn_type]
        assert hook.conn_type == conn_type and hook.conn_name_attr == "conn_id"
        assert hook.default_conn_name == f"{conn_type}_default"
        assert hook.hook_name == entry["hook-name"]
        assert callable(hook.test_connection)
    modules = {m for h in get_provider_info()["hooks"] for m in h["python-modules"]}
    assert modules == {"tillflow_provider.hooks"}


def test_the_hooks_use_the_clients_tillflow_runs_with():
    from tillflow.sources import get_source
    from tillflow.targets import get_target

    for conn_type, hook in HOOKS.items():
        side, name = FORMS[conn_type].client
        assert hook.client_class() is (get_source(name) if side == "source" else get_target(name))


def test_ajour_form_has_the_vendors_own_fields():
    ajour = _types()["ajour"]
    behaviour = ajour["ui-field-behaviour"]
    assert behaviour["relabeling"] == {"host": "Host", "schema": "Database", "login": "User", "password": "Password"}
    assert behaviour["hidden-fields"] == []
    assert ajour["conn-fields"]["company_id"]["label"] == "CompanyID"
    assert "format" not in ajour["conn-fields"]["company_id"]["schema"]  # an id, not a secret


@pytest.mark.parametrize(
    "conn_type, relabel, hidden",
    [
        ("mpluskassa", {"port": "Port", "login": "API ident", "password": "API secret"}, ["schema"]),
        ("shiftbase", {"password": "API key"}, ["schema", "port", "login"]),
        ("planday", {"login": "Client ID (app id)", "password": "Refresh token"}, ["schema", "port"]),
        ("eitje", {"login": "Api-Username", "password": "Api-Password"}, ["schema", "port"]),
        ("kassatellen", {"login": "E-mail", "password": "Password"}, ["schema", "port"]),
        ("ccv_salespos", {"login": "API public key", "password": "API secret key"}, ["schema", "port"]),
        ("pennylane", {"login": "OAuth client ID", "password": "Refresh token"}, ["schema", "port"]),
        ("eaccounting", {"login": "OAuth client ID", "password": "Refresh token"}, ["schema", "port"]),
    ],
)
def test_forms_relabel_and_hide(conn_type, relabel, hidden):
    behaviour = _types()[conn_type]["ui-field-behaviour"]
    assert relabel.items() <= behaviour["relabeling"].items()
    assert behaviour["hidden-fields"] == hidden
    assert set(behaviour["hidden-fields"]) <= set(STANDARD_FIELDS) and "password" not in behaviour["hidden-fields"]
    assert "extra" in behaviour["placeholders"]  # the Extra JSON stays for the HTTP policy keys


def test_secret_extras_are_password_fields_and_masked_by_airflow_and_tillflow():
    from airflow._shared.secrets_masker import SecretsMasker
    from airflow._shared.secrets_masker.secrets_masker import DEFAULT_SENSITIVE_FIELDS
    from tillflow.sources.base import ConnectionInfo

    masker = SecretsMasker()
    masker.sensitive_variables_fields = list(DEFAULT_SENSITIVE_FIELDS)
    secret_fields = {
        (t, name)
        for t, entry in _types().items()
        for name, f in entry.get("conn-fields", {}).items()
        if f["schema"].get("format") == "password"
    }
    assert secret_fields == {
        ("eitje", "partner_password"),
        ("pennylane", "client_secret"),
        ("eaccounting", "client_secret"),
    }
    for _conn_type, name in secret_fields:
        assert masker.should_hide_value_for_key(name), name  # the API answers *** for it
        info = ConnectionInfo("c", password="pw", extra={name: "value-of-a-secret"})
        assert "value-of-a-secret" in info.secrets()  # tillflow masks it in its messages
    for entry in _types().values():
        for name, f in entry.get("conn-fields", {}).items():
            if f["schema"].get("format") != "password":
                assert not masker.should_hide_value_for_key(name), name


def _filled(conn_type: str) -> dict:
    """A connection with every field the form shows filled in."""
    form = FORMS[conn_type]
    fields = {"host": "https://vendor.example", "login": "user", "password": "s3cret-pw", "schema": "db", "port": 443}
    fields = {k: v for k, v in fields.items() if k not in form.hidden}
    fields["extra"] = {f.name: f"value-{f.name}" for f in form.extras}
    return fields


@pytest.mark.parametrize("conn_type", sorted(SYSTEMS))
def test_every_form_fills_what_the_client_reads(conn_type):
    """A connection filled in through the form builds the client (no call), and an extra field left empty
    in the UI (missing, or null) is either accepted or refused naming it, never a crash."""
    from tillflow.errors import ConfigError
    from tillflow.sources.base import ConnectionInfo
    from tillflow.tokens import MemoryTokenStore

    hook = HOOKS[conn_type]
    kwargs = {"token_store": MemoryTokenStore()} if conn_type == "eaccounting" else {}
    _close(hook.client_class().from_connection(ConnectionInfo("c", **_filled(conn_type)), **kwargs))
    for extra in FORMS[conn_type].extras:
        for empty in ({}, {extra.name: None}):
            fields = _filled(conn_type)
            fields["extra"] = {**{k: v for k, v in fields["extra"].items() if k != extra.name}, **empty}
            try:
                _close(hook.client_class().from_connection(ConnectionInfo("c", **fields), **kwargs))
            except ConfigError as exc:
                assert extra.name in str(exc)


@pytest.mark.parametrize("conn_type", sorted(SYSTEMS))
def test_every_client_closes_its_session_the_same_way(conn_type, monkeypatch):
    """``close()`` on every source and target client (the CLI, the runs and the hooks call nothing else)."""
    from tillflow.sources.base import ConnectionInfo, SourceClient
    from tillflow.targets.base import TargetClient
    from tillflow.tokens import MemoryTokenStore

    hook = HOOKS[conn_type]
    kwargs = {"token_store": MemoryTokenStore()} if conn_type == "eaccounting" else {}
    client = hook.client_class().from_connection(ConnectionInfo("c", **_filled(conn_type)), **kwargs)
    assert isinstance(client, SourceClient | TargetClient)
    session = client.http.session if hasattr(client, "http") else client.session
    closed = []
    monkeypatch.setattr(session, "close", lambda: closed.append(conn_type))
    client.close()
    assert closed == [conn_type]


def test_airflow_registers_the_types_widgets_and_behaviours():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    for conn_type in SYSTEMS:
        info = pm.hooks[conn_type]
        assert info is not None and info.package_name == PACKAGE_NAME and info.connection_testable
    widgets = pm.connection_form_widgets
    assert widgets["extra__ajour__company_id"].is_sensitive is False
    assert widgets["extra__eitje__partner_password"].is_sensitive is True
    assert widgets["extra__pennylane__client_secret"].is_sensitive is True
    assert widgets["extra__eaccounting__client_secret"].is_sensitive is True
    assert pm.field_behaviours["ajour"]["relabeling"]["schema"] == "Database"


def test_the_ui_form_metadata():
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    meta = {m.connection_type: m for m in HookMetaService.hook_meta_data()}
    ajour = meta["ajour"]
    assert ajour.hook_name == "Ajour POS"
    assert ajour.standard_fields.url_schema.title == "Database"
    assert ajour.standard_fields.host.title == "Host" and ajour.standard_fields.login.title == "User"
    assert ajour.extra_fields["company_id"]["schema"]["title"] == "CompanyID"
    assert meta["mpluskassa"].standard_fields.port.title == "Port"
    assert meta["eitje"].extra_fields["partner_password"]["schema"]["format"] == "password"
    assert meta["shiftbase"].standard_fields.login.hidden is True


def test_a_failure_message_is_one_masked_line():
    from tillflow.errors import AuthError, ConfigError

    secret = "very-secret-token"
    msg = _failure("Planday", AuthError(f"planday: refused {secret}\nsecond line"), [secret])
    assert msg.startswith("Planday: credentials refused: ") and secret not in msg and "\n" not in msg
    assert _failure("Ajour POS", ConfigError("extra.company_id missing"), []).startswith(
        "Ajour POS: connection incomplete: "
    )


def test_without_the_connection_the_test_says_so(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AJOUR_DEFAULT", raising=False)
    ok, message = HOOKS["ajour"]().test_connection()
    assert ok is False and "ajour_default" in message
