"""KassatellenClient.parse (no network: what a replay runs) — hours of the business day, rejects."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from tillflow.records import RawPage
from tillflow.sources.kassatellen import KassatellenClient, hour_of_business_day, hour_start


def _page(rows, start="2026-10-24T22:00:00Z", end="2026-10-25T23:00:00Z", cutoff="00:00"):
    body = json.dumps({"success": True, "data": rows}).encode()
    return RawPage(
        flow="revenue_hourly",
        body=body,
        request={
            "method": "GET",
            "path": "/api/v1/revenue/hourly",
            "params": {"from": start, "to": end},
            "timezone": "Europe/Amsterdam",
            "cutoff": cutoff,
        },
    )


def _row(ts, group=11, incl=10, excl=9):
    return {"hourStart": ts, "revenueGroupId": group, "amountInclVat": incl, "amountExclVat": excl}


def test_the_25_hour_day_has_25_distinct_hours_numbered_0_to_24():
    start = datetime(2026, 10, 24, 22, tzinfo=UTC)  # 25 Oct 00:00 CEST
    rows = [_row((start + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ")) for i in range(25)]
    lines, rejects = KassatellenClient.parse_page(_page(rows))
    assert rejects == []
    assert [(ln.business_date, ln.hour) for ln in lines] == [(date(2026, 10, 25), h) for h in range(25)]
    for i, ln in enumerate(lines):  # and back: each hour is its own instant
        assert hour_start(ln.business_date, ln.hour, "Europe/Amsterdam", time(0)) == start + timedelta(hours=i)


def test_the_spring_day_has_23_and_the_cutoff_moves_night_hours_to_the_day_before():
    start = datetime(2026, 3, 28, 23, tzinfo=UTC)  # 29 Mar 00:00 CET
    assert hour_of_business_day(start + timedelta(hours=22), "Europe/Amsterdam", time(0)) == (date(2026, 3, 29), 22)
    assert hour_of_business_day(start + timedelta(hours=23), "Europe/Amsterdam", time(0)) == (date(2026, 3, 30), 0)
    one_am = datetime(2026, 11, 19, 0, tzinfo=UTC)  # 19 Nov 01:00 CET, before the 05:00 cutoff
    assert hour_of_business_day(one_am, "Europe/Amsterdam", time(5)) == (date(2026, 11, 18), 20)


def test_bad_rows_go_to_rejects_with_their_reason_and_the_rest_parses():
    rows = [
        _row("2026-10-25T10:00:00Z"),
        _row("2026-10-25T10:00:00Z", group=12, incl=-1),
        _row("2026-10-25T11:00:00Z", incl="12,50"),
        _row("2026-10-25T11:30:00Z"),
        _row("2026-10-27T10:00:00Z"),  # outside the business days asked for
        _row("2026-10-25T12:00:00Z", group="11"),
        {"hourStart": "2026-10-25T13:00:00Z", "revenueGroupId": 11},
        _row("2026-10-25T10:00:00Z"),  # the same group and hour twice
        _row("2026-10-25T14:00:00"),  # no offset
    ]
    lines, rejects = KassatellenClient.parse_page(_page(rows))
    # 10:00Z is 11:00 CET, the 13th hour of this 25-hour day (00:00 and 02:00 CEST came first)
    assert [(ln.source_key, ln.hour, ln.amount_incl) for ln in lines] == [("11", 12, Decimal("10.00"))]
    reasons = [r.reason for r in rejects]
    assert reasons == [
        "field 'amountInclVat' is negative: -1.00",
        "field 'amountInclVat' is not a number: '12,50'",
        "field 'hourStart' is not on a whole hour: 2026-10-25T11:30:00Z",
        "hour 2026-10-27T10:00:00Z lies outside the business days asked for (2026-10-24T22:00Z..)",
        "field 'revenueGroupId' is not an integer: '11'",
        "missing field(s): amountInclVat, amountExclVat",
        "duplicate row for group 11 hour 2026-10-25T10:00:00Z",
        "field 'hourStart' is not an ISO 8601 instant with offset: '2026-10-25T14:00:00'",
    ]
    assert KassatellenClient.parse_page(RawPage(flow="x", request={}, body=b"{oops"))[1][0].reason == (
        "body is not valid JSON"
    )
