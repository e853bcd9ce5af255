"""KashclickClient against the Kash.click stand-in (real HTTP), and parse on landed pages alone."""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal

import pytest
import requests
from sandbox.kashclick import KashclickApp
from sandbox.server import _Server
from tillflow.errors import AuthError, ConfigError
from tillflow.http import HttpPolicy
from tillflow.posting import Chart, PostingError, closing_entries, order_entry, payment_entry
from tillflow.records import RawPage, SaleOrder, SalePayment, TillClosing
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.sources.kashclick import DeletedEvent, KashclickClient

LOGIN = "shop@example.fr"
DAY = dt.date(2026, 3, 14)
TODAY = dt.date(2026, 3, 20)
POLICY = HttpPolicy(max_attempts=2, backoff_base=0.01, connect_timeout=2, read_timeout=5)


@pytest.fixture(scope="module")
def server():
    srv = _Server(("127.0.0.1", 0), KashclickApp(today=lambda: TODAY))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def url(server):
    requests.post(f"{server}/_sandbox/reset", timeout=5).raise_for_status()
    return server


def client(url, login=LOGIN, password=None) -> KashclickClient:
    conn = ConnectionInfo("kash", host=url, login=login, password=password or f"pw-{login}")
    c = KashclickClient.from_connection(conn, policy=POLICY, sleep=lambda _s: None)
    c.today = lambda: TODAY
    return c


def change(url, body):
    requests.post(f"{url}/_sandbox/shops/{LOGIN}", json=body, timeout=5).raise_for_status()


def log(url, path):
    return requests.get(f"{url}/_sandbox/requests", params={"path": path}, timeout=5).json()


def by_type(records, kind):
    return [r for r in records if isinstance(r, kind)]


def test_connection_fields_are_required():
    with pytest.raises(ConfigError, match="password"):
        KashclickClient.from_connection(ConnectionInfo("k", host="http://x", login="a"))


def test_fetch_lands_one_page_per_day_with_one_login_and_no_key(url):
    c = client(url)
    pages = c.fetch("ledger", Window(DAY, DAY + dt.timedelta(days=2)))
    assert [p.request["date"] for p in pages] == ["2026-03-14", "2026-03-15", "2026-03-16"]
    assert c.logins == 1 and len(log(url, "/workers/getAuthToken.php")) == 1
    calls = log(url, "/workers/getSales.php")
    assert [(q["query"]["d"], q["query"]["m"], q["query"]["y"]) for q in calls] == [
        ("14", "03", "2026"),
        ("15", "03", "2026"),
        ("16", "03", "2026"),
    ]
    key = calls[0]["query"]["key"]
    for p in pages:
        assert p.flow == "ledger" and p.request["path"] == "/workers/getSales.php"
        assert key not in json.dumps(p.request) and "key" not in p.request
    c.fetch("ledger", Window(DAY, DAY))
    assert c.logins == 1  # the token is cached per client


def test_parse_orders_payments_and_closings(url):
    [page] = client(url).fetch("ledger", Window(DAY, DAY))
    records, rejects = KashclickClient.parse_page(page)
    assert rejects == []
    orders, payments, closings = (
        by_type(records, SaleOrder),
        by_type(records, SalePayment),
        by_type(records, TillClosing),
    )
    assert len(orders) == 12 and len(payments) >= 12 and {c.register_id for c in closings} <= {"R1", "R2"}
    raw = json.loads(page.body, parse_float=Decimal)
    assert {o.order_id for o in orders} == {o["id"] for o in raw["orders"]}
    for o in orders:
        assert o.business_date == DAY and o.total_incl == sum(x.total_incl for x in o.lines)
        assert all(isinstance(x.vat_rate, Decimal) for x in o.lines)
        paid = sum(p.amount for p in payments if p.order_id == o.order_id)
        assert paid == o.total_incl
        for p in payments:
            if p.order_id == o.order_id:
                assert p.customer == o.customer
    assert any(o.customer is not None for o in orders)
    for cl in closings:
        assert set(cl.expected) == set(cl.counted) and "cash" in cl.expected
        paid = {}
        for p in payments:
            if p.register_id == cl.register_id:
                paid[p.method] = paid.get(p.method, Decimal(0)) + p.amount
        assert {m: v for m, v in cl.expected.items() if v} == {m: v for m, v in paid.items() if v}
    chart = Chart()  # the generated day posts with the default chart
    for o in orders:
        order_entry(o, chart)
    for p in payments:
        payment_entry(p, chart)
    for cl in closings:
        closing_entries(cl, chart)


def test_bad_records_become_rejects_naming_record_and_field(url):
    change(
        url,
        {
            "date": DAY.isoformat(),
            "bad_records": [
                "lines_not_adding_up",
                "malformed_amount",
                "missing_field",
                "customer_without_name",
                "customer_without_email",
                "unknown_vat_rate",
                "unknown_payment_method",
                "closing_unknown_register",
            ],
        },
    )
    change(
        url,
        {
            "date": DAY.isoformat(),
            "add_orders": [
                {
                    "id": "X1",
                    "registerId": "R1",
                    "date": "2026-03-14",
                    "status": "validated",
                    "lines": [
                        {"label": "a", "quantity": "2", "unitPriceIncl": "1.00", "vatRate": 20, "totalIncl": "2.50"}
                    ],
                    "totalIncl": "2.50",
                },
                {
                    "id": "X2",
                    "registerId": "R1",
                    "date": "2026-03-14",
                    "status": "validated",
                    "customer": {"id": "C7", "name": "Café des Arts", "email": "cafe-des-arts"},
                    "lines": [
                        {"label": "a", "quantity": "1", "unitPriceIncl": "1.00", "vatRate": 20, "totalIncl": "1.00"}
                    ],
                    "totalIncl": "1.00",
                },
            ],
        },
    )
    [page] = client(url).fetch("ledger", Window(DAY, DAY))
    records, rejects = KashclickClient.parse_page(page)
    reasons = {r.ref: r.reason for r in rejects}
    assert "lines add up to 16.10, field totalIncl says 17.10" in reasons["order 20260314-lines_not_adding_up"]
    assert "field amount is not a decimal amount: '12,34,5'" in reasons["payment 20260314-malformed_amount-P1"]
    assert "missing field(s): registerId" in reasons["order 20260314-missing_field"]
    assert "missing field(s): customer.name" in reasons["order 20260314-customer_without_name"]
    assert "missing field(s): customer.email" in reasons["order 20260314-customer_without_email"]
    assert "lines[1].totalIncl 2.50" in reasons["order X1"]
    assert "field customer.email is not an e-mail address: 'cafe-des-arts'" in reasons["order X2"]
    assert len(rejects) == 7
    assert all(r.payload for r in rejects)
    orders = {o.order_id: o for o in by_type(records, SaleOrder)}
    assert not {"20260314-customer_without_email", "20260314-customer_without_name"} & set(orders)
    assert all(o.customer is None or o.customer.email for o in orders.values())  # every generated customer has one
    # parsed, but the chart has no account/journal for them: posting says so
    chart = Chart()
    with pytest.raises(PostingError, match="vat_rate 7"):
        order_entry(orders["20260314-unknown_vat_rate"], chart)
    [btc] = [p for p in by_type(records, SalePayment) if p.method == "bitcoin"]
    with pytest.raises(PostingError, match="bitcoin"):
        payment_entry(btc, chart)
    [r9] = [c for c in by_type(records, TillClosing) if c.register_id == "R9"]
    with pytest.raises(PostingError, match="R9"):
        closing_entries(r9, chart)


def test_a_cancelled_order_is_a_deleted_event_and_a_changed_one_parses_anew(url):
    c = client(url)
    [before] = c.fetch("ledger", Window(DAY, DAY))
    first, second = [o for o in by_type(KashclickClient.parse_page(before)[0], SaleOrder)][:2]
    change(
        url,
        {
            "date": DAY.isoformat(),
            "cancel_orders": [first.order_id],
            "modify_orders": {
                second.order_id: {
                    "lines": [
                        {
                            "label": "Remise",
                            "quantity": "1",
                            "unitPriceIncl": "4.00",
                            "vatRate": 10,
                            "totalIncl": "4.00",
                        }
                    ]
                }
            },
        },
    )
    [after] = c.fetch("ledger", Window(DAY, DAY))
    records, rejects = KashclickClient.parse_page(after)
    assert rejects == []
    deleted = {d.event_key for d in by_type(records, DeletedEvent)}
    assert f"order:{first.order_id}" in deleted
    assert all(k.startswith(f"payment:{first.order_id}-P") for k in deleted - {f"order:{first.order_id}"})
    assert first.order_id not in {o.order_id for o in by_type(records, SaleOrder)}
    [changed] = [o for o in by_type(records, SaleOrder) if o.order_id == second.order_id]
    assert changed.total_incl == Decimal("4.00") and changed != second


def test_a_refused_login_is_one_call_and_an_auth_error(url):
    c = client(url, password="s3cret-XYZ")
    with pytest.raises(AuthError, match="login refused") as exc:
        c.fetch("ledger", Window(DAY, DAY))
    assert "s3cret-XYZ" not in str(exc.value)
    assert len(log(url, "/workers/getAuthToken.php")) == 1 and log(url, "/workers/getSales.php") == []


def test_reference_data_from_recent_sales(url):
    ref = client(url).reference_data()
    assert {i.key for i in ref["register"]} == {"R1", "R2"}
    assert {"cash", "card"} <= {i.key for i in ref["payment_method"]}
    assert {i.key for i in ref["vat_rate"]} == {"2.1", "5.5", "10", "20"}
    assert len(log(url, "/workers/getSales.php")) == KashclickClient.reference_days


def test_replay_parses_a_landed_page_with_no_server(url):
    [page] = client(url).fetch("ledger", Window(DAY, DAY))
    landed = RawPage.model_validate_json(page.model_dump_json())
    assert KashclickClient.parse_page(landed) == KashclickClient.parse_page(page)
    records, rejects = KashclickClient.parse_page(RawPage(flow="ledger", request={"date": "x"}, body=b"{nope"))
    assert records == [] and rejects[0].reason == "body is not valid JSON"
