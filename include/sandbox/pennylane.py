"""Stand-in for Pennylane's Company API v2 (accounting: journals, ledger accounts, ledger entries, customers).

Standard library only, nothing from ``tillflow``. Start it like the others::

    from sandbox.server import _Server
    from sandbox.pennylane import PennylaneApp
    server = _Server(("127.0.0.1", 0), PennylaneApp())   # then serve_forever in a thread
    base_url = f"http://127.0.0.1:{server.server_address[1]}/api/external/v2"
    token_url = f"http://127.0.0.1:{server.server_address[1]}/oauth/token"

The contract is Pennylane's public documentation (https://pennylane.readme.io/, API reference
https://pennylane.readme.io/reference/, server ``https://app.pennylane.com``, paths under
``/api/external/v2``), with the "2026 API changes" behaviour (https://pennylane.readme.io/docs/2026-api-changes-guide:
cursor pagination on journals, ledger accounts and ledger entries; granular scopes). What it says, and what
this stand-in does with it:

* **OAuth 2.0** (https://pennylane.readme.io/docs/oauth-20-walkthrough): ``POST /oauth/token`` (form) with
  ``grant_type=refresh_token``, ``refresh_token``, ``client_id`` (``client_secret``) → ``{"access_token",
  "token_type": "Bearer", "expires_in": 86400, "refresh_token", "scope", "created_at"}``. Access tokens live
  24 hours. Pennylane rotates refresh tokens: the answer carries a new refresh token and the one used is
  spent. Every API call sends ``Authorization: Bearer <access token>``; a missing, unknown or expired token
  is ``401``.
* **Rate limit** (https://pennylane.readme.io/docs/rate-limiting-1): 25 requests per 5 seconds *per access
  token*, every endpoint. Over it: ``429`` with the plain-text body "Rate limit exceeded. Please retry in X
  seconds." and headers ``retry-after`` (seconds), ``ratelimit-limit``, ``ratelimit-remaining``,
  ``ratelimit-reset`` (a Unix timestamp). Every answer that is not rate limited carries the three
  ``ratelimit-*`` headers too.
* **Lists** (cursor pagination): ``cursor`` (opaque), ``limit`` 1..100 (default 20; out of range is a
  ``400``, never clipped), ``sort`` (``id``/``-id``, default ``-id``: newest first), ``filter`` — a JSON array
  of ``{"field", "operator", "value"}`` (operators ``eq, not_eq, lt, lteq, gt, gteq, in, not_in,
  start_with``; each endpoint allows its own fields). The answer is ``{"items": [...], "has_more": bool,
  "next_cursor": str | null}``. The cursor does not carry the filters: they are sent again with every page.
* ``GET /me`` → ``{"user": {...}, "company": {"id", "name", "reg_no"}, "scopes": [...]}``.
* ``GET /journals`` (filters ``id``, ``code``) and ``POST /journals`` ``{"code", "label"}`` (both required;
  the code is 2 to 5 characters) → ``{"id", "code", "label", "type"}``.
* ``GET /ledger_accounts`` (filters ``id``, ``number`` — e.g. ``[{"field": "number", "operator":
  "start_with", "value": "512"}]``) and ``POST /ledger_accounts`` ``{"number", "label"}`` (required),
  ``vat_rate`` (e.g. ``"FR_200"``), ``country_alpha2`` → ``{"id", "number", "label", "vat_rate",
  "country_alpha2", "enabled", "letterable", …}``.
* ``POST /ledger_entries`` ``{"date": "YYYY-MM-DD", "label", "journal_id", "ledger_entry_lines": [{"debit":
  "100.00", "credit": "0.00", "ledger_account_id", "label"}], "currency", "piece_number", "due_date"}``:
  ``date``, ``label``, ``journal_id`` and the lines required; amounts are *strings*; both ``debit`` and
  ``credit`` on every line; the lines must balance, else ``422``; at most 1,000 lines. → the entry
  ``{"id", "label", "date", "journal_id", "journal": {"id"}, "piece_number", "currency", "ledger_entry_lines":
  [{"id", "debit", "credit", "label", "ledger_account_id", "ledger_account": {"id", "number"}}], …}`` (201).
  Pennylane has **no idempotency key** and does not deduplicate: two POSTs make two entries, even with the
  same ``piece_number``. ``GET /ledger_entries`` filters on ``journal_id`` and ``date`` only (the documented
  ones); ``GET /ledger_entries/{id}`` answers one entry with its lines.
* ``GET /ledger_entry_lines`` (https://pennylane.readme.io/reference/ledger-entry-lines, "List ledger entry
  lines", added February 2025) lists the lines of every entry, filters ``id``, ``journal_id``,
  ``ledger_account_id`` and ``date`` (operators ``eq, not_eq, lt, lteq, gt, gteq, in, not_in``), cursor-paged
  like every list → ``{"id", "label", "debit", "credit", "date", "ledger_account": {"id", "number"},
  "ledger_entry": {"id"}, "journal": {"id"}, "created_at", "updated_at"}`` per line (reconciliation reads a
  day's totals from it without one call per entry).
* ``POST /company_customers`` ``{"name", "billing_address": {"address", "postal_code", "city",
  "country_alpha2"}}`` (required), ``emails``, ``external_reference`` ("Value must be unique": a second
  customer with the same reference is refused), ``ledger_account: {"number"}`` (optional; without it
  Pennylane opens the customer's own receivable account, a 411 auxiliary account) → the customer with
  ``"ledger_account": {"id"}``. ``GET /customers`` lists customers (filters ``id``, ``external_reference``,
  ``name``, ``customer_type``); ``GET /company_customers/{id}`` answers one.

Assumptions where the documentation is silent (each chosen to be strict, so a client bug shows here first):

* Errors answer ``{"error": message, "status": code}`` (the OpenAPI error schema), a ``422`` also
  ``"details": [{"field", "message"}]`` naming every refused field (the guide shows ``details``; its exact
  shape is not documented). A body that is not a JSON object is a ``400``.
* Amounts must be strings with exactly two decimals (``"12.50"``; not ``12.5`` the number, not ``"12.5"``),
  not negative. A line has a debit or a credit, not both and not neither. A field the schema does not
  have is refused (``422``); ``currency`` is three capital letters (default ``EUR``).
* A refused refresh token is ``400 {"error": "invalid_grant"}`` (RFC 6749 §5.2). The sandbox's seed refresh
  token ``prt-<company>`` (any company name) may be used again and again (it stands for a fresh consent)
  unless ``POST /_sandbox/seeds {"strict": true}`` makes it single-use like every issued one;
  each refresh token the endpoint *issues* is single-use (rotation). ``client_id`` is required, a
  ``client_secret`` is not checked. The token endpoint is not rate limited.
* The rate limit is a **sliding window** (a request is refused when 25 requests of the same token arrived
  in the last 5 seconds): stricter than a fixed window, so a client that passes here passes there.
  ``retry-after`` is the whole seconds until the oldest of those leaves the window (at least 1).
* Journal codes are 2 to 5 capital letters or digits and unique; ledger account numbers are unique, start
  with a digit and hold digits and capital letters; ``GET /ledger_entries`` lists entries without their lines
  (``"ledger_entry_lines": {"url"}``); ``GET /ledger_entries/{id}`` has them.
* Each company starts with the journals ``VT``, ``HA``, ``BQ``, ``OD`` and the accounts ``411000``,
  ``445710``, ``512000``, ``530000``, ``706000``, ``707000``. A new customer's own account is ``411`` followed
  by a 5-digit sequence.

Control (besides the base class's ``reset``/``faults``/``requests``/``config``/``state``):

* ``POST /_sandbox/lose`` ``{"count": N, "paths": ["/api/external/v2/ledger_entries"]}``: the next N POSTs
  whose path starts with one of ``paths`` (default: every POST) are processed — the entry *is* created — but
  the answer is lost: the client gets ``504 Gateway Timeout`` (not the 201). ``GET`` shows what is left.
* ``POST /_sandbox/tokens/expire`` ``{"company"?}``: every access token (of that company) expires now.
* ``GET /_sandbox/companies/{company}``: journals, ledger accounts, customers and entries with their lines.
* ``GET /_sandbox/companies/{company}/trial_balance``: per account number ``{"debit", "credit", "balance"}``
  (debit − credit), and the totals.
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import hashlib
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from decimal import Decimal
from urllib.parse import parse_qs, quote, unquote

from sandbox.server import BadRequest, Request, Response, VendorApp, json_response, json_type, shown

API_PREFIX = "/api/external/v2"
TOKEN_PATH = "/oauth/token"
TOKEN_TTL = 86400
RATE_LIMIT = 25
RATE_WINDOW = 5.0
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_LINES = 1000
SCOPES = ("journals:all", "ledger_accounts:all", "ledger_entries:all", "customers:all")
_SEED_REFRESH_RE = re.compile(r"^prt-(\S+)$")
_AMOUNT_RE = re.compile(r"^\d+\.\d{2}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_JOURNAL_CODE_RE = re.compile(r"^[A-Z0-9]{2,5}$")
_ACCOUNT_NUMBER_RE = re.compile(r"^[0-9][0-9A-Z]{0,19}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_VAT_RATE_RE = re.compile(r"^([A-Z]{2}_\d{1,4}|exempt|extracom|intracom|crossborder|any)$")
_OPERATORS = frozenset({"eq", "not_eq", "lt", "lteq", "gt", "gteq", "in", "not_in", "start_with"})
_SEED_JOURNALS = (("VT", "Ventes"), ("HA", "Achats"), ("BQ", "Banque"), ("OD", "Opérations diverses"))
_SEED_ACCOUNTS = (
    ("411000", "Clients"),
    ("445710", "TVA collectée"),
    ("512000", "Banque"),
    ("530000", "Caisse"),
    ("706000", "Prestations de services"),
    ("707000", "Ventes de marchandises"),
)
_ENTRY_FIELDS = frozenset(
    {"date", "label", "journal_id", "ledger_entry_lines", "currency", "piece_number", "due_date", "file_attachment_id"}
)
_LINE_FIELDS = frozenset({"debit", "credit", "ledger_account_id", "label"})
_CUSTOMER_FIELDS = frozenset(
    {
        "name",
        "vat_number",
        "reg_no",
        "ledger_account",
        "phone",
        "billing_address",
        "delivery_address",
        "payment_conditions",
        "billing_iban",
        "recipient",
        "reference",
        "notes",
        "emails",
        "external_reference",
        "billing_language",
    }
)
_ADDRESS_FIELDS = ("address", "postal_code", "city", "country_alpha2")
#: per list endpoint: the filter fields it takes and, for each, the operators
_FILTERS = {
    "/journals": {"id": {"eq", "not_eq", "in", "not_in", "lt", "lteq", "gt", "gteq"}, "code": {"eq", "in"}},
    "/ledger_accounts": {
        "id": {"eq", "not_eq", "in", "not_in", "lt", "lteq", "gt", "gteq"},
        "number": {"eq", "not_eq", "in", "not_in", "start_with"},
    },
    "/ledger_entries": {
        "journal_id": {"eq", "not_eq", "lt", "lteq", "gt", "gteq", "in", "not_in"},
        "date": {"eq", "not_eq", "lt", "lteq", "gt", "gteq"},
    },
    "/ledger_entry_lines": {
        field: {"eq", "not_eq", "lt", "lteq", "gt", "gteq", "in", "not_in"}
        for field in ("id", "journal_id", "ledger_account_id", "date")
    },
    "/customers": {
        "id": {"eq", "not_eq", "in", "not_in", "lt", "lteq", "gt", "gteq"},
        "external_reference": {"eq", "in"},
        "name": {"eq", "start_with"},
        "customer_type": {"eq"},
    },
}
_LIST_PARAMS = frozenset({"cursor", "limit", "sort", "filter"})


class Invalid(Exception):
    """A 422 naming the refused fields: ``[(field, message)]``."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems


def company_number(company: str) -> int:
    """The numeric id of a sandbox company (deterministic)."""
    return 100000 + int(hashlib.sha256(company.encode()).hexdigest()[:8], 16) % 800000


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PennylaneApp(VendorApp):
    """Pennylane's Company API v2 (accounting part) and its OAuth token endpoint."""

    name = "pennylane"

    def __init__(self, latency_ms: float = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # the rate-limit window's clock (tests may inject a fake one)
        super().__init__(latency_ms)

    def reset_state(self) -> None:
        self.companies: dict[str, dict] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # access token → (company, expires at: wall clock)
        self.refresh_tokens: dict[str, str] = {}  # issued (single-use) refresh token → company
        self.windows: dict[str, collections.deque] = {}  # access token → arrival times (sliding window)
        self.lose = {"count": 0, "paths": None, "lost": 0}
        self.next_id = 1000
        self.spent_seeds: set[str] = set()
        self.strict_seeds = False  # POST /_sandbox/seeds {"strict": true}: a seed token works once, like any other
        self.refreshes: dict[str, int] = {}  # company → refresh grants answered (tests: "the vendor has answered")

    # -- state

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _company(self, company: str) -> dict:
        comp = self.companies.get(company)
        if comp is None:
            comp = self.companies[company] = {
                "id": company_number(company),
                "name": company,
                "journals": {},
                "accounts": {},
                "customers": {},
                "entries": {},
                "next_aux": 1,
            }
            for code, label in _SEED_JOURNALS:
                jid = self._id()
                comp["journals"][jid] = {"id": jid, "code": code, "label": label, "type": "seeded"}
            for number, label in _SEED_ACCOUNTS:
                self._new_account(comp, number, label)
        return comp

    def _new_account(self, comp: dict, number: str, label: str, vat_rate=None, country=None) -> dict:
        aid = self._id()
        now = _now()
        acct = {
            "id": aid,
            "number": number,
            "label": label,
            "vat_rate": vat_rate,
            "country_alpha2": country,
            "enabled": True,
            "letterable": number.startswith(("401", "411")),
            "created_at": now,
            "updated_at": now,
        }
        comp["accounts"][aid] = acct
        return acct

    def _entry_out(self, comp: dict, entry: dict, *, lines: bool = True) -> dict:
        out = {
            "id": entry["id"],
            "label": entry["label"],
            "date": entry["date"],
            "due_date": entry["due_date"],
            "journal_id": entry["journal_id"],
            "journal": {"id": entry["journal_id"], "url": f"{API_PREFIX}/journals/{entry['journal_id']}"},
            "piece_number": entry["piece_number"],
            "currency": entry["currency"],
            "created_at": entry["created_at"],
            "updated_at": entry["created_at"],
        }
        if lines:
            out["ledger_entry_lines"] = [
                {
                    "id": line["id"],
                    "debit": line["debit"],
                    "credit": line["credit"],
                    "label": line["label"],
                    "ledger_account_id": line["ledger_account_id"],
                    "ledger_account": {
                        "id": line["ledger_account_id"],
                        "number": comp["accounts"][line["ledger_account_id"]]["number"],
                    },
                }
                for line in entry["lines"]
            ]
        else:
            out["ledger_entry_lines"] = {"url": f"{API_PREFIX}/ledger_entries/{entry['id']}/ledger_entry_lines"}
        return out

    @staticmethod
    def _customer_out(cust: dict) -> dict:
        out = {k: v for k, v in cust.items() if k != "ledger_account_id"}
        return {**out, "ledger_account": {"id": cust["ledger_account_id"]}, "customer_type": "company"}

    def _company_out(self, comp: dict) -> dict:
        customers = []
        for cust in comp["customers"].values():
            out = self._customer_out(cust)
            out["ledger_account_number"] = comp["accounts"][cust["ledger_account_id"]]["number"]
            customers.append(out)
        return {
            "id": comp["id"],
            "name": comp["name"],
            "journals": sorted(comp["journals"].values(), key=lambda j: j["id"]),
            "ledger_accounts": sorted(comp["accounts"].values(), key=lambda a: a["id"]),
            "customers": customers,
            "entries": [self._entry_out(comp, e) for e in sorted(comp["entries"].values(), key=lambda e: e["id"])],
        }

    def state(self) -> dict:
        return {
            "companies": {name: self._company_out(comp) for name, comp in sorted(self.companies.items())},
            "lose": dict(self.lose),
            "refreshes": dict(self.refreshes),
        }

    def trial_balance(self, company: str) -> dict:
        """Per account number: the debit and credit totals of every entry line, and the balance."""
        with self.lock:
            comp = self._company(company)
            totals: dict[str, list[Decimal]] = {}
            for entry in comp["entries"].values():
                for line in entry["lines"]:
                    number = comp["accounts"][line["ledger_account_id"]]["number"]
                    row = totals.setdefault(number, [Decimal(0), Decimal(0)])
                    row[0] += Decimal(line["debit"])
                    row[1] += Decimal(line["credit"])
        accounts = {
            number: {"debit": f"{d:.2f}", "credit": f"{c:.2f}", "balance": f"{d - c:.2f}"}
            for number, (d, c) in sorted(totals.items())
        }
        debit = sum((d for d, _ in totals.values()), Decimal(0))
        credit = sum((c for _, c in totals.values()), Decimal(0))
        return {"accounts": accounts, "total_debit": f"{debit:.2f}", "total_credit": f"{credit:.2f}"}

    # -- errors

    def error(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
        return json_response(status, {"error": message, "status": status, **extra}, headers)

    def _invalid(self, exc: Invalid) -> Response:
        details = [{"field": f, "message": m} for f, m in exc.problems]
        message = "Unprocessable Entity: " + "; ".join(f"{f} {m}" for f, m in exc.problems)
        return self.error(422, message, details=details)

    def fault_headers(self) -> dict[str, str]:
        return {
            "ratelimit-limit": str(RATE_LIMIT),
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(int(time.time()) + 1),
        }

    # -- control

    def control_extra(self, req: Request, sub: str) -> Response | None:
        if sub == "seeds":  # strict: the seed refresh token is single-use too (as at Pennylane)
            body = req.json() if req.method == "POST" else {}
            if req.method == "POST":
                if not isinstance(body, dict) or not isinstance(body.get("strict"), bool):
                    raise BadRequest('body: {"strict": true|false}')
                with self.lock:
                    self.strict_seeds = body["strict"]
            return json_response(200, {"strict": self.strict_seeds})
        if sub == "lose":
            if req.method == "GET":
                with self.lock:
                    return json_response(200, dict(self.lose))
            if req.method != "POST":
                return self.error(405, "use GET or POST")
            body = req.json()
            if not isinstance(body, dict) or set(body) - {"count", "paths"}:
                raise BadRequest('body must be {"count": N, "paths": [path prefixes]}')
            count = body.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 10000:
                raise BadRequest("'count' must be an integer between 0 and 10000")
            paths = body.get("paths")
            if paths is not None and (not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)):
                raise BadRequest("'paths' must be a list of path prefixes")
            with self.lock:
                self.lose = {"count": count, "paths": paths, "lost": self.lose["lost"]}
                return json_response(200, dict(self.lose))
        if sub == "tokens/expire":
            if req.method != "POST":
                return self.error(405, "use POST")
            body = req.json()
            only = body.get("company") if isinstance(body, dict) else None
            with self.lock:
                expired = [t for t, (company, _) in self.tokens.items() if only is None or company == only]
                for token in expired:
                    self.tokens.pop(token)
            return json_response(200, {"expired": len(expired)})
        match = re.fullmatch(r"companies/([^/]+)(/trial_balance)?", sub)
        if match is None:
            return None
        if req.method != "GET":
            return self.error(405, "use GET")
        company = unquote(match.group(1))
        if match.group(2):
            return json_response(200, self.trial_balance(company))
        with self.lock:
            return json_response(200, {"company": self._company_out(self._company(company))})

    # -- OAuth

    def _token(self, req: Request) -> Response:
        if req.method != "POST":
            return self.error(405, "use POST")
        media = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            return json_response(400, {"error": "invalid_request", "error_description": "use a form body"})
        try:
            form = parse_qs(req.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            form = {}
        grant_type = (form.get("grant_type") or [""])[0]
        refresh_token = (form.get("refresh_token") or [""])[0]
        client_id = (form.get("client_id") or [""])[0]
        if grant_type != "refresh_token":
            return json_response(400, {"error": "unsupported_grant_type"})
        if not client_id:
            return json_response(401, {"error": "invalid_client"})
        with self.lock:
            seed = _SEED_REFRESH_RE.match(refresh_token)
            if seed and self.strict_seeds and refresh_token in self.spent_seeds:
                seed = None  # spent: falls through to invalid_grant
            elif seed and self.strict_seeds:
                self.spent_seeds.add(refresh_token)
            company = seed.group(1) if seed else self.refresh_tokens.pop(refresh_token, None)
            if company is None:  # never echo what was sent
                return json_response(400, {"error": "invalid_grant", "error_description": "refresh token invalid"})
            self._company(company)
            now = time.time()
            self.tokens = {t: v for t, v in self.tokens.items() if v[1] > now}
            access = secrets.token_hex(24)
            self.tokens[access] = (company, now + TOKEN_TTL)
            rotated = f"prtr-{secrets.token_hex(16)}"
            self.refresh_tokens[rotated] = company
            self.refreshes[company] = self.refreshes.get(company, 0) + 1
        body = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL,
            "refresh_token": rotated,
            "scope": " ".join(SCOPES),
            "created_at": int(now),
        }
        return json_response(200, body)

    def _authenticate(self, req: Request) -> tuple[str, str] | None:
        auth = req.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return None
        token = auth[7:].strip()
        with self.lock:
            entry = self.tokens.get(token)
        if entry is None or entry[1] <= time.time():
            return None
        return token, entry[0]

    def _rate_limit(self, token: str) -> tuple[bool, dict[str, str]]:
        now = self.clock()
        with self.lock:
            window = self.windows.setdefault(token, collections.deque())
            while window and window[0] <= now - RATE_WINDOW:
                window.popleft()
            allowed = len(window) < RATE_LIMIT
            if allowed:
                window.append(now)
            wait = (window[0] + RATE_WINDOW - now) if window else RATE_WINDOW
            remaining = max(0, RATE_LIMIT - len(window))
        headers = {
            "ratelimit-limit": str(RATE_LIMIT),
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": str(math.ceil(time.time() + max(wait, 0))),
        }
        if not allowed:
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        return allowed, headers

    # -- dispatch

    def api(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if path == TOKEN_PATH:
            return self._token(req)
        if not path.startswith(API_PREFIX + "/"):
            return self.error(404, "Not found")
        sub = path[len(API_PREFIX) :]
        auth = self._authenticate(req)
        if auth is None:
            return self.error(401, "Unauthorized", headers={"WWW-Authenticate": 'Bearer realm="Pennylane"'})
        token, company = auth
        allowed, headers = self._rate_limit(token)
        if not allowed:
            seconds = headers["retry-after"]
            text = f"Rate limit exceeded. Please retry in {seconds} seconds."
            return Response(429, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **headers})
        try:
            resp = self._route(req, sub, company)
        except Invalid as exc:
            resp = self._invalid(exc)
        except BadRequest as exc:
            resp = self.error(400, str(exc))
        if req.method == "POST" and 200 <= resp.status < 300 and self._lose_this(path):
            resp = self.error(504, "Gateway Timeout")
        resp.headers.update(headers)
        return resp

    def _lose_this(self, path: str) -> bool:
        with self.lock:
            lose = self.lose
            if lose["count"] <= 0:
                return False
            if lose["paths"] is not None and not any(path.startswith(p.rstrip("/")) for p in lose["paths"]):
                return False
            lose["count"] -= 1
            lose["lost"] += 1
            return True

    def _route(self, req: Request, sub: str, company: str) -> Response:
        method = req.method
        lists = {
            "/journals": self._list_journals,
            "/ledger_accounts": self._list_accounts,
            "/ledger_entries": self._list_entries,
            "/ledger_entry_lines": self._list_entry_lines,
            "/customers": self._list_customers,
        }
        creates = {
            "/journals": self._create_journal,
            "/ledger_accounts": self._create_account,
            "/ledger_entries": self._create_entry,
            "/company_customers": self._create_customer,
        }
        if sub == "/me":
            if method != "GET":
                return self.error(405, f"Method {method} not allowed")
            with self.lock:
                comp = self._company(company)
            me = {
                "user": {
                    "id": comp["id"] * 10 + 1,
                    "first_name": "Sandbox",
                    "last_name": "User",
                    "email": f"api+{company}@example.com",
                    "locale": "fr",
                },
                "company": {"id": comp["id"], "name": comp["name"], "reg_no": str(comp["id"]).zfill(9)},
                "scopes": list(SCOPES),
            }
            return json_response(200, me)
        if method == "GET" and sub in lists:
            return self._list(req, sub, company, lists[sub])
        if method == "POST" and sub in creates:
            body = self._body(req)
            with self.lock:
                return creates[sub](body, self._company(company))
        m = re.fullmatch(r"/(journals|ledger_accounts|ledger_entries|company_customers)/([^/]+)", sub)
        if m and method == "GET":
            kind, raw = m.groups()
            if not raw.isdigit():
                return self.error(404, f"Not found: {kind}/{raw}")
            with self.lock:
                comp = self._company(company)
                store = {
                    "journals": "journals",
                    "ledger_accounts": "accounts",
                    "ledger_entries": "entries",
                    "company_customers": "customers",
                }[kind]
                rec = comp[store].get(int(raw))
                if rec is None:
                    return self.error(404, f"Not found: {kind}/{raw}")
                if kind == "ledger_entries":
                    return json_response(200, self._entry_out(comp, rec))
                if kind == "company_customers":
                    return json_response(200, self._customer_out(rec))
                return json_response(200, dict(rec))
        if sub in lists or sub in creates or m:
            return self.error(405, f"Method {method} not allowed on {API_PREFIX}{sub}")
        return self.error(404, "Not found")

    @staticmethod
    def _body(req: Request) -> dict:
        media = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            raise BadRequest(f"Content-Type must be application/json, got {media or 'none'}")
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest(f"the body must be a JSON object, got {json_type(body)}")
        return body

    # -- lists

    def _list(self, req: Request, sub: str, company: str, items_of) -> Response:
        unknown = sorted(set(req.query) - _LIST_PARAMS)
        if unknown:
            raise BadRequest(f"unknown parameter(s) {unknown}; allowed: {sorted(_LIST_PARAMS)}")
        repeated = sorted(k for k, v in req.query.items() if len(v) > 1)
        if repeated:
            raise BadRequest(f"parameter {repeated[0]!r} given {len(req.query[repeated[0]])} times")
        limit = DEFAULT_LIMIT
        raw_limit = req.arg("limit")
        if raw_limit not in (None, ""):
            try:
                limit = int(raw_limit)
            except ValueError:
                raise BadRequest(f"parameter 'limit' must be an integer, got {raw_limit!r}") from None
            if not 1 <= limit <= MAX_LIMIT:
                raise BadRequest(f"parameter 'limit' must be between 1 and {MAX_LIMIT}, got {limit}")
        sort = req.arg("sort") or "-id"
        if sort not in ("id", "-id"):
            raise BadRequest(f"parameter 'sort' must be 'id' or '-id', got {sort!r}")
        filters = self._filters(req.arg("filter"), sub)
        after = self._cursor(req.arg("cursor"), sort)
        with self.lock:
            comp = self._company(company)
            rows = [r for r in items_of(comp) if all(self._match(r, f) for f in filters)]
        rows.sort(key=lambda r: r["id"], reverse=sort == "-id")
        if after is not None:
            rows = [r for r in rows if (r["id"] < after if sort == "-id" else r["id"] > after)]
        page = rows[:limit]
        has_more = len(rows) > limit
        cursor = self._make_cursor(page[-1]["id"], sort) if has_more else None
        with self.lock:
            out = [self._out(sub, comp, r) for r in page]
        return json_response(200, {"items": out, "has_more": has_more, "next_cursor": cursor})

    def _out(self, sub: str, comp: dict, rec: dict) -> dict:
        if sub == "/ledger_entries":
            return self._entry_out(comp, rec, lines=False)
        if sub == "/customers":
            return self._customer_out(rec)
        if sub == "/ledger_entry_lines":
            return self._line_out(comp, rec)
        return dict(rec)

    @staticmethod
    def _line_out(comp: dict, line: dict) -> dict:
        account = comp["accounts"][line["ledger_account_id"]]
        return {
            "id": line["id"],
            "label": line["label"],
            "debit": line["debit"],
            "credit": line["credit"],
            "date": line["date"],
            "ledger_account": {"id": account["id"], "number": account["number"]},
            "ledger_entry": {"id": line["ledger_entry_id"]},
            "journal": {"id": line["journal_id"]},
            "created_at": line["created_at"],
            "updated_at": line["created_at"],
        }

    @staticmethod
    def _list_journals(comp: dict) -> list[dict]:
        return list(comp["journals"].values())

    @staticmethod
    def _list_accounts(comp: dict) -> list[dict]:
        return list(comp["accounts"].values())

    @staticmethod
    def _list_entries(comp: dict) -> list[dict]:
        return list(comp["entries"].values())

    @staticmethod
    def _list_entry_lines(comp: dict) -> list[dict]:
        return [
            {
                **line,
                "ledger_entry_id": entry["id"],
                "journal_id": entry["journal_id"],
                "date": entry["date"],
                "created_at": entry["created_at"],
            }
            for entry in comp["entries"].values()
            for line in entry["lines"]
        ]

    @staticmethod
    def _list_customers(comp: dict) -> list[dict]:
        return list(comp["customers"].values())

    @staticmethod
    def _make_cursor(last_id: int, sort: str) -> str:
        return base64.urlsafe_b64encode(json.dumps({"after": last_id, "sort": sort}).encode()).decode().rstrip("=")

    @staticmethod
    def _cursor(raw: str | None, sort: str) -> int | None:
        if raw in (None, ""):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            after = data["after"]
            if isinstance(after, bool) or not isinstance(after, int) or data.get("sort") != sort:
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
            raise BadRequest("parameter 'cursor' is not a cursor this endpoint returned (same sort)") from None
        return after

    @staticmethod
    def _filters(raw: str | None, sub: str) -> list[tuple[str, str, object]]:
        if raw in (None, ""):
            return []
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise BadRequest("parameter 'filter' must be a JSON array of {field, operator, value}") from None
        if not isinstance(parsed, list):
            raise BadRequest("parameter 'filter' must be a JSON array of {field, operator, value}")
        allowed = _FILTERS[sub]
        out = []
        for item in parsed:
            if not isinstance(item, dict) or set(item) != {"field", "operator", "value"}:
                raise BadRequest(f"each filter must be an object with field, operator and value, got {shown(item)}")
            field, operator, value = item["field"], item["operator"], item["value"]
            if field not in allowed:
                raise BadRequest(f"filter field {field!r} is not supported here; allowed: {sorted(allowed)}")
            if operator not in _OPERATORS or operator not in allowed[field]:
                raise BadRequest(f"filter operator {operator!r} is not supported on {field!r}")
            if operator in ("in", "not_in"):
                if not isinstance(value, list) or not value:
                    raise BadRequest(f"filter {field} {operator}: value must be a non-empty array")
                values = value
            else:
                values = [value]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, str | int):
                    raise BadRequest(f"filter {field}: value must be a string or an integer, got {json_type(v)}")
                if field == "date" and not (isinstance(v, str) and _DATE_RE.match(v)):
                    raise BadRequest(f"filter date: value must be a date YYYY-MM-DD, got {shown(v)}")
                if field.endswith("id") and not str(v).isdigit():
                    raise BadRequest(f"filter {field}: value must be an integer id, got {shown(v)}")
            out.append((field, operator, value))
        return out

    @staticmethod
    def _match(rec: dict, flt: tuple[str, str, object]) -> bool:
        field, operator, value = flt
        have = rec.get(field)
        if field.endswith("id"):
            have = None if have is None else int(have)
            value = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif have is not None:
            have = str(have)
            value = [str(v) for v in value] if isinstance(value, list) else str(value)
        if have is None:
            return operator in ("not_eq", "not_in")
        if operator == "eq":
            return have == value
        if operator == "not_eq":
            return have != value
        if operator == "in":
            return have in value
        if operator == "not_in":
            return have not in value
        if operator == "start_with":
            return str(have).startswith(str(value))
        return {"lt": have < value, "lteq": have <= value, "gt": have > value, "gteq": have >= value}[operator]

    # -- field checks

    @staticmethod
    def _unknown(body: dict, allowed, where: str, problems: list) -> None:
        for name in sorted(set(body) - set(allowed)):
            problems.append((f"{where}{name}", "is not a known field"))

    @staticmethod
    def _string(body: dict, name: str, problems: list, *, required: bool, where: str = "") -> str | None:
        value = body.get(name)
        if value is None:
            if required:
                problems.append((f"{where}{name}", "is missing"))
            return None
        if not isinstance(value, str):
            problems.append((f"{where}{name}", f"must be a string, got {json_type(value)} {shown(value)}"))
            return None
        if required and not value.strip():
            problems.append((f"{where}{name}", "can't be blank"))
            return None
        return value

    @staticmethod
    def _integer(body: dict, name: str, problems: list, *, where: str = "") -> int | None:
        value = body.get(name)
        if value is None:
            problems.append((f"{where}{name}", "is missing"))
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append((f"{where}{name}", f"must be an integer, got {json_type(value)} {shown(value)}"))
            return None
        return value

    def _date(self, body: dict, name: str, problems: list, *, required: bool) -> str | None:
        value = self._string(body, name, problems, required=required)
        if value is None:
            return None
        try:
            if not _DATE_RE.match(value):
                raise ValueError
            dt.date.fromisoformat(value)
        except ValueError:
            problems.append((name, f"must be a date YYYY-MM-DD, got {shown(value)}"))
            return None
        return value

    @staticmethod
    def _amount(line: dict, name: str, problems: list, where: str) -> Decimal | None:
        value = line.get(name)
        if value is None:
            problems.append((f"{where}{name}", "is missing"))
            return None
        if not isinstance(value, str):
            problems.append(
                (
                    f"{where}{name}",
                    f'must be a string with two decimals such as "100.00", got {json_type(value)} {shown(value)}',
                )
            )
            return None
        if not _AMOUNT_RE.match(value):
            problems.append(
                (f"{where}{name}", f'must be a non-negative amount with two decimals ("100.00"), got {shown(value)}')
            )
            return None
        return Decimal(value)

    # -- creates

    def _create_journal(self, body: dict, comp: dict) -> Response:
        problems: list = []
        self._unknown(body, ("code", "label"), "", problems)
        code = self._string(body, "code", problems, required=True)
        label = self._string(body, "label", problems, required=True)
        if code is not None and not _JOURNAL_CODE_RE.match(code):
            problems.append(("code", f"must be 2 to 5 capital letters or digits, got {shown(code)}"))
        elif code is not None and any(j["code"] == code for j in comp["journals"].values()):
            problems.append(("code", "has already been taken"))
        if problems:
            raise Invalid(problems)
        jid = self._id()
        journal = comp["journals"][jid] = {"id": jid, "code": code, "label": label, "type": "other"}
        return json_response(201, dict(journal))

    def _create_account(self, body: dict, comp: dict) -> Response:
        problems: list = []
        self._unknown(body, ("number", "label", "vat_rate", "country_alpha2"), "", problems)
        number = self._string(body, "number", problems, required=True)
        label = self._string(body, "label", problems, required=True)
        vat_rate = self._string(body, "vat_rate", problems, required=False)
        country = self._string(body, "country_alpha2", problems, required=False)
        if number is not None and not _ACCOUNT_NUMBER_RE.match(number):
            problems.append(
                ("number", f"must start with a digit and hold digits and capital letters, got {shown(number)}")
            )
        elif number is not None and any(a["number"] == number for a in comp["accounts"].values()):
            problems.append(("number", "has already been taken"))
        if vat_rate is not None and not _VAT_RATE_RE.match(vat_rate):
            problems.append(("vat_rate", f'is not a VAT rate code such as "FR_200", got {shown(vat_rate)}'))
        if country is not None and not _COUNTRY_RE.match(country):
            problems.append(("country_alpha2", f"must be a 2-letter country code, got {shown(country)}"))
        if problems:
            raise Invalid(problems)
        acct = self._new_account(comp, number, label, vat_rate, country)
        return json_response(201, dict(acct))

    def _create_customer(self, body: dict, comp: dict) -> Response:
        problems: list = []
        self._unknown(body, _CUSTOMER_FIELDS, "", problems)
        name = self._string(body, "name", problems, required=True)
        for optional in (
            "vat_number",
            "reg_no",
            "phone",
            "billing_iban",
            "recipient",
            "reference",
            "notes",
            "payment_conditions",
            "billing_language",
        ):
            self._string(body, optional, problems, required=False)
        address = body.get("billing_address")
        if address is None:
            problems.append(("billing_address", "is missing"))
        elif not isinstance(address, dict):
            problems.append(("billing_address", f"must be an object, got {json_type(address)}"))
        else:
            self._unknown(address, _ADDRESS_FIELDS, "billing_address.", problems)
            for field in _ADDRESS_FIELDS:
                value = address.get(field)
                if not isinstance(value, str):
                    what = "is missing" if value is None else f"must be a string, got {json_type(value)}"
                    problems.append((f"billing_address.{field}", what))
            country = address.get("country_alpha2")
            if isinstance(country, str) and not _COUNTRY_RE.match(country):
                problems.append(("billing_address.country_alpha2", f"must be a 2-letter code, got {shown(country)}"))
        emails = body.get("emails")
        if emails is not None and (
            not isinstance(emails, list) or not all(isinstance(e, str) and "@" in e for e in emails)
        ):
            problems.append(("emails", f"must be an array of e-mail addresses, got {shown(emails)}"))
        ref = self._string(body, "external_reference", problems, required=False)
        if ref is not None and any(c["external_reference"] == ref for c in comp["customers"].values()):
            problems.append(("external_reference", "has already been taken"))
        account = None
        wanted = body.get("ledger_account")
        if wanted is not None:
            if not isinstance(wanted, dict) or set(wanted) != {"number"} or not isinstance(wanted["number"], str):
                problems.append(("ledger_account", 'must be an object {"number": "411…"}'))
            elif not wanted["number"].startswith("411") or not _ACCOUNT_NUMBER_RE.match(wanted["number"]):
                problems.append(
                    ("ledger_account.number", f"must be a 411 account number, got {shown(wanted['number'])}")
                )
            else:
                account = next((a for a in comp["accounts"].values() if a["number"] == wanted["number"]), None)
        if problems:
            raise Invalid(problems)
        if account is None:
            if wanted is not None:
                account = self._new_account(comp, wanted["number"], name)
            else:
                while True:
                    number = f"411{comp['next_aux']:05d}"
                    comp["next_aux"] += 1
                    if not any(a["number"] == number for a in comp["accounts"].values()):
                        break
                account = self._new_account(comp, number, name)
        cid = self._id()
        now = _now()
        cust = comp["customers"][cid] = {
            "id": cid,
            "name": name,
            "emails": list(emails or []),
            "external_reference": ref if ref is not None else secrets.token_hex(8),
            "billing_address": dict(address),
            "ledger_account_id": account["id"],
            "customer_type": "company",
            "created_at": now,
            "updated_at": now,
        }
        return json_response(201, self._customer_out(cust))

    def _create_entry(self, body: dict, comp: dict) -> Response:
        problems: list = []
        self._unknown(body, _ENTRY_FIELDS, "", problems)
        day = self._date(body, "date", problems, required=True)
        if "due_date" in body:
            self._date(body, "due_date", problems, required=False)
        label = self._string(body, "label", problems, required=True)
        piece = self._string(body, "piece_number", problems, required=False)
        currency = self._string(body, "currency", problems, required=False)
        if currency is not None and not _CURRENCY_RE.match(currency):
            problems.append(("currency", f'must be an ISO 4217 code such as "EUR", got {shown(currency)}'))
        journal_id = self._integer(body, "journal_id", problems)
        if journal_id is not None and journal_id not in comp["journals"]:
            problems.append(("journal_id", f"journal {journal_id} does not exist"))
        raw_lines = body.get("ledger_entry_lines")
        lines = []
        if raw_lines is None:
            problems.append(("ledger_entry_lines", "is missing"))
        elif not isinstance(raw_lines, list):
            problems.append(("ledger_entry_lines", f"must be an array, got {json_type(raw_lines)}"))
        elif not raw_lines:
            problems.append(("ledger_entry_lines", "must not be empty"))
        elif len(raw_lines) > MAX_LINES:
            problems.append(("ledger_entry_lines", f"at most {MAX_LINES} lines, got {len(raw_lines)}"))
        else:
            for i, line in enumerate(raw_lines):
                where = f"ledger_entry_lines[{i}]."
                if not isinstance(line, dict):
                    problems.append((f"ledger_entry_lines[{i}]", f"must be an object, got {json_type(line)}"))
                    continue
                self._unknown(line, _LINE_FIELDS, where, problems)
                debit = self._amount(line, "debit", problems, where)
                credit = self._amount(line, "credit", problems, where)
                account_id = self._integer(line, "ledger_account_id", problems, where=where)
                line_label = self._string(line, "label", problems, required=False, where=where)
                if account_id is not None and account_id not in comp["accounts"]:
                    problems.append((f"{where}ledger_account_id", f"ledger account {account_id} does not exist"))
                if debit is not None and credit is not None:
                    if debit and credit:
                        problems.append((where.rstrip("."), "has both a debit and a credit"))
                    elif not debit and not credit:
                        problems.append((where.rstrip("."), "has neither a debit nor a credit"))
                lines.append((debit, credit, account_id, line_label))
        if not problems:
            total_debit = sum((d for d, _, _, _ in lines), Decimal(0))
            total_credit = sum((c for _, c, _, _ in lines), Decimal(0))
            if total_debit != total_credit:
                problems.append(
                    ("ledger_entry_lines", f"are not balanced: debit {total_debit:.2f} != credit {total_credit:.2f}")
                )
        if problems:
            raise Invalid(problems)
        eid = self._id()
        entry = {
            "id": eid,
            "label": label,
            "date": day,
            "due_date": body.get("due_date"),
            "journal_id": journal_id,
            "piece_number": piece,
            "currency": currency or "EUR",
            "created_at": _now(),
            "lines": [
                {
                    "id": self._id(),
                    "debit": f"{d:.2f}",
                    "credit": f"{c:.2f}",
                    "ledger_account_id": a,
                    "label": lab or label,
                }
                for d, c, a, lab in lines
            ],
        }
        comp["entries"][eid] = entry
        return json_response(201, self._entry_out(comp, entry))


def company_url(base: str, company: str) -> str:
    """The sandbox read-back URL of a company (``base`` is the server's root URL)."""
    return f"{base.rstrip('/')}/_sandbox/companies/{quote(company, safe='')}"
