"""Stock: the accounting tool's available stock pushed to the POS (eAccounting → CCV), a snapshot per tick.

Per SKU the stock CCV gets is, by default, eAccounting's available stock minus CCV's sales reservations
(orders in CCV's "reserved" status), never below zero (``mode: available_minus_reserved``; ``available``:
without the reservations). Only values that differ from what CCV shows are sent. Whether CCV manages the
stock is a setting (``ccv_manages_stock``): off, nothing is sent; a CCV product whose own stock keeping is
off (``stockenabled``) is skipped and said so. A SKU CCV does not know is refused naming it (the products
flow creates it first).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, EmailStr

from tillflow.errors import DeliveryRefused
from tillflow.flows.base import FlowKind
from tillflow.records import ArticleRecord


class StockSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["available_minus_reserved", "available"] = "available_minus_reserved"
    ccv_manages_stock: bool = True
    notify_email: EmailStr | None = None
    enabled: bool = True


def target_stock(available: Decimal, reserved: Decimal, mode: str) -> Decimal:
    """What CCV should show: available, less the sales reservations by default; never below zero."""
    value = available - reserved if mode == "available_minus_reserved" else available
    return max(value, Decimal(0))


class Stock(FlowKind):
    name: ClassVar[str] = "stock"
    record = ArticleRecord  # parsed into this model, carried as its JSON dict
    table: ClassVar[str] = "documents"
    key: ClassVar[tuple[str, ...]] = ("flow", "doc_key")
    windows = ("snapshot",)
    gate = "with_data"
    delivery = "keyed_upsert"
    settings_model = StockSettings

    def mapping_kinds(self, source_cls: Any) -> tuple[str, ...]:
        return ("article",)

    def parse(self, source_cls: Any, page: Any):
        return source_cls.parse_page(page)

    def record_key(self, record: Any) -> tuple:
        return ("sku", record["sku"])

    def record_day(self, record: Any, settings: Any = None) -> Any:
        return None

    def map(self, records, rules, *, account, flow_settings, mapping_kind: str = ""):
        rows = [(f"sku:{a['sku']}", {"sku": a["sku"], "available": str(a["stock_available"])}) for a in records]
        return rows, 0, []

    def upsert(self, store, account_id, rows, *, mode, run_id) -> dict[str, int]:
        with store.conn.transaction():
            for key, doc in rows:
                store.conn.execute(
                    """
                    INSERT INTO tillflow.documents (account_id, flow, doc_key, payload, payload_hash, run_id)
                    VALUES (%s, 'stock', %s, %s::jsonb, %s, %s)
                    ON CONFLICT (account_id, flow, doc_key) DO UPDATE
                       SET payload = EXCLUDED.payload, payload_hash = EXCLUDED.payload_hash, run_id = EXCLUDED.run_id,
                           updated_at = now()
                    """,
                    (account_id, key, json.dumps(doc), doc["available"], run_id),
                )
        return {"upserted": len(rows)}

    def deliver(self, store, item, client, *, run_id, log=None) -> dict[str, int]:
        settings = StockSettings.model_validate(
            store.account_by_id(item.account_id).settings.flows.get(item.flow) or {}
        )
        docs = store.conn.execute(
            "SELECT payload FROM tillflow.documents WHERE account_id = %s AND flow = 'stock' ORDER BY doc_key",
            (item.account_id,),
        ).fetchall()
        store.conn.commit()
        if not settings.ccv_manages_stock:
            store.activity_update(
                run_id,
                item.account_id,
                item.flow,
                skipped=len(docs),
                detail="CCV does not manage stock for this account: nothing sent",
            )
            return {"delivered": 0, "skipped": len(docs)}
        current = {r["sku"]: r for r in client.stock_levels(item.window)}
        sent = skipped = 0
        refused: list[str] = []
        for doc in docs:
            sku = doc["payload"]["sku"]
            ccv = current.get(sku)
            if ccv is None:
                refused.append(f"SKU {sku} is unknown in CCV (the products flow creates it)")
                continue
            if not ccv["manage_stock"]:
                skipped += 1
                continue
            want = target_stock(Decimal(doc["payload"]["available"]), Decimal(str(ccv["reserved"])), settings.mode)
            if Decimal(str(ccv["stock"])) == want:
                continue
            client.set_stock(ccv["product_id"], want)
            sent += 1
        store.activity_update(run_id, item.account_id, item.flow, delivered=sent, skipped=skipped, failed=len(refused))
        if refused:
            raise DeliveryRefused(f"{len(refused)} stock value(s) not sent; first: {refused[0]}", refused=refused)
        return {"delivered": sent, "skipped": skipped}
