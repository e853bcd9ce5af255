"""Planday revenue: revenue units and one turnover value per unit per day.

Follows Planday's public OpenAPI (``https://openapi.planday.com``):

* OAuth2: ``POST /connect/token`` (form ``client_id``, ``grant_type=refresh_token``, ``refresh_token``)
  → ``{"access_token", "expires_in": 3600}``; the refresh token does not expire. Every API call sends
  ``Authorization: Bearer <access token>`` and ``X-ClientId: <client id>``.
* Limits (https://openapi.planday.com/gettingstarted/rate-limiting): per portal 10 requests/s and
  500/min (a newer reference: 20/s and 750/min), per client id 100/s and 2,000/min; every request counts
  against both; 429 with ``x-ratelimit-*``. tillflow paces itself with two process-wide limiters that
  every client of the worker process shares, whatever its account or thread: per portal (keyed by a
  hash of the refresh token, which identifies the portal's authorisation — never the token itself) at
  8/s (480/min), and per client id at 30/s (1,800/min, under 2,000/min).
* ``GET /revenue/v1.0/revenueunits?offset&limit`` (limit at most 50) → ``{"paging": {"offset", "limit",
  "total"}, "data": [{"id", "name", "departmentId"}]}``.
* ``POST /revenue/v1.0/revenue`` ``{"revenueUnitId": int, "date": "YYYY-MM-DD", "turnover": number,
  "description": string}`` (types as in Planday's DTO; ``turnover`` is written as a JSON number with the
  amount's exact digits, never through float) upserts the day → ``{"data": {"revenueUnitId",
  "dayScheduleId", …}}``. Planday documents no id of its own for a revenue record; the record's
  ``dayScheduleId`` (or an ``id``, should one be sent) is returned as the row's target id.
  ``409 "No opening day on date …"`` means the unit is closed that day: the row is skipped, not failed.
  A 400 (or 422) refuses that row: :class:`~tillflow.errors.RemoteError` with Planday's message.
* ``GET /revenue/v1.0/revenue?revenueUnitId&from&to&offset&limit`` → ``{"paging", "data":
  [{"revenueUnitId", "date", "turnover", "description"}]}`` (assumed read endpoint, paged like every
  Planday list; used to honour insert_only / keep_manual).

Connection: ``host`` = API base URL (default ``https://openapi.planday.com``), ``login`` = client id
(app id), ``password`` = refresh token, ``extra.token_url`` (default ``<host>/connect/token``), optional
``extra`` keys of :meth:`tillflow.http.HttpPolicy.from_extra` (``rate_per_second`` is the per-portal
limit) and ``extra.client_rate_per_second`` (the per-client-id limit).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

import requests

from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError
from tillflow.http import HttpClient, HttpPolicy, rate_limiter, url_from_host
from tillflow.records import DeliveryResult, RefItem, TargetRow, money
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.targets.base import TargetClient

_UNITS_PATH = "/revenue/v1.0/revenueunits"
_REVENUE_PATH = "/revenue/v1.0/revenue"
_REFUSED_GRANT = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
#: statuses with which Planday refuses one row (validation): recorded per row, the others go on
_ROW_REFUSED = (400, 422)


class PlandayClient(TargetClient):
    """Planday revenue API. Connection: host, login = client id, password = refresh token.

    :param base_url: API base URL.
    :param client_id: the Planday app's client id (sent as ``X-ClientId``; identifies the portal).
    :param refresh_token: the portal's refresh token.
    :param token_url: OAuth token endpoint; ``<base_url>/connect/token`` by default.
    :param policy: HTTP policy; its ``rate_per_second`` (per portal) defaults to
        :attr:`default_rate_per_second`.
    :param client_rate_per_second: the per-client-id limit, shared by every portal of the client id in
        this process; :attr:`default_client_rate_per_second` by default.
    :param sleep: wait function between retries (tests inject a fast one).
    :param clock: monotonic clock used for access-token expiry.
    """

    name: ClassVar[str] = "planday"
    mapping_kind: ClassVar[str] = "revenue_unit"
    conn_type: ClassVar[str] = "planday"
    hook_name: ClassVar[str] = "Planday"
    default_host: ClassVar[str] = "https://openapi.planday.com"
    flows: ClassVar[tuple[str, ...]] = ("revenue",)
    page_limit: ClassVar[int] = 50
    #: per portal: 8/s = 480/min, under the documented 10/s and 500/min
    default_rate_per_second: ClassVar[float] = 8.0
    #: per client id (one app serves many portals): 30/s = 1,800/min, under the documented 100/s and 2,000/min
    default_client_rate_per_second: ClassVar[float] = 30.0
    #: refresh this many seconds before the access token expires
    token_refresh_margin: ClassVar[float] = 60.0
    description: ClassVar[str] = "tillflow"

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        refresh_token: str,
        token_url: str | None = None,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        extra_secrets: tuple[str, ...] = (),
        client_rate_per_second: float | None = None,
    ):
        policy = policy or HttpPolicy()
        if policy.rate_per_second is None:
            policy = replace(policy, rate_per_second=self.default_rate_per_second)
        client_rate = (
            self.default_client_rate_per_second if client_rate_per_second is None else float(client_rate_per_second)
        )
        if not math.isfinite(client_rate) or client_rate <= 0:
            raise ConfigError(f"client_rate_per_second must be a positive number, got {client_rate_per_second!r}")
        self.client_id = client_id
        self._refresh_token = refresh_token
        self.token_url = token_url or f"{base_url.rstrip('/')}/connect/token"
        session = requests.Session()
        session.headers.update({"X-ClientId": client_id, "Accept": "application/json"})
        self.http = HttpClient(
            base_url,
            policy=policy,
            secrets=(refresh_token, *extra_secrets),
            name=self.name,
            rate_key=self.portal_rate_key(refresh_token),
            session=session,
            sleep=sleep,
            extra_limiters=(rate_limiter(f"planday:client:{client_id}", client_rate),),
        )
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    @staticmethod
    def portal_rate_key(refresh_token: str) -> str:
        """The process-wide per-portal limiter key: a refresh token belongs to one portal's authorisation
        of the app, so its hash (never the token) identifies the portal."""
        return f"planday:portal:{hashlib.sha256(refresh_token.encode()).hexdigest()[:16]}"

    @classmethod
    def from_connection(
        cls,
        conn: ConnectionInfo,
        *,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> PlandayClient:
        """Build the client from an Airflow Connection's fields.

        :param policy: overrides the policy read from ``conn.extra``.
        :raises ConfigError: naming ``login``, ``password``, ``extra.token_url``,
            ``extra.client_rate_per_second`` or a bad policy key.
        """
        if not conn.login:
            raise ConfigError(f"connection {conn.conn_id}: login (Planday client id) is required")
        if not conn.password:
            raise ConfigError(f"connection {conn.conn_id}: password (Planday refresh token) is required")
        base = url_from_host(conn.host, conn.port) if conn.host else cls.default_host
        token_url = conn.extra.get("token_url")
        if token_url is not None and (not isinstance(token_url, str) or "://" not in token_url):
            raise ConfigError(f"connection {conn.conn_id}: extra.token_url must be an absolute URL, got {token_url!r}")
        client_rate = conn.extra.get("client_rate_per_second")
        if client_rate is not None:
            try:
                if isinstance(client_rate, bool):
                    raise TypeError
                client_rate = float(client_rate)
            except (TypeError, ValueError):
                client_rate = math.nan
            if not math.isfinite(client_rate) or client_rate <= 0:
                raise ConfigError(
                    f"connection {conn.conn_id}: extra.client_rate_per_second must be a positive number, "
                    f"got {conn.extra['client_rate_per_second']!r}"
                )
        return cls(
            base_url=base,
            client_id=conn.login,
            refresh_token=conn.password,
            token_url=token_url,
            policy=policy or HttpPolicy.from_extra(conn.extra),
            sleep=sleep,
            extra_secrets=tuple(conn.secrets()),
            client_rate_per_second=client_rate,
        )

    # -- auth

    def access_token(self, *, stale: str | None = None) -> str:
        """A valid access token: the cached one, or a new one when it is missing, about to expire or
        equal to ``stale`` (just refused with 401).

        :raises AuthError: when Planday refuses the refresh token.
        """
        with self._token_lock:
            fresh = self._clock() < self._token_expires - self.token_refresh_margin
            if self._token and fresh and self._token != stale:
                return self._token
            form = {"client_id": self.client_id, "grant_type": "refresh_token", "refresh_token": self._refresh_token}
            response = self.http.request(
                "POST", self.token_url, data=form, ok_extra=(400, 401), parse_json=True, idempotent=True
            )
            body = _json(response, strict=response.status_code < 300)
            if response.status_code in (400, 401):
                error = body.get("error") if isinstance(body, dict) else None
                if response.status_code == 401 or error in _REFUSED_GRANT:
                    raise AuthError(f"Planday refused the refresh token for client {self.client_id}")
                raise RemoteError(
                    f"{self.name}: token endpoint answered HTTP 400 ({error or 'no error code'}) for client "
                    f"{self.client_id}",
                    status=400,
                )
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise RemoteError(f"{self.name}: token endpoint answered without an access_token")
            self.http.add_secret(token)
            try:
                lifetime = float(body.get("expires_in") or 3600)
            except (TypeError, ValueError):
                lifetime = 3600.0
            self._token, self._token_expires = token, self._clock() + lifetime
            return token

    def _api(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        ok_extra: tuple[int, ...] = (),
        idempotent: bool | None = None,
    ) -> requests.Response:
        """One API call with a Bearer token; a 401 refreshes the token once and repeats the call once."""
        token = self.access_token()
        for attempt in (1, 2):
            response = self.http.request(
                method,
                path,
                params=params,
                json=json,
                data=data,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                ok_extra=(*ok_extra, 401),
                parse_json=True,
                idempotent=idempotent,
            )
            if response.status_code != 401:
                return response
            if attempt == 1:
                token = self.access_token(stale=token)
        raise AuthError(
            f"{self.name}: {method} {path} refused (HTTP 401) for client {self.client_id} even with a new access token"
        )

    # -- reference data

    def _pages(self, path: str, params: dict[str, Any], what: str):
        """The records of every page of a Planday list (``limit=50`` until ``offset >= total``)."""
        offset = 0
        while True:
            body = _json(self._api("GET", path, params={**params, "offset": offset, "limit": self.page_limit}))
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise RemoteError(f"{self.name}: GET {path} answered without a 'data' list ({what}, offset {offset})")
            yield from data
            offset += len(data)
            total = (body.get("paging") or {}).get("total")
            if total is None:
                if len(data) < self.page_limit:
                    return
                continue
            if offset >= int(total):
                return
            if not data:
                raise TransientError(f"{self.name}: {what} paging ended early at offset {offset} of {total}; try again")

    def revenue_units(self) -> list[RefItem]:
        """All revenue units of the portal."""
        items: dict[str, RefItem] = {}
        for unit in self._pages(_UNITS_PATH, {}, "revenue units"):
            if not isinstance(unit, dict) or unit.get("id") is None:
                raise RemoteError(f"{self.name}: GET {_UNITS_PATH} returned a unit without an id: {unit!r}")
            key = str(unit["id"])
            extra = {"departmentId": unit["departmentId"]} if unit.get("departmentId") is not None else {}
            items[key] = RefItem(key=key, name=str(unit.get("name") or key), extra=extra)
        return list(items.values())

    def test_connection(self) -> list[RefItem]:
        """Check the client id and refresh token and list the revenue units rows are mapped to.

        :raises AuthError: when Planday refuses the refresh token or the access token.
        """
        return self.revenue_units()

    def reference_data(self) -> dict[str, list[RefItem]]:
        return {self.mapping_kind: self.revenue_units()}

    # -- revenue

    @classmethod
    def _unit_id(cls, key: str) -> int:
        return cls.int_key(key, "a Planday revenue unit id")

    def existing(
        self, flow: str, target_keys: list[str], window: Window
    ) -> dict[tuple[str, date, int | None], Decimal]:
        """Turnover Planday holds now per (unit key, day, None) in ``window``: per unit, the pages of
        ``limit=50`` until ``offset >= total``."""
        self._check(flow)
        found: dict[tuple[str, date, int | None], Decimal] = {}
        for key in dict.fromkeys(target_keys):
            unit_id = self._unit_id(key)
            params = {"revenueUnitId": unit_id, "from": window.start.isoformat(), "to": window.end.isoformat()}
            for rec in self._pages(_REVENUE_PATH, params, f"revenue of unit {unit_id}"):
                try:
                    if rec.get("revenueUnitId") is not None and int(rec["revenueUnitId"]) != unit_id:
                        continue
                    day = date.fromisoformat(rec["date"])
                    amount = money(rec["turnover"])
                except (AttributeError, KeyError, TypeError, ValueError) as exc:
                    raise RemoteError(
                        f"{self.name}: unreadable revenue record for unit {unit_id}: {rec!r} ({exc})"
                    ) from None
                if window.start <= day <= window.end:
                    found[(key, day, None)] = amount
        return found

    def read_revenue(self, target_keys: list[str], window: Window) -> dict[tuple[str, date, int | None], Decimal]:
        """Read-back (reconciliation): the turnover Planday holds per (unit key, day, None) in ``window``, from
        ``GET /revenue/v1.0/revenue`` per unit, every page."""
        return self.existing("revenue", target_keys, window)

    def deliver(self, flow: str, row: TargetRow) -> DeliveryResult:
        """Upsert the day's turnover of one revenue unit (a second POST for the day replaces the value).

        The body is serialised here so ``turnover`` is a JSON number with the amount's exact digits
        (``Decimal("1234.50")`` → ``1234.50``), never passing through float.

        :returns: ``delivered`` with Planday's id for the record as ``target_id`` (``id``, else its
            ``dayScheduleId``), or ``skipped`` with Planday's message on 409 (no opening day).
        :raises ValueError: for a row with an hour (Planday revenue is daily).
        :raises RemoteError: ``status=400``/``422`` when Planday refuses the row (its message, masked, on one
            line, naming the unit and day; permanent: the caller records it and goes on with the other
            rows), ``status=404`` when the unit does not exist in the portal.
        """
        self._check(flow)
        if row.hour is not None:
            raise ValueError(
                f"Planday revenue is daily; row for unit {row.target_key} on {row.business_date} has hour {row.hour}"
            )
        unit_id = self._unit_id(row.target_key)
        day = row.business_date.isoformat()
        payload = {
            "revenueUnitId": unit_id,
            "date": day,
            "turnover": money(row.amount),  # a JSON number in Planday's DTO, written with its exact digits
            "description": self.description,
        }
        try:
            # idempotent: Planday keeps one value per unit per day, so repeating the POST is harmless
            response = self._api(
                "POST",
                _REVENUE_PATH,
                data=json_body(payload),
                headers={"Content-Type": "application/json"},
                ok_extra=(*_ROW_REFUSED, 404, 409),
                idempotent=True,
            )
        except RemoteError as exc:
            detail = str(exc).removeprefix(f"{self.name}: ")
            raise RemoteError(f"{self.name}: unit {unit_id} on {day}: {detail}", status=exc.status) from None
        status = response.status_code
        if status == 409:
            message = self._vendor_message(response)
            return DeliveryResult(status="skipped", detail=message or f"HTTP 409 for unit {unit_id} on {day}")
        if status == 404:
            raise RemoteError(
                f"{self.name}: revenue unit {unit_id} does not exist for client {self.client_id} (HTTP 404 for "
                f"{day}): {self._vendor_message(response) or 'not found'}",
                status=404,
            )
        if status in _ROW_REFUSED:
            raise RemoteError(
                f"{self.name}: unit {unit_id} on {day} refused (HTTP {status}): "
                f"{self._vendor_message(response) or 'no message'}",
                status=status,
            )
        body = _json(response)
        data = body.get("data") if isinstance(body, dict) else None
        target_id = None
        if isinstance(data, dict):
            found = data.get("id", data.get("dayScheduleId"))
            if isinstance(found, int | str) and not isinstance(found, bool) and str(found):
                target_id = str(found)
        return DeliveryResult(status="delivered", target_id=target_id)

    def _vendor_message(self, response: requests.Response) -> str:
        """Planday's own message from an error body, masked, on one line, at most 300 characters."""
        body = _json(response, strict=False)
        parts: list[str] = []
        if isinstance(body, dict):
            for key in ("message", "Message", "error_description", "title", "detail", "error"):
                if isinstance(body.get(key), str) and body[key].strip():
                    parts.append(body[key])
                    break
            errors = body.get("errors")  # ASP.NET validation problem details: {"errors": {"Field": ["…"]}}
            if isinstance(errors, dict):
                parts += [
                    f"{field}: {'; '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
                    for field, msgs in errors.items()
                ]
        elif isinstance(body, str):
            parts.append(body)
        if not parts:
            parts.append(response.content[:600].decode(response.encoding or "utf-8", errors="replace"))
        text = " ".join(self.http.mask(" ".join(parts)).split())
        return text[:300] + ("…" if len(text) > 300 else "")


def json_body(payload: dict[str, Any]) -> bytes:
    """JSON with Decimal values as JSON numbers carrying their exact digits (never through float)."""
    marks: dict[str, str] = {}

    def default(value: Any) -> str:
        if isinstance(value, Decimal):
            key = f"\x00dec{len(marks)}\x00"
            marks[key] = format(value, "f")
            return key
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    text = json.dumps(payload, default=default)
    for key, digits in marks.items():
        text = text.replace(json.dumps(key), digits)
    return text.encode()


def _json(response: requests.Response, *, strict: bool = True) -> Any:
    """The body as JSON (floats as Decimal); ``None`` when empty, or unparseable and not ``strict``."""
    if not response.content.strip():
        return None
    try:
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:
        if strict:
            raise TransientError(f"planday: HTTP {response.status_code} body is not JSON") from None
        return None
