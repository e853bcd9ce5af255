"""End to end: ccv_salespos_to_eaccounting (orders) and its products DAG through Airflow (``dag.test()``)
against the CCV and eAccounting stand-ins on real PostgreSQL, with injected faults; a re-run creates nothing."""

from __future__ import annotations

import json
import os
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FAST = {"backoff_base": 0.02, "backoff_max": 0.2, "max_retry_after": 1, "read_timeout": 3, "max_attempts": 6}


@pytest.fixture(scope="module")
def dags(airflow_db, mail_server):
    from tillflow.factory import build_dags
    from tillflow.specs import load_spec

    spec = load_spec(ROOT / "dags" / "ccv_salespos_to_eaccounting.yaml")
    return build_dags(spec.model_copy(update={"retry_delay_seconds": 1}))


def test_orders_and_products_through_airflow_with_faults(store, sandbox, dags, mail):
    from tillflow.specs import load_spec, parse_settings

    spec = load_spec(ROOT / "dags" / "ccv_salespos_to_eaccounting.yaml")
    shop = "airflowshop"
    os.environ["AIRFLOW_CONN_CCV_AIRFLOWSHOP"] = json.dumps(
        {"conn_type": "http", "host": sandbox.ccv_url, "login": f"pk-{shop}", "password": f"sk-{shop}", "extra": FAST}
    )
    os.environ["AIRFLOW_CONN_EACCOUNTING_AIRFLOWSHOP"] = json.dumps(
        {
            "conn_type": "http",
            "host": f"{sandbox.eaccounting_url}/v2",
            "login": "tillflow-app",
            "password": f"ert-{shop}",
            "extra": {"client_secret": "cs", **FAST, "token_url": f"{sandbox.eaccounting_url}/connect/token"},
        }
    )
    store.upsert_account(
        spec.integration,
        shop,
        name="Airflow shop",
        conn_id=f"ccv_{shop}",
        target_conn_id=f"eaccounting_{shop}",
        settings=parse_settings({"timezone": "Europe/Amsterdam", "lookback_days": 14}, spec=spec),
    )
    products = requests.get(f"{sandbox.ccv_url}/_sandbox/shops/{shop}", timeout=5).json()["shop"]["products"]
    company = requests.get(f"{sandbox.eaccounting_url}/_sandbox/companies/{shop}", timeout=5).json()["company"]
    requests.post(
        f"{sandbox.eaccounting_url}/_sandbox/lose", json={"count": 1, "paths": ["/v2/orders"]}, timeout=5
    ).raise_for_status()
    requests.post(f"{sandbox.ccv_url}/_sandbox/faults", json={"rate_5xx": 0.1, "seed": 4}, timeout=5).raise_for_status()

    # products first (eAccounting → CCV): articles for every CCV SKU, so every order finds its products
    from tillflow.sources.base import ConnectionInfo
    from tillflow.targets.eaccounting import EaccountingClient

    conn = json.loads(os.environ["AIRFLOW_CONN_EACCOUNTING_AIRFLOWSHOP"])
    client = EaccountingClient.from_connection(
        ConnectionInfo(
            conn_id="eaccounting_airflowshop",
            host=conn["host"],
            login=conn["login"],
            password=conn["password"],
            extra=conn["extra"],
        )
    )
    for p in products:
        client.create_article(
            {
                "IsActive": True,
                "Number": p["sku"],
                "Name": p["name"][:50],
                "GrossPrice": Decimal(str(p["price_incl"])),
                "CodingId": company["codings"][0]["Id"],
                "UnitId": company["units"][0]["Id"],
            }
        )
    assert dags["ccv_salespos_to_eaccounting_products"].test().state == "success"
    assert dags["ccv_salespos_to_eaccounting"].test().state == "success"
    orders = requests.get(f"{sandbox.eaccounting_url}/_sandbox/companies/{shop}", timeout=5).json()["company"]["orders"]
    refs = Counter(o["YourReference"] for o in orders)
    paid = [
        o
        for o in requests.get(f"{sandbox.ccv_url}/_sandbox/shops/{shop}", timeout=5).json()["shop"]["orders"]
        if o["paid"]
    ]
    assert len(refs) == len(paid) and max(refs.values()) == 1  # the lost answer did not duplicate an order
    assert dags["ccv_salespos_to_eaccounting"].test().state == "success"  # a re-run creates nothing
    orders = requests.get(f"{sandbox.eaccounting_url}/_sandbox/companies/{shop}", timeout=5).json()["company"]["orders"]
    assert len(orders) == len(paid)
