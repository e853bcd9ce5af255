"""Eitje revenue: revenue groups and revenue per revenue group per day and per hour.

Eitje's open API (``https://open-api.eitje.app/open_api``) authenticates every call with four headers:
``Partner-Username``, ``Partner-Password`` (the integration partner's) and ``Api-Username``,
``Api-Password`` (the customer environment's). It lists ``revenue_groups`` and reads revenue
(``revenue_days``, date filters ``filters[start_date]``/``filters[end_date]``), but publishes **no write
endpoint** for revenue. The write below is *assumed* — the contract tillflow's stand-in serves
(``include/sandbox/CONTRACT.md``) — and kept behind this client so the real one replaces it:

* ``GET /open_api/revenue_groups`` → ``{"revenue_groups": [{"id": 501, "name": "Keuken"}, …]}``.
* ``PUT /open_api/revenue_groups/{id}/revenues`` ``{"date": "YYYY-MM-DD", "hour_start": <ISO 8601
  instant with offset> | null, "amount": <JSON number, 2 decimals>}`` upserts one value per group and
  hour (an hour is its start *instant*: the repeated 02:00 of an autumn DST day is two hours) or per
  group and day (``hour_start`` null) → ``201``/``200 {"revenue": {"id", "revenue_group_id", "date",
  "hour_start", "amount"}}``. ``404`` unknown group, ``422`` a field of the wrong type (the message names
  it): both refuse that row only.
* ``GET /open_api/revenue_groups/revenues?filters[start_date]&filters[end_date]`` (≤ 93 days) →
  ``{"revenues": [...]}`` as above: used for insert_only / keep_manual and for read-back.

Rows arrive keyed by (business date, hour of the business day); :meth:`EitjeClient.set_business_day`
gives the account's timezone and cutoff that turn them into instants and back.

Connection: ``host`` = base URL (default ``https://open-api.eitje.app``), ``login`` = Api-Username,
``password`` = Api-Password, ``extra.partner_username`` and ``extra.partner_password``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import ClassVar

import requests

from tillflow.errors import ConfigError, RemoteError
from tillflow.http import HttpClient, HttpPolicy, url_from_host
from tillflow.records import DeliveryResult, RefItem, TargetRow, money
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.sources.kassatellen import hour_of_business_day, hour_start
from tillflow.targets.base import TargetClient
from tillflow.targets.planday import json_body

_GROUPS = "/open_api/revenue_groups"
_READ = "/open_api/revenue_groups/revenues"
_READ_MAX_DAYS = 93


class EitjeClient(TargetClient):
    """Eitje. Connection: host, login = Api-Username, password = Api-Password, extra.partner_*."""

    name: ClassVar[str] = "eitje"
    mapping_kind: ClassVar[str] = "revenue_group"
    conn_type: ClassVar[str] = "eitje"
    hook_name: ClassVar[str] = "Eitje"
    flows: ClassVar[tuple[str, ...]] = ("revenue_hourly", "revenue")

    def __init__(
        self,
        *,
        base_url: str,
        api_username: str,
        api_password: str,
        partner_username: str,
        partner_password: str,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        self.api_username = api_username
        session = requests.Session()
        session.headers.update(
            {
                "Partner-Username": partner_username,
                "Partner-Password": partner_password,
                "Api-Username": api_username,
                "Api-Password": api_password,
                "Accept": "application/json",
            }
        )
        self.http = HttpClient(
            base_url,
            policy=policy,
            secrets=(api_password, partner_password),
            name=self.name,
            rate_key=f"eitje:{api_username}",
            session=session,
            sleep=sleep,
        )
        self.tz, self.cutoff = "Europe/Amsterdam", time(5, 0)

    @classmethod
    def from_connection(
        cls, conn: ConnectionInfo, *, policy: HttpPolicy | None = None, sleep: Callable[[float], None] | None = None
    ) -> EitjeClient:
        """:raises ConfigError: naming the missing field."""
        for attr, label in (("login", "Api-Username"), ("password", "Api-Password")):
            if not getattr(conn, attr):
                raise ConfigError(f"connection {conn.conn_id}: {attr} (Eitje {label}) is required")
        for key in ("partner_username", "partner_password"):
            if not conn.extra.get(key):
                raise ConfigError(
                    f"connection {conn.conn_id}: extra.{key} (Eitje {key.replace('_', '-').title()}) is required"
                )
        return cls(
            base_url=url_from_host(conn.host or "https://open-api.eitje.app", conn.port),
            api_username=conn.login,
            api_password=conn.password,
            partner_username=str(conn.extra["partner_username"]),
            partner_password=str(conn.extra["partner_password"]),
            policy=policy or HttpPolicy.from_extra(conn.extra),
            sleep=sleep,
        )

    def set_business_day(self, tz: str, cutoff: time) -> None:
        """The account's timezone and business-day cutoff (hours of the business day ↔ instants)."""
        self.tz, self.cutoff = tz, cutoff

    @classmethod
    def _group_id(cls, key: str) -> int:
        return cls.int_key(key, "an Eitje revenue group id")

    # -- reference data

    def test_connection(self) -> list[RefItem]:
        body = _json(self.http.request("GET", _GROUPS, parse_json=True))
        groups = body.get("revenue_groups") if isinstance(body, dict) else None
        if not isinstance(groups, list):
            raise RemoteError(f"{self.name}: GET {_GROUPS} answered without a 'revenue_groups' list")
        return [RefItem(key=str(g["id"]), name=str(g.get("name") or g["id"])) for g in groups if isinstance(g, dict)]

    def reference_data(self) -> dict[str, list[RefItem]]:
        return {self.mapping_kind: self.test_connection()}

    # -- revenue

    def read(self, window: Window) -> list[dict]:
        """Every revenue record Eitje holds in the window (≤ 93 days per call), amounts as Decimal."""
        out, start = [], window.start
        while start <= window.end:
            end = min(window.end, start + timedelta(days=_READ_MAX_DAYS - 1))
            params = {"filters[start_date]": start.isoformat(), "filters[end_date]": end.isoformat()}
            body = _json(self.http.request("GET", _READ, params=params, parse_json=True))
            recs = body.get("revenues") if isinstance(body, dict) else None
            if not isinstance(recs, list):
                raise RemoteError(f"{self.name}: GET {_READ} answered without a 'revenues' list")
            out += recs
            start = end + timedelta(days=1)
        return out

    def key_of(self, rec: dict) -> tuple[str, date, int | None]:
        """(group key, business date, hour of the business day or None) of a record read back."""
        if rec.get("hour_start") is None:
            return str(rec["revenue_group_id"]), date.fromisoformat(rec["date"]), None
        instant = datetime.fromisoformat(str(rec["hour_start"]).replace("Z", "+00:00")).astimezone(UTC)
        day, hour = hour_of_business_day(instant, self.tz, self.cutoff)
        return str(rec["revenue_group_id"]), day, hour

    def existing(
        self, flow: str, target_keys: list[str], window: Window
    ) -> dict[tuple[str, date, int | None], Decimal]:
        self._check(flow)
        wanted = set(target_keys)
        found = {}
        for rec in self.read(window):
            try:
                key = self.key_of(rec)
                amount = money(rec["amount"])
            except (KeyError, TypeError, ValueError) as exc:
                raise RemoteError(f"{self.name}: unreadable revenue record {rec!r} ({exc})") from None
            if key[0] in wanted and window.start <= key[1] <= window.end:
                found[key] = amount
        return found

    def read_revenue(self, target_keys: list[str], window: Window) -> dict[tuple[str, date, int | None], Decimal]:
        """Read-back (reconciliation): every value Eitje holds per (group key, business date, hour of the
        business day or None for a whole-day value) in ``window``, from ``GET /open_api/revenue_groups/revenues``.
        Hours map to business days with the account's timezone and cutoff (:meth:`set_business_day` first)."""
        return self.existing("revenue_hourly", target_keys, window)

    def deliver(self, flow: str, row: TargetRow) -> DeliveryResult:
        """Upsert one group's revenue for one hour (or day).

        :raises RemoteError: ``status`` 404/422 when Eitje refuses the row (its message, naming group,
            day and hour; permanent: the caller records it and goes on).
        """
        self._check(flow)
        group = self._group_id(row.target_key)
        starts = None if row.hour is None else hour_start(row.business_date, row.hour, self.tz, self.cutoff)
        payload = {
            "date": row.business_date.isoformat(),
            "hour_start": None if starts is None else starts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "amount": money(row.amount),  # a JSON number with its exact digits
        }
        what = f"group {group} on {row.business_date}" + ("" if starts is None else f" hour {payload['hour_start']}")
        response = self.http.request(
            "PUT",
            f"{_GROUPS}/{group}/revenues",
            data=json_body(payload),
            headers={"Content-Type": "application/json"},
            ok_extra=(404, 422),
            idempotent=True,
        )
        if response.status_code in (404, 422):
            raise RemoteError(
                f"{self.name}: {what} refused (HTTP {response.status_code}): {self._message(response)}",
                status=response.status_code,
            )
        body = _json(response)
        rec = body.get("revenue") if isinstance(body, dict) else None
        target_id = str(rec["id"]) if isinstance(rec, dict) and rec.get("id") is not None else None
        return DeliveryResult(status="delivered", target_id=target_id)

    def _message(self, response: requests.Response) -> str:
        body = _json(response, strict=False)
        text = body.get("message") if isinstance(body, dict) else None
        text = text or response.content[:300].decode("utf-8", "replace")
        return " ".join(self.http.mask(str(text)).split())[:300]


def _json(response: requests.Response, *, strict: bool = True):
    if not response.content.strip():
        return None
    try:
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:
        if strict:
            raise RemoteError(f"eitje: HTTP {response.status_code} body is not JSON") from None
        return None
