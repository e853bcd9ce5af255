"""AjourClient and PlandayClient against the real sandbox, in process: assert what was sent, not only what came back."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include"))

from sandbox.server import Sandbox  # noqa: E402
from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError  # noqa: E402
from tillflow.http import HttpPolicy  # noqa: E402
from tillflow.records import RawPage, TargetRow  # noqa: E402
from tillflow.sources.ajour import AjourClient  # noqa: E402
from tillflow.sources.base import ConnectionInfo, Window  # noqa: E402
from tillflow.targets.planday import PlandayClient  # noqa: E402

FAST = HttpPolicy(backoff_base=0.01, max_retry_after=1.5)
MONDAY = date(2026, 3, 2)


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(ajour_port=0, planday_port=0).start()
    yield sb
    sb.stop()


@pytest.fixture(autouse=True)
def clean(sandbox):
    for url in (sandbox.ajour_url, sandbox.planday_url):
        requests.post(f"{url}/_sandbox/reset", timeout=5).raise_for_status()


def control(url: str, path: str, body: dict | None = None):
    """GET (no body) or POST (body) a sandbox control endpoint."""
    if body is None:
        response = requests.get(f"{url}/_sandbox/{path}", timeout=5)
    else:
        response = requests.post(f"{url}/_sandbox/{path}", json=body, timeout=5)
    response.raise_for_status()
    return response.json()


def sent(url: str, path: str) -> list[dict]:
    return [r for r in control(url, "requests") if r["path"] == path]


def ajour(sandbox, company="c1", password=None, policy=FAST, **extra) -> AjourClient:
    conn = ConnectionInfo(
        conn_id=f"ajour_{company}",
        host=sandbox.ajour_url,
        login="api-user",
        password=password or f"pw-{company}",
        schema="ajourdb",
        extra={"company_id": company, **extra},
    )
    return AjourClient.from_connection(conn, policy=policy)


def planday(sandbox, client_id="c1", refresh_token=None, **kwargs) -> PlandayClient:
    return PlandayClient(
        base_url=sandbox.planday_url,
        client_id=client_id,
        refresh_token=refresh_token or f"rt-{client_id}",
        policy=kwargs.pop("policy", FAST),
        **kwargs,
    )


def portal_revenue(sandbox, client_id="c1") -> dict[tuple[int, str], dict]:
    portal = control(sandbox.planday_url, "state")["portals"].get(client_id, {"revenue": []})
    return {(r["revenueUnitId"], r["date"]): r for r in portal["revenue"]}


# ------------------------------------------------------------------------------------------------ Ajour


def test_ajour_connection_fields():
    conn = ConnectionInfo(conn_id="ajour_a", host="10.0.0.5", port=8701, login="u", password="pw-x", schema="db")
    with pytest.raises(ConfigError, match=r"extra\.company_id"):
        AjourClient.from_connection(conn)
    client = AjourClient.from_connection(replace(conn, extra={"company_id": 42, "max_attempts": "2"}))
    assert client.http.base_url == "https://10.0.0.5:8701"
    assert client.company_id == "42" and client.http.policy.max_attempts == 2
    with pytest.raises(ConfigError, match="schema"):
        AjourClient.from_connection(replace(conn, schema="", extra={"company_id": "c"}))


def test_ajour_test_connection_lists_locations(sandbox):
    assert [(i.key, i.name) for i in ajour(sandbox).test_connection()] == [
        ("L1", "Restaurant"),
        ("L2", "Bar"),
        ("L3", "Terrace"),
        ("L4", "Takeaway"),
    ]
    assert [i.key for i in ajour(sandbox, "c9x").reference_data()["location"]][-1] == "L5"


def test_ajour_wrong_password_is_one_auth_error_without_secret(sandbox):
    with pytest.raises(AuthError) as info:
        ajour(sandbox, password="hunter2-wrong").test_connection()
    assert "hunter2-wrong" not in str(info.value) and "HTTP 401" in str(info.value)
    assert [r["status"] for r in control(sandbox.ajour_url, "requests")] == [401]


def test_ajour_splits_long_windows_and_parses_incl_excl(sandbox):
    client = ajour(sandbox)
    pages = client.fetch("revenue", Window(date(2026, 1, 1), date(2026, 3, 10)))
    calls = sent(sandbox.ajour_url, "/api/v1/revenue")
    assert [(c["query"]["from"], c["query"]["to"]) for c in calls] == [
        ("2026-01-01", "2026-03-03"),
        ("2026-03-04", "2026-03-10"),
    ]
    assert [p.request for p in pages] == [
        {"method": "GET", "path": "/api/v1/revenue", "params": {"from": "2026-01-01", "to": "2026-03-03"}},
        {"method": "GET", "path": "/api/v1/revenue", "params": {"from": "2026-03-04", "to": "2026-03-10"}},
    ]
    lines = [line for page in pages for line in client.parse(page)[0]]
    days = 69
    mondays = sum((date(2026, 1, 1) + timedelta(d)).weekday() == 0 for d in range(days))
    assert len(lines) == days * 4 - mondays  # Takeaway (L4) is closed on Mondays
    assert not [ln for ln in lines if ln.source_key == "L4" and ln.business_date.weekday() == 0]
    for line in lines:
        assert line.amount_excl == (line.amount_incl / Decimal("1.25")).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert line.ref == f"{line.business_date.isoformat()}/{line.source_key}"
    raw = json.loads(pages[1].body)["days"][0]
    first = next(ln for ln in lines if ln.ref == f"{raw['date']}/{raw['locationId']}")
    assert (str(first.amount_incl), str(first.amount_excl)) == (raw["totalInclVat"], raw["totalExclVat"])


def test_ajour_62_days_is_one_request(sandbox):
    ajour(sandbox).fetch("revenue", Window(date(2026, 1, 1), date(2026, 3, 3)))
    assert len(sent(sandbox.ajour_url, "/api/v1/revenue")) == 1


def test_ajour_malformed_row_is_rejected_and_the_rest_parse(sandbox):
    control(sandbox.ajour_url, "faults", {"rate_malformed": 0.2, "seed": 7, "paths": ["/api/v1/revenue"]})
    client = ajour(sandbox)
    (page,) = client.fetch("revenue", Window(date(2026, 2, 1), date(2026, 2, 10)))
    rows = json.loads(page.body)["days"]
    lines, rejects = client.parse(page)
    assert rejects and len(lines) + len(rejects) == len(rows)
    for reject in rejects:
        assert "totalInclVat" in reject.reason and "12,34,5" in reject.reason
        assert reject.payload["totalInclVat"] == "12,34,5"
    assert not {r.ref for r in rejects} & {ln.ref for ln in lines}


def test_ajour_parse_rejects_bad_rows_and_bad_bodies():
    client = AjourClient(base_url="http://127.0.0.1:9", company_id="c", user="u", password="pw-c", database="d")
    request = {"method": "GET", "path": "/api/v1/revenue", "params": {"from": "2026-03-01", "to": "2026-03-02"}}
    rows = [
        {"date": "2026-03-01", "locationId": "L1", "totalInclVat": "125.00", "totalExclVat": "100.00"},
        {"date": "2026-03-01", "locationId": "L2", "totalExclVat": "1.00"},
        {"date": "2026-02-30", "locationId": "L3", "totalInclVat": "1.25", "totalExclVat": "1.00"},
        {"date": "2026-03-01", "locationId": "L4", "totalInclVat": 10.5, "totalExclVat": "8.40"},
        {"date": "2026-03-01", "locationId": "L1", "totalInclVat": "125.00", "totalExclVat": "100.00"},
        {"date": "2026-03-01", "locationId": "L1", "totalInclVat": "999.00", "totalExclVat": "100.00"},
    ]
    page = RawPage(flow="revenue", request=request, body=json.dumps({"days": rows}).encode())
    lines, rejects = client.parse(page)
    assert [(ln.source_key, ln.amount_incl) for ln in lines] == [("L1", Decimal("125.00")), ("L4", Decimal("10.50"))]
    assert [r.ref for r in rejects] == ["2026-03-01/L2", "2026-02-30/L3", "2026-03-01/L1"]
    assert "totalInclVat" in rejects[0].reason and "'date'" in rejects[1].reason and "duplicate" in rejects[2].reason

    broken = RawPage(flow="revenue", request=request, body=b'{"days": [{"date": "2026-03')
    lines, (reject,) = client.parse(broken)
    assert lines == [] and reject.reason == "body is not valid JSON"
    assert reject.ref == "2026-03-01..2026-03-02" and reject.payload["request"] == request


def test_ajour_respects_enabled_from(sandbox):
    control(sandbox.ajour_url, "companies/c1", {"enabled_from": "2026-03-05"})
    client = ajour(sandbox)
    (page,) = client.fetch("revenue", Window(date(2026, 3, 1), date(2026, 3, 10)))
    assert min(ln.business_date for ln in client.parse(page)[0]) == date(2026, 3, 5)


def test_ajour_retries_injected_faults_to_the_same_result(sandbox):
    window = Window(date(2026, 1, 1), date(2026, 3, 31))
    clean_lines = [ln for p in ajour(sandbox).fetch("revenue", window) for ln in ajour(sandbox).parse(p)[0]]
    control(sandbox.ajour_url, "faults", {"rate_5xx": 0.3, "rate_429": 0.15, "retry_after": "0", "seed": 3})
    client = ajour(sandbox, policy=replace(FAST, max_attempts=8))
    assert client.test_connection()
    faulted_lines = [ln for p in client.fetch("revenue", window) for ln in client.parse(p)[0]]
    assert faulted_lines == clean_lines
    assert client.http.stats.retries > 0
    assert {r["status"] for r in control(sandbox.ajour_url, "requests")} & {429, 500, 502, 503}


# ---------------------------------------------------------------------------------------------- Planday


def test_planday_connection_fields():
    conn = ConnectionInfo(conn_id="planday_a", login="cid", password="rt-cid")
    client = PlandayClient.from_connection(conn)
    assert client.http.base_url == "https://openapi.planday.com"
    assert client.token_url == "https://openapi.planday.com/connect/token"
    assert client.http.policy.rate_per_second == 8.0
    with pytest.raises(ConfigError, match="password"):
        PlandayClient.from_connection(ConnectionInfo(conn_id="planday_a", login="cid"))
    custom = ConnectionInfo(conn_id="p", login="cid", password="x", extra={"token_url": "https://id.example/token"})
    assert PlandayClient.from_connection(custom).token_url == "https://id.example/token"


def test_planday_pages_revenue_units_by_50(sandbox):
    units = planday(sandbox, "big-portal").test_connection()
    assert [u.key for u in units] == [str(i) for i in range(2001, 2121)]
    calls = sent(sandbox.planday_url, "/revenue/v1.0/revenueunits")
    assert [(c["query"]["offset"], c["query"]["limit"]) for c in calls] == [("0", "50"), ("50", "50"), ("100", "50")]
    assert [(u.key, u.name) for u in planday(sandbox).reference_data()["revenue_unit"]] == [
        ("1001", "Restaurant"),
        ("1002", "Bar"),
        ("1003", "Takeaway"),
    ]


def test_planday_refused_refresh_token_is_one_auth_error(sandbox):
    with pytest.raises(AuthError) as info:
        planday(sandbox, refresh_token="rt-stolen-123").test_connection()
    assert str(info.value) == "Planday refused the refresh token for client c1"
    assert [(r["path"], r["status"]) for r in control(sandbox.planday_url, "requests")] == [("/connect/token", 400)]


def test_planday_deliver_sends_turnover_as_an_exact_json_number(sandbox):
    client = planday(sandbox)
    sent_requests: list = []

    def record(response, *args, **kwargs):
        if response.request.path_url.endswith("/revenue"):
            sent_requests.append(response.request)

    client.http.session.hooks["response"].append(record)
    day = date(2026, 3, 3)
    first = client.deliver("revenue", TargetRow(target_key="1001", business_date=day, amount=Decimal("1234.50")))
    body = sent_requests[0].body
    assert sent_requests[0].headers["Content-Type"] == "application/json"
    assert json.loads(body, parse_float=Decimal) == {
        "revenueUnitId": 1001,
        "date": "2026-03-03",
        "turnover": Decimal("1234.50"),
        "description": "tillflow",
    }
    assert b'"turnover": 1234.50' in body  # a number with its exact digits, not a string or a float
    assert b'"revenueUnitId": 1001,' in body  # an integer, not "1001"
    stored = sandbox.planday.portals["c1"]["revenue"][(1001, "2026-03-03")]["turnover"]
    assert isinstance(stored, Decimal) and stored == Decimal("1234.50")  # what the vendor parsed, exactly
    # the target id is Planday's id for the record (its schedule day), as the sandbox holds it
    assert first.status == "delivered" and first.target_id is not None
    assert first.target_id == str(portal_revenue(sandbox)[(1001, "2026-03-03")]["dayScheduleId"])
    result = client.deliver("revenue", TargetRow(target_key="1001", business_date=day, amount=Decimal("1300")))
    assert (result.status, result.target_id) == ("delivered", first.target_id)  # the same record, updated
    assert b'"turnover": 1300.00' in sent_requests[1].body
    state = portal_revenue(sandbox)
    assert list(state) == [(1001, "2026-03-03")]
    assert (state[(1001, "2026-03-03")]["turnover"], state[(1001, "2026-03-03")]["writes"]) == ("1300.00", 2)
    assert client.existing("revenue", ["1001", "1002"], Window(day, day)) == {("1001", day, None): Decimal("1300.00")}


def test_planday_deliver_never_passes_amounts_through_float(sandbox):
    client = planday(sandbox)
    amounts = [Decimal("0.10"), Decimal("1234567890.12"), Decimal("-5.05"), Decimal("9007199254740993.01")]
    for offset, amount in enumerate(amounts):
        row = TargetRow(target_key="1002", business_date=date(2026, 3, 3) + timedelta(offset), amount=amount)
        assert client.deliver("revenue", row).status == "delivered"
    stored = sandbox.planday.portals["c1"]["revenue"]
    assert [stored[(1002, (date(2026, 3, 3) + timedelta(o)).isoformat())]["turnover"] for o in range(4)] == amounts


def test_planday_409_no_opening_day_is_skipped(sandbox):
    result = planday(sandbox).deliver("revenue", TargetRow(target_key="1003", business_date=MONDAY, amount=Decimal(5)))
    assert (result.status, result.detail) == ("skipped", "No opening day on date 2026-03-02")
    assert portal_revenue(sandbox) == {}


def test_planday_rejects_hourly_rows_and_unknown_units(sandbox):
    client = planday(sandbox)
    with pytest.raises(ValueError, match="daily"):
        client.deliver("revenue", TargetRow(target_key="1001", business_date=MONDAY, hour=9, amount=Decimal(1)))
    assert sent(sandbox.planday_url, "/revenue/v1.0/revenue") == []
    with pytest.raises(RemoteError, match="9999") as info:
        client.deliver("revenue", TargetRow(target_key="9999", business_date=MONDAY, amount=Decimal(1)))
    assert info.value.status == 404


def test_planday_existing_reads_manual_values(sandbox):
    control(sandbox.planday_url, "portals/c1/revenue", {"revenueUnitId": 1002, "date": "2026-03-04", "turnover": "77"})
    window = Window(date(2026, 3, 1), date(2026, 3, 7))
    assert planday(sandbox).existing("revenue", ["1001", "1002"], window) == {
        ("1002", date(2026, 3, 4), None): Decimal("77.00")
    }
    assert [c["query"]["revenueUnitId"] for c in sent(sandbox.planday_url, "/revenue/v1.0/revenue")] == ["1001", "1002"]


def test_planday_refreshes_token_once_on_401(sandbox):
    client = planday(sandbox)
    client.deliver("revenue", TargetRow(target_key="1001", business_date=date(2026, 3, 3), amount=Decimal(1)))
    requests.post(f"{sandbox.planday_url}/_sandbox/reset", timeout=5)  # forgets the issued tokens
    client.deliver("revenue", TargetRow(target_key="1001", business_date=date(2026, 3, 4), amount=Decimal(2)))
    assert [(r["path"], r["status"]) for r in control(sandbox.planday_url, "requests")] == [
        ("/revenue/v1.0/revenue", 401),
        ("/connect/token", 200),
        ("/revenue/v1.0/revenue", 200),
    ]
    assert portal_revenue(sandbox)[(1001, "2026-03-04")]["writes"] == 1


def test_planday_refreshes_token_before_expiry(sandbox):
    now = [0.0]
    client = planday(sandbox, clock=lambda: now[0])
    first = client.access_token()
    now[0] = 3600 - 61
    assert client.access_token() == first
    now[0] = 3600 - 59
    assert client.access_token() != first
    assert len(sent(sandbox.planday_url, "/connect/token")) == 2


def test_planday_retries_injected_faults_without_doubling(sandbox):
    faults = {
        "rate_429": 0.1,
        "rate_5xx": 0.2,
        "rate_timeout": 0.1,
        "timeout_seconds": 0.5,
        "rate_malformed": 0.1,
        "retry_after": "0.2",
        "seed": 3,
    }
    control(sandbox.planday_url, "faults", faults)
    client = planday(sandbox, "faulty", policy=replace(FAST, read_timeout=0.3, max_attempts=8))
    rows = [
        TargetRow(target_key=unit, business_date=date(2026, 3, 3) + timedelta(d), amount=Decimal(f"{100 + d}.10"))
        for unit in ("1001", "1002")
        for d in range(4)
    ]
    assert {client.deliver("revenue", row).status for row in rows} == {"delivered"}
    state = portal_revenue(sandbox, "faulty")
    assert {(u, d): (r["turnover"], r["writes"]) for (u, d), r in state.items()} == {
        (int(row.target_key), row.business_date.isoformat()): (f"{row.amount:.2f}", 1) for row in rows
    }
    seen = client.http.stats.by_status
    assert seen["429"] and seen["ReadTimeout"] and seen["500"] + seen["502"] + seen["503"]
    assert client.http.stats.retries == client.http.stats.attempts - len(rows) - 1  # one token call


def test_secrets_never_in_errors(sandbox):
    control(sandbox.planday_url, "faults", {"rate_5xx": 1.0, "seed": 1, "paths": ["/revenue"]})
    client = planday(sandbox, policy=HttpPolicy(backoff_base=0.001, max_attempts=2))
    with pytest.raises(TransientError, match="2 attempt") as info:
        client.test_connection()
    token = client.access_token()
    assert "rt-c1" not in str(info.value) and token not in str(info.value)


def test_planday_400_for_a_row_is_a_remote_error_with_planday_s_message_naming_unit_and_day(sandbox):
    rule = {
        "revenueUnitId": 1002,
        "date": "2026-11-20",
        "status": 400,
        "message": "Turnover exceeds the allowed maximum\n(token rt-c1 in a stack trace)",
    }
    control(sandbox.planday_url, "faults", {"reject": [rule]})
    client = planday(sandbox)
    row = TargetRow(target_key="1002", business_date=date(2026, 11, 20), amount=Decimal("99999.99"))
    with pytest.raises(RemoteError) as exc:
        client.deliver("revenue", row)
    message = str(exc.value)
    assert exc.value.status == 400 and exc.value.permanent
    assert message == (
        "planday: unit 1002 on 2026-11-20 refused (HTTP 400): Turnover exceeds the allowed maximum "
        "(token *** in a stack trace)"
    )
    posts = sent(sandbox.planday_url, "/revenue/v1.0/revenue")
    assert [p["status"] for p in posts] == [400]  # asked once: a refusal is not retried
    # the other rows still go
    other = client.deliver("revenue", TargetRow(target_key="1001", business_date=date(2026, 11, 20), amount=1))
    assert other.status == "delivered"


def test_planday_other_client_errors_name_the_unit_and_day(sandbox):
    client = planday(sandbox)
    original = client.http.session.request

    def without_content_type(method, url, **kwargs):
        kwargs["headers"] = {k: v for k, v in (kwargs.get("headers") or {}).items() if k != "Content-Type"}
        return original(method, url, **kwargs)

    client.http.session.request = without_content_type  # a client bug the vendor answers 415
    with pytest.raises(RemoteError) as exc:
        client.deliver("revenue", TargetRow(target_key="1001", business_date=date(2026, 3, 3), amount=1))
    assert exc.value.status == 415
    assert str(exc.value).startswith("planday: unit 1001 on 2026-03-03: POST /revenue/v1.0/revenue answered HTTP 415")


def test_planday_existing_pages_by_50(sandbox):
    start = date(2026, 1, 1)
    for offset in range(60):
        day = (start + timedelta(offset)).isoformat()
        control(sandbox.planday_url, "portals/c1/revenue", {"revenueUnitId": 1001, "date": day, "turnover": offset})
    found = planday(sandbox).existing("revenue", ["1001"], Window(start, start + timedelta(59)))
    assert len(found) == 60 and found[("1001", start + timedelta(59), None)] == Decimal("59.00")
    calls = sent(sandbox.planday_url, "/revenue/v1.0/revenue")
    assert [(c["query"]["offset"], c["query"]["limit"]) for c in calls] == [("0", "50"), ("50", "50")]


def test_planday_rate_limiters_per_portal_and_per_client_id():
    conn = ConnectionInfo(conn_id="planday_a", login="app-1", password="rt-portal-a-secret")
    a = PlandayClient.from_connection(conn)
    b = PlandayClient.from_connection(replace(conn, conn_id="planday_b", password="rt-portal-b-secret"))
    a_again = PlandayClient.from_connection(replace(conn, conn_id="planday_a2"))
    portal_a, client_a = a.http.limiters
    portal_b, client_b = b.http.limiters
    assert (portal_a.rate, client_a.rate) == (8.0, 30.0)  # 480/min per portal, 1,800/min per client id
    assert client_a is client_b  # one app id, many portals: one limiter for the whole process
    assert portal_a is not portal_b and a_again.http.limiters == (portal_a, client_a)
    key = PlandayClient.portal_rate_key("rt-portal-a-secret")
    assert key.startswith("planday:portal:") and "rt-portal-a-secret" not in key and "secret" not in key
    custom = replace(
        conn,
        conn_id="planday_c",
        login="app-2",
        password="rt-c",
        extra={"rate_per_second": "5", "client_rate_per_second": 20},
    )
    assert [limiter.rate for limiter in PlandayClient.from_connection(custom).http.limiters] == [5.0, 20.0]
    for bad in (0, -1, "fast", True):
        with pytest.raises(ConfigError, match=r"extra\.client_rate_per_second"):
            PlandayClient.from_connection(replace(conn, extra={"client_rate_per_second": bad}))


def test_planday_refused_row_raises_a_permanent_remote_error_with_the_vendors_message(sandbox):
    requests.post(
        f"{sandbox.planday_url}/_sandbox/refuse",
        json=[{"revenueUnitId": 1002, "date": "2026-03-03", "status": 400, "message": "Turnover exceeds the maximum"}],
        timeout=5,
    ).raise_for_status()
    with pytest.raises(RemoteError) as exc:
        planday(sandbox).deliver("revenue", TargetRow(target_key="1002", business_date=date(2026, 3, 3), amount=1))
    assert exc.value.status == 400 and exc.value.permanent
    assert "Turnover exceeds the maximum" in str(exc.value)
