"""tillflow.field_mapper: defaults, overrides checked when saved, filling eAccounting objects from a CCV order."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tillflow.errors import ConfigError
from tillflow.field_mapper import DEFAULT, apply, apply_row, check

ORDER = {
    "ordernumber": "2026-0042",
    "created": "2026-11-20T10:00:00Z",
    "country": "NL",
    "customer": {
        "email": "info@bakkerij.nl",
        "name": "Jan de Bakker",
        "company": "Bakkerij de Korenbloem",
        "billing_address": {
            "name": "Jan",
            "street": "Dorpsstraat 1",
            "zipcode": "1234 AB",
            "city": "Utrecht",
            "country": "NL",
        },
        "shipping_address": None,
    },
}
ROW = {"sku": "SKU-7", "name": "Brood", "quantity": Decimal("2"), "price_incl": Decimal("3.10")}


def test_the_default_mapping_fills_customer_order_and_rows():
    m = check(None)
    assert m == DEFAULT
    assert apply(m, "customer", ORDER)["Name"] == "Bakkerij de Korenbloem"  # company name first
    person = {**ORDER, "customer": {**ORDER["customer"], "company": None}}
    assert apply(m, "customer", person)["Name"] == "Jan de Bakker"
    order = apply(m, "order", ORDER)
    assert order["YourReference"] == "2026-0042" and order["DeliveryCity"] == "Utrecht"  # billing as fallback
    assert apply_row(m, ORDER, ROW) == {
        "ArticleNumber": "SKU-7",
        "Text": "Brood",
        "Quantity": Decimal("2"),
        "UnitPrice": Decimal("3.10"),
    }


def test_an_override_replaces_one_field_and_none_switches_one_off():
    m = check({"customer": {"Name": "customer.name", "ContactPersonName": None}})
    assert apply(m, "customer", ORDER)["Name"] == "Jan de Bakker"
    assert "ContactPersonName" not in apply(m, "customer", ORDER)
    assert m["order"] == DEFAULT["order"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"customer": {"Nmae": "customer.name"}}, "flows.orders.field_map.customer.Nmae: eAccounting has no such"),
        ({"customer": {"Name": "customer.nickname"}}, "a CCV order has no field 'customer.nickname'"),
        ({"row": {"Quantity": "row.qty"}}, "a CCV order has no field 'row.qty'"),
        ({"invoice": {"Name": "customer.name"}}, "flows.orders.field_map.invoice: unknown object"),
        ({"order": {"YourReference": "ordernumber|order_no"}}, "no field 'order_no'"),
    ],
)
def test_a_mapper_setting_naming_an_unknown_field_is_refused_naming_it(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        check(overrides)
