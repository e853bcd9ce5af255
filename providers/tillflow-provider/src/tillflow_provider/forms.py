"""The connection form of each vendor: which standard fields it shows (and under which label), and its
own extra fields. No Airflow or tillflow import: the provider info is built from this at discovery time.

Every field maps onto what tillflow's client for the vendor reads (``from_connection`` in
``plugins/tillflow/sources|targets``): the form adds labels, placeholders and masked inputs, never a new
storage layout. Extra fields are stored under their bare name in the connection's extra (``company_id``,
``partner_password``, ``client_secret``), as the clients read them; optional HTTP-policy keys
(``timeout``, ``max_attempts``, ``rate_per_second``…) and advanced keys stay in the Extra JSON.

Only extras a client accepts when empty (missing or ``null``) are offered as form fields, so a field left
empty in the UI can never break a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the standard Connection fields a form can show
STANDARD_FIELDS = ("description", "host", "port", "schema", "login", "password", "extra")

#: hint shown in the Extra JSON of every form
POLICY_HINT = '{"timeout": 30, "max_attempts": 5, "rate_per_second": 8}'


@dataclass(frozen=True)
class ExtraField:
    """One vendor field stored in the connection's extra under ``name``."""

    name: str
    label: str
    description: str
    secret: bool = False

    def conn_field(self) -> dict[str, Any]:
        """The ``conn-fields`` entry of the provider info (a JSON schema; ``format: password`` masks it)."""
        schema: dict[str, Any] = {"type": ["string", "null"]}
        if self.secret:
            schema["format"] = "password"
        return {"label": self.label, "description": self.description, "schema": schema}


@dataclass(frozen=True)
class ConnectionForm:
    """The form of one connection type and the tillflow client that checks it."""

    conn_type: str
    hook_name: str
    hook_class: str
    #: ``("source" | "target", name)`` in tillflow's client registries
    client: tuple[str, str]
    relabeling: dict[str, str]
    placeholders: dict[str, str]
    hidden: tuple[str, ...] = ()
    extras: tuple[ExtraField, ...] = ()
    #: refresh tokens rotate and work once (tested through tillflow's token store)
    rotating_refresh_token: bool = False
    notes: str = ""
    #: what the client's test lists, for the test's message
    listed: str = "item(s)"
    extra_placeholder: str = POLICY_HINT

    def ui_field_behaviour(self) -> dict[str, Any]:
        """Hidden fields, relabelling and placeholders, in the provider-info (kebab-case) form."""
        return {
            "hidden-fields": list(self.hidden),
            "relabeling": dict(self.relabeling),
            "placeholders": {**self.placeholders, "extra": self.extra_placeholder},
        }

    def conn_fields(self) -> dict[str, dict[str, Any]]:
        return {f.name: f.conn_field() for f in self.extras}

    def connection_type(self) -> dict[str, Any]:
        """The ``connection-types`` entry of the provider info."""
        entry: dict[str, Any] = {
            "connection-type": self.conn_type,
            "hook-class-name": self.hook_class,
            "hook-name": self.hook_name,
            "ui-field-behaviour": self.ui_field_behaviour(),
        }
        if self.extras:
            entry["conn-fields"] = self.conn_fields()
        return entry

    @property
    def secret_extras(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.extras if f.secret)


_HOOKS = "tillflow_provider.hooks"

FORMS: dict[str, ConnectionForm] = {
    form.conn_type: form
    for form in (
        ConnectionForm(
            conn_type="ajour",
            listed="POS location(s)",
            hook_name="Ajour POS",
            hook_class=f"{_HOOKS}.AjourHook",
            client=("source", "ajour"),
            relabeling={"host": "Host", "schema": "Database", "login": "User", "password": "Password"},
            placeholders={"host": "IP address or URL of the Ajour server", "port": "only when Host has none"},
            extras=(ExtraField("company_id", "CompanyID", "The CompanyID Ajour gave for this customer (required)."),),
            notes="Credentials as Planday's own Ajour integration asks for them: CompanyID, User, Password, "
            "Database, Host.",
        ),
        ConnectionForm(
            conn_type="planday",
            listed="revenue unit(s)",
            hook_name="Planday",
            hook_class=f"{_HOOKS}.PlandayHook",
            client=("target", "planday"),
            relabeling={"host": "API URL", "login": "Client ID (app id)", "password": "Refresh token"},
            placeholders={"host": "https://openapi.planday.com (default)"},
            hidden=("schema", "port"),
            notes="Advanced extra keys: token_url, client_rate_per_second (per client id, < 33).",
        ),
        ConnectionForm(
            conn_type="kassatellen",
            listed="revenue group(s)",
            hook_name="Kassatellen POS",
            hook_class=f"{_HOOKS}.KassatellenHook",
            client=("source", "kassatellen"),
            relabeling={"host": "API URL", "login": "E-mail", "password": "Password"},
            placeholders={"host": "https://api.kassatellen.example", "login": "the customer's Kassatellen e-mail"},
            hidden=("schema", "port"),
        ),
        ConnectionForm(
            conn_type="eitje",
            listed="revenue group(s)",
            hook_name="Eitje",
            hook_class=f"{_HOOKS}.EitjeHook",
            client=("target", "eitje"),
            relabeling={"host": "API URL", "login": "Api-Username", "password": "Api-Password"},
            placeholders={"host": "https://open-api.eitje.app (default)"},
            hidden=("schema", "port"),
            extras=(
                ExtraField("partner_username", "Partner-Username", "tillflow's Eitje partner user name (required)."),
                ExtraField(
                    "partner_password", "Partner-Password", "tillflow's Eitje partner password (required).", True
                ),
            ),
        ),
        ConnectionForm(
            conn_type="mpluskassa",
            listed="branch(es)",
            hook_name="MplusKASSA POS",
            hook_class=f"{_HOOKS}.MplusKassaHook",
            client=("source", "mpluskassa"),
            relabeling={"host": "Endpoint", "port": "Port", "login": "API ident", "password": "API secret"},
            placeholders={"host": "https://api.mpluskassa.nl", "port": "the customer's port, e.g. 7001"},
            hidden=("schema",),
            notes="ident and secret travel as query parameters; tillflow masks both. Advanced extra key: "
            "service_path (default MplusQapi).",
        ),
        ConnectionForm(
            conn_type="shiftbase",
            listed="team(s)",
            hook_name="Shiftbase",
            hook_class=f"{_HOOKS}.ShiftbaseHook",
            client=("target", "shiftbase"),
            relabeling={"host": "API URL", "password": "API key"},
            placeholders={"host": "https://api.shiftbase.com/api (default)"},
            hidden=("schema", "port", "login"),
        ),
        ConnectionForm(
            conn_type="kashclick",
            listed="payment method(s) in recent sales",
            hook_name="Kash.click POS",
            hook_class=f"{_HOOKS}.KashclickHook",
            client=("source", "kashclick"),
            relabeling={"host": "Base URL", "login": "Login", "password": "Password"},
            placeholders={"host": "https://<shop>.kash.click", "login": "the shop's Kash.click login"},
            hidden=("schema", "port"),
        ),
        ConnectionForm(
            conn_type="pennylane",
            listed="journal(s)",
            hook_name="Pennylane",
            hook_class=f"{_HOOKS}.PennylaneHook",
            client=("target", "pennylane"),
            relabeling={"host": "API URL", "login": "OAuth client ID", "password": "Refresh token"},
            placeholders={"host": "https://app.pennylane.com/api/external/v2 (default)"},
            hidden=("schema", "port"),
            extras=(ExtraField("client_secret", "OAuth client secret", "The OAuth app's client secret.", True),),
            rotating_refresh_token=True,
            notes="Advanced extra keys: token_url, country_alpha2 (default FR).",
        ),
        ConnectionForm(
            conn_type="ccv_salespos",
            listed="order status(es)",
            hook_name="CCV Shop / SalesPOS",
            hook_class=f"{_HOOKS}.CcvSalesposHook",
            client=("source", "ccv_salespos"),
            relabeling={"host": "Shop URL", "login": "API public key", "password": "API secret key"},
            placeholders={"host": "https://<shop>.ccvshop.nl"},
            hidden=("schema", "port"),
        ),
        ConnectionForm(
            conn_type="eaccounting",
            listed="VAT code(s)",
            hook_name="Visma eAccounting",
            hook_class=f"{_HOOKS}.EaccountingHook",
            client=("target", "eaccounting"),
            relabeling={"host": "API URL", "login": "OAuth client ID", "password": "Refresh token"},
            placeholders={"host": "https://eaccountingapi.vismaonline.com/v2 (default)"},
            hidden=("schema", "port"),
            extras=(
                ExtraField("client_secret", "OAuth client secret", "The OAuth app's client secret (required).", True),
            ),
            rotating_refresh_token=True,
            notes="Advanced extra key: token_url (default https://identity.vismaonline.com/connect/token).",
        ),
    )
}
