"""Stand-in for the CCV Shop / CCV SalesPOS REST API (orders, order rows, products, stock, categories).

Standard library only, nothing from ``tillflow``. Start it like the others::

    from sandbox.server import _Server
    from sandbox.ccv import CcvApp
    server = _Server(("127.0.0.1", 0), CcvApp())   # then serve_forever in a thread
    base_url = f"http://127.0.0.1:{server.server_address[1]}"   # the "shop URL"; the API is under /api/rest/v1

Sources of the contract: CCV's official PHP SDK (github.com/ccvshop/ccvshop-api, ``src/BaseEndpoint.php``,
``src/Factory/ExceptionFactory.php``, ``src/Resources/{Order,OrderRow,Product}.php``, ``src/Endpoints/*``), CCV's
API documentation as quoted there, and Reloadify's list of CCV Shop order statuses (help.reloadify.com, "Wat zijn
de verschillende verzend-statussen"). What they say, and what this stand-in does with it:

* **Base**: ``https://{shop}/api/rest/v1/{resource}`` (``BaseEndpoint::API_PREFIX``). Accept headers
  ``application/vnd.verto.webshop+json`` or ``application/vnd.verto.salespos+json`` (SalesPOS schemas).
* **Auth on every call** (``BaseEndpoint::getHash``): headers ``x-public``, ``x-date`` (Carbon ``format('c')``:
  ISO-8601 ``2026-03-02T10:15:00+00:00``) and ``x-hash`` = lowercase hex HMAC-SHA512 with the secret over
  ``"{public}|{METHOD}|{uri}|{body}|{x-date}"``; ``uri`` is path plus query as requested (``/api/rest/v1/orders?
  start=0&size=25``), ``body`` the raw JSON body ("" without one). A missing header, an unknown key, a wrong hash
  or an ``x-date`` more than 5 minutes from the server's clock is a ``401``. Responses are signed the same way
  (``BaseEndpoint::validateResponse``: the same message over the *response* body and its own ``x-date``).
* **Errors** (``ExceptionFactory``): a JSON body ``{"status", "code", "message", "developermessage",
  "moreinfo"}``; ``code`` is ``"<status>.<nn>"``. Documented codes used here: ``404.20`` invalid resource name,
  ``405.10`` method not allowed, ``429.10`` "Each method in each resource has a limit of requests that can be made
  per minute", ``429.11`` "The API has a total limit of requests that can be made per minute".
* **Collections** (``restGetAll``): ``start``/``size`` query parameters; the answer is ``{"href", "items",
  "next", "previous"}`` with ``next``/``previous`` absolute URLs or ``null``.
* **Orders** (``Resources/Order.php``): ``id``, ``ordernumber``, ``ordernumber_prefix``, ``ordernumber_full``,
  ``create_date``, ``status`` (integer), ``paid`` (boolean), ``is_completed``, ``taxes_included``,
  ``total_orderrow_price``, ``total_shipping``, ``total_discounts``, ``total_price``, ``total_tax``, ``currency``,
  ``customer`` (object), ``orderrows`` (a link object ``{"href"}``). Statuses (CCV Shop): 1 New, 2 In process,
  3 Wait for manufacturer, 4 Wait for payment, 5 Sent, 6 Delivered, 7 Completed, 8 Cancelled, 9 Wait for
  supplier, 10 Is being packaged, 11 Ready to be collected, 12 Is being assembled, 13 Backorder, 14 Reserved.
  Payment is the separate ``paid`` flag, not a status.
* **Order rows** (``GET orders/{id}/orderrows``, ``Resources/OrderRow.php``): ``id``, ``order_id``,
  ``product_id``, ``product_name``, ``product_number`` (the SKU), ``count``, ``price`` (unit), ``discount``,
  ``tax`` (percentage), ``total_price``, ``unit``.
* **Products** (``Resources/Product.php``): GET/POST/PATCH/DELETE on ``products``; ``productnumber`` (SKU),
  ``eannumber``, ``name``, ``price``, ``taxtariff`` (``normal``, ``low a``, ``low b``, ``extra low``, ``zero``),
  ``stockenabled`` (whether CCV manages this product's stock), ``stock``, ``stocktype``, ``ordering_without_stock``,
  ``maincategory``; GET answers ``is_active``, POST/PATCH take ``active``. Stock is set with ``PATCH
  products/{id}`` ``{"stock": n}`` (``stock`` is a writable field of ``getPatchData``). PATCH answers ``204``,
  POST ``201`` with the product.

Assumptions where the sources are silent (each chosen to be strict, so a client bug shows here first):

* The stand-in's shop is the public key: ``pk-<shop>`` with secret ``sk-<shop>``; each is one deterministic shop
  (:meth:`CcvApp.shop_for`). ``x-date`` must carry an offset (``Z`` or ``+hh:mm``); the uri is verified as
  path plus the query re-encoded the way ``http_build_query``/``urlencode`` do (``+`` or ``%20`` for spaces).
* ``401`` code ``401.10``; ``400`` code ``400.10`` (body/parameter validation, naming the field and what was
  sent); ``422`` code ``422.10`` (a valid request a rule refuses, e.g. stock on a product with
  ``stockenabled=false``); ``404`` code ``404.10`` for an unknown id; ``406`` for another Accept header.
* Paging: ``size`` default 25, maximum 100, ``start`` ≥ 0; anything else (or an undocumented parameter) is 400.
* Filters: ``orders`` takes ``status`` (one integer), ``paid`` (``true``/``false``), ``min_create_date`` /
  ``max_create_date`` (``YYYY-MM-DD``, inclusive, or an ISO-8601 instant); ``products`` takes ``productnumber``.
  Results are in ``id`` order. ``create_date`` is answered in UTC (``+00:00``).
* Prices are incl. VAT (the NL shop default "prices including VAT"); VAT by tariff: normal 21, low a 9, low b 6,
  extra low 0, zero 0. Money is answered as JSON numbers with 2 decimals.
* "Reserved" stock: the product resource has no reservation field; CCV models a reservation as an order in status
  14 (Reserved). ``stock`` is what the product answers; the control read-back adds ``reserved`` (rows of status-14
  orders) and ``available`` (stock − reserved). Orders never change ``stock`` here.
* POST ``products`` requires ``name``, ``productnumber``, ``price``; ``productnumber`` need not be unique (CCV does
  not document uniqueness), so a client finding by SKU must cope with two. Unknown fields and read-only fields
  (``id``, ``href``, ``createdate``, ``modifydate``, ``is_active``…) are 400. ``stock`` must be a number ≥ 0.
* Rate limits: per shop, requests per minute per method+resource (``GET orders``; ``orderrows`` is its own
  resource) default 120 → ``429.10``, and per shop in total default 600 → ``429.11``. A 429 answers
  ``Retry-After`` and ``X-RateLimit-Reset`` (seconds until a slot frees) and ``X-RateLimit-Limit``/
  ``X-RateLimit-Remaining``; a refused request does not count. Set by ``POST /_sandbox/limits``
  ``{"per_minute", "total_per_minute", "window_seconds"}``.

Control: ``GET /_sandbox/shops/{shop}`` (products with ``stock``, ``reserved``, ``manage_stock``; orders with
their rows), ``POST /_sandbox/shops/{shop}`` ``{"products": [...], "orders": [...], "stock": {sku: n}}``
(products upserted by ``productnumber``; orders with an existing ``id`` modified, others added; an order's
``raw`` object is merged into its API answer, to serve malformed orders), ``GET``/``POST /_sandbox/limits``, plus
the base class's ``state``/``reset``/``faults``/``requests``/``config``.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import quote, quote_plus, unquote, urlencode

from sandbox.server import (
    BadRequest,
    Number,
    Request,
    Response,
    VendorApp,
    json_numbers_response,
    json_response,
    json_type,
    shown,
)

API_PREFIX = "/api/rest/v1"
CLOCK_SKEW = 300  # seconds an x-date may differ from the server's clock
DEFAULT_SIZE = 25
MAX_SIZE = 100
DEFAULT_PER_MINUTE = 120
DEFAULT_TOTAL_PER_MINUTE = 600
DEFAULT_WINDOW = 60.0
MOREINFO = "https://demo.ccvshop.nl/API/Docs/"
ACCEPTS = ("application/vnd.verto.webshop+json", "application/vnd.verto.salespos+json", "application/json", "*/*")
_PUBLIC_RE = re.compile(r"^pk-([A-Za-z0-9.-]+)$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HASH_RE = re.compile(r"^[0-9a-f]{128}$")
_ID_RE = re.compile(r"^[1-9][0-9]{0,11}$")
CENT = Decimal("0.01")

STATUSES = {
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
RESERVED_STATUS = 14
COMPLETED_STATUSES = frozenset({6, 7})
TAX = {"normal": Decimal(21), "low a": Decimal(9), "low b": Decimal(6), "extra low": Decimal(0), "zero": Decimal(0)}

_CATEGORIES = ((101, "Koffie"), (102, "Thee"), (103, "Gebak"), (104, "Accessoires"))
# sku, name, price incl., tariff, category id, stock, stockenabled
_CATALOG = (
    ("CF-ESP-250", "Espressobonen 250 g", "8.95", "low a", 101, 40, True),
    ("CF-FIL-500", "Filterkoffie 500 g", "11.50", "low a", 101, 25, True),
    ("CF-DEC-250", "Decaf bonen 250 g", "9.25", "low a", 101, 12, True),
    ("TE-GRN-100", "Groene thee 100 g", "6.75", "low a", 102, 30, True),
    ("TE-MNT-050", "Muntthee 50 g", "4.95", "low a", 102, 18, True),
    ("GB-APL-001", "Appeltaart (punt)", "3.75", "low a", 103, 0, False),
    ("GB-BRW-001", "Brownie", "2.95", "low a", 103, 0, False),
    ("AC-MOK-350", "Mok 350 ml", "12.95", "normal", 104, 15, True),
    ("AC-FLT-002", "Filterhouder nr. 2", "9.95", "normal", 104, 6, True),
    ("AC-GFT-025", "Cadeaubon 25 euro", "25.00", "zero", 104, 0, False),
)
_PEOPLE = (
    ("Anna", "de Vries", None, "NL", "Utrecht", "3511 AB", "Oudegracht", "12"),
    ("Bram", "Jansen", "Jansen Horeca B.V.", "NL", "Amsterdam", "1012 JS", "Damrak", "70"),
    ("Chloé", "Peeters", None, "BE", "Antwerpen", "2000", "Meir", "44"),
    ("Daan", "Bakker", "Bakkerij Bakker", "NL", "Haarlem", "2011 HR", "Grote Markt", "3"),
    ("Eva", "Müller", None, "DE", "Köln", "50667", "Hohe Straße", "101"),
    ("Finn", "Smit", None, "NL", "Leiden", "2311 EW", "Breestraat", "88"),
)
_STATUS_CYCLE = (1, 4, 2, 5, 7, 8, 14, 6, 10, 7, 5, 1, 4, 7, 11)
_PRODUCT_WRITABLE = frozenset(
    {
        "name",
        "productnumber",
        "active",
        "eannumber",
        "description",
        "taxtariff",
        "price",
        "discount",
        "purchaseprice",
        "unit",
        "stockenabled",
        "stocktype",
        "stock",
        "stocklocation",
        "ordering_without_stock",
        "weight",
        "maincategory",
        "subcategory",
        "memo",
    }
)
_PRODUCT_READONLY = frozenset(
    {"id", "href", "is_active", "createdate", "modifydate", "deeplink", "amount_sold", "is_visible", "can_be_ordered"}
)
_PRODUCT_STRINGS = frozenset(
    {"eannumber", "description", "unit", "stocklocation", "maincategory", "subcategory", "memo", "stocktype"}
)
_PRODUCT_NUMBERS = frozenset({"price", "discount", "purchaseprice", "stock", "weight"})
_PRODUCT_BOOLS = frozenset({"active", "stockenabled"})
_ORDERING_WITHOUT_STOCK = ("default", "yes", "no")
_LIST_PARAMS = {
    "orders": frozenset({"start", "size", "status", "paid", "min_create_date", "max_create_date"}),
    "products": frozenset({"start", "size", "productnumber"}),
    "categories": frozenset({"start", "size"}),
    "orderrows": frozenset({"start", "size"}),
}
_RESOURCE_METHODS = {
    "orders": ("GET",),
    "orderrows": ("GET",),
    "products": ("GET", "POST", "PATCH"),
    "categories": ("GET",),
}


def shop_seed(shop: str) -> int:
    return int.from_bytes(hashlib.sha256(shop.encode()).digest()[:4], "big")


def sign(public: str, secret: str, method: str, uri: str, body: str, date: str) -> str:
    """The CCV hash: hex HMAC-SHA512 of ``public|METHOD|uri|body|date`` with the secret."""
    message = f"{public}|{method}|{uri}|{body}|{date}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha512).hexdigest()


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat(timespec="seconds")


class _Refused(Exception):
    """A CCV error answer: status, code, developer message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class CcvApp(VendorApp):
    name = "ccv_salespos"

    def __init__(self, latency_ms: float = 0, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        super().__init__(latency_ms)

    # ------------------------------------------------------------------------------------- state

    def reset_state(self) -> None:
        self.shops: dict[str, dict] = {}
        self.limits = {
            "per_minute": DEFAULT_PER_MINUTE,
            "total_per_minute": DEFAULT_TOTAL_PER_MINUTE,
            "window_seconds": DEFAULT_WINDOW,
        }
        self.hits: dict[tuple, collections.deque] = {}

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    @classmethod
    def shop_for(cls, shop: str, now: dt.datetime) -> dict:
        """The deterministic shop of ``shop`` as it is at ``now``: categories, products, customers, orders (one a
        day over the last 15 days; none in the future — today's is placed before ``now`` when its hour is still
        to come, as a real shop's would be)."""
        seed = shop_seed(shop)
        today = now.date()
        categories = [{"id": cid, "name": name} for cid, name in _CATEGORIES]
        products = []
        for i, (sku, name, price, tariff, cat, stock, managed) in enumerate(_CATALOG):
            bump = Decimal((seed >> i) % 3) * Decimal("0.10")
            products.append(
                {
                    "id": 500001 + i,
                    "productnumber": sku,
                    "eannumber": f"87{seed % 10**6:06d}{i:04d}",
                    "name": name,
                    "price": _cents(Decimal(price) + bump),
                    "taxtariff": tariff,
                    "maincategory": dict(_CATEGORIES)[cat],
                    "category_id": cat,
                    "stockenabled": managed,
                    "stock": Decimal(stock + (seed >> (i + 3)) % 5 if managed else 0),
                    "stocktype": "normal",
                    "ordering_without_stock": "default",
                    "active": True,
                    "unit": "stuk",
                    "createdate": dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC) + dt.timedelta(days=i),
                    "modifydate": dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC) + dt.timedelta(days=i),
                }
            )
        orders = []
        for n in range(15):
            person = _PEOPLE[(seed + n) % len(_PEOPLE)]
            day = today - dt.timedelta(days=14 - n)
            created = dt.datetime.combine(day, dt.time(9 + (seed + 3 * n) % 10, (7 * n) % 60), dt.UTC)
            created = min(created, (now - dt.timedelta(minutes=30)).replace(second=0, microsecond=0))
            rows = []
            for k in range(1 + (seed + n) % 3):
                prod = products[(seed // 7 + 3 * n + 4 * k) % len(products)]
                rows.append({"productnumber": prod["productnumber"], "count": Decimal(1 + (n + k) % 3)})
            status = _STATUS_CYCLE[n]
            orders.append(
                {
                    "id": 8000001 + n,
                    "ordernumber": 1001 + n,
                    "status": status,
                    "paid": status not in (1, 4, 8),
                    "create_date": created,
                    "customer": _customer(person, n),
                    "rows": rows,
                    "shipping": Decimal("0.00") if n % 4 == 0 else Decimal("4.95"),
                }
            )
        shop_obj = {"categories": categories, "products": products, "orders": orders, "next_row": 1}
        for order in orders:
            cls._price_rows(shop_obj, order)
        return shop_obj

    @staticmethod
    def _price_rows(shop: dict, order: dict) -> None:
        """Give rows without an id/price their product's price and tax (once: later price changes keep them)."""
        by_sku = {p["productnumber"]: p for p in shop["products"]}
        for row in order["rows"]:
            prod = by_sku.get(row["productnumber"])
            if "id" not in row:
                row["id"] = 90000001 + shop["next_row"]
                shop["next_row"] += 1
            row.setdefault("product_id", prod["id"] if prod else None)
            row.setdefault("name", prod["name"] if prod else row["productnumber"])
            row.setdefault("price", prod["price"] if prod else Decimal("0.00"))
            row.setdefault("tax", TAX[prod["taxtariff"]] if prod else Decimal(21))

    def _shop(self, shop: str) -> dict:
        if shop not in self.shops:
            self.shops[shop] = self.shop_for(shop, self.now())
        return self.shops[shop]

    def _reserved(self, shop: dict) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for order in shop["orders"]:
            if order["status"] == RESERVED_STATUS:
                for row in order["rows"]:
                    out[row["productnumber"]] = out.get(row["productnumber"], Decimal(0)) + row["count"]
        return out

    def _shop_out(self, shop: dict) -> dict:
        reserved = self._reserved(shop)
        products = []
        for p in shop["products"]:
            res = reserved.get(p["productnumber"], Decimal(0))
            price = p["price"]
            rate = TAX.get(p["taxtariff"], Decimal(0))
            products.append(
                {
                    "id": p["id"],
                    "sku": p["productnumber"],
                    "name": p["name"],
                    "price_incl": str(price),
                    "price_excl": str(_cents(price * 100 / (100 + rate))),
                    "vat": str(rate),
                    "category": p["maincategory"],
                    "manage_stock": p["stockenabled"],
                    "stock": format(p["stock"], "f"),
                    "reserved": format(res, "f"),
                    "available": format(p["stock"] - res, "f"),
                    "active": p["active"],
                }
            )
        orders = []
        for o in shop["orders"]:
            out = self._order_api("", o)
            out["rows"] = [self._row_plain(o, r) for r in o["rows"]]
            orders.append(_plain(out))
        return {"categories": shop["categories"], "products": products, "orders": orders}

    def state(self) -> dict:
        return {"shops": sorted(self.shops), "limits": dict(self.limits)}

    # ------------------------------------------------------------------------------------- control

    def control_extra(self, req: Request, sub: str) -> Response | None:
        if sub == "limits":
            if req.method == "GET":
                return json_response(200, {"limits": dict(self.limits)})
            if req.method != "POST":
                return self.error(405, "use GET or POST")
            body = req.json()
            if not isinstance(body, dict):
                raise BadRequest("limits must be a JSON object")
            unknown = sorted(set(body) - set(self.limits))
            if unknown:
                raise BadRequest(f"unknown limits keys: {unknown}; allowed: {sorted(self.limits)}")
            new = dict(self.limits)
            for key, value in body.items():
                if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or value <= 0:
                    raise BadRequest(f"'{key}' must be a positive number, got {shown(value)}")
                new[key] = float(value) if key == "window_seconds" else int(value)
            with self.lock:
                self.limits = new
                self.hits.clear()
            return json_response(200, {"limits": dict(new)})
        if not sub.startswith("shops/"):
            return None
        name = unquote(sub[len("shops/") :])
        if not name or "/" in name:
            return self.error(404, "use /_sandbox/shops/{shop}")
        if req.method == "GET":
            with self.lock:
                return json_response(200, {"shop": self._shop_out(self._shop(name))})
        if req.method != "POST":
            return self.error(405, "use GET or POST")
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        unknown = sorted(set(body) - {"products", "orders", "stock"})
        if unknown:
            raise BadRequest(f"unknown keys: {unknown}; allowed: ['orders', 'products', 'stock']")
        with self.lock:
            shop = self._shop(name)
            for i, spec in enumerate(body.get("products") or []):
                self._control_product(shop, spec, f"products[{i}]")
            for sku, qty in (body.get("stock") or {}).items():
                prod = next((p for p in shop["products"] if p["productnumber"] == sku), None)
                if prod is None:
                    raise BadRequest(f"stock: no product with productnumber {sku!r}")
                if isinstance(qty, bool) or not isinstance(qty, int | Decimal):
                    raise BadRequest(f"stock.{sku} must be a number, got {shown(qty)}")
                prod["stock"] = Decimal(qty)
            for i, spec in enumerate(body.get("orders") or []):
                self._control_order(shop, spec, f"orders[{i}]")
            return json_response(200, {"shop": self._shop_out(shop)})

    def _control_product(self, shop: dict, spec, where: str) -> None:
        if not isinstance(spec, dict) or not isinstance(spec.get("productnumber"), str):
            raise BadRequest(f"{where} must be an object with a productnumber")
        prod = next((p for p in shop["products"] if p["productnumber"] == spec["productnumber"]), None)
        problems = self._product_problems(spec, creating=prod is None)
        if problems:
            raise BadRequest(f"{where}: " + "; ".join(problems))
        if prod is None:
            prod = self._new_product(shop, spec)
        self._apply_product(prod, spec)

    def _control_order(self, shop: dict, spec, where: str) -> None:
        if not isinstance(spec, dict):
            raise BadRequest(f"{where} must be an object")
        allowed = {"id", "status", "paid", "create_date", "customer", "rows", "shipping", "raw"}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise BadRequest(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
        order = next((o for o in shop["orders"] if o["id"] == spec.get("id")), None)
        if order is None:
            last = shop["orders"][-1] if shop["orders"] else {"id": 8000000, "ordernumber": 1000}
            order = {
                "id": spec.get("id") or last["id"] + 1,
                "ordernumber": last["ordernumber"] + 1,
                "status": 1,
                "paid": False,
                "create_date": self.now().replace(microsecond=0),
                "customer": _customer(_PEOPLE[0], len(shop["orders"])),
                "rows": [],
                "shipping": Decimal("0.00"),
            }
            shop["orders"].append(order)
            shop["orders"].sort(key=lambda o: o["id"])
        if "status" in spec:
            if spec["status"] not in STATUSES or isinstance(spec["status"], bool):
                raise BadRequest(f"{where}.status must be one of {sorted(STATUSES)}, got {shown(spec['status'])}")
            order["status"] = spec["status"]
        if "paid" in spec:
            order["paid"] = bool(spec["paid"])
        if "create_date" in spec:
            order["create_date"] = _parse_instant(spec["create_date"], f"{where}.create_date")
        if "customer" in spec:
            if not isinstance(spec["customer"], dict):
                raise BadRequest(f"{where}.customer must be an object")
            order["customer"] = spec["customer"]
        if "shipping" in spec:
            order["shipping"] = Decimal(str(spec["shipping"]))
        if "rows" in spec:
            rows = []
            for k, row in enumerate(spec["rows"]):
                if not isinstance(row, dict) or not isinstance(row.get("productnumber"), str):
                    raise BadRequest(f"{where}.rows[{k}] must be an object with a productnumber")
                new = {"productnumber": row["productnumber"], "count": Decimal(str(row.get("count", 1)))}
                for key in ("price", "tax"):
                    if key in row:
                        new[key] = Decimal(str(row[key]))
                if "name" in row:
                    new["name"] = str(row["name"])
                rows.append(new)
            order["rows"] = rows
        if "raw" in spec:
            if not isinstance(spec["raw"], dict):
                raise BadRequest(f"{where}.raw must be an object")
            order["raw"] = spec["raw"]
        self._price_rows(shop, order)

    # ------------------------------------------------------------------------------------- errors

    def error(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
        code = extra.pop("code", None) or f"{status}.10"
        body = {
            "status": status,
            "code": code,
            "message": _REASONS.get(status, "Error"),
            "developermessage": message,
            "moreinfo": MOREINFO,
            **extra,
        }
        return json_response(status, body, headers)

    # ------------------------------------------------------------------------------------- dispatch

    def api(self, req: Request) -> Response:
        path = req.path
        if not path.startswith(API_PREFIX + "/"):
            return self.error(404, f"no such path {path}", code="404.20")
        try:
            public, uri = self._authenticate(req)
        except _Refused as exc:  # never signed: the caller is not known
            return self.error(exc.status, exc.message, headers=exc.headers, code=exc.code)
        try:
            accept = (req.headers.get("Accept") or "*/*").split(";")[0].strip().lower()
            if accept and accept not in ACCEPTS:
                raise _Refused(406, "406.10", f"Accept {accept!r} is not served; use one of {list(ACCEPTS[:2])}")
            parts = [p for p in path[len(API_PREFIX) + 1 :].split("/") if p]
            resource = next((p for p in reversed(parts) if not p.isdigit()), "")
            self._rate_limit(public, req.method, resource)
            try:
                resp = self._route(req, public, parts)
            except BadRequest as exc:
                raise _Refused(400, "400.10", str(exc)) from None
        except _Refused as exc:
            resp = self.error(exc.status, exc.message, headers=exc.headers, code=exc.code)
        return self._signed(req, public, uri, resp)

    def _signed(self, req: Request, public: str, uri: str, resp: Response) -> Response:
        """Sign the answer as CCV does: the same message over the response body and its own x-date."""
        date = _iso(self.now())
        secret = "sk-" + _PUBLIC_RE.match(public).group(1)
        resp.headers["x-date"] = date
        resp.headers["x-hash"] = sign(public, secret, req.method, uri, resp.body.decode("utf-8"), date)
        return resp

    def _authenticate(self, req: Request) -> tuple[str, str]:
        """(public key, the uri as signed), or :class:`_Refused` 401."""
        public = req.headers.get("x-public")
        date = req.headers.get("x-date")
        given = req.headers.get("x-hash")
        missing = [h for h, v in (("x-public", public), ("x-date", date), ("x-hash", given)) if not v]
        if missing:
            raise _Refused(401, "401.10", f"missing header(s): {', '.join(missing)}")
        match = _PUBLIC_RE.match(public)
        if not match:
            raise _Refused(401, "401.10", "unknown public key (x-public)")
        if not _HASH_RE.match(given):
            raise _Refused(401, "401.10", "x-hash is not 128 lowercase hex digits (HMAC-SHA512)")
        try:
            sent = dt.datetime.fromisoformat(date.replace("Z", "+00:00"))
        except ValueError:
            raise _Refused(401, "401.10", f"x-date is not an ISO-8601 date: {shown(date)}") from None
        if sent.tzinfo is None:
            raise _Refused(401, "401.10", f"x-date has no UTC offset: {shown(date)}")
        skew = abs((self.now() - sent).total_seconds())
        if skew > CLOCK_SKEW:
            raise _Refused(401, "401.10", f"x-date {date} is {skew:.0f} s away from the server's clock (max 300 s)")
        secret = "sk-" + match.group(1)
        try:
            body = req.body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(401, "401.10", "body is not UTF-8, so it cannot be verified against x-hash") from None
        for uri in _uris(req):
            if hmac.compare_digest(sign(public, secret, req.method, uri, body, date), given):
                return public, uri
        raise _Refused(401, "401.10", "x-hash does not match the request (public|METHOD|uri|body|x-date)")

    def _rate_limit(self, public: str, method: str, resource: str) -> None:
        now = self.clock()
        with self.lock:
            window = self.limits["window_seconds"]
            checks = (
                ((public, method, resource), self.limits["per_minute"], "429.10", _MSG_429_10),
                ((public,), self.limits["total_per_minute"], "429.11", _MSG_429_11),
            )
            for key, limit, code, message in checks:
                hits = self.hits.setdefault(key, collections.deque())
                while hits and hits[0] <= now - window:
                    hits.popleft()
                if len(hits) >= limit:
                    wait = max(1, math.ceil(hits[0] + window - now))
                    headers = {
                        "Retry-After": str(wait),
                        "X-RateLimit-Limit": str(limit),
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(wait),
                    }
                    raise _Refused(429, code, message, headers)
            for key, _limit, _code, _message in checks:
                self.hits[key].append(now)

    def _route(self, req: Request, public: str, parts: list[str]) -> Response:
        shop_name = _PUBLIC_RE.match(public).group(1)
        method = req.method
        resource = parts[0] if parts else ""
        if resource not in _RESOURCE_METHODS:
            raise _Refused(404, "404.20", f"invalid resource name {resource!r}")
        ids = parts[1:]
        if len(ids) >= 1 and not _ID_RE.match(ids[0]):
            raise _Refused(400, "400.10", f"id must be a positive integer, got {shown(ids[0])}")
        if len(ids) == 2 and not (resource == "orders" and ids[1] == "orderrows") or len(ids) > 2:
            raise _Refused(404, "404.20", f"invalid resource name {'/'.join(parts)!r}")
        sub = "orderrows" if len(ids) == 2 else resource
        allowed = ("GET",) if sub == "orderrows" else _RESOURCE_METHODS[resource]
        if len(ids) == 0 and method == "PATCH" or len(ids) == 1 and method == "POST":
            allowed = ("GET",)
        if method not in allowed:
            raise _Refused(405, "405.10", f"method {method} is not allowed on {'/'.join(parts)}")
        with self.lock:
            shop = self._shop(shop_name)
            if resource == "orders":
                if len(ids) == 2:
                    order = self._find(shop["orders"], ids[0], "order")
                    self._check_params(req, "orderrows")
                    items = [self._row_api(req, order, r) for r in order["rows"]]
                    return self._page(req, items)
                if ids:
                    return json_numbers_response(200, self._order_api(_host(req), self._find(shop["orders"], ids[0])))
                return self._list_orders(req, shop)
            if resource == "categories":
                if ids:
                    cat = next((c for c in shop["categories"] if str(c["id"]) == ids[0]), None)
                    if cat is None:
                        raise _Refused(404, "404.10", f"no category with id {ids[0]}")
                    return json_response(200, self._category_api(req, cat))
                self._check_params(req, "categories")
                return self._page(req, [self._category_api(req, c) for c in shop["categories"]])
            # products
            if method == "POST":
                return self._post_product(req, shop)
            if method == "PATCH":
                return self._patch_product(req, shop, self._find(shop["products"], ids[0], "product"))
            if ids:
                return json_numbers_response(
                    200, self._product_api(req, self._find(shop["products"], ids[0], "product"))
                )
            self._check_params(req, "products")
            sku = req.arg("productnumber")
            items = [p for p in shop["products"] if sku is None or p["productnumber"] == sku]
            return self._page(req, [self._product_api(req, p) for p in items])

    @staticmethod
    def _find(items: list[dict], ident: str, kind: str = "order") -> dict:
        found = next((x for x in items if str(x["id"]) == ident), None)
        if found is None:
            raise _Refused(404, "404.10", f"no {kind} with id {ident}")
        return found

    @staticmethod
    def _check_params(req: Request, resource: str) -> None:
        unknown = sorted(set(req.query) - _LIST_PARAMS[resource])
        if unknown:
            raise BadRequest(
                f"unknown query parameter(s) {unknown} for {resource}; allowed: {sorted(_LIST_PARAMS[resource])}"
            )
        for name, values in req.query.items():
            if len(values) > 1:
                raise BadRequest(f"query parameter '{name}' given {len(values)} times")

    def _page(self, req: Request, items: list) -> Response:
        start = _int_param(req, "start", 0, minimum=0)
        size = _int_param(req, "size", DEFAULT_SIZE, minimum=1)
        if size > MAX_SIZE:
            raise BadRequest(f"parameter 'size' must be at most {MAX_SIZE}, got {size}")
        base = f"{_host(req)}{req.path}"
        others = [(k, v[0]) for k, v in req.query.items() if k not in ("start", "size")]

        def link(begin: int) -> str:
            return f"{base}?{urlencode([*others, ('start', begin), ('size', size)])}"

        body = {
            "href": link(start),
            "items": items[start : start + size],
            "next": link(start + size) if start + size < len(items) else None,
            "previous": link(max(0, start - size)) if start > 0 else None,
        }
        return json_numbers_response(200, body)

    # ------------------------------------------------------------------------------------- orders

    def _list_orders(self, req: Request, shop: dict) -> Response:
        self._check_params(req, "orders")
        status = req.arg("status")
        if status is not None:
            if not status.isdigit() or int(status) not in STATUSES:
                raise BadRequest(f"parameter 'status' must be one of {sorted(STATUSES)}, got {status!r}")
        paid = req.arg("paid")
        if paid is not None and paid not in ("true", "false"):
            raise BadRequest(f"parameter 'paid' must be true or false, got {paid!r}")
        lo = _date_param(req, "min_create_date", end=False)
        hi = _date_param(req, "max_create_date", end=True)
        if lo and hi and hi < lo:
            raise BadRequest("parameter 'max_create_date' is before 'min_create_date'")
        chosen = [
            o
            for o in shop["orders"]
            if (status is None or o["status"] == int(status))
            and (paid is None or o["paid"] == (paid == "true"))
            and (lo is None or o["create_date"] >= lo)
            and (hi is None or o["create_date"] <= hi)
        ]
        return self._page(req, [self._order_api(_host(req), o) for o in chosen])

    def _order_api(self, host: str, order: dict) -> dict:
        rows_total = sum((_cents(r["price"] * r["count"]) for r in order["rows"]), Decimal("0.00"))
        tax = sum(
            (
                _cents(r["price"] * r["count"]) - _cents(r["price"] * r["count"] * 100 / (100 + r["tax"]))
                for r in order["rows"]
            ),
            Decimal("0.00"),
        )
        total = rows_total + order["shipping"]
        out = {
            "id": order["id"],
            "href": f"{host}{API_PREFIX}/orders/{order['id']}",
            "ordernumber_prefix": "WEB",
            "ordernumber": order["ordernumber"],
            "ordernumber_full": f"WEB{order['ordernumber']}",
            "create_date": _iso(order["create_date"]),
            "status": order["status"],
            "is_completed": order["status"] in COMPLETED_STATUSES,
            "paid": order["paid"],
            "taxes_included": True,
            "order_row_taxes_included": True,
            "currency": "EUR",
            "total_orderrow_price": Number(rows_total),
            "total_shipping": Number(order["shipping"]),
            "total_discounts": Number(Decimal("0.00")),
            "total_tax": Number(tax),
            "total_price": Number(total),
            "customer": order["customer"],
            "orderrows": {"href": f"{host}{API_PREFIX}/orders/{order['id']}/orderrows"},
        }
        out.update(order.get("raw") or {})
        return out

    def _row_api(self, req: Request, order: dict, row: dict) -> dict:
        host = _host(req)
        out = self._row_plain(order, row)
        out["href"] = f"{host}{API_PREFIX}/orderrows/{row['id']}"
        out["tax"] = Number(row["tax"])
        out["price"] = Number(row["price"])
        out["discount"] = Number(Decimal("0.00"))
        out["total_price"] = Number(_cents(row["price"] * row["count"]))
        return out

    @staticmethod
    def _row_plain(order: dict, row: dict) -> dict:
        return {
            "id": row["id"],
            "order_id": order["id"],
            "product_id": row["product_id"],
            "product_type": "default",
            "product_name": row["name"],
            "product_number": row["productnumber"],
            "count": int(row["count"]) if row["count"] == int(row["count"]) else float(row["count"]),
            "price": str(row["price"]),
            "discount": "0.00",
            "tax": format(row["tax"].normalize(), "f"),
            "total_price": str(_cents(row["price"] * row["count"])),
            "unit": "stuk",
        }

    # ------------------------------------------------------------------------------------- products

    @staticmethod
    def _category_api(req: Request, cat: dict) -> dict:
        return {"id": cat["id"], "href": f"{_host(req)}{API_PREFIX}/categories/{cat['id']}", "name": cat["name"]}

    @staticmethod
    def _product_api(req: Request, prod: dict) -> dict:
        stock = prod["stock"]
        return {
            "id": prod["id"],
            "href": f"{_host(req)}{API_PREFIX}/products/{prod['id']}",
            "productnumber": prod["productnumber"],
            "eannumber": prod.get("eannumber"),
            "name": prod["name"],
            "is_active": prod["active"],
            "createdate": _iso(prod["createdate"]),
            "modifydate": _iso(prod["modifydate"]),
            "price": Number(prod["price"]),
            "discount": Number(Decimal("0.00")),
            "taxtariff": prod["taxtariff"],
            "unit": prod.get("unit", "stuk"),
            "stockenabled": prod["stockenabled"],
            "stocktype": prod.get("stocktype", "normal"),
            "stock": int(stock) if stock == int(stock) else float(stock),
            "ordering_without_stock": prod.get("ordering_without_stock", "default"),
            "maincategory": prod.get("maincategory"),
        }

    def _product_problems(self, body: dict, *, creating: bool, current: dict | None = None) -> list[str]:
        problems = []
        for key in sorted(body):
            if key in _PRODUCT_READONLY:
                problems.append(f"'{key}' is read-only")
            elif key not in _PRODUCT_WRITABLE:
                problems.append(f"'{key}' is not a field of products")
        for key in ("name", "productnumber"):
            if key in body and (not isinstance(body[key], str) or not body[key].strip()):
                problems.append(f"'{key}' must be a non-empty string, got {json_type(body[key])} {shown(body[key])}")
        for key in _PRODUCT_STRINGS & set(body):
            if body[key] is not None and not isinstance(body[key], str):
                problems.append(f"'{key}' must be a string, got {json_type(body[key])} {shown(body[key])}")
        for key in _PRODUCT_BOOLS & set(body):
            if not isinstance(body[key], bool):
                problems.append(f"'{key}' must be a boolean, got {json_type(body[key])} {shown(body[key])}")
        for key in _PRODUCT_NUMBERS & set(body):
            value = body[key]
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                problems.append(f"'{key}' must be a number, got {json_type(value)} {shown(value)}")
            elif value < 0:
                problems.append(f"'{key}' must be 0 or more, got {shown(value)}")
            elif key == "price" and Decimal(value) != _cents(Decimal(value)):
                problems.append(f"'price' has more than 2 decimals: {shown(value)}")
        if "taxtariff" in body and body["taxtariff"] not in TAX:
            problems.append(f"'taxtariff' must be one of {list(TAX)}, got {shown(body['taxtariff'])}")
        if "ordering_without_stock" in body and body["ordering_without_stock"] not in _ORDERING_WITHOUT_STOCK:
            problems.append(
                f"'ordering_without_stock' must be one of {list(_ORDERING_WITHOUT_STOCK)}, "
                f"got {shown(body['ordering_without_stock'])}"
            )
        if creating:
            missing = [k for k in ("name", "productnumber", "price") if k not in body]
            if missing:
                problems.append(f"required field(s) missing: {', '.join(missing)}")
        return problems

    def _new_product(self, shop: dict, body: dict) -> dict:
        now = self.now().replace(microsecond=0)
        prod = {
            "id": max((p["id"] for p in shop["products"]), default=500000) + 1,
            "productnumber": body["productnumber"],
            "eannumber": None,
            "name": body["name"],
            "price": Decimal("0.00"),
            "taxtariff": "normal",
            "maincategory": None,
            "category_id": None,
            "stockenabled": False,
            "stock": Decimal(0),
            "stocktype": "normal",
            "ordering_without_stock": "default",
            "active": True,
            "unit": "stuk",
            "createdate": now,
            "modifydate": now,
        }
        shop["products"].append(prod)
        return prod

    def _apply_product(self, prod: dict, body: dict) -> None:
        for key, value in body.items():
            if key in _PRODUCT_NUMBERS:
                value = Decimal(value)
                if key == "price":
                    value = _cents(value)
            prod[key] = value
        prod["modifydate"] = self.now().replace(microsecond=0)

    def _body(self, req: Request) -> dict:
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _Refused(415, "415.10", f"Content-Type must be application/json, got {ctype or 'none'!r}")
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest(f"body must be a JSON object, got {json_type(body)}")
        return body

    def _post_product(self, req: Request, shop: dict) -> Response:
        body = self._body(req)
        problems = self._product_problems(body, creating=True)
        if problems:
            raise BadRequest("; ".join(problems))
        if body.get("stock") not in (None, 0) and not body.get("stockenabled", False):
            raise _Refused(422, "422.10", "'stock' cannot be set: stock management is off (stockenabled=false)")
        prod = self._new_product(shop, body)
        self._apply_product(prod, body)
        return json_numbers_response(201, self._product_api(req, prod))

    def _patch_product(self, req: Request, shop: dict, prod: dict) -> Response:
        body = self._body(req)
        if not body:
            raise BadRequest("body has no fields to change")
        problems = self._product_problems(body, creating=False)
        if problems:
            raise BadRequest("; ".join(problems))
        managed = body.get("stockenabled", prod["stockenabled"])
        if "stock" in body and not managed:
            raise _Refused(422, "422.10", "'stock' cannot be set: stock management is off (stockenabled=false)")
        self._apply_product(prod, body)
        return Response(204)


# ----------------------------------------------------------------------------------------- helpers

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_MSG_429_10 = (
    "Each method in each resource has a limit of requests that can be made per minute. "
    "Please lower the frequency of your request rate."
)
_MSG_429_11 = (
    "The API has a total limit of requests that can be made per minute. "
    "Please lower the frequency of your request rate."
)


def _customer(person: tuple, n: int) -> dict:
    first, last, company, country, city, zipcode, street, number = person
    email = f"{first.lower().replace('é', 'e')}.{last.lower().replace(' ', '')}{n}@example.com".replace("ü", "u")
    address = {
        "first_name": first,
        "last_name": last,
        "company": company,
        "street": street,
        "housenumber": number,
        "housenumber_suffix": None,
        "zipcode": zipcode,
        "city": city,
        "country_code": country,
        "telephone": f"+31 6 {12340000 + n}",
        "email": email,
    }
    delivery = dict(address) if n % 3 else {**address, "street": "Stationsplein", "housenumber": str(n + 1)}
    return {"email": email, "billingaddress": address, "deliveryaddress": delivery}


def _host(req: Request) -> str:
    host = req.headers.get("Host") or "localhost"
    return f"http://{host}"


def _uris(req: Request) -> list[str]:
    """The request's uri as the client may have encoded the query (``+`` or ``%20``), in received order."""
    if not req.query:
        return [req.path]
    pairs = [(k, v) for k, values in req.query.items() for v in values]
    return [f"{req.path}?{urlencode(pairs, quote_via=q)}" for q in (quote_plus, quote)]


def _int_param(req: Request, name: str, default: int, *, minimum: int) -> int:
    raw = req.arg(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?\d{1,9}", raw):
        raise BadRequest(f"parameter '{name}' must be an integer, got {raw!r}")
    value = int(raw)
    if value < minimum:
        raise BadRequest(f"parameter '{name}' must be at least {minimum}, got {value}")
    return value


def _date_param(req: Request, name: str, *, end: bool) -> dt.datetime | None:
    raw = req.arg(name)
    if raw is None:
        return None
    if _DATE_RE.match(raw):
        try:
            day = dt.date.fromisoformat(raw)
        except ValueError:
            raise BadRequest(f"parameter '{name}' is not a valid date: {raw!r}") from None
        instant = dt.datetime.combine(day, dt.time.max if end else dt.time.min, dt.UTC)
        return instant
    return _parse_instant(raw, f"parameter '{name}'")


def _parse_instant(raw, name: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD or an ISO-8601 instant, got {shown(raw)}") from None
    if value.tzinfo is None:
        raise BadRequest(f"{name} needs a UTC offset, got {shown(raw)}")
    return value.astimezone(dt.UTC)


def _plain(obj):
    if isinstance(obj, Number):
        return format(obj.value, "f")
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj
