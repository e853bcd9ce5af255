"""MplusKassaClient against the MplusKASSA stand-in (real HTTP, SOAP via zeep), and parse on landed pages alone."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal

import pytest
import requests
from sandbox.mplus import MplusServer
from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError
from tillflow.http import HttpPolicy
from tillflow.records import RawPage
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.sources.mpluskassa import MplusKassaClient, ShiftRecord, cents_to_euros

PORT = 7001
SECRET = "secret-acme"
POLICY = HttpPolicy(max_attempts=3, backoff_base=0.01, connect_timeout=2, read_timeout=5)


@pytest.fixture(scope="module")
def mplus_server():
    server = MplusServer(port=0).start()
    yield server
    server.stop()


@pytest.fixture
def mplus(mplus_server):
    requests.post(f"{mplus_server.url}/_sandbox/reset", timeout=5).raise_for_status()
    return mplus_server


def make_client(server, *, secret=SECRET, policy=POLICY, **extra) -> MplusKassaClient:
    conn = ConnectionInfo("mplus_acme", host=f"{server.url}/{PORT}", login="acme", password=secret, extra=extra)
    return MplusKassaClient.from_connection(conn, policy=policy, sleep=lambda _s: None)


def control(server, path: str, body=None):
    r = requests.post(f"{server.url}/_sandbox/{path}", json=body or {}, timeout=5)
    r.raise_for_status()
    return r.json()


def today(server) -> date:
    return date.fromisoformat(requests.get(f"{server.url}/_sandbox/state", timeout=5).json()["today"])


# ------------------------------------------------------------------------------------------- money


@pytest.mark.parametrize(
    ("cents", "euros"),
    [
        (1999, "19.99"),
        (1, "0.01"),
        (0, "0.00"),
        (100, "1.00"),
        (-5, "-0.05"),
        (123456789012345678901234567890, "1234567890123456789012345678.90"),  # beyond the context's 28 digits
    ],
)
def test_cents_to_euros_is_exact(cents, euros):
    value = cents_to_euros(cents)
    assert str(value) == euros and value.as_tuple().exponent == -2
    assert int(value.scaleb(2, Context(prec=100))) == cents


@pytest.mark.parametrize("bad", [19.99, True, "1999", Decimal("19.99")])
def test_cents_to_euros_takes_integers_only(bad):
    with pytest.raises(TypeError):
        cents_to_euros(bad)


# ------------------------------------------------------------------------------------------- connection


def test_from_connection_needs_ident_and_secret_and_builds_the_endpoint():
    with pytest.raises(ConfigError, match="login"):
        MplusKassaClient.from_connection(ConnectionInfo("c", host="https://api.mpluskassa.nl", password="x"))
    with pytest.raises(ConfigError, match="password"):
        MplusKassaClient.from_connection(ConnectionInfo("c", host="https://api.mpluskassa.nl", login="x"))
    client = MplusKassaClient.from_connection(
        ConnectionInfo("c", host="api.mpluskassa.nl", port=34562, login="i", password="s3cr3t", extra={"timeout": 7})
    )
    assert client.endpoint == "https://api.mpluskassa.nl:34562/MplusQapi"
    assert client.policy.read_timeout == 7 and client.policy.max_attempts == 4
    root = MplusKassaClient.from_connection(
        ConnectionInfo("c", host="https://x.nl:1", login="i", password="s3cr3t", extra={"service_path": ""})
    )
    assert root.endpoint == "https://x.nl:1"
    assert "s3cr3t" not in client.endpoint


def test_reference_data_branches_employees_cost_centres(mplus):
    client = make_client(mplus)
    assert [(b.key, b.name) for b in client.test_connection()] == [("1", "Centrum"), ("2", "Station"), ("3", "Strand")]
    data = client.reference_data()
    assert set(data) == {"branch", "employee", "cost_center"}
    employees = {e.key: e for e in data["employee"]}
    assert set(employees) == {"101", "102", "103", "104", "105"}  # 106 has no authorisation group
    assert employees["101"].extra == {"authorisation_group": "1", "authorisation_group_name": "Beheer"}
    assert [(c.key, c.name) for c in data["cost_center"]] == [("10", "Keuken"), ("20", "Bediening"), ("30", "Bar")]


# ------------------------------------------------------------------------------------------- revenue


def test_revenue_per_branch_per_day_lands_raw_xml_without_credentials(mplus):
    client = make_client(mplus)
    pages = client.fetch("revenue", Window(date(2026, 3, 2), date(2026, 3, 3)))
    assert len(pages) == 1
    page = pages[0]
    assert page.body.lstrip().startswith(b"<?xml") and b"reportTurnoverByBranchResponse" in page.body
    assert page.content_type.startswith("text/xml")
    assert page.request["operation"] == "reportTurnoverByBranch"
    assert page.request["params"] == {
        "fromFinancialDate": "2026-03-02",
        "throughFinancialDate": "2026-03-03",
        "perHour": False,
    }
    landed = json.dumps(page.request)
    assert SECRET not in landed and "ident" not in landed and "acme" not in landed
    lines, rejects = client.parse(page)
    assert rejects == []
    assert {(ln.source_key, ln.business_date) for ln in lines} == {
        ("1", date(2026, 3, 2)),
        ("2", date(2026, 3, 2)),  # Strand (3) is closed on Mondays
        ("1", date(2026, 3, 3)),
        ("2", date(2026, 3, 3)),
        ("3", date(2026, 3, 3)),
    }
    assert all(ln.hour is None and ln.amount_excl <= ln.amount_incl for ln in lines)
    # the euros are exactly the cents of the envelope
    first = lines[0]
    assert f"<tns:totalInclAmount>{int(first.amount_incl * 100)}</tns:totalInclAmount>".encode() in page.body


def test_revenue_per_hour_adds_up_to_the_day(mplus):
    client = make_client(mplus)
    window = Window(date(2026, 3, 3), date(2026, 3, 3))
    daily, _ = client.parse(client.fetch("revenue", window)[0])
    (page,) = client.fetch("revenue_hourly", window)
    assert page.request["params"]["perHour"] is True
    hourly, rejects = client.parse(page)
    assert rejects == []
    for day in daily:
        hours = [h for h in hourly if h.source_key == day.source_key]
        assert [h.hour for h in hours] == list(range(10, 23))
        assert sum(h.amount_incl for h in hours) == day.amount_incl
        assert sum(h.amount_excl for h in hours) == day.amount_excl


def test_long_windows_are_fetched_in_chunks_of_31_days(mplus):
    pages = make_client(mplus).fetch("revenue", Window(date(2026, 1, 1), date(2026, 3, 3)))
    assert [(p.request["params"]["fromFinancialDate"], p.request["params"]["throughFinancialDate"]) for p in pages] == [
        ("2026-01-01", "2026-01-31"),
        ("2026-02-01", "2026-03-03"),
    ]
    with pytest.raises(ValueError, match="no flow"):
        make_client(mplus).fetch("stock", Window(date(2026, 1, 1), date(2026, 1, 1)))


def test_negative_turnover_is_a_reject_with_its_reason(mplus):
    control(
        mplus,
        f"customers/{PORT}",
        {
            "turnover": [
                {"branchNumber": 2, "financialDate": "2026-03-03", "totalInclAmount": -500, "totalExclAmount": -413}
            ]
        },
    )
    client = make_client(mplus)
    lines, rejects = client.parse(client.fetch("revenue", Window(date(2026, 3, 3), date(2026, 3, 3)))[0])
    assert {ln.source_key for ln in lines} == {"1", "3"}
    assert len(rejects) == 1
    assert "negative turnover for branch 2 on 2026-03-03" in rejects[0].reason and "-5.00" in rejects[0].reason
    assert rejects[0].payload["totalInclAmount"] == "-500" and rejects[0].ref == "2026-03-03/2"


# ------------------------------------------------------------------------------------------- shifts


def test_shifts_an_open_one_today_and_a_break_pair(mplus):
    client = make_client(mplus)
    day = today(mplus)
    (page,) = client.fetch("clock_times", Window(day, day))
    assert page.request["operation"] == "getShifts" and b"getShiftsResponse" in page.body
    shifts, rejects = client.parse(page)
    assert rejects == [] and all(isinstance(s, ShiftRecord) for s in shifts)
    (open_,) = [s for s in shifts if s.employee_number == "101"]
    assert open_.end is None and open_.ended is False and open_.start.tzinfo is not None
    assert open_.financial_date == day and open_.cost_center == "20" and open_.branch_number == "1"

    past, rejects = client.parse(client.fetch("clock_times", Window(date(2026, 3, 3), date(2026, 3, 3)))[0])
    assert rejects == []
    pair = [s for s in past if s.employee_number == "102"]
    assert len(pair) == 2 and all(s.ended and s.end is not None for s in pair)
    assert pair[1].start - pair[0].end == timedelta(minutes=30)  # clock-out, break, clock-in
    assert (pair[0].cost_center, pair[1].cost_center) == ("10", "30")
    assert len({s.shift_number for s in past}) == len(past)


def test_an_unlisted_employee_still_has_shifts(mplus):
    client = make_client(mplus)
    pages = client.fetch("clock_times", Window(date(2026, 2, 1), date(2026, 3, 12)))  # 40 days: two calls
    operations = [e["operation"] for e in requests.get(f"{mplus.url}/_sandbox/requests", timeout=5).json()]
    assert operations == ["getShifts", "getShifts", "getEmployees"]  # the list once per fetch, after the shifts
    shifts = [s for page in pages for s in client.parse(page)[0]]
    assert "106" in {s.employee_number for s in shifts}
    assert "106" not in {e.key for e in client.employees()}
    # what getEmployees listed lands with the shifts, so the flow (and a replay) tells unlisted from unmapped
    assert all(page.request["listed_employees"] == ["101", "102", "103", "104", "105"] for page in pages)
    assert {s.employee_number: s.employee_listed for s in shifts} == {
        "101": True,
        "102": True,
        "103": True,
        "104": True,
        "105": True,
        "106": False,
    }


def test_a_page_landed_without_the_employee_list_leaves_listed_unknown():
    shifts, _ = MplusKassaClient.parse_page(_landed(LANDED))
    assert {s.employee_listed for s in shifts} == {None}


@pytest.mark.parametrize(
    ("fetched_at", "rejected"),
    [
        (None, False),  # a page landed before fetched_at was recorded: not judged
        ("2026-03-30T06:00:00+00:00", False),  # 23 h open (the shift began 09:00+02:00 = 07:00 UTC the day before)
        ("2026-03-30T08:00:00+00:00", True),  # 25 h open
    ],
)
def test_an_open_shift_begun_over_24_hours_before_the_fetch_is_rejected(fetched_at, rejected):
    page = _landed(LANDED)
    if fetched_at:
        page = page.model_copy(update={"request": {**page.request, "fetched_at": fetched_at}})
    shifts, rejects = MplusKassaClient.parse_page(page)
    reasons = {r.ref: r.reason for r in rejects}
    assert ("12" not in {s.shift_number for s in shifts}) is rejected
    assert ("shift 12" in reasons) is rejected
    if rejected:
        assert reasons["shift 12"] == (
            "shift 12 of employee 106 on 2026-03-29 is still open 25.0 hours after it started, longer than 24 hours "
            "(started 2026-03-29T09:00:00+02:00; close or correct it in the POS)"
        )


def test_a_live_open_shift_over_24_hours_old_is_rejected_and_the_rest_lands(mplus):
    day = today(mplus)
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=26)
    row = {"branchNumber": 1, "financialDate": str(day), "employeeNumber": 103, "ended": False}
    control(
        mplus, f"customers/{PORT}", {"add_shifts": [{**row, "shiftNumber": 77, "startTimestamp": started.isoformat()}]}
    )
    client = make_client(mplus)
    (page,) = client.fetch("clock_times", Window(day, day))
    assert datetime.fromisoformat(page.request["fetched_at"]) - datetime.now(UTC) < timedelta(seconds=30)
    shifts, rejects = client.parse(page)
    assert [r.ref for r in rejects] == ["shift 77"] and "still open 26.0 hours after it started" in rejects[0].reason
    assert "101" in {s.employee_number for s in shifts}  # the stand-in's own open shift (two hours old) lands


def test_closing_and_correcting_the_open_shift_keeps_its_number(mplus):
    client = make_client(mplus)
    day = today(mplus)
    number = requests.get(f"{mplus.url}/_sandbox/customers/{PORT}", timeout=5).json()["open_shift"]
    before = {s.shift_number: s for s in client.parse(client.fetch("clock_times", Window(day, day))[0])[0]}
    start = before[str(number)].start
    end = start + timedelta(hours=3)
    control(
        mplus,
        f"customers/{PORT}",
        {"shifts": {str(number): {"endTimestamp": end.isoformat(), "ended": True, "manuallyModified": True}}},
    )
    after = {s.shift_number: s for s in client.parse(client.fetch("clock_times", Window(day, day))[0])[0]}
    shift = after[str(number)]
    assert shift.ended and shift.end == end and shift.manually_modified and shift.start == start


def test_bad_shifts_become_rejects_with_their_reasons(mplus):
    t = datetime.fromisoformat("2026-03-03T10:00:00+01:00")
    base = {"branchNumber": 1, "financialDate": "2026-03-03", "employeeNumber": 103}

    def shift(number, hours=None, **more):
        end = {"endTimestamp": (t + timedelta(hours=hours)).isoformat()} if hours is not None else {}
        return {**base, "shiftNumber": number, "startTimestamp": t.isoformat(), **end, **more}

    added = [shift(901, -1), shift(902, 26), shift(903, ended=True), shift(904, 4, employeeNumber=999)]
    control(mplus, f"customers/{PORT}", {"add_shifts": added})
    client = make_client(mplus)
    shifts, rejects = client.parse(client.fetch("clock_times", Window(date(2026, 3, 3), date(2026, 3, 3)))[0])
    reasons = {r.ref: r.reason for r in rejects}
    assert set(reasons) == {"shift 901", "shift 902", "shift 903"}
    assert "ends before it starts" in reasons["shift 901"]
    assert "longer than 24 hours" in reasons["shift 902"] and "26.0 hours" in reasons["shift 902"]
    assert "ended but has no end time" in reasons["shift 903"]
    assert all(r.payload["shiftNumber"] == r.ref.split()[1] for r in rejects)
    # an employee the POS does not list is still a shift: the flow rejects it as unmapped
    assert "904" in {s.shift_number for s in shifts} and len(shifts) > 1


# ------------------------------------------------------------------------------------------- errors


def test_a_refused_secret_is_an_auth_error_at_once_without_the_secret(mplus):
    bad = "wrong-s3cret-value"
    client = make_client(mplus, secret=bad)
    with pytest.raises(AuthError) as info:
        client.test_connection()
    message = str(info.value)
    assert message.startswith("mpluskassa: ident/secret refused") and bad not in message
    assert "Invalid ident or secret" in message
    assert client.calls == 1  # never retried
    log = requests.get(f"{mplus.url}/_sandbox/requests", timeout=5).json()
    assert [(e["operation"], e["status"]) for e in log] == [("getBranches", 500)]
    with pytest.raises(AuthError):
        client.fetch("revenue", Window(date(2026, 3, 3), date(2026, 3, 3)))


def test_5xx_answers_are_retried_then_succeed(mplus):
    control(mplus, "faults", {"next_5xx": 2})
    client = make_client(mplus)
    assert len(client.branches()) == 3
    assert client.calls == 3
    log = requests.get(f"{mplus.url}/_sandbox/requests", timeout=5).json()
    assert [e["status"] for e in log] == [503, 503, 200]


def test_5xx_answers_that_persist_are_a_transient_error_without_credentials(mplus):
    control(mplus, "faults", {"rate_5xx": 1, "seed": 1})
    client = make_client(mplus, secret="secret-acme")
    with pytest.raises(TransientError) as info:
        client.fetch("clock_times", Window(date(2026, 3, 3), date(2026, 3, 3)))
    message = str(info.value)
    assert "getShifts still failing after 3 attempt(s)" in message and SECRET not in message
    assert client.calls == 3


def test_timeouts_are_retried_then_a_transient_error(mplus):
    control(mplus, "faults", {"rate_timeout": 1, "timeout_seconds": 1, "operations": ["getBranches"]})
    policy = HttpPolicy(max_attempts=2, backoff_base=0.01, connect_timeout=1, read_timeout=0.3)
    client = make_client(mplus, policy=policy)
    with pytest.raises(TransientError) as info:
        client.branches()
    assert "Timeout" in str(info.value) and SECRET not in str(info.value)
    assert client.calls == 2


def test_a_connection_refused_is_a_transient_error_without_credentials():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = ConnectionInfo("c", host=f"http://127.0.0.1:{port}/{PORT}", login="acme", password=SECRET)
    client = MplusKassaClient.from_connection(conn, policy=POLICY, sleep=lambda _s: None)
    with pytest.raises(TransientError) as info:
        client.test_connection()
    assert "wsdl" in str(info.value) and SECRET not in str(info.value)


def test_a_malformed_envelope_is_a_remote_error_naming_the_operation(mplus):
    control(mplus, "faults", {"malformed": True, "operations": ["reportTurnoverByBranch"]})
    client = make_client(mplus)
    with pytest.raises(RemoteError) as info:
        client.fetch("revenue", Window(date(2026, 3, 3), date(2026, 3, 3)))
    assert "reportTurnoverByBranch answered a malformed SOAP envelope" in str(info.value)
    assert SECRET not in str(info.value)
    assert client.calls == 1
    assert len(client.branches()) == 3  # other operations still answer


def test_a_client_fault_other_than_credentials_is_a_permanent_remote_error(mplus):
    client = make_client(mplus)
    with pytest.raises(RemoteError) as info:
        client.call("getShifts", fromFinancialDate=date(2026, 1, 1), throughFinancialDate=date(2026, 3, 31))
    assert "62 days" in str(info.value) and info.value.permanent


# ------------------------------------------------------------------------------------------- replay


LANDED = b"""<?xml version='1.0' encoding='UTF-8'?>
<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="urn:mplusqapi"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><S:Body><ns1:getShiftsResponse><ns1:shiftList>
<ns1:shift><ns1:shiftNumber>11</ns1:shiftNumber><ns1:branchNumber>1</ns1:branchNumber>
  <ns1:financialDate>2026-03-28</ns1:financialDate><ns1:employeeNumber>101</ns1:employeeNumber>
  <ns1:startTimestamp>2026-03-28T22:00:00</ns1:startTimestamp><ns1:endTimestamp>2026-03-29T04:00:00+02:00</ns1:endTimestamp>
  <ns1:ended>true</ns1:ended><ns1:manuallyModified>1</ns1:manuallyModified><ns1:costCenterNumber>20</ns1:costCenterNumber>
</ns1:shift>
<ns1:shift><ns1:shiftNumber>12</ns1:shiftNumber><ns1:branchNumber>1</ns1:branchNumber>
  <ns1:financialDate>2026-03-29</ns1:financialDate><ns1:employeeNumber>106</ns1:employeeNumber>
  <ns1:startTimestamp>2026-03-29T09:00:00+02:00</ns1:startTimestamp><ns1:endTimestamp xsi:nil="true"/>
  <ns1:ended>false</ns1:ended><ns1:manuallyModified>false</ns1:manuallyModified>
</ns1:shift>
<ns1:shift><ns1:shiftNumber>13</ns1:shiftNumber><ns1:branchNumber>x</ns1:branchNumber>
  <ns1:financialDate>2026-03-29</ns1:financialDate><ns1:employeeNumber>101</ns1:employeeNumber>
  <ns1:startTimestamp>2026-03-29T09:00:00+02:00</ns1:startTimestamp><ns1:ended>false</ns1:ended>
</ns1:shift>
</ns1:shiftList></ns1:getShiftsResponse></S:Body></S:Envelope>"""


def _landed(body: bytes, operation="getShifts", flow="clock_times") -> RawPage:
    return RawPage(
        flow=flow,
        request={"operation": operation, "params": {"fromFinancialDate": "2026-03-28"}, "timezone": "Europe/Amsterdam"},
        body=body,
        content_type="text/xml; charset=utf-8",
    )


def test_parse_works_on_a_landed_page_with_no_server_and_no_credentials():
    shifts, rejects = MplusKassaClient.parse_page(_landed(LANDED))
    first, second = shifts
    # a timestamp without offset is read in the landed timezone (CET before the DST switch)
    assert first.start == datetime.fromisoformat("2026-03-28T22:00:00+01:00")
    assert first.end - first.start == timedelta(hours=5)  # across the spring DST night
    assert first.manually_modified and first.cost_center == "20"
    assert second.end is None and not second.ended and second.cost_center is None and second.employee_number == "106"
    assert [(r.ref, r.reason) for r in rejects] == [("shift 13", "field 'branchNumber' is not an integer: 'x'")]


def test_parse_of_a_landed_page_turns_a_broken_body_into_one_reject():
    revenue = b"<S:Envelope xmlns:S='http://schemas.xmlsoap.org/soap/envelope/'><S:Body><x:reportTurnoverByBra"
    lines, rejects = MplusKassaClient.parse_page(_landed(revenue, "reportTurnoverByBranch", "revenue"))
    assert lines == [] and len(rejects) == 1 and "not well-formed XML" in rejects[0].reason
    other = b"<S:Envelope xmlns:S='http://schemas.xmlsoap.org/soap/envelope/'><S:Body><x/></S:Body></S:Envelope>"
    lines, rejects = MplusKassaClient.parse_page(_landed(other, "reportTurnoverByBranch", "revenue"))
    assert lines == [] and rejects[0].reason == "no reportTurnoverByBranchResponse in the body"


def test_a_page_fetched_earlier_replays_identically(mplus):
    client = make_client(mplus)
    (page,) = client.fetch("revenue_hourly", Window(date(2026, 3, 3), date(2026, 3, 3)))
    stored = RawPage.model_validate(json.loads(page.model_dump_json()))
    assert MplusKassaClient.parse_page(stored) == client.parse(page)
