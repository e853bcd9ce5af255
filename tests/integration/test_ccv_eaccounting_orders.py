"""CCV SalesPOS → eAccounting orders through the platform's steps against both stand-ins and real PostgreSQL:
only paid orders, created once (a re-run and a lost answer never duplicate), company vs private customers,
a missing product fails the order naming the SKU and the next run creates it once the article exists."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import requests
from runs import run_flows
from tillflow.sources.base import ConnectionInfo
from tillflow.specs import load_spec, parse_settings
from tillflow.sync import RunParams, plan_run, run_shard

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "dags" / "ccv_salespos_to_eaccounting.yaml")
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "read_timeout": 5, "max_retry_after": 1}


def _setup(store, sandbox, shop):
    account = store.upsert_account(
        SPEC.integration,
        shop,
        name=shop.title(),
        conn_id=f"ccv_{shop}",
        target_conn_id=f"eaccounting_{shop}",
        settings=parse_settings({"timezone": "Europe/Amsterdam", "lookback_days": 14}, spec=SPEC),
    )
    conns = {
        f"ccv_{shop}": ConnectionInfo(
            conn_id=f"ccv_{shop}", host=sandbox.ccv_url, login=f"pk-{shop}", password=f"sk-{shop}", extra=FAST
        ),
        f"eaccounting_{shop}": ConnectionInfo(
            conn_id=f"eaccounting_{shop}",
            host=f"{sandbox.eaccounting_url}/v2",
            login="tillflow-app",
            password=f"ert-{shop}",
            extra={"client_secret": "cs-test", "token_url": f"{sandbox.eaccounting_url}/connect/token", **FAST},
        ),
    }
    import tillflow.tokens as tokens

    tokens.set_default(tokens.DbTokenStore())  # rotated tokens kept where every run's shard looks for them
    return account, conns


def _ea(sandbox, shop):
    return requests.get(f"{sandbox.eaccounting_url}/_sandbox/companies/{shop}", timeout=10).json()["company"]


def _ccv(sandbox, shop):
    return requests.get(f"{sandbox.ccv_url}/_sandbox/shops/{shop}", timeout=10).json()["shop"]


def _articles(sandbox, conns, shop, skus):
    from tillflow.targets.eaccounting import EaccountingClient

    client = EaccountingClient.from_connection(conns[f"eaccounting_{shop}"])
    company = _ea(sandbox, shop)
    for sku in skus:
        client.create_article(
            {
                "IsActive": True,
                "Number": sku,
                "Name": f"Article {sku}",
                "NetPrice": Decimal("8.26"),
                "GrossPrice": Decimal("9.00"),
                "CodingId": company["codings"][0]["Id"],
                "UnitId": company["units"][0]["Id"],
            }
        )


def _run(store, conns, run_id):
    params = RunParams(date_from=date.today() - timedelta(days=14), date_to=date.today())
    return run_flows(store, SPEC, conns, run_id=run_id, params=params, threads=None)[1]


def test_paid_orders_are_created_once_and_a_missing_product_waits_for_its_article(store, sandbox):
    account, conns = _setup(store, sandbox, "webwinkel")
    shop = _ccv(sandbox, "webwinkel")
    skus = sorted({p["sku"] for p in shop["products"]})
    paid = [o for o in shop["orders"] if o["paid"]]
    missing = paid[0]["rows"][0]["product_number"]  # in a paid order
    _articles(sandbox, conns, "webwinkel", [s for s in skus if s != missing])  # one product not there yet
    outcomes = _run(store, conns, "o-1")
    ea = _ea(sandbox, "webwinkel")
    refs = Counter(o.get("YourReference") for o in ea["orders"])
    assert refs and max(refs.values()) == 1
    failed = store.conn.execute(
        "SELECT object_key, detail FROM tillflow.object_delivery WHERE status = 'failed'"
    ).fetchall()
    store.conn.commit()
    assert failed and all(missing in f["detail"] for f in failed)  # each such order names the SKU
    assert outcomes[0].status == "failed" and not outcomes[0].retryable  # refused, not an Airflow retry
    assert len(ea["orders"]) == len(paid) - len(failed)  # the others went; unpaid ones never
    kinds = {c["IsPrivatePerson"] for c in ea["customers"]}
    with_company = {o["customer"]["email"] for o in paid if (o["customer"].get("billingaddress") or {}).get("company")}
    assert (False in kinds) == bool(with_company)  # a company name → a company customer, else a person

    _articles(sandbox, conns, "webwinkel", [missing])  # the product appears
    outcomes = _run(store, conns, "o-2")
    assert outcomes[0].status == "success", outcomes[0].error
    ea = _ea(sandbox, "webwinkel")
    refs = Counter(o.get("YourReference") for o in ea["orders"])
    assert max(refs.values()) == 1 and len(refs) == len(paid)
    assert _run(store, conns, "o-3")[0].status == "success"
    assert len(_ea(sandbox, "webwinkel")["orders"]) == sum(refs.values())  # a re-run creates nothing


def test_a_lost_create_answer_never_duplicates_the_order(store, sandbox):
    account, conns = _setup(store, sandbox, "verloren")
    shop = _ccv(sandbox, "verloren")
    _articles(sandbox, conns, "verloren", sorted({p["sku"] for p in shop["products"]}))
    requests.post(
        f"{sandbox.eaccounting_url}/_sandbox/lose", json={"count": 1, "paths": ["/v2/orders"]}, timeout=5
    ).raise_for_status()
    first = _run(store, conns, "l-1")
    second = _run(store, conns, "l-2")
    assert second[0].status == "success", (first[0].error, second[0].error)
    refs = Counter(o.get("YourReference") for o in _ea(sandbox, "verloren")["orders"])
    assert refs and max(refs.values()) == 1  # the lost one was found by its reference, not created twice


def _run_products(store, conns, run_id, shop):
    flow = SPEC.flow("products")
    planned = plan_run(
        store,
        SPEC,
        [flow],
        dag_id="ccv_salespos_to_eaccounting_products",
        run_id=run_id,
        logical_date=datetime.now(UTC),
        params=RunParams(accounts=[shop]),  # this shop only: the other test accounts have their own conns
        manual=True,
    )
    assert planned.items, planned.not_run
    return [
        o
        for s in planned.shards
        for o in run_shard(
            SPEC,
            dag_id="ccv_salespos_to_eaccounting_products",
            run_id=run_id,
            shard=s["shard"],
            conns=conns.__getitem__,
        ).outcomes
    ]


def test_products_are_created_or_updated_by_sku_and_the_update_flag_keeps_ccv_data(store, sandbox):
    for shop, update in (("upd", True), ("keep", False)):
        account, conns = _setup(store, sandbox, shop)
        store.update_settings(
            account.id, account.settings.model_copy(update={"flows": {"products": {"update": update}}})
        )
        existing = _ccv(sandbox, shop)["products"][0]
        _articles(sandbox, conns, shop, [existing["sku"], "NEW-001"])  # one SKU CCV has, one it has not
        outcomes = _run_products(store, conns, f"p-{shop}-1", shop)
        assert outcomes[0].status == "success", outcomes[0].error
        products = {p["sku"]: p for p in _ccv(sandbox, shop)["products"]}
        assert products["NEW-001"]["name"] == "Article NEW-001"  # created
        assert Decimal(str(products["NEW-001"]["price_incl"])) == Decimal("9.00")  # incl. VAT as set
        expected = f"Article {existing['sku']}" if update else existing["name"]
        assert products[existing["sku"]]["name"] == expected  # updated, or the CCV data kept
        counts = store.activity(run_id=f"p-{shop}-1")[0]
        assert counts["delivered"] == (2 if update else 1) and counts["skipped"] == (0 if update else 1)
        assert (counts["source"], counts["target"]) == ("eaccounting", "ccv_salespos")  # from where, to where
        outcomes = _run_products(store, conns, f"p-{shop}-2", shop)
        assert store.activity(run_id=f"p-{shop}-2")[0]["delivered"] == 0  # unchanged articles are not re-sent


def test_the_activity_log_shows_per_flow_where_data_came_from_and_went(store, sandbox, capsys):
    import json

    from tillflow.cli import main

    account, conns = _setup(store, sandbox, "route")
    _articles(sandbox, conns, "route", sorted({p["sku"] for p in _ccv(sandbox, "route")["products"]}))
    _run(store, conns, "r-orders")
    _run_products(store, conns, "r-products", "route")
    assert main(["-i", SPEC.integration, "activity", "route", "--json"]) == 0
    rows = {r["flow"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["orders"]["source"], rows["orders"]["target"]) == ("ccv_salespos", "eaccounting")
    assert (rows["products"]["source"], rows["products"]["target"]) == ("eaccounting", "ccv_salespos")
    assert rows["orders"]["delivered"] > 0 and rows["products"]["delivered"] > 0
    assert main(["-i", SPEC.integration, "activity", "route", "--flow", "orders"]) == 0
    text = capsys.readouterr().out
    assert "ccv_salespos -> eaccounting" in text and "products" not in text


def test_stock_is_available_minus_reservations_and_only_changes_are_sent(store, sandbox):
    from tillflow.flows.stock import target_stock
    from tillflow.targets.eaccounting import EaccountingClient

    assert target_stock(Decimal("5"), Decimal("7"), "available_minus_reserved") == 0  # never below zero
    assert target_stock(Decimal("5"), Decimal("2"), "available") == 5
    account, conns = _setup(store, sandbox, "voorraad")
    ccv = {p["sku"]: p for p in _ccv(sandbox, "voorraad")["products"]}
    reserved = {s: p for s, p in ccv.items() if Decimal(str(p["reserved"])) > 0 and p["manage_stock"]}
    sku = sorted(reserved)[0]
    client = EaccountingClient.from_connection(conns["eaccounting_voorraad"])
    company = _ea(sandbox, "voorraad")
    client.create_article(
        {
            "IsActive": True,
            "Number": sku,
            "Name": "x",
            "StockBalance": Decimal("20"),
            "CodingId": company["codings"][0]["Id"],
            "UnitId": company["units"][0]["Id"],
        }
    )
    flow = SPEC.flow("stock")

    def run(run_id):
        planned = plan_run(
            store,
            SPEC,
            [flow],
            dag_id="ccv_salespos_to_eaccounting_stock",
            run_id=run_id,
            logical_date=datetime.now(UTC),
            params=RunParams(),
            manual=True,
        )
        outcomes = [
            o
            for s in planned.shards
            for o in run_shard(
                SPEC,
                dag_id="ccv_salespos_to_eaccounting_stock",
                run_id=run_id,
                shard=s["shard"],
                conns=conns.__getitem__,
            ).outcomes
        ]
        assert outcomes[0].status == "success", outcomes[0].error
        return store.activity(run_id=run_id)[0]

    assert run("s-1")["delivered"] == 1
    after = {p["sku"]: p for p in _ccv(sandbox, "voorraad")["products"]}
    assert Decimal(str(after[sku]["stock"])) == Decimal("20") - Decimal(str(reserved[sku]["reserved"]))
    assert run("s-2")["delivered"] == 0  # unchanged: not sent again
    store.update_settings(
        account.id, account.settings.model_copy(update={"flows": {"stock": {"ccv_manages_stock": False}}})
    )
    assert run("s-3")["delivered"] == 0  # CCV does not manage stock: nothing is sent


def test_an_order_without_email_goes_to_the_default_customer_or_to_rejects(store, sandbox):
    account, conns = _setup(store, sandbox, "anoniem")
    shop = _ccv(sandbox, "anoniem")
    paid = [o for o in shop["orders"] if o["paid"]]
    target = paid[0]
    requests.post(
        f"{sandbox.ccv_url}/_sandbox/shops/anoniem",
        timeout=5,
        json={
            "orders": [
                {
                    "id": target["id"],
                    "raw": {
                        "customer": {
                            "billingaddress": {**target["customer"]["billingaddress"], "email": None},
                            "email": None,
                        }
                    },
                }
            ]
        },
    ).raise_for_status()
    _articles(sandbox, conns, "anoniem", sorted({p["sku"] for p in shop["products"]}))
    _run(store, conns, "a-1")
    reasons = [r["reason"] for r in store.rejects(account.id)]
    assert any("no customer e-mail and no default customer" in r for r in reasons), reasons
    assert len(_ea(sandbox, "anoniem")["orders"]) == len(paid) - 1  # the others went

    from tillflow.targets.eaccounting import EaccountingClient

    client = EaccountingClient.from_connection(conns["eaccounting_anoniem"])
    terms = client.terms_of_payment()[0].key
    default = client.create_customer(
        {
            "Name": "Kassa (anoniem)",
            "IsPrivatePerson": True,
            "IsActive": True,
            "TermsOfPaymentId": terms,
            "InvoiceCity": "Utrecht",
            "InvoicePostalCode": "3511 AA",
        }
    )
    store.update_settings(
        account.id, account.settings.model_copy(update={"flows": {"orders": {"default_customer_id": default}}})
    )
    assert _run(store, conns, "a-2")[0].status == "success"
    orders = _ea(sandbox, "anoniem")["orders"]
    assert len(orders) == len(paid) and any(o["CustomerId"] == default for o in orders)


def test_order_type_invoice_books_each_paid_order_once_as_an_invoice_and_quote_is_refused(store, sandbox):
    import pytest
    from tillflow.errors import ConfigError

    account, conns = _setup(store, sandbox, "factuur")
    store.update_settings(
        account.id, account.settings.model_copy(update={"flows": {"orders": {"order_type": "invoice"}}})
    )
    shop = _ccv(sandbox, "factuur")
    paid = [o for o in shop["orders"] if o["paid"]]
    _articles(sandbox, conns, "factuur", sorted({p["sku"] for p in shop["products"]}))
    requests.post(  # the first invoice's answer is lost: found by its reference, never booked twice
        f"{sandbox.eaccounting_url}/_sandbox/lose", json={"count": 1, "paths": ["/v2/customerinvoices"]}, timeout=5
    ).raise_for_status()
    _run(store, conns, "f-1")
    assert _run(store, conns, "f-2")[0].status == "success"
    ea = _ea(sandbox, "factuur")
    refs = Counter(i.get("YourReference") for i in ea["invoices"])
    assert not ea["orders"] and len(refs) == len(paid) and max(refs.values()) == 1
    one = paid[0]
    invoice = next(i for i in ea["invoices"] if i["YourReference"].endswith(str(one["ordernumber"])))
    for pos_row, row in zip(one["rows"], invoice["Rows"], strict=True):  # rows carry prices excl. VAT
        net = (Decimal(str(pos_row["price"])) / (1 + Decimal(str(pos_row["tax"])) / 100)).quantize(Decimal("0.01"))
        assert Decimal(str(row["UnitPrice"])) == net and Decimal(str(row["Quantity"])) == Decimal(str(pos_row["count"]))

    with pytest.raises(ConfigError, match="quote"):
        parse_settings({"flows": {"orders": {"order_type": "quote"}}}, spec=SPEC)
