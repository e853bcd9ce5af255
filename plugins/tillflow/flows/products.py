"""Products: articles of the accounting tool created or updated by SKU in the POS (eAccounting → CCV).

A snapshot of every article; each becomes a document keyed by its SKU (``tillflow.documents``); only
articles that changed since they were last delivered are sent. At the target a product is looked up by
SKU: absent → created; present → updated (PATCH) when ``update`` is on, otherwise left as it is, so data
enriched in CCV is not overwritten. Single products only (no variants); the price goes incl. or excl. VAT
as set; a category (``category``) may be given to new products.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, EmailStr

from tillflow.errors import DeliveryRefused, RemoteError
from tillflow.flows.base import FlowKind
from tillflow.records import ArticleRecord

FLOW_OBJECTS = "products"


class ProductsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: update products that exist in CCV (off: only create; what was enriched in CCV stays)
    update: bool = True
    #: which eAccounting price goes to CCV's price
    price: Literal["incl", "excl"] = "incl"
    #: CCV tax tariff of new products
    taxtariff: Literal["normal", "low a", "low b", "extra low", "zero"] = "normal"
    notify_email: EmailStr | None = None
    enabled: bool = True


def _hash(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


class Products(FlowKind):
    name: ClassVar[str] = "products"
    record = ArticleRecord  # parsed into this model, carried as its JSON dict
    table: ClassVar[str] = "documents"
    key: ClassVar[tuple[str, ...]] = ("flow", "doc_key")
    windows = ("snapshot",)
    gate = "with_data"
    delivery = "create_if_absent"
    settings_model = ProductsSettings

    def mapping_kinds(self, source_cls: Any) -> tuple[str, ...]:
        return ("article",)

    def parse(self, source_cls: Any, page: Any):
        return source_cls.parse_page(page)

    def record_key(self, record: Any) -> tuple:
        return ("sku", record["sku"])

    def record_day(self, record: Any, settings: Any = None) -> Any:
        return None  # a snapshot: every article, whatever the window says

    def map(self, records, rules, *, account, flow_settings, mapping_kind: str = ""):
        settings = flow_settings or ProductsSettings()
        rows = []
        for a in records:
            price = Decimal(a["price_incl"] if settings.price == "incl" else a["price_excl"]).quantize(Decimal("0.01"))
            rows.append(
                (
                    f"sku:{a['sku']}",
                    {"productnumber": a["sku"], "name": a["name"][:255], "price": str(price), "active": a["active"]},
                )
            )
        return rows, 0, []

    def upsert(self, store, account_id, rows, *, mode, run_id) -> dict[str, int]:
        upserted = unchanged = 0
        with store.conn.transaction():
            for key, doc in rows:
                cur = store.conn.execute(
                    """
                    INSERT INTO tillflow.documents (account_id, flow, doc_key, payload, payload_hash, run_id)
                    VALUES (%s, 'products', %s, %s::jsonb, %s, %s)
                    ON CONFLICT (account_id, flow, doc_key) DO UPDATE
                       SET payload = EXCLUDED.payload, payload_hash = EXCLUDED.payload_hash, run_id = EXCLUDED.run_id,
                           updated_at = now()
                     WHERE tillflow.documents.payload_hash <> EXCLUDED.payload_hash
                    """,
                    (account_id, key, json.dumps(doc), _hash(doc), run_id),
                )
                upserted += cur.rowcount
                unchanged += 1 - cur.rowcount
        return {"upserted": upserted, "unchanged": unchanged}

    def deliver(self, store, item, client, *, run_id, log=None) -> dict[str, int]:
        """Create or update (with ``update`` on) each product that changed since it was last delivered."""
        settings = ProductsSettings.model_validate(
            store.account_by_id(item.account_id).settings.flows.get(item.flow) or {}
        )
        pending = store.conn.execute(
            """
            SELECT d.doc_key, d.payload, d.payload_hash, o.target_id FROM tillflow.documents d
              LEFT JOIN tillflow.object_delivery o
                ON o.account_id = d.account_id AND o.flow = 'products' AND o.object_key = d.doc_key
             WHERE d.account_id = %s AND d.flow = 'products'
               AND (o.object_key IS NULL OR o.payload_hash <> d.payload_hash OR o.status = 'failed')
             ORDER BY d.doc_key
            """,
            (item.account_id,),
        ).fetchall()
        store.conn.commit()
        created = updated = kept = 0
        refused: list[str] = []
        for doc in pending:
            payload = {**doc["payload"], "price": Decimal(doc["payload"]["price"])}  # a JSON number at CCV
            try:
                found = client.find(payload["productnumber"])
                if found is None:
                    target_id = client.create({**payload, "taxtariff": settings.taxtariff})
                    status, created = "created", created + 1
                elif settings.update:
                    target_id = str(found["id"])
                    client.update(target_id, payload)
                    status, updated = "updated", updated + 1
                else:
                    target_id, status, kept = str(found["id"]), "exists", kept + 1  # enriched in CCV: kept
            except RemoteError as exc:
                _record(store, item.account_id, doc, None, "failed", str(exc), run_id)
                if not exc.permanent:
                    raise
                refused.append(f"{payload['productnumber']}: {exc}")
                continue
            _record(store, item.account_id, doc, target_id, status, "", run_id)
        store.activity_update(
            run_id, item.account_id, item.flow, delivered=created + updated, skipped=kept, failed=len(refused)
        )
        if refused:
            raise DeliveryRefused(
                f"{client.name} refused {len(refused)} product(s); first: {refused[0]}", refused=refused
            )
        return {"delivered": created + updated, "created": created, "updated": updated, "skipped": kept}


def _record(store, account_id, doc, target_id, status, detail, run_id) -> None:
    with store.conn.transaction():
        store.conn.execute(
            """
            INSERT INTO tillflow.object_delivery (account_id, flow, object_key, payload_hash, target_id, status,
                                                  detail, run_id)
            VALUES (%s, 'products', %s, %s, %s, %s, %s, %s)
            ON CONFLICT (account_id, flow, object_key) DO UPDATE
               SET payload_hash = EXCLUDED.payload_hash,
                   target_id = coalesce(EXCLUDED.target_id, tillflow.object_delivery.target_id),
                   status = EXCLUDED.status, detail = EXCLUDED.detail, run_id = EXCLUDED.run_id,
                   attempts = tillflow.object_delivery.attempts + 1, updated_at = now()
            """,
            (
                account_id,
                doc["doc_key"],
                doc["payload_hash"] if status != "failed" else "",
                target_id,
                status,
                detail[:500],
                run_id,
            ),
        )
