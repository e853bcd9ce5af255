"""The one HTTP session policy every tillflow client uses: timeouts, retries, backoff, rate limits, masking.

No Airflow import. A client builds one :class:`HttpClient` per remote system from an :class:`HttpPolicy`
(usually :meth:`HttpPolicy.from_extra` over its Connection's extra) and the secrets of that Connection.

Behaviour of :meth:`HttpClient.request`:

* every attempt takes a token from the rate limiter (shared per ``rate_key`` within the process) and
  from each of ``extra_limiters`` (e.g. a vendor's per-app limit next to its per-portal one);
* connection errors, timeouts, truncated bodies and ``retry_statuses`` are retried up to
  ``max_attempts`` with exponential backoff and full jitter, except that a ``Retry-After`` header (or
  ``x-ratelimit-reset`` on a 429 without it) is obeyed instead, capped at ``max_retry_after``;
* 401/403 raise :class:`~tillflow.errors.AuthError` at once, other unexpected statuses raise
  :class:`~tillflow.errors.RemoteError` at once, exhausted retries raise
  :class:`~tillflow.errors.TransientError` (which Airflow task retries take over);
* with ``parse_json=True`` a 2xx body that is not valid JSON counts as a failed attempt and is retried
  in the same loop (a truncated or garbled body is a transient fault); :meth:`HttpClient.request_json`
  returns the parsed body (floats as ``Decimal``);
* a call that is not idempotent (``POST``/``PATCH`` unless the caller says otherwise) is only retried
  when the request certainly did not reach the server (connect failure) or was rejected before
  processing (429, 503); any other failure raises ``TransientError`` saying the outcome is unknown, so
  the caller can reconcile before repeating it;
* every message and log line goes through :func:`mask`; original exceptions are not chained because
  their text can carry URLs with credentials.
"""

from __future__ import annotations

import base64
import json as _json
import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Self
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import requests
import tenacity
from urllib3.exceptions import NewConnectionError

from tillflow import __version__
from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError

__all__ = [
    "HttpClient",
    "HttpPolicy",
    "HttpStats",
    "RateLimiter",
    "basic_auth_secret",
    "mask",
    "parse_retry_after",
    "rate_limiter",
    "url_from_host",
]

log = logging.getLogger("tillflow.http")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: statuses that mean "rejected before processing": safe to retry even for a non-idempotent call
_NOT_PROCESSED_STATUSES = frozenset({408, 429, 503})
_SNIPPET = 200


# --------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts, retry and rate-limit settings of one client.

    :param connect_timeout: seconds to establish the connection.
    :param read_timeout: seconds to wait for each read of the response.
    :param max_attempts: total attempts per call, the first included.
    :param backoff_base: first backoff window in seconds; doubles per attempt.
    :param backoff_max: upper bound of one backoff wait.
    :param jitter: full jitter (a uniform wait in ``[0, window]``) instead of the fixed window.
    :param retry_statuses: HTTP statuses that are retried.
    :param max_retry_after: cap on a server-requested wait (``Retry-After``/``x-ratelimit-reset``).
    :param rate_per_second: client-side request rate; ``None`` means unlimited.
    :param burst: requests allowed back to back before the rate applies.
    """

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    jitter: bool = True
    retry_statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
    max_retry_after: float = 120.0
    rate_per_second: float | None = None
    burst: int = 1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.burst < 1:
            raise ConfigError(f"burst must be >= 1, got {self.burst!r}")
        if self.rate_per_second is not None and self.rate_per_second <= 0:
            raise ConfigError(f"rate_per_second must be > 0, got {self.rate_per_second!r}")

    @property
    def timeout(self) -> tuple[float, float]:
        """The ``(connect, read)`` tuple ``requests`` expects."""
        return (self.connect_timeout, self.read_timeout)

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | None, **defaults: Any) -> HttpPolicy:
        """Build a policy from a Connection's extra, over ``defaults`` (a client's own defaults).

        Optional keys: ``timeout`` (read timeout, and an upper bound of the connect timeout),
        ``read_timeout``, ``connect_timeout``, ``max_attempts``, ``rate_per_second``. Numbers may be
        given as JSON numbers or numeric strings (the Airflow UI stores strings).

        :raises ConfigError: naming ``extra.<key>`` when a value is not a positive number.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(defaults) - known
        if unknown:
            raise TypeError(f"unknown HttpPolicy field(s): {', '.join(sorted(unknown))}")
        values = dict(defaults)
        extra = extra or {}
        if "timeout" in extra:
            timeout = _positive_number(extra, "timeout")
            values["read_timeout"] = timeout
            values["connect_timeout"] = min(timeout, values.get("connect_timeout", cls.connect_timeout))
        for key in ("read_timeout", "connect_timeout"):
            if key in extra:
                values[key] = _positive_number(extra, key)
        if "max_attempts" in extra:
            values["max_attempts"] = _positive_int(extra, "max_attempts")
        if extra.get("rate_per_second") is not None:
            values["rate_per_second"] = _positive_number(extra, "rate_per_second")
        return cls(**values)


def _positive_number(extra: Mapping[str, Any], key: str) -> float:
    value = extra[key]
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"extra.{key} must be a positive number of seconds/requests, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"extra.{key} must be a positive number, got {value!r}")
    return number


def _positive_int(extra: Mapping[str, Any], key: str) -> int:
    value = extra[key]
    if isinstance(value, bool):
        raise ConfigError(f"extra.{key} must be a positive integer, got {value!r}")
    try:
        number = int(value) if isinstance(value, int | str) else None
    except ValueError:
        number = None
    if number is None or number < 1:
        raise ConfigError(f"extra.{key} must be a positive integer, got {value!r}")
    return number


# ----------------------------------------------------------------------------------------- rate limit


class RateLimiter:
    """Thread-safe token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    :meth:`acquire` reserves a token and sleeps until it is due, so concurrent callers queue in
    order instead of waking up together.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, blocking until it is available. Returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}, burst={self.burst})"


_limiters: dict[str, RateLimiter] = {}
_limiters_lock = threading.Lock()


def rate_limiter(key: str, rate: float, burst: int = 1) -> RateLimiter:
    """The process-wide limiter for ``key`` (e.g. ``"planday:<client_id>"``), created on first use.

    All clients of one portal share it, so parallel threads stay under the vendor's limit together.
    The first caller's ``rate``/``burst`` win; later callers get the same limiter.
    """
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = RateLimiter(rate, burst)
        elif (limiter.rate, limiter.burst) != (float(rate), max(1, int(burst))):
            log.debug("rate limiter %s already exists with %r; ignoring rate=%s burst=%s", key, limiter, rate, burst)
        return limiter


# ------------------------------------------------------------------------------------- retry-after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta seconds or an HTTP date.

    Negative or past values become ``0``; an empty or unparseable value gives ``None``.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _ratelimit_reset(value: str | None) -> float | None:
    """``x-ratelimit-reset``: seconds until reset, or (from some vendors) an epoch timestamp."""
    seconds = parse_retry_after(value)
    if seconds is not None and seconds > 1e9:
        seconds = max(0.0, seconds - time.time())
    return seconds


# ------------------------------------------------------------------------------------------- masking

_KEY = r"[\w.-]*?(?:password|passwd|secret|token|api[_-]?key|key|ident|authorization)"
_MASK_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # URL userinfo: https://user:pass@host
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),
    # query strings and form bodies: token=abc&...
    (re.compile(rf"(?i)(?<![\w.-])({_KEY})=(?!\*\*\*)[^&\s#\"']+"), r"\1=***"),
    # JSON and Python reprs: "password": "abc" / 'password': 'abc'
    (re.compile(rf'(?i)("{_KEY}"\s*:\s*)"(?:[^"\\]|\\.)*"'), r'\1"***"'),
    (re.compile(rf"(?i)('{_KEY}'\s*:\s*)'(?:[^'\\]|\\.)*'"), r"\1'***'"),
    # bearer tokens wherever they appear (Basic/API credentials only after an Authorization header)
    (re.compile(r"(?i)\b(bearer)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{3,}"), r"\1 ***"),
    # header lines: Authorization: ..., Api-Password: ...
    (re.compile(r"(?i)\b(authorization\s*:\s*)(?![\"'])[^\r\n,;\"'}]+"), r"\1***"),
    (re.compile(r"(?i)\b([\w-]*(?:password|secret|token|api-key|apikey))(\s*:\s*)(?![\"'*])[^\s,;\"'}]+"), r"\1\2***"),
)


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """Hide credentials in ``text`` before it reaches a log, an error or XCom.

    Replaces each secret of 3+ characters (also URL-encoded) with ``***``, then the values of
    query/form/JSON keys named like password, secret, token, refresh_token, access_token, apikey,
    key or ident, and ``Authorization: …`` / ``Bearer …`` credentials.
    """
    if not text:
        return text or ""
    variants: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= 3:
            variants.update({secret, quote(secret, safe=""), quote_plus(secret)})
    for secret in sorted(variants, key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern, replacement in _MASK_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def url_from_host(host: str, port: int | None = None, *, default_scheme: str = "https") -> str:
    """A Connection's host as a base URL: ``https://`` added when it has no scheme, ``port`` when it has none."""
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = f"{default_scheme}://{host}"
    parts = urlsplit(host)
    if port and parts.port is None:
        host = parts._replace(netloc=f"{parts.netloc}:{port}").geturl()
    return host


def basic_auth_secret(user: str, password: str) -> str:
    """The base64 token of HTTP Basic auth, to register as a secret next to the password."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# ------------------------------------------------------------------------------------------- client


@dataclass
class HttpStats:
    """Counters of one client for the activity log: attempts, retries and outcomes by status/exception."""

    attempts: int = 0
    retries: int = 0
    by_status: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "retries": self.retries, "by_status": dict(self.by_status)}


class _Retry(Exception):
    """One failed attempt that the policy may retry (internal to :class:`HttpClient`)."""

    def __init__(self, cause: str, detail: str = "", *, status: int | None = None, wait: float | None = None):
        super().__init__(cause)
        self.cause = cause
        self.detail = detail
        self.status = status
        self.wait = wait


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request certainly did not reach the server (connect timeout, refused, DNS)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


class HttpClient:
    """A ``requests`` session with tillflow's retry, rate-limit and masking policy.

    :param base_url: scheme and host (and optional path prefix) that relative paths are joined to.
    :param policy: timeouts, retries and rate limit.
    :param secrets: values masked in every message and log line; more via :meth:`add_secret`.
    :param name: the remote system, used in messages (``"planday"``).
    :param rate_key: share one rate limiter per key within the process (needs ``policy.rate_per_second``);
        without a key a rate limit applies to this client only.
    :param session: a prepared ``requests.Session`` (auth, default headers); a new one otherwise.
        Exposed as ``.session`` (e.g. for response hooks in tests).
    :param sleep: how to wait between attempts; ``time.sleep`` by default (inject a no-op in tests).
    :param extra_limiters: further limiters every attempt also takes a token from, after ``limiter``
        (e.g. a vendor's per-app limit next to its per-account one; see :func:`rate_limiter`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        policy: HttpPolicy | None = None,
        secrets: Iterable[str] = (),
        name: str = "http",
        rate_key: str | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        extra_limiters: Iterable[RateLimiter] = (),
    ):
        self.base_url = base_url.rstrip("/")
        self.policy = policy or HttpPolicy()
        self.name = name
        self._secrets: list[str] = [s for s in secrets if s]
        self.session = session or requests.Session()
        if str(self.session.headers.get("User-Agent", "")).startswith("python-requests"):
            self.session.headers["User-Agent"] = f"tillflow/{__version__}"
        self._sleep = sleep or time.sleep
        self._lock = threading.Lock()
        self.stats = HttpStats()
        rate = self.policy.rate_per_second
        if rate is None:
            self.limiter: RateLimiter | None = None
        elif rate_key:
            self.limiter = rate_limiter(rate_key, rate, self.policy.burst)
        else:
            self.limiter = RateLimiter(rate, self.policy.burst)
        self.extra_limiters: tuple[RateLimiter, ...] = tuple(extra_limiters)

    @property
    def limiters(self) -> tuple[RateLimiter, ...]:
        """Every limiter an attempt takes a token from, in order (``limiter`` first, when set)."""
        return ((self.limiter,) if self.limiter is not None else ()) + self.extra_limiters

    # -- helpers

    def add_secret(self, value: str) -> None:
        """Mask ``value`` from now on (e.g. an access token obtained at run time)."""
        if value and value not in self._secrets:
            self._secrets.append(value)

    def mask(self, text: str) -> str:
        """:func:`mask` with this client's secrets."""
        return mask(text, self._secrets)

    def url(self, path: str) -> str:
        """Absolute URL of ``path``; absolute URLs pass through (token endpoints on another host)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _where(self, method: str, path: str, params: Mapping[str, Any] | None) -> str:
        shown = path if not params else f"{path}?{urlencode(params, doseq=True)}"
        return self.mask(f"{method} {shown}")

    def _snippet(self, response: requests.Response) -> str:
        text = response.content[:4000].decode(response.encoding or "utf-8", errors="replace")
        text = " ".join(self.mask(text).split())
        return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "")

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.stats.attempts += 1
            self.stats.by_status[outcome] += 1

    # -- the call

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        expect: Iterable[int] = (200, 201, 204),
        ok_extra: Iterable[int] = (),
        parse_json: bool = False,
        idempotent: bool | None = None,
    ) -> requests.Response:
        """Send one call under the policy and return the response once its status is acceptable.

        :param method: HTTP method.
        :param path: path joined to ``base_url``, or an absolute URL.
        :param params: query parameters.
        :param json: JSON body.
        :param data: form body, or the raw body as ``bytes``/``str`` (e.g. JSON serialised by the caller
            with exact decimal digits; set ``Content-Type`` in ``headers``).
        :param headers: extra headers for this call.
        :param expect: success statuses.
        :param ok_extra: further statuses the caller handles itself (e.g. 409, or 401 to refresh a token).
        :param parse_json: a 2xx body must be valid JSON; an invalid one is retried like a 5xx.
        :param idempotent: whether repeating the call is harmless; default by method (POST/PATCH are not).
        :raises AuthError: on 401/403 (not listed in ``expect``/``ok_extra``), never retried.
        :raises RemoteError: on any other unexpected status, never retried; ``.status`` holds it.
        :raises TransientError: when retries are exhausted, or a non-idempotent call's outcome is unknown.
        """
        return self._call(
            method,
            path,
            params=params,
            json=json,
            data=data,
            headers=headers,
            expect=expect,
            ok_extra=ok_extra,
            parse_json=parse_json,
            idempotent=idempotent,
        )[0]

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request` with ``parse_json=True``; returns the parsed body (``None`` if empty).

        JSON floats are parsed as ``Decimal`` so money never passes through binary floating point.
        """
        kwargs["parse_json"] = True
        return self._call(method, path, **kwargs)[1]

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        expect: Iterable[int] = (200, 201, 204),
        ok_extra: Iterable[int] = (),
        parse_json: bool = False,
        idempotent: bool | None = None,
    ) -> tuple[requests.Response, Any]:
        method = method.upper()
        accepted = frozenset(expect) | frozenset(ok_extra)
        safe = idempotent if idempotent is not None else method in IDEMPOTENT_METHODS
        where = self._where(method, path, params)
        url = self.url(path)

        def attempt() -> tuple[requests.Response, Any]:
            for limiter in self.limiters:
                limiter.acquire()
            try:
                response = self.session.request(
                    method, url, params=params, json=json, data=data, headers=headers, timeout=self.policy.timeout
                )
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                kind = type(exc).__name__
                self._count(kind)
                if not safe and not _never_sent(exc):
                    raise TransientError(
                        f"{self.name}: {where} outcome unknown after {kind}: {self.mask(str(exc))[:_SNIPPET]}"
                    ) from None
                raise _Retry(kind, self.mask(str(exc))[:_SNIPPET]) from None
            except requests.RequestException as exc:
                self._count(type(exc).__name__)
                raise RemoteError(f"{self.name}: {where} failed: {type(exc).__name__}: {self.mask(str(exc))}") from None
            return self._judge(response, where, accepted, parse_json, safe)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.policy.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retry),
            before_sleep=lambda state: self._before_sleep(state, where),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retry as last:
            detail = f": {last.detail}" if last.detail else ""
            raise TransientError(
                f"{self.name}: {where} still failing after {self.policy.max_attempts} attempt(s); "
                f"last: {last.cause}{detail}"
            ) from None

    def _judge(
        self, response: requests.Response, where: str, accepted: frozenset[int], parse_json: bool, safe: bool
    ) -> tuple[requests.Response, Any]:
        status = response.status_code
        self._count(str(status))
        if status in accepted:
            if not (parse_json and 200 <= status < 300 and response.content.strip()):
                return response, None
            try:
                return response, _json.loads(response.content, parse_float=Decimal)
            except ValueError:
                if not safe:
                    raise TransientError(
                        f"{self.name}: {where} answered HTTP {status} with a body that is not JSON "
                        f"(outcome unknown): {self._snippet(response)}"
                    ) from None
                raise _Retry(f"HTTP {status} with invalid JSON", self._snippet(response), status=status) from None
        if status in (401, 403):
            raise AuthError(f"{self.name}: credentials refused (HTTP {status}) on {where}: {self._snippet(response)}")
        if status in self.policy.retry_statuses:
            if not safe and status not in _NOT_PROCESSED_STATUSES:
                raise TransientError(
                    f"{self.name}: {where} answered HTTP {status} (outcome unknown): {self._snippet(response)}"
                )
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if wait is None and status == 429:
                wait = _ratelimit_reset(response.headers.get("x-ratelimit-reset"))
            raise _Retry(f"HTTP {status}", self._snippet(response), status=status, wait=wait)
        raise RemoteError(f"{self.name}: {where} answered HTTP {status}: {self._snippet(response)}", status=status)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retry) and exc.wait is not None:
            return min(exc.wait, self.policy.max_retry_after)
        backoff = tenacity.wait_random_exponential if self.policy.jitter else tenacity.wait_exponential
        return backoff(multiplier=self.policy.backoff_base, max=self.policy.backoff_max)(state)

    def _before_sleep(self, state: tenacity.RetryCallState, where: str) -> None:
        exc = state.outcome.exception() if state.outcome else None
        cause = exc.cause if isinstance(exc, _Retry) else type(exc).__name__
        wait = state.next_action.sleep if state.next_action else 0.0
        with self._lock:
            self.stats.retries += 1
        log.warning(
            "%s: %s -> %s; retry %d/%d in %.2fs",
            self.name,
            where,
            cause,
            state.attempt_number,
            self.policy.max_attempts - 1,
            wait,
        )
