"""CcvClient against the CCV stand-in: signing, paging, products by SKU, PATCH, stock, 429s, parsing, masking."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
import time
from decimal import Decimal

import pytest
import requests
from sandbox.ccv import CcvApp
from sandbox.server import _Server
from tillflow.errors import AuthError, ConfigError, RemoteError
from tillflow.http import HttpPolicy
from tillflow.sources.base import ConnectionInfo, Window
from tillflow.sources.ccv import CcvClient, sign, x_date

PUBLIC, SECRET = "pk-client", "sk-client"

# Published test vectors: (public, secret, method, uri, body, x-date) -> x-hash
VECTORS = [
    (
        ("pk-demo", "sk-demo", "GET", "/api/rest/v1/orders?start=0&size=25", "", "2026-03-02T10:15:00+00:00"),
        "48ae258d52089e2bfd03f2ee4da76aefcaffc52b860326b14956e5161a3ec5f0"
        "a0486e182557bf36a24a1e918589e78a65c4f968f4bab8438f2381eda38072ac",
    ),
    (
        ("pk-demo", "sk-demo", "PATCH", "/api/rest/v1/products/500001", '{"stock":5}', "2026-03-02T10:15:00+00:00"),
        "c95ab681fb20527743b0e712cc3d7134360e8dad9afce7bab5a4d2f2987041ce"
        "2a85fec86582d90f5c5d8abdf01d6be223adec445f3870142421af52035571fc",
    ),
]


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def server():
    clock = Clock()
    app = CcvApp(clock=clock)
    srv = _Server(("127.0.0.1", 0), app)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield app, clock, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def ccv(server):
    app, clock, url = server
    app.reset()
    clock.offset = 0.0
    return app, clock, url


def _client(url: str, *, secret: str = SECRET, page_size: int = 100, sleep=None, clock=None, attempts: int = 1):
    conn = ConnectionInfo(conn_id="ccv_test", host=url, login=PUBLIC, password=secret)
    client = CcvClient.from_connection(
        conn,
        policy=HttpPolicy(max_attempts=attempts),
        sleep=sleep or (lambda s: None),
        **({"clock": clock} if clock else {}),
    )
    client.page_size = page_size
    return client


def _shop(url: str) -> dict:
    return requests.get(f"{url}/_sandbox/shops/client", timeout=5).json()["shop"]


def _log(url: str, path: str) -> list[dict]:
    return requests.get(f"{url}/_sandbox/requests", params={"path": path}, timeout=5).json()


# ------------------------------------------------------------------------------------------- signing


@pytest.mark.parametrize(("args", "expected"), VECTORS)
def test_sign_matches_the_published_vectors(args, expected):
    public, secret, method, uri, body, date = args
    independent = hmac.new(
        secret.encode(), "|".join((public, method, uri, body, date)).encode(), hashlib.sha512
    ).hexdigest()
    assert independent == expected
    assert sign(*args) == expected


def test_x_date_is_iso_utc_with_seconds():
    amsterdam = dt.timezone(dt.timedelta(hours=1))
    assert x_date(dt.datetime(2026, 3, 2, 11, 15, 7, 123456, tzinfo=amsterdam)) == "2026-03-02T10:15:07+00:00"
    with pytest.raises(ValueError):
        x_date(dt.datetime(2026, 3, 2, 10, 15))


def test_every_request_carries_the_ccv_headers_from_the_injected_clock(ccv):
    _app, _clock, url = ccv
    fixed = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=30)
    client = _client(url, clock=lambda: fixed)
    seen = []
    client.http.session.hooks["response"].append(lambda r, *a, **k: seen.append(r.request))
    client.products()
    req = seen[0]
    assert req.headers["x-public"] == PUBLIC and req.headers["x-date"] == x_date(fixed)
    assert req.headers["x-hash"] == sign(PUBLIC, SECRET, "GET", req.path_url, "", x_date(fixed))
    assert req.headers["Accept"] == "application/vnd.verto.salespos+json"


def test_a_clock_six_minutes_off_is_an_auth_error(ccv):
    _app, _clock, url = ccv
    late = _client(url, clock=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6))
    with pytest.raises(AuthError, match="401"):
        late.products()


def test_from_connection_names_the_missing_field():
    with pytest.raises(ConfigError, match="login"):
        CcvClient.from_connection(ConnectionInfo(conn_id="c", host="https://shop.example", password="s"))
    with pytest.raises(ConfigError, match="password"):
        CcvClient.from_connection(ConnectionInfo(conn_id="c", host="https://shop.example", login="pk-x"))


# ------------------------------------------------------------------------------------------- reads


def test_orders_are_paged_and_filtered_by_status(ccv):
    _app, _clock, url = ccv
    client = _client(url, page_size=2)
    everything = client.orders()
    assert len(everything) == 15
    chosen = client.orders([7, 5])
    assert chosen and {o["status"] for o in chosen} == {5, 7}
    assert chosen == [o for o in everything if o["status"] in (5, 7)]
    starts = [e["query"].get("start") for e in _log(url, "/api/rest/v1/orders") if e["query"].get("status") == "7"]
    assert len(starts) >= 2 and starts[0] == "0"
    with pytest.raises(ValueError, match="99"):
        client.orders([99])


def test_orders_since_and_rows(ccv):
    app, _clock, url = ccv
    client = _client(url)
    since = app.now().date() - dt.timedelta(days=2)
    recent = client.orders(since=since)
    assert len(recent) == 3
    rows = client.order_rows(recent[0]["id"])
    assert rows and all(r["order_id"] == recent[0]["id"] and r["product_number"] for r in rows)


def test_product_by_sku(ccv):
    _app, _clock, url = ccv
    client = _client(url)
    prod = client.product_by_sku("AC-MOK-350")
    assert prod is not None and prod["productnumber"] == "AC-MOK-350"
    assert client.product_by_sku("NO-SUCH-SKU") is None
    client.create_product({"name": "Dubbel", "productnumber": "AC-MOK-350", "price": Decimal("1.00")})
    with pytest.raises(RemoteError, match="2 products have productnumber 'AC-MOK-350'"):
        client.product_by_sku("AC-MOK-350")


def test_create_then_update_by_sku_with_patch(ccv):
    _app, _clock, url = ccv
    client = _client(url)
    new_id = client.create_product(
        {"name": "Koffiemolen", "productnumber": "AC-MLN-001", "price": Decimal("49.95"), "taxtariff": "normal"}
    )
    found = client.product_by_sku("AC-MLN-001")
    assert str(found["id"]) == new_id and found["price"] == Decimal("49.95")
    client.update_product(found["id"], {"name": "Koffiemolen handmatig", "price": Decimal("44.50")})
    prod = next(p for p in _shop(url)["products"] if p["sku"] == "AC-MLN-001")
    assert (prod["name"], prod["price_incl"]) == ("Koffiemolen handmatig", "44.50")
    assert [e["method"] for e in _log(url, f"/api/rest/v1/products/{new_id}")] == ["PATCH"]


def test_a_refused_patch_is_a_remote_error_naming_the_field(ccv):
    _app, _clock, url = ccv
    client = _client(url)
    with pytest.raises(RemoteError, match="price") as info:
        client.update_product(500001, {"price": "9.95"})
    assert info.value.status == 400


def test_set_stock(ccv):
    _app, _clock, url = ccv
    client = _client(url)
    client.set_stock(500001, 17)
    assert next(p for p in _shop(url)["products"] if p["id"] == 500001)["stock"] == "17"
    unmanaged = next(p for p in _shop(url)["products"] if not p["manage_stock"])
    with pytest.raises(RemoteError, match="stockenabled") as info:
        client.set_stock(unmanaged["id"], 3)
    assert info.value.status == 422


def test_429_is_waited_out_then_retried(ccv):
    app, clock, url = ccv
    requests.post(f"{url}/_sandbox/limits", json={"per_minute": 2}, timeout=5).raise_for_status()
    waits = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.offset += seconds  # the stand-in's minute passes while the client waits

    client = _client(url, sleep=sleep, attempts=3)
    for _ in range(3):
        assert client.product_by_sku("CF-ESP-250") is not None
    statuses = [e["status"] for e in _log(url, "/api/rest/v1/products")]
    assert statuses == [200, 200, 429, 200]
    assert len(waits) == 1 and 1 <= waits[0] <= 60  # what Retry-After said, not a guessed backoff
    assert client.http.stats.by_status["429"] == 1


def test_a_tampered_response_hash_is_refused(ccv):
    _app, _clock, url = ccv
    client = _client(url)

    def tamper(r, *a, **k):
        r.headers["x-hash"] = "f" * 128

    client.http.session.hooks["response"].append(tamper)
    with pytest.raises(RemoteError, match="x-hash"):
        client.products()


def test_the_secret_never_appears_in_messages(ccv):
    _app, _clock, url = ccv
    secret = "sk-client-but-wrong-9f8e7d"
    client = _client(url, secret=secret)
    with pytest.raises(AuthError) as info:
        client.products()
    assert secret not in str(info.value)
    assert secret not in repr(client.http.session.auth)
    good = _client(url)
    with pytest.raises(RemoteError) as info:
        good.update_product(500001, {"price": SECRET})  # echoed back by the vendor's 400: masked
    assert info.value.status == 400 and "price" in str(info.value)
    assert SECRET not in str(info.value) and "***" in str(info.value)


# ------------------------------------------------------------------------------------------- flows


def test_fetch_orders_lands_pages_with_rows_and_parses_them(ccv):
    app, _clock, url = ccv
    client = _client(url, page_size=5)
    today = app.now().date()
    pages = client.fetch("orders", Window(today - dt.timedelta(days=20), today))
    assert len(pages) == 3
    assert all(SECRET not in str(p.request) and PUBLIC not in str(p.request) for p in pages)
    records = []
    for page in pages:
        recs, rejects = CcvClient.parse_page(page)
        assert rejects == []
        records += recs
    assert len(records) == 15
    first = records[0]
    assert set(first) == {
        "order_id", "ordernumber", "status", "status_name", "paid", "created", "customer", "rows", "total_incl",
        "country",
    }  # fmt: skip
    assert first["rows"] and set(first["rows"][0]) == {"sku", "name", "quantity", "price_incl", "vat_rate"}
    assert {"email", "name", "company", "billing_address", "shipping_address"} == set(first["customer"])
    cancelled = [r for r in records if r["status"] == 8]
    assert cancelled and cancelled[0]["status_name"] == "Cancelled"


def test_malformed_orders_are_rejects_naming_the_field(ccv):
    app, _clock, url = ccv
    requests.post(
        f"{url}/_sandbox/shops/client",
        json={
            "orders": [
                {"id": 8000002, "raw": {"customer": {"billingaddress": {"first_name": "X", "last_name": "Y"}}}},
                {"id": 8000003, "raw": {"status": "paid"}},
                {"id": 8000004, "raw": {"total_orderrow_price": 1.23}},
            ]
        },
        timeout=5,
    ).raise_for_status()
    client = _client(url)
    today = app.now().date()
    pages = client.fetch("orders", Window(today - dt.timedelta(days=20), today))
    records, rejects = [], []
    for page in pages:
        recs, rej = client.parse(page)
        records += recs
        rejects += rej
    reasons = {r.ref: r.reason for r in rejects}
    assert len(records) == 13
    assert "order 8000002" not in reasons  # no e-mail: parsed; the orders flow decides (default customer or rejects)
    assert [r for r in records if r["order_id"] == "8000002"][0]["customer"]["email"] is None
    assert "field status" in reasons["order 8000003"]
    assert "total_orderrow_price" in reasons["order 8000004"]


def test_stock_flow_counts_reservations(ccv):
    _app, _clock, url = ccv
    requests.post(
        f"{url}/_sandbox/shops/client",
        json={"orders": [{"status": 14, "rows": [{"productnumber": "TE-GRN-100", "count": 4}]}]},
        timeout=5,
    ).raise_for_status()
    client = _client(url)
    (page,) = client.fetch("stock", Window(dt.date(2026, 1, 1), dt.date(2026, 1, 1)))
    records, rejects = client.parse(page)
    assert rejects == []
    expected = {p["sku"]: p for p in _shop(url)["products"]}
    for rec in records:
        ref = expected[rec["sku"]]
        assert (rec["stock"], rec["reserved"], rec["manage_stock"]) == (
            ref["stock"],
            ref["reserved"],
            ref["manage_stock"],
        )
    green = next(r for r in records if r["sku"] == "TE-GRN-100")
    assert Decimal(green["reserved"]) >= 4
    assert Decimal(green["available"]) == Decimal(green["stock"]) - Decimal(green["reserved"])


def test_products_flow_and_reference_data(ccv):
    _app, _clock, url = ccv
    client = _client(url, page_size=4)
    pages = client.fetch("products", Window(dt.date(2026, 1, 1), dt.date(2026, 1, 1)))
    assert len(pages) == 3
    records = [r for p in pages for r in client.parse(p)[0]]
    assert len(records) == 10 and {"sku", "price_incl", "manage_stock", "stock"} <= set(records[0])
    statuses = client.test_connection()
    assert [s.key for s in statuses] == [str(i) for i in range(1, 15)]
    assert [c.name for c in client.reference_data()["category"]] == ["Koffie", "Thee", "Gebak", "Accessoires"]


def test_orders_are_asked_for_and_dated_by_the_accounts_business_day():
    """An order placed at 01:30 in Amsterdam belongs to the business day before (cutoff 05:00): the fetch asks CCV
    for the instants the window's business days span, and the orders kind dates the order the same way."""
    from datetime import UTC, date, datetime, time

    from tillflow.flows import get_kind
    from tillflow.sources.base import Window
    from tillflow.sources.ccv import _created_between
    from tillflow.specs import AccountSettings

    window = Window(date(2026, 12, 1), date(2026, 12, 3), tz="Europe/Amsterdam", cutoff=time(5, 0))
    assert _created_between(window) == {
        "min_create_date": "2026-12-01T04:00:00+00:00",
        "max_create_date": "2026-12-04T03:59:59+00:00",
    }
    assert _created_between(Window(date(2026, 12, 1), date(2026, 12, 3))) == {
        "min_create_date": "2026-12-01",
        "max_create_date": "2026-12-03",
    }
    settings = AccountSettings(timezone="Europe/Amsterdam")
    night = {"created": datetime(2026, 12, 4, 0, 30, tzinfo=UTC).isoformat()}  # 01:30 in Amsterdam
    assert get_kind("orders").record_day(night, settings) == date(2026, 12, 3)
    morning = {"created": datetime(2026, 12, 4, 4, 0, tzinfo=UTC).isoformat()}  # 05:00: the new business day
    assert get_kind("orders").record_day(morning, settings) == date(2026, 12, 4)
