"""CCV Shop / CCV SalesPOS: orders (with their rows), products and stock over CCV's REST API.

The contract (sources: CCV's official PHP SDK github.com/ccvshop/ccvshop-api — ``BaseEndpoint.php``,
``Factory/ExceptionFactory.php``, ``Resources/Order.php``/``OrderRow.php``/``Product.php`` — and CCV's status
list; ``include/sandbox/ccv.py`` is the stand-in and its docstring lists every assumption):

* ``https://{shop}/api/rest/v1/{resource}``; every call is signed: ``x-public`` (public key), ``x-date``
  (ISO-8601 UTC, ``2026-03-02T10:15:00+00:00``) and ``x-hash`` = :func:`sign` — hex HMAC-SHA512 with the secret
  over ``"{public}|{METHOD}|{uri}|{body}|{x-date}"`` (uri = path and query as sent, body the raw JSON or "").
  A wrong hash or an ``x-date`` more than 5 minutes off is a 401 → :class:`~tillflow.errors.AuthError`.
  Signing happens per attempt (a :class:`requests.auth.AuthBase`), so a retry carries a fresh ``x-date``.
  Responses carry their own ``x-date``/``x-hash``; a 2xx answer whose hash does not match is refused
  (:class:`~tillflow.errors.RemoteError`), as the SDK's ``validateResponse`` does.
* Lists page with ``start``/``size`` (``size`` at most 100, assumed) and answer ``{"href", "items", "next",
  "previous"}``; the client follows ``next`` (its path and query, on the connection's host).
* 429 ``429.10`` (per method and resource per minute) / ``429.11`` (total per minute): waited out as the answer
  says (``Retry-After``, else ``X-RateLimit-Reset``) and retried, by :class:`tillflow.http.HttpClient`.
* Orders: ``status`` is CCV's integer (:data:`STATUSES`, 1 New … 8 Cancelled … 14 Reserved); payment is the
  separate ``paid`` flag. Filters (assumed names): ``status``, ``min_create_date``/``max_create_date``.
* Products: PATCH ``products/{id}`` updates; stock is set the documented way, ``PATCH {"stock": n}``, which CCV
  only accepts when the product's ``stockenabled`` is on (CCV manages that product's stock). ``product_by_sku``
  filters on ``productnumber``; CCV does not promise unique product numbers, so two matches are an error.
* "Reserved" stock: CCV has no reservation field on a product; a reservation is an order in status 14
  (Reserved). The ``stock`` flow lands the products and the status-14 orders with their rows, and parses
  ``reserved`` per SKU from them.

``fetch(flow, window)``: ``orders`` — one :class:`RawPage` per API page of orders created in the window
(``min_create_date``/``max_create_date``: the instants the window's business days span in the account's
timezone and cutoff — an order placed at 01:00 belongs to the business day before — or whole UTC days for a
window without them), each with the rows of its orders
(``{"orders": <page>, "orderrows": {order id: [rows]}}``); ``products`` — one page per API page (window
ignored); ``stock`` — one page ``{"products": [...], "reserved_orders": [{"order", "rows"}]}``. ``parse`` needs
no network: it yields plain dicts (:class:`CcvOrder`, :class:`CcvProduct`, :class:`CcvStock` dumped as JSON
values) and a :class:`Reject` per malformed order, its reason naming the field.

Connection: ``host`` = the shop's base URL (``https://{shop}``), ``login`` = public key, ``password`` = secret;
optional ``extra`` keys of :meth:`tillflow.http.HttpPolicy.from_extra`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tillflow.errors import ConfigError, RemoteError
from tillflow.http import HttpClient, HttpPolicy, url_from_host
from tillflow.records import RawPage, RefItem, Reject
from tillflow.records import jsonable as _jsonable
from tillflow.sources.base import ConnectionInfo, SourceClient, Window

API_PREFIX = "/api/rest/v1"
ACCEPT = "application/vnd.verto.salespos+json"
PAGE_SIZE = 100
CENT = Decimal("0.01")
RESERVED_STATUS = 14
STATUSES: dict[int, str] = {
    1: "New",
    2: "In process",
    3: "Wait for manufacturer",
    4: "Wait for payment",
    5: "Sent",
    6: "Delivered",
    7: "Completed",
    8: "Cancelled",
    9: "Wait for supplier",
    10: "Is being packaged",
    11: "Ready to be collected",
    12: "Is being assembled",
    13: "Backorder",
    14: "Reserved",
}


def sign(public: str, secret: str, method: str, uri: str, body: str, date: str) -> str:
    """CCV's ``x-hash``: lowercase hex HMAC-SHA512 (key ``secret``) of ``public|METHOD|uri|body|date``."""
    message = f"{public}|{method.upper()}|{uri}|{body}|{date}"
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha512).hexdigest()


def x_date(now: datetime) -> str:
    """``now`` as CCV's ``x-date``: ISO-8601 in UTC with seconds and ``+00:00`` (Carbon's ``format('c')``)."""
    if now.tzinfo is None:
        raise ValueError("the clock must give timezone-aware datetimes")
    return now.astimezone(UTC).replace(microsecond=0).isoformat()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CcvAuth(requests.auth.AuthBase):
    """Signs each prepared request (each attempt) with a fresh ``x-date``. ``repr`` never shows the secret."""

    def __init__(self, public: str, secret: str, clock: Callable[[], datetime] = _utc_now):
        self.public = public
        self._secret = secret
        self.clock = clock

    def __repr__(self) -> str:
        return f"CcvAuth(public={self.public!r})"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
        stamp = x_date(self.clock())
        r.headers["x-public"] = self.public
        r.headers["x-date"] = stamp
        r.headers["x-hash"] = sign(self.public, self._secret, str(r.method), r.path_url, text, stamp)
        return r


# ------------------------------------------------------------------------------------------- records


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CcvAddress(_Record):
    name: str
    company: str | None = None
    street: str | None = None
    housenumber: str | None = None
    zipcode: str | None = None
    city: str | None = None
    country: str | None = None


class CcvCustomer(_Record):
    email: str | None = None  # an order without one goes to the account's default customer, or to rejects
    name: str = Field(min_length=1)
    company: str | None = None
    billing_address: CcvAddress
    shipping_address: CcvAddress | None = None


class CcvOrderRow(_Record):
    sku: str = Field(min_length=1)
    name: str
    quantity: Decimal
    price_incl: Decimal
    vat_rate: Decimal


class CcvOrder(_Record):
    order_id: str
    ordernumber: str
    status: int
    status_name: str
    paid: bool
    created: datetime
    customer: CcvCustomer
    rows: list[CcvOrderRow]
    total_incl: Decimal
    country: str | None = None


class CcvProduct(_Record):
    product_id: str
    sku: str
    name: str
    price_incl: Decimal
    taxtariff: str
    category: str | None = None
    active: bool = True
    manage_stock: bool
    stock: Decimal


class CcvStock(_Record):
    product_id: str
    sku: str
    manage_stock: bool
    stock: Decimal
    reserved: Decimal
    available: Decimal


class _Bad(ValueError):
    """A field problem; the message names the field."""


# ------------------------------------------------------------------------------------------- client


class CcvClient(SourceClient):
    """CCV Shop / SalesPOS. Connection: host = shop base URL, login = public key, password = secret."""

    name: ClassVar[str] = "ccv_salespos"
    mapping_kind: ClassVar[str] = "order_status"
    conn_type: ClassVar[str] = "ccv_salespos"
    hook_name: ClassVar[str] = "CCV Shop / SalesPOS"
    flows: ClassVar[tuple[str, ...]] = ("orders", "products", "stock")
    max_days_per_request: ClassVar[int] = 31

    def __init__(
        self,
        *,
        base_url: str,
        public: str,
        secret: str,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        page_size: int = PAGE_SIZE,
    ):
        if not 1 <= page_size <= PAGE_SIZE:
            raise ConfigError(f"page_size must be between 1 and {PAGE_SIZE}, got {page_size!r}")
        self.public = public
        self._secret = secret
        self.page_size = page_size
        session = requests.Session()
        session.headers.update({"Accept": ACCEPT})
        session.auth = CcvAuth(public, secret, clock)
        self.http = HttpClient(
            base_url,
            policy=policy,
            secrets=(secret,),
            name=self.name,
            rate_key=f"ccv:{public}",
            session=session,
            sleep=sleep,
        )

    @classmethod
    def from_connection(
        cls,
        conn: ConnectionInfo,
        *,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> CcvClient:
        """:raises ConfigError: naming the missing field (``host``, ``login``, ``password``)."""
        for attr, label in (("host", "shop URL"), ("login", "API public key"), ("password", "API secret")):
            if not getattr(conn, attr):
                raise ConfigError(f"connection {conn.conn_id}: {attr} (CCV {label}) is required")
        return cls(
            base_url=url_from_host(conn.host, conn.port),
            public=conn.login,
            secret=conn.password,
            policy=policy or HttpPolicy.from_extra(conn.extra),
            sleep=sleep,
            clock=clock,
        )

    # -- transport

    def _call(self, method: str, path: str, *, params: dict | None = None, payload: Any = None, **kw: Any):
        """One signed call; the response's own signature is checked on success."""
        data = None
        headers = None
        if payload is not None:
            data = _dumps(payload).encode("utf-8")
            headers = {"Content-Type": "application/json"}
        response = self.http.request(method, path, params=params, data=data, headers=headers, **kw)
        self._verify(response)
        return response

    def _verify(self, response: requests.Response) -> None:
        given, stamp = response.headers.get("x-hash"), response.headers.get("x-date")
        if not given or not stamp:
            return  # CCV signs its answers; an unsigned one (e.g. 204 through a proxy) is not refused
        request = response.request
        expected = sign(
            self.public,
            self._secret,
            str(request.method),
            request.path_url,
            response.content.decode("utf-8", "replace"),
            stamp,
        )
        if not hmac.compare_digest(expected, given):
            raise RemoteError(
                f"{self.name}: {request.method} {self.http.mask(request.path_url)} answered with a response "
                "hash (x-hash) that does not match its body",
                status=response.status_code,
            )

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self._call(method, path, parse_json=True, **kw)
        return json.loads(response.content, parse_float=Decimal) if response.content.strip() else None

    def _pages(self, resource: str, params: dict | None = None) -> Iterator[tuple[dict, bytes]]:
        """Each page of a collection as (parsed, raw bytes), following ``next``."""
        path: str | None = f"{API_PREFIX}/{resource}"
        query: dict | None = {**(params or {}), "start": 0, "size": self.page_size}
        seen = 0
        while path is not None:
            response = self._call("GET", path, params=query, parse_json=True)
            body = json.loads(response.content, parse_float=Decimal)
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise RemoteError(f"{self.name}: GET {path} answered without an 'items' list")
            yield body, response.content
            seen += 1
            nxt = body.get("next")
            if not nxt:
                break
            if seen > 10_000:
                raise RemoteError(f"{self.name}: GET {resource} paged more than 10000 times; giving up")
            parts = urlsplit(str(nxt))
            path, query = (f"{parts.path}?{parts.query}" if parts.query else parts.path), None

    def _items(self, resource: str, params: dict | None = None) -> list[dict]:
        return [item for page, _raw in self._pages(resource, params) for item in page["items"]]

    # -- reference data

    def test_connection(self) -> list[RefItem]:
        """One signed call (a page of one product) to check the keys; then the order statuses to map."""
        self._json("GET", f"{API_PREFIX}/products", params={"start": 0, "size": 1})
        return self.reference_data()[self.mapping_kind]

    def reference_data(self) -> dict[str, list[RefItem]]:
        """CCV's fixed order statuses (what gets mapped) and the shop's categories."""
        categories = self._items("categories")
        return {
            "order_status": [RefItem(key=str(k), name=v) for k, v in STATUSES.items()],
            "category": [RefItem(key=str(c.get("id")), name=str(c.get("name") or c.get("id"))) for c in categories],
        }

    # -- resources

    def orders(self, statuses: Iterable[int] | None = None, since: date | None = None) -> list[dict]:
        """Orders (raw API objects) with one of ``statuses`` (all when empty) created on or after ``since``."""
        base: dict[str, Any] = {}
        if since is not None:
            base["min_create_date"] = since.isoformat()
        chosen = sorted(set(statuses or ()))
        for status in chosen:
            if status not in STATUSES:
                raise ValueError(f"unknown CCV order status {status!r}; known: {sorted(STATUSES)}")
        if not chosen:
            return self._items("orders", base)
        found = [o for s in chosen for o in self._items("orders", {**base, "status": s})]
        return sorted(found, key=lambda o: int(o.get("id") or 0))

    def order_rows(self, order_id: int | str) -> list[dict]:
        return self._items(f"orders/{_id(order_id)}/orderrows")

    def products(self) -> list[dict]:
        return self._items("products")

    def product_by_sku(self, sku: str) -> dict | None:
        """The product whose ``productnumber`` is ``sku``, or None. :raises RemoteError: when two have it."""
        found = [p for p in self._items("products", {"productnumber": sku}) if p.get("productnumber") == sku]
        if len(found) > 1:
            ids = ", ".join(str(p.get("id")) for p in found)
            raise RemoteError(f"{self.name}: {len(found)} products have productnumber {sku!r} (ids {ids})")
        return found[0] if found else None

    def create_product(self, payload: dict) -> str:
        """POST a product; returns its id. Not retried once sent (a POST's outcome would be unknown)."""
        body = self._json("POST", f"{API_PREFIX}/products", payload=payload, expect=(200, 201))
        if not isinstance(body, dict) or body.get("id") in (None, ""):
            raise RemoteError(f"{self.name}: POST products answered without an id")
        return str(body["id"])

    def update_product(self, product_id: int | str, payload: dict) -> None:
        """PATCH the given fields of a product (repeating it is harmless: retried like a PUT)."""
        self._call("PATCH", f"{API_PREFIX}/products/{_id(product_id)}", payload=payload, idempotent=True)

    def set_stock(self, product_id: int | str, quantity: int | Decimal) -> None:
        """Set a product's stock: ``PATCH products/{id} {"stock": n}`` (needs ``stockenabled`` on the product)."""
        if isinstance(quantity, bool) or not isinstance(quantity, int | Decimal):
            raise ValueError(f"quantity must be an int or Decimal, got {type(quantity).__name__}")
        self.update_product(product_id, {"stock": quantity})

    # -- flows

    def fetch(self, flow: str, window: Window) -> list[RawPage]:
        if flow not in self.flows:
            raise ValueError(f"{self.name} has no flow {flow!r}; known: {', '.join(self.flows)}")
        if flow == "products":
            return [
                RawPage(flow=flow, request={"method": "GET", "path": f"{API_PREFIX}/products", "page": i}, body=raw)
                for i, (_page, raw) in enumerate(self._pages("products"))
            ]
        if flow == "stock":
            body = {
                "products": self.products(),
                "reserved_orders": [
                    {"order": o, "rows": self.order_rows(o["id"])}
                    for o in self._items("orders", {"status": RESERVED_STATUS})
                ],
            }
            request = {"method": "GET", "path": f"{API_PREFIX}/products", "reserved_status": RESERVED_STATUS}
            return [RawPage(flow=flow, request=request, body=_dumps(body).encode("utf-8"))]
        pages = []
        for chunk in self.chunks(window):
            params = _created_between(chunk)
            for i, (page, _raw) in enumerate(self._pages("orders", params)):
                rows = {str(o["id"]): self.order_rows(o["id"]) for o in page["items"] if isinstance(o, dict)}
                request = {"method": "GET", "path": f"{API_PREFIX}/orders", "window": str(chunk), "page": i}
                body = _dumps({"orders": page, "orderrows": rows}).encode("utf-8")
                pages.append(RawPage(flow=flow, request=request, body=body))
        return pages

    def parse(self, page: RawPage) -> tuple[list[dict], list[Reject]]:  # type: ignore[override]
        """Plain dict records and rejects of one landed page; a bad order is a Reject, the rest still parse."""
        ref = f"{page.flow} {page.request.get('window') or ''} page {page.request.get('page', 0)}".strip()
        try:
            body = json.loads(page.body, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            payload = {"request": page.request, "body_start": page.body[:2000].decode("utf-8", "replace")}
            return [], [Reject(reason="body is not valid JSON", payload=payload, ref=ref)]
        if page.flow == "orders":
            return self._parse_orders(body, ref)
        if page.flow == "products":
            return self._parse_products(body.get("items") if isinstance(body, dict) else None, ref)
        if page.flow == "stock":
            return self._parse_stock(body, ref)
        return [], [Reject(reason=f"unknown flow {page.flow!r}", payload={"request": page.request}, ref=ref)]

    @staticmethod
    def _parse_orders(body: Any, ref: str) -> tuple[list[dict], list[Reject]]:
        if not isinstance(body, dict) or not isinstance(body.get("orders"), dict):
            return [], [Reject(reason="body has no 'orders' page object", payload={}, ref=ref)]
        items = body["orders"].get("items")
        all_rows = body.get("orderrows") or {}
        if not isinstance(items, list):
            return [], [Reject(reason="field orders.items is not a list", payload={}, ref=ref)]
        records, rejects = [], []
        for raw in items:
            oref = f"order {raw.get('id')}" if isinstance(raw, dict) else "order ?"
            if not isinstance(raw, dict):
                rejects.append(Reject(reason=f"{oref}: not an object", payload={"row": _jsonable(raw)}, ref=oref))
                continue
            try:
                rec = _order(raw, all_rows.get(str(raw.get("id"))))
            except (_Bad, ValidationError) as exc:
                reason = str(exc) if isinstance(exc, _Bad) else _pydantic_reason(exc)
                rejects.append(Reject(reason=f"{oref}: {reason}", payload=_jsonable(raw), ref=oref))
                continue
            records.append(rec.model_dump(mode="json"))
        return records, rejects

    @staticmethod
    def _parse_products(items: Any, ref: str) -> tuple[list[dict], list[Reject]]:
        if not isinstance(items, list):
            return [], [Reject(reason="field items is not a list", payload={}, ref=ref)]
        records, rejects = [], []
        for raw in items:
            pref = f"product {raw.get('id')}" if isinstance(raw, dict) else "product ?"
            try:
                rec = _product(raw)
            except (_Bad, ValidationError) as exc:
                reason = str(exc) if isinstance(exc, _Bad) else _pydantic_reason(exc)
                rejects.append(Reject(reason=f"{pref}: {reason}", payload=_jsonable(raw), ref=pref))
                continue
            records.append(rec.model_dump(mode="json"))
        return records, rejects

    @staticmethod
    def _parse_stock(body: Any, ref: str) -> tuple[list[dict], list[Reject]]:
        if not isinstance(body, dict):
            return [], [Reject(reason="body is not an object", payload={}, ref=ref)]
        reserved: dict[str, Decimal] = {}
        rejects: list[Reject] = []
        for entry in body.get("reserved_orders") or []:
            order = entry.get("order") or {}
            for i, row in enumerate(entry.get("rows") or []):
                try:
                    sku = _text(row, "product_number", f"orderrows[{i}].")
                    reserved[sku] = reserved.get(sku, Decimal(0)) + _decimal(row.get("count"), f"orderrows[{i}].count")
                except _Bad as exc:
                    oref = f"order {order.get('id')}"
                    rejects.append(Reject(reason=f"{oref}: {exc}", payload=_jsonable(row), ref=oref))
        products, product_rejects = CcvClient._parse_products(body.get("products"), ref)
        records = []
        for p in products:
            stock = Decimal(p["stock"])
            res = reserved.get(p["sku"], Decimal(0))
            rec = CcvStock(
                product_id=p["product_id"],
                sku=p["sku"],
                manage_stock=p["manage_stock"],
                stock=stock,
                reserved=res,
                available=stock - res,
            )
            records.append(rec.model_dump(mode="json"))
        return records, rejects + product_rejects


# ------------------------------------------------------------------------------------------- parsing


def _order(raw: dict, rows: Any) -> CcvOrder:
    _require(raw, "id", "status", "create_date", "customer", "total_price")
    status = raw["status"]
    if isinstance(status, bool) or not isinstance(status, int) or status not in STATUSES:
        raise _Bad(f"field status {status!r} is not a CCV order status (1-14)")
    paid = raw.get("paid", False)
    if not isinstance(paid, bool):
        raise _Bad(f"field paid is not a boolean: {paid!r}")
    created = _instant(raw["create_date"], "create_date")
    customer = _customer(raw["customer"])
    if rows is None:
        raise _Bad("orderrows were not fetched with the order")
    if not isinstance(rows, list):
        raise _Bad("field orderrows is not a list")
    parsed = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _Bad(f"orderrows[{i}] is not an object")
        where = f"orderrows[{i}]."
        _require(row, "product_number", "count", "price", "tax", where=where)
        parsed.append(
            CcvOrderRow(
                sku=_text(row, "product_number", where),
                name=str(row.get("product_name") or ""),
                quantity=_decimal(row["count"], f"{where}count"),
                price_incl=_amount(row["price"], f"{where}price"),
                vat_rate=_rate(row["tax"], f"{where}tax"),
            )
        )
    if not parsed and status != 8:
        raise _Bad("orderrows is empty")
    if raw.get("total_orderrow_price") is not None:
        stated = _amount(raw["total_orderrow_price"], "total_orderrow_price")
        computed = sum(((r.quantity * r.price_incl).quantize(CENT, ROUND_HALF_UP) for r in parsed), Decimal("0.00"))
        if stated != computed:
            raise _Bad(f"orderrows add up to {computed}, field total_orderrow_price says {stated}")
    return CcvOrder(
        order_id=str(raw["id"]),
        ordernumber=str(raw.get("ordernumber_full") or raw.get("ordernumber") or raw["id"]),
        status=status,
        status_name=STATUSES[status],
        paid=paid,
        created=created,
        customer=customer,
        rows=parsed,
        total_incl=_amount(raw["total_price"], "total_price"),
        country=(customer.shipping_address or customer.billing_address).country,
    )


def _address(raw: Any, field: str) -> CcvAddress:
    if not isinstance(raw, dict):
        raise _Bad(f"field {field} is not an object")
    name = " ".join(str(raw.get(k) or "").strip() for k in ("first_name", "last_name")).strip()
    if not name:
        raise _Bad(f"missing field(s): {field}.first_name/{field}.last_name")
    country = raw.get("country_code")
    if country is not None and (not isinstance(country, str) or len(country) != 2):
        raise _Bad(f"field {field}.country_code is not a 2-letter code: {country!r}")
    return CcvAddress(
        name=name,
        company=_opt(raw.get("company")),
        street=_opt(raw.get("street")),
        housenumber=_opt(" ".join(str(raw.get(k) or "") for k in ("housenumber", "housenumber_suffix")).strip()),
        zipcode=_opt(raw.get("zipcode")),
        city=_opt(raw.get("city")),
        country=country.upper() if country else None,
    )


def _customer(raw: Any) -> CcvCustomer:
    if not isinstance(raw, dict):
        raise _Bad(f"field customer is not an object: {_jsonable(raw)!r}")
    billing = _address(raw.get("billingaddress"), "customer.billingaddress")
    shipping = _address(raw["deliveryaddress"], "customer.deliveryaddress") if raw.get("deliveryaddress") else None
    email = raw.get("email") or (raw.get("billingaddress") or {}).get("email")
    if email in (None, "") or (isinstance(email, str) and not email.strip()):
        email = None  # no e-mail: the orders flow uses the default customer, or rejects the order
    elif not isinstance(email, str) or "@" not in email:
        raise _Bad(f"field customer.email is not an e-mail address: {email!r}")
    return CcvCustomer(
        email=email.strip() if email else None,
        name=billing.name,
        company=billing.company,
        billing_address=billing,
        shipping_address=shipping,
    )


def _product(raw: Any) -> CcvProduct:
    if not isinstance(raw, dict):
        raise _Bad("not an object")
    _require(raw, "id", "productnumber", "name", "price")
    managed = raw.get("stockenabled", False)
    if not isinstance(managed, bool):
        raise _Bad(f"field stockenabled is not a boolean: {managed!r}")
    return CcvProduct(
        product_id=str(raw["id"]),
        sku=_text(raw, "productnumber"),
        name=str(raw["name"]),
        price_incl=_amount(raw["price"], "price"),
        taxtariff=str(raw.get("taxtariff") or "normal"),
        category=_opt(raw.get("maincategory")),
        active=bool(raw.get("is_active", True)),
        manage_stock=managed,
        stock=_decimal(raw.get("stock") or 0, "stock"),
    )


def _require(row: dict, *fields: str, where: str = "") -> None:
    missing = [f"{where}{f}" for f in fields if row.get(f) in (None, "")]
    if missing:
        raise _Bad(f"missing field(s): {', '.join(missing)}")


def _text(row: dict, field: str, where: str = "") -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"field {where}{field} is not a non-empty string: {_jsonable(value)!r}")
    return value.strip()


def _opt(value: Any) -> str | None:
    return str(value).strip() or None if value not in (None, "") else None


def _decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise _Bad(f"field {field} is not a number: {_jsonable(value)!r}")
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise _Bad(f"field {field} is not a number: {value!r}") from None
    if not d.is_finite():
        raise _Bad(f"field {field} is not a finite number: {value!r}")
    return d


def _amount(value: Any, field: str) -> Decimal:
    d = _decimal(value, field)
    if d != d.quantize(CENT, rounding=ROUND_HALF_UP):
        raise _Bad(f"field {field} has more than 2 decimals: {_jsonable(value)!r}")
    return d.quantize(CENT)


def _rate(value: Any, field: str) -> Decimal:
    d = _decimal(value, field)
    if d < 0 or d >= 100:
        raise _Bad(f"field {field} {d} is not a VAT percentage")
    text = format(d.normalize(), "f")
    return Decimal(text)


def _instant(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    raise _Bad(f"field {field} is not an ISO-8601 instant with offset: {_jsonable(value)!r}")


def _id(value: int | str) -> str:
    text = str(value)
    if isinstance(value, bool) or not text.isdigit():
        raise ValueError(f"a CCV id is a positive integer, got {value!r}")
    return text


def _dumps(obj: Any) -> str:
    """JSON with Decimals as exact numbers (never through float)."""
    marks: dict[str, str] = {}

    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            key = f"\x00num{len(marks)}\x00"
            marks[key] = format(o, "f")
            return key
        if isinstance(o, date | datetime):
            return o.isoformat()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    text = json.dumps(obj, default=default, ensure_ascii=False, separators=(",", ":"))
    for key, digits in marks.items():
        text = text.replace(json.dumps(key), digits)
    return text


def _pydantic_reason(exc: ValidationError) -> str:
    return "; ".join(f"field {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _created_between(window: Window) -> dict[str, str]:
    """The ``min_create_date``/``max_create_date`` filter of a window of business days (both inclusive)."""
    if window.tz is None:
        return {"min_create_date": window.start.isoformat(), "max_create_date": window.end.isoformat()}
    from tillflow.windows import business_day_bounds

    cutoff = window.cutoff or time(5, 0)
    start = business_day_bounds(window.start, window.tz, cutoff)[0]
    end = business_day_bounds(window.end, window.tz, cutoff)[1] - timedelta(seconds=1)  # CCV dates are to the second
    return {"min_create_date": start.isoformat(), "max_create_date": end.isoformat()}
