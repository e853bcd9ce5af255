"""Stand-in SOAP server for the MplusKASSA POS API ("MplusQAPI"), built on spyne.

Standard library and spyne only, nothing from ``tillflow``: the stand-in must not share code with the client
it exercises. The operations, names and money rules follow the vendor's documentation; the field
``costCenterNumber`` of a shift is tillflow's documented assumption.

    from sandbox.mplus import MplusServer
    with MplusServer(port=0) as srv:
        endpoint = f"{srv.url}/7001/MplusQapi"          # WSDL: GET {endpoint}?wsdl

**One port per customer.** The real API has one endpoint per customer, ``https://api.mpluskassa.nl:{port}``.
Here the customer's port is the first path segment: ``{server}/{port}/MplusQapi``. Each port is one
customer with its own deterministic data (a function of the port, the date and the entity only).

**Credentials** are the query parameters ``ident`` and ``secret`` of every SOAP call (the WSDL is served
without them). Accepted iff ``secret == "secret-" + ident`` (any non-empty ident); otherwise a SOAP Fault
``faultcode Client``, ``faultstring "Invalid ident or secret"`` (HTTP 500, as SOAP 1.1 answers every fault).

**Strict**: SOAP 1.1 with schema validation (``validator="lxml"``): a request whose element has the wrong
type (``<fromFinancialDate>yesterday</…>``), an unknown element or a missing required one is a Client fault.

Operations (namespace ``urn:mplusqapi``; document/literal, wrapped; money is integer cents):

* ``getBranches()`` → ``branchList/branch[branchNumber, name]``: 1 Centrum, 2 Station, 3 Strand.
* ``getTurnoverGroups()`` → ``turnoverGroupList/turnoverGroup[turnoverGroupNumber, description]``.
* ``getCostCenters()`` → ``costCenterList/costCenter[costCenterNumber, description]``: 10 Keuken,
  20 Bediening, 30 Bar.
* ``getEmployees()`` → ``employeeList/employee[employeeNumber, name, authorisationGroupNumber,
  authorisationGroupName]``: 101–105. Employee 106 has no authorisation group: like the real API,
  ``getEmployees`` does not return him, yet he clocks in (his shifts appear in ``getShifts``).
* ``reportTurnoverByBranch(fromFinancialDate, throughFinancialDate, branchNumbers?/branchNumber*, perHour?)``
  → ``turnoverList/turnover[branchNumber, financialDate, hour?, totalInclAmount, totalExclAmount]``: one
  row per branch per financial date (per hour 10–22 with ``perHour``; a day's total is the sum of its
  hours). Branch 3 is closed on Mondays (no row). No rows after today; today only for hours begun.
  At most 62 days per call, else a Client fault.
* ``getShifts(branchNumbers?, employeeNumbers?, fromFinancialDate, throughFinancialDate)`` →
  ``shiftList/shift[shiftNumber, branchNumber, financialDate, employeeNumber, startTimestamp,
  endTimestamp?, ended, manuallyModified, costCenterNumber?]``. Timestamps carry the Europe/Amsterdam
  offset; ``endTimestamp`` is absent while a shift is open. Employee 101 works every day and today's shift
  is still open (started two hours ago); employee 102 works every day with a break: two shifts (clock-out,
  clock-in), the second on another cost centre; 103–105 work most days; 106 (not listed) every third day.
  Today only shifts that began; one still running is open. At most 62 days per call.

Control (JSON over HTTP on the same server, never under a customer port):

* ``POST /_sandbox/reset`` — forget customer changes, faults and the request log.
* ``GET /_sandbox/state`` — ``{"today", "customers": {port: changes}, "faults"}``.
* ``POST /_sandbox/clock`` ``{"now": "2026-03-03T14:00:00+01:00"}`` — pin the stand-in's "now" (what
  "today", hours begun, open shifts and shifts that began are judged by) to that instant until
  ``{"now": null}`` or a reset; ``GET`` → ``{"now", "pinned"}``. Without it: the real clock.
* ``GET /_sandbox/requests`` — ``[{"operation", "port", "status", "fault", "ts"}]`` (no credentials).
* ``POST /_sandbox/faults`` ``{"rate_5xx": 0.2, "rate_timeout": 0.0, "timeout_seconds": 3,
  "malformed": false, "next_5xx": 0, "operations": ["getShifts"], "seed": 42}`` — on SOAP calls (the
  WSDL is never faulted): 5xx answers 500/502/503 with an HTML page (a proxy, not a SOAP fault); a timeout
  waits ``timeout_seconds`` then answers 504; ``malformed`` answers HTTP 200 with the real envelope cut in
  half; ``next_5xx`` makes the next N calls answer 503 (deterministic retries). ``{}`` clears them.
* ``GET /_sandbox/customers/{port}`` — the customer's data: branches, all employees (with ``listed``),
  cost centres, ``today``, ``open_shift`` (today's open shift number) and the changes.
* ``POST /_sandbox/customers/{port}`` — change a customer's data (each key optional)::

      {"shifts": {"<shiftNumber>": {"startTimestamp": "...", "endTimestamp": "..." | null, "ended": true,
                                    "manuallyModified": true, "costCenterNumber": 30} | null},   # null: delete
       "add_shifts": [{"shiftNumber"?, "branchNumber", "financialDate", "employeeNumber", "startTimestamp",
                       "endTimestamp"?, "ended"?, "manuallyModified"?, "costCenterNumber"?}],
       "add_employees": [{"employeeNumber", "name", "authorisationGroupNumber"?: 2 | null}],
       "turnover": [{"branchNumber", "financialDate", "hour"?, "totalInclAmount", "totalExclAmount"}]}

  Added shifts are served as given (one ending before it starts, lasting over 24 h, ended without an end
  or of an unknown employee: that is what they are for). A turnover override replaces that branch/day (or
  hour) row; a day override in a ``perHour`` report is one row at hour 12 carrying the day's amount.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import random
import re
import sys
import threading
import time
from collections import deque
from decimal import ROUND_HALF_UP, Decimal
from socketserver import ThreadingMixIn
from typing import Any, Self
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from zoneinfo import ZoneInfo

from spyne import Application, Boolean, ComplexModel, Date, DateTime, Fault, Integer, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

TNS = "urn:mplusqapi"
TZ = ZoneInfo("Europe/Amsterdam")
SERVICE = "MplusQapi"
CONTROL_PREFIX = "/_sandbox/"
MAX_DAYS = 62
LOG_SIZE = 10_000
OPEN_HOURS = range(10, 23)
HIDDEN_EMPLOYEE = 106

BRANCHES = [(1, "Centrum"), (2, "Station"), (3, "Strand")]
TURNOVER_GROUPS = [(1, "Eten"), (2, "Dranken"), (3, "Overig")]
COST_CENTERS = [(10, "Keuken"), (20, "Bediening"), (30, "Bar")]
AUTH_GROUPS = {1: "Beheer", 2: "Medewerker"}
#: number, name, authorisation group (None: not listed by getEmployees), branch, cost centre, pattern
EMPLOYEES = [
    (101, "Anna de Vries", 1, 1, 20, "open_today"),
    (102, "Bram Jansen", 2, 1, 10, "break"),
    (103, "Chantal Bakker", 2, 2, 30, "regular"),
    (104, "Dirk Visser", 2, 2, 20, "regular"),
    (105, "Eva Smit", 2, 3, 10, "regular"),
    (HIDDEN_EMPLOYEE, "Frank Mulder", None, 3, 30, "sometimes"),
]
_SHIFT_FIELDS = (
    "startTimestamp",
    "endTimestamp",
    "ended",
    "manuallyModified",
    "costCenterNumber",
    "branchNumber",
    "employeeNumber",
    "financialDate",
)
_BODY_OP = re.compile(rb"<(?:[\w.-]+:)?Body\b[^>]*>\s*<(?:[\w.-]+:)?([A-Za-z_][\w.-]*)")
_PORT_PATH = re.compile(rf"^/(\d{{1,5}})/{SERVICE}/?$")
_CUSTOMER_PATH = re.compile(r"^customers/(\d{1,5})$")

# expected client faults (bad credentials, schema errors) are answers, not server errors: keep them quiet
logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)


class BadRequest(Exception):
    """A control request the stand-in refuses (400 with the message)."""


# --------------------------------------------------------------------------------------------- SOAP model


class Branch(ComplexModel):
    __namespace__ = TNS
    _type_info = [("branchNumber", Integer(min_occurs=1, nillable=False)), ("name", Unicode(min_occurs=1))]


class BranchList(ComplexModel):
    __namespace__ = TNS
    _type_info = [("branch", Branch.customize(max_occurs="unbounded"))]


class TurnoverGroup(ComplexModel):
    __namespace__ = TNS
    _type_info = [
        ("turnoverGroupNumber", Integer(min_occurs=1, nillable=False)),
        ("description", Unicode(min_occurs=1)),
    ]


class TurnoverGroupList(ComplexModel):
    __namespace__ = TNS
    _type_info = [("turnoverGroup", TurnoverGroup.customize(max_occurs="unbounded"))]


class CostCenter(ComplexModel):
    __namespace__ = TNS
    _type_info = [
        ("costCenterNumber", Integer(min_occurs=1, nillable=False)),
        ("description", Unicode(min_occurs=1)),
    ]


class CostCenterList(ComplexModel):
    __namespace__ = TNS
    _type_info = [("costCenter", CostCenter.customize(max_occurs="unbounded"))]


class Employee(ComplexModel):
    __namespace__ = TNS
    _type_info = [
        ("employeeNumber", Integer(min_occurs=1, nillable=False)),
        ("name", Unicode(min_occurs=1)),
        ("authorisationGroupNumber", Integer(min_occurs=1, nillable=False)),
        ("authorisationGroupName", Unicode(min_occurs=1)),
    ]


class EmployeeList(ComplexModel):
    __namespace__ = TNS
    _type_info = [("employee", Employee.customize(max_occurs="unbounded"))]


class Turnover(ComplexModel):
    __namespace__ = TNS
    _type_info = [
        ("branchNumber", Integer(min_occurs=1, nillable=False)),
        ("financialDate", Date(min_occurs=1, nillable=False)),
        ("hour", Integer(min_occurs=0, nillable=False)),
        ("totalInclAmount", Integer(min_occurs=1, nillable=False)),  # cents
        ("totalExclAmount", Integer(min_occurs=1, nillable=False)),  # cents
    ]


class TurnoverList(ComplexModel):
    __namespace__ = TNS
    _type_info = [("turnover", Turnover.customize(max_occurs="unbounded"))]


class Shift(ComplexModel):
    __namespace__ = TNS
    _type_info = [
        ("shiftNumber", Integer(min_occurs=1, nillable=False)),
        ("branchNumber", Integer(min_occurs=1, nillable=False)),
        ("financialDate", Date(min_occurs=1, nillable=False)),
        ("employeeNumber", Integer(min_occurs=1, nillable=False)),
        ("startTimestamp", DateTime(min_occurs=1, nillable=False)),
        ("endTimestamp", DateTime(min_occurs=0, nillable=True)),
        ("ended", Boolean(min_occurs=1, nillable=False)),
        ("manuallyModified", Boolean(min_occurs=1, nillable=False)),
        ("costCenterNumber", Integer(min_occurs=0, nillable=True)),
    ]


class ShiftList(ComplexModel):
    __namespace__ = TNS
    _type_info = [("shift", Shift.customize(max_occurs="unbounded"))]


class BranchNumbers(ComplexModel):
    __namespace__ = TNS
    _type_info = [("branchNumber", Integer(min_occurs=0, max_occurs="unbounded", nillable=False))]


class EmployeeNumbers(ComplexModel):
    __namespace__ = TNS
    _type_info = [("employeeNumber", Integer(min_occurs=0, max_occurs="unbounded", nillable=False))]


RequiredDate = Date(min_occurs=1, nillable=False)


def _customer(ctx) -> tuple[MplusStandIn, int]:
    """The stand-in and the customer port of this call, after checking ident/secret (a Fault if refused)."""
    env = ctx.transport.req_env
    query = parse_qs(env.get("QUERY_STRING", ""), keep_blank_values=True)
    ident = (query.get("ident") or [""])[0]
    secret = (query.get("secret") or [""])[0]
    if not ident or secret != f"secret-{ident}":
        raise Fault(faultcode="Client", faultstring="Invalid ident or secret")
    return env["mplus.standin"], env["mplus.port"]


def _check_range(start: dt.date, end: dt.date) -> None:
    if end < start:
        raise Fault(faultcode="Client", faultstring="throughFinancialDate is before fromFinancialDate")
    if (end - start).days + 1 > MAX_DAYS:
        raise Fault(faultcode="Client", faultstring=f"the financial date range spans at most {MAX_DAYS} days")


class MplusQapi(ServiceBase):
    @rpc(_returns=BranchList, _out_variable_name="branchList")
    def getBranches(ctx):  # noqa: N802 - the vendor's operation names
        standin, port = _customer(ctx)
        return BranchList(branch=[Branch(branchNumber=n, name=name) for n, name in standin.branches(port)])

    @rpc(_returns=TurnoverGroupList, _out_variable_name="turnoverGroupList")
    def getTurnoverGroups(ctx):  # noqa: N802
        _customer(ctx)
        groups = [TurnoverGroup(turnoverGroupNumber=n, description=d) for n, d in TURNOVER_GROUPS]
        return TurnoverGroupList(turnoverGroup=groups)

    @rpc(_returns=CostCenterList, _out_variable_name="costCenterList")
    def getCostCenters(ctx):  # noqa: N802
        _customer(ctx)
        return CostCenterList(costCenter=[CostCenter(costCenterNumber=n, description=d) for n, d in COST_CENTERS])

    @rpc(_returns=EmployeeList, _out_variable_name="employeeList")
    def getEmployees(ctx):  # noqa: N802
        standin, port = _customer(ctx)
        listed = [e for e in standin.employees(port) if e["authorisationGroupNumber"] is not None]
        return EmployeeList(
            employee=[
                Employee(
                    employeeNumber=e["employeeNumber"],
                    name=e["name"],
                    authorisationGroupNumber=e["authorisationGroupNumber"],
                    authorisationGroupName=AUTH_GROUPS.get(e["authorisationGroupNumber"], "Groep"),
                )
                for e in listed
            ]
        )

    @rpc(RequiredDate, RequiredDate, BranchNumbers, Boolean, _returns=TurnoverList, _out_variable_name="turnoverList")
    def reportTurnoverByBranch(ctx, fromFinancialDate, throughFinancialDate, branchNumbers, perHour):  # noqa: N802, N803
        standin, port = _customer(ctx)
        _check_range(fromFinancialDate, throughFinancialDate)
        wanted = set(branchNumbers.branchNumber or []) if branchNumbers is not None else set()
        rows = standin.turnover(port, fromFinancialDate, throughFinancialDate, wanted, bool(perHour))
        return TurnoverList(turnover=[Turnover(**row) for row in rows])

    @rpc(BranchNumbers, EmployeeNumbers, RequiredDate, RequiredDate, _returns=ShiftList, _out_variable_name="shiftList")
    def getShifts(ctx, branchNumbers, employeeNumbers, fromFinancialDate, throughFinancialDate):  # noqa: N802, N803
        standin, port = _customer(ctx)
        _check_range(fromFinancialDate, throughFinancialDate)
        branches = set(branchNumbers.branchNumber or []) if branchNumbers is not None else set()
        employees = set(employeeNumbers.employeeNumber or []) if employeeNumbers is not None else set()
        rows = standin.shifts(port, fromFinancialDate, throughFinancialDate, branches, employees)
        return ShiftList(shift=[Shift(**row) for row in rows])


def build_application() -> Application:
    return Application(
        [MplusQapi],
        tns=TNS,
        name=SERVICE,
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )


# --------------------------------------------------------------------------------------------- data


def _digest(*parts: object) -> int:
    return int(hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:12], 16)


def hour_cents(port: int, branch: int, day: dt.date, hour: int) -> int:
    """Deterministic turnover incl. VAT (cents) of one branch in one hour; 0 when closed."""
    if hour not in OPEN_HOURS or (branch == 3 and day.weekday() == 0):
        return 0
    return _digest(port, branch, day.isoformat(), hour) % 60_001


def excl_cents(incl: int) -> int:
    return int((Decimal(incl) * 100 / 112).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=TZ) + dt.timedelta(hours=hour, minutes=minute)


def _parse_ts(value: Any, name: str) -> dt.datetime:
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be an ISO 8601 timestamp with an offset, got {value!r}")
    try:
        ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"'{name}' is not an ISO 8601 timestamp: {value!r}") from None
    if ts.tzinfo is None:
        raise BadRequest(f"'{name}' needs an offset (e.g. +01:00): {value!r}")
    return ts.astimezone(TZ)


def _parse_day(value: Any, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        pass
    raise BadRequest(f"'{name}' must be a date YYYY-MM-DD, got {value!r}")


def _int(value: Any, name: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer, got {value!r}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false, got {value!r}")
    return value


class Faults:
    """Seeded fault decisions for SOAP calls (one RNG, one lock: a seed gives a repeatable sequence)."""

    KEYS = frozenset({"rate_5xx", "rate_timeout", "timeout_seconds", "malformed", "next_5xx", "operations", "seed"})

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.configure({})

    def configure(self, cfg: Any) -> dict:
        if not isinstance(cfg, dict):
            raise BadRequest("faults must be a JSON object")
        unknown = sorted(set(cfg) - self.KEYS)
        if unknown:
            raise BadRequest(f"unknown fault keys: {unknown}; allowed: {sorted(self.KEYS)}")
        new: dict[str, Any] = {}
        for key in ("rate_5xx", "rate_timeout"):
            rate = cfg.get(key, 0)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
                raise BadRequest(f"'{key}' must be a number between 0 and 1")
            new[key] = float(rate)
        if new["rate_5xx"] + new["rate_timeout"] > 1 + 1e-9:
            raise BadRequest("rate_5xx + rate_timeout must not exceed 1")
        timeout = cfg.get("timeout_seconds", 3)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout <= 600:
            raise BadRequest("'timeout_seconds' must be a number between 0 and 600")
        new["timeout_seconds"] = float(timeout)
        new["malformed"] = _bool(cfg.get("malformed", False), "malformed")
        next_5xx = _int(cfg.get("next_5xx", 0), "next_5xx")
        if next_5xx < 0:
            raise BadRequest("'next_5xx' must not be negative")
        new["next_5xx"] = next_5xx
        ops = cfg.get("operations")
        if ops is not None and (not isinstance(ops, list) or not all(isinstance(o, str) for o in ops)):
            raise BadRequest("'operations' must be a list of operation names")
        new["operations"] = ops
        seed = cfg.get("seed", 0)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | str)):
            raise BadRequest("'seed' must be an integer or a string")
        new["seed"] = seed
        with self.lock:
            self.cfg = new
            self.rng = random.Random(seed)
        return dict(new)

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.cfg)

    def decide(self, operation: str) -> tuple | None:
        """None or one of ("5xx", status), ("timeout", seconds), ("malformed",)."""
        with self.lock:
            cfg = self.cfg
            if cfg["operations"] is not None and operation not in cfg["operations"]:
                return None
            if cfg["next_5xx"] > 0:
                cfg["next_5xx"] -= 1
                return ("5xx", 503)
            if cfg["rate_5xx"] or cfg["rate_timeout"]:
                u = self.rng.random()
                if u < cfg["rate_5xx"]:
                    return ("5xx", self.rng.choice((500, 502, 503)))
                if u < cfg["rate_5xx"] + cfg["rate_timeout"]:
                    return ("timeout", cfg["timeout_seconds"])
            if cfg["malformed"]:
                return ("malformed",)
            return None


class MplusStandIn:
    """State, data and control of the stand-in; a WSGI application (control paths here, SOAP via spyne)."""

    name = "mpluskassa"

    def __init__(self, clock=None) -> None:
        #: returns the current aware instant (tests may pin it)
        self.clock = clock or (lambda: dt.datetime.now(TZ))
        #: "now" set over ``POST /_sandbox/clock`` (None: the clock above); cleared by reset
        self.pinned: dt.datetime | None = None
        self.lock = threading.RLock()
        self.faults = Faults()
        self.log: deque = deque(maxlen=LOG_SIZE)
        self.stopping = threading.Event()
        self._apps: dict[int, WsgiApplication] = {}
        self._apps_lock = threading.Lock()
        self.customers: dict[int, dict] = {}

    # -- state

    def reset(self) -> None:
        self.faults.configure({})
        with self.lock:
            self.log.clear()
            self.customers = {}
            self.pinned = None

    def _changes(self, port: int) -> dict:
        return self.customers.setdefault(port, {"shifts": {}, "add_shifts": [], "add_employees": [], "turnover": {}})

    def now(self) -> dt.datetime:
        pinned = self.pinned
        return (pinned if pinned is not None else self.clock()).astimezone(TZ)

    def set_clock(self, body: Any) -> dict:
        """``{"now": "<ISO 8601 instant with offset>"}`` pins "now"; ``{"now": null}`` goes back to the clock."""
        if not isinstance(body, dict) or set(body) != {"now"}:
            raise BadRequest('give {"now": "<ISO 8601 instant with offset>"} or {"now": null}')
        value = body["now"]
        pinned = None if value is None else _parse_ts(value, "now")
        with self.lock:
            self.pinned = pinned
        return self.clock_view()

    def clock_view(self) -> dict:
        return {"now": self.now().isoformat(), "pinned": self.pinned is not None}

    def state(self) -> dict:
        with self.lock:
            customers = {str(p): json.loads(json.dumps(c, default=str)) for p, c in self.customers.items()}
        return {"today": self.now().date().isoformat(), "customers": customers, "faults": self.faults.snapshot()}

    # -- data

    def branches(self, port: int) -> list[tuple[int, str]]:
        return list(BRANCHES)

    def employees(self, port: int) -> list[dict]:
        """Every employee of the customer, the ones without authorisation group included."""
        base = [{"employeeNumber": n, "name": name, "authorisationGroupNumber": g} for n, name, g, *_ in EMPLOYEES]
        with self.lock:
            extra = [dict(e) for e in self.customers.get(port, {}).get("add_employees", [])]
        return base + extra

    def turnover(self, port: int, start: dt.date, end: dt.date, branches: set[int], per_hour: bool) -> list[dict]:
        now = self.now()
        with self.lock:
            overrides = dict(self.customers.get(port, {}).get("turnover", {}))
        rows = []
        day = start
        while day <= end and day <= now.date():
            for branch, _ in self.branches(port):
                if branches and branch not in branches:
                    continue
                day_override = overrides.get(f"{branch}|{day.isoformat()}|")
                hours = []
                for hour in OPEN_HOURS:
                    if day == now.date() and hour > now.hour:
                        break
                    override = overrides.get(f"{branch}|{day.isoformat()}|{hour}")
                    incl = hour_cents(port, branch, day, hour)
                    amounts = (override["incl"], override["excl"]) if override else (incl, excl_cents(incl))
                    if override or incl:
                        hours.append((hour, *amounts))
                if day_override is not None:
                    hours = [(12, day_override["incl"], day_override["excl"])]
                if not hours:
                    continue
                base = {"branchNumber": branch, "financialDate": day}
                if per_hour:
                    rows += [{**base, "hour": h, "totalInclAmount": i, "totalExclAmount": e} for h, i, e in hours]
                else:
                    rows.append(
                        {
                            **base,
                            "totalInclAmount": sum(h[1] for h in hours),
                            "totalExclAmount": sum(h[2] for h in hours),
                        }
                    )
            day += dt.timedelta(days=1)
        return rows

    def _base_shifts(self, port: int, day: dt.date, now: dt.datetime) -> list[dict]:
        out = []
        for number, _name, _group, branch, cost_center, pattern in EMPLOYEES:
            h = _digest(port, number, day.isoformat())
            if pattern == "regular" and h % 7 == 0 or pattern == "sometimes" and h % 3 != 0:
                continue
            start = _local(day, 8, (h >> 8) % 8 * 15)
            end = start + dt.timedelta(hours=4 if pattern != "break" else 7, minutes=(h >> 16) % 17 * 15)
            base = {"branchNumber": branch, "financialDate": day, "employeeNumber": number, "manuallyModified": False}
            if pattern == "open_today" and day == now.date():
                start = max(_local(day, 0), (now - dt.timedelta(hours=2)).replace(second=0, microsecond=0))
                end = now + dt.timedelta(hours=6)
            if pattern == "break":  # clock-out for a half-hour break, clock-in again on another cost centre
                pause = start + dt.timedelta(hours=3, minutes=30)
                parts = [(1, start, pause, cost_center), (2, pause + dt.timedelta(minutes=30), end, 30)]
            else:
                parts = [(1, start, end, cost_center)]
            for seq, begin, finish, cc in parts:
                if begin > now:
                    continue
                ended = finish <= now
                shift = {
                    **base,
                    "shiftNumber": int(f"{day:%Y%m%d}{number}{seq}"),
                    "startTimestamp": begin,
                    "endTimestamp": finish if ended else None,
                    "ended": ended,
                    "costCenterNumber": cc,
                }
                out.append(shift)
        return out

    def shifts(self, port: int, start: dt.date, end: dt.date, branches: set[int], employees: set[int]) -> list[dict]:
        now = self.now()
        with self.lock:
            changes = self.customers.get(port, {})
            edits = {k: (dict(v) if v is not None else None) for k, v in changes.get("shifts", {}).items()}
            added = [dict(s) for s in changes.get("add_shifts", [])]
        rows = []
        day = start
        while day <= end and day <= now.date():
            rows += self._base_shifts(port, day, now)
            day += dt.timedelta(days=1)
        out = []
        for row in rows + [s for s in added if start <= s["financialDate"] <= end]:
            key = str(row["shiftNumber"])
            if key in edits:
                if edits[key] is None:
                    continue
                row = {**row, **edits[key]}
            if branches and row["branchNumber"] not in branches:
                continue
            if employees and row["employeeNumber"] not in employees:
                continue
            out.append(row)
        out.sort(key=lambda r: (r["financialDate"], r["startTimestamp"], r["shiftNumber"]))
        return out

    def open_shift(self, port: int) -> int | None:
        today = self.now().date()
        for row in self.shifts(port, today, today, set(), {101}):
            if not row["ended"]:
                return row["shiftNumber"]
        return None

    # -- customer changes

    @staticmethod
    def _shift_fields(body: dict, where: str, *, full: bool) -> dict:
        unknown = sorted(set(body) - set(_SHIFT_FIELDS) - ({"shiftNumber"} if full else set()))
        if unknown:
            raise BadRequest(f"{where}: unknown field(s) {unknown}; allowed: {sorted(_SHIFT_FIELDS)}")
        out: dict[str, Any] = {}
        if full:
            for name in ("branchNumber", "employeeNumber", "financialDate", "startTimestamp"):
                if name not in body:
                    raise BadRequest(f"{where}: '{name}' is required")
        for name, value in body.items():
            if name in ("startTimestamp", "endTimestamp"):
                out[name] = None if value is None and name == "endTimestamp" else _parse_ts(value, name)
            elif name == "financialDate":
                out[name] = _parse_day(value, name)
            elif name in ("ended", "manuallyModified"):
                out[name] = _bool(value, name)
            else:
                out[name] = _int(value, name, optional=name == "costCenterNumber")
        return out

    def change_customer(self, port: int, body: Any) -> dict:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        unknown = sorted(set(body) - {"shifts", "add_shifts", "add_employees", "turnover"})
        if unknown:
            raise BadRequest(f"unknown key(s) {unknown}; allowed: add_employees, add_shifts, shifts, turnover")
        edits: dict[str, dict | None] = {}
        for number, fields in (body.get("shifts") or {}).items():
            if not str(number).isdigit():
                raise BadRequest(f"shifts: key {number!r} is not a shift number")
            if fields is not None and not isinstance(fields, dict):
                raise BadRequest(f"shifts.{number}: give an object of fields, or null to delete")
            edits[str(int(number))] = (
                None if fields is None else self._shift_fields(fields, f"shifts.{number}", full=False)
            )
        added = []
        for i, item in enumerate(body.get("add_shifts") or []):
            if not isinstance(item, dict):
                raise BadRequest(f"add_shifts[{i}] must be an object")
            shift = self._shift_fields(item, f"add_shifts[{i}]", full=True)
            shift.setdefault("endTimestamp", None)
            shift.setdefault("ended", shift["endTimestamp"] is not None)
            shift.setdefault("manuallyModified", False)
            shift.setdefault("costCenterNumber", None)
            default_number = 900_000 + len(self.customers.get(port, {}).get("add_shifts", [])) + i
            shift["shiftNumber"] = _int(item.get("shiftNumber", default_number), "shiftNumber")
            added.append(shift)
        employees = []
        for i, item in enumerate(body.get("add_employees") or []):
            if not isinstance(item, dict) or set(item) - {"employeeNumber", "name", "authorisationGroupNumber"}:
                raise BadRequest(f"add_employees[{i}]: give employeeNumber, name, authorisationGroupNumber")
            if not isinstance(item.get("name"), str) or not item["name"]:
                raise BadRequest(f"add_employees[{i}]: 'name' is required")
            employees.append(
                {
                    "employeeNumber": _int(item.get("employeeNumber"), "employeeNumber"),
                    "name": item["name"],
                    "authorisationGroupNumber": _int(
                        item.get("authorisationGroupNumber", 2), "authorisationGroupNumber", optional=True
                    ),
                }
            )
        turnover = {}
        for i, item in enumerate(body.get("turnover") or []):
            if not isinstance(item, dict):
                raise BadRequest(f"turnover[{i}] must be an object")
            branch = _int(item.get("branchNumber"), "branchNumber")
            day = _parse_day(item.get("financialDate"), "financialDate")
            hour = _int(item.get("hour"), "hour", optional=True)
            key = f"{branch}|{day.isoformat()}|{'' if hour is None else hour}"
            turnover[key] = {
                "incl": _int(item.get("totalInclAmount"), "totalInclAmount"),
                "excl": _int(item.get("totalExclAmount"), "totalExclAmount"),
            }
        with self.lock:  # everything checked first: a refused change changes nothing
            changes = self._changes(port)
            changes["shifts"].update(edits)
            changes["add_shifts"] += added
            changes["add_employees"] += employees
            changes["turnover"].update(turnover)
            return json.loads(json.dumps(changes, default=str))

    def customer_view(self, port: int) -> dict:
        with self.lock:
            changes = json.loads(json.dumps(self.customers.get(port, {}), default=str))
        employees = [{**e, "listed": e["authorisationGroupNumber"] is not None} for e in self.employees(port)]
        return {
            "port": port,
            "today": self.now().date().isoformat(),
            "branches": [{"branchNumber": n, "name": name} for n, name in self.branches(port)],
            "employees": employees,
            "cost_centers": [{"costCenterNumber": n, "description": d} for n, d in COST_CENTERS],
            "open_shift": self.open_shift(port),
            "changes": changes,
        }

    # -- WSGI

    def _spyne(self, port: int, environ: dict) -> WsgiApplication:
        with self._apps_lock:
            app = self._apps.get(port)
            if app is None:  # one application per customer: its WSDL names that customer's endpoint
                app = self._apps[port] = WsgiApplication(build_application())
            return app

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path.startswith(CONTROL_PREFIX):
            status, body = self._control(environ, path[len(CONTROL_PREFIX) :].rstrip("/"))
            return _answer(start_response, status, json.dumps(body, default=str).encode(), "application/json")
        match = _PORT_PATH.match(path)
        if match is None:
            text = f"no such endpoint {path}; use /{{port}}/{SERVICE}".encode()
            return _answer(start_response, 404, text, "text/plain; charset=utf-8")
        port = int(match.group(1))
        method = environ.get("REQUEST_METHOD", "GET").upper()
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        env = dict(environ)
        env["SCRIPT_NAME"] = (environ.get("SCRIPT_NAME") or "") + f"/{port}"
        env["PATH_INFO"] = f"/{SERVICE}"
        if method == "GET" and "wsdl" in {k.lower() for k in query}:
            env["QUERY_STRING"] = "wsdl"
            return self._run_spyne(port, env, start_response, "wsdl", None)
        if method != "POST":
            return _answer(start_response, 405, b"use POST (or GET ?wsdl)", "text/plain; charset=utf-8")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        op = _BODY_OP.search(body[:4000])
        operation = op.group(1).decode() if op else "?"
        env["wsgi.input"] = io.BytesIO(body)
        env["CONTENT_LENGTH"] = str(len(body))
        env["mplus.standin"] = self
        env["mplus.port"] = port
        fault = self.faults.decide(operation)
        if fault is not None and fault[0] in ("5xx", "timeout"):
            if fault[0] == "timeout":
                self.stopping.wait(fault[1])
            status = fault[1] if fault[0] == "5xx" else 504
            page = f"<html><body><h1>{status} Service Unavailable</h1></body></html>".encode()
            self._log(operation, port, status, fault[0])
            return _answer(start_response, status, page, "text/html; charset=utf-8")
        return self._run_spyne(port, env, start_response, operation, fault)

    def _run_spyne(self, port: int, env: dict, start_response, operation: str, fault: tuple | None):
        captured: dict[str, Any] = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        result = self._spyne(port, env)(env, capture)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status = int(str(captured.get("status", "500")).split()[0])
        headers = [(k, v) for k, v in captured.get("headers", []) if k.lower() != "content-length"]
        if fault is not None and fault[0] == "malformed":
            body, status = body[: max(1, len(body) // 2)], 200  # a cut envelope: not well-formed XML
        if operation != "wsdl":
            self._log(operation, port, status, fault[0] if fault else None)
        start_response(_status_line(status), headers + [("Content-Length", str(len(body)))])
        return [body]

    def _log(self, operation: str, port: int, status: int, fault: str | None) -> None:
        with self.lock:
            self.log.append(
                {"operation": operation, "port": port, "status": status, "fault": fault, "ts": round(time.time(), 6)}
            )

    def _control(self, environ: dict, sub: str) -> tuple[int, Any]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            if sub == "reset":
                if method != "POST":
                    return 405, {"message": "use POST"}
                self.reset()
                return 200, {"ok": True}
            if sub == "state":
                return (200, self.state()) if method == "GET" else (405, {"message": "use GET"})
            if sub == "clock":
                if method == "GET":
                    return 200, self.clock_view()
                if method != "POST":
                    return 405, {"message": "use GET or POST"}
                return 200, self.set_clock(_json_body(environ))
            if sub == "requests":
                if method != "GET":
                    return 405, {"message": "use GET"}
                query = parse_qs(environ.get("QUERY_STRING", ""))
                with self.lock:
                    entries = list(self.log)
                if "operation" in query:
                    entries = [e for e in entries if e["operation"] == query["operation"][0]]
                return 200, entries
            if sub == "faults":
                if method == "GET":
                    return 200, {"faults": self.faults.snapshot()}
                if method != "POST":
                    return 405, {"message": "use GET or POST"}
                return 200, {"faults": self.faults.configure(_json_body(environ))}
            match = _CUSTOMER_PATH.match(sub)
            if match:
                port = int(match.group(1))
                if method == "GET":
                    return 200, self.customer_view(port)
                if method != "POST":
                    return 405, {"message": "use GET or POST"}
                return 200, {"port": port, "changes": self.change_customer(port, _json_body(environ))}
        except BadRequest as exc:
            return 400, {"message": str(exc)}
        return 404, {"message": f"unknown control endpoint {CONTROL_PREFIX}{sub}"}


def _json_body(environ: dict) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Status')}"


def _answer(start_response, status: int, body: bytes, content_type: str) -> list[bytes]:
    start_response(_status_line(status), [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


# --------------------------------------------------------------------------------------------- server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # quiet: the request log is at /_sandbox/requests
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, BrokenPipeError | ConnectionResetError | ConnectionAbortedError | TimeoutError):
            super().handle_error(request, client_address)


class MplusServer:
    """The MplusKASSA stand-in on ``host:port`` (0: any free port) in a daemon thread.

    ``url`` is the server (``http://127.0.0.1:PORT``); a customer's endpoint is ``f"{url}/{port}/MplusQapi"``.
    """

    name = "mpluskassa"

    def __init__(self, port: int = 0, host: str = "127.0.0.1", clock=None) -> None:
        self.host = host
        self.port = port
        self.app = MplusStandIn(clock)
        self._server: _ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._server is not None:
            return self
        self.app.stopping.clear()
        self._server = make_server(
            self.host, self.port, self.app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox-mpluskassa", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.app.stopping.set()  # wake handlers waiting in an injected timeout
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._server, self._thread = None, None

    def reset(self) -> None:
        self.app.reset()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the MplusKASSA stand-in is not running")
        host, port = self._server.server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def endpoint(self, customer_port: int) -> str:
        """The SOAP endpoint of one customer (no credentials)."""
        return f"{self.url}/{customer_port}/{SERVICE}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="MplusKASSA (MplusQAPI) stand-in")
    parser.add_argument("--port", type=int, default=8705)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = MplusServer(args.port, args.host).start()
    print(f"MplusKASSA stand-in on {server.url} (endpoint {server.url}/<customer-port>/{SERVICE})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
