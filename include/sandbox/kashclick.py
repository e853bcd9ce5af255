"""Stand-in for the Kash.click POS API (auth token + daily sales), for the ledger flow (Kash.click → accounting).

Standard library only and nothing from ``tillflow``: the sandbox shares no code with the client it exercises.

What Kash.click documents (help pages "API" / "Authentication", kash.click/cash-register-software/api and
api_auth, read 2026) and this stand-in follows:

* ``POST /workers/getAuthToken.php`` with form fields ``login`` and ``password`` →
  ``{"result": "OK", "APIKEY": "<token>", "SHOPID": "<shop account id>"}``. The docs' example only tests
  ``result === "OK"``; the *failure* body and its HTTP status are not documented. **Assumed** here:
  HTTP 200 ``{"result": "KO", "message": "Invalid login or password"}`` (PHP worker style). A JSON body
  ``{"login", "password"}`` is accepted too. (Newer pages also list ``getAuthTokenWithPassword.php`` and an
  OTP flow answering ``{"success": true|false, "result": ...}``; not served here.)
* ``GET /workers/getSales.php?idboutique=<SHOPID>&key=<APIKEY>&d=DD&m=MM&y=YYYY&formatExport=...``: the
  day's sales; without ``d``/``m``/``y`` the previous day. The documented ``formatExport`` values are
  ``Std`` (HTML), ``PDF``, ``XLS``, ``CSV``, ``frafec`` (FEC) and ``saft``: **``json`` is not documented**.
  This stand-in serves ``formatExport=json`` only (anything else → 400) with the shape below, which is
  tillflow's own assumption; a real export replaces it behind the same client.
* A refused key/shop on getSales → (assumed) HTTP 200 ``{"result": "KO", "message": "Invalid key"}``.
  Malformed parameters → 400 ``{"result": "KO", "message": ...}``.

Test credentials: any login, password ``pw-<login>``. ``SHOPID`` is a stable number derived from the login;
``APIKEY`` is a random token per login (stable for the life of the server, as Kash.click's account token).

The JSON day (``formatExport=json``), money as strings with 2 decimals, VAT rates as JSON numbers::

    {"result": "OK", "shopId": "41234", "date": "2026-03-14",
     "registers": [{"id": "R1", "name": "Caisse 1"}, {"id": "R2", "name": "Caisse 2"}],
     "orders": [{"id": "20260314-0001", "registerId": "R1", "date": "2026-03-14", "time": "09:12:40",
                 "status": "validated",            # or "cancelled" (a deleted order)
                 "updatedAt": "2026-03-14T09:12:40", # later when the order was changed after the sale
                 "customer": {"id": "C002", "name": "Boulangerie Martin", "email": "compta@martin.fr"},  # or null
                 "lines": [{"label": "Café", "quantity": "2", "unitPriceIncl": "1.80", "vatRate": 10,
                            "totalIncl": "3.60"}],
                 "totalIncl": "3.60"}],
     "payments": [{"id": "20260314-0001-P1", "orderId": "20260314-0001", "registerId": "R1",
                   "date": "2026-03-14", "method": "cash", "amount": "3.60",
                   "status": "validated"}],          # "cancelled" with its order
     "closings": [{"id": "Z-R1-20260314", "registerId": "R1", "date": "2026-03-14",
                   "methods": [{"method": "cash", "expected": "123.40", "counted": "123.00"}, ...]}]}

Quantities are decimal strings (``"2"``, ``"0.350"``). An order may be paid with two methods (two
payments). A closing's ``expected`` is the sum of the register's validated payments per method; on some
days the counted cash differs by a few cents to two euros. Sales are deterministic per (login, day, order
number) (hash-seeded); days after the stand-in's ``today`` have none.

Control (besides the base ``/_sandbox/reset|faults|config|requests|state``):

* ``POST /_sandbox/shops/{login}`` with any of
  ``{"orders_per_day": N}`` (benchmark volume, default 12, for every day);
  ``{"date": "YYYY-MM-DD", ...}`` with day changes:
  ``"add_orders"``/``"add_payments"``/``"add_closings"`` (raw objects, served as given — bad ones too),
  ``"modify_orders": {"<order id>": {field: value}}`` (merged over the order; ``lines`` without
  ``totalIncl`` recomputes the total; ``updatedAt`` moves on; payments of a generated order follow its
  new total), ``"cancel_orders": ["<order id>"]``,
  ``"recount_closings": {"<closing id>": {"<method>": "<counted>"}}`` (a closing's counted amounts corrected
  afterwards; its expected amounts stay) and
  ``"bad_records": [kind, ...]`` with kinds ``lines_not_adding_up``, ``unknown_vat_rate`` (7 %),
  ``unknown_payment_method`` ("bitcoin"), ``closing_unknown_register`` ("R9"), ``customer_without_email``,
  ``customer_without_name``, ``malformed_amount`` ("12,34,5") and ``missing_field`` (an order without
  ``registerId``). Answers the shop's settings.
* ``GET /_sandbox/shops/{login}`` → the shop's settings and changed days;
  ``GET /_sandbox/shops/{login}/day/{YYYY-MM-DD}`` → the JSON day as getSales would serve it.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import random
import re
import secrets
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qs, unquote

from sandbox.server import CENT, BadRequest, Request, Response, VendorApp, json_response, parse_date

REGISTERS = [{"id": "R1", "name": "Caisse 1"}, {"id": "R2", "name": "Caisse 2"}]
#: label, VAT rate (percent, as served: an int or a Decimal for 5.5 / 2.1), unit price incl. VAT
CATALOGUE = [
    ("Café", 10, "1.80"),
    ("Sandwich jambon", 10, "5.40"),
    ("Plat du jour", 10, "13.90"),
    ("Croissant", Decimal("5.5"), "1.20"),
    ("Eau minérale", Decimal("5.5"), "0.95"),
    ("Baguette", Decimal("5.5"), "1.15"),
    ("Vin rouge", 20, "12.50"),
    ("Bière pression", 20, "4.50"),
    ("Mug souvenir", 20, "9.90"),
    ("Journal", Decimal("2.1"), "1.90"),
    ("Magazine", Decimal("2.1"), "4.20"),
]
CUSTOMERS = [
    {"id": "C001", "name": "Boulangerie Martin", "email": "compta@martin.fr"},
    {"id": "C002", "name": "Hôtel du Parc", "email": "factures@hotelduparc.fr"},
    {"id": "C003", "name": "Mairie de Saint-Rémy", "email": "finances@saint-remy.fr"},
    {"id": "C004", "name": "Association Les Amis", "email": "tresorier@lesamis.fr"},
]
DEFAULT_ORDERS_PER_DAY = 12
MAX_ORDERS_PER_DAY = 100_000
BAD_KINDS = (
    "lines_not_adding_up",
    "unknown_vat_rate",
    "unknown_payment_method",
    "closing_unknown_register",
    "customer_without_email",
    "customer_without_name",
    "malformed_amount",
    "missing_field",
)
_DAY_KEYS = {
    "add_orders",
    "add_payments",
    "add_closings",
    "modify_orders",
    "cancel_orders",
    "recount_closings",
    "bad_records",
}
_SALES_PARAMS = frozenset({"idboutique", "key", "d", "m", "y", "formatExport"})


def _m(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def shop_id_for(login: str) -> str:
    """The SHOPID of a login: a stable 5-digit number."""
    return str(10000 + int(hashlib.sha256(f"shop|{login}".encode()).hexdigest()[:8], 16) % 90000)


def _rng(*parts: object) -> random.Random:
    return random.Random(int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16], 16))


def _line(label: str, quantity: int | str, unit: str, rate) -> dict:
    total = Decimal(str(quantity)) * Decimal(unit)
    return {"label": label, "quantity": str(quantity), "unitPriceIncl": unit, "vatRate": rate, "totalIncl": _m(total)}


def generated_order(login: str, day: dt.date, n: int) -> dict:
    """Order number ``n`` (1-based) of a shop's day, before any change."""
    rng = _rng(login, day.isoformat(), "order", n)
    lines = []
    for _ in range(rng.randint(1, 4)):
        label, rate, unit = rng.choice(CATALOGUE)
        lines.append(_line(label, rng.randint(1, 3), unit, rate))
    customer = dict(rng.choice(CUSTOMERS)) if rng.random() < 0.3 else None
    at = dt.datetime.combine(day, dt.time(8)) + dt.timedelta(seconds=rng.randint(0, 12 * 3600))
    return {
        "id": f"{day:%Y%m%d}-{n:04d}",
        "registerId": REGISTERS[rng.randint(0, 1)]["id"],
        "date": day.isoformat(),
        "time": at.strftime("%H:%M:%S"),
        "status": "validated",
        "updatedAt": at.isoformat(timespec="seconds"),
        "customer": customer,
        "lines": lines,
        "totalIncl": _m(sum((Decimal(line["totalIncl"]) for line in lines), Decimal(0))),
    }


def generated_payments(login: str, order: dict) -> list[dict]:
    """The payments of a generated order, following its (possibly changed) total: one method, or two."""
    rng = _rng(login, order["id"], "payments")
    total = Decimal(order["totalIncl"])
    u = rng.random()
    if u < 0.2 and total >= Decimal("2.00"):
        first = (total * Decimal(rng.randint(20, 80)) / 100).quantize(CENT, rounding=ROUND_HALF_UP)
        parts = [("cash", first), ("card", total - first)]
    else:
        parts = [("cash" if u < 0.55 else "card" if u < 0.92 else "transfer", total)]
    return [
        {
            "id": f"{order['id']}-P{i}",
            "orderId": order["id"],
            "registerId": order["registerId"],
            "date": order["date"],
            "method": method,
            "amount": _m(amount),
            "status": "validated",
        }
        for i, (method, amount) in enumerate(parts, start=1)
    ]


def bad_records(kind: str, day: dt.date) -> dict[str, list[dict]]:
    """The raw records one ``bad_records`` kind adds to a day."""
    d = day.isoformat()
    base = {"registerId": "R1", "date": d, "time": "12:00:00", "status": "validated", "updatedAt": f"{d}T12:00:00"}
    oid = f"{day:%Y%m%d}-{kind}"
    if kind == "lines_not_adding_up":
        lines = [_line("Café", 2, "1.80", 10), _line("Vin rouge", 1, "12.50", 20)]
        return {"orders": [{**base, "id": oid, "customer": None, "lines": lines, "totalIncl": "17.10"}]}
    if kind == "unknown_vat_rate":
        lines = [_line("Article à 7 %", 1, "10.70", 7)]
        return {"orders": [{**base, "id": oid, "customer": None, "lines": lines, "totalIncl": "10.70"}]}
    if kind == "unknown_payment_method":
        lines = [_line("Mug souvenir", 1, "9.90", 20)]
        order = {**base, "id": oid, "customer": None, "lines": lines, "totalIncl": "9.90"}
        pay = {"id": f"{oid}-P1", "orderId": oid, "registerId": "R1", "date": d, "method": "bitcoin"}
        return {"orders": [order], "payments": [{**pay, "amount": "9.90", "status": "validated"}]}
    if kind == "closing_unknown_register":
        methods = [{"method": "cash", "expected": "50.00", "counted": "49.50"}]
        return {"closings": [{"id": f"Z-R9-{day:%Y%m%d}", "registerId": "R9", "date": d, "methods": methods}]}
    if kind in ("customer_without_email", "customer_without_name"):
        customer = {"id": "C900", "name": "Client sans e-mail"} if kind == "customer_without_email" else {"id": "C901"}
        if kind == "customer_without_name":
            customer["email"] = "anonyme@example.fr"
        lines = [_line("Plat du jour", 1, "13.90", 10)]
        return {"orders": [{**base, "id": oid, "customer": customer, "lines": lines, "totalIncl": "13.90"}]}
    if kind == "malformed_amount":
        pay = {"id": f"{oid}-P1", "orderId": f"{day:%Y%m%d}-0001", "registerId": "R1", "date": d, "method": "card"}
        return {"payments": [{**pay, "amount": "12,34,5", "status": "validated"}]}
    if kind == "missing_field":
        lines = [_line("Croissant", 1, "1.20", Decimal("5.5"))]
        order = {**base, "id": oid, "customer": None, "lines": lines, "totalIncl": "1.20"}
        del order["registerId"]
        return {"orders": [order]}
    raise BadRequest(f"unknown bad record kind {kind!r}; known: {', '.join(BAD_KINDS)}")


def day_response(status: int, obj: Any) -> Response:
    """JSON with Decimals written as JSON numbers with their own digits (VAT rates: ``5.5``, ``20``)."""
    marks: dict[str, str] = {}

    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            key = f"\x00num{len(marks)}\x00"
            marks[key] = format(o, "f")
            return key
        if isinstance(o, dt.date):
            return o.isoformat()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    text = json.dumps(obj, default=default, ensure_ascii=False)
    for key, digits in marks.items():
        text = text.replace(json.dumps(key), digits)
    return Response(status, text.encode(), {"Content-Type": "application/json; charset=utf-8"})


class KashclickApp(VendorApp):
    """``POST /workers/getAuthToken.php``; ``GET /workers/getSales.php?...&formatExport=json``."""

    name = "kashclick"

    def __init__(self, latency_ms: float = 0, today: Callable[[], dt.date] = dt.date.today) -> None:
        self.today = today
        super().__init__(latency_ms)

    def reset_state(self) -> None:
        self.shops: dict[str, dict] = {}
        self.keys: dict[str, str] = {}  # APIKEY → login
        self.auth_calls = 0
        self.refused_logins = 0

    def _shop(self, login: str) -> dict:
        shop = self.shops.get(login)
        if shop is None:
            shop = {"shop_id": shop_id_for(login), "key": None, "orders_per_day": DEFAULT_ORDERS_PER_DAY, "days": {}}
            self.shops[login] = shop
        return shop

    @staticmethod
    def _changes(shop: dict, day: dt.date) -> dict:
        return shop["days"].setdefault(
            day.isoformat(),
            {"orders": [], "payments": [], "closings": [], "modify": {}, "cancel": [], "recount": {}, "bad": []},
        )

    def state(self) -> dict:
        return {
            "auth_calls": self.auth_calls,
            "refused_logins": self.refused_logins,
            "shops": {login: self._settings(login) for login in sorted(self.shops)},
        }

    def _settings(self, login: str) -> dict:
        shop = self._shop(login)
        return {
            "login": login,
            "shop_id": shop["shop_id"],
            "orders_per_day": shop["orders_per_day"],
            "changed_days": sorted(shop["days"]),
        }

    def error(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
        return json_response(status, {"result": "KO", "message": message, **extra}, headers)

    # -- the day

    def day_body(self, login: str, day: dt.date) -> dict:
        """The JSON day of a shop as getSales serves it (generated sales, then the day's changes)."""
        with self.lock:
            shop = self._shop(login)
            n = shop["orders_per_day"] if day <= self.today() else 0
            changes = copy.deepcopy(shop["days"].get(day.isoformat()) or {})
            changes = self._changes({"days": {}}, day) | changes
            shop_id = shop["shop_id"]
        modify, cancel = changes["modify"], set(changes["cancel"])
        orders, payments = [], []
        for i in range(1, n + 1):
            order = generated_order(login, day, i)
            order = self._modified(order, modify.get(order["id"]))
            orders.append(order)
            payments.extend(generated_payments(login, order))
        extra: dict[str, list] = {"orders": [], "payments": [], "closings": []}
        for kind in changes["bad"]:
            for key, recs in bad_records(kind, day).items():
                extra[key].extend(recs)
        for key in extra:
            extra[key].extend(changes[key])
        orders.extend(self._modified(o, modify.get(o.get("id"))) for o in extra["orders"])
        payments.extend(extra["payments"])
        for order in orders:
            if order.get("id") in cancel:
                order["status"] = "cancelled"
        cancelled = {o.get("id") for o in orders if o.get("status") == "cancelled"}
        for p in payments:
            if p.get("orderId") in cancelled:
                p["status"] = "cancelled"
        closings = [
            self._recounted(c, changes["recount"].get(c.get("id")))
            for c in self._closings(login, day, payments) + extra["closings"]
        ]
        return {
            "result": "OK",
            "shopId": shop_id,
            "date": day.isoformat(),
            "registers": REGISTERS,
            "orders": orders,
            "payments": payments,
            "closings": closings,
        }

    @staticmethod
    def _modified(order: dict, patch: dict | None) -> dict:
        if not patch:
            return order
        new = {**order, **patch}
        if "lines" in patch and "totalIncl" not in patch:
            try:
                new["totalIncl"] = _m(sum((Decimal(str(line["totalIncl"])) for line in new["lines"]), Decimal(0)))
            except Exception:  # noqa: BLE001 - a bad patch is served as given
                pass
        base = order.get("updatedAt") or f"{order.get('date')}T12:00:00"
        try:
            new["updatedAt"] = (dt.datetime.fromisoformat(base) + dt.timedelta(hours=1)).isoformat(timespec="seconds")
        except ValueError:
            pass
        return new

    @staticmethod
    def _recounted(closing: dict, counted: dict | None) -> dict:
        if not counted or not isinstance(closing.get("methods"), list):
            return closing
        methods = [
            {**m, "counted": counted[m.get("method")]} if isinstance(m, dict) and m.get("method") in counted else m
            for m in closing["methods"]
        ]
        return {**closing, "methods": methods}

    @staticmethod
    def _closings(login: str, day: dt.date, payments: list[dict]) -> list[dict]:
        out = []
        for reg in REGISTERS:
            expected: dict[str, Decimal] = {"cash": Decimal("0.00")}
            for p in payments:
                if p.get("registerId") != reg["id"] or p.get("status") != "validated":
                    continue
                try:
                    amount = Decimal(str(p["amount"]))
                except Exception:  # noqa: BLE001 - a malformed injected amount counts for nothing
                    continue
                expected[p["method"]] = expected.get(p["method"], Decimal(0)) + amount
            if not any(expected.values()):
                continue  # a register that sold nothing is not closed
            counted = dict(expected)
            rng = _rng(login, day.isoformat(), "closing", reg["id"])
            if rng.random() < 0.35:
                diff = Decimal(rng.choice([-200, -50, -20, -10, -5, -1, 1, 5, 10, 100])) / 100
                counted["cash"] = expected["cash"] + diff
            out.append(
                {
                    "id": f"Z-{reg['id']}-{day:%Y%m%d}",
                    "registerId": reg["id"],
                    "date": day.isoformat(),
                    "methods": [
                        {"method": m, "expected": _m(expected[m]), "counted": _m(counted[m])} for m in sorted(expected)
                    ],
                }
            )
        return out

    # -- the API

    def api(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if path == "/workers/getAuthToken.php":
            if req.method != "POST":
                return self.error(405, "use POST")
            return self._auth(req)
        if path == "/workers/getSales.php":
            if req.method != "GET":
                return self.error(405, "use GET")
            return self._sales(req)
        return self.error(404, f"no such endpoint: {req.path}")

    def _auth(self, req: Request) -> Response:
        ctype = (req.headers.get("Content-Type") or "").lower()
        if "application/json" in ctype:
            body = req.json()
            if not isinstance(body, dict):
                raise BadRequest("body must be a JSON object {login, password}")
            login, password = body.get("login"), body.get("password")
        else:
            form = parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True)
            login, password = (form.get("login") or [None])[0], (form.get("password") or [None])[0]
        with self.lock:
            self.auth_calls += 1
            if not isinstance(login, str) or not login or not isinstance(password, str):
                self.refused_logins += 1
                return json_response(200, {"result": "KO", "message": "Invalid login or password"})
            if not secrets.compare_digest(password.encode(), f"pw-{login}".encode()):
                self.refused_logins += 1
                return json_response(200, {"result": "KO", "message": "Invalid login or password"})
            shop = self._shop(login)
            if shop["key"] is None:
                shop["key"] = secrets.token_hex(16)
                self.keys[shop["key"]] = login
            return json_response(200, {"result": "OK", "APIKEY": shop["key"], "SHOPID": shop["shop_id"]})

    def _sales(self, req: Request) -> Response:
        unknown = sorted(set(req.query) - _SALES_PARAMS)
        if unknown:
            raise BadRequest(f"unknown parameter(s) {unknown}; allowed: {sorted(_SALES_PARAMS)}")
        for name in ("idboutique", "key", "formatExport"):
            if not req.arg(name):
                raise BadRequest(f"parameter '{name}' is required")
        fmt = req.arg("formatExport")
        if fmt != "json":
            raise BadRequest(
                f"formatExport {fmt!r}: this stand-in serves 'json' only (Std/PDF/XLS/CSV/frafec/saft not)"
            )
        with self.lock:
            login = self.keys.get(req.arg("key") or "")
            shop = self.shops.get(login) if login else None
        if shop is None or shop["shop_id"] != req.arg("idboutique"):
            return json_response(200, {"result": "KO", "message": "Invalid key"})
        parts = [req.arg(p) for p in ("d", "m", "y")]
        if all(p is None for p in parts):
            day = self.today() - dt.timedelta(days=1)
        elif any(p is None or not re.fullmatch(r"\d{1,4}", p) for p in parts):
            raise BadRequest("parameters 'd', 'm' and 'y' go together, as numbers (or none: the previous day)")
        else:
            try:
                day = dt.date(int(parts[2]), int(parts[1]), int(parts[0]))
            except ValueError:
                raise BadRequest(f"d={parts[0]} m={parts[1]} y={parts[2]} is not a date") from None
        return day_response(200, self.day_body(login, day))

    # -- control

    def control_extra(self, req: Request, sub: str) -> Response | None:
        if not sub.startswith("shops/"):
            return None
        rest = sub[len("shops/") :]
        login, _, tail = rest.partition("/")
        login = unquote(login)
        if not login:
            raise BadRequest("a shop login is required: /_sandbox/shops/{login}")
        if tail:
            m = re.fullmatch(r"day/(.+)", tail)
            if not m or req.method != "GET":
                return self.error(404, f"unknown control endpoint {req.path}")
            return day_response(200, self.day_body(login, parse_date(m.group(1), "day")))
        if req.method == "GET":
            with self.lock:
                return json_response(200, self._settings(login))
        if req.method != "POST":
            return self.error(405, "use GET or POST")
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        unknown = sorted(set(body) - _DAY_KEYS - {"date", "orders_per_day"})
        if unknown:
            raise BadRequest(f"unknown key(s) {unknown}; allowed: {sorted(_DAY_KEYS | {'date', 'orders_per_day'})}")
        volume = body.get("orders_per_day")
        if "orders_per_day" in body and (
            isinstance(volume, bool) or not isinstance(volume, int) or not 0 <= volume <= MAX_ORDERS_PER_DAY
        ):
            raise BadRequest(f"'orders_per_day' must be an integer between 0 and {MAX_ORDERS_PER_DAY}")
        day_keys = _DAY_KEYS & set(body)
        day = parse_date(body.get("date"), "date") if day_keys or "date" in body else None
        self._check_day_changes(body)
        with self.lock:
            shop = self._shop(login)
            if volume is not None:
                shop["orders_per_day"] = volume
            if day is not None:
                ch = self._changes(shop, day)
                ch["orders"].extend(_plain(body.get("add_orders", [])))
                ch["payments"].extend(_plain(body.get("add_payments", [])))
                ch["closings"].extend(_plain(body.get("add_closings", [])))
                for oid, patch in _plain(body.get("modify_orders", {})).items():
                    ch["modify"][oid] = {**ch["modify"].get(oid, {}), **patch}
                ch["cancel"].extend(body.get("cancel_orders", []))
                for cid, counted in _plain(body.get("recount_closings", {})).items():
                    ch["recount"][cid] = {**ch["recount"].get(cid, {}), **counted}
                ch["bad"].extend(body.get("bad_records", []))
            return json_response(200, self._settings(login))

    @staticmethod
    def _check_day_changes(body: dict) -> None:
        for key in ("add_orders", "add_payments", "add_closings"):
            if key in body and (not isinstance(body[key], list) or not all(isinstance(r, dict) for r in body[key])):
                raise BadRequest(f"'{key}' must be a list of objects")
        mods = body.get("modify_orders", {})
        if not isinstance(mods, dict) or not all(isinstance(v, dict) for v in mods.values()):
            raise BadRequest("'modify_orders' must be an object {order id: {field: value}}")
        recount = body.get("recount_closings", {})
        if not isinstance(recount, dict) or not all(
            isinstance(v, dict) and all(isinstance(a, str) for a in v.values()) for v in recount.values()
        ):
            raise BadRequest("'recount_closings' must be an object {closing id: {method: counted amount string}}")
        cancel = body.get("cancel_orders", [])
        if not isinstance(cancel, list) or not all(isinstance(c, str) for c in cancel):
            raise BadRequest("'cancel_orders' must be a list of order ids")
        bad = body.get("bad_records", [])
        if not isinstance(bad, list) or any(k not in BAD_KINDS for k in bad):
            raise BadRequest(f"'bad_records' must be a list of: {', '.join(BAD_KINDS)}")


def _plain(value: Any) -> Any:
    """A control body's values with JSON numbers kept as they were sent (Decimal → int or Decimal)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
