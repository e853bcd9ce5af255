"""Pennylane (Company API v2): ledger entries posted exactly once through the outbox.

Contract (https://pennylane.readme.io/, the "2026 API changes" behaviour, opted in with the
``X-Use-2026-API-Changes: true`` header; stand-in: ``include/sandbox/pennylane.py``):

* OAuth 2.0 (https://pennylane.readme.io/docs/oauth-20-walkthrough): ``POST <token_url>`` (form
  ``grant_type=refresh_token``, ``refresh_token``, ``client_id``, ``client_secret``) → ``{"access_token",
  "expires_in": 86400, "refresh_token"}``. Pennylane rotates refresh tokens: the answer's refresh token
  replaces the one used, which is spent. This client keeps the newest refresh token in a process-wide store
  shared by every client of the same connection (so two clients never spend the same token) and hands it to
  ``on_refresh_token`` (a callback to persist it; without one, a new process starts again from the
  connection's token, which Pennylane may have rotated away — then :class:`AuthError`).
* Rate limit (https://pennylane.readme.io/docs/rate-limiting-1): 25 requests per 5 seconds per access
  token; ``429`` with ``retry-after``/``ratelimit-*``. Every client of one connection in the process shares
  one limiter (:func:`tillflow.http.rate_limiter`, keyed by a hash of client id and connection refresh
  token, never the token itself) at 4.7 requests/s with no burst: at most 1 + 4.7 × 5 = 24.5 requests in
  any 5 seconds (94 % of the limit), so the limit is used without tripping it. A 429 still honours
  ``retry-after`` (:class:`tillflow.http.HttpClient`; a 429 was not processed, so even a POST is repeated).
* Lists are cursor-paged: ``limit`` (≤ 100), ``cursor``, ``filter`` (a JSON array of ``{field, operator,
  value}``, sent again with every page) → ``{"items", "has_more", "next_cursor"}``.
* No idempotency header exists: an entry is created with the outbox's posting key as its ``piece_number``;
  a lost answer (5xx, timeout after sending) is a :class:`TransientError` saying "outcome unknown", and
  :meth:`PennylaneClient.find` looks the entry up by piece number. ``GET /ledger_entries`` filters on
  ``journal_id`` and ``date`` only, so ``find`` needs the entry's payload (journal and date): scanning every
  entry of a company is not an option.

Payload (:func:`tillflow.flows.ledger.entry_payload`): ``{"date": "YYYY-MM-DD", "label", "journal": "<code>",
"currency": "EUR", "lines": [{"account": "706000", "label", "debit": "12.50", "credit": "0.00", "customer":
"<external ref>" | null}], "customer": {"external_reference", "name", "email"} | null}`` (other keys, such as
``event_key``, are ignored). The client resolves, caching each answer per instance:

* the journal code → its id (``GET /journals`` filtered on ``code``; created with ``POST /journals`` when
  missing, labelled "Caisse <code>");
* an account number → its id (``GET /ledger_accounts`` with ``number start_with``, then the exact number;
  created with ``POST /ledger_accounts`` ``{number, label: "Compte <number>"}`` when missing). A line with
  ``vat_rate`` (a VAT line, percent such as ``"5.5"``) creates its account with Pennylane's optional
  ``vat_rate`` code — country and percent × 10: ``FR_200``, ``FR_100``, ``FR_55``, ``FR_21`` — and
  ``country_alpha2`` (``extra.country_alpha2``); an account that exists already is used as it is;
* a line with ``customer`` → that customer's own receivable account (``GET /customers`` filtered on
  ``external_reference``; created with ``POST /company_customers`` ``{name, emails, external_reference,
  billing_address}`` when missing — the address is required by Pennylane and tillflow has none, so its
  fields are empty strings and ``country_alpha2`` is ``extra.country_alpha2``, default ``FR``). A create
  refused because the reference (code, number) is taken — a create whose answer was lost — is looked up again.

Amounts are checked as exact 2-decimal strings (Decimal) and the lines must balance before anything is sent
(:class:`ConfigError` naming the entry otherwise). Pennylane's 400/404/422 refuse the entry
(:class:`RemoteError` with its message and the fields it names).

Connection: ``host`` = API base URL (default ``https://app.pennylane.com/api/external/v2``), ``login`` =
client id, ``password`` = refresh token, ``extra.client_secret``, ``extra.token_url`` (default
``<scheme://host>/oauth/token``), ``extra.country_alpha2``, and :meth:`tillflow.http.HttpPolicy.from_extra`
keys (``rate_per_second`` overrides 4.7).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests

from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError
from tillflow.http import HttpClient, HttpPolicy, url_from_host
from tillflow.records import DeliveryResult, RefItem, TargetRow
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.targets.base import TargetClient

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://app.pennylane.com/api/external/v2"
_JSON = {"Content-Type": "application/json"}
_REFUSED = (400, 404, 422)
_CENT = Decimal("0.01")
_REFUSED_GRANT = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


@dataclass
class _TokenState:
    """The access token and the newest refresh token of one connection, shared in the process."""

    refresh_token: str
    access_token: str | None = None
    expires: float = 0.0
    lock: threading.Lock = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.lock = threading.Lock()


_tokens: dict[str, _TokenState] = {}
_tokens_lock = threading.Lock()


def _token_state(key: str, refresh_token: str) -> _TokenState:
    with _tokens_lock:
        state = _tokens.get(key)
        if state is None:
            state = _tokens[key] = _TokenState(refresh_token)
        return state


class PennylaneClient(TargetClient):
    """Pennylane Company API v2. Connection: host, login = client id, password = refresh token.

    :param base_url: API base URL (``…/api/external/v2``).
    :param client_id: the OAuth app's client id.
    :param refresh_token: the connection's refresh token.
    :param client_secret: the OAuth app's client secret (sent to the token endpoint only).
    :param token_url: OAuth token endpoint; ``<scheme://host of base_url>/oauth/token`` by default.
    :param policy: HTTP policy; its ``rate_per_second`` defaults to :attr:`default_rate_per_second`.
    :param sleep: wait function between retries (tests inject a fast one).
    :param clock: monotonic clock used for access-token expiry.
    :param on_refresh_token: called with each new (rotated) refresh token, to persist it.
    :param country_alpha2: the billing country of customers this client creates.
    """

    name: ClassVar[str] = "pennylane"
    mapping_kind: ClassVar[str] = "ledger_account"
    conn_type: ClassVar[str] = "pennylane"
    hook_name: ClassVar[str] = "Pennylane"
    flows: ClassVar[tuple[str, ...]] = ("ledger",)
    default_host: ClassVar[str] = DEFAULT_BASE_URL
    page_limit: ClassVar[int] = 100
    #: 25 requests per 5 s per token; 4.7/s without burst keeps any 5 s window at 24 requests at most
    default_rate_per_second: ClassVar[float] = 4.7
    #: refresh this many seconds before the access token expires
    token_refresh_margin: ClassVar[float] = 300.0

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        refresh_token: str,
        client_secret: str | None = None,
        token_url: str | None = None,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        extra_secrets: tuple[str, ...] = (),
        on_refresh_token: Callable[[str], None] | None = None,
        country_alpha2: str = "FR",
        token_store: Any = None,
        conn_id: str | None = None,
    ):
        policy = policy or HttpPolicy()
        if policy.rate_per_second is None:
            policy = replace(policy, rate_per_second=self.default_rate_per_second, burst=1)
        self.client_id = client_id
        self._client_secret = client_secret
        parts = urlsplit(base_url)
        self.token_url = token_url or f"{parts.scheme}://{parts.netloc}/oauth/token"
        self.rate_key = self.connection_key(client_id, refresh_token)
        self._tokens = _token_state(self.rate_key, refresh_token)
        session = requests.Session()
        session.headers.update({"Accept": "application/json", "X-Use-2026-API-Changes": "true"})
        self.http = HttpClient(
            base_url,
            policy=policy,
            secrets=tuple(s for s in (refresh_token, client_secret, *extra_secrets) if s),
            name=self.name,
            rate_key=self.rate_key,
            session=session,
            sleep=sleep,
        )
        self.http.add_secret(self._tokens.refresh_token)
        self._clock = clock
        self._on_refresh_token = on_refresh_token
        #: rotated refresh tokens kept across processes (:mod:`tillflow.tokens`), per Airflow connection
        self._token_store = token_store
        self._conn_id = conn_id
        self.country_alpha2 = country_alpha2
        self._journals: dict[str, int] = {}
        self._accounts: dict[str, int] = {}
        self._customers: dict[str, int] = {}

    @staticmethod
    def connection_key(client_id: str, refresh_token: str) -> str:
        """The process-wide key of a connection (its limiter and token store): a hash, never the token."""
        digest = hashlib.sha256(f"{client_id}\x00{refresh_token}".encode()).hexdigest()[:16]
        return f"pennylane:{digest}"

    @classmethod
    def from_connection(
        cls,
        conn: ConnectionInfo,
        *,
        policy: HttpPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        on_refresh_token: Callable[[str], None] | None = None,
    ) -> PennylaneClient:
        """Build the client from an Airflow Connection's fields.

        :raises ConfigError: naming ``login``, ``password``, ``extra.token_url``, ``extra.client_secret``,
            ``extra.country_alpha2`` or a bad policy key.
        """
        if not conn.login:
            raise ConfigError(f"connection {conn.conn_id}: login (Pennylane OAuth client id) is required")
        if not conn.password:
            raise ConfigError(f"connection {conn.conn_id}: password (Pennylane refresh token) is required")
        token_url = conn.extra.get("token_url")
        if token_url is not None and (not isinstance(token_url, str) or "://" not in token_url):
            raise ConfigError(f"connection {conn.conn_id}: extra.token_url must be an absolute URL, got {token_url!r}")
        secret = conn.extra.get("client_secret")
        if secret is not None and not isinstance(secret, str):
            raise ConfigError(f"connection {conn.conn_id}: extra.client_secret must be a string")
        country = conn.extra.get("country_alpha2", "FR")
        if not isinstance(country, str) or len(country) != 2 or not country.isalpha() or not country.isupper():
            raise ConfigError(
                f"connection {conn.conn_id}: extra.country_alpha2 must be a 2-letter country code, got {country!r}"
            )
        return cls(
            base_url=url_from_host(conn.host or DEFAULT_BASE_URL, conn.port),
            client_id=conn.login,
            refresh_token=conn.password,
            client_secret=secret or None,
            token_url=token_url,
            policy=policy or HttpPolicy.from_extra(conn.extra),
            sleep=sleep,
            extra_secrets=tuple(conn.secrets()),
            on_refresh_token=on_refresh_token,
            country_alpha2=country,
            token_store=_default_token_store(),
            # the store's key names the connection *and* the token it was authorised with: re-authorising
            # (a new refresh token in the connection) starts a fresh rotation chain
            conn_id=f"{conn.conn_id}:{hashlib.sha256(conn.password.encode()).hexdigest()[:16]}",
        )

    # -- auth

    def access_token(self, *, stale: str | None = None) -> str:
        """A valid access token: the shared one, or a new one when it is missing, about to expire or equal
        to ``stale`` (just refused with 401). A refresh spends the refresh token (rotation): the new one is
        kept for the next refresh and handed to ``on_refresh_token``.

        :raises AuthError: when Pennylane refuses the refresh token.
        """
        state = self._tokens
        with state.lock:
            fresh = self._clock() < state.expires - self.token_refresh_margin
            if state.access_token and fresh and state.access_token != stale:
                return state.access_token
            return self._refresh(state, retry=True)

    def _refresh(self, state: Any, *, retry: bool) -> str:
        """One refresh with the newest refresh token (the store's, else the connection's); the rotated one is
        stored (compare-and-swap) before the new access token is used. Caller holds ``state.lock``."""
        stored = self._token_store.load(self._conn_id) if self._token_store and self._conn_id else None
        if stored and stored != state.refresh_token:
            self.http.add_secret(stored)
            state.refresh_token = stored
        form = {"grant_type": "refresh_token", "refresh_token": state.refresh_token, "client_id": self.client_id}
        if self._client_secret:
            form["client_secret"] = self._client_secret
        response, swapped = self._token_call(form, stored)
        body = _json(response, strict=False)
        if response.status_code in (400, 401):
            error = body.get("error") if isinstance(body, dict) else None
            if (
                retry
                and self._token_store
                and self._conn_id
                and (self._token_store.load(self._conn_id) not in (None, state.refresh_token))
            ):
                return self._refresh(state, retry=False)  # another process rotated it meanwhile: use theirs
            if response.status_code == 401 or error in _REFUSED_GRANT:
                raise AuthError(
                    f"{self.name}: the token endpoint refused the refresh token of client {self.client_id} "
                    f"({error or 'HTTP 401'}); authorise the app again and store the new refresh token"
                )
            raise RemoteError(
                f"{self.name}: token endpoint answered HTTP 400 ({error or 'no error code'}) for client "
                f"{self.client_id}",
                status=400,
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RemoteError(f"{self.name}: token endpoint answered without an access_token")
        self.http.add_secret(token)
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != state.refresh_token:
            self.http.add_secret(rotated)
            if swapped is None and self._token_store and self._conn_id:  # stored before the access token is used
                self._token_store.swap(self._conn_id, stored, rotated)
            state.refresh_token = rotated
            if self._on_refresh_token is not None:
                self._on_refresh_token(rotated)
        try:
            lifetime = float(body.get("expires_in") or 86400)
        except (TypeError, ValueError):
            lifetime = 86400.0
        state.access_token, state.expires = token, self._clock() + lifetime
        return token

    def _token_call(self, form: dict[str, str], stored: str | None) -> tuple[Any, bool | None]:
        """One refresh-token grant: (the answer, whether the rotated token was stored — ``None``: not yet).

        With the database token store the call and the save of the rotated token run as one unit in a detached
        process (:func:`tillflow.tokens.refresh_and_store`, as for eAccounting): a kill of this task between
        Pennylane's answer and the save loses nothing, so the account is never locked out."""
        from tillflow.tokens import DbTokenStore, refresh_and_store

        if isinstance(self._token_store, DbTokenStore) and self._conn_id:
            try:
                answer, swapped = refresh_and_store(
                    self._token_store,
                    self._conn_id,
                    stored,
                    url=self.token_url,
                    form=form,
                    headers={"Accept": "application/json"},
                )
            except ConnectionError as exc:
                raise TransientError(f"{self.name}: {self.http.mask(str(exc))}") from None
            body = _json(answer, strict=False)
            for key in ("access_token", "refresh_token"):
                if isinstance(body, dict) and isinstance(body.get(key), str) and body[key]:
                    self.http.add_secret(body[key])
            if answer.status_code == 429 or answer.status_code >= 500:
                raise TransientError(f"{self.name}: the token endpoint answered HTTP {answer.status_code}")
            if answer.status_code not in (200, 400, 401):
                raise RemoteError(
                    f"{self.name}: the token endpoint answered HTTP {answer.status_code}", status=answer.status_code
                )
            return answer, swapped
        # not idempotent: a refresh whose answer is lost may have spent the refresh token
        response = self.http.request("POST", self.token_url, data=form, ok_extra=(400, 401), idempotent=False)
        return response, None

    def _api(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        ok_extra: tuple[int, ...] = (),
    ) -> requests.Response:
        """One API call with a Bearer token; a 401 (refused before processing) refreshes the token once and
        repeats the call once."""
        token = self.access_token()
        for attempt in (1, 2):
            response = self.http.request(
                method,
                path,
                params=params,
                data=json.dumps(body).encode() if body is not None else None,
                headers={**(_JSON if body is not None else {}), "Authorization": f"Bearer {token}"},
                ok_extra=(*ok_extra, 401),
                parse_json=True,
            )
            if response.status_code != 401:
                return response
            if attempt == 1:
                token = self.access_token(stale=token)
        raise AuthError(f"{self.name}: {method} {path} refused (HTTP 401) even with a new access token")

    def _list(self, path: str, filters: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paged list (the filters sent again with every page)."""
        params: dict[str, Any] = {"limit": self.page_limit}
        if filters:
            params["filter"] = json.dumps(filters, separators=(",", ":"))
        cursor = None
        while True:
            body = _json(self._api("GET", path, params={**params, **({"cursor": cursor} if cursor else {})}))
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RemoteError(f"{self.name}: GET {path} answered without an 'items' list")
            yield from items
            cursor = body.get("next_cursor")
            if not body.get("has_more") or not cursor:
                return

    def _message(self, response: requests.Response) -> str:
        """Pennylane's error message with the fields it names, masked, on one line."""
        body = _json(response, strict=False)
        parts: list[str] = []
        if isinstance(body, dict):
            for key in ("error", "message"):
                if isinstance(body.get(key), str) and body[key].strip():
                    parts.append(body[key])
                    break
            details = body.get("details")
            if isinstance(details, list):
                parts += [
                    f"{d.get('field')}: {d.get('message')}" for d in details if isinstance(d, dict) and d.get("field")
                ]
        if not parts:
            parts.append(response.content[:300].decode("utf-8", "replace"))
        text = " ".join(self.http.mask("; ".join(parts)).split())
        return text[:500] + ("…" if len(text) > 500 else "")

    def _create(self, path: str, body: dict[str, Any], what: str) -> tuple[dict[str, Any] | None, str]:
        """POST a reference record: (its body, "") when created, (None, Pennylane's message) on a 422."""
        response = self._api("POST", path, body=body, ok_extra=_REFUSED)
        if response.status_code == 422:
            return None, self._message(response)
        if response.status_code in _REFUSED:
            raise RemoteError(
                f"{self.name}: creating {what} refused (HTTP {response.status_code}): {self._message(response)}",
                status=response.status_code,
            )
        created = _json(response)
        if not isinstance(created, dict) or not isinstance(created.get("id"), int):
            raise RemoteError(f"{self.name}: POST {path} answered without an id ({what})")
        return created, ""

    # -- reference lookups (cached per instance)

    def _find_journal(self, code: str) -> int | None:
        if code in self._journals:
            return self._journals[code]
        for journal in self._list("/journals", [{"field": "code", "operator": "eq", "value": code}]):
            if isinstance(journal, dict) and journal.get("code") == code and isinstance(journal.get("id"), int):
                self._journals[code] = journal["id"]
                return journal["id"]
        return None

    def journal_id(self, code: str) -> int:
        """The id of the journal with ``code``, created ("Caisse <code>") when missing."""
        found = self._find_journal(code)
        if found is not None:
            return found
        created, refused = self._create("/journals", {"code": code, "label": f"Caisse {code}"}, f"journal {code}")
        if created is None:
            found = self._find_journal(code)  # taken meanwhile (a create whose answer was lost)
            if found is None:
                raise RemoteError(f"{self.name}: journal {code!r} refused (HTTP 422): {refused}", status=422)
            return found
        self._journals[code] = created["id"]
        return created["id"]

    def _find_account(self, number: str) -> int | None:
        if number in self._accounts:
            return self._accounts[number]
        for acct in self._list("/ledger_accounts", [{"field": "number", "operator": "start_with", "value": number}]):
            if isinstance(acct, dict) and acct.get("number") == number and isinstance(acct.get("id"), int):
                self._accounts[number] = acct["id"]
                return acct["id"]
        return None

    def account_id(self, number: str, vat_rate: str | None = None) -> int:
        """The id of the ledger account ``number``, created ("Compte <number>") when missing — with the VAT
        rate code of ``vat_rate`` (percent, e.g. ``"20"`` → ``FR_200``) when given.

        :raises ConfigError: a ``vat_rate`` that is not a percentage with at most one decimal.
        """
        found = self._find_account(number)
        if found is not None:
            return found
        body = {"number": number, "label": f"Compte {number}"}
        if vat_rate is not None:
            body |= {"vat_rate": self.vat_rate_code(vat_rate), "country_alpha2": self.country_alpha2}
        created, refused = self._create("/ledger_accounts", body, f"ledger account {number}")
        if created is None:
            found = self._find_account(number)
            if found is None:
                raise RemoteError(f"{self.name}: ledger account {number!r} refused (HTTP 422): {refused}", status=422)
            return found
        self._accounts[number] = created["id"]
        return created["id"]

    def vat_rate_code(self, rate: str) -> str:
        """Pennylane's VAT rate code of a percentage in the client's country: ``"5.5"`` → ``"FR_55"``."""
        try:
            tenths = Decimal(str(rate)) * 10
        except InvalidOperation:
            tenths = Decimal("NaN")
        if not tenths.is_finite() or tenths < 0 or tenths >= 1000 or tenths != tenths.to_integral_value():
            raise ConfigError(f"{self.name}: vat_rate {rate!r} is not a percentage with at most one decimal")
        return f"{self.country_alpha2}_{int(tenths)}"

    def _find_customer(self, ref: str) -> int | None:
        if ref in self._customers:
            return self._customers[ref]
        flt = [{"field": "external_reference", "operator": "eq", "value": ref}]
        for cust in self._list("/customers", flt):
            if isinstance(cust, dict) and cust.get("external_reference") == ref:
                account = cust.get("ledger_account")
                account_id = account.get("id") if isinstance(account, dict) else None
                if not isinstance(account_id, int):
                    raise RemoteError(f"{self.name}: customer {ref!r} has no ledger account of its own")
                self._customers[ref] = account_id
                return account_id
        return None

    def customer_account_id(self, ref: str, customer: dict[str, Any] | None) -> int:
        """The id of the receivable account of the customer with external reference ``ref``; the customer is
        created from ``customer`` (name, email) when missing.

        :raises ConfigError: when the customer is missing and ``customer`` does not describe it.
        """
        found = self._find_customer(ref)
        if found is not None:
            return found
        if not isinstance(customer, dict) or customer.get("external_reference") != ref or not customer.get("name"):
            raise ConfigError(f"{self.name}: customer {ref!r} does not exist and the entry does not describe it")
        body = {
            "name": str(customer["name"]),
            "external_reference": ref,
            "emails": [customer["email"]] if customer.get("email") else [],
            "billing_address": {"address": "", "postal_code": "", "city": "", "country_alpha2": self.country_alpha2},
        }
        created, refused = self._create("/company_customers", body, f"customer {ref}")
        if created is None:
            found = self._find_customer(ref)
            if found is None:
                raise RemoteError(f"{self.name}: customer {ref!r} refused (HTTP 422): {refused}", status=422)
            return found
        account = created.get("ledger_account")
        account_id = account.get("id") if isinstance(account, dict) else None
        if not isinstance(account_id, int):
            raise RemoteError(f"{self.name}: customer {ref!r} was created without a ledger account")
        self._customers[ref] = account_id
        return account_id

    # -- reference data

    def journals(self) -> list[RefItem]:
        return [
            RefItem(key=str(j["code"]), name=str(j.get("label") or j["code"]), extra={"id": j["id"]})
            for j in self._list("/journals")
            if isinstance(j, dict) and j.get("code") and j.get("id") is not None
        ]

    def ledger_accounts(self) -> list[RefItem]:
        return [
            RefItem(key=str(a["number"]), name=str(a.get("label") or a["number"]), extra={"id": a["id"]})
            for a in self._list("/ledger_accounts")
            if isinstance(a, dict) and a.get("number") and a.get("id") is not None
        ]

    def test_connection(self) -> list[RefItem]:
        """Check the credentials (``GET /me``) and list the company's journals.

        :raises AuthError: when Pennylane refuses the refresh token or the access token.
        """
        me = _json(self._api("GET", "/me"))
        if not isinstance(me, dict) or not isinstance(me.get("company"), dict):
            raise RemoteError(f"{self.name}: GET /me answered without a company")
        return self.journals()

    def reference_data(self) -> dict[str, list[RefItem]]:
        return {"journal": self.journals(), "ledger_account": self.ledger_accounts()}

    # -- posting (tillflow.delivery.outbox.LedgerPoster)

    def _check_payload(self, payload: dict[str, Any], posting_key: str) -> tuple[str, str, list[tuple]]:
        """(date, journal code, [(line, debit, credit)]) of a well-formed, balanced payload."""
        where = f"{self.name}: entry {posting_key}"
        if not isinstance(payload, dict):
            raise ConfigError(f"{where}: the payload is not an object")
        day, journal, label = payload.get("date"), payload.get("journal"), payload.get("label")
        try:
            if not isinstance(day, str) or len(day) != 10:
                raise ValueError
            date.fromisoformat(day)
        except ValueError:
            raise ConfigError(f"{where}: 'date' must be YYYY-MM-DD, got {day!r}") from None
        if not isinstance(journal, str) or not journal:
            raise ConfigError(f"{where}: 'journal' (a journal code) is required")
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(f"{where}: 'label' is required")
        lines = payload.get("lines")
        if not isinstance(lines, list) or not lines:
            raise ConfigError(f"{where}: 'lines' must be a non-empty list")
        out = []
        for i, line in enumerate(lines):
            if not isinstance(line, dict) or not isinstance(line.get("account"), str) or not line["account"]:
                raise ConfigError(f"{where}: line {i} needs an 'account' number")
            if line.get("vat_rate") is not None:
                try:
                    self.vat_rate_code(str(line["vat_rate"]))
                except ConfigError as exc:
                    raise ConfigError(f"{where}: line {i} {str(exc).removeprefix(self.name + ': ')}") from None
            debit = _amount(line.get("debit", "0.00"), f"{where}: line {i} debit")
            credit = _amount(line.get("credit", "0.00"), f"{where}: line {i} credit")
            out.append((line, debit, credit))
        total_debit = sum((d for _, d, _ in out), Decimal(0))
        total_credit = sum((c for _, _, c in out), Decimal(0))
        if total_debit != total_credit:
            raise ConfigError(f"{where} is not balanced: debit {total_debit:.2f} != credit {total_credit:.2f}")
        return day, journal, out

    def post(self, payload: dict[str, Any], posting_key: str) -> str:
        """Create the entry with ``posting_key`` as its piece number; returns Pennylane's entry id.

        :raises ConfigError: for a malformed or unbalanced payload (nothing is sent).
        :raises TransientError: "outcome unknown" when the answer to the entry's POST was lost (look it up
            with :meth:`find` before posting again); without it, a failure before the entry was sent.
        :raises RemoteError: ``status`` 400/404/422 when Pennylane refuses the entry (its message and fields).
        """
        day, journal, lines = self._check_payload(payload, posting_key)
        try:
            journal_id = self.journal_id(journal)
            body_lines = []
            for line, debit, credit in lines:
                if line.get("customer"):
                    account_id = self.customer_account_id(str(line["customer"]), payload.get("customer"))
                else:
                    rate = line.get("vat_rate")
                    account_id = self.account_id(line["account"], None if rate is None else str(rate))
                body_lines.append(
                    {
                        "debit": f"{debit:.2f}",
                        "credit": f"{credit:.2f}",
                        "ledger_account_id": account_id,
                        "label": str(line.get("label") or payload["label"])[:255],
                    }
                )
        except TransientError as exc:  # a reference call failed: the entry itself was not sent
            text = str(exc).replace("outcome unknown", "reference call failed")
            raise TransientError(f"{text} (entry {posting_key} not sent)") from None
        body = {
            "date": day,
            "label": str(payload["label"])[:255],
            "journal_id": journal_id,
            "currency": str(payload.get("currency") or "EUR"),
            "piece_number": posting_key,
            "ledger_entry_lines": body_lines,
        }
        response = self._api("POST", "/ledger_entries", body=body, ok_extra=_REFUSED)
        if response.status_code in _REFUSED:
            raise RemoteError(
                f"{self.name}: entry {posting_key} refused (HTTP {response.status_code}): {self._message(response)}",
                status=response.status_code,
            )
        created = _json(response, strict=False)
        entry_id = created.get("id") if isinstance(created, dict) else None
        if isinstance(entry_id, bool) or not isinstance(entry_id, int | str) or not str(entry_id):
            raise TransientError(
                f"{self.name}: entry {posting_key}: HTTP {response.status_code} without an entry id (outcome unknown)"
            )
        return str(entry_id)

    def find(self, posting_key: str, payload: dict[str, Any] | None = None) -> str | None:
        """The id of the entry whose piece number is ``posting_key``, or None.

        Pennylane filters entries on journal and date only, so ``payload`` (the entry's, for its journal code
        and date) is required: the entries of that journal and day are listed and their piece numbers
        compared. A missing journal means nothing was posted.

        :raises ConfigError: without ``payload`` (a scan of every entry of the company is refused).
        """
        if not isinstance(payload, dict) or not payload.get("journal") or not payload.get("date"):
            raise ConfigError(
                f"{self.name}: find({posting_key!r}) needs the entry's payload (journal and date): Pennylane "
                "filters entries on journal and date only"
            )
        journal_id = self._find_journal(str(payload["journal"]))
        if journal_id is None:
            return None
        filters = [
            {"field": "journal_id", "operator": "eq", "value": journal_id},
            {"field": "date", "operator": "eq", "value": str(payload["date"])},
        ]
        found = [str(e["id"]) for e in self._list("/ledger_entries", filters) if e.get("piece_number") == posting_key]
        if len(found) > 1:
            log.warning("%s: %d entries carry piece number %s: %s", self.name, len(found), posting_key, found)
        return min(found, key=int) if found else None

    # -- read-back (reconciliation)

    def ledger_entries(
        self, journal_codes: list[str], window: Window, *, piece_prefix: str = ""
    ) -> list[dict[str, Any]]:
        """The entries of these journals dated in ``window`` whose piece number starts with ``piece_prefix``, each
        ``{"id", "date", "journal_id", "piece_number", "debit", "credit"}`` with its lines' totals (Decimal).

        Two cursor-paged lists, filtered on journal and date (the filters Pennylane documents): ``GET
        /ledger_entries`` (piece numbers; entries are listed without their lines) and ``GET /ledger_entry_lines``
        (amounts, each line naming its entry) — not one call per entry. A journal that does not exist holds nothing.
        """
        ids = [j for j in (self._find_journal(code) for code in dict.fromkeys(journal_codes)) if j is not None]
        if not ids:
            return []
        filters = [
            {"field": "journal_id", "operator": "in", "value": ids},
            {"field": "date", "operator": "gteq", "value": window.start.isoformat()},
            {"field": "date", "operator": "lteq", "value": window.end.isoformat()},
        ]
        entries: dict[str, dict[str, Any]] = {}
        for e in self._list("/ledger_entries", filters):
            piece = e.get("piece_number") if isinstance(e, dict) else None
            if e.get("id") is None or not isinstance(piece, str) or not piece.startswith(piece_prefix):
                continue
            entries[str(e["id"])] = {
                "id": str(e["id"]),
                "date": date.fromisoformat(str(e["date"])),
                "journal_id": e.get("journal_id"),
                "piece_number": piece,
                "debit": Decimal("0.00"),
                "credit": Decimal("0.00"),
            }
        if not entries:
            return []
        for line in self._list("/ledger_entry_lines", filters):
            ref = line.get("ledger_entry") if isinstance(line, dict) else None
            entry = entries.get(str(ref.get("id"))) if isinstance(ref, dict) else None
            if entry is None:
                continue
            try:
                entry["debit"] += Decimal(str(line.get("debit") or "0"))
                entry["credit"] += Decimal(str(line.get("credit") or "0"))
            except InvalidOperation:
                raise RemoteError(f"{self.name}: unreadable amounts on ledger entry line {line.get('id')}") from None
        return sorted(entries.values(), key=lambda e: (e["date"], int(e["id"]) if e["id"].isdigit() else 0))

    # -- the keyed-delivery interface does not apply

    def existing(
        self, flow: str, target_keys: list[str], window: Window
    ) -> dict[tuple[str, date, int | None], Decimal]:
        raise NotImplementedError(f"{self.name}: ledger entries go through the outbox (post/find), not existing()")

    def deliver(self, flow: str, row: TargetRow) -> DeliveryResult:
        raise NotImplementedError(f"{self.name}: ledger entries go through the outbox (post/find), not deliver()")


def _amount(value: Any, what: str) -> Decimal:
    """An exact amount of at most 2 decimals, not negative (a string, or a Decimal/int)."""
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise ConfigError(f'{what} must be a decimal string such as "12.50", got {value!r}')
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ConfigError(f"{what} is not a decimal amount: {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(_CENT):
        raise ConfigError(f"{what} must be a non-negative amount with at most 2 decimals, got {value!r}")
    return amount.quantize(_CENT)


def _default_token_store():
    from tillflow.tokens import default_store

    return default_store()


def _json(response: requests.Response, *, strict: bool = True) -> Any:
    """The body as JSON (floats as Decimal); ``None`` when empty, or unparseable and not ``strict``."""
    if not response.content.strip():
        return None
    try:
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:
        if strict:
            raise TransientError(f"pennylane: HTTP {response.status_code} body is not JSON") from None
        return None
