"""Stand-in HTTP servers for the Ajour (POS) and Planday (workforce) APIs (Kassatellen and Eitje: ``hourly``).

Implements ``include/sandbox/CONTRACT.md``. Standard library only and nothing from ``tillflow``: the
sandbox must not share code with the clients it exercises.

    from sandbox.server import Sandbox
    with Sandbox(ajour_port=0, planday_port=0) as sb:
        print(sb.ajour_url, sb.planday_url)
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import hashlib
import json
import logging
import math
import random
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, Self
from urllib.parse import parse_qs, unquote, urlsplit

CONTROL_PREFIX = "/_sandbox/"
LOG_SIZE = 10_000
MAX_LATENCY_MS = 60_000
CENT = Decimal("0.01")
VAT_FACTOR = Decimal("1.25")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_AMOUNT_RE = re.compile(r"^-?\d+(\.\d+)?$")
_MALFORMED_BODY = b'{"data": [{"id": 1001, "name": "Restaur'  # truncated: not valid JSON
MALFORMED_AMOUNT = "12,34,5"
_log = logging.getLogger("sandbox")


class BadRequest(Exception):
    """Raised by parsers; becomes a 400 with the message."""


# --------------------------------------------------------------------------------------------- helpers


class Request:
    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, method: str, path: str, query: dict[str, list[str]], headers, body: bytes):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self):
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body, parse_float=Decimal, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def json_response(status: int, obj, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"Content-Type": "application/json; charset=utf-8"}
    hdrs.update(headers or {})
    return Response(status, json.dumps(obj, default=_json_default).encode(), hdrs)


class Number:
    """A money value the vendor sends as a JSON number (exact digits, never through float)."""

    __slots__ = ("value",)

    def __init__(self, value: Decimal) -> None:
        self.value = value.quantize(CENT, rounding=ROUND_HALF_UP)


def json_numbers_response(status: int, obj, headers: dict[str, str] | None = None) -> Response:
    """Like :func:`json_response`, with :class:`Number` values written as JSON numbers."""
    marks: dict[str, str] = {}

    def default(o):
        if isinstance(o, Number):
            key = f"\x00num{len(marks)}\x00"
            marks[key] = format(o.value, "f")
            return key
        return _json_default(o)

    text = json.dumps(obj, default=default)
    for key, digits in marks.items():
        text = text.replace(json.dumps(key), digits)
    hdrs = {"Content-Type": "application/json; charset=utf-8"}
    hdrs.update(headers or {})
    return Response(status, text.encode(), hdrs)


def _json_default(obj):
    if isinstance(obj, Decimal):
        return money(obj)
    if isinstance(obj, dt.date):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def parse_date(value, name: str) -> dt.date:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise BadRequest(f"parameter '{name}' must be a date YYYY-MM-DD, got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"parameter '{name}' is not a valid date: {value!r}") from None


def parse_amount(value, name: str) -> Decimal:
    """A JSON number (int or Decimal via parse_float) or a decimal string → Decimal quantized to cents.
    (A vendor whose DTO types the field as a number checks the type first: see ``PlandayApp``.)"""
    if isinstance(value, bool):
        raise BadRequest(f"'{name}' must be a number or a decimal string")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str) and _AMOUNT_RE.match(value.strip()):
        amount = Decimal(value.strip())
    else:
        raise BadRequest(f"'{name}' must be a number or a decimal string, got {value!r}")
    if not amount.is_finite():
        raise BadRequest(f"'{name}' must be finite")
    try:
        return amount.quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise BadRequest(f"'{name}' is out of range") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def json_type(value) -> str:
    """The JSON type name of a parsed value (for error messages that name what was sent)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def shown(value) -> str:
    """A short JSON rendering of a value sent to the stand-in, for error messages."""
    text = format(value, "f") if isinstance(value, Decimal) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _flat_query(query: dict[str, list[str]]) -> dict[str, str | list[str]]:
    return {k: (v[0] if len(v) == 1 else list(v)) for k, v in query.items()}


# --------------------------------------------------------------------------------------------- faults


class FaultInjector:
    """Seeded fault decisions. One RNG per server, guarded by a lock, so a seed gives a repeatable sequence.

    ``reject`` rules (a vendor refusing chosen rows with its own status and message) are parsed by the
    stand-in (``parse_reject``), which knows what identifies a row; :meth:`rejection` matches them."""

    RATE_KEYS = ("rate_429", "rate_5xx", "rate_timeout", "rate_malformed")
    KEYS = frozenset(RATE_KEYS + ("timeout_seconds", "retry_after", "seed", "paths", "reject"))

    def __init__(self, parse_reject: Callable[[object], list[dict]] | None = None) -> None:
        self.lock = threading.Lock()
        self.parse_reject = parse_reject or _no_reject_rules
        self.configure({})

    def configure(self, cfg) -> dict:
        if not isinstance(cfg, dict):
            raise BadRequest("faults must be a JSON object")
        unknown = sorted(set(cfg) - self.KEYS)
        if unknown:
            raise BadRequest(f"unknown fault keys: {unknown}; allowed: {sorted(self.KEYS)}")
        new: dict = {}
        for key in self.RATE_KEYS:
            rate = cfg.get(key, 0)
            if isinstance(rate, bool) or not isinstance(rate, (int, float, Decimal)) or not 0 <= rate <= 1:
                raise BadRequest(f"'{key}' must be a number between 0 and 1")
            new[key] = float(rate)
        if new["rate_429"] + new["rate_5xx"] + new["rate_timeout"] > 1 + 1e-9:
            raise BadRequest("rate_429 + rate_5xx + rate_timeout must not exceed 1")
        timeout = cfg.get("timeout_seconds", 3)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float, Decimal)) or not 0 <= timeout <= 600:
            raise BadRequest("'timeout_seconds' must be a number between 0 and 600")
        new["timeout_seconds"] = float(timeout)
        retry_after = cfg.get("retry_after", "1")
        if isinstance(retry_after, bool) or not isinstance(retry_after, (str, int)) or str(retry_after) == "":
            raise BadRequest("'retry_after' must be seconds or an HTTP date")
        new["retry_after"] = str(retry_after)
        seed = cfg.get("seed", 0)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str))):
            raise BadRequest("'seed' must be an integer or a string")
        new["seed"] = seed
        paths = cfg.get("paths")
        if paths is not None and (not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)):
            raise BadRequest("'paths' must be a list of path prefixes")
        new["paths"] = paths
        new["reject"] = self.parse_reject(cfg.get("reject", []))
        with self.lock:
            self.cfg = new
            self.rng = random.Random(seed)
        return dict(new)

    def snapshot(self) -> dict:
        with self.lock:
            return {**self.cfg, "reject": [dict(rule) for rule in self.cfg["reject"]]}

    def rejection(self, row: dict) -> tuple[int, str] | None:
        """``(status, message)`` of the first reject rule whose row fields all equal ``row``'s, or None."""
        with self.lock:
            rules = self.cfg["reject"]
        for rule in rules:
            if all(row.get(k) == v for k, v in rule.items() if k not in ("status", "message")):
                return rule["status"], rule["message"]
        return None

    def applies(self, path: str) -> bool:
        paths = self.cfg["paths"]
        return paths is None or any(path.startswith(p) for p in paths)

    def decide(self, path: str, whole_body_malformed: bool = True):
        """Return None or one of ("429",), ("5xx", code), ("timeout", seconds), ("malformed",)."""
        with self.lock:
            cfg = self.cfg
            if not self.applies(path):
                return None
            r429, r5xx, rto = cfg["rate_429"], cfg["rate_5xx"], cfg["rate_timeout"]
            if r429 or r5xx or rto:
                u = self.rng.random()
                if u < r429:
                    return ("429",)
                if u < r429 + r5xx:
                    return ("5xx", self.rng.choice((500, 502, 503)))
                if u < r429 + r5xx + rto:
                    return ("timeout", cfg["timeout_seconds"])
            if whole_body_malformed and cfg["rate_malformed"] and self.rng.random() < cfg["rate_malformed"]:
                return ("malformed",)
            return None

    def malformed_row(self, path: str) -> bool:
        with self.lock:
            rate = self.cfg["rate_malformed"]
            return bool(rate) and self.applies(path) and self.rng.random() < rate


def _no_reject_rules(rows) -> list[dict]:
    if rows in (None, []):
        return []
    raise BadRequest("'reject' rules are not supported by this stand-in")


# --------------------------------------------------------------------------------------------- base app


class VendorApp:
    """Common parts: control endpoints, fault injection, request log. Subclasses implement ``api``."""

    name = "vendor"

    def __init__(self, latency_ms: float = 0) -> None:
        self.lock = threading.RLock()
        if (
            isinstance(latency_ms, bool)
            or not isinstance(latency_ms, int | float)
            or not 0 <= latency_ms <= MAX_LATENCY_MS
        ):
            raise ValueError(f"latency_ms must be a number between 0 and {MAX_LATENCY_MS}, got {latency_ms!r}")
        self.faults = FaultInjector(self.parse_reject)
        self.default_latency_ms = float(latency_ms)
        self.latency_ms = float(latency_ms)
        self.lenient_types = False  # a benchmark of old client code only: accept decimal strings for numbers
        self.log: collections.deque = collections.deque(maxlen=LOG_SIZE)
        self.stopping = threading.Event()
        self.reset_state()

    # -- to override
    def reset_state(self) -> None:
        pass

    def state(self) -> dict:
        return {}

    def api(self, req: Request) -> Response:
        raise NotImplementedError

    def control_extra(self, req: Request, sub: str) -> Response | None:
        return None

    def parse_reject(self, rows) -> list[dict]:
        """Validate ``faults.reject`` rules; a stand-in without rows to refuse accepts none."""
        return _no_reject_rules(rows)

    def error(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
        return json_response(status, {"message": message, **extra}, headers)

    def row_level_malformed(self, path: str) -> bool:
        return False

    def fault_headers(self) -> dict[str, str]:
        return {}

    # -- dispatch
    def dispatch(self, req: Request) -> Response:
        if req.path.startswith(CONTROL_PREFIX):
            try:
                return self.control(req)
            except BadRequest as exc:
                return self.error(400, str(exc))
        if self.latency_ms > 0:  # the vendor's answer time (handler threads sleep side by side)
            self.stopping.wait(self.latency_ms / 1000)
        resp = self._faulted(req)
        if resp is None:
            try:
                resp = self.api(req)
            except BadRequest as exc:
                resp = self.error(400, str(exc))
        entry = {
            "method": req.method,
            "path": req.path,
            "query": _flat_query(req.query),
            "status": resp.status,
            "ts": round(time.time(), 6),
        }
        with self.lock:
            self.log.append(entry)
        return resp

    def _faulted(self, req: Request) -> Response | None:
        fault = self.faults.decide(req.path, whole_body_malformed=not self.row_level_malformed(req.path))
        if fault is None:
            return None
        kind = fault[0]
        if kind == "429":
            headers = {"Retry-After": self.faults.snapshot()["retry_after"], **self.fault_headers()}
            return self.error(429, "Too Many Requests (injected)", headers=headers)
        if kind == "5xx":
            return self.error(fault[1], f"Injected server error {fault[1]}")
        if kind == "timeout":
            self.stopping.wait(fault[1])
            return self.error(504, "Gateway Timeout (injected)")
        return Response(200, _MALFORMED_BODY, {"Content-Type": "application/json; charset=utf-8"})

    def control(self, req: Request) -> Response:
        sub = req.path[len(CONTROL_PREFIX) :].rstrip("/")
        if sub == "reset":
            if req.method != "POST":
                return self.error(405, "use POST")
            self.reset()
            return json_response(200, {"ok": True})
        if sub == "faults":
            if req.method == "GET":
                return json_response(200, {"faults": self.faults.snapshot()})
            if req.method != "POST":
                return self.error(405, "use GET or POST")
            return json_response(200, {"faults": self.faults.configure(req.json())})
        if sub == "config":
            if req.method == "GET":
                return json_response(200, {"latency_ms": self.latency_ms, "lenient_types": self.lenient_types})
            if req.method != "POST":
                return self.error(405, "use GET or POST")
            body = req.json()
            allowed = {"latency_ms", "lenient_types"}
            unknown = sorted(set(body) - allowed) if isinstance(body, dict) else ["(not an object)"]
            if unknown:
                raise BadRequest(f"unknown config keys: {unknown}; allowed: {sorted(allowed)}")
            lenient = body.get("lenient_types", self.lenient_types)
            if not isinstance(lenient, bool):
                raise BadRequest("'lenient_types' must be true or false")
            latency = body.get("latency_ms", self.latency_ms)
            if (
                isinstance(latency, bool)
                or not isinstance(latency, int | float | Decimal)
                or not 0 <= latency <= MAX_LATENCY_MS
            ):
                raise BadRequest(f"'latency_ms' must be a number between 0 and {MAX_LATENCY_MS}")
            self.lenient_types = lenient  # both checked first: a refused config changes nothing
            self.latency_ms = float(latency)
            return json_response(200, {"latency_ms": self.latency_ms, "lenient_types": self.lenient_types})
        if sub == "requests":
            if req.method != "GET":
                return self.error(405, "use GET")
            prefix = req.arg("path")
            with self.lock:
                entries = list(self.log)
            if prefix:
                entries = [e for e in entries if e["path"].startswith(prefix)]
            return json_response(200, entries)
        if sub == "state":
            if req.method != "GET":
                return self.error(405, "use GET")
            with self.lock:
                return json_response(200, self.state())
        resp = self.control_extra(req, sub)
        return resp if resp is not None else self.error(404, f"unknown control endpoint {req.path}")

    def reset(self) -> None:
        self.faults.configure({})
        self.latency_ms = self.default_latency_ms
        self.lenient_types = False
        with self.lock:
            self.log.clear()
            self.reset_state()


# --------------------------------------------------------------------------------------------- Ajour


AJOUR_LOCATIONS = [("L1", "Restaurant"), ("L2", "Bar"), ("L3", "Terrace"), ("L4", "Takeaway")]
AJOUR_POPUP = ("L5", "Pop-up")
AJOUR_DEFAULT_ENABLED_FROM = dt.date(2026, 1, 1)
AJOUR_MAX_DAYS = 62
AJOUR_PARAMS = {"/api/v1/locations": frozenset(), "/api/v1/revenue": frozenset({"from", "to", "location"})}


def ajour_base(company: str, location: str, day: dt.date) -> tuple[Decimal, int]:
    """Deterministic (totalInclVat, receipts) for a company/location/day, before any bump."""
    digest = hashlib.sha256(f"{company}|{location}|{day.isoformat()}".encode()).hexdigest()
    cents = int(digest[:8], 16) % 500001
    receipts = 0 if cents == 0 else 1 + int(digest[8:12], 16) % 150
    return Decimal(cents) / 100, receipts


def ajour_excl(incl: Decimal) -> Decimal:
    return (incl / VAT_FACTOR).quantize(CENT, rounding=ROUND_HALF_UP)


class AjourApp(VendorApp):
    name = "ajour"

    def reset_state(self) -> None:
        self.companies: dict[str, dict] = {}

    def _company(self, company_id: str) -> dict:
        return self.companies.setdefault(company_id, {"enabled_from": AJOUR_DEFAULT_ENABLED_FROM, "bump": {}})

    def state(self) -> dict:
        return {
            "companies": {
                cid: {
                    "enabled_from": s["enabled_from"].isoformat(),
                    "bump": {loc: money(v) for loc, v in sorted(s["bump"].items())},
                }
                for cid, s in sorted(self.companies.items())
            }
        }

    ERROR_CODES: ClassVar[dict[int, str]] = {
        400: "bad_request",
        401: "invalid_credentials",
        404: "not_found",
        405: "method_not_allowed",
        429: "rate_limited",
        504: "timeout",
    }

    def error(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
        code = self.ERROR_CODES.get(status, "server_error" if status >= 500 else "error")
        return json_response(status, {"error": code, "message": message, **extra}, headers)

    def row_level_malformed(self, path: str) -> bool:
        return path.rstrip("/") == "/api/v1/revenue"

    @staticmethod
    def locations_for(company_id: str) -> list[tuple[str, str]]:
        return AJOUR_LOCATIONS + ([AJOUR_POPUP] if company_id.endswith("x") else [])

    def _authenticate(self, req: Request) -> str | None:
        company = (req.headers.get("X-Ajour-Company") or "").strip()
        database = (req.headers.get("X-Ajour-Database") or "").strip()
        auth = req.headers.get("Authorization") or ""
        if not company or not database or not auth.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        _user, sep, password = decoded.partition(":")
        if not sep or not secrets.compare_digest(password.encode(), f"pw-{company}".encode()):
            return None
        return company

    def api(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if path not in ("/api/v1/locations", "/api/v1/revenue"):
            return self.error(404, f"no such endpoint: {req.path}")
        if req.method != "GET":
            return self.error(405, "use GET")
        company = self._authenticate(req)
        if company is None:
            # Never echo anything the caller sent (the password in particular).
            return self.error(
                401,
                "Invalid credentials: check CompanyID, User, Password and Database.",
                headers={"WWW-Authenticate": 'Basic realm="Ajour"'},
            )
        with self.lock:
            self._company(company)
        allowed = AJOUR_PARAMS[path]
        unknown = sorted(set(req.query) - allowed)
        if unknown:
            raise BadRequest(
                f"unknown parameter(s) {', '.join(repr(u) for u in unknown)}; allowed: {sorted(allowed) or 'none'}"
            )
        repeated = sorted(name for name, values in req.query.items() if len(values) > 1)
        if repeated:
            raise BadRequest(f"parameter {repeated[0]!r} given {len(req.query[repeated[0]])} times")
        if path == "/api/v1/locations":
            return json_response(200, {"locations": [{"id": i, "name": n} for i, n in self.locations_for(company)]})
        return self._revenue(req, company)

    def _revenue(self, req: Request, company: str) -> Response:
        raw_from, raw_to = req.arg("from"), req.arg("to")
        if raw_from is None:
            raise BadRequest("parameter 'from' is required (YYYY-MM-DD)")
        if raw_to is None:
            raise BadRequest("parameter 'to' is required (YYYY-MM-DD)")
        start, end = parse_date(raw_from, "from"), parse_date(raw_to, "to")
        if end < start:
            raise BadRequest(f"parameter 'to' ({end}) must not be before 'from' ({start})")
        days = (end - start).days + 1
        if days > AJOUR_MAX_DAYS:
            raise BadRequest(f"parameters 'from'/'to' span {days} days; at most {AJOUR_MAX_DAYS} days per request")
        locations = [loc for loc, _ in self.locations_for(company)]
        wanted = req.arg("location")
        if wanted is not None:
            if wanted not in locations:
                raise BadRequest(f"parameter 'location': unknown location {wanted!r}")
            locations = [wanted]
        with self.lock:
            settings = self._company(company)
            enabled_from = settings["enabled_from"]
            bump = dict(settings["bump"])
        rows = []
        for offset in range(days):
            day = start + dt.timedelta(days=offset)
            if day < enabled_from:
                continue
            for loc in locations:
                if loc == "L4" and day.weekday() == 0:  # Takeaway is closed on Mondays
                    continue
                incl, receipts = ajour_base(company, loc, day)
                incl += bump.get(loc, Decimal(0))
                incl_text = money(incl)
                if self.faults.malformed_row(req.path):
                    incl_text = MALFORMED_AMOUNT
                rows.append(
                    {
                        "date": day.isoformat(),
                        "locationId": loc,
                        "totalInclVat": incl_text,
                        "totalExclVat": money(ajour_excl(incl)),
                        "receipts": receipts,
                    }
                )
        return json_response(
            200, {"companyId": company, "from": start.isoformat(), "to": end.isoformat(), "days": rows}
        )

    def control_extra(self, req: Request, sub: str) -> Response | None:
        if not sub.startswith("companies/"):
            return None
        company = unquote(sub[len("companies/") :])
        if not company or "/" in company:
            return self.error(404, "use /_sandbox/companies/{CompanyID}")
        if req.method == "GET":
            with self.lock:
                self._company(company)
                return json_response(200, {"company": self.state()["companies"][company]})
        if req.method != "POST":
            return self.error(405, "use GET or POST")
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        unknown = sorted(set(body) - {"enabled_from", "bump"})
        if unknown:
            raise BadRequest(f"unknown keys: {unknown}")
        enabled_from = None
        if body.get("enabled_from") is not None:
            enabled_from = parse_date(body["enabled_from"], "enabled_from")
        bump = body.get("bump") or {}
        if not isinstance(bump, dict):
            raise BadRequest("'bump' must be an object {locationId: amount}")
        parsed = {str(loc): parse_amount(v, f"bump.{loc}") for loc, v in bump.items()}
        with self.lock:
            settings = self._company(company)
            if "enabled_from" in body:
                settings["enabled_from"] = enabled_from or AJOUR_DEFAULT_ENABLED_FROM
            for loc, amount in parsed.items():
                if amount == 0:
                    settings["bump"].pop(loc, None)
                else:
                    settings["bump"][loc] = amount
            return json_response(200, {"company": self.state()["companies"][company]})


# --------------------------------------------------------------------------------------------- Planday


PLANDAY_DEFAULT_UNITS = [
    {"id": 1001, "name": "Restaurant", "departmentId": 1},
    {"id": 1002, "name": "Bar", "departmentId": 1},
    {"id": 1003, "name": "Takeaway", "departmentId": 1},
]
PLANDAY_BIG_UNITS = [{"id": i, "name": f"Unit {i}", "departmentId": 1 + (i - 2001) // 40} for i in range(2001, 2121)]
PLANDAY_TOKEN_TTL = 3600
#: per portal (https://openapi.planday.com/gettingstarted/rate-limiting): 10 per second, 500 per minute
PLANDAY_RATE_LIMIT = 10
PLANDAY_RATE_WINDOW = 1.0
PLANDAY_MINUTE_LIMIT = 500
PLANDAY_MINUTE_WINDOW = 60.0
#: the documented quota policy, as Planday writes it in ``x-ratelimit-limit`` after the nearest window's quota
PLANDAY_RATE_POLICY = "10;w=1, 500;w=60, 100;w=1, 2000;w=60"
PLANDAY_MAX_LIMIT = 50
PLANDAY_FIRST_DAY_SCHEDULE_ID = 50001
_REVENUE_REQUIRED = ("revenueUnitId", "date", "turnover")


class PlandayApp(VendorApp):
    name = "planday"

    def __init__(self, latency_ms: float = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # the rate-limit windows' clock (tests inject a fake one)
        super().__init__(latency_ms)

    def reset_state(self) -> None:
        self.tokens: dict[str, tuple[str, float]] = {}
        self.windows: dict[str, tuple[collections.deque, collections.deque]] = {}  # portal → (1 s, 60 s)
        self.portals: dict[str, dict] = {}
        self.refuse: list[dict] = []  # rules set with /_sandbox/refuse (the older spelling of faults.reject)
        self.next_day_schedule_id = PLANDAY_FIRST_DAY_SCHEDULE_ID

    @staticmethod
    def units_for(client_id: str) -> list[dict]:
        return PLANDAY_BIG_UNITS if client_id.startswith("big") else PLANDAY_DEFAULT_UNITS

    def _portal(self, client_id: str) -> dict:
        return self.portals.setdefault(client_id, {"revenue": {}, "days": {}})

    def _day_schedule_id(self, client_id: str, unit_id: int, day: dt.date) -> int:
        """The id of the unit's department's schedule day (one per department and date, as in Planday)."""
        department = next((u["departmentId"] for u in self.units_for(client_id) if u["id"] == unit_id), 0)
        days = self._portal(client_id)["days"]
        key = (department, day.isoformat())
        if key not in days:
            days[key] = self.next_day_schedule_id
            self.next_day_schedule_id += 1
        return days[key]

    @staticmethod
    def _record_out(rec: dict) -> dict:
        return {
            "revenueUnitId": rec["revenueUnitId"],
            "date": rec["date"],
            "turnover": money(rec["turnover"]),
            "description": rec["description"],
            "dayScheduleId": rec["dayScheduleId"],
            "writes": rec["writes"],
            "manual": rec["manual"],
        }

    @staticmethod
    def _record_api(rec: dict) -> dict:
        """A revenue record as the API answers it: turnover a JSON number with two decimals."""
        return {
            "revenueUnitId": rec["revenueUnitId"],
            "dayScheduleId": rec["dayScheduleId"],
            "date": rec["date"],
            "turnover": Number(Decimal(rec["turnover"])),
            "description": rec["description"],
        }

    def state(self) -> dict:
        return {
            "portals": {
                cid: {
                    "revenue": [self._record_out(r) for _, r in sorted(p["revenue"].items())],
                    "units": [dict(u) for u in self.units_for(cid)],
                }
                for cid, p in sorted(self.portals.items())
            }
        }

    def fault_headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": f"{PLANDAY_RATE_LIMIT}, {PLANDAY_RATE_POLICY}",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": "1",
        }

    # -- auth and rate limiting
    def _token(self, req: Request) -> Response:
        if req.method != "POST":
            return self.error(405, "use POST")
        try:
            form = parse_qs(req.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            form = {}
        client_id = (form.get("client_id") or [""])[0]
        grant_type = (form.get("grant_type") or [""])[0]
        refresh_token = (form.get("refresh_token") or [""])[0]
        if (
            not client_id
            or grant_type != "refresh_token"
            or not secrets.compare_digest(refresh_token.encode(), f"rt-{client_id}".encode())
        ):
            return json_response(400, {"error": "invalid_grant"})
        token = secrets.token_hex(24)
        with self.lock:
            now = time.time()
            self.tokens = {t: v for t, v in self.tokens.items() if v[1] > now}
            self.tokens[token] = (client_id, now + PLANDAY_TOKEN_TTL)
            self._portal(client_id)
        return json_response(200, {"access_token": token, "token_type": "Bearer", "expires_in": PLANDAY_TOKEN_TTL})

    def _authenticate(self, req: Request) -> str | None:
        auth = req.headers.get("Authorization") or ""
        client_id = req.headers.get("X-ClientId") or ""
        if not auth.startswith("Bearer ") or not client_id:
            return None
        with self.lock:
            entry = self.tokens.get(auth[7:].strip())
        if entry is None or entry[1] <= time.time() or entry[0] != client_id:
            return None
        return client_id

    def _rate_limit(self, client_id: str) -> tuple[bool, dict[str, str]]:
        """Both windows of the portal: 10 per second and 500 per minute. The headers describe the window
        nearest to its limit, as Planday's do."""
        now = self.clock()
        with self.lock:
            second, minute = self.windows.setdefault(client_id, (collections.deque(), collections.deque()))
            for window, width in ((second, PLANDAY_RATE_WINDOW), (minute, PLANDAY_MINUTE_WINDOW)):
                while window and window[0] <= now - width:
                    window.popleft()
            allowed = len(second) < PLANDAY_RATE_LIMIT and len(minute) < PLANDAY_MINUTE_LIMIT
            if allowed:
                second.append(now)
                minute.append(now)
            remaining, limit, window, width = min(
                (
                    (PLANDAY_RATE_LIMIT - len(second), PLANDAY_RATE_LIMIT, second, PLANDAY_RATE_WINDOW),
                    (PLANDAY_MINUTE_LIMIT - len(minute), PLANDAY_MINUTE_LIMIT, minute, PLANDAY_MINUTE_WINDOW),
                ),
                key=lambda nearest: (nearest[0], -nearest[3]),  # a tie: the longer window says more
            )
            reset = max(1, math.ceil(window[0] + width - now)) if window else 1
            headers = {
                "x-ratelimit-limit": f"{limit}, {PLANDAY_RATE_POLICY}",
                "x-ratelimit-remaining": str(max(0, remaining)),
                "x-ratelimit-reset": str(reset),
            }
        if not allowed:
            headers["Retry-After"] = str(reset)
        return allowed, headers

    # -- routes
    def api(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if path == "/connect/token":
            return self._token(req)
        routes = {
            ("GET", "/revenue/v1.0/revenueunits"): self._units,
            ("POST", "/revenue/v1.0/revenue"): self._write_revenue,
            ("GET", "/revenue/v1.0/revenue"): self._read_revenue,
        }
        handler = routes.get((req.method, path))
        if handler is None:
            if any(p == path for _, p in routes):
                return self.error(405, f"method {req.method} not allowed on {req.path}")
            return self.error(404, f"no such endpoint: {req.path}")
        client_id = self._authenticate(req)
        if client_id is None:
            return self.error(401, "Unauthorized", headers={"WWW-Authenticate": "Bearer"})
        allowed, headers = self._rate_limit(client_id)
        if not allowed:
            return json_response(429, {"message": "Too many requests"}, headers)
        try:
            resp = handler(req, client_id)
        except BadRequest as exc:
            resp = self.error(400, str(exc))
        resp.headers.update(headers)
        return resp

    @staticmethod
    def _int_arg(req: Request, name: str, default: int) -> int:
        values = req.query.get(name) or []
        if len(values) > 1:
            raise BadRequest(f"parameter '{name}' given {len(values)} times")
        raw = values[0] if values else None
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise BadRequest(f"parameter '{name}' must be an integer, got {raw!r}") from None

    def _paging(self, req: Request) -> tuple[int, int]:
        """Planday's offset/limit paging: ``offset`` ≥ 0 (default 0), ``limit`` 1..50 (default 50)."""
        offset = self._int_arg(req, "offset", 0)
        limit = self._int_arg(req, "limit", PLANDAY_MAX_LIMIT)
        if offset < 0:
            raise BadRequest(f"parameter 'offset' must be >= 0, got {offset}")
        if not 1 <= limit <= PLANDAY_MAX_LIMIT:
            raise BadRequest(f"parameter 'limit' must be between 1 and {PLANDAY_MAX_LIMIT}, got {limit}")
        return offset, limit

    def _units(self, req: Request, client_id: str) -> Response:
        offset, limit = self._paging(req)
        units = self.units_for(client_id)
        with self.lock:
            self._portal(client_id)
        return json_response(
            200,
            {
                "paging": {"offset": offset, "limit": limit, "total": len(units)},
                "data": [dict(u) for u in units[offset : offset + limit]],
            },
        )

    def _parse_revenue(
        self, body, client_id: str, *, strict: bool = True
    ) -> tuple[int, dt.date, Decimal, str] | Response:
        """Planday's revenue DTO: ``revenueUnitId`` integer, ``date`` string YYYY-MM-DD, ``turnover`` number
        (all three required), ``description`` string (optional). Fields the DTO does not have are ignored,
        as Planday's model binding ignores them. ``strict=False`` (the sandbox's hand-entry endpoint, and
        ``lenient_types``) also takes ``turnover`` as a decimal string."""
        if not isinstance(body, dict):
            raise BadRequest(f"body must be a JSON object, got {json_type(body)}")
        missing = [f"'{name}'" for name in _REVENUE_REQUIRED if body.get(name) is None]
        if missing:
            raise BadRequest(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
        unit_id = body["revenueUnitId"]
        if isinstance(unit_id, bool) or not isinstance(unit_id, int):
            raise BadRequest(f"'revenueUnitId' must be a JSON integer, got {json_type(unit_id)} {shown(unit_id)}")
        raw_day = body["date"]
        if not isinstance(raw_day, str) or not _DATE_RE.match(raw_day):
            raise BadRequest(f"'date' must be a string YYYY-MM-DD, got {json_type(raw_day)} {shown(raw_day)}")
        day = parse_date(raw_day, "date")
        turnover = body["turnover"]
        if strict and (isinstance(turnover, bool) or not isinstance(turnover, int | Decimal)):
            raise BadRequest(f"'turnover' must be a JSON number, got {json_type(turnover)} {shown(turnover)}")
        amount = parse_amount(turnover, "turnover")
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise BadRequest(f"'description' must be a string, got {json_type(description)} {shown(description)}")
        if unit_id not in {u["id"] for u in self.units_for(client_id)}:
            return self.error(404, f"Revenue unit {unit_id} not found")
        return unit_id, day, amount, description or ""

    def _store(self, client_id: str, unit_id: int, day: dt.date, turnover: Decimal, description: str, manual: bool):
        with self.lock:
            revenue = self._portal(client_id)["revenue"]
            key = (unit_id, day.isoformat())
            rec = revenue.get(key)
            if rec is None:
                rec = revenue[key] = {
                    "revenueUnitId": unit_id,
                    "date": day.isoformat(),
                    "dayScheduleId": self._day_schedule_id(client_id, unit_id, day),
                    "writes": 0,
                    "manual": False,
                }
            rec["turnover"] = turnover
            rec["description"] = description
            rec["manual"] = manual
            if not manual:
                rec["writes"] += 1
            return dict(rec)

    def _rejection(self, unit_id: int, day: dt.date) -> tuple[int, str] | None:
        row = {"revenueUnitId": unit_id, "date": day.isoformat()}
        found = self.faults.rejection(row)
        if found is None:
            with self.lock:
                rules = list(self.refuse)
            found = next(
                ((r["status"], r["message"]) for r in rules if (r["revenueUnitId"], r["date"]) == tuple(row.values())),
                None,
            )
        return found

    def _write_revenue(self, req: Request, client_id: str) -> Response:
        media = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            return self.error(415, f"Content-Type must be application/json, got {media or 'none'}")
        parsed = self._parse_revenue(req.json(), client_id, strict=not self.lenient_types)
        if isinstance(parsed, Response):
            return parsed
        unit_id, day, turnover, description = parsed
        if unit_id == 1003 and day.weekday() == 0:
            return self.error(409, f"No opening day on date {day.isoformat()}")
        refused = self._rejection(unit_id, day)
        if refused:
            return self.error(*refused)
        rec = self._store(client_id, unit_id, day, turnover, description, manual=False)
        return json_numbers_response(200, {"data": self._record_api(rec)})

    def _read_revenue(self, req: Request, client_id: str) -> Response:
        offset, limit = self._paging(req)
        unit_raw = req.arg("revenueUnitId")
        unit_id = None
        if unit_raw not in (None, ""):
            try:
                unit_id = int(unit_raw)
            except ValueError:
                raise BadRequest(f"parameter 'revenueUnitId' must be an integer, got {unit_raw!r}") from None
        start = parse_date(req.arg("from"), "from") if req.arg("from") else None
        end = parse_date(req.arg("to"), "to") if req.arg("to") else None
        with self.lock:
            records = [dict(r) for _, r in sorted(self._portal(client_id)["revenue"].items())]
        data = [
            self._record_api(r)
            for r in records
            if (unit_id is None or r["revenueUnitId"] == unit_id)
            and (start is None or r["date"] >= start.isoformat())
            and (end is None or r["date"] <= end.isoformat())
        ]
        page = {"offset": offset, "limit": limit, "total": len(data)}
        return json_numbers_response(200, {"paging": page, "data": data[offset : offset + limit]})

    def parse_reject(self, rows) -> list[dict]:
        """``[{"revenueUnitId": int, "date": "YYYY-MM-DD", "status": 400, "message": "…"}]``: those rows
        answer ``status`` with ``{"message": …}`` after the body was validated (a vendor refusing one row)."""
        if rows is None:
            return []
        if not isinstance(rows, list):
            raise BadRequest("'reject' must be a list of {revenueUnitId, date, status, message}")
        rules = []
        for row in rows:
            if not isinstance(row, dict):
                raise BadRequest("each 'reject' rule must be an object {revenueUnitId, date, status, message}")
            unknown = sorted(set(row) - {"revenueUnitId", "date", "status", "message"})
            if unknown:
                raise BadRequest(f"unknown 'reject' rule keys: {unknown}")
            unit_id = row.get("revenueUnitId")
            if isinstance(unit_id, bool) or not isinstance(unit_id, int):
                raise BadRequest("each 'reject' rule needs an integer 'revenueUnitId'")
            day = parse_date(row.get("date"), "date")
            status = row.get("status", 400)
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise BadRequest("'status' must be an HTTP error status (400..599)")
            message = row.get("message", "Bad Request")
            if not isinstance(message, str) or not message:
                raise BadRequest("'message' must be a non-empty string")
            rules.append({"revenueUnitId": unit_id, "date": day.isoformat(), "status": status, "message": message})
        return rules

    def control_extra(self, req: Request, sub: str) -> Response | None:
        if sub == "refuse":
            # the older spelling of faults.reject, kept as its own list (a POST to /faults leaves it alone)
            if req.method != "POST":
                return self.error(405, "use POST")
            rules = self.parse_reject(req.json())
            with self.lock:
                self.refuse = rules
            return json_response(200, {"refused": len(rules)})
        if sub == "tokens/expire":
            if req.method != "POST":
                return self.error(405, "use POST")
            body = req.json()
            only = body.get("client_id") if isinstance(body, dict) else None
            with self.lock:
                expired = [t for t, (cid, _) in self.tokens.items() if only is None or cid == only]
                for token in expired:
                    self.tokens.pop(token)
            return json_response(200, {"expired": len(expired)})
        match = re.fullmatch(r"portals/([^/]+)/revenue", sub)
        if match is None:
            return None
        if req.method != "POST":
            return self.error(405, "use POST")
        client_id = unquote(match.group(1))
        parsed = self._parse_revenue(req.json(), client_id, strict=False)
        if isinstance(parsed, Response):
            return parsed
        unit_id, day, turnover, description = parsed
        rec = self._store(client_id, unit_id, day, turnover, description, manual=True)
        return json_response(200, {"data": self._record_out(rec)})


# --------------------------------------------------------------------------------------------- HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tillflow-sandbox/1"

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        req = Request(self.command, split.path, parse_qs(split.query, keep_blank_values=True), self.headers, body)
        try:
            resp = self.server.app.dispatch(req)
        except Exception:  # noqa: BLE001 - a sandbox bug must still answer, and be visible
            _log.exception("sandbox error on %s %s", self.command, self.path)
            resp = json_response(500, {"message": "sandbox internal error"})
        try:
            self.send_response(resp.status)
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, *args) -> None:  # quiet: the request log is at /_sandbox/requests
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 256  # many concurrent clients (a benchmark runs ~30 at once)

    def __init__(self, address, app: VendorApp):
        self.app = app
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)):
            super().handle_error(request, client_address)


class Sandbox:
    """Every vendor stand-in, each on its own port in a daemon thread. ``start()`` returns self; usable
    as a context manager. Ajour and Planday here; Kassatellen and Eitje in :mod:`sandbox.hourly`; Shiftbase in
    :mod:`sandbox.shiftbase`."""

    def __init__(
        self,
        ajour_port: int = 0,
        planday_port: int = 0,
        host: str = "127.0.0.1",
        latency_ms: float = 0,
        kassatellen_port: int = 0,
        eitje_port: int = 0,
        shiftbase_port: int = 0,
        mpluskassa_port: int = 0,
        kashclick_port: int = 0,
        pennylane_port: int = 0,
        ccv_port: int = 0,
        eaccounting_port: int = 0,
    ) -> None:
        from sandbox.ccv import CcvApp
        from sandbox.eaccounting import EaccountingApp
        from sandbox.hourly import EitjeApp, KassatellenApp
        from sandbox.kashclick import KashclickApp
        from sandbox.mplus import MplusServer
        from sandbox.pennylane import PennylaneApp
        from sandbox.shiftbase import ShiftbaseApp

        self.host = host
        self.ajour = AjourApp(latency_ms)
        self.planday = PlandayApp(latency_ms)
        self.kassatellen = KassatellenApp(latency_ms)
        self.eitje = EitjeApp(latency_ms)
        self.shiftbase = ShiftbaseApp(latency_ms)
        self.kashclick = KashclickApp(latency_ms)
        self.pennylane = PennylaneApp(latency_ms)
        self.ccv = CcvApp(latency_ms)
        self.eaccounting = EaccountingApp(latency_ms)
        self.apps = [
            (self.ajour, ajour_port),
            (self.planday, planday_port),
            (self.kassatellen, kassatellen_port),
            (self.eitje, eitje_port),
            (self.shiftbase, shiftbase_port),
            (self.kashclick, kashclick_port),
            (self.pennylane, pennylane_port),
            (self.ccv, ccv_port),
            (self.eaccounting, eaccounting_port),
        ]
        self.mpluskassa = MplusServer(port=mpluskassa_port, host=host)  # SOAP (spyne): its own WSGI server
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> Self:
        if self._servers:
            return self
        try:
            for app, port in self.apps:
                app.stopping.clear()
                server = _Server((self.host, port), app)
                self._servers.append(server)
                thread = threading.Thread(
                    target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"sandbox-{app.name}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            self.mpluskassa.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for app, _ in self.apps:
            app.stopping.set()  # wake handlers sleeping in an injected timeout
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._servers, self._threads = [], []
        self.mpluskassa.stop()

    def reset(self) -> None:
        for app, _ in self.apps:
            app.reset()
        self.mpluskassa.reset()

    def _url(self, index: int) -> str:
        if not self._servers:
            raise RuntimeError("sandbox is not running")
        host, port = self._servers[index].server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    @property
    def ajour_url(self) -> str:
        return self._url(0)

    @property
    def planday_url(self) -> str:
        return self._url(1)

    @property
    def kassatellen_url(self) -> str:
        return self._url(2)

    @property
    def eitje_url(self) -> str:
        return self._url(3)

    @property
    def shiftbase_url(self) -> str:
        return self._url(4)

    @property
    def kashclick_url(self) -> str:
        return self._url(5)

    @property
    def pennylane_url(self) -> str:
        return self._url(6)

    @property
    def ccv_url(self) -> str:
        return self._url(7)

    @property
    def eaccounting_url(self) -> str:
        return self._url(8)

    @property
    def mpluskassa_url(self) -> str:
        """The SOAP server; a customer's endpoint is ``{mpluskassa_url}/{port}/MplusQapi``."""
        return self.mpluskassa.url

    @property
    def urls(self) -> dict[str, str]:
        return {app.name: self._url(i) for i, (app, _) in enumerate(self.apps)} | {"mpluskassa": self.mpluskassa.url}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
