"""The MplusKASSA (MplusQAPI) stand-in: a strict SOAP server with per-customer ports and JSON control."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from lxml import etree
from sandbox.mplus import MplusServer

ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "urn:mplusqapi"
PORT = 7001


@pytest.fixture(scope="module")
def mplus_server():
    server = MplusServer(port=0).start()
    yield server
    server.stop()


@pytest.fixture
def mplus(mplus_server):
    requests.post(f"{mplus_server.url}/_sandbox/reset", timeout=5).raise_for_status()
    return mplus_server


def soap(server, operation: str, inner: str = "", *, port: int = PORT, ident="acme", secret="secret-acme"):
    envelope = (
        f'<soapenv:Envelope xmlns:soapenv="{ENV}" xmlns:m="{TNS}"><soapenv:Body>'
        f"<m:{operation}>{inner}</m:{operation}></soapenv:Body></soapenv:Envelope>"
    )
    params = {} if ident is None else {"ident": ident, "secret": secret}
    return requests.post(
        server.endpoint(port),
        params=params,
        data=envelope.encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": operation},
        timeout=10,
    )


def fault_of(response) -> tuple[str, str]:
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{ENV}}}Body/{{{ENV}}}Fault")
    assert fault is not None, response.text
    return fault.findtext("faultcode"), fault.findtext("faultstring")


def local_rows(response, item: str) -> list[dict[str, str]]:
    root = etree.fromstring(response.content)
    return [{etree.QName(f).localname: f.text for f in el} for el in root.iter(f"{{{TNS}}}{item}")]


def dates(start: str, end: str) -> str:
    return f"<m:fromFinancialDate>{start}</m:fromFinancialDate><m:throughFinancialDate>{end}</m:throughFinancialDate>"


def test_the_wsdl_is_served_per_customer_with_its_own_endpoint(mplus):
    for port in (7001, 7002):
        r = requests.get(f"{mplus.endpoint(port)}?wsdl", timeout=5)
        assert r.status_code == 200 and "xml" in r.headers["Content-Type"]
        root = etree.fromstring(r.content)
        ops = {el.get("name") for el in root.iter("{http://schemas.xmlsoap.org/wsdl/}operation")}
        assert {"getBranches", "getEmployees", "getShifts", "reportTurnoverByBranch", "getCostCenters"} <= ops
        assert "getTurnoverGroups" in ops
        address = root.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address").get("location")
        assert address == mplus.endpoint(port)
    assert requests.get(f"{mplus.url}/7001/Other", timeout=5).status_code == 404
    assert requests.get(mplus.endpoint(PORT), timeout=5).status_code == 405


@pytest.mark.parametrize(("ident", "secret"), [("acme", "wrong"), ("acme", ""), (None, None), ("", "secret-")])
def test_bad_ident_or_secret_is_a_client_soap_fault(mplus, ident, secret):
    r = soap(mplus, "getBranches", ident=ident, secret=secret)
    assert r.status_code == 500  # SOAP 1.1 answers every fault with 500
    code, text = fault_of(r)
    assert code.endswith("Client") and text == "Invalid ident or secret"
    assert "wrong" not in r.text


def test_a_good_secret_lists_the_branches(mplus):
    r = soap(mplus, "getBranches")
    assert r.status_code == 200
    assert local_rows(r, "branch") == [
        {"branchNumber": "1", "name": "Centrum"},
        {"branchNumber": "2", "name": "Station"},
        {"branchNumber": "3", "name": "Strand"},
    ]


@pytest.mark.parametrize(
    ("operation", "inner", "needle"),
    [
        ("reportTurnoverByBranch", dates("yesterday", "2026-03-02"), "fromFinancialDate"),
        ("getShifts", dates("2026-03-02", "2026-03-02") + "<m:perHour>true</m:perHour>", "perHour"),
        (
            "reportTurnoverByBranch",
            dates("2026-03-01", "2026-03-02")
            + "<m:branchNumbers><m:branchNumber>one</m:branchNumber></m:branchNumbers>",
            "branchNumber",
        ),
        ("getShifts", "<m:fromFinancialDate>2026-03-02</m:fromFinancialDate>", "throughFinancialDate"),
        ("reportTurnoverByBranch", dates("2026-03-01", "2026-03-02") + "<m:perHour>maybe</m:perHour>", "perHour"),
    ],
)
def test_strict_schema_validation_refuses_wrong_types_and_elements(mplus, operation, inner, needle):
    r = soap(mplus, operation, inner)
    code, text = fault_of(r)
    assert code.endswith("Client.SchemaValidationError") and needle in text


def test_a_range_over_62_days_is_refused(mplus):
    code, text = fault_of(soap(mplus, "getShifts", dates("2026-01-01", "2026-03-31")))
    assert code.endswith("Client") and "62 days" in text


def test_turnover_is_cents_and_a_day_is_the_sum_of_its_hours(mplus):
    inner = dates("2026-03-03", "2026-03-03")
    daily = local_rows(soap(mplus, "reportTurnoverByBranch", inner), "turnover")
    hourly = local_rows(soap(mplus, "reportTurnoverByBranch", inner + "<m:perHour>true</m:perHour>"), "turnover")
    assert {r["branchNumber"] for r in daily} == {"1", "2", "3"}
    for row in daily:
        hours = [h for h in hourly if h["branchNumber"] == row["branchNumber"]]
        assert [int(h["hour"]) for h in hours] == list(range(10, 23))
        assert sum(int(h["totalInclAmount"]) for h in hours) == int(row["totalInclAmount"])
        assert sum(int(h["totalExclAmount"]) for h in hours) == int(row["totalExclAmount"])
    monday = local_rows(soap(mplus, "reportTurnoverByBranch", dates("2026-03-02", "2026-03-02")), "turnover")
    assert {r["branchNumber"] for r in monday} == {"1", "2"}  # Strand is closed on Mondays


def test_employee_without_authorisation_group_is_not_listed_but_clocks_in(mplus):
    listed = {r["employeeNumber"] for r in local_rows(soap(mplus, "getEmployees"), "employee")}
    assert listed == {"101", "102", "103", "104", "105"}
    shifts = local_rows(soap(mplus, "getShifts", dates("2026-03-01", "2026-03-09")), "shift")
    assert "106" in {s["employeeNumber"] for s in shifts}
    view = requests.get(f"{mplus.url}/_sandbox/customers/{PORT}", timeout=5).json()
    assert {"employeeNumber": 106, "name": "Frank Mulder", "authorisationGroupNumber": None, "listed": False} in (
        view["employees"]
    )


def test_today_has_an_open_shift_without_end_and_a_break_is_two_shifts(mplus):
    today = requests.get(f"{mplus.url}/_sandbox/state", timeout=5).json()["today"]
    shifts = local_rows(soap(mplus, "getShifts", dates(today, today)), "shift")
    open_ = [s for s in shifts if s["ended"] == "false"]
    assert open_ and all("endTimestamp" not in s or s["endTimestamp"] is None for s in open_)
    view = requests.get(f"{mplus.url}/_sandbox/customers/{PORT}", timeout=5).json()
    assert str(view["open_shift"]) in {s["shiftNumber"] for s in open_}
    pair = [
        s
        for s in local_rows(soap(mplus, "getShifts", dates("2026-03-03", "2026-03-03")), "shift")
        if s["employeeNumber"] == "102"
    ]
    assert len(pair) == 2
    first_end = dt.datetime.fromisoformat(pair[0]["endTimestamp"])
    second_start = dt.datetime.fromisoformat(pair[1]["startTimestamp"])
    assert second_start - first_end == dt.timedelta(minutes=30)
    assert pair[0]["costCenterNumber"] != pair[1]["costCenterNumber"]


def test_a_pinned_clock_fixes_today_the_hours_begun_and_the_open_shift_until_reset(mplus):
    def clock(body=None):
        if body is None:
            return requests.get(f"{mplus.url}/_sandbox/clock", timeout=5)
        return requests.post(f"{mplus.url}/_sandbox/clock", json=body, timeout=5)

    assert clock().json()["pinned"] is False
    assert clock({"now": "2026-03-03T14:20:00+01:00"}).json() == {"now": "2026-03-03T14:20:00+01:00", "pinned": True}
    assert requests.get(f"{mplus.url}/_sandbox/state", timeout=5).json()["today"] == "2026-03-03"
    hourly = soap(mplus, "reportTurnoverByBranch", dates("2026-03-03", "2026-03-04") + "<m:perHour>true</m:perHour>")
    rows = local_rows(hourly, "turnover")
    assert {r["financialDate"] for r in rows} == {"2026-03-03"}  # nothing after "today"
    assert max(int(r["hour"]) for r in rows) == 14  # only the hours begun
    shifts = local_rows(soap(mplus, "getShifts", dates("2026-03-03", "2026-03-03")), "shift")
    (open_,) = [s for s in shifts if s["employeeNumber"] == "101"]
    assert open_["ended"] == "false" and open_["startTimestamp"].startswith("2026-03-03T12:20:00")
    assert all(
        dt.datetime.fromisoformat(s["startTimestamp"]) <= dt.datetime(2026, 3, 3, 13, 20, tzinfo=dt.UTC) for s in shifts
    )  # only shifts that began by the pinned instant
    assert (
        soap(mplus, "getShifts", dates("2026-03-03", "2026-03-03")).content
        == soap(mplus, "getShifts", dates("2026-03-03", "2026-03-03")).content
    )  # a pinned clock answers the same every time
    assert clock({"now": "yesterday"}).status_code == 400 and clock({"now": "2026-03-03T14:20:00"}).status_code == 400
    assert clock({"when": None}).status_code == 400
    assert clock({"now": None}).json()["pinned"] is False
    clock({"now": "2026-03-03T14:20:00+01:00"})
    requests.post(f"{mplus.url}/_sandbox/reset", timeout=5).raise_for_status()
    assert clock().json()["pinned"] is False


def test_customers_are_separate_and_deterministic(mplus):
    a = soap(mplus, "reportTurnoverByBranch", dates("2026-03-03", "2026-03-03"), port=7001).content
    b = soap(mplus, "reportTurnoverByBranch", dates("2026-03-03", "2026-03-03"), port=7002).content
    assert a != b
    assert soap(mplus, "reportTurnoverByBranch", dates("2026-03-03", "2026-03-03"), port=7001).content == a


def test_control_requests_state_and_reset(mplus):
    soap(mplus, "getBranches")
    soap(mplus, "getBranches", secret="nope")
    log = requests.get(f"{mplus.url}/_sandbox/requests", timeout=5).json()
    assert [(e["operation"], e["port"], e["status"]) for e in log] == [
        ("getBranches", PORT, 200),
        ("getBranches", PORT, 500),
    ]
    assert "secret" not in str(log) and "nope" not in str(log)
    r = requests.post(
        f"{mplus.url}/_sandbox/customers/{PORT}",
        json={"add_employees": [{"employeeNumber": 120, "name": "Nieuw", "authorisationGroupNumber": 2}]},
        timeout=5,
    )
    assert r.status_code == 200
    assert "120" in {e["employeeNumber"] for e in local_rows(soap(mplus, "getEmployees"), "employee")}
    state = requests.get(f"{mplus.url}/_sandbox/state", timeout=5).json()
    assert state["customers"][str(PORT)]["add_employees"][0]["employeeNumber"] == 120
    assert requests.post(f"{mplus.url}/_sandbox/reset", timeout=5).json() == {"ok": True}
    assert requests.get(f"{mplus.url}/_sandbox/requests", timeout=5).json() == []
    assert requests.get(f"{mplus.url}/_sandbox/state", timeout=5).json()["customers"] == {}
    assert "120" not in {e["employeeNumber"] for e in local_rows(soap(mplus, "getEmployees"), "employee")}
    assert requests.get(f"{mplus.url}/_sandbox/reset", timeout=5).status_code == 405
    assert requests.get(f"{mplus.url}/_sandbox/nope", timeout=5).status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"bogus": 1}, "unknown key"),
        ({"shifts": {"abc": {}}}, "not a shift number"),
        ({"shifts": {"1": {"endTimestamp": "2026-03-02T10:00:00"}}}, "needs an offset"),
        ({"shifts": {"1": {"ended": "yes"}}}, "true or false"),
        ({"add_shifts": [{"branchNumber": 1}]}, "is required"),
        ({"turnover": [{"branchNumber": 1, "financialDate": "2026-03-02", "totalInclAmount": 1.5}]}, "integer"),
    ],
)
def test_customer_changes_are_validated(mplus, body, needle):
    r = requests.post(f"{mplus.url}/_sandbox/customers/{PORT}", json=body, timeout=5)
    assert r.status_code == 400 and needle in r.json()["message"]


def test_customer_changes_close_an_open_shift_and_set_negative_turnover(mplus):
    view = requests.get(f"{mplus.url}/_sandbox/customers/{PORT}", timeout=5).json()
    number, today = view["open_shift"], view["today"]
    end = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    body = {
        "shifts": {str(number): {"endTimestamp": end, "ended": True, "manuallyModified": True}},
        "turnover": [
            {"branchNumber": 2, "financialDate": "2026-03-03", "totalInclAmount": -500, "totalExclAmount": -413}
        ],
    }
    requests.post(f"{mplus.url}/_sandbox/customers/{PORT}", json=body, timeout=5).raise_for_status()
    shift = next(
        s for s in local_rows(soap(mplus, "getShifts", dates(today, today)), "shift") if s["shiftNumber"] == str(number)
    )
    assert shift["ended"] == "true" and shift["manuallyModified"] == "true"
    assert dt.datetime.fromisoformat(shift["endTimestamp"]) == dt.datetime.fromisoformat(end)
    rows = local_rows(soap(mplus, "reportTurnoverByBranch", dates("2026-03-03", "2026-03-03")), "turnover")
    assert next(r for r in rows if r["branchNumber"] == "2")["totalInclAmount"] == "-500"


def test_faults_5xx_and_next_5xx_answer_html_and_malformed_cuts_the_envelope(mplus):
    url = f"{mplus.url}/_sandbox/faults"
    assert requests.post(url, json={"rate_5xx": 2}, timeout=5).status_code == 400
    assert requests.post(url, json={"rate_429": 0.1}, timeout=5).status_code == 400
    requests.post(url, json={"next_5xx": 1}, timeout=5).raise_for_status()
    r = soap(mplus, "getBranches")
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("text/html")
    assert soap(mplus, "getBranches").status_code == 200
    requests.post(url, json={"rate_5xx": 1, "seed": 3}, timeout=5).raise_for_status()
    assert soap(mplus, "getBranches").status_code in (500, 502, 503)
    assert requests.get(f"{mplus.endpoint(PORT)}?wsdl", timeout=5).status_code == 200  # the WSDL is never faulted
    requests.post(url, json={"malformed": True, "operations": ["getEmployees"]}, timeout=5).raise_for_status()
    assert soap(mplus, "getBranches").status_code == 200
    r = soap(mplus, "getEmployees")
    assert r.status_code == 200
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(r.content)
    log = requests.get(f"{mplus.url}/_sandbox/requests", timeout=5).json()
    assert [e["fault"] for e in log] == ["5xx", None, "5xx", None, "malformed"]
    assert requests.get(url, timeout=5).json()["faults"]["malformed"] is True
    requests.post(url, json={}, timeout=5).raise_for_status()
    assert etree.fromstring(soap(mplus, "getEmployees").content) is not None


def test_an_injected_timeout_waits_then_answers_504(mplus):
    requests.post(
        f"{mplus.url}/_sandbox/faults", json={"rate_timeout": 1, "timeout_seconds": 0.2}, timeout=5
    ).raise_for_status()
    r = soap(mplus, "getBranches")
    assert r.status_code == 504 and r.elapsed.total_seconds() >= 0.2
