"""CCV SalesPOS as a *target*: products created or updated by SKU (the products flow from eAccounting).

The client is :class:`tillflow.sources.ccv.CcvClient` (HMAC-signed REST); this adapter gives it the
target interface the products kind uses: ``find(sku)``, ``create(payload)``, ``update(id, payload)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tillflow.records import RefItem
from tillflow.sources.base import ConnectionInfo
from tillflow.targets.base import TargetClient


class CcvProducts(TargetClient):
    name: ClassVar[str] = "ccv_salespos"
    mapping_kind: ClassVar[str] = "product"
    flows: ClassVar[tuple[str, ...]] = ("products", "stock")

    def __init__(self, client: Any):
        self.client = client
        self.http = client.http

    @classmethod
    def from_connection(cls, conn: ConnectionInfo, **kwargs: Any) -> CcvProducts:
        from tillflow.sources.ccv import CcvClient

        return cls(CcvClient.from_connection(conn, **kwargs))

    def test_connection(self) -> list[RefItem]:
        return self.client.test_connection()

    def reference_data(self) -> dict[str, list[RefItem]]:
        return self.client.reference_data()

    def find(self, sku: str) -> dict | None:
        return self.client.product_by_sku(sku)

    def create(self, payload: dict) -> str:
        return self.client.create_product(payload)

    def update(self, product_id: str, payload: dict) -> None:
        self.client.update_product(product_id, payload)

    def stock_levels(self, window: Any) -> list[dict]:
        """Per CCV product: sku, product_id, manage_stock, stock and the sales reservations (reserved orders)."""
        records: list[dict] = []
        for page in self.client.fetch("stock", window):
            found, _rejects = self.client.parse(page)
            records += found
        return records

    def set_stock(self, product_id: str, quantity: Any) -> None:
        self.client.set_stock(product_id, quantity)

    def existing(self, flow, target_keys, window):
        raise NotImplementedError("products go create-or-update by SKU (tillflow.flows.products)")

    def deliver(self, flow, row):
        raise NotImplementedError("products go create-or-update by SKU (tillflow.flows.products)")
