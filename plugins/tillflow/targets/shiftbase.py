"""Shiftbase: revenue per team and day (team days' ``turnover``) and clock times (timesheets).

Contract: Shiftbase's public OpenAPI (server ``https://api.shiftbase.com/api``; rendered at
https://developer.shiftbase.com/, a copy is ``shiftbase-core.json`` in github.com/onestopmobile/shiftbase-sdk).

* Auth: ``Authorization: API <key>`` on every call (securityScheme ``API``). 401/403 → :class:`AuthError`.
* Every answer is ``{"data": …, "meta": {"status": "ok"|"error", "status_message", "feedback": [{"message",
  "level", "field"?}], "validation_errors"?: {field: [messages]}}}``. A ``422`` names the refused fields in
  ``feedback``/``validation_errors``; the :class:`RemoteError` raised here carries them.
* Team days: ``GET /team_days?min_date&max_date&team_id[]`` → ``[{"TeamDay", "Team"}]``; ``POST /team_days``
  ``{"team_id": "30952", "date": "2022-06-15", "turnover": "1000.00"}`` creates (or, documented, updates the
  existing record of that team and day); ``PUT /team_days/{id}`` edits. ``turnover`` is a *string*
  (``^([0-9]*[.])?[0-9]+$``): written here as the exact decimal digits, two decimals; ids are numeric strings.
* Timesheets: ``POST /timesheets`` / ``PUT /timesheets/{id}`` with a Timesheet (``user_id``, ``team_id``,
  ``shift_id``, ``date``, ``starttime`` required; times ``HH:MM:SS``; ``clocked_in``/``clocked_out``
  ``YYYY-MM-DD HH:MM:SS``; ``break`` minutes). Shiftbase has no natural key for a timesheet: the caller keeps
  the id :meth:`ShiftbaseClient.upsert_timesheet` returns and passes it back to update.
* Rosters (planned shifts): ``GET /rosters?min_date&max_date&user_id`` → ``[{"Roster": {department_id, team_id,
  shift_id, …}}]``; users ``GET /users`` → ``[{"User", "UsersGroup": [{department_id}], "Team": [...]}]``.

No published rate limit: the connection's ``extra`` may set one (``HttpPolicy.from_extra``).

Connection: ``host`` = base URL (default ``https://api.shiftbase.com/api``), ``password`` = the API key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

import requests

from tillflow.errors import ConfigError, RemoteError
from tillflow.http import HttpClient, HttpPolicy, url_from_host
from tillflow.records import DeliveryResult, RefItem, TargetRow, money
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.targets.base import TargetClient
from tillflow.targets.planday import json_body

DEFAULT_BASE_URL = "https://api.shiftbase.com/api"
_JSON = {"Content-Type": "application/json"}
_REFUSED = (400, 404, 422)


class ShiftbaseClient(TargetClient):
    """Shiftbase. Connection: host = base URL, password = API key."""

    name: ClassVar[str] = "shiftbase"
    mapping_kind: ClassVar[str] = "team"
    conn_type: ClassVar[str] = "shiftbase"
    hook_name: ClassVar[str] = "Shiftbase"
    flows: ClassVar[tuple[str, ...]] = ("revenue", "clock_times")
    #: which of this target's lists a source's mapping kind maps to (a POS branch → a team, an employee → a user)
    reference_for: ClassVar[dict[str, str]] = {"branch": "team", "employee": "user"}

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        session = requests.Session()
        session.headers.update({"Authorization": f"API {api_key}", "Accept": "application/json"})
        key_ref = hashlib.sha256(api_key.encode()).hexdigest()[:12]  # shares a limiter per account, shows no key
        self.http = HttpClient(
            base_url,
            policy=policy,
            secrets=(api_key, f"API {api_key}"),
            name=self.name,
            rate_key=f"shiftbase:{key_ref}",
            session=session,
            sleep=sleep,
        )
        self._users: dict[str, dict] | None = None

    @classmethod
    def from_connection(
        cls, conn: ConnectionInfo, *, policy: HttpPolicy | None = None, sleep: Callable[[float], None] | None = None
    ) -> ShiftbaseClient:
        """:raises ConfigError: without an API key (the connection's password)."""
        if not conn.password:
            raise ConfigError(f"connection {conn.conn_id}: password (the Shiftbase API key) is required")
        return cls(
            base_url=url_from_host(conn.host or DEFAULT_BASE_URL, conn.port),
            api_key=conn.password,
            policy=policy or HttpPolicy.from_extra(conn.extra),
            sleep=sleep,
        )

    # -- plumbing

    def _get(self, path: str, params: dict[str, Any] | None = None) -> list:
        """The ``data`` list of a GET; anything else is a :class:`RemoteError`."""
        response = self.http.request("GET", path, params=params, parse_json=True)
        data = self._data(response, f"GET {path}")
        if not isinstance(data, list):
            raise RemoteError(f"{self.name}: GET {path} answered without a 'data' list")
        return data

    def _data(self, response: requests.Response, what: str) -> Any:
        body = _json(response)
        meta = body.get("meta") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or meta.get("status") != "ok" or "data" not in body:
            raise RemoteError(f"{self.name}: {what} answered without Shiftbase's envelope (meta.status 'ok')")
        return body["data"]

    def _message(self, response: requests.Response) -> str:
        """Shiftbase's error message with the fields it names: ``Failed to save: turnover: …``."""
        body = _json(response, strict=False)
        meta = body.get("meta") if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            text = response.content[:300].decode("utf-8", "replace")
        else:
            parts = [str(meta.get("status_message") or f"HTTP {response.status_code}")]
            for entry in meta.get("feedback") or []:
                if isinstance(entry, dict) and entry.get("field"):
                    where = f"item {entry['index']} " if entry.get("index") is not None else ""
                    parts.append(f"{where}{entry['field']}: {entry.get('message', '')}")
            text = "; ".join(parts)
        return " ".join(self.http.mask(text).split())[:500]

    def _refused(self, response: requests.Response, what: str) -> RemoteError:
        return RemoteError(
            f"{self.name}: {what} refused (HTTP {response.status_code}): {self._message(response)}",
            status=response.status_code,
        )

    def _write(self, method: str, path: str, payload: Any, what: str) -> Any:
        response = self.http.request(
            method,
            path,
            data=json_body(payload) if isinstance(payload, dict) else json.dumps(payload).encode(),
            headers=_JSON,
            ok_extra=_REFUSED,
            idempotent=method == "PUT",
        )
        if response.status_code in _REFUSED:
            raise self._refused(response, what)
        return self._data(response, f"{method} {path}")

    @classmethod
    def _team_id(cls, key: str) -> str:
        return str(cls.int_key(key, "a Shiftbase team id"))

    # -- reference data

    def test_connection(self) -> list[RefItem]:
        """The account's teams (the mapping targets); raises AuthError when the key is refused."""
        out = []
        for item in self._get("/teams"):
            team = item.get("Team") if isinstance(item, dict) else None
            if isinstance(team, dict) and team.get("id") is not None:
                out.append(
                    RefItem(
                        key=str(team["id"]),
                        name=str(team.get("name") or team["id"]),
                        extra={"department_id": str(team.get("department_id") or "")},
                    )
                )
        return out

    def reference_data(self) -> dict[str, list[RefItem]]:
        """Teams (mapping kind), users (with their department) and departments; shifts too, as a timesheet
        needs a ``shift_id``."""
        departments = [
            RefItem(key=str(d["Department"]["id"]), name=str(d["Department"].get("name") or d["Department"]["id"]))
            for d in self._get("/departments")
            if isinstance(d, dict) and isinstance(d.get("Department"), dict)
        ]
        users = [
            RefItem(
                key=uid,
                name=str(u["User"].get("name") or uid),
                extra={"department_id": _user_department(u) or ""},
            )
            for uid, u in self._load_users().items()
        ]
        shifts = [
            RefItem(
                key=str(s["id"]),
                name=str(s.get("long_name") or s.get("name") or s["id"]),
                extra={"department_id": str(s.get("department_id") or "")},
            )
            for s in self._get("/shifts")
            if isinstance(s, dict) and s.get("id") is not None
        ]
        return {"team": self.test_connection(), "user": users, "department": departments, "shift": shifts}

    # -- revenue (team days)

    def _team_days(self, team_ids: list[str], start: date, end: date) -> list[dict]:
        params: dict[str, Any] = {"min_date": start.isoformat(), "max_date": end.isoformat()}
        if team_ids:
            params["team_id[]"] = team_ids
        out = []
        for item in self._get("/team_days", params):
            rec = item.get("TeamDay") if isinstance(item, dict) else None
            if not isinstance(rec, dict):
                raise RemoteError(f"{self.name}: GET /team_days item without a 'TeamDay': {item!r:.200}")
            out.append(rec)
        return out

    def existing(
        self, flow: str, target_keys: list[str], window: Window
    ) -> dict[tuple[str, date, int | None], Decimal]:
        """``{(team_id, date, None): turnover}`` of the team days with a turnover. Clock times have no
        amounts per key: ``{}``."""
        self._check(flow)
        if flow != "revenue" or not target_keys:
            return {}
        wanted = {self._team_id(k) for k in target_keys}
        found = {}
        for rec in self._team_days(sorted(wanted), window.start, window.end):
            if rec.get("turnover") is None:
                continue
            try:
                key = (str(rec["team_id"]), date.fromisoformat(rec["date"]), None)
                amount = money(rec["turnover"])
            except (KeyError, TypeError, ValueError) as exc:
                raise RemoteError(f"{self.name}: unreadable team day {rec!r:.200} ({exc})") from None
            if key[0] in wanted and window.start <= key[1] <= window.end:
                found[key] = amount
        return found

    def read_revenue(self, target_keys: list[str], window: Window) -> dict[tuple[str, date, int | None], Decimal]:
        """Read-back (reconciliation): ``{(team_id, date, None): turnover}`` of the teams' days in ``window``
        (``GET /team_days?min_date&max_date&team_id[]``); a team day without a turnover holds nothing."""
        return self.existing("revenue", target_keys, window)

    def deliver(self, flow: str, row: TargetRow) -> DeliveryResult:
        """Write one team's turnover for one day: PUT the team day when it exists (only when the value
        differs), else POST a new one. ``target_id`` is the team day's id.

        :raises RemoteError: ``status`` 422 (Shiftbase's message naming the field, e.g. a negative turnover,
            which its pattern refuses) or 404: the row is refused, permanently.
        """
        self._check(flow)
        if flow != "revenue":
            raise ConfigError(f"{self.name}: clock times are written with upsert_timesheet(), not deliver()")
        if row.hour is not None:
            raise ConfigError(f"{self.name}: team days hold a turnover per day; got hour {row.hour}")
        team = self._team_id(row.target_key)
        day = row.business_date
        turnover = _decimal_text(row.amount)
        what = f"team {team} on {day}"
        current = next(
            (
                r
                for r in self._team_days([team], day, day)
                if str(r.get("team_id")) == team and r.get("date") == str(day)
            ),
            None,
        )
        if current is not None and current.get("id") is not None:
            team_day_id = str(current["id"])
            if current.get("turnover") is not None and money(current["turnover"]) == money(row.amount):
                return DeliveryResult(status="delivered", detail="unchanged", target_id=team_day_id)
            self._write("PUT", f"/team_days/{team_day_id}", {"turnover": turnover}, what)
            return DeliveryResult(status="delivered", detail="updated", target_id=team_day_id)
        data = self._write("POST", "/team_days", {"team_id": team, "date": day.isoformat(), "turnover": turnover}, what)
        rec = data.get("TeamDay") if isinstance(data, dict) else None
        if not isinstance(rec, dict) or rec.get("id") is None:
            raise RemoteError(f"{self.name}: POST /team_days answered without a TeamDay id")
        return DeliveryResult(status="delivered", detail="created", target_id=str(rec["id"]))

    # -- clock times (timesheets)

    def upsert_timesheet(self, ts: dict, target_id: str | None) -> str:
        """Create a timesheet (``target_id`` None) or update that one; return its id.

        ``ts`` is a Shiftbase Timesheet as the OpenAPI types it (ids, times and minutes as strings), sent
        as given. A ``Decimal`` value goes out as a JSON number with its exact digits.

        :raises RemoteError: ``status`` 422 (the message names the refused fields), 404 (no such timesheet)
            or 400: permanent for this row.
        """
        if not isinstance(ts, dict):
            raise TypeError(f"a timesheet is a dict, got {type(ts).__name__}")
        if target_id is None:
            what = f"new timesheet of user {ts.get('user_id')} on {ts.get('date')}"
            data = self._write("POST", "/timesheets", ts, what)
        else:
            tid = str(self.int_key(target_id, "a Shiftbase timesheet id"))
            data = self._write("PUT", f"/timesheets/{tid}", ts, f"timesheet {tid}")
        rec = data.get("Timesheet") if isinstance(data, dict) else None
        if not isinstance(rec, dict) or rec.get("id") is None:
            raise RemoteError(f"{self.name}: the timesheet answer has no Timesheet id")
        return str(rec["id"])

    def set_business_day(self, tz: str, cutoff: Any = None) -> None:
        """The account's timezone: Shiftbase takes clock times as local wall times."""
        self.tz = tz

    def timesheet_payload(
        self,
        *,
        user_id: str,
        day: date,
        clock_in: datetime,
        clock_out: datetime | None,
        department_id: str | None,
    ) -> dict:
        """A Shiftbase Timesheet for one POS shift. ``team_id`` and ``shift_id`` (both required) come from the
        user's planned roster shift that day when it is in the department, else from the department's first
        team and shift; times are local wall times in the account's timezone (:meth:`set_business_day`)."""
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(getattr(self, "tz", None) or "Europe/Amsterdam")
        roster = self.planned_shift(user_id, day)
        if roster and (department_id is None or str(roster.get("department_id")) == str(department_id)):
            team_id, shift_id = str(roster["team_id"]), str(roster["shift_id"])
            department_id = department_id or str(roster.get("department_id") or "") or None
        else:
            refs = self._refs()
            teams = [
                t for t in refs["team"] if department_id is None or t.extra.get("department_id") == str(department_id)
            ]
            if not teams:
                raise RemoteError(
                    f"{self.name}: department {department_id} has no team to book user {user_id} on", status=422
                )
            shifts = [x for x in refs["shift"] if x.extra.get("department_id") in ("", str(department_id))]
            shift = (shifts or refs["shift"] or [None])[0]
            if shift is None:
                raise RemoteError(f"{self.name}: no shift to book user {user_id} on", status=422)
            team_id, shift_id = teams[0].key, shift.key
        start = clock_in.astimezone(zone)
        ts = {
            "user_id": str(user_id),
            "team_id": team_id,
            "shift_id": shift_id,
            "date": day.isoformat(),
            "starttime": start.strftime("%H:%M:%S"),
            "clocked_in": start.strftime("%Y-%m-%d %H:%M:%S"),
            "clocked_out": None,
        }
        if department_id:
            ts["department_id"] = str(department_id)
        if clock_out is not None:
            end = clock_out.astimezone(zone)
            ts["endtime"] = end.strftime("%H:%M:%S")
            ts["clocked_out"] = end.strftime("%Y-%m-%d %H:%M:%S")
        return ts

    def _refs(self) -> dict[str, list[RefItem]]:
        if getattr(self, "_ref_cache", None) is None:
            self._ref_cache = self.reference_data()
        return self._ref_cache

    def find_timesheet(self, ts: dict) -> str | None:
        """The id of a timesheet already holding this clock-in (same user, date and ``clocked_in``), or None:
        a create whose answer was lost may have landed, and Shiftbase has no key that would refuse a second."""
        day = date.fromisoformat(ts["date"])
        for sheet in self.timesheets(Window(day, day), user_id=ts["user_id"]):
            if str(sheet.get("clocked_in") or "") == str(ts.get("clocked_in") or "") and sheet.get("id") is not None:
                return str(sheet["id"])
        return None

    def timesheets(self, window: Window, user_id: str | None = None) -> list[dict]:
        """The timesheets in the window (read-back), optionally of one user."""
        params = {"min_date": window.start.isoformat(), "max_date": window.end.isoformat()}
        if user_id is not None:
            params["user_id"] = str(user_id)
        return [i["Timesheet"] for i in self._get("/timesheets", params) if isinstance(i, dict) and "Timesheet" in i]

    def planned_shift(self, user_id: str, day: date) -> dict | None:
        """The user's planned shift (Roster) on ``day`` — the earliest when several — or None."""
        params = {"min_date": day.isoformat(), "max_date": day.isoformat(), "user_id": str(user_id)}
        rosters = [
            r["Roster"]
            for r in self._get("/rosters", params)
            if isinstance(r, dict)
            and isinstance(r.get("Roster"), dict)
            and str(r["Roster"].get("user_id")) == str(user_id)
            and r["Roster"].get("date") == day.isoformat()
        ]
        return min(rosters, key=lambda r: str(r.get("starttime") or "")) if rosters else None

    def planned_department(self, user_id: str, day: date) -> str | None:
        """The department the user is planned in on ``day`` (from the roster), or None when not planned."""
        roster = self.planned_shift(user_id, day)
        dept = roster.get("department_id") if roster else None
        return None if dept in (None, "") else str(dept)

    def _load_users(self, refresh: bool = False) -> dict[str, dict]:
        if self._users is None or refresh:
            self._users = {
                str(u["User"]["id"]): u
                for u in self._get("/users")
                if isinstance(u, dict) and isinstance(u.get("User"), dict) and u["User"].get("id") is not None
            }
        return self._users

    def user_department(self, user_id: str) -> str | None:
        """The user's (first) department, or None for an unknown user or one without a department."""
        users = self._load_users()
        if str(user_id) not in users:
            users = self._load_users(refresh=True)
        user = users.get(str(user_id))
        return _user_department(user) if user else None


def _user_department(item: dict) -> str | None:
    for group in item.get("UsersGroup") or []:
        if isinstance(group, dict) and group.get("department_id"):
            return str(group["department_id"])
    for team in item.get("Team") or []:
        if isinstance(team, dict) and team.get("department_id"):
            return str(team["department_id"])
    return None


def _decimal_text(amount: Decimal) -> str:
    """A turnover as Shiftbase's decimal string: exact digits, two decimals (``"1234.50"``)."""
    return format(money(amount), "f")


def _json(response: requests.Response, *, strict: bool = True):
    if not response.content.strip():
        return None
    try:
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:
        if strict:
            raise RemoteError(f"shiftbase: HTTP {response.status_code} body is not JSON") from None
        return None
