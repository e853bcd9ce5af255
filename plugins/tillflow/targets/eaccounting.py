"""Visma eAccounting (API v2): customers, articles and orders.

Contract (stand-in and sources: ``include/sandbox/eaccounting.py``):

* OAuth 2.0 at ``https://identity.vismaonline.com/connect/token`` (form ``grant_type=refresh_token``,
  ``refresh_token``; the client authenticates with HTTP Basic ``client_id:client_secret``) → ``{"access_token",
  "expires_in": 3600, "refresh_token"}``. Scopes ``ea:api offline_access ea:sales`` (and
  ``ea:accounting_readonly`` to read VAT codes). Every refresh **rotates** the refresh token and the one used
  is spent at once — Visma documents no grace period: presenting it again is ``400 {"error":
  "invalid_grant"}``.
* Token rotation is made safe with a ``token_store`` (:mod:`tillflow.tokens`): ``load(conn_id)`` and an atomic
  ``swap(conn_id, old, new)``. A refresh uses the stored token (else the connection's), and the rotated token
  is swapped into the store **before** the new access token is used; when ``swap`` answers False another
  process rotated first: the store is reloaded and theirs is kept. An ``invalid_grant`` while the store holds
  a different token (someone rotated meanwhile) is retried once with that token; otherwise it is
  :class:`AuthError` "the refresh token was already used … re-authorise the connection" — one token call,
  no retry storm.
* Rate limit: 600 requests per minute per client and endpoint; ``429`` with ``{"ErrorCode": 4010,
  "DeveloperErrorMessage": "… Try again in N seconds."}`` and no ``Retry-After``. Every client of one OAuth
  app (client id) in the process shares one limiter (:func:`tillflow.http.rate_limiter`) at 9.5 requests/s
  over all endpoints (570 per minute, under 600 for any one endpoint). A 429 still comes: N is read from the
  body and waited (capped by ``HttpPolicy.max_retry_after``), then the call is repeated (a 429 was not
  processed, so even a POST), at most ``HttpPolicy.max_attempts`` times.
* Lists: OData ``$filter``, ``$page``, ``$pagesize`` (:attr:`EaccountingClient.page_size`) with the envelope
  ``{"Meta": {"CurrentPage", "TotalNumberOfPages", …}, "Data": [...]}``; pages are read until
  ``TotalNumberOfPages``. ``GET /vatcodes`` answers a plain array.
* No idempotency key exists. An order is looked up by ``Number`` (digits) or ``YourReference``
  (:meth:`EaccountingClient.find_order`); a create whose answer is lost (5xx, timeout after sending) is a
  :class:`TransientError` saying "outcome unknown": look it up with ``find_order`` before creating it again.
* Errors: ``{"ErrorCode", "DeveloperErrorMessage", "ErrorId"}``; a 400/404/409 refusal is a
  :class:`RemoteError` (``status``) carrying Visma's message (which names the fields), masked.
* ``PUT`` replaces a whole object: :meth:`EaccountingClient.update_customer` reads the customer, applies the
  changes and writes it back.

Connection: ``host`` = API base URL (default ``https://eaccountingapi.vismaonline.com/v2``), ``login`` = client
id, ``password`` = the initial refresh token, ``extra.client_secret`` (required), ``extra.token_url`` (default
``https://identity.vismaonline.com/connect/token``), and :meth:`tillflow.http.HttpPolicy.from_extra` keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

import requests

from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError
from tillflow.http import HttpClient, HttpPolicy, url_from_host
from tillflow.records import DeliveryResult, RefItem, TargetRow
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.targets.base import TargetClient
from tillflow.tokens import DbTokenStore, MemoryTokenStore, TokenStore, refresh_and_store

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TOKEN_URL", "EaccountingClient", "MemoryTokenStore", "TokenStore"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://eaccountingapi.vismaonline.com/v2"
DEFAULT_TOKEN_URL = "https://identity.vismaonline.com/connect/token"
_JSON = {"Content-Type": "application/json"}
_REFUSED = (400, 404, 409)
_TRY_AGAIN = re.compile(r"Try again in (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def odata_string(value: str) -> str:
    """An OData string literal: single quotes, a quote inside doubled."""
    return "'" + str(value).replace("'", "''") + "'"


class EaccountingClient(TargetClient):
    """Visma eAccounting API v2. Connection: host, login = client id, password = initial refresh token.

    :param base_url: API base URL (``…/v2``).
    :param client_id: the OAuth app's client id.
    :param refresh_token: the connection's refresh token (the first of the rotation chain).
    :param client_secret: the OAuth app's client secret (sent to the token endpoint only).
    :param token_url: the OAuth token endpoint.
    :param token_store: where rotated refresh tokens live (``load``/``swap``); :func:`tillflow.tokens.default_store`
        when None (the database, else one process-wide :class:`MemoryTokenStore`).
    :param conn_id: the store's key of this connection; derived from client id and refresh token when None.
    :param policy: HTTP policy; its ``rate_per_second`` defaults to :attr:`default_rate_per_second`.
    :param sleep: wait function (429 waits, retries); tests inject a fake one.
    :param clock: monotonic clock for access-token expiry.
    """

    name: ClassVar[str] = "eaccounting"
    mapping_kind: ClassVar[str] = "vat_code"
    conn_type: ClassVar[str] = "eaccounting"
    hook_name: ClassVar[str] = "Visma eAccounting"
    flows: ClassVar[tuple[str, ...]] = ("orders", "products")
    default_host: ClassVar[str] = DEFAULT_BASE_URL
    #: ``$pagesize`` of list calls (Visma's default is 50; its maximum is not documented)
    page_size: ClassVar[int] = 100
    #: 600 per minute per client and endpoint; one limiter for all endpoints at 9.5/s stays under it
    default_rate_per_second: ClassVar[float] = 9.5
    #: refresh this many seconds before the access token expires
    token_refresh_margin: ClassVar[float] = 120.0
    #: when a refresh token is refused, how often (and how long apart) the store is re-read for a token another
    #: process may be storing right now, before giving up
    store_recheck: ClassVar[tuple[int, float]] = (12, 0.25)
    #: the order field :meth:`find_order` matches a non-numeric reference against
    reference_field: ClassVar[str] = "YourReference"

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        refresh_token: str,
        client_secret: str,
        token_url: str = DEFAULT_TOKEN_URL,
        token_store: TokenStore | None = None,
        conn_id: str | None = None,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        extra_secrets: tuple[str, ...] = (),
    ):
        policy = policy or HttpPolicy()
        if policy.rate_per_second is None:
            policy = replace(policy, rate_per_second=self.default_rate_per_second, burst=1)
        self.client_id = client_id
        self._client_secret = client_secret
        self._initial_refresh_token = refresh_token
        self.token_url = token_url
        if token_store is None:
            from tillflow.tokens import default_store

            token_store = default_store()
        self.token_store: TokenStore = token_store
        self.conn_id = conn_id or self.connection_key(client_id, refresh_token)
        self._sleep = sleep or time.sleep
        self._clock = clock
        self.rate_key = f"eaccounting:{hashlib.sha256(client_id.encode()).hexdigest()[:16]}"
        session = requests.Session()
        session.headers.update({"Accept": "application/json"})
        self.http = HttpClient(
            base_url,
            policy=policy,
            secrets=tuple(s for s in (refresh_token, client_secret, *extra_secrets) if s),
            name=self.name,
            rate_key=self.rate_key,
            session=session,
            sleep=self._sleep,
        )
        self.http.add_secret(_basic(client_id, client_secret))
        # With the database token store, every client of one connection in this process shares one access token
        # and one lock (the accounts' flows run in threads): they never race each other for a single-use refresh
        # token. Other processes are met through the store (see :meth:`_newer_stored`).
        self._token = _shared_token(self.conn_id) if isinstance(token_store, DbTokenStore) else _TokenState()
        #: token endpoint calls made by this client (tests and the activity log)
        self.token_calls = 0

    @staticmethod
    def connection_key(client_id: str, refresh_token: str) -> str:
        """The store key of a connection: a hash of client id and the authorised token, never the token."""
        digest = hashlib.sha256(f"{client_id}\x00{refresh_token}".encode()).hexdigest()[:16]
        return f"eaccounting:{digest}"

    @classmethod
    def from_connection(
        cls,
        conn: ConnectionInfo,
        *,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        token_store: TokenStore | None = None,
    ) -> EaccountingClient:
        """Build the client from an Airflow Connection's fields.

        :raises ConfigError: naming ``login``, ``password``, ``extra.client_secret``, ``extra.token_url`` or a
            bad policy key.
        """
        if not conn.login:
            raise ConfigError(f"connection {conn.conn_id}: login (Visma eAccounting OAuth client id) is required")
        if not conn.password:
            raise ConfigError(f"connection {conn.conn_id}: password (Visma eAccounting refresh token) is required")
        secret = conn.extra.get("client_secret")
        if not isinstance(secret, str) or not secret:
            raise ConfigError(f"connection {conn.conn_id}: extra.client_secret (the OAuth client secret) is required")
        token_url = conn.extra.get("token_url", DEFAULT_TOKEN_URL)
        if not isinstance(token_url, str) or "://" not in token_url:
            raise ConfigError(f"connection {conn.conn_id}: extra.token_url must be an absolute URL, got {token_url!r}")
        return cls(
            base_url=url_from_host(conn.host or DEFAULT_BASE_URL, conn.port),
            client_id=conn.login,
            refresh_token=conn.password,
            client_secret=secret,
            token_url=token_url,
            token_store=token_store,
            # the key names the connection *and* the token it was authorised with: re-authorising (a new refresh
            # token in the connection) starts a fresh rotation chain
            conn_id=f"{conn.conn_id}:{hashlib.sha256(conn.password.encode()).hexdigest()[:16]}",
            policy=policy or HttpPolicy.from_extra(conn.extra),
            sleep=sleep,
            extra_secrets=tuple(conn.secrets()),
        )

    # -- auth

    def access_token(self, *, stale: str | None = None) -> str:
        """A valid access token: this client's, or a new one when it is missing, about to expire or equal to
        ``stale`` (just refused with 401).

        :raises AuthError: when Visma refuses the refresh token (spent, revoked) or the client.
        """
        state = self._token
        with state.lock:
            fresh = self._clock() < state.expires - self.token_refresh_margin
            if state.access and fresh and state.access != stale:
                self.http.add_secret(state.access)
                return state.access
            return self._refresh()

    def _current_refresh_token(self) -> tuple[str | None, str]:
        """(what the store holds, the token to use): the stored one, else the connection's."""
        stored = self.token_store.load(self.conn_id)
        if stored:
            self.http.add_secret(stored)
        return stored, stored or self._initial_refresh_token

    def _refresh(self) -> str:
        """One refresh (caller holds ``self._token.lock``); see the module docstring for the rotation rules."""
        stored, token = self._current_refresh_token()
        response, swapped = self._token_call(token, stored)
        if response.status_code != 200:
            error = self._oauth_error(response)
            if error == "invalid_grant":
                newer = self._newer_stored(token)
                if newer is not None:  # another process rotated meanwhile: use theirs, once
                    stored, token = newer, newer
                    response, swapped = self._token_call(token, stored)
                    error = self._oauth_error(response) if response.status_code != 200 else None
            if response.status_code != 200:
                self._refused(response.status_code, error)
        body = _json(response, strict=False)
        access = body.get("access_token") if isinstance(body, dict) else None
        rotated = body.get("refresh_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            raise RemoteError(f"{self.name}: the token endpoint answered without an access_token")
        self.http.add_secret(access)
        if isinstance(rotated, str) and rotated and rotated != token:
            self.http.add_secret(rotated)
            # stored before the new access token is used: the old refresh token is spent already
            if swapped is None:
                swapped = self.token_store.swap(self.conn_id, stored, rotated)
            if not swapped:
                theirs = self.token_store.load(self.conn_id)
                log.warning(
                    "%s: connection %s was rotated by someone else meanwhile; keeping the stored token",
                    self.name,
                    self.conn_id,
                )
                if theirs:
                    self.http.add_secret(theirs)
        try:
            lifetime = float(body.get("expires_in") or 3600)
        except (TypeError, ValueError):
            lifetime = 3600.0
        self._token.access, self._token.expires = access, self._clock() + lifetime
        return access

    def _token_call(self, refresh_token: str, stored: str | None = None) -> tuple[Any, bool | None]:
        """One refresh-token grant: (the answer, whether the rotated token was stored — ``None``: not yet).

        With the database token store the call and the save run as one unit in a detached process
        (:func:`tillflow.tokens.refresh_and_store`), so a kill of this process between Visma's answer and the
        save loses nothing."""
        self.token_calls += 1
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        headers = {"Authorization": "Basic " + _basic(self.client_id, self._client_secret)}
        if isinstance(self.token_store, DbTokenStore):
            try:
                answer, swapped = refresh_and_store(
                    self.token_store, self.conn_id, stored, url=self.token_url, form=form, headers=headers
                )
            except ConnectionError as exc:
                raise TransientError(f"{self.name}: {self.http.mask(str(exc))}") from None
            body = _json(answer, strict=False)
            for key in ("access_token", "refresh_token"):
                if isinstance(body, dict) and isinstance(body.get(key), str) and body[key]:
                    self.http.add_secret(body[key])
            return answer, swapped
        # not idempotent: a refresh whose answer is lost may have spent the refresh token
        response = self.http.request(
            "POST", self.token_url, data=form, headers=headers, ok_extra=(400, 401), idempotent=False
        )
        return response, None

    @staticmethod
    def _oauth_error(response: requests.Response) -> str | None:
        body = _json(response, strict=False)
        error = body.get("error") if isinstance(body, dict) else None
        return error if isinstance(error, str) else None

    def _newer_stored(self, used: str) -> str | None:
        """A token in the store other than ``used`` (another process's rotation), re-reading it a few times."""
        times, pause = self.store_recheck
        for attempt in range(times + 1):
            stored = self.token_store.load(self.conn_id)
            if stored and stored != used:
                self.http.add_secret(stored)
                return stored
            if attempt < times:
                self._sleep(pause)
        return None

    def _refused(self, status: int, error: str | None) -> None:
        if error == "invalid_grant":
            raise AuthError(
                f"{self.name}: the refresh token was already used or was revoked (invalid_grant) for client "
                f"{self.client_id}; Visma accepts each refresh token once — re-authorise the connection and store "
                "the new refresh token"
            )
        if status == 401 or error in ("invalid_client", "unauthorized_client"):
            raise AuthError(
                f"{self.name}: the token endpoint refused client {self.client_id} ({error or 'HTTP 401'}); check the "
                "client id and extra.client_secret"
            )
        raise RemoteError(
            f"{self.name}: the token endpoint answered HTTP {status} ({error or 'no error code'}) for client "
            f"{self.client_id}",
            status=status,
        )

    # -- calls

    def _api(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        ok_extra: tuple[int, ...] = (),
    ) -> requests.Response:
        """One API call with a Bearer token. A 401 refreshes the token once and repeats the call; a 429 waits the
        seconds Visma names in its body and repeats it (at most ``max_attempts`` calls)."""
        token = self.access_token()
        refreshed = False
        attempts = 0
        data = json.dumps(_jsonable(body)).encode() if body is not None else None
        while True:
            attempts += 1
            response = self.http.request(
                method,
                path,
                params=params,
                data=data,
                headers={**(_JSON if body is not None else {}), "Authorization": f"Bearer {token}"},
                ok_extra=(*ok_extra, 401, 429),
                parse_json=True,
            )
            if response.status_code == 401:
                if refreshed:
                    raise AuthError(f"{self.name}: {method} {path} refused (HTTP 401) even with a new access token")
                token, refreshed = self.access_token(stale=token), True
                continue
            if response.status_code != 429:
                return response
            wait = self._retry_after(response)
            if attempts >= self.http.policy.max_attempts:
                raise TransientError(
                    f"{self.name}: {method} {path} still rate limited (HTTP 429) after {attempts} attempt(s); "
                    f"Visma asked to wait {wait:g} s"
                )
            capped = min(wait, self.http.policy.max_retry_after)
            log.warning("%s: %s %s rate limited (429); waiting %.0f s as Visma asks", self.name, method, path, capped)
            self._sleep(capped)

    @staticmethod
    def _retry_after(response: requests.Response) -> float:
        """N of "Try again in N seconds." (Visma's 429 body), else ``Retry-After``, else 60."""
        body = _json(response, strict=False)
        message = body.get("DeveloperErrorMessage") if isinstance(body, dict) else None
        match = _TRY_AGAIN.search(message) if isinstance(message, str) else None
        if match:
            return float(match.group(1))
        try:
            return max(0.0, float(response.headers.get("Retry-After", "")))
        except ValueError:
            return 60.0

    def _message(self, response: requests.Response) -> str:
        """Visma's error message (naming the fields), masked, on one line."""
        body = _json(response, strict=False)
        text = ""
        if isinstance(body, dict):
            parts = [str(body.get("DeveloperErrorMessage") or body.get("Message") or "").strip()]
            if body.get("ErrorCode") is not None:
                parts.append(f"(ErrorCode {body['ErrorCode']})")
            text = " ".join(p for p in parts if p)
        if not text:
            text = response.content[:300].decode("utf-8", "replace")
        text = " ".join(self.http.mask(text.replace("\n", "; ")).split())
        return text[:500] + ("…" if len(text) > 500 else "")

    def _checked(self, response: requests.Response, what: str) -> Any:
        if response.status_code in _REFUSED:
            raise RemoteError(
                f"{self.name}: {what} refused (HTTP {response.status_code}): {self._message(response)}",
                status=response.status_code,
            )
        return _json(response)

    def _pages(self, path: str, filter_: str | None = None, *, paged: bool = True) -> Iterator[dict[str, Any]]:
        """Every item of a paged list, page by page until ``Meta.TotalNumberOfPages`` (``paged=False``: an endpoint
        that answers one plain array and takes no ``$page``/``$pagesize``, such as ``/vatcodes``)."""
        page = 1
        while True:
            params: dict[str, Any] = {"$page": page, "$pagesize": self.page_size} if paged else {}
            if filter_:
                params["$filter"] = filter_
            body = self._checked(self._api("GET", path, params=params, ok_extra=_REFUSED), f"GET {path}")
            if isinstance(body, list):  # an endpoint that is not paged (vatcodes)
                yield from (item for item in body if isinstance(item, dict))
                return
            data = body.get("Data") if isinstance(body, dict) else None
            meta = body.get("Meta") if isinstance(body, dict) else None
            if not isinstance(data, list) or not isinstance(meta, dict):
                raise RemoteError(f"{self.name}: GET {path} answered without the Meta/Data envelope")
            yield from (item for item in data if isinstance(item, dict))
            pages = meta.get("TotalNumberOfPages")
            if not isinstance(pages, int) or page >= pages or not data:
                return
            page += 1

    def _create(self, path: str, payload: dict[str, Any], what: str) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise ConfigError(f"{self.name}: {what}: the payload is not an object")
        try:
            response = self._api("POST", path, body=payload, ok_extra=_REFUSED)
        except TransientError as exc:
            text = str(exc)
            if "outcome unknown" in text:
                raise TransientError(f"{self.name}: {what}: the answer was lost (outcome unknown): {text}") from None
            raise
        created = self._checked(response, what)
        if not isinstance(created, dict) or not isinstance(created.get("Id"), str) or not created["Id"]:
            raise TransientError(f"{self.name}: {what}: HTTP {response.status_code} without an Id (outcome unknown)")
        return created

    # -- customers

    def find_customer_by_email(self, email: str) -> dict[str, Any] | None:
        """The customer whose ``EmailAddress`` is ``email`` (Visma compares exactly), or None."""
        if not isinstance(email, str) or "@" not in email:
            raise ConfigError(f"{self.name}: find_customer_by_email needs an e-mail address, got {email!r}")
        found = list(self._pages("/customers", f"EmailAddress eq {odata_string(email)}"))
        if len(found) > 1:
            log.warning("%s: %d customers have the e-mail address %s", self.name, len(found), email)
        return found[0] if found else None

    def create_customer(self, payload: dict[str, Any]) -> str:
        """Create a customer (``Name``, ``IsPrivatePerson``, ``IsActive``, ``TermsOfPaymentId``, ``InvoiceCity``,
        ``InvoicePostalCode`` required by Visma); returns its Id.

        :raises RemoteError: status 400/409 when Visma refuses it (its message names the fields).
        :raises TransientError: "outcome unknown" when the answer was lost (look it up by e-mail first).
        """
        return self._create("/customers", payload, "creating a customer")["Id"]

    def update_customer(self, customer_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Apply ``payload``'s fields to the customer (PUT replaces the whole object: the customer is read,
        changed and written back); returns the customer as Visma answers it."""
        if not isinstance(customer_id, str) or not _UUID.match(customer_id):
            raise ConfigError(f"{self.name}: customer id must be a GUID, got {customer_id!r}")
        if not isinstance(payload, dict):
            raise ConfigError(f"{self.name}: update_customer: the payload is not an object")
        path = f"/customers/{customer_id}"
        current = self._checked(self._api("GET", path, ok_extra=_REFUSED), f"reading customer {customer_id}")
        if not isinstance(current, dict):
            raise RemoteError(f"{self.name}: GET {path} answered without a customer")
        merged = {**current, **payload}
        response = self._api("PUT", path, body=merged, ok_extra=_REFUSED)
        updated = self._checked(response, f"updating customer {customer_id}")
        return updated if isinstance(updated, dict) else merged

    # -- articles

    def find_article(self, number: str) -> dict[str, Any] | None:
        """The article whose ``Number`` is ``number``, or None."""
        found = list(self._pages("/articles", f"Number eq {odata_string(number)}"))
        return found[0] if found else None

    def articles(self) -> list[dict[str, Any]]:
        """Every article (all pages)."""
        return list(self._pages("/articles"))

    def create_article(self, payload: dict[str, Any]) -> str:
        """Create an article (``IsActive``, ``Number``, ``Name``, ``CodingId``, ``UnitId`` required); its Id."""
        return self._create("/articles", payload, f"creating article {payload.get('Number')!r}")["Id"]

    # -- orders

    def find_order(self, number_or_reference: str | int) -> str | None:
        """The Id of the order whose ``Number`` is the given digits, or whose :attr:`reference_field` is the given
        text; None when there is none."""
        key = str(number_or_reference).strip()
        if not key:
            raise ConfigError(f"{self.name}: find_order needs an order number or reference")
        flt = f"Number eq {int(key)}" if key.isdigit() else f"{self.reference_field} eq {odata_string(key)}"
        found = [o["Id"] for o in self._pages("/orders", flt) if isinstance(o.get("Id"), str)]
        if len(found) > 1:
            log.warning("%s: %d orders match %s: %s", self.name, len(found), key, found)
        return found[0] if found else None

    def create_order(self, payload: dict[str, Any]) -> str:
        """Create an order; returns its Id.

        :raises RemoteError: status 400/409 when Visma refuses it (its message names the fields).
        :raises TransientError: "outcome unknown" when the answer was lost: look it up with :meth:`find_order`
            (by ``Number`` or ``YourReference``) before creating it again.
        """
        ref = payload.get("Number") or payload.get(self.reference_field) if isinstance(payload, dict) else None
        return self._create("/orders", payload, f"creating order {ref!r}" if ref else "creating an order")["Id"]

    # -- customer invoices (the orders flow's ``order_type: invoice``)

    def find_invoice(self, reference: str) -> str | None:
        """The Id of the customer invoice whose ``YourReference`` is ``reference``; None when there is none."""
        key = str(reference).strip()
        if not key:
            raise ConfigError(f"{self.name}: find_invoice needs a reference")
        flt = f"{self.reference_field} eq {odata_string(key)}"
        found = [i["Id"] for i in self._pages("/customerinvoices", flt) if isinstance(i.get("Id"), str)]
        if len(found) > 1:
            log.warning("%s: %d invoices match %s: %s", self.name, len(found), key, found)
        return found[0] if found else None

    def create_invoice(self, payload: dict[str, Any]) -> str:
        """Create (and book) a customer invoice; returns its Id. A lost answer is "outcome unknown": look it up
        with :meth:`find_invoice` before creating it again."""
        ref = payload.get(self.reference_field) if isinstance(payload, dict) else None
        what = f"creating invoice {ref!r}" if ref else "creating an invoice"
        return self._create("/customerinvoices", payload, what)["Id"]

    # -- reference data

    def vat_codes(self) -> list[RefItem]:
        """The company's VAT codes (needs the ``ea:accounting`` or ``ea:accounting_readonly`` scope)."""
        return [
            RefItem(
                key=str(v["Code"]),
                name=str(v.get("Description") or v["Code"]),
                extra={"id": v.get("Id"), "rate": str(v["VatRate"]) if v.get("VatRate") is not None else None},
            )
            for v in self._pages("/vatcodes", paged=False)
            if v.get("Code")
        ]

    def terms_of_payment(self) -> list[RefItem]:
        return [
            RefItem(key=str(t["Id"]), name=str(t.get("Name") or t["Id"]), extra={"days": t.get("NumberOfDays")})
            for t in self._pages("/termsofpayments")
            if t.get("Id")
        ]

    def test_connection(self) -> list[RefItem]:
        """Check the credentials (a refresh and ``GET /vatcodes``) and list the VAT codes rows are mapped to.

        :raises AuthError: when Visma refuses the refresh token, the client or the access token.
        """
        return self.vat_codes()

    def reference_data(self) -> dict[str, list[RefItem]]:
        articles = [
            RefItem(key=str(a["Number"]), name=str(a.get("Name") or a["Number"]), extra={"id": a.get("Id")})
            for a in self.articles()
            if a.get("Number")
        ]
        return {"vat_code": self.vat_codes(), "terms_of_payment": self.terms_of_payment(), "article": articles}

    # -- the keyed-delivery interface does not apply

    def existing(
        self, flow: str, target_keys: list[str], window: Window
    ) -> dict[tuple[str, date, int | None], Decimal]:
        raise NotImplementedError(f"{self.name}: orders and products are created by reference, not existing()")

    def deliver(self, flow: str, row: TargetRow) -> DeliveryResult:
        raise NotImplementedError(f"{self.name}: orders and products are created by reference, not deliver()")


class _TokenState:
    """An access token, when it expires, and the lock its refresh is made under."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.access: str | None = None
        self.expires = 0.0


_shared_tokens: dict[str, _TokenState] = {}
_shared_tokens_lock = threading.Lock()


def _shared_token(conn_id: str) -> _TokenState:
    with _shared_tokens_lock:
        return _shared_tokens.setdefault(conn_id, _TokenState())


def _basic(user: str, password: str) -> str:
    import base64
    from urllib.parse import quote

    # RFC 6749 §2.3.1: the client id and secret are form-encoded before Basic
    return base64.b64encode(f"{quote(user, safe='')}:{quote(password, safe='')}".encode()).decode()


def _jsonable(value: Any) -> Any:
    """A payload with Decimals as JSON numbers — Visma's models take numbers, not strings. An amount of up to 15
    significant digits keeps its exact digits (a float's shortest repr)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _json(response: requests.Response, *, strict: bool = True) -> Any:
    """The body as JSON (floats as Decimal); ``None`` when empty, or unparseable and not ``strict``."""
    if not response.content.strip():
        return None
    try:
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:
        if strict:
            raise TransientError(f"eaccounting: HTTP {response.status_code} body is not JSON") from None
        return None
