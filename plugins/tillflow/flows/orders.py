"""Orders: web-shop/POS orders created once in an accounting tool (CCV SalesPOS → Visma eAccounting).

Only orders in the account's chosen statuses go (``statuses``; ``paid_only``). Each order is a document
keyed by its order number (``tillflow.documents``); delivery is create-if-absent
(:func:`tillflow.delivery.create_if_absent.deliver_create_if_absent`): an order that already exists in the
target is skipped (looked up by its reference ``CCV-<number>`` — also after a create whose answer was
lost, so never a duplicate); the customer is found by e-mail and updated, or created (a company name → a
company customer with the person as contact, otherwise a private person); every product must exist by
SKU, else the order fails naming the SKU and is tried again at the next run (when the product appears).
Fields are filled by the field mapper (:mod:`tillflow.field_mapper`; overrides in ``field_map``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, field_validator

from tillflow.delivery.create_if_absent import deliver_create_if_absent
from tillflow.errors import RemoteError
from tillflow.field_mapper import apply, apply_row, check
from tillflow.flows.base import FlowKind
from tillflow.records import Reject
from tillflow.sources.ccv import CcvOrder

CENT = Decimal("0.01")


class OrdersSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: CCV status numbers that go (empty: any status)
    statuses: list[int] = []
    #: only paid orders
    paid_only: bool = True
    #: what the order becomes in eAccounting: a sales order (``/v2/orders``) or a booked customer invoice
    #: (``/v2/customerinvoices``); ``quote`` is refused: the published API v2 has no endpoint that creates one
    order_type: Literal["order", "invoice", "quote"] = "order"
    #: the eAccounting terms of payment of new customers (default: the first the target lists)
    terms_of_payment_id: str | None = None
    #: the eAccounting customer (id) of orders without an e-mail address; unset: such orders go to rejects
    default_customer_id: str | None = None
    #: country (ISO 2) → eAccounting VAT code id; when set, an order from a country not listed is refused
    vat_codes: dict[str, str] = {}
    field_map: dict[str, dict[str, str | None]] = {}
    notify_email: EmailStr | None = None
    enabled: bool = True

    @field_validator("order_type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v == "quote":
            raise ValueError(
                "quote: Visma eAccounting's API v2 (its published Swagger document) has no endpoint that creates a "
                "quote; choose order or invoice"
            )
        return v

    @field_validator("field_map")
    @classmethod
    def _mapper(cls, v: dict) -> dict:
        check(v, where="field_map")  # a field the mapper does not know is refused when the account is saved
        return v


def _hash(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


class Orders(FlowKind):
    name: ClassVar[str] = "orders"
    record = CcvOrder  # parsed into this model, carried as its JSON dict (landed pages replay the same)
    table: ClassVar[str] = "documents"
    key: ClassVar[tuple[str, ...]] = ("flow", "doc_key")
    windows = ("closed_days", "open_day")
    gate = "with_data"
    delivery = "create_if_absent"
    settings_model = OrdersSettings

    def parse(self, source_cls: Any, page: Any):
        return source_cls.parse_page(page)

    def record_key(self, record: Any) -> tuple:
        return ("order", record["ordernumber"])

    def record_day(self, record: Any, settings: Any = None) -> Any:
        """The business day the order was placed on: in the account's timezone, before the cutoff the day before
        (the same business days the fetch asked CCV for)."""
        created = datetime.fromisoformat(str(record["created"]).replace("Z", "+00:00"))
        if settings is None:
            return created.date()
        from tillflow.windows import business_date_of

        return business_date_of(created, settings.timezone, settings.business_day_cutoff)

    def map(self, records: Sequence[dict], rules, *, account, flow_settings, mapping_kind: str = ""):
        """Orders → (key, document); orders in other statuses are ignored; a country without a VAT code → reject."""
        settings = flow_settings or OrdersSettings()
        rows, rejects, ignored = [], [], 0
        for order in records:
            if (settings.statuses and order["status"] not in settings.statuses) or (
                settings.paid_only and not order.get("paid")
            ):
                ignored += 1
                continue
            if not order["customer"].get("email") and not settings.default_customer_id:
                rejects.append(
                    Reject(
                        reason=f"order {order['ordernumber']}: no customer e-mail and no default "
                        "customer (settings flows.orders.default_customer_id)",
                        payload=order,
                        ref=f"order {order['ordernumber']}",
                    )
                )
                continue
            country = (order["customer"]["billing_address"].get("country") or order.get("country") or "").upper()
            if settings.vat_codes and country not in settings.vat_codes:
                rejects.append(
                    Reject(
                        reason=f"order {order['ordernumber']}: country {country or '?'} has no VAT "
                        "code mapping (settings flows.orders.vat_codes)",
                        payload=order,
                        ref=f"order {order['ordernumber']}",
                    )
                )
                continue
            rows.append((f"order:{order['ordernumber']}", {"order": order, "country": country}))
        return rows, ignored, rejects

    def upsert(self, store, account_id, rows, *, mode, run_id) -> dict[str, int]:
        upserted = unchanged = 0
        with store.conn.transaction():
            for key, doc in rows:
                cur = store.conn.execute(
                    """
                    INSERT INTO tillflow.documents (account_id, flow, doc_key, payload, payload_hash, run_id)
                    VALUES (%s, 'orders', %s, %s::jsonb, %s, %s)
                    ON CONFLICT (account_id, flow, doc_key) DO UPDATE
                       SET payload = EXCLUDED.payload, payload_hash = EXCLUDED.payload_hash, run_id = EXCLUDED.run_id,
                           updated_at = now()
                     WHERE tillflow.documents.payload_hash <> EXCLUDED.payload_hash
                    """,
                    (account_id, key, json.dumps(doc, default=str), _hash(doc), run_id),
                )
                upserted += cur.rowcount
                unchanged += 1 - cur.rowcount
        return {"upserted": upserted, "unchanged": unchanged}

    def deliver(self, store, item, client, *, run_id, log=None) -> dict[str, int]:
        settings = OrdersSettings.model_validate(
            store.account_by_id(item.account_id).settings.flows.get(item.flow) or {}
        )
        docs = store.conn.execute(
            "SELECT doc_key, payload FROM tillflow.documents WHERE account_id = %s AND flow = 'orders' "
            "ORDER BY doc_key",
            (item.account_id,),
        ).fetchall()
        store.conn.commit()
        target = OrderTarget(client, settings)
        counts = deliver_create_if_absent(
            store,
            item.account_id,
            item.flow,
            [(d["doc_key"], d["payload"]) for d in docs],
            target,
            run_id=run_id,
            label=item.label,
        )
        store.activity_update(run_id, item.account_id, item.flow, delivered=counts["created"], skipped=counts["exists"])
        return {"delivered": counts["created"], "skipped": counts["exists"]}


class OrderTarget:
    """eAccounting as a create-if-absent target for CCV orders: find by reference, create with its customer."""

    def __init__(self, client: Any, settings: OrdersSettings):
        self.client, self.settings = client, settings
        self.name = client.name
        self.mapping = check(settings.field_map)
        self._terms: str | None = settings.terms_of_payment_id

    @staticmethod
    def reference(key: str) -> str:
        return f"CCV-{key.split(':', 1)[1]}"

    def find(self, key: str) -> str | None:
        if self.settings.order_type == "invoice":
            return self.client.find_invoice(self.reference(key))
        return self.client.find_order(self.reference(key))

    def _customer(self, order: dict) -> tuple[str, bool]:
        """The eAccounting customer of an order (found by e-mail and updated, or created); (id, private)."""
        if not order["customer"].get("email"):  # checked in map: the account's default customer
            return self.settings.default_customer_id, False
        fields = apply(self.mapping, "customer", order)
        private = not order["customer"].get("company")
        if private:
            fields.pop("ContactPersonName", None)
            fields.pop("ContactPersonEmail", None)
        found = self.client.find_customer_by_email(order["customer"]["email"])
        if found is not None:
            self.client.update_customer(found["Id"], fields)
            return found["Id"], bool(found.get("IsPrivatePerson", private))
        if self._terms is None:
            terms = self.client.terms_of_payment()
            if not terms:
                raise RemoteError(f"{self.name}: no terms of payment to create a customer with", status=422)
            self._terms = terms[0].key
        payload = {"IsPrivatePerson": private, "IsActive": True, "TermsOfPaymentId": self._terms, **fields}
        return self.client.create_customer(payload), private

    def create(self, key: str, doc: dict[str, Any]) -> str:
        order = doc["order"]
        rows = []
        amount = Decimal(0)
        for n, row in enumerate(order["rows"]):
            article = self.client.find_article(row["sku"])
            if article is None:  # refused for now; tried again at the next run, when the product may exist
                raise RemoteError(
                    f"order {order['ordernumber']}: product {row['sku']} does not exist in {self.name}", status=422
                )
            mapped = apply_row(self.mapping, order, row)
            quantity = Decimal(str(mapped.get("Quantity", row["quantity"])))
            price = Decimal(str(mapped.get("UnitPrice", row["price_incl"]))).quantize(CENT, ROUND_HALF_UP)
            amount += (quantity * price).quantize(CENT, ROUND_HALF_UP)
            rows.append(
                {
                    "LineNumber": n,
                    "ArticleId": article["Id"],
                    "ArticleNumber": row["sku"],
                    "Text": str(mapped.get("Text", row["name"]))[:2000],
                    "Quantity": quantity,
                    "UnitPrice": price,
                    "IsTextRow": False,
                    "IsWorkCost": False,
                    "EligibleForReverseChargeOnVat": False,
                }
            )
        customer_id, private = self._customer(order)
        if self.settings.order_type == "invoice":
            return self._create_invoice(key, order, rows, customer_id)
        fields = apply(self.mapping, "order", order)
        billing = order["customer"]["billing_address"]
        payload = {
            **fields,
            "YourReference": self.reference(key),
            "OrderDate": str(order["created"])[:10],
            "CustomerId": customer_id,
            "CurrencyCode": "EUR",
            "Amount": amount,
            "VatAmount": Decimal("0.00"),
            "RoundingsAmount": Decimal("0.00"),
            "InvoiceCity": billing.get("city") or "",
            "InvoiceCountryCode": doc.get("country") or billing.get("country") or "",
            "InvoiceCustomerName": order["customer"].get("company") or order["customer"]["name"],
            "InvoicePostalCode": billing.get("zipcode") or "",
            "EuThirdParty": False,
            "CustomerIsPrivatePerson": private,
            "Status": 1,
            "RotReducedInvoicingType": 0,
            "ReverseChargeOnConstructionServices": False,
            "Rows": rows,
        }
        return self.client.create_order(payload)

    def _create_invoice(self, key: str, order: dict, rows: list[dict], customer_id: str) -> str:
        """The order as a booked customer invoice. Invoice rows carry prices excl. VAT (eAccounting adds the VAT
        of the article's account coding): the POS price incl. VAT is divided by 1 + the row's VAT rate and rounded
        to the cent, so an invoice total may differ from the POS total by rounding (reconciliation shows it)."""
        by_line = {n: row for n, row in enumerate(order["rows"])}
        out = []
        for row in rows:
            source = by_line[row["LineNumber"]]
            rate = Decimal(str(source.get("vat_rate") or 0)) / 100
            net = (row["UnitPrice"] / (1 + rate)).quantize(CENT, ROUND_HALF_UP)
            out.append(
                {"ArticleId": row["ArticleId"], "Text": row["Text"], "Quantity": row["Quantity"], "UnitPrice": net}
            )
        payload = {
            "YourReference": self.reference(key),
            "InvoiceDate": str(order["created"])[:10],
            "CustomerId": customer_id,
            "EuThirdParty": False,
            "RotReducedInvoicingType": 0,
            "Rows": out,
        }
        return self.client.create_invoice(payload)
