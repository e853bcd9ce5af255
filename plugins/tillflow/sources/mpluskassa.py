"""MplusKASSA POS: branches, turnover per branch (per day or per hour), shifts (clock times), employees.

MplusKASSA publishes a SOAP API ("MplusQAPI"; served for tests by ``include/sandbox/mplus.py``):

* One endpoint per customer, ``https://api.mpluskassa.nl:{port}``; the credentials are the query
  parameters ``ident`` and ``secret`` of every call. Refused credentials answer a SOAP Fault
  (``faultcode Client``, ``faultstring "Invalid ident or secret"``): an :class:`AuthError`, never retried.
* ``getBranches`` → branchNumber, name; ``getEmployees`` → employeeNumber, name and authorisation group
  (an employee *without* an authorisation group is not returned, though he may clock in: his shifts still
  arrive and are rejected by the flow as unmapped); ``getCostCenters`` → costCenterNumber, description.
* ``reportTurnoverByBranch(fromFinancialDate, throughFinancialDate[, branchNumbers][, perHour])`` → per
  branch per financial date (per hour with ``perHour``) ``totalInclAmount``/``totalExclAmount`` in integer
  **cents**; ``financialDate`` is the business day.
* ``getShifts(branchNumbers, employeeNumbers, fromFinancialDate, throughFinancialDate)`` → shiftNumber,
  branchNumber, financialDate, employeeNumber, startTimestamp, endTimestamp (absent or nil while open),
  ended, manuallyModified and — tillflow's documented assumption — costCenterNumber.

Calls go through zeep (WSDL loaded once per client from ``{endpoint}?wsdl``) on a ``requests`` session
that adds ``ident``/``secret`` to every URL, so neither appears in the service address, zeep's logs or
the landed request. Every message is masked (:func:`tillflow.http.mask`) with both as secrets.
Connection errors, timeouts and HTTP 5xx answers that are not SOAP Faults are retried under the
:class:`~tillflow.http.HttpPolicy` (exponential backoff with jitter) and end in a :class:`TransientError`;
a body that is not a well-formed envelope is a :class:`RemoteError` naming the operation.

``fetch`` lands the raw response envelope of each call as it came (``reportTurnoverByBranch`` for
``revenue``/``revenue_hourly``, ``getShifts`` for ``clock_times``; at most 31 days per call), with the
operation and its parameters (never the credentials). ``parse`` reads a landed envelope with lxml alone
(no zeep, no network, no credentials), so replays parse the same:

* turnover rows → :class:`RevenueLine` (source key = branch number, cents → euros exactly); a negative
  amount, excl above incl or a malformed row → :class:`Reject` with the reason; ``hour`` is MplusKASSA's
  clock hour as sent (not re-counted from a business-day cutoff or across DST);
* shift rows → :class:`ShiftRecord` (aware instants; a timestamp without offset is read in the window's
  timezone recorded at fetch, Europe/Amsterdam by default); a shift that ends before it starts, lasts
  over 24 hours, is still open more than 24 hours after it started (judged against ``fetched_at``, the
  instant of the fetch landed with the page) or is ended without an end → :class:`Reject` with the reason.
  A ``clock_times`` fetch also asks ``getEmployees`` once and lands the listed numbers with each page
  (``listed_employees``), so a shift's ``employee_listed`` tells an employee the POS does not list (no
  authorisation group) from one that is listed but not mapped — in a replay too.

Connection: ``host`` = the customer's endpoint base URL (``https://api.mpluskassa.nl:34562``; the
stand-in: ``http://127.0.0.1:8705/7001``), ``port`` added when the host has none, ``login`` = API ident,
``password`` = API secret; ``extra.service_path`` = path of the SOAP service under the host (default
``MplusQapi``; ``""`` for the host itself) and the optional keys of :meth:`HttpPolicy.from_extra`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import requests
import tenacity
from lxml import etree
from pydantic import ValidationError

from tillflow import __version__
from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError
from tillflow.http import HttpPolicy, mask, url_from_host
from tillflow.records import RawPage, RefItem, Reject, RevenueLine, ShiftRecord
from tillflow.sources.base import ConnectionInfo, SourceClient, Window

__all__ = ["MplusKassaClient", "ShiftRecord", "cents_to_euros"]

log = logging.getLogger("tillflow.sources.mpluskassa")

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
DEFAULT_TZ = "Europe/Amsterdam"
MAX_DAYS_PER_REQUEST = 31
MAX_SHIFT = timedelta(hours=24)
_INT_RE = re.compile(r"^[+-]?\d+$")
_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(Z|[+-]\d{2}:\d{2})?$")  # xs:date, optionally with a zone
_AUTH_FAULT = re.compile(r"(?i)ident|secret|credential|authent|authori[sz]|login|password|not allowed")
_SNIPPET = 200


def cents_to_euros(cents: int) -> Decimal:
    """Integer cents as a 2-dp Decimal, exactly (``1999`` → ``19.99``, ``1`` → ``0.01``, ``-5`` → ``-0.05``)."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"cents must be an int, got {type(cents).__name__}: {cents!r}")
    sign, digits, _ = Decimal(cents).as_tuple()
    return Decimal((sign, digits, -2))


def _xml_parser() -> etree.XMLParser:
    # no entities, no network, no huge trees: a landed page is untrusted input
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True)


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _body(root: etree._Element) -> etree._Element | None:
    if _local(root) != "Envelope":
        return None
    return next((child for child in root if _local(child) == "Body"), None)


def _fault(body: etree._Element) -> tuple[str, str] | None:
    """(faultcode, faultstring) of a SOAP 1.1 (or 1.2) Fault in the body, or None."""
    fault = next((child for child in body if _local(child) == "Fault"), None)
    if fault is None:
        return None
    code = fault.findtext("faultcode") or fault.findtext(f"{{{SOAP12_ENV}}}Code/{{{SOAP12_ENV}}}Value") or ""
    text = fault.findtext("faultstring") or fault.findtext(f"{{{SOAP12_ENV}}}Reason/{{{SOAP12_ENV}}}Text") or ""
    return code.strip(), text.strip()


def _rows(body: etree._Element, operation: str, list_name: str, item_name: str) -> Iterator[dict[str, Any]]:
    """The items of ``<{operation}Response><{list_name}><{item_name}>…`` as {field: text | None}, any prefix."""
    response = next((child for child in body if _local(child) == f"{operation}Response"), None)
    if response is None:
        raise ValueError(f"no {operation}Response in the body")
    for container in response:
        if _local(container) != list_name:
            continue
        for item in container:
            if _local(item) != item_name:
                continue
            row: dict[str, Any] = {}
            for field in item:
                name = _local(field)
                if not name:
                    continue
                nil = (field.get(XSI_NIL) or "").strip() in ("true", "1")
                row[name] = None if nil else (field.text or "").strip()
            yield row


class _Retry(Exception):
    """One failed attempt the policy may retry (internal)."""

    def __init__(self, cause: str, detail: str = ""):
        super().__init__(cause)
        self.cause = cause
        self.detail = detail


class MplusKassaClient(SourceClient):
    """MplusKASSA POS over SOAP. Connection: host = endpoint base URL, login = ident, password = secret.

    :param endpoint: the SOAP endpoint of the customer (no credentials in it).
    :param ident: API ident (query parameter ``ident``).
    :param secret: API secret (query parameter ``secret``).
    :param policy: timeouts and retries; 4 attempts by default.
    :param sleep: wait function between retries (tests inject a fast one).
    :param extra_secrets: further values to mask (the Connection's other secrets).
    """

    name: ClassVar[str] = "mpluskassa"
    mapping_kind: ClassVar[str] = "branch"
    conn_type: ClassVar[str] = "mpluskassa"
    hook_name: ClassVar[str] = "MplusKASSA POS"
    #: revenue per day, revenue per hour (the ``revenue_hourly`` kind), shifts
    flows: ClassVar[tuple[str, ...]] = ("revenue", "revenue_hourly", "clock_times")
    max_days_per_request: ClassVar[int] = MAX_DAYS_PER_REQUEST
    default_service_path: ClassVar[str] = "MplusQapi"

    def __init__(
        self,
        *,
        endpoint: str,
        ident: str,
        secret: str,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        extra_secrets: tuple[str, ...] = (),
    ):
        from zeep import Settings
        from zeep.transports import Transport

        self.endpoint = endpoint.rstrip("/")
        self.policy = policy or HttpPolicy(max_attempts=4)
        self._secrets = [s for s in (secret, ident, *extra_secrets) if s]
        self._sleep = sleep or time.sleep
        self.session = requests.Session()
        self.session.params = {"ident": ident, "secret": secret}  # on every URL, never in the address
        self.session.headers["User-Agent"] = f"tillflow/{__version__}"
        self.transport = Transport(
            session=self.session, timeout=self.policy.timeout, operation_timeout=self.policy.timeout
        )
        self._settings = Settings(strict=True, xml_huge_tree=False, forbid_dtd=True, forbid_entities=True)
        self._service = None
        self._zeep = None
        self._lock = threading.Lock()
        self.calls = 0

    @classmethod
    def from_connection(
        cls,
        conn: ConnectionInfo,
        *,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> MplusKassaClient:
        """Build the client from an Airflow Connection's fields.

        :raises ConfigError: naming the missing field (``host``, ``login`` ident, ``password`` secret) or a
            bad policy key.
        """
        for attr, label in (("host", "endpoint URL"), ("login", "API ident"), ("password", "API secret")):
            if not getattr(conn, attr):
                raise ConfigError(f"connection {conn.conn_id}: {attr} (MplusKASSA {label}) is required")
        path = conn.extra.get("service_path", cls.default_service_path)
        if not isinstance(path, str):
            raise ConfigError(f"connection {conn.conn_id}: extra.service_path must be a string, got {path!r}")
        base = url_from_host(conn.host, conn.port)
        endpoint = f"{base}/{path.strip('/')}" if path.strip("/") else base
        return cls(
            endpoint=endpoint,
            ident=conn.login,
            secret=conn.password,
            policy=policy or HttpPolicy.from_extra(conn.extra, max_attempts=4),
            sleep=sleep,
            extra_secrets=tuple(conn.secrets()),
        )

    # -- plumbing

    def mask(self, text: str) -> str:
        return mask(text, self._secrets)

    def close(self) -> None:
        """Close the ``requests`` session under zeep (this client has no :class:`~tillflow.http.HttpClient`)."""
        self.session.close()

    def _retrying(self, what: str, attempt: Callable[[], Any]) -> Any:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            cause = exc.cause if isinstance(exc, _Retry) else type(exc).__name__
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "%s: %s -> %s; retry %d/%d in %.2fs",
                self.name,
                what,
                cause,
                state.attempt_number,
                self.policy.max_attempts - 1,
                wait,
            )

        backoff = tenacity.wait_random_exponential if self.policy.jitter else tenacity.wait_exponential
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.policy.max_attempts),
            wait=backoff(multiplier=self.policy.backoff_base, max=self.policy.backoff_max),
            retry=tenacity.retry_if_exception_type(_Retry),
            before_sleep=before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retry as last:
            detail = f": {last.detail}" if last.detail else ""
            raise TransientError(
                self.mask(
                    f"{self.name}: {what} still failing after {self.policy.max_attempts} attempt(s); "
                    f"last: {last.cause}{detail}"
                )
            ) from None

    def _network(self, exc: requests.RequestException) -> _Retry | RemoteError:
        kind = type(exc).__name__
        if isinstance(exc, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError):
            return _Retry(kind, self.mask(str(exc))[:_SNIPPET])
        return RemoteError(self.mask(f"{self.name}: request failed: {kind}: {exc}"))

    def _snippet(self, content: bytes) -> str:
        text = " ".join(self.mask(content[:4000].decode("utf-8", errors="replace")).split())
        return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "")

    def _service_proxy(self):
        """The zeep service bound to this customer's endpoint; the WSDL is loaded on first use, once."""
        with self._lock:
            if self._service is not None:
                return self._service
            from zeep import Client
            from zeep.exceptions import Error as ZeepError

            def load():
                try:
                    client = Client(f"{self.endpoint}?wsdl", transport=self.transport, settings=self._settings)
                except requests.HTTPError as exc:
                    status = exc.response.status_code if exc.response is not None else None
                    if status in (401, 403):
                        raise AuthError(f"{self.name}: ident/secret refused (HTTP {status}) loading the WSDL") from None
                    if status is not None and status in self.policy.retry_statuses:
                        raise _Retry(f"HTTP {status}") from None
                    raise RemoteError(
                        self.mask(f"{self.name}: loading the WSDL answered HTTP {status}"), status=status
                    ) from None
                except requests.RequestException as exc:
                    problem = self._network(exc)
                    raise problem from None
                except (ZeepError, etree.XMLSyntaxError) as exc:
                    raise RemoteError(self.mask(f"{self.name}: the WSDL is not usable: {exc}")[:300]) from None
                return client

            client = self._retrying("GET ?wsdl", load)
            service = next(iter(client.wsdl.services.values()))
            port = next(iter(service.ports.values()))
            self._zeep = client
            self._service = client.create_service(port.binding.name, self.endpoint)
            return self._service

    def call(self, operation: str, **params: Any) -> tuple[requests.Response, etree._Element]:
        """Call one operation; return the raw response and its SOAP Body once it is a proper answer.

        :raises AuthError: a SOAP Fault about the credentials (or HTTP 401/403); never retried.
        :raises RemoteError: another SOAP Fault, a body that is not a well-formed envelope, an unexpected status.
        :raises TransientError: connection errors, timeouts and 5xx answers still failing after the retries.
        """
        service = self._service_proxy()
        method = getattr(service, operation)

        def attempt() -> tuple[requests.Response, etree._Element]:
            self.calls += 1
            try:
                with self._zeep.settings(raw_response=True):
                    response = method(**params)
            except requests.RequestException as exc:
                raise self._network(exc) from None
            return response, self._judge(operation, response)

        return self._retrying(operation, attempt)

    def _judge(self, operation: str, response: requests.Response) -> etree._Element:
        status = response.status_code
        if status in (401, 403):
            raise AuthError(f"{self.name}: ident/secret refused (HTTP {status}) on {operation}")
        try:
            root = etree.fromstring(response.content, parser=_xml_parser())
        except etree.XMLSyntaxError:
            root = None
        body = _body(root) if root is not None else None
        if body is None:
            if status in self.policy.retry_statuses:
                raise _Retry(f"HTTP {status}", self._snippet(response.content))
            if 200 <= status < 300:
                raise RemoteError(
                    f"{self.name}: {operation} answered a malformed SOAP envelope (HTTP {status}, "
                    f"{len(response.content)} bytes): {self._snippet(response.content)}",
                    status=status,
                )
            raise RemoteError(
                f"{self.name}: {operation} answered HTTP {status}: {self._snippet(response.content)}", status=status
            )
        fault = _fault(body)
        if fault is not None:
            code, text = fault
            local_code = code.split(":")[-1]
            shown = self.mask(f"{code}: {text}")[:_SNIPPET]
            client_side = local_code.split(".")[0] in ("Client", "Sender")
            if _AUTH_FAULT.search(text) and (client_side or "invalid" in text.lower()):
                raise AuthError(
                    f"{self.name}: ident/secret refused on {operation} (SOAP Fault {shown}); check the API ident "
                    "and secret of this customer's MplusKASSA endpoint"
                )
            raise RemoteError(
                f"{self.name}: {operation} answered a SOAP Fault {shown}", status=400 if client_side else None
            )
        if status != 200:
            if status in self.policy.retry_statuses:
                raise _Retry(f"HTTP {status}", self._snippet(response.content))
            raise RemoteError(f"{self.name}: {operation} answered HTTP {status}", status=status)
        if not any(_local(child) == f"{operation}Response" for child in body):
            raise RemoteError(
                f"{self.name}: {operation} answered without {operation}Response: {self._snippet(response.content)}"
            )
        return body

    def _list(self, operation: str, list_name: str, item_name: str) -> list[dict[str, Any]]:
        _, body = self.call(operation)
        return list(_rows(body, operation, list_name, item_name))

    # -- reference data

    def branches(self) -> list[RefItem]:
        """The customer's branches (what revenue maps on)."""
        items = []
        for row in self._list("getBranches", "branchList", "branch"):
            key = row.get("branchNumber")
            if not key:
                raise RemoteError(f"{self.name}: getBranches returned a branch without a branchNumber: {row!r}")
            items.append(RefItem(key=key, name=row.get("name") or key))
        return items

    def employees(self) -> list[RefItem]:
        """Employees with an authorisation group (MplusKASSA lists no others, though they may clock in)."""
        items = []
        for row in self._list("getEmployees", "employeeList", "employee"):
            key = row.get("employeeNumber")
            if not key:
                raise RemoteError(f"{self.name}: getEmployees returned an employee without a number: {row!r}")
            extra = {
                "authorisation_group": row.get("authorisationGroupNumber"),
                "authorisation_group_name": row.get("authorisationGroupName"),
            }
            items.append(RefItem(key=key, name=row.get("name") or key, extra={k: v for k, v in extra.items() if v}))
        return items

    def cost_centers(self) -> list[RefItem]:
        items = []
        for row in self._list("getCostCenters", "costCenterList", "costCenter"):
            key = row.get("costCenterNumber")
            if not key:
                raise RemoteError(f"{self.name}: getCostCenters returned a cost centre without a number: {row!r}")
            items.append(RefItem(key=key, name=row.get("description") or key))
        return items

    def test_connection(self) -> list[RefItem]:
        """Check ident/secret and list the branches.

        :raises AuthError: when MplusKASSA refuses the ident/secret.
        """
        return self.branches()

    def reference_data(self) -> dict[str, list[RefItem]]:
        return {"branch": self.branches(), "employee": self.employees(), "cost_center": self.cost_centers()}

    # -- fetch

    def fetch(self, flow: str, window: Window) -> list[RawPage]:
        """The raw response envelopes of ``window`` (one per ≤ 31 days): turnover for ``revenue`` (per day) and
        ``revenue_hourly`` (per hour), shifts for ``clock_times``."""
        if flow not in self.flows:
            raise ValueError(f"{self.name} has no flow {flow!r}; known: {', '.join(self.flows)}")
        pages = []
        for chunk in self.chunks(window):
            dates = {"fromFinancialDate": chunk.start, "throughFinancialDate": chunk.end}
            if flow == "clock_times":
                operation, args = "getShifts", dict(dates)
            else:
                operation, args = "reportTurnoverByBranch", {**dates, "perHour": flow == "revenue_hourly"}
            response, _ = self.call(operation, **args)
            params = {k: v.isoformat() if isinstance(v, date) else v for k, v in args.items()}
            request = {
                "method": "POST",
                "operation": operation,
                "endpoint": self.mask(self.endpoint),
                "params": params,
                "timezone": window.tz or DEFAULT_TZ,
            }
            if flow == "clock_times":  # how long an open shift has been open is judged against this instant
                request["fetched_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            pages.append(
                RawPage(
                    flow=flow,
                    request=request,
                    body=response.content,
                    content_type=response.headers.get("Content-Type", "text/xml; charset=utf-8"),
                )
            )
        if flow == "clock_times" and pages:
            listed = self._listed_employees()
            if listed is not None:  # lands with the shifts: a replay tells unlisted from unmapped the same way
                pages = [p.model_copy(update={"request": {**p.request, "listed_employees": listed}}) for p in pages]
        return pages

    def _listed_employees(self) -> list[str] | None:
        """The employee numbers ``getEmployees`` lists now, or None when the POS does not answer (then a shift
        of an unmapped employee is only "not mapped"; the shifts themselves still land)."""
        try:
            return sorted({str(int(item.key)) for item in self.employees()}, key=int)
        except AuthError:
            raise
        except (RemoteError, TransientError, ValueError) as exc:
            log.warning("%s: getEmployees failed, unlisted employees are reported as unmapped: %s", self.name, exc)
            return None

    # -- parse (no network, no credentials)

    def parse(self, page: RawPage) -> tuple[list[RevenueLine] | list[ShiftRecord], list[Reject]]:
        """Turnover rows → revenue lines, shift rows → shift records; every bad row is a Reject with its reason
        (the rest still parse). A body that is not a SOAP envelope with the operation's answer is one Reject."""
        operation = page.request.get("operation") or (
            "getShifts" if page.flow == "clock_times" else "reportTurnoverByBranch"
        )
        params = page.request.get("params") or {}
        page_ref = f"{operation} {params.get('fromFinancialDate', '?')}..{params.get('throughFinancialDate', '?')}"
        try:
            root = etree.fromstring(page.body, parser=_xml_parser())
        except etree.XMLSyntaxError as exc:
            payload = {"request": page.request, "body_start": page.body[:2000].decode("utf-8", "replace")}
            return [], [Reject(reason=f"body is not well-formed XML: {exc}", payload=payload, ref=page_ref)]
        body = _body(root)
        fault = _fault(body) if body is not None else None
        if body is None or fault is not None:
            reason = "body is not a SOAP envelope" if body is None else f"body is a SOAP Fault {fault[0]}: {fault[1]}"
            payload = {"request": page.request, "body_start": page.body[:2000].decode("utf-8", "replace")}
            return [], [Reject(reason=reason, payload=payload, ref=page_ref)]
        try:
            if operation == "getShifts":
                rows = list(_rows(body, operation, "shiftList", "shift"))
                fetched_at = page.request.get("fetched_at")
                listed = page.request.get("listed_employees")
                return _parse_shifts(
                    rows,
                    ZoneInfo(page.request.get("timezone") or DEFAULT_TZ),
                    fetched_at=datetime.fromisoformat(fetched_at) if fetched_at else None,
                    listed=set(listed) if listed is not None else None,
                )
            rows = list(_rows(body, operation, "turnoverList", "turnover"))
        except ValueError as exc:
            return [], [Reject(reason=str(exc), payload={"request": page.request}, ref=page_ref)]
        return _parse_turnover(rows)


# ------------------------------------------------------------------------------------------- row parsing


def _int(row: dict[str, Any], name: str) -> int:
    value = row.get(name)
    if value is None or not _INT_RE.match(value):
        raise ValueError(f"field '{name}' is not an integer: {value!r}")
    return int(value)


def _date(row: dict[str, Any], name: str) -> date:
    value = row.get(name) or ""
    match = _DATE_RE.match(value)
    try:
        if match:
            return date.fromisoformat(match.group(1))
    except ValueError:
        pass
    raise ValueError(f"field '{name}' is not a date YYYY-MM-DD: {value!r}")


def _instant(row: dict[str, Any], name: str, tz: ZoneInfo) -> datetime:
    value = row.get(name) or ""
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"field '{name}' is not an ISO 8601 timestamp: {value!r}") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=tz)


def _bool(row: dict[str, Any], name: str, default: bool | None = None) -> bool:
    value = row.get(name)
    if value in (None, "") and default is not None:
        return default
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError(f"field '{name}' is not a boolean: {value!r}")


def _missing(row: dict[str, Any], names: tuple[str, ...]) -> str:
    missing = [n for n in names if row.get(n) in (None, "")]
    return f"missing field(s): {', '.join(missing)}" if missing else ""


def _parse_turnover(rows: list[dict[str, Any]]) -> tuple[list[RevenueLine], list[Reject]]:
    lines: list[RevenueLine] = []
    rejects: list[Reject] = []
    seen: dict[tuple[str, date, int | None], RevenueLine] = {}
    for row in rows:
        hour_text = row.get("hour")
        ref = f"{row.get('financialDate')}/{row.get('branchNumber')}" + (f"/{hour_text}" if hour_text else "")
        problem = _missing(row, ("branchNumber", "financialDate", "totalInclAmount", "totalExclAmount"))
        if problem:
            rejects.append(Reject(reason=problem, payload=row, ref=ref))
            continue
        try:
            branch = _int(row, "branchNumber")
            day = _date(row, "financialDate")
            hour = _int(row, "hour") if hour_text not in (None, "") else None
            incl, excl = _int(row, "totalInclAmount"), _int(row, "totalExclAmount")
        except ValueError as exc:
            rejects.append(Reject(reason=str(exc), payload=row, ref=ref))
            continue
        if incl < 0 or excl < 0:
            reason = (
                f"negative turnover for branch {branch} on {day}{'' if hour is None else f' hour {hour}'}: "
                f"incl {cents_to_euros(incl)}, excl {cents_to_euros(excl)}"
            )
            rejects.append(Reject(reason=reason, payload=row, ref=ref))
            continue
        if excl > incl:
            reason = f"turnover excl. VAT {cents_to_euros(excl)} exceeds incl. VAT {cents_to_euros(incl)}"
            rejects.append(Reject(reason=reason, payload=row, ref=ref))
            continue
        try:
            line = RevenueLine(
                source_key=str(branch),
                business_date=day,
                hour=hour,
                amount_incl=cents_to_euros(incl),
                amount_excl=cents_to_euros(excl),
                ref=ref,
            )
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            rejects.append(Reject(reason=f"invalid row: {problems}", payload=row, ref=ref))
            continue
        key = (line.source_key, line.business_date, line.hour)
        first = seen.get(key)
        if first is None:
            seen[key] = line
            lines.append(line)
        elif (first.amount_incl, first.amount_excl) != (line.amount_incl, line.amount_excl):
            reason = f"duplicate row for {ref} with other amounts than the first ({first.amount_incl} incl)"
            rejects.append(Reject(reason=reason, payload=row, ref=ref))
    return lines, rejects


_SHIFT_REQUIRED = ("shiftNumber", "branchNumber", "financialDate", "employeeNumber", "startTimestamp", "ended")


def _parse_shifts(
    rows: list[dict[str, Any]], tz: ZoneInfo, *, fetched_at: datetime | None = None, listed: set[str] | None = None
) -> tuple[list[ShiftRecord], list[Reject]]:
    """``fetched_at``: when the page was fetched (an open shift begun over 24 hours before is rejected);
    ``listed``: the employee numbers getEmployees listed then (None: not known, as on pages landed before)."""
    shifts: list[ShiftRecord] = []
    rejects: list[Reject] = []
    seen: dict[str, ShiftRecord] = {}
    for row in rows:
        ref = f"shift {row.get('shiftNumber')}"
        problem = _missing(row, _SHIFT_REQUIRED)
        if problem:
            rejects.append(Reject(reason=problem, payload=row, ref=ref))
            continue
        try:
            for name in ("shiftNumber", "branchNumber", "employeeNumber"):
                _int(row, name)
            cost_center = row.get("costCenterNumber") or None
            if cost_center is not None:
                _int(row, "costCenterNumber")
            day = _date(row, "financialDate")
            start = _instant(row, "startTimestamp", tz)
            end = _instant(row, "endTimestamp", tz) if row.get("endTimestamp") else None
            ended = _bool(row, "ended")
            modified = _bool(row, "manuallyModified", default=False)
        except ValueError as exc:
            rejects.append(Reject(reason=str(exc), payload=row, ref=ref))
            continue
        who = f"shift {row['shiftNumber']} of employee {row['employeeNumber']} on {day}"
        reason = ""
        if ended and end is None:
            reason = f"{who} is ended but has no end time"
        elif end is not None and end < start:
            reason = f"{who} ends before it starts ({start.isoformat()} → {end.isoformat()})"
        elif end is not None and end - start > MAX_SHIFT:
            hours = (end - start).total_seconds() / 3600
            reason = f"{who} lasts {hours:.1f} hours, longer than 24 hours ({start.isoformat()} → {end.isoformat()})"
        elif end is None and fetched_at is not None and fetched_at - start > MAX_SHIFT:
            hours = (fetched_at - start).total_seconds() / 3600
            reason = (
                f"{who} is still open {hours:.1f} hours after it started, longer than 24 hours "
                f"(started {start.isoformat()}; close or correct it in the POS)"
            )
        if reason:
            rejects.append(Reject(reason=reason, payload=row, ref=ref))
            continue
        shift = ShiftRecord(
            shift_number=str(int(row["shiftNumber"])),
            branch_number=str(int(row["branchNumber"])),
            financial_date=day,
            employee_number=str(int(row["employeeNumber"])),
            start=start,
            end=end,
            ended=ended,
            manually_modified=modified,
            cost_center=str(int(cost_center)) if cost_center is not None else None,
            employee_listed=None if listed is None else str(int(row["employeeNumber"])) in listed,
        )
        first = seen.get(shift.shift_number)
        if first is None:
            seen[shift.shift_number] = shift
            shifts.append(shift)
        elif first != shift:
            rejects.append(
                Reject(reason=f"duplicate shift number {shift.shift_number} with other content", payload=row, ref=ref)
            )
    return shifts, rejects
