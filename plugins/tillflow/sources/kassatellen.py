"""Kassatellen POS: revenue groups and revenue per revenue group per hour.

Kassatellen's login is documented; its revenue endpoints are not public. tillflow defines this contract
(served by ``include/sandbox``, see ``include/sandbox/CONTRACT.md``); a real endpoint replaces it behind
the same client.

* ``POST /auth/login {"username", "password"}`` → ``{"success": true, "data": {"accessToken": <JWT>,
  "tokenType": "Bearer", "expiresIn": 3600}}``; refused → ``401 {"success": false, "message"}``.
  Every other call sends ``Authorization: Bearer <token>``. A token that expires mid-run (``401``) is
  renewed by logging in again, once per call; a login that is refused is an :class:`AuthError` at once
  (wrong e-mail or password: one clear error, never a retry storm).
* ``GET /api/v1/revenue-groups`` → ``{"success": true, "data": [{"id": 11, "name": "Keuken",
  "vatRate": 9, "active": true}, …]}``: every group the POS knows, with or without sales.
* ``GET /api/v1/revenue/hourly?from=<instant>&to=<instant>`` (ISO 8601 with offset, whole hours, ``to``
  exclusive, at most 32 days) → ``{"success": true, "data": [{"hourStart": "2026-10-25T00:00:00Z",
  "revenueGroupId": 11, "amountInclVat": 123.45, "amountExclVat": 113.26}, …]}``: hours with sales only,
  amounts as JSON numbers (parsed as Decimal, never float).

**Hours are instants.** The client asks for the UTC span of the window's business days (account
timezone and business-day cutoff, carried on the :class:`~tillflow.sources.base.Window`) and records both
in the landed request, so a replay parses the same. A row's hour becomes (business date, *hour of the
business day*): the number of whole hours since that business day started. A 25-hour business day
(autumn DST) has hours 0–24, the repeated local 02:00 included once per instant; a 23-hour day has 0–22.
Sales after midnight but before the cutoff belong to the previous business day.

Connection: ``host`` = base URL, ``login`` = the customer's Kassatellen e-mail, ``password`` = their
password; optional ``extra`` keys of :meth:`tillflow.http.HttpPolicy.from_extra`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import requests

from tillflow.errors import AuthError, ConfigError, RemoteError
from tillflow.http import HttpClient, HttpPolicy, url_from_host
from tillflow.records import RawPage, RefItem, Reject, RevenueLine, money
from tillflow.records import jsonable as _jsonable
from tillflow.sources.base import ConnectionInfo, SourceClient, Window

HOUR = timedelta(hours=1)
MAX_DAYS_PER_REQUEST = 31  # 31 business days (≤ 32 × 24 h, the contract's limit, on any DST day)


def business_day_start(day: date, tz: str, cutoff: time) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime.combine(day, cutoff, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def hour_of_business_day(instant: datetime, tz: str, cutoff: time) -> tuple[date, int]:
    """(business date, whole hours since that business day started) of an hour's start instant."""
    from tillflow.windows import business_date_of

    day = business_date_of(instant, tz, cutoff)
    elapsed = instant.astimezone(UTC) - business_day_start(day, tz, cutoff)
    return day, int(elapsed // HOUR)


def hour_start(day: date, hour: int, tz: str, cutoff: time) -> datetime:
    """The UTC instant at which hour ``hour`` of business day ``day`` starts (inverse of the above)."""
    return business_day_start(day, tz, cutoff) + hour * HOUR


class KassatellenClient(SourceClient):
    """Kassatellen POS. Connection: host = base URL, login = e-mail, password = password."""

    name: ClassVar[str] = "kassatellen"
    mapping_kind: ClassVar[str] = "revenue_group"
    conn_type: ClassVar[str] = "kassatellen"
    hook_name: ClassVar[str] = "Kassatellen POS"
    flows: ClassVar[tuple[str, ...]] = ("revenue_hourly", "revenue")

    def __init__(
        self,
        *,
        base_url: str,
        username: str,
        password: str,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        self.username = username
        self._password = password
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self.logins = 0
        session = requests.Session()
        session.headers.update({"Accept": "application/json"})
        self.http = HttpClient(
            base_url,
            policy=policy,
            secrets=(password,),
            name=self.name,
            rate_key=f"kassatellen:{username}",
            session=session,
            sleep=sleep,
        )

    @classmethod
    def from_connection(
        cls, conn: ConnectionInfo, *, policy: HttpPolicy | None = None, sleep: Callable[[float], None] | None = None
    ) -> KassatellenClient:
        """:raises ConfigError: naming the missing field (``host``, ``login`` e-mail, ``password``)."""
        for attr, label in (("host", "Host"), ("login", "e-mail"), ("password", "password")):
            if not getattr(conn, attr):
                raise ConfigError(f"connection {conn.conn_id}: {attr} (Kassatellen {label}) is required")
        return cls(
            base_url=url_from_host(conn.host, conn.port),
            username=conn.login,
            password=conn.password,
            policy=policy or HttpPolicy.from_extra(conn.extra),
            sleep=sleep,
        )

    # -- auth

    def _login(self, stale: str | None = None) -> str:
        with self._token_lock:
            if self._token is not None and self._token != stale:
                return self._token  # another thread renewed it already
            response = self.http.request(
                "POST",
                "/auth/login",
                json={"username": self.username, "password": self._password},
                ok_extra=(401,),
                parse_json=True,
                idempotent=True,
            )
            if response.status_code == 401:
                raise AuthError(
                    f"{self.name}: login refused for {self.username}: wrong e-mail or password "
                    "(the ones the customer uses to log into Kassatellen)"
                )
            body = json.loads(response.content, parse_float=Decimal)
            token = ((body or {}).get("data") or {}).get("accessToken") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise RemoteError(f"{self.name}: POST /auth/login answered without data.accessToken")
            self.http.add_secret(token)
            self.logins += 1
            self._token = token
            return token

    def _get(self, path: str, params: dict[str, str] | None = None) -> requests.Response:
        """A GET with the Bearer token; an expired token (401) is renewed by one new login, once."""
        token = self._token or self._login()
        for attempt in (1, 2):
            response = self.http.request(
                "GET",
                path,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                ok_extra=(401,),
                parse_json=True,
            )
            if response.status_code != 401:
                return response
            if attempt == 1:
                token = self._login(stale=token)
        raise AuthError(f"{self.name}: GET {path} refused (HTTP 401) even with a new token for {self.username}")

    # -- reference data

    def test_connection(self) -> list[RefItem]:
        """Log in and list every revenue group (what gets mapped to Eitje revenue groups)."""
        body = json.loads(self._get("/api/v1/revenue-groups").content, parse_float=Decimal)
        groups = body.get("data") if isinstance(body, dict) else None
        if not isinstance(groups, list):
            raise RemoteError(f"{self.name}: GET /api/v1/revenue-groups answered without a 'data' list")
        items = []
        for g in groups:
            if not isinstance(g, dict) or isinstance(g.get("id"), bool) or not isinstance(g.get("id"), int):
                raise RemoteError(
                    f"{self.name}: GET /api/v1/revenue-groups returned a group without an integer id: {g!r}"
                )
            items.append(
                RefItem(
                    key=str(g["id"]),
                    name=str(g.get("name") or g["id"]),
                    extra={"vat_rate": g.get("vatRate"), "active": g.get("active", True)},
                )
            )
        return items

    def reference_data(self) -> dict[str, list[RefItem]]:
        return {self.mapping_kind: self.test_connection()}

    # -- revenue

    def fetch(self, flow: str, window: Window) -> list[RawPage]:
        """The hourly revenue of the window's business days, one page per ≤ 31 business days."""
        if flow not in self.flows:
            raise ValueError(f"{self.name} has no flow {flow!r}; known: {', '.join(self.flows)}")
        tz, cutoff = window.tz or "Europe/Amsterdam", window.cutoff or time(5, 0)
        pages, start = [], window.start
        while start <= window.end:
            end = min(window.end, start + timedelta(days=MAX_DAYS_PER_REQUEST - 1))
            span = (business_day_start(start, tz, cutoff), business_day_start(end + timedelta(days=1), tz, cutoff))
            params = {"from": span[0].strftime("%Y-%m-%dT%H:%M:%SZ"), "to": span[1].strftime("%Y-%m-%dT%H:%M:%SZ")}
            response = self._get("/api/v1/revenue/hourly", params)
            pages.append(
                RawPage(
                    flow=flow,
                    request={
                        "method": "GET",
                        "path": "/api/v1/revenue/hourly",
                        "params": params,
                        "timezone": tz,
                        "cutoff": cutoff.strftime("%H:%M"),
                    },
                    body=response.content,
                    content_type=response.headers.get("Content-Type", "application/json"),
                )
            )
            start = end + timedelta(days=1)
        return pages

    def parse(self, page: RawPage) -> tuple[list[RevenueLine], list[Reject]]:
        """Rows → revenue lines keyed by (group, business date, hour of the business day). A bad row (a
        negative or non-numeric amount, an hour off the whole hour or outside the asked span) becomes a
        Reject with its reason; the rest still parse. A page that is not JSON is one Reject."""
        params = page.request.get("params") or {}
        tz = page.request.get("timezone") or "Europe/Amsterdam"
        cutoff = datetime.strptime(page.request.get("cutoff") or "05:00", "%H:%M").time()
        page_ref = f"{params.get('from', '?')}..{params.get('to', '?')}"
        try:
            body = json.loads(page.body, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            payload = {"request": page.request, "body_start": page.body[:2000].decode("utf-8", "replace")}
            return [], [Reject(reason="body is not valid JSON", payload=payload, ref=page_ref)]
        rows = body.get("data") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            return [], [Reject(reason="body has no 'data' list", payload={"request": page.request}, ref=page_ref)]
        try:
            span = (_instant(params["from"]), _instant(params["to"]))
        except (KeyError, ValueError):
            span = None
        lines: list[RevenueLine] = []
        rejects: list[Reject] = []
        seen: set[tuple[str, date, int]] = set()
        for row in rows:
            if not isinstance(row, dict):
                rejects.append(Reject(reason="row is not an object", payload={"row": _jsonable(row)}, ref=page_ref))
                continue
            ref = f"{row.get('hourStart')}/{row.get('revenueGroupId')}"
            line, reason = self._line(row, tz, cutoff, span)
            if line is None:
                rejects.append(Reject(reason=reason, payload=_jsonable(row), ref=ref))
                continue
            key = (line.source_key, line.business_date, line.hour)
            if key in seen:
                rejects.append(
                    Reject(
                        reason=f"duplicate row for group {line.source_key} hour {row.get('hourStart')}",
                        payload=_jsonable(row),
                        ref=ref,
                    )
                )
                continue
            seen.add(key)
            lines.append(line)
        return lines, rejects

    @staticmethod
    def _line(row: dict[str, Any], tz: str, cutoff: time, span) -> tuple[RevenueLine | None, str]:
        missing = [f for f in ("hourStart", "revenueGroupId", "amountInclVat", "amountExclVat") if row.get(f) is None]
        if missing:
            return None, f"missing field(s): {', '.join(missing)}"
        group = row["revenueGroupId"]
        if isinstance(group, bool) or not isinstance(group, int):
            return None, f"field 'revenueGroupId' is not an integer: {group!r}"
        try:
            start = _instant(row["hourStart"])
        except ValueError:
            return None, f"field 'hourStart' is not an ISO 8601 instant with offset: {row['hourStart']!r}"
        if start.minute or start.second or start.microsecond:
            return None, f"field 'hourStart' is not on a whole hour: {row['hourStart']}"
        if span is not None and not span[0] <= start < span[1]:
            return (
                None,
                f"hour {row['hourStart']} lies outside the business days asked for ({span[0]:%Y-%m-%dT%H:%MZ}..)",
            )
        amounts = {}
        for name in ("amountInclVat", "amountExclVat"):
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                return None, f"field '{name}' is not a number: {value!r}"
            amount = money(value)
            if amount < 0:
                return None, f"field '{name}' is negative: {amount}"
            amounts[name] = amount
        day, hour = hour_of_business_day(start, tz, cutoff)
        line = RevenueLine(
            source_key=str(group),
            business_date=day,
            hour=hour,
            amount_incl=amounts["amountInclVat"],
            amount_excl=amounts["amountExclVat"],
            ref=row["hourStart"],
        )
        return line, ""


def _instant(text: Any) -> datetime:
    if not isinstance(text, str) or ("Z" not in text and "+" not in text[10:] and "-" not in text[10:]):
        raise ValueError(f"no offset: {text!r}")
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"no offset: {text!r}")
    return ts.astimezone(UTC)
