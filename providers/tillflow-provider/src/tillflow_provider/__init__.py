"""tillflow's Airflow provider: one connection type per vendor, with the vendor's own fields."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

PACKAGE_NAME = "tillflow-airflow-provider"


def get_provider_info() -> dict[str, Any]:
    """The provider info Airflow's ProvidersManager reads (entry point ``apache_airflow_provider``)."""
    from tillflow_provider.forms import FORMS

    integrations = [{"integration-name": form.hook_name, "tags": ["service"]} for form in FORMS.values()]
    return {
        "package-name": PACKAGE_NAME,
        "name": "tillflow",
        "description": "tillflow's vendor connections: POS systems (Ajour, Kassatellen, MplusKASSA, Kash.click, "
        "CCV SalesPOS) and workforce/accounting tools (Planday, Eitje, Shiftbase, Pennylane, Visma "
        "eAccounting), each with its own connection form and a connection test through tillflow's clients.",
        "versions": [__version__],
        "integrations": integrations,
        "hooks": [
            {"integration-name": form.hook_name, "python-modules": ["tillflow_provider.hooks"]}
            for form in FORMS.values()
        ],
        "connection-types": [form.connection_type() for form in FORMS.values()],
    }
