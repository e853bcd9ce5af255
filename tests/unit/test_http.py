"""tillflow.http against a scripted stdlib HTTP server: retries, Retry-After, auth, masking, rate limits."""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError
from tillflow.http import HttpClient, HttpPolicy, RateLimiter, mask, parse_retry_after, rate_limiter

SECRET = "s3cr3t-pw"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server: _Scripted = self.server  # type: ignore[assignment]
        with server.lock:
            server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
            status, headers, payload, delay = server.script.pop(0) if server.script else (200, {}, b"{}", 0)
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = _handle

    def log_message(self, *args) -> None:
        pass


class _Scripted(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.script: list[tuple[int, dict[str, str], bytes, float]] = []
        self.seen: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def respond(self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None, delay: float = 0):
        self.script.append((status, headers or {}, body, delay))
        return self

    def handle_error(self, request, client_address) -> None:
        pass


@pytest.fixture
def server():
    srv = _Scripted()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(server, sleeps):
    def make(**policy) -> HttpClient:
        return HttpClient(
            server.url,
            policy=HttpPolicy(**{"backoff_base": 0.01, **policy}),
            secrets=(SECRET,),
            name="stub",
            sleep=sleeps.append,
        )

    return make


# ------------------------------------------------------------------------------------------ retries


def test_503_then_200_is_retried_and_logged(server, client, sleeps, caplog):
    server.respond(503, b"busy").respond(200, b'{"ok": true, "amount": 12.50}')
    http = client()
    with caplog.at_level(logging.WARNING, logger="tillflow.http"):
        body = http.request_json("GET", "/things", params={"token": SECRET})
    assert body == {"ok": True, "amount": Decimal("12.50")}
    assert len(server.seen) == 2
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.01
    assert http.stats.as_dict() == {"attempts": 2, "retries": 1, "by_status": {"503": 1, "200": 1}}
    (record,) = [r for r in caplog.records if r.name == "tillflow.http"]
    assert record.levelno == logging.WARNING
    assert "HTTP 503" in record.getMessage() and "token=***" in record.getMessage()
    assert SECRET not in caplog.text


def test_retry_after_seconds_is_obeyed(server, client, sleeps):
    server.respond(429, headers={"Retry-After": "1"}).respond(200)
    client().request("GET", "/x")
    assert sleeps == [1.0]


def test_retry_after_http_date_is_obeyed(server, client, sleeps):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    server.respond(429, headers={"Retry-After": when}).respond(200)
    client().request("GET", "/x")
    assert len(sleeps) == 1 and 3.5 <= sleeps[0] <= 5.0


def test_retry_after_is_capped(server, client, sleeps):
    server.respond(503, headers={"Retry-After": "600"}).respond(200)
    client(max_retry_after=2.0).request("GET", "/x")
    assert sleeps == [2.0]


def test_ratelimit_reset_used_for_429_without_retry_after(server, client, sleeps):
    server.respond(429, headers={"x-ratelimit-reset": "3"}).respond(200)
    client().request("GET", "/x")
    assert sleeps == [3.0]


def test_backoff_doubles_without_jitter_and_stays_in_window_with_jitter(server, client, sleeps):
    for _ in range(4):
        server.respond(500)
    server.respond(200)
    client(backoff_base=0.5, jitter=False).request("GET", "/x")
    assert sleeps == [0.5, 1.0, 2.0, 4.0]
    sleeps.clear()
    for _ in range(4):
        server.respond(502)
    server.respond(200)
    client(backoff_base=0.5, backoff_max=1.5).request("GET", "/x")
    assert [w <= cap for w, cap in zip(sleeps, (0.5, 1.0, 1.5, 1.5), strict=True)] == [True] * 4


def test_exhausted_retries_raise_transient_error(server, client, sleeps):
    for _ in range(3):
        server.respond(502, b'{"message": "bad gateway"}')
    with pytest.raises(TransientError) as info:
        client(max_attempts=3).request("GET", "/x")
    assert len(server.seen) == 3 and len(sleeps) == 2
    assert "3 attempt(s)" in str(info.value) and "HTTP 502" in str(info.value) and "bad gateway" in str(info.value)


def test_read_timeout_then_success(server, client):
    server.respond(200, b'{"slow": 1}', delay=0.5).respond(200, b'{"fast": 1}')
    http = client(read_timeout=0.2)
    assert http.request_json("GET", "/x") == {"fast": 1}
    assert http.stats.by_status["ReadTimeout"] == 1


def test_invalid_json_body_is_retried_when_parsing(server, client):
    server.respond(200, b'{"data": [1, 2').respond(200, b'{"data": [1, 2]}')
    assert client().request_json("GET", "/x") == {"data": [1, 2]}
    assert len(server.seen) == 2


def test_connection_refused_is_retried_then_transient():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits: list[float] = []
    http = HttpClient(f"http://127.0.0.1:{port}", policy=HttpPolicy(max_attempts=3), sleep=waits.append)
    with pytest.raises(TransientError, match="ConnectionError"):
        http.request("POST", "/x", json={"a": 1})  # never sent, so safe to retry even for a POST
    assert len(waits) == 2


def test_non_idempotent_call_is_not_repeated_when_outcome_unknown(server, client):
    server.respond(500).respond(200)
    with pytest.raises(TransientError, match="outcome unknown"):
        client().request("POST", "/orders", json={"id": 1})
    server.script.clear()
    server.respond(200, delay=0.5).respond(200)
    with pytest.raises(TransientError, match="outcome unknown"):
        client(read_timeout=0.2).request("POST", "/orders", json={"id": 1})
    assert [s["method"] for s in server.seen] == ["POST", "POST"]
    server.script.clear()
    server.respond(429, headers={"Retry-After": "0"}).respond(201)
    assert client().request("POST", "/orders", json={"id": 1}).status_code == 201


def test_408_is_a_timeout_retried_even_for_a_post(server, client, sleeps):
    server.respond(408, b"request timeout").respond(201)
    assert client().request("POST", "/orders", json={"id": 1}).status_code == 201
    assert [s["method"] for s in server.seen] == ["POST", "POST"]


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (404, True), (422, True), (408, False), (409, False), (429, False), (500, False), (503, False)],
)
def test_only_client_errors_the_vendor_would_answer_again_are_permanent(status, permanent):
    from tillflow.errors import RemoteError, is_permanent

    err = RemoteError(f"HTTP {status}", status=status)
    assert err.permanent is permanent and is_permanent(err) is permanent


# ----------------------------------------------------------------------------------- non-retryable


def test_401_raises_auth_error_once_and_masks(server, client, sleeps):
    server.respond(401, f'{{"error": "wrong password {SECRET}"}}'.encode())
    with pytest.raises(AuthError) as info:
        client().request("GET", "/x", params={"password": SECRET})
    assert len(server.seen) == 1 and sleeps == []
    assert "stub" in str(info.value) and "HTTP 401" in str(info.value)
    assert SECRET not in str(info.value)


def test_403_raises_auth_error(server, client):
    server.respond(403)
    with pytest.raises(AuthError, match="HTTP 403"):
        client().request("GET", "/x")
    assert len(server.seen) == 1


def test_404_raises_remote_error_with_short_snippet(server, client):
    server.respond(404, b'{"message": "' + b"x" * 1000 + b'"}')
    with pytest.raises(RemoteError) as info:
        client().request("GET", "/things/7", params={"apikey": SECRET})
    assert info.value.status == 404
    message = str(info.value)
    assert "GET /things/7?apikey=***" in message and len(message) < 320
    assert len(server.seen) == 1


def test_ok_extra_status_is_returned(server, client):
    server.respond(409, b'{"message": "No opening day"}')
    assert client().request("POST", "/x", ok_extra=(409,)).status_code == 409


# ----------------------------------------------------------------------------------------- helpers


def test_mask_query_json_bearer_and_secrets():
    url = "https://api.example.com:8443/q?ident=abc123&secret=zz-top&from=2026-01-01&api_key=k1"
    assert mask(url, ()) == "https://api.example.com:8443/q?ident=***&secret=***&from=2026-01-01&api_key=***"
    body = '{"refresh_token": "rt-9\\"x", "access_token":"tok", "name": "Bar", "tokenType": "Bearer"}'
    assert mask(body, ()) == '{"refresh_token": "***", "access_token":"***", "name": "Bar", "tokenType": "Bearer"}'
    assert mask("Authorization: Bearer eyJhbGciOi.J9x-y", ()) == "Authorization: ***"
    assert mask("sent Bearer eyJhbGciOi.J9x", ()) == "sent Bearer ***"
    assert mask("Authorization: Basic dTpwdy1jMQ==", ()) == "Authorization: ***"
    assert mask("{'password': 'hunter2', 'user': 'u'}", ()) == "{'password': '***', 'user': 'u'}"
    assert mask("https://u:p4ss@host/x", ()) == "https://u:***@host/x"
    assert mask("form pw=p%40ss+word and p@ss word", ["p@ss word"]) == "form pw=*** and ***"
    assert mask("ab is short", ["ab"]) == "ab is short"
    assert mask("", ["abc"]) == ""


def test_parse_retry_after():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None


def test_policy_from_extra():
    policy = HttpPolicy.from_extra({"timeout": "10", "max_attempts": 3, "rate_per_second": 2}, connect_timeout=20)
    assert (policy.read_timeout, policy.connect_timeout, policy.max_attempts) == (10.0, 10.0, 3)
    assert policy.rate_per_second == 2.0
    assert HttpPolicy.from_extra({}, max_attempts=2).max_attempts == 2
    assert HttpPolicy.from_extra({"read_timeout": 7, "connect_timeout": 1}).timeout == (1.0, 7.0)
    for extra, key in (
        ({"max_attempts": "many"}, "extra.max_attempts"),
        ({"max_attempts": 0}, "extra.max_attempts"),
        ({"timeout": -1}, "extra.timeout"),
        ({"read_timeout": True}, "extra.read_timeout"),
        ({"rate_per_second": "fast"}, "extra.rate_per_second"),
    ):
        with pytest.raises(ConfigError, match=key):
            HttpPolicy.from_extra(extra)


def test_rate_limiter_spacing():
    limiter = RateLimiter(10, 1)
    start = time.monotonic()
    for _ in range(11):
        limiter.acquire()
    assert time.monotonic() - start >= 0.9


def test_rate_limiter_queues_concurrent_callers():
    now = [0.0]
    limiter = RateLimiter(4, 2, clock=lambda: now[0], sleep=lambda s: None)
    assert [limiter.acquire() for _ in range(5)] == [0.0, 0.0, 0.25, 0.5, 0.75]
    shared = RateLimiter(100, 1)
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: [shared.acquire() for _ in range(5)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - start >= 0.18


def test_rate_limiter_registry_shares_per_key(server):
    assert rate_limiter("test:a", 5) is rate_limiter("test:a", 5)
    assert rate_limiter("test:a", 5) is not rate_limiter("test:b", 5)
    policy = HttpPolicy(rate_per_second=5)
    one = HttpClient(server.url, policy=policy, rate_key="test:portal")
    two = HttpClient(server.url, policy=policy, rate_key="test:portal")
    assert one.limiter is two.limiter is not None
    assert HttpClient(server.url, policy=HttpPolicy()).limiter is None


def test_threads_sharing_one_limiter_key_hold_its_rate_together():
    """Eight threads of one worker process, each with its own client of the same portal: the observed
    rate over the whole run and in every one-second window stays at the limiter's rate."""
    rate = 40.0
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        limiter = rate_limiter("test:threads-portal", rate)  # looked up per client, as clients do
        for _ in range(8):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    assert len(stamps) == 64
    assert (stamps[-1] - stamps[0]) >= (64 - 1) / rate * 0.95  # not faster than the rate together
    for i, first in enumerate(stamps):  # no one-second window holds more than rate + burst
        assert sum(1 for s in stamps[i:] if s < first + 1.0) <= rate + 1


def test_every_attempt_takes_a_token_from_each_limiter(server):
    class Counting(RateLimiter):
        def __init__(self) -> None:
            super().__init__(1000)
            self.taken = 0

        def acquire(self) -> float:
            self.taken += 1
            return super().acquire()

    per_app = Counting()
    client = HttpClient(
        server.url,
        policy=HttpPolicy(rate_per_second=1000, backoff_base=0.001),
        rate_key="test:extra-portal",
        extra_limiters=(per_app,),
        sleep=lambda s: None,
    )
    assert client.limiters == (client.limiter, per_app) and client.limiter is not None
    server.respond(503).respond(200)
    client.request("GET", "/x")
    assert per_app.taken == 2  # the retry took a token too
    assert HttpClient(server.url, extra_limiters=(per_app,)).limiters == (per_app,)


def test_raw_bytes_body_is_sent_as_is(server):
    client = HttpClient(server.url)
    client.request("POST", "/x", data=b'{"amount": 1234.50}', headers={"Content-Type": "application/json"})
    (seen,) = server.seen
    assert seen["body"] == b'{"amount": 1234.50}' and seen["headers"]["Content-Type"] == "application/json"
