"""Visma eAccounting as a *source*: its articles, for the products (and stock) flows towards CCV.

One landed page per fetch: every article (``GET /v2/articles``, all OData pages) as JSON, so a replay parses
the same. The client is :class:`tillflow.targets.eaccounting.EaccountingClient` (OAuth with rotating refresh
tokens kept in :mod:`tillflow.tokens`); this adapter only gives it the source interface.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import ValidationError

from tillflow.records import ArticleRecord, RawPage, RefItem, Reject
from tillflow.sources.base import ConnectionInfo, SourceClient, Window


class EaccountingArticles(SourceClient):
    name: ClassVar[str] = "eaccounting"
    mapping_kind: ClassVar[str] = "article"
    flows: ClassVar[tuple[str, ...]] = ("products", "stock")

    def __init__(self, client: Any):
        self.client = client
        self.http = client.http

    @classmethod
    def from_connection(cls, conn: ConnectionInfo, **kwargs: Any) -> EaccountingArticles:
        from tillflow.targets.eaccounting import EaccountingClient

        return cls(EaccountingClient.from_connection(conn, **kwargs))

    def test_connection(self) -> list[RefItem]:
        return self.client.test_connection()

    def reference_data(self) -> dict[str, list[RefItem]]:
        return self.client.reference_data()

    def fetch(self, flow: str, window: Window) -> list[RawPage]:
        if flow not in self.flows:
            raise ValueError(f"{self.name} has no flow {flow!r}; known: {', '.join(self.flows)}")
        articles = self.client.articles()
        body = json.dumps({"articles": articles}, default=str).encode()
        return [RawPage(flow=flow, request={"method": "GET", "path": "/v2/articles", "pages": "all"}, body=body)]

    def parse(self, page: RawPage) -> tuple[list[dict], list[Reject]]:
        try:
            articles = json.loads(page.body, parse_float=Decimal)["articles"]
        except (ValueError, KeyError, TypeError):
            return [], [
                Reject(reason="body is not an articles list", payload={"request": page.request}, ref="articles")
            ]
        records, rejects = [], []
        for a in articles:
            number = a.get("Number") if isinstance(a, dict) else None
            if not number or not a.get("Name"):
                rejects.append(
                    Reject(
                        reason="article without Number or Name",
                        payload={"article": str(a)[:500]},
                        ref=f"article {number}",
                    )
                )
                continue
            try:
                record = ArticleRecord(
                    sku=str(number),
                    name=str(a["Name"]),
                    price_excl=a.get("NetPrice") or "0",
                    price_incl=a.get("GrossPrice") or a.get("NetPrice") or "0",
                    active=bool(a.get("IsActive", True)),
                    stock_available=a.get("StockBalanceAvailable") or a.get("StockBalance") or "0",
                )
            except ValidationError as exc:
                err = exc.errors()[0]
                fields = {"price_excl": "NetPrice", "price_incl": "GrossPrice"}
                field = fields.get(err["loc"][0], "StockBalanceAvailable")
                reason = f"article {number}: {field}: {err['msg'].removeprefix('Value error, ')}"
                rejects.append(Reject(reason=reason, payload={"article": str(a)[:500]}, ref=f"article {number}"))
                continue
            records.append(record.model_dump(mode="json"))
        return records, rejects
