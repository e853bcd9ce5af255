"""The field mapper of CCV SalesPOS → Visma eAccounting orders: which source field fills which target field.

A default mapping (name, billing and shipping address, SKU, quantity, price…) that an account overrides in
its settings (``flows.orders.field_map``: target field → source path). An override is checked when it is
saved: a target field eAccounting does not have, or a source path a CCV order does not have, is refused
naming it (:func:`check`). :func:`apply` fills a target object from one order (and :func:`apply_row` from
one of its rows). Pure: no I/O.

Source paths are dotted paths into a CCV order (:class:`tillflow.sources.ccv.CcvOrder`): ``ordernumber``,
``created``, ``customer.email``, ``customer.billing_address.city``, and for rows ``row.sku``,
``row.quantity``…; a path may list alternatives with ``|`` (the first non-empty wins:
``customer.company|customer.name``).
"""

from __future__ import annotations

from typing import Any

from tillflow.errors import ConfigError

_ADDRESS = ("name", "company", "street", "housenumber", "zipcode", "city", "country")

#: every path a CCV order offers
ORDER_PATHS: frozenset[str] = frozenset(
    {"order_id", "ordernumber", "status", "status_name", "paid", "created", "total_incl", "country"}
    | {f"customer.{f}" for f in ("email", "name", "company")}
    | {f"customer.billing_address.{f}" for f in _ADDRESS}
    | {f"customer.shipping_address.{f}" for f in _ADDRESS}
)
ROW_PATHS: frozenset[str] = frozenset({f"row.{f}" for f in ("sku", "name", "quantity", "price_incl", "vat_rate")})

#: the eAccounting fields the mapper may fill (customer, order and order-row objects)
CUSTOMER_FIELDS = frozenset(
    {
        "Name",
        "EmailAddress",
        "InvoiceAddress1",
        "InvoiceAddress2",
        "InvoicePostalCode",
        "InvoiceCity",
        "InvoiceCountryCode",
        "DeliveryCustomerName",
        "DeliveryAddress1",
        "DeliveryPostalCode",
        "DeliveryCity",
        "DeliveryCountryCode",
        "ContactPersonName",
        "ContactPersonEmail",
    }
)
ORDER_FIELDS = frozenset(
    {
        "YourReference",
        "OrderDate",
        "DeliveryCustomerName",
        "DeliveryAddress1",
        "DeliveryPostalCode",
        "DeliveryCity",
        "DeliveryCountryCode",
    }
)
ROW_FIELDS = frozenset({"ArticleNumber", "Text", "Quantity", "UnitPrice"})

DEFAULT: dict[str, dict[str, str]] = {
    "customer": {
        "Name": "customer.company|customer.name",
        "EmailAddress": "customer.email",
        "InvoiceAddress1": "customer.billing_address.street",
        "InvoicePostalCode": "customer.billing_address.zipcode",
        "InvoiceCity": "customer.billing_address.city",
        "InvoiceCountryCode": "customer.billing_address.country|country",
        "ContactPersonName": "customer.name",
        "ContactPersonEmail": "customer.email",
    },
    "order": {
        "YourReference": "ordernumber",
        "OrderDate": "created",
        "DeliveryCustomerName": "customer.shipping_address.name|customer.name",
        "DeliveryAddress1": "customer.shipping_address.street|customer.billing_address.street",
        "DeliveryPostalCode": "customer.shipping_address.zipcode|customer.billing_address.zipcode",
        "DeliveryCity": "customer.shipping_address.city|customer.billing_address.city",
        "DeliveryCountryCode": "customer.shipping_address.country|customer.billing_address.country|country",
    },
    "row": {"ArticleNumber": "row.sku", "Text": "row.name", "Quantity": "row.quantity", "UnitPrice": "row.price_incl"},
}
_TARGETS = {"customer": CUSTOMER_FIELDS, "order": ORDER_FIELDS, "row": ROW_FIELDS}


def check(overrides: dict[str, dict[str, str]] | None, *, where: str = "flows.orders.field_map") -> dict[str, dict]:
    """Validate an account's overrides and return the mapping in force (defaults plus overrides).

    :raises ConfigError: naming the object, the target field or the source path that does not exist.
    """
    mapping = {obj: dict(fields) for obj, fields in DEFAULT.items()}
    for obj, fields in (overrides or {}).items():
        if obj not in _TARGETS:
            raise ConfigError(f"{where}.{obj}: unknown object; use one of {', '.join(sorted(_TARGETS))}")
        if not isinstance(fields, dict):
            raise ConfigError(f"{where}.{obj}: expected {{target field: source path}}, got {fields!r}")
        for target, source in fields.items():
            if target not in _TARGETS[obj]:
                raise ConfigError(
                    f"{where}.{obj}.{target}: eAccounting has no such {obj} field; known: "
                    f"{', '.join(sorted(_TARGETS[obj]))}"
                )
            if source is None:  # switched off
                mapping[obj].pop(target, None)
                continue
            known = ROW_PATHS | ORDER_PATHS if obj == "row" else ORDER_PATHS
            for path in str(source).split("|"):
                if path.strip() not in known:
                    raise ConfigError(
                        f"{where}.{obj}.{target}: a CCV order has no field {path.strip()!r}; known: "
                        f"{', '.join(sorted(known))}"
                    )
            mapping[obj][target] = str(source)
    return mapping


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if data is None:
            return None
        data = data.get(part) if isinstance(data, dict) else getattr(data, part, None)
    return data


def _first(order: Any, source: str, row: Any = None) -> Any:
    for path in source.split("|"):
        path = path.strip()
        value = _get(row, path[4:]) if path.startswith("row.") else _get(order, path)
        if value not in (None, ""):
            return value
    return None


def apply(mapping: dict[str, dict[str, str]], obj: str, order: Any) -> dict[str, Any]:
    """The target fields of ``obj`` (customer, order) filled from one CCV order (empty ones left out)."""
    out = {target: _first(order, source) for target, source in mapping[obj].items()}
    return {k: v for k, v in out.items() if v is not None}


def apply_row(mapping: dict[str, dict[str, str]], order: Any, row: Any) -> dict[str, Any]:
    out = {target: _first(order, source, row) for target, source in mapping["row"].items()}
    return {k: v for k, v in out.items() if v is not None}
