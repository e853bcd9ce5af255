"""Stand-in for Shiftbase's REST API (workforce: team days with turnover, timesheets, rosters).

Standard library only, nothing from ``tillflow``. Start it like the others::

    from sandbox.server import _Server
    from sandbox.shiftbase import ShiftbaseApp
    server = _Server(("127.0.0.1", 0), ShiftbaseApp())   # then serve_forever in a thread
    base_url = f"http://127.0.0.1:{server.server_address[1]}/api"

The contract is Shiftbase's public OpenAPI 3.0 document ("Shiftbase" 1.0, server
``https://api.shiftbase.com/api``; a copy is ``shiftbase-core.json`` in github.com/onestopmobile/shiftbase-sdk,
rendered at https://developer.shiftbase.com/). What it says, and what this stand-in does with it:

* **Auth** (securityScheme ``API``): ``Authorization: API <key>`` on every request. The stand-in accepts any
  key of the form ``sb-<anything>``; each key is one account with its own deterministic organisation.
* **Envelope**: every answer is ``{"data": …, "meta": {"status": "ok"|"error", "status_message", "feedback":
  [{"message", "level"[, "field"]}], "version"[, "validation_errors"]}}`` (``MetaResponse``). Success is
  ``"status": "ok"`` (the documents' examples; not ``"success"``).
* **Errors** as documented: ``400`` "Missing POST data" / "Missing PUT data" / "Id should be numeric";
  ``404`` "No record found for the id: …"; ``422`` "Failed to save" with one ``feedback`` entry per field
  (``level`` "validate", ``field``) and ``validation_errors: {field: [messages]}``; documented wordings
  are used where they exist ("This field cannot be left blank", "This field has to be numeric", "Team does
  not exist", "… is not a valid date").
* **Types**: the OpenAPI types ids and most numbers as *strings*: ``team_id`` ``^[0-9]+$``; TeamDay
  ``turnover``/``expenses``/``budget_cost``/``budget_time`` ``^([0-9]*[.])?[0-9]+$`` (nullable);
  Timesheet ``user_id``/``team_id``/``shift_id``/``rate_card_id``/``roster_id`` strings, ``date`` date,
  ``starttime``/``endtime`` time ``HH:MM:SS``, ``clocked_in``/``clocked_out`` ``YYYY-MM-DD HH:MM:SS``
  (nullable), ``break``/``paid_break`` string *or* number of minutes, ``status`` Approved|Declined|Pending.

Endpoints (all under ``/api``):

* ``GET /teams`` (``department_id``) → ``[{"Team": {…}}]``; ``GET /departments`` → ``[{"Department": {…}}]``;
  ``GET /users`` (``department_id``) → ``[{"User", "UsersGroup": [{department_id…}], "Team": [...], "Skill"}]``;
  ``GET /shifts`` (``department_id``) → ``[Shift]`` (not wrapped, as documented).
* ``GET /rosters?min_date&max_date&user_id&department_id`` → ``[{"Roster": {id, occurrence_id, department_id,
  team_id, shift_id, user_id, date, starttime, endtime, break}}]``: the planned shifts (deterministic, see
  :meth:`ShiftbaseApp.roster_for`).
* ``GET /team_days?min_date&max_date&team_id&department_id`` (``team_id[]``/``department_id[]`` repeat) →
  ``[{"TeamDay", "Team"}]``. ``POST /team_days`` → ``{"TeamDay"}``: one team day per (team, date); a POST
  for an existing team and date **updates** it (documented: "When there already is a record for the team and
  day it will update the existing one"). ``PUT /team_days/{id}`` → ``[{"TeamDay", "Team"}]`` (an array, as
  documented).
* ``GET /timesheets?min_date&max_date&user_id&status&department_id`` → ``[{"Timesheet", "ClockBreak": []}]``;
  ``POST /timesheets`` and ``PUT /timesheets/{id}`` → ``{"Timesheet"}``; ``POST /timesheets/batch`` with a JSON
  *array* of Timesheets (an item with ``id`` updates that timesheet, one without creates one) →
  ``[{"Timesheet"}, …]`` in body order, status_message "Timesheet has been successfully processed.". Several
  timesheets per user and day are allowed (Shiftbase has no natural key): updating needs the id.

Assumptions where the documents are silent (each chosen to be strict, so a client bug shows here first):

* ``401`` (undocumented) answers the envelope with status_message "Unauthorized" and never echoes the key.
* A write whose ``Content-Type`` is not ``application/json`` is ``415``; a body that is not JSON is ``422``
  "Malformed request data" (the documented wording of another endpoint).
* A value of the wrong JSON type is refused (``422``, naming the field and what was sent) even where PHP would
  coerce it: a number where the OpenAPI says string, a string where it says number/boolean.
* A field the schema does not have is refused (``422`` "This field does not exist on …"); read-only fields
  (``id``, ``account_id``, ``created``…) are ignored, as the API ignores them. ``department_id`` on a
  Timesheet is not in the schema but in every documented request example: accepted, and it must be the
  team's department.
* Required to create: a team day ``team_id`` and ``date`` (its key); a timesheet ``user_id``, ``team_id``,
  ``shift_id``, ``date``, ``starttime`` (the documented batch 422 example). A new timesheet's status defaults
  to "Pending". Money strings have at most 2 decimals (the API answers them with two).
* ``PUT /team_days/{id}`` may not move a team day to another team or date ("It's not possible to change this
  value"). Query parameters the endpoint does not document are a ``400``; ``min_date``/``max_date`` default to
  today (documented); no paging (none documented); no published rate limit, so none here.

Control: ``GET /_sandbox/state`` (every account), ``GET /_sandbox/accounts/{key}`` (one account: its org,
team days with ``writes`` counts, timesheets), plus the base class's ``reset``/``faults``/``requests``/``config``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from decimal import Decimal
from urllib.parse import unquote

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

SB_VERSION = "sandbox-1"
API_PREFIX = "/api"
_KEY_RE = re.compile(r"^sb-\S+$")
_NUMERIC_RE = re.compile(r"^[0-9]+$")
_DECIMAL_RE = re.compile(r"^([0-9]*[.])?[0-9]+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE = re.compile(r"^\d{2}:\d{2}:\d{2}$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_STATUSES = ("Approved", "Declined", "Pending")
FIRST_TEAM_DAY_ID = 6539001
FIRST_TIMESHEET_ID = 123013001

_TEAM_DAY_WRITABLE = ("team_id", "date", "note", "budget_cost", "budget_time", "turnover", "expenses")
_TEAM_DAY_MONEY = ("budget_cost", "budget_time", "turnover", "expenses")
_TEAM_DAY_READONLY = frozenset({"id", "account_id", "created", "updated", "created_by", "modified_by", "DateTime"})
_TS_ID_FIELDS = ("user_id", "team_id", "shift_id", "rate_card_id", "department_id")
_TS_REQUIRED = ("user_id", "team_id", "shift_id", "date", "starttime")
_TS_WRITABLE = frozenset(
    {
        *_TS_ID_FIELDS,
        "roster_id",
        "date",
        "starttime",
        "endtime",
        "clocked_in",
        "clocked_out",
        "clocked_in_latitude",
        "clocked_in_longitude",
        "clocked_in_accuracy",
        "clocked_out_latitude",
        "clocked_out_longitude",
        "clocked_out_accuracy",
        "clocked_out_verified_by",
        "break",
        "paid_break",
        "meals",
        "kilometers",
        "note",
        "status",
        "clock",
        "custom_fields",
        "total",
        "notify",
    }
)
_TS_READONLY = frozenset(
    {
        "id",
        "account_id",
        "clocked_in_ip",
        "clocked_in_origin",
        "clocked_in_verified_by",
        "clocked_out_ip",
        "clocked_out_origin",
        "clocked_break",
        "worked_for_vacation",
        "surcharge_time",
        "surcharge_pay",
        "deleted",
        "created",
        "updated",
        "reviewed",
        "created_by",
        "modified_by",
        "reviewed_by",
        "wage",
        "surcharge_total",
        "salary",
        "coc",
        "active_clock",
        "Rates",
        "datetime",
    }
)
_PARAMS = {
    "/teams": frozenset({"department_id"}),
    "/departments": frozenset(),
    "/users": frozenset({"department_id", "allow_deleted"}),
    "/shifts": frozenset({"department_id", "allow_deleted"}),
    "/rosters": frozenset({"min_date", "max_date", "user_id", "department_id"}),
    "/team_days": frozenset({"min_date", "max_date", "team_id", "department_id"}),
    "/timesheets": frozenset({"min_date", "max_date", "user_id", "status", "department_id", "include", "rates"}),
}

_DEPARTMENTS = ("Restaurant", "Bar")
#: (name, department index)
_TEAMS = (("Bediening", 0), ("Keuken", 0), ("Bar", 1))
#: (name, long name, department index, start, end, break minutes)
_SHIFTS = (("D", "Dagdienst", 0, "09:00:00", "17:00:00", "30"), ("A", "Avonddienst", 1, "17:00:00", "23:00:00", "0"))
#: (first name, last name, home team index)
_USERS = (
    ("Anna", "de Vries", 0),
    ("Bram", "Jansen", 1),
    ("Cato", "Bakker", 2),
    ("Daan", "Visser", 0),
    ("Eva", "Smit", 2),
)


def account_number(key: str) -> int:
    """The numeric account id of an API key (deterministic)."""
    return 10000 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 80000


def _now() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _money_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.quantize(Decimal("0.01")), "f")


class Invalid(Exception):
    """A 422 with per-field problems: ``[(field, message)]``."""

    def __init__(self, problems: list[tuple[str, str]], status_message: str = "Failed to save"):
        super().__init__(status_message)
        self.problems = problems
        self.status_message = status_message


class ShiftbaseApp(VendorApp):
    """Shiftbase's ``/api``: teams, departments, users, shifts, rosters, team days and timesheets."""

    name = "shiftbase"

    def reset_state(self) -> None:
        self.accounts: dict[str, dict] = {}
        self.next_team_day_id = FIRST_TEAM_DAY_ID
        self.next_timesheet_id = FIRST_TIMESHEET_ID

    # -- the organisation of an account (deterministic per key)

    @staticmethod
    def org_for(key: str) -> dict:
        """Departments, teams, shifts and users of the account of ``key`` (ids are numeric strings)."""
        acct = account_number(key)
        base = acct * 100
        departments = [
            {"id": str(base + 1 + i), "account_id": str(acct), "location_id": str(base + 9), "name": name}
            for i, name in enumerate(_DEPARTMENTS)
        ]
        teams = [
            {
                "id": str(base + 11 + i),
                "account_id": str(acct),
                "department_id": departments[d]["id"],
                "name": name,
                "color": "#0099ff",
                "order": "10",
                "deleted": False,
                "deleted_date": None,
                "hidden": False,
                "type": "default",
            }
            for i, (name, d) in enumerate(_TEAMS)
        ]
        shifts = [
            {
                "id": str(base + 31 + i),
                "account_id": str(acct),
                "department_id": departments[d]["id"],
                "name": short,
                "long_name": long,
                "starttime": start,
                "endtime": end,
                "break": brk,
                "paid_break": "0",
                "deleted": False,
            }
            for i, (short, long, d, start, end, brk) in enumerate(_SHIFTS)
        ]
        users = [
            {
                "id": str(base + 21 + i),
                "account_id": str(acct),
                "first_name": first,
                "prefix": "",
                "last_name": last,
                "name": f"{first} {last}",
                "display_name": f"{first} {last[:2]}",
                "employee_nr": str(i + 1),
                "startdate": "2020-01-01",
                "enddate": None,
                "team_id": teams[t]["id"],
                "department_id": teams[t]["department_id"],
            }
            for i, (first, last, t) in enumerate(_USERS)
        ]
        return {"account_id": str(acct), "departments": departments, "teams": teams, "shifts": shifts, "users": users}

    @classmethod
    def roster_for(cls, key: str, day: dt.date) -> list[dict]:
        """The planned shifts of every user on ``day``: a user is off one day in seven, and one day in five
        works in (is loaned to) the first team of the *other* department; otherwise in the home team."""
        org = cls.org_for(key)
        out = []
        for i, user in enumerate(org["users"]):
            n = day.toordinal() + i
            if n % 7 == 0:
                continue
            team = next(t for t in org["teams"] if t["id"] == user["team_id"])
            if n % 5 == 0:
                team = next(t for t in org["teams"] if t["department_id"] != user["department_id"])
            shift = next(s for s in org["shifts"] if s["department_id"] == team["department_id"])
            roster_id = str(70000000 + (day.toordinal() % 100000) * 10 + i)
            out.append(
                {
                    "id": roster_id,
                    "occurrence_id": f"{roster_id}:{day.isoformat()}",
                    "account_id": org["account_id"],
                    "department_id": team["department_id"],
                    "team_id": team["id"],
                    "shift_id": shift["id"],
                    "user_id": user["id"],
                    "date": day.isoformat(),
                    "starttime": shift["starttime"],
                    "endtime": shift["endtime"],
                    "break": shift["break"],
                    "loaned": team["department_id"] != user["department_id"],
                    "published": True,
                }
            )
        return out

    def _account(self, key: str) -> dict:
        acct = self.accounts.get(key)
        if acct is None:
            acct = self.accounts[key] = {**self.org_for(key), "team_days": {}, "timesheets": {}}
        return acct

    def _account_out(self, acct: dict) -> dict:
        return {
            "account_id": acct["account_id"],
            "departments": acct["departments"],
            "teams": acct["teams"],
            "shifts": acct["shifts"],
            "users": acct["users"],
            "team_days": [
                {**self._team_day_out(acct, r), "writes": r["writes"]}
                for r in sorted(acct["team_days"].values(), key=lambda r: (r["date"], r["team_id"]))
            ],
            "timesheets": [
                {**self._plain(self._timesheet_out(acct, r)), "writes": r["writes"]}
                for r in sorted(acct["timesheets"].values(), key=lambda r: int(r["id"]))
            ],
        }

    @staticmethod
    def _plain(obj: dict) -> dict:
        return {k: (format(v.value, "f") if isinstance(v, Number) else v) for k, v in obj.items()}

    def state(self) -> dict:
        return {"accounts": {key: self._account_out(acct) for key, acct in sorted(self.accounts.items())}}

    def control_extra(self, req: Request, sub: str) -> Response | None:
        if not sub.startswith("accounts/"):
            return None
        key = unquote(sub[len("accounts/") :])
        if not key or "/" in key:
            return self.error(404, "use /_sandbox/accounts/{key}")
        if req.method != "GET":
            return self.error(405, "use GET")
        with self.lock:
            return json_response(200, {"account": self._account_out(self._account(key))})

    # -- envelope

    def error(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
        meta = {
            "status": "error",
            "status_message": message,
            "feedback": [{"message": message, "level": "error"}],
            "version": SB_VERSION,
            **extra,
        }
        return json_response(status, {"data": [], "meta": meta}, headers)

    def _invalid(self, exc: Invalid) -> Response:
        feedback = [{"message": exc.status_message, "level": "error"}]
        errors: dict[str, list[str]] = {}
        for problem in exc.problems:
            field, message = problem[0], problem[1]
            entry = {"message": message, "level": "validate", "field": field}
            if len(problem) > 2:
                entry["index"] = problem[2]  # a batch item (assumed: the documents show no index)
            feedback.append(entry)
            errors.setdefault(field, []).append(message)
        meta = {
            "status": "error",
            "status_message": exc.status_message,
            "feedback": feedback,
            "version": SB_VERSION,
            "validation_errors": errors,
        }
        return json_response(422, {"data": [], "meta": meta})

    @staticmethod
    def _ok(data, message: str = "") -> Response:
        meta = {"status": "ok", "status_message": message, "feedback": [], "version": SB_VERSION}
        return json_numbers_response(200, {"data": data, "meta": meta})

    # -- dispatch

    def _authenticate(self, req: Request) -> str | None:
        auth = (req.headers.get("Authorization") or "").strip()
        kind, _, key = auth.partition(" ")
        key = key.strip()
        if kind != "API" or not _KEY_RE.match(key):
            return None
        return key

    def api(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if not path.startswith(API_PREFIX + "/"):
            return self.error(404, "Not found")
        path = path[len(API_PREFIX) :]
        key = self._authenticate(req)
        if key is None:
            return self.error(401, "Unauthorized", headers={"WWW-Authenticate": "API"})
        try:
            return self._route(req, path, key)
        except Invalid as exc:
            return self._invalid(exc)

    def _route(self, req: Request, path: str, key: str) -> Response:
        method = req.method
        if path in _PARAMS and method == "GET":
            self._check_params(req, path)
            with self.lock:
                acct = self._account(key)
            handler = {
                "/teams": self._list_teams,
                "/departments": self._list_departments,
                "/users": self._list_users,
                "/shifts": self._list_shifts,
                "/rosters": self._list_rosters,
                "/team_days": self._list_team_days,
                "/timesheets": self._list_timesheets,
            }[path]
            return handler(req, acct, key)
        if (method, path) == ("POST", "/team_days"):
            return self._write(req, key, lambda body, acct: self._post_team_day(body, acct))
        if (method, path) == ("POST", "/timesheets"):
            return self._write(req, key, lambda body, acct: self._post_timesheet(body, acct))
        if (method, path) == ("POST", "/timesheets/batch"):
            return self._write(req, key, lambda body, acct: self._batch(body, acct), kind="POST", array=True)
        m = re.fullmatch(r"/(team_days|timesheets)/([^/]+)", path)
        if m and method == "PUT":
            record_id = m.group(2)
            if not _NUMERIC_RE.match(record_id):
                return self.error(400, "Id should be numeric")
            if m.group(1) == "team_days":
                return self._write(req, key, lambda body, acct: self._put_team_day(body, acct, record_id), kind="PUT")
            return self._write(req, key, lambda body, acct: self._put_timesheet(body, acct, record_id), kind="PUT")
        known = set(_PARAMS) | {"/timesheets/batch"}
        if path in known or m:
            return self.error(405, f"Method {method} not allowed on {API_PREFIX}{path}")
        return self.error(404, "Not found")

    def _check_params(self, req: Request, path: str) -> None:
        allowed = _PARAMS[path]
        unknown = sorted(name for name in req.query if name.removesuffix("[]") not in allowed)
        if unknown:
            raise BadRequest(f"Unknown parameter(s) {unknown}; allowed: {sorted(allowed) or 'none'}")

    def _write(self, req: Request, key: str, handler, *, kind: str = "POST", array: bool = False) -> Response:
        media = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            return self.error(415, f"Content-Type must be application/json, got {media or 'none'}")
        if not req.body.strip():
            return self.error(400, f"Missing {kind} data")
        try:
            body = req.json()
        except BadRequest:
            return self.error(422, "Malformed request data")
        if array:
            if not isinstance(body, list):
                raise Invalid([("body", f"The body has to be an array of timesheets, got {json_type(body)}")])
            if not body:
                return self.error(400, f"Missing {kind} data")
        else:
            if not isinstance(body, dict):
                raise Invalid([("body", f"The body has to be an object, got {json_type(body)}")])
            if not body:
                return self.error(400, f"Missing {kind} data")
        with self.lock:
            return handler(body, self._account(key))

    # -- query helpers

    @staticmethod
    def _multi(req: Request, name: str) -> list[str]:
        values = list(req.query.get(name, [])) + list(req.query.get(f"{name}[]", []))
        return [v for v in values if v != ""]

    def _dates(self, req: Request) -> tuple[dt.date, dt.date]:
        today = dt.date.today()
        out = []
        for name in ("min_date", "max_date"):
            raw = req.arg(name)
            if raw in (None, ""):
                out.append(today)
                continue
            day = _parse_date(raw)
            if day is None:
                raise Invalid([(name, f"{raw} is not a valid date")], f"{raw} is not a valid date")
            out.append(day)
        if out[1] < out[0]:
            raise Invalid([("max_date", f"max_date {out[1]} is before min_date {out[0]}")], "Invalid date range")
        return out[0], out[1]

    # -- reference data

    @staticmethod
    def _team_out(team: dict) -> dict:
        return dict(team)

    def _list_teams(self, req: Request, acct: dict, key: str) -> Response:
        dept = req.arg("department_id")
        teams = [t for t in acct["teams"] if dept in (None, "") or t["department_id"] == dept]
        return self._ok([{"Team": self._team_out(t)} for t in teams])

    def _list_departments(self, req: Request, acct: dict, key: str) -> Response:
        return self._ok([{"Department": dict(d)} for d in acct["departments"]])

    def _list_shifts(self, req: Request, acct: dict, key: str) -> Response:
        dept = req.arg("department_id")
        return self._ok([dict(s) for s in acct["shifts"] if dept in (None, "") or s["department_id"] == dept])

    def _list_users(self, req: Request, acct: dict, key: str) -> Response:
        dept = req.arg("department_id")
        out = []
        for i, user in enumerate(acct["users"]):
            if dept not in (None, "") and user["department_id"] != dept:
                continue
            public = {k: v for k, v in user.items() if k not in ("team_id", "department_id")}
            group = {
                "id": str(int(user["id"]) * 10),
                "account_id": acct["account_id"],
                "department_id": user["department_id"],
                "user_id": user["id"],
                "group_id": str(int(acct["account_id"]) * 10 + 1 + i % 2),
            }
            team = next(t for t in acct["teams"] if t["id"] == user["team_id"])
            out.append({"User": public, "UsersGroup": [group], "Team": [self._team_out(team)], "Skill": []})
        return self._ok(out)

    def _list_rosters(self, req: Request, acct: dict, key: str) -> Response:
        start, end = self._dates(req)
        user = req.arg("user_id")
        depts = set(self._multi(req, "department_id"))
        out = []
        day = start
        while day <= end:
            for roster in self.roster_for(key, day):
                if user not in (None, "") and roster["user_id"] != user:
                    continue
                if depts and roster["department_id"] not in depts:
                    continue
                out.append({"Roster": roster})
            day += dt.timedelta(days=1)
        return self._ok(out)

    # -- field checks (each appends (field, message) problems)

    @staticmethod
    def _numeric_id(body: dict, name: str, problems: list, *, required: bool, nullable: bool = False) -> str | None:
        value = body.get(name)
        if value is None or value == "":
            if required or (name in body and value is None and not nullable):
                problems.append((name, "This field cannot be left blank"))
            return None
        if not isinstance(value, str):
            problems.append(
                (name, f"This field has to be a string (a numeric id), got {json_type(value)} {shown(value)}")
            )
            return None
        if not _NUMERIC_RE.match(value):
            problems.append((name, "This field has to be numeric"))
            return None
        return value

    @staticmethod
    def _decimal_string(body: dict, name: str, problems: list) -> Decimal | None:
        value = body.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            problems.append(
                (
                    name,
                    f'This field has to be a string with a decimal number such as "1234.50", '
                    f"got {json_type(value)} {shown(value)}",
                )
            )
            return None
        if not _DECIMAL_RE.match(value):
            problems.append((name, f"This field has to be a non-negative decimal number, got {shown(value)}"))
            return None
        amount = Decimal(value)
        if amount != amount.quantize(Decimal("0.01")):
            problems.append((name, f"This field has at most 2 decimals, got {shown(value)}"))
            return None
        return amount

    @staticmethod
    def _date(body: dict, name: str, problems: list, *, required: bool) -> dt.date | None:
        value = body.get(name)
        if value is None or value == "":
            if required or name in body:
                problems.append((name, "This field cannot be left blank"))
            return None
        if not isinstance(value, str):
            problems.append(
                (name, f"This field has to be a date string YYYY-MM-DD, got {json_type(value)} {shown(value)}")
            )
            return None
        day = _parse_date(value)
        if day is None:
            problems.append((name, f"{value} is not a valid date"))
        return day

    @staticmethod
    def _string(body: dict, name: str, problems: list, *, nullable: bool = True) -> None:
        value = body.get(name)
        if name in body and not (isinstance(value, str) or (value is None and nullable)):
            problems.append((name, f"This field has to be a string, got {json_type(value)} {shown(value)}"))

    @staticmethod
    def _unknown(body: dict, writable, readonly, model: str, problems: list) -> None:
        for name in sorted(set(body) - set(writable) - set(readonly)):
            problems.append((name, f"This field does not exist on {model}"))

    # -- team days

    def _team_day_out(self, acct: dict, rec: dict) -> dict:
        return {
            "id": rec["id"],
            "account_id": acct["account_id"],
            "team_id": rec["team_id"],
            "date": rec["date"],
            "created": rec["created"],
            "updated": rec["updated"],
            "created_by": None,
            "modified_by": None,
            "note": rec["note"],
            "budget_cost": _money_text(rec["budget_cost"]),
            "budget_time": _money_text(rec["budget_time"]),
            "turnover": _money_text(rec["turnover"]),
            "expenses": _money_text(rec["expenses"]),
            "DateTime": {},
        }

    def _team(self, acct: dict, team_id: str) -> dict | None:
        return next((t for t in acct["teams"] if t["id"] == team_id), None)

    def _list_team_days(self, req: Request, acct: dict, key: str) -> Response:
        start, end = self._dates(req)
        teams = set(self._multi(req, "team_id"))
        depts = set(self._multi(req, "department_id"))
        with self.lock:
            recs = sorted(acct["team_days"].values(), key=lambda r: (r["date"], int(r["team_id"])))
            out = []
            for rec in recs:
                team = self._team(acct, rec["team_id"])
                if not start.isoformat() <= rec["date"] <= end.isoformat():
                    continue
                if (teams and rec["team_id"] not in teams) or (depts and team["department_id"] not in depts):
                    continue
                out.append({"TeamDay": self._team_day_out(acct, rec), "Team": self._team_out(team)})
        return self._ok(out)

    def _team_day_values(self, body: dict, problems: list) -> dict:
        values = {}
        for name in _TEAM_DAY_MONEY:
            amount = self._decimal_string(body, name, problems)
            if name in body:
                values[name] = amount
        self._string(body, "note", problems)
        if "note" in body:
            values["note"] = body["note"]
        return values

    def _post_team_day(self, body: dict, acct: dict) -> Response:
        problems: list = []
        self._unknown(body, _TEAM_DAY_WRITABLE, _TEAM_DAY_READONLY, "TeamDay", problems)
        team_id = self._numeric_id(body, "team_id", problems, required=True)
        day = self._date(body, "date", problems, required=True)
        values = self._team_day_values(body, problems)
        if team_id is not None and self._team(acct, team_id) is None:
            problems.append(("team_id", "Team does not exist"))
        if problems:
            raise Invalid(problems)
        rec = next(
            (r for r in acct["team_days"].values() if r["team_id"] == team_id and r["date"] == day.isoformat()), None
        )
        if rec is None:
            rec = {
                "id": str(self.next_team_day_id),
                "team_id": team_id,
                "date": day.isoformat(),
                "created": _now(),
                "note": None,
                "budget_cost": None,
                "budget_time": None,
                "turnover": None,
                "expenses": None,
                "writes": 0,
            }
            self.next_team_day_id += 1
            acct["team_days"][rec["id"]] = rec
            message = "Team day has been successfully added"
        else:
            message = "Team day has been successfully edited"
        rec.update(values)
        rec["updated"] = _now()
        rec["writes"] += 1
        return self._ok({"TeamDay": self._team_day_out(acct, rec)}, message)

    def _put_team_day(self, body: dict, acct: dict, record_id: str) -> Response:
        rec = acct["team_days"].get(record_id)
        if rec is None:
            return self.error(404, f"No record found for the id: {record_id}")
        problems: list = []
        self._unknown(body, _TEAM_DAY_WRITABLE, _TEAM_DAY_READONLY, "TeamDay", problems)
        if "team_id" in body:
            team_id = self._numeric_id(body, "team_id", problems, required=True)
            if team_id is not None and team_id != rec["team_id"]:
                problems.append(("team_id", "It's not possible to change this value"))
        if "date" in body:
            day = self._date(body, "date", problems, required=True)
            if day is not None and day.isoformat() != rec["date"]:
                problems.append(("date", "It's not possible to change this value"))
        values = self._team_day_values(body, problems)
        if problems:
            raise Invalid(problems)
        rec.update(values)
        rec["updated"] = _now()
        rec["writes"] += 1
        team = self._team(acct, rec["team_id"])
        return self._ok([{"TeamDay": self._team_day_out(acct, rec), "Team": self._team_out(team)}])

    # -- timesheets

    def _timesheet_out(self, acct: dict, rec: dict) -> dict:
        total = _total_hours(rec)
        return {
            "id": rec["id"],
            "account_id": acct["account_id"],
            "user_id": rec["user_id"],
            "team_id": rec["team_id"],
            "shift_id": rec["shift_id"],
            "roster_id": rec.get("roster_id"),
            "rate_card_id": rec.get("rate_card_id"),
            "department_id": rec["department_id"],
            "date": rec["date"],
            "starttime": rec["starttime"],
            "clocked_in": rec.get("clocked_in"),
            "endtime": rec.get("endtime"),
            "clocked_out": rec.get("clocked_out"),
            "clocked_break": None,
            "total": f"{total:.6f}",
            "status": rec.get("status", "Pending"),
            "break": str(rec.get("break") or 0),
            "paid_break": str(rec.get("paid_break") or 0),
            "meals": rec.get("meals") or "0",
            "kilometers": rec.get("kilometers") or "0.00",
            "note": rec.get("note") or "",
            "clock": bool(rec.get("clock", False)),
            "custom_fields": rec.get("custom_fields") if rec.get("custom_fields") is not None else [],
            "deleted": False,
            "created": rec["created"],
            "updated": rec["updated"],
            "created_by": None,
            "modified_by": None,
            "datetime": {},
            "wage": "0.00",
            "surcharge_total": Number(total),
            "salary": Number(Decimal(0)),
            "coc": Number(Decimal(0)),
            "active_clock": False,
        }

    def _timesheet_values(self, body: dict, acct: dict, problems: list, *, creating: bool, current: dict) -> dict:
        """Check a Timesheet body; return the values to store (only the fields given)."""
        self._unknown(body, _TS_WRITABLE, _TS_READONLY, "Timesheet", problems)
        values: dict = {}
        for name in _TS_ID_FIELDS:
            if name in body or (creating and name in _TS_REQUIRED):
                value = self._numeric_id(body, name, problems, required=creating and name in _TS_REQUIRED)
                if name in body:
                    values[name] = value
        if "roster_id" in body:
            values["roster_id"] = self._numeric_id(body, "roster_id", problems, required=False, nullable=True)
        if "date" in body or creating:
            day = self._date(body, "date", problems, required=creating)
            if day is not None:
                values["date"] = day.isoformat()
        for name, required in (("starttime", creating), ("endtime", False)):
            if name not in body and not required:
                continue
            value = body.get(name)
            if value is None or value == "":
                if required or name == "starttime":
                    problems.append((name, "This field cannot be left blank"))
                else:
                    values[name] = None
            elif not isinstance(value, str):
                problems.append(
                    (name, f"This field has to be a time string HH:MM:SS, got {json_type(value)} {shown(value)}")
                )
            elif _parse_time(value) is None:
                problems.append((name, f"{value} is not a valid time (HH:MM:SS)"))
            else:
                values[name] = value
        for name in ("clocked_in", "clocked_out"):
            if name not in body:
                continue
            value = body[name]
            if value is None:
                values[name] = None
            elif not isinstance(value, str):
                problems.append(
                    (name, f"This field has to be a string YYYY-MM-DD HH:MM:SS, got {json_type(value)} {shown(value)}")
                )
            elif _parse_datetime(value) is None:
                problems.append((name, f"{value} is not a valid datetime (YYYY-MM-DD HH:MM:SS)"))
            else:
                values[name] = value
        for name in ("break", "paid_break"):
            if name not in body:
                continue
            value = body[name]
            minutes = _minutes(value)
            if minutes is None and value is not None:
                problems.append(
                    (
                        name,
                        "This field has to be a number of minutes (a string or a number), "
                        f"got {json_type(value)} {shown(value)}",
                    )
                )
            else:
                values[name] = minutes
        if "total" in body:
            total = body["total"]
            ok = (
                isinstance(total, str)
                and _DECIMAL_RE.match(total)
                or (isinstance(total, int | Decimal) and not isinstance(total, bool))
            )
            if not ok:
                problems.append(
                    ("total", f"This field has to be a string or a number, got {json_type(total)} {shown(total)}")
                )
        if "status" in body:
            status = body["status"]
            if status not in _STATUSES:
                problems.append(("status", f"This field has to be one of {', '.join(_STATUSES)}, got {shown(status)}"))
            else:
                values["status"] = status
        for name in (
            "meals",
            "kilometers",
            "note",
            "clocked_in_latitude",
            "clocked_in_longitude",
            "clocked_in_accuracy",
            "clocked_out_latitude",
            "clocked_out_longitude",
            "clocked_out_accuracy",
            "clocked_out_verified_by",
        ):
            self._string(body, name, problems)
            if name in body:
                values[name] = body[name]
        for name in ("clock", "notify"):
            if name in body and not isinstance(body[name], bool):
                problems.append(
                    (name, f"This field has to be a boolean, got {json_type(body[name])} {shown(body[name])}")
                )
        if "clock" in body and isinstance(body["clock"], bool):
            values["clock"] = body["clock"]
        if "custom_fields" in body:
            if body["custom_fields"] is not None and not isinstance(body["custom_fields"], list | dict):
                problems.append(
                    ("custom_fields", f"This field has to be an object, got {json_type(body['custom_fields'])}")
                )
            else:
                values["custom_fields"] = body["custom_fields"]
        # references, judged on the merged record
        merged = {**current, **values}
        user_id, team_id, shift_id = merged.get("user_id"), merged.get("team_id"), merged.get("shift_id")
        if "user_id" in values and user_id and not any(u["id"] == user_id for u in acct["users"]):
            problems.append(("user_id", "Unknown or inactive user"))
        team = self._team(acct, team_id) if team_id else None
        if "team_id" in values and team_id and team is None:
            problems.append(("team_id", "Team does not exist"))
        if "shift_id" in values and shift_id and not any(s["id"] == shift_id for s in acct["shifts"]):
            problems.append(("shift_id", "Shift does not exist"))
        dept = values.get("department_id")
        if dept and not any(d["id"] == dept for d in acct["departments"]):
            problems.append(("department_id", "Department does not exist"))
        elif dept and team is not None and team["department_id"] != dept:
            problems.append(("department_id", f"Team {team_id} does not belong to department {dept}"))
        if team is not None and ("team_id" in values or creating):
            values["department_id"] = dept or team["department_id"]
        return values

    def _create_timesheet(self, acct: dict, values: dict) -> dict:
        rec = {"id": str(self.next_timesheet_id), "status": "Pending", "created": _now(), "writes": 0, **values}
        self.next_timesheet_id += 1
        rec["updated"] = rec["created"]
        rec["writes"] = 1
        acct["timesheets"][rec["id"]] = rec
        return rec

    def _post_timesheet(self, body: dict, acct: dict) -> Response:
        problems: list = []
        values = self._timesheet_values(body, acct, problems, creating=True, current={})
        if problems:
            raise Invalid(problems)
        rec = self._create_timesheet(acct, values)
        return self._ok({"Timesheet": self._timesheet_out(acct, rec)}, "Timesheet has been successfully added.")

    def _put_timesheet(self, body: dict, acct: dict, record_id: str) -> Response:
        rec = acct["timesheets"].get(record_id)
        if rec is None:
            return self.error(404, f"No record found for the id: {record_id}")
        problems: list = []
        values = self._timesheet_values(body, acct, problems, creating=False, current=rec)
        if problems:
            raise Invalid(problems)
        rec.update(values)
        rec["updated"] = _now()
        rec["writes"] += 1
        return self._ok({"Timesheet": self._timesheet_out(acct, rec)}, "Timesheet has been successfully edited")

    def _batch(self, body: list, acct: dict) -> Response:
        """All or nothing: every item is checked first; any problem refuses the whole batch (``index`` in the
        feedback names the item: an assumption, the documents show none)."""
        problems: list = []
        plan = []
        for index, item in enumerate(body):
            if not isinstance(item, dict):
                problems.append(("body", f"Each item has to be a timesheet object, got {json_type(item)}", index))
                continue
            item_problems: list = []
            record_id = item.get("id")
            current = None
            if record_id is not None:
                if not isinstance(record_id, str) or not _NUMERIC_RE.match(record_id):
                    item_problems.append(("id", "Id should be numeric"))
                else:
                    current = acct["timesheets"].get(record_id)
                    if current is None:
                        item_problems.append(("id", f"No record found for the id: {record_id}"))
            values = self._timesheet_values(
                item, acct, item_problems, creating=record_id is None, current=current or {}
            )
            problems += [(f, m, index) for f, m in item_problems]
            plan.append((current, values))
        if problems:
            raise Invalid(problems, "Failed to save batch for timesheet")
        out = []
        for current, values in plan:
            if current is None:
                rec = self._create_timesheet(acct, values)
            else:
                rec = current
                rec.update(values)
                rec["updated"] = _now()
                rec["writes"] += 1
            out.append({"Timesheet": self._timesheet_out(acct, rec)})
        return self._ok(out, "Timesheet has been successfully processed.")

    def _list_timesheets(self, req: Request, acct: dict, key: str) -> Response:
        start, end = self._dates(req)
        user = req.arg("user_id")
        status = req.arg("status")
        if status not in (None, "") and status not in _STATUSES:
            raise Invalid([("status", f"status has to be one of {', '.join(_STATUSES)}, got {status!r}")])
        depts = set(self._multi(req, "department_id"))
        with self.lock:
            recs = sorted(acct["timesheets"].values(), key=lambda r: (r["date"], int(r["id"])))
            out = [
                {"Timesheet": self._timesheet_out(acct, r), "ClockBreak": []}
                for r in recs
                if start.isoformat() <= r["date"] <= end.isoformat()
                and (user in (None, "") or r["user_id"] == user)
                and (status in (None, "") or r.get("status", "Pending") == status)
                and (not depts or r["department_id"] in depts)
            ]
        return self._ok(out)


def _parse_date(value: str) -> dt.date | None:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _parse_time(value: str) -> dt.time | None:
    if not _TIME_RE.match(value):
        return None
    try:
        return dt.time.fromisoformat(value)
    except ValueError:
        return None


def _parse_datetime(value: str) -> dt.datetime | None:
    if not _DATETIME_RE.match(value):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def _minutes(value) -> int | None:
    """``break``/``paid_break``: a string of digits or a non-negative whole number of minutes."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return int(value) if _NUMERIC_RE.match(value) else None
    if isinstance(value, int | Decimal) and value >= 0 and value == int(value):
        return int(value)
    return None


def _total_hours(rec: dict) -> Decimal:
    """Worked hours: end − start (past midnight when end ≤ start) − unpaid break; 0 without an end time."""
    start, end = rec.get("starttime"), rec.get("endtime")
    if not start or not end:
        return Decimal(0)
    s, e = dt.time.fromisoformat(start), dt.time.fromisoformat(end)
    seconds = (e.hour * 3600 + e.minute * 60 + e.second) - (s.hour * 3600 + s.minute * 60 + s.second)
    if seconds <= 0:
        seconds += 86400
    seconds -= int(rec.get("break") or 0) * 60
    return (Decimal(max(seconds, 0)) / 3600).quantize(Decimal("0.000001"))
