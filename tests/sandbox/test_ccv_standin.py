"""The CCV stand-in is as strict as CCV's contract: HMAC on every call, clock window, paging, PATCH rules, 429s."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time

import pytest
import requests
from sandbox.ccv import CcvApp
from sandbox.server import _Server

PUBLIC, SECRET = "pk-standin", "sk-standin"


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


def _hash(public: str, secret: str, method: str, uri: str, body: str, date: str) -> str:
    return hmac.new(secret.encode(), f"{public}|{method}|{uri}|{body}|{date}".encode(), hashlib.sha512).hexdigest()


def _date(shift: float = 0.0) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=shift)).replace(microsecond=0).isoformat()


def call(url, method, uri, body=None, *, public=PUBLIC, secret=SECRET, date=None, hash_=None, headers=None):
    text = "" if body is None else json.dumps(body)
    date = date or _date()
    h = {
        "x-public": public,
        "x-date": date,
        "x-hash": hash_ or _hash(public, secret, method, uri, text, date),
        "Accept": "application/vnd.verto.salespos+json",
    }
    if body is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    return requests.request(method, url + uri, headers=h, data=text.encode() if body is not None else None, timeout=5)


def _shop(url: str, shop: str = "standin") -> dict:
    return requests.get(f"{url}/_sandbox/shops/{shop}", timeout=5).json()["shop"]


# ------------------------------------------------------------------------------------------- HMAC


def test_a_correct_signature_is_accepted_and_the_answer_is_signed(ccv):
    _app, _clock, url = ccv
    uri = "/api/rest/v1/orders?start=0&size=5"
    r = call(url, "GET", uri)
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 5
    # the response is signed like the request, over the response body and its own x-date
    assert r.headers["x-hash"] == _hash(PUBLIC, SECRET, "GET", uri, r.text, r.headers["x-date"])


def test_a_signed_body_is_part_of_the_hash(ccv):
    _app, _clock, url = ccv
    uri = "/api/rest/v1/products/500001"
    date = _date()
    wrong = _hash(PUBLIC, SECRET, "PATCH", uri, "", date)  # signed without the body
    r = call(url, "PATCH", uri, {"name": "Nieuw"}, date=date, hash_=wrong)
    assert r.status_code == 401
    assert call(url, "PATCH", uri, {"name": "Nieuw"}).status_code == 204


def test_a_wrong_hash_is_401_with_ccvs_error_body(ccv):
    _app, _clock, url = ccv
    r = call(url, "GET", "/api/rest/v1/orders", hash_="0" * 128)
    assert r.status_code == 401
    body = r.json()
    assert body["status"] == 401 and body["code"].startswith("401")
    assert "x-hash" in body["developermessage"]
    assert "x-hash" not in r.headers  # an unknown caller's answer is not signed
    assert call(url, "GET", "/api/rest/v1/orders", secret="sk-other").status_code == 401
    assert call(url, "GET", "/api/rest/v1/orders", public="someone").status_code == 401


def test_missing_headers_are_401_naming_them(ccv):
    _app, _clock, url = ccv
    r = requests.get(f"{url}/api/rest/v1/orders", headers={"x-public": PUBLIC}, timeout=5)
    assert r.status_code == 401
    assert "x-date" in r.json()["developermessage"] and "x-hash" in r.json()["developermessage"]


def test_an_x_date_six_minutes_off_is_401_four_minutes_is_fine(ccv):
    _app, _clock, url = ccv
    for shift in (-360, 360):
        r = call(url, "GET", "/api/rest/v1/products", date=_date(shift))
        assert r.status_code == 401, shift
        assert "clock" in r.json()["developermessage"]
    assert call(url, "GET", "/api/rest/v1/products", date=_date(-240)).status_code == 200
    naive = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat()
    assert call(url, "GET", "/api/rest/v1/products", date=naive).status_code == 401


def test_the_server_clock_is_what_counts(ccv):
    _app, clock, url = ccv
    clock.offset = 400  # the server runs 400 s ahead: a correct client clock is now too far off
    assert call(url, "GET", "/api/rest/v1/products").status_code == 401
    assert call(url, "GET", "/api/rest/v1/products", date=_date(400)).status_code == 200


# ------------------------------------------------------------------------------------------- paging


def test_paging_follows_next_and_previous(ccv):
    _app, _clock, url = ccv
    uri, ids, pages = "/api/rest/v1/orders?start=0&size=4", [], 0
    while uri:
        r = call(url, "GET", uri)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"href", "items", "next", "previous"}
        assert (body["previous"] is None) == (pages == 0)
        ids += [o["id"] for o in body["items"]]
        pages += 1
        uri = body["next"][len(url) :] if body["next"] else None
    assert pages == 4 and len(ids) == 15 == len(set(ids)) and ids == sorted(ids)


@pytest.mark.parametrize(
    ("query", "named"),
    [("size=101", "size"), ("size=0", "size"), ("start=-1", "start"), ("size=abc", "size"), ("limit=5", "limit")],
)
def test_paging_limits_are_400_naming_the_parameter(ccv, query, named):
    _app, _clock, url = ccv
    r = call(url, "GET", f"/api/rest/v1/orders?{query}")
    assert r.status_code == 400
    assert r.json()["code"] == "400.10" and named in r.json()["developermessage"]


def test_orders_filter_by_status_and_create_date(ccv):
    app, _clock, url = ccv
    r = call(url, "GET", "/api/rest/v1/orders?status=7&size=100")
    assert r.status_code == 200
    statuses = {o["status"] for o in r.json()["items"]}
    assert statuses == {7} and all(o["is_completed"] and o["paid"] for o in r.json()["items"])
    today = app.now().date()
    since = (today - dt.timedelta(days=2)).isoformat()
    recent = call(url, "GET", f"/api/rest/v1/orders?min_create_date={since}&size=100").json()["items"]
    assert len(recent) == 3 and all(o["create_date"][:10] >= since for o in recent)
    assert call(url, "GET", "/api/rest/v1/orders?status=15").status_code == 400
    assert call(url, "GET", "/api/rest/v1/orders?min_create_date=02-03-2026").status_code == 400


def test_order_rows_and_resources(ccv):
    _app, _clock, url = ccv
    order = call(url, "GET", "/api/rest/v1/orders/8000001").json()
    assert order["orderrows"]["href"].endswith("/api/rest/v1/orders/8000001/orderrows")
    rows = call(url, "GET", "/api/rest/v1/orders/8000001/orderrows").json()["items"]
    assert rows and all(r["order_id"] == 8000001 and r["product_number"] for r in rows)
    assert sum(round(r["price"] * r["count"], 2) for r in rows) == pytest.approx(order["total_orderrow_price"])
    assert call(url, "GET", "/api/rest/v1/orders/9999999").status_code == 404
    assert call(url, "GET", "/api/rest/v1/nonsense").json()["code"] == "404.20"
    assert call(url, "DELETE", "/api/rest/v1/orders/8000001").json()["code"] == "405.10"


# ------------------------------------------------------------------------------------------- products


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"price": "9.95"}, "'price' must be a number, got string"),
        ({"price": 9.999}, "'price' has more than 2 decimals"),
        ({"stock": -1}, "'stock' must be 0 or more"),
        ({"stockenabled": "yes"}, "'stockenabled' must be a boolean"),
        ({"taxtariff": "high"}, "'taxtariff' must be one of"),
        ({"colour": "red"}, "'colour' is not a field of products"),
        ({"id": 5}, "'id' is read-only"),
        ({"name": ""}, "'name' must be a non-empty string"),
        ({}, "no fields"),
    ],
)
def test_patch_validation_names_the_field(ccv, body, named):
    _app, _clock, url = ccv
    r = call(url, "PATCH", "/api/rest/v1/products/500001", body)
    assert r.status_code == 400, r.text
    assert named in r.json()["developermessage"]


def test_patch_changes_the_product_and_answers_204(ccv):
    _app, _clock, url = ccv
    r = call(url, "PATCH", "/api/rest/v1/products/500001", {"name": "Espresso 250 g", "price": 9.5, "stock": 3})
    assert r.status_code == 204 and r.content == b""
    prod = next(p for p in _shop(url)["products"] if p["id"] == 500001)
    assert (prod["name"], prod["price_incl"], prod["stock"]) == ("Espresso 250 g", "9.50", "3")


def test_stock_on_a_product_ccv_does_not_manage_is_422(ccv):
    _app, _clock, url = ccv
    unmanaged = next(p for p in _shop(url)["products"] if not p["manage_stock"])
    r = call(url, "PATCH", f"/api/rest/v1/products/{unmanaged['id']}", {"stock": 5})
    assert r.status_code == 422 and "stockenabled" in r.json()["developermessage"]
    r = call(url, "PATCH", f"/api/rest/v1/products/{unmanaged['id']}", {"stockenabled": True, "stock": 5})
    assert r.status_code == 204


def test_patch_and_post_need_json(ccv):
    _app, _clock, url = ccv
    r = call(url, "PATCH", "/api/rest/v1/products/500001", {"name": "x"}, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert call(url, "PATCH", "/api/rest/v1/products", {"name": "x"}).status_code == 405


def test_post_requires_name_productnumber_price(ccv):
    _app, _clock, url = ccv
    r = call(url, "POST", "/api/rest/v1/products", {"name": "Nieuw"})
    assert r.status_code == 400 and "productnumber, price" in r.json()["developermessage"]
    r = call(url, "POST", "/api/rest/v1/products", {"name": "Nieuw", "productnumber": "NW-1", "price": 2.5})
    assert r.status_code == 201 and r.json()["productnumber"] == "NW-1"
    found = call(url, "GET", "/api/rest/v1/products?productnumber=NW-1").json()["items"]
    assert [p["id"] for p in found] == [r.json()["id"]]


def test_reserved_stock_comes_from_status_14_orders(ccv):
    _app, _clock, url = ccv
    requests.post(
        f"{url}/_sandbox/shops/standin",
        json={"orders": [{"status": 14, "rows": [{"productnumber": "AC-MOK-350", "count": 3}]}]},
        timeout=5,
    ).raise_for_status()
    shop = _shop(url)
    mok = next(p for p in shop["products"] if p["sku"] == "AC-MOK-350")
    reserved = sum(
        float(r["count"])
        for o in shop["orders"]
        if o["status"] == 14
        for r in o["rows"]
        if r["product_number"] == "AC-MOK-350"
    )
    assert float(mok["reserved"]) == reserved >= 3
    assert float(mok["available"]) == float(mok["stock"]) - reserved


# ------------------------------------------------------------------------------------------- 429


def test_per_method_and_resource_limit_is_429_10(ccv):
    _app, clock, url = ccv
    requests.post(f"{url}/_sandbox/limits", json={"per_minute": 2}, timeout=5).raise_for_status()
    assert call(url, "GET", "/api/rest/v1/products").status_code == 200
    assert call(url, "GET", "/api/rest/v1/products").status_code == 200
    r = call(url, "GET", "/api/rest/v1/products")
    assert r.status_code == 429
    body = r.json()
    assert (body["status"], body["code"]) == (429, "429.10")
    assert "Each method in each resource" in body["developermessage"]
    assert 1 <= int(r.headers["Retry-After"]) <= 60 and r.headers["X-RateLimit-Remaining"] == "0"
    # another method or resource has its own budget
    assert call(url, "GET", "/api/rest/v1/orders").status_code == 200
    assert call(url, "PATCH", "/api/rest/v1/products/500001", {"name": "x"}).status_code == 204
    clock.offset = 61  # a minute later the budget is back (4-minute-old x-dates are still fine)
    assert call(url, "GET", "/api/rest/v1/products").status_code == 200


def test_total_limit_is_429_11(ccv):
    _app, _clock, url = ccv
    requests.post(f"{url}/_sandbox/limits", json={"total_per_minute": 3}, timeout=5).raise_for_status()
    for uri in ("/api/rest/v1/products", "/api/rest/v1/orders", "/api/rest/v1/categories"):
        assert call(url, "GET", uri).status_code == 200
    r = call(url, "GET", "/api/rest/v1/orders/8000001")
    assert r.status_code == 429 and r.json()["code"] == "429.11"
    assert requests.post(f"{url}/_sandbox/limits", json={"per_minute": 0}, timeout=5).status_code == 400
