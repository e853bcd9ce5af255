"""Ajour POS: locations and daily revenue per location.

Ajour publishes no API; Planday's Ajour form asks for CompanyID, User, Password, Database and Host.
tillflow defines this contract (served by ``include/sandbox``, see ``include/sandbox/CONTRACT.md``);
a real endpoint replaces it behind the same client.

* Auth on every call: HTTP Basic ``User:Password`` plus headers ``X-Ajour-Company: <CompanyID>`` and
  ``X-Ajour-Database: <Database>``; refused credentials answer ``401 {"error": "invalid_credentials"}``.
* ``GET /api/v1/locations`` → ``{"locations": [{"id": "L1", "name": "Restaurant"}, …]}``.
* ``GET /api/v1/revenue?from=YYYY-MM-DD&to=YYYY-MM-DD[&location=L1]`` (inclusive, at most 62 days,
  else 400) → ``{"companyId", "from", "to", "days": [{"date", "locationId", "totalInclVat": "1234.50",
  "totalExclVat": "987.60", "receipts"}]}``: one row per location per business day (Ajour closes
  business days itself), money as 2-dp strings, no rows before the day the POS enabled the integration.

Connection: ``host`` = base URL (``https://`` is assumed without a scheme; ``port`` is added when the
host has none), ``login`` = User, ``password`` = Password, ``schema`` = Database,
``extra.company_id`` = CompanyID; optional ``extra`` keys of :meth:`tillflow.http.HttpPolicy.from_extra`.
No client-side rate limit unless ``extra.rate_per_second`` is set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

import requests
from pydantic import ValidationError

from tillflow.errors import ConfigError, RemoteError
from tillflow.http import HttpClient, HttpPolicy, basic_auth_secret, url_from_host
from tillflow.records import RawPage, RefItem, Reject, RevenueLine, money
from tillflow.records import jsonable as _jsonable
from tillflow.sources.base import ConnectionInfo, SourceClient, Window

_REQUIRED = ("date", "locationId", "totalInclVat", "totalExclVat")


class AjourClient(SourceClient):
    """Ajour POS. Connection: host = base URL, login = User, password = Password, schema = Database,
    ``extra.company_id`` = CompanyID.

    :param base_url: scheme and host of the Ajour API.
    :param company_id: Ajour CompanyID.
    :param user: Ajour User.
    :param password: Ajour Password.
    :param database: Ajour Database.
    :param policy: HTTP policy; the default :class:`~tillflow.http.HttpPolicy` otherwise.
    :param sleep: wait function between retries (tests inject a fast one).
    """

    name: ClassVar[str] = "ajour"
    mapping_kind: ClassVar[str] = "location"
    conn_type: ClassVar[str] = "ajour"
    hook_name: ClassVar[str] = "Ajour POS"
    #: the contract answers 400 for longer ranges
    max_days_per_request: ClassVar[int] = 62
    flows: ClassVar[tuple[str, ...]] = ("revenue",)

    def __init__(
        self,
        *,
        base_url: str,
        company_id: str,
        user: str,
        password: str,
        database: str,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        extra_secrets: tuple[str, ...] = (),
    ):
        self.company_id = company_id
        session = requests.Session()
        session.auth = (user, password)
        session.headers.update(
            {"X-Ajour-Company": company_id, "X-Ajour-Database": database, "Accept": "application/json"}
        )
        self.http = HttpClient(
            base_url,
            policy=policy,
            secrets=(password, basic_auth_secret(user, password), *extra_secrets),
            name=self.name,
            rate_key=f"ajour:{company_id}",
            session=session,
            sleep=sleep,
        )

    @classmethod
    def from_connection(
        cls,
        conn: ConnectionInfo,
        *,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> AjourClient:
        """Build the client from an Airflow Connection's fields.

        :param policy: overrides the policy read from ``conn.extra``.
        :raises ConfigError: naming the missing field (``host``, ``login``, ``password``, ``schema``,
            ``extra.company_id``) or a bad policy key.
        """
        company_id = conn.extra.get("company_id")
        if company_id is None or str(company_id).strip() == "":
            raise ConfigError(f"connection {conn.conn_id}: extra.company_id (Ajour CompanyID) is required")
        for attr, label in (("host", "Host"), ("login", "User"), ("password", "Password"), ("schema", "Database")):
            if not getattr(conn, attr):
                raise ConfigError(f"connection {conn.conn_id}: {attr} (Ajour {label}) is required")
        return cls(
            base_url=url_from_host(conn.host, conn.port),
            company_id=str(company_id).strip(),
            user=conn.login,
            password=conn.password,
            database=conn.schema,
            policy=policy or HttpPolicy.from_extra(conn.extra),
            sleep=sleep,
            extra_secrets=tuple(conn.secrets()),
        )

    # -- reference data

    def test_connection(self) -> list[RefItem]:
        """Check the credentials and list the POS locations (what gets mapped to revenue units).

        :raises AuthError: when Ajour refuses CompanyID/User/Password/Database.
        """
        body = self.http.request_json("GET", "/api/v1/locations")
        locations = body.get("locations") if isinstance(body, dict) else None
        if not isinstance(locations, list):
            raise RemoteError(f"{self.name}: GET /api/v1/locations answered without a 'locations' list")
        items = []
        for loc in locations:
            if not isinstance(loc, dict) or loc.get("id") in (None, ""):
                raise RemoteError(f"{self.name}: GET /api/v1/locations returned a location without an id: {loc!r}")
            items.append(RefItem(key=str(loc["id"]), name=str(loc.get("name") or loc["id"])))
        return items

    def reference_data(self) -> dict[str, list[RefItem]]:
        return {self.mapping_kind: self.test_connection()}

    # -- revenue

    def fetch(self, flow: str, window: Window) -> list[RawPage]:
        """Fetch the raw revenue pages of ``window``, one per chunk of at most 62 days.

        A 2xx body that is not JSON is retried within the HTTP policy; the page is landed as received.
        """
        if flow not in self.flows:
            raise ValueError(f"{self.name} has no flow {flow!r}; known: {', '.join(self.flows)}")
        pages = []
        for chunk in self.chunks(window):
            params = {"from": chunk.start.isoformat(), "to": chunk.end.isoformat()}
            response = self.http.request("GET", "/api/v1/revenue", params=params, parse_json=True)
            pages.append(
                RawPage(
                    flow=flow,
                    request={"method": "GET", "path": "/api/v1/revenue", "params": params},
                    body=response.content,
                    content_type=response.headers.get("Content-Type", "application/json"),
                )
            )
        return pages

    def parse(self, page: RawPage) -> tuple[list[RevenueLine], list[Reject]]:
        """Parse one landed page into revenue lines; every bad row becomes a Reject, the rest still parse.

        A page that is not JSON at all (possible only when replaying an old landing) yields one Reject
        ``"body is not valid JSON"`` carrying the request and the start of the body, instead of raising:
        the batch goes on and the reject shows which window to refetch. A row repeating an earlier
        (date, location) with other amounts is rejected; an identical repeat is ignored.
        """
        params = page.request.get("params") or {}
        page_ref = f"{params.get('from', '?')}..{params.get('to', '?')}"
        try:
            body = json.loads(page.body, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            text = page.body[:2000].decode("utf-8", errors="replace")
            payload = {"request": page.request, "body_start": text, "body_bytes": len(page.body)}
            return [], [Reject(reason="body is not valid JSON", payload=payload, ref=page_ref)]
        rows = body.get("days") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            payload = {"request": page.request, "body": _jsonable(body)}
            return [], [Reject(reason="body has no 'days' list", payload=payload, ref=page_ref)]

        lines: list[RevenueLine] = []
        rejects: list[Reject] = []
        seen: dict[tuple[str, date], RevenueLine] = {}
        for row in rows:
            if not isinstance(row, dict):
                rejects.append(Reject(reason="row is not an object", payload={"row": _jsonable(row)}, ref=page_ref))
                continue
            ref = f"{row.get('date')}/{row.get('locationId')}"
            line, reason = self._line(row, ref)
            if line is None:
                rejects.append(Reject(reason=reason, payload=_jsonable(row), ref=ref))
                continue
            key = (line.source_key, line.business_date)
            first = seen.get(key)
            if first is None:
                seen[key] = line
                lines.append(line)
            elif (first.amount_incl, first.amount_excl) != (line.amount_incl, line.amount_excl):
                reason = f"duplicate row for {ref} with other amounts than the first ({first.amount_incl} incl)"
                rejects.append(Reject(reason=reason, payload=_jsonable(row), ref=ref))
        return lines, rejects

    @staticmethod
    def _line(row: dict[str, Any], ref: str) -> tuple[RevenueLine | None, str]:
        missing = [name for name in _REQUIRED if row.get(name) in (None, "")]
        if missing:
            return None, f"missing field(s): {', '.join(missing)}"
        raw_date = row["date"]
        try:
            business_date = date.fromisoformat(raw_date) if isinstance(raw_date, str) else None
        except ValueError:
            business_date = None
        if business_date is None:
            return None, f"field 'date' is not a date YYYY-MM-DD: {raw_date!r}"
        amounts = {}
        for name in ("totalInclVat", "totalExclVat"):
            try:
                amounts[name] = money(row[name])
            except ValueError:
                return None, f"field '{name}' is not a decimal amount: {row[name]!r}"
        try:
            line = RevenueLine(
                source_key=str(row["locationId"]),
                business_date=business_date,
                amount_incl=amounts["totalInclVat"],
                amount_excl=amounts["totalExclVat"],
                ref=ref,
            )
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return None, f"invalid row: {problems}"
        return line, ""
