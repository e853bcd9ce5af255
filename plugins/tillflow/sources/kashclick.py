"""Kash.click POS: orders, payments and till closings of a shop's day, for the ledger flow (→ accounting).

What Kash.click documents (help pages "API" and "Authentication") and this client relies on:

* ``POST /workers/getAuthToken.php`` (form fields ``login``, ``password``) →
  ``{"result": "OK", "APIKEY": "<token>", "SHOPID": "<shop account id>"}``. Any other answer (the failure
  body is not documented; the stand-in answers ``{"result": "KO", "message": ...}``) is a refused login:
  :class:`~tillflow.errors.AuthError` after that one call, never retried. The key is the account's token;
  it is cached per client (one login per client) and masked in every message.
* ``GET /workers/getSales.php?idboutique=<SHOPID>&key=<APIKEY>&d=DD&m=MM&y=YYYY&formatExport=json``: one
  day's sales. ``formatExport=json`` and the JSON shape are **not documented** (documented exports are
  Std/PDF/XLS/CSV/frafec/saft): the shape is tillflow's assumption, served by ``include/sandbox/kashclick.py``
  whose docstring describes it. A ``{"result": "KO"}`` answer there is a refused key → AuthError.

``fetch("ledger", window)`` asks one day per call and lands each answer as one :class:`RawPage` whose
request records the path and the date (never the key or the shop id). ``parse`` needs neither network nor
credentials, so a landed page replays. It yields :class:`SaleOrder`, :class:`SalePayment`,
:class:`TillClosing` and :class:`DeletedEvent` (a cancelled order or payment: the caller deletes or
reverses what it posted for that event key) plus :class:`Reject` s with a reason naming the record and the
field (lines that do not add up to the total, a malformed amount, a missing field, an order whose customer
has no name or no e-mail address). Unknown VAT rates, payment methods or registers parse: they are the
chart's business (:class:`tillflow.posting.PostingError`).

Event keys: ``order:<id>``, ``payment:<id>``, ``closing:<id>`` (the same as :mod:`tillflow.posting`).

``reference_data()``: Kash.click documents no endpoint listing payment methods, registers or VAT rates
(its pages mention downloading "items, customers, departments" without documenting it), so they are
derived from the sales of the last :attr:`KashclickClient.reference_days` days (registers also from the
day's ``registers`` list).

Connection: ``host`` = base URL (``https://kash.click``), ``login`` = the account's login (e-mail),
``password`` = its password; optional ``extra`` keys of :meth:`tillflow.http.HttpPolicy.from_extra`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

import requests
from pydantic import BaseModel, ConfigDict, ValidationError

from tillflow.errors import AuthError, ConfigError, RemoteError
from tillflow.http import HttpClient, HttpPolicy, url_from_host
from tillflow.records import Customer, OrderLine, RawPage, RefItem, Reject, SaleOrder, SalePayment, TillClosing
from tillflow.records import jsonable as _jsonable
from tillflow.sources.base import ConnectionInfo, SourceClient, Window

AUTH_PATH = "/workers/getAuthToken.php"
SALES_PATH = "/workers/getSales.php"
CENT = Decimal("0.01")


class DeletedEvent(BaseModel):
    """A source event that no longer exists (a cancelled order or payment): undo what was posted for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_key: str


Parsed = SaleOrder | SalePayment | TillClosing | DeletedEvent


class _Bad(ValueError):
    """A field problem; the message names the field."""


class KashclickClient(SourceClient):
    """Kash.click POS. Connection: host = base URL, login = account login, password = account password."""

    name: ClassVar[str] = "kashclick"
    mapping_kind: ClassVar[str] = "payment_method"
    conn_type: ClassVar[str] = "kashclick"
    hook_name: ClassVar[str] = "Kash.click POS"
    flows: ClassVar[tuple[str, ...]] = ("ledger",)
    max_days_per_request: ClassVar[int] = 1
    #: how many past days ``reference_data`` reads to find payment methods, registers and VAT rates
    reference_days: int = 7

    def __init__(
        self,
        *,
        base_url: str,
        login: str,
        password: str,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        today: Callable[[], date] = date.today,
    ):
        self.login = login
        self._password = password
        self._key: str | None = None
        self._shop_id: str | None = None
        self._lock = threading.Lock()
        self.logins = 0
        self.today = today
        session = requests.Session()
        session.headers.update({"Accept": "application/json"})
        self.http = HttpClient(
            base_url,
            policy=policy,
            secrets=(password,),
            name=self.name,
            rate_key=f"kashclick:{login}",
            session=session,
            sleep=sleep,
        )

    @classmethod
    def from_connection(
        cls, conn: ConnectionInfo, *, policy: HttpPolicy | None = None, sleep: Callable[[float], None] | None = None
    ) -> KashclickClient:
        """:raises ConfigError: naming the missing field (``host``, ``login``, ``password``)."""
        for attr, label in (("host", "base URL"), ("login", "login"), ("password", "password")):
            if not getattr(conn, attr):
                raise ConfigError(f"connection {conn.conn_id}: {attr} (Kash.click {label}) is required")
        return cls(
            base_url=url_from_host(conn.host, conn.port),
            login=conn.login,
            password=conn.password,
            policy=policy or HttpPolicy.from_extra(conn.extra),
            sleep=sleep,
        )

    # -- auth

    def _credentials(self) -> tuple[str, str]:
        """(SHOPID, APIKEY), asking getAuthToken once per client."""
        with self._lock:
            if self._key is not None and self._shop_id is not None:
                return self._shop_id, self._key
            response = self.http.request(
                "POST",
                AUTH_PATH,
                data={"login": self.login, "password": self._password},
                parse_json=True,
                idempotent=True,
            )
            body = json.loads(response.content)
            if not isinstance(body, dict) or body.get("result") != "OK":
                message = body.get("message") if isinstance(body, dict) else None
                raise AuthError(
                    f"{self.name}: login refused for {self.login}"
                    + (f" ({self.http.mask(str(message))})" if message else "")
                    + ": wrong login or password (the ones the shop uses to log into Kash.click)"
                )
            key, shop_id = body.get("APIKEY"), body.get("SHOPID")
            if not isinstance(key, str) or not key or shop_id in (None, ""):
                raise RemoteError(f"{self.name}: POST {AUTH_PATH} answered OK without APIKEY/SHOPID")
            self.http.add_secret(key)
            self.logins += 1
            self._key, self._shop_id = key, str(shop_id)
            return self._shop_id, self._key

    def _day(self, day: date) -> requests.Response:
        shop_id, key = self._credentials()
        params = {
            "idboutique": shop_id,
            "key": key,
            "d": f"{day.day:02d}",
            "m": f"{day.month:02d}",
            "y": f"{day.year:04d}",
            "formatExport": "json",
        }
        response = self.http.request("GET", SALES_PATH, params=params, parse_json=True)
        body = json.loads(response.content, parse_float=Decimal)
        if isinstance(body, dict) and body.get("result") == "KO":
            raise AuthError(
                f"{self.name}: GET {SALES_PATH} refused the key of {self.login} for {day.isoformat()}: "
                f"{self.http.mask(str(body.get('message') or 'KO'))}"
            )
        return response

    # -- reference data

    def test_connection(self) -> list[RefItem]:
        """Log in and list the payment methods of recent sales (what gets mapped to accounts)."""
        return self.reference_data()[self.mapping_kind]

    def reference_data(self) -> dict[str, list[RefItem]]:
        """Payment methods, registers and VAT rates seen in the last :attr:`reference_days` days' sales."""
        self._credentials()
        end = self.today() - timedelta(days=1)
        window = Window(end - timedelta(days=self.reference_days - 1), end)
        methods: dict[str, int] = {}
        registers: dict[str, str] = {}
        rates: set[str] = set()
        for page in self.fetch("ledger", window):
            body = json.loads(page.body, parse_float=Decimal)
            for reg in body.get("registers") or []:
                if isinstance(reg, dict) and reg.get("id"):
                    registers[str(reg["id"])] = str(reg.get("name") or reg["id"])
            records, _rejects = self.parse(page)
            for rec in records:
                if isinstance(rec, SalePayment):
                    methods[rec.method] = methods.get(rec.method, 0) + 1
                    registers.setdefault(rec.register_id, rec.register_id)
                elif isinstance(rec, SaleOrder):
                    registers.setdefault(rec.register_id, rec.register_id)
                    rates.update(_rate_text(line.vat_rate) for line in rec.lines)
                elif isinstance(rec, TillClosing):
                    registers.setdefault(rec.register_id, rec.register_id)
                    for method in set(rec.expected) | set(rec.counted):
                        methods.setdefault(method, 0)
        return {
            "payment_method": [RefItem(key=m, name=m, extra={"payments": n}) for m, n in sorted(methods.items())],
            "register": [RefItem(key=k, name=v) for k, v in sorted(registers.items())],
            "vat_rate": [RefItem(key=r, name=f"{r} %") for r in sorted(rates, key=Decimal)],
        }

    # -- ledger

    def fetch(self, flow: str, window: Window) -> list[RawPage]:
        """One getSales call per day of ``window``, each landed as it came."""
        if flow not in self.flows:
            raise ValueError(f"{self.name} has no flow {flow!r}; known: {', '.join(self.flows)}")
        pages = []
        day = window.start
        while day <= window.end:
            response = self._day(day)
            pages.append(
                RawPage(
                    flow=flow,
                    request={"method": "GET", "path": SALES_PATH, "date": day.isoformat(), "format": "json"},
                    body=response.content,
                    content_type=response.headers.get("Content-Type", "application/json"),
                )
            )
            day += timedelta(days=1)
        return pages

    def parse(self, page: RawPage) -> tuple[list[Parsed], list[Reject]]:  # type: ignore[override]
        """Records and rejects of one landed day; a bad record is a Reject, the rest still parse."""
        page_ref = str(page.request.get("date") or "?")
        try:
            body = json.loads(page.body, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            payload = {"request": page.request, "body_start": page.body[:2000].decode("utf-8", "replace")}
            return [], [Reject(reason="body is not valid JSON", payload=payload, ref=page_ref)]
        if not isinstance(body, dict) or body.get("result") != "OK":
            payload = {"request": page.request, "body": _jsonable(body)}
            return [], [Reject(reason="body is not an OK sales day (result != 'OK')", payload=payload, ref=page_ref)]
        try:
            page_day = date.fromisoformat(str(body.get("date") or page.request.get("date")))
        except ValueError:
            page_day = None
        records: list[Parsed] = []
        rejects: list[Reject] = []
        customers: dict[str, Customer | None] = {}
        for key in ("orders", "payments", "closings"):
            rows = body.get(key, [])
            if not isinstance(rows, list):
                rejects.append(Reject(reason=f"body field '{key}' is not a list", payload={}, ref=page_ref))
                continue
            for row in rows:
                kind = key[:-1]
                ref = f"{kind} {row.get('id')}" if isinstance(row, dict) else f"{kind} ?"
                if not isinstance(row, dict):
                    rejects.append(Reject(reason=f"{ref}: not an object", payload={"row": _jsonable(row)}, ref=ref))
                    continue
                try:
                    rec = getattr(self, f"_{kind}")(row, page_day, customers)
                except (_Bad, ValidationError) as exc:
                    reason = str(exc) if isinstance(exc, _Bad) else _pydantic_reason(exc)
                    rejects.append(Reject(reason=f"{ref}: {reason}", payload=_jsonable(row), ref=ref))
                    continue
                records.append(rec)
        return records, rejects

    # -- one record each

    @staticmethod
    def _order(row: dict, page_day: date | None, customers: dict[str, Customer | None]) -> Parsed:
        _require(row, "id", "status")
        oid = str(row["id"])
        if row["status"] == "cancelled":
            customers[oid] = None
            return DeletedEvent(event_key=f"order:{oid}")
        if row["status"] != "validated":
            raise _Bad(f"field status {row['status']!r} is neither 'validated' nor 'cancelled'")
        _require(row, "registerId", "date", "lines", "totalIncl")
        if not isinstance(row["lines"], list) or not row["lines"]:
            raise _Bad("field lines is not a non-empty list")
        lines = []
        for i, raw in enumerate(row["lines"], start=1):
            if not isinstance(raw, dict):
                raise _Bad(f"lines[{i}] is not an object")
            _require(raw, "label", "quantity", "unitPriceIncl", "vatRate", "totalIncl", where=f"lines[{i}].")
            quantity = _decimal(raw["quantity"], f"lines[{i}].quantity")
            unit = _amount(raw["unitPriceIncl"], f"lines[{i}].unitPriceIncl")
            total = _amount(raw["totalIncl"], f"lines[{i}].totalIncl")
            rate = _decimal(raw["vatRate"], f"lines[{i}].vatRate", number=True)
            if rate < 0 or rate >= 100:
                raise _Bad(f"field lines[{i}].vatRate {rate} is not a percentage")
            if (quantity * unit).quantize(CENT, rounding=ROUND_HALF_UP) != total:
                raise _Bad(
                    f"field lines[{i}].totalIncl {total} ≠ quantity {quantity} × unitPriceIncl {unit}"
                    f" ({(quantity * unit).quantize(CENT, rounding=ROUND_HALF_UP)})"
                )
            lines.append(
                OrderLine(
                    label=str(raw["label"]), quantity=quantity, unit_price_incl=unit, vat_rate=rate, total_incl=total
                )
            )
        total = _amount(row["totalIncl"], "totalIncl")
        lines_total = sum((line.total_incl for line in lines), Decimal("0.00"))
        if lines_total != total:
            raise _Bad(f"lines add up to {lines_total}, field totalIncl says {total}")
        customer = _customer(row.get("customer"))
        customers[oid] = customer
        return SaleOrder(
            order_id=oid,
            register_id=str(row["registerId"]),
            business_date=_date(row["date"], "date"),
            customer=customer,
            lines=lines,
            total_incl=total,
        )

    @staticmethod
    def _payment(row: dict, page_day: date | None, customers: dict[str, Customer | None]) -> Parsed:
        _require(row, "id", "status")
        pid = str(row["id"])
        if row["status"] == "cancelled":
            return DeletedEvent(event_key=f"payment:{pid}")
        if row["status"] != "validated":
            raise _Bad(f"field status {row['status']!r} is neither 'validated' nor 'cancelled'")
        _require(row, "orderId", "registerId", "method", "amount")
        day = _date(row["date"], "date") if row.get("date") not in (None, "") else page_day
        if day is None:
            raise _Bad("missing field(s): date")
        return SalePayment(
            payment_id=pid,
            order_id=str(row["orderId"]),
            register_id=str(row["registerId"]),
            business_date=day,
            method=str(row["method"]),
            amount=_amount(row["amount"], "amount"),
            customer=customers.get(str(row["orderId"])),
        )

    @staticmethod
    def _closing(row: dict, page_day: date | None, customers: dict[str, Customer | None]) -> Parsed:
        _require(row, "id", "registerId", "date", "methods")
        if not isinstance(row["methods"], list):
            raise _Bad("field methods is not a list")
        expected: dict[str, Decimal] = {}
        counted: dict[str, Decimal] = {}
        for i, m in enumerate(row["methods"], start=1):
            if not isinstance(m, dict):
                raise _Bad(f"methods[{i}] is not an object")
            _require(m, "method", "expected", "counted", where=f"methods[{i}].")
            method = str(m["method"])
            if method in expected:
                raise _Bad(f"field methods[{i}].method {method!r} appears twice")
            expected[method] = _amount(m["expected"], f"methods[{i}].expected")
            counted[method] = _amount(m["counted"], f"methods[{i}].counted")
        return TillClosing(
            closing_id=str(row["id"]),
            register_id=str(row["registerId"]),
            business_date=_date(row["date"], "date"),
            expected=expected,
            counted=counted,
        )


# ------------------------------------------------------------------------------------------- helpers


def _require(row: dict, *fields: str, where: str = "") -> None:
    missing = [f"{where}{f}" for f in fields if row.get(f) in (None, "")]
    if missing:
        raise _Bad(f"missing field(s): {', '.join(missing)}")


def _decimal(value: Any, field: str, *, number: bool = False) -> Decimal:
    if isinstance(value, bool) or (number and isinstance(value, str)):
        raise _Bad(f"field {field} is not a number: {value!r}")
    if isinstance(value, int | Decimal):
        d = Decimal(value)
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise _Bad(f"field {field} is not a decimal number: {value!r}") from None
    else:
        raise _Bad(f"field {field} is not a number: {value!r}")
    if not d.is_finite():
        raise _Bad(f"field {field} is not a finite number: {value!r}")
    return d


def _amount(value: Any, field: str) -> Decimal:
    """A money amount: a decimal string (or number) with at most 2 decimals."""
    try:
        d = _decimal(value, field)
    except _Bad:
        raise _Bad(f"field {field} is not a decimal amount: {value!r}") from None
    if d != d.quantize(CENT, rounding=ROUND_HALF_UP):
        raise _Bad(f"field {field} has more than 2 decimals: {value!r}")
    return d.quantize(CENT)


def _date(value: Any, field: str) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _Bad(f"field {field} is not a date YYYY-MM-DD: {value!r}")


def _customer(raw: Any) -> Customer | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _Bad(f"field customer is not an object: {raw!r}")
    _require(raw, "id", "name", "email", where="customer.")
    email = str(raw["email"]).strip()
    if "@" not in email:
        raise _Bad(f"field customer.email is not an e-mail address: {raw['email']!r}")
    return Customer(external_reference=str(raw["id"]), name=str(raw["name"]), email=email)


def _rate_text(rate: Decimal) -> str:
    text = format(rate.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _pydantic_reason(exc: ValidationError) -> str:
    return "; ".join(f"field {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
