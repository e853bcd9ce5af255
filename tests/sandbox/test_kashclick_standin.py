"""The Kash.click stand-in: documented auth, the (assumed) JSON day, deterministic sales and its control endpoints."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import requests
from sandbox.kashclick import BAD_KINDS, KashclickApp, shop_id_for
from sandbox.server import _Server

DAY = "2026-03-14"


@pytest.fixture(scope="module")
def server():
    import datetime as dt

    app = KashclickApp(today=lambda: dt.date(2026, 3, 20))
    srv = _Server(("127.0.0.1", 0), app)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def url(server):
    requests.post(f"{server}/_sandbox/reset", timeout=5).raise_for_status()
    return server


def auth(url, login="shop@example.fr", password=None, as_json=False):
    fields = {"login": login, "password": password if password is not None else f"pw-{login}"}
    kwargs = {"json": fields} if as_json else {"data": fields}
    r = requests.post(f"{url}/workers/getAuthToken.php", timeout=5, **kwargs)
    assert r.status_code == 200
    return r.json()


def sales(url, body, **params):
    query = {"idboutique": body["SHOPID"], "key": body["APIKEY"], "formatExport": "json", **params}
    return requests.get(f"{url}/workers/getSales.php", params=query, timeout=5)


def day(url, d=DAY, login="shop@example.fr"):
    y, m, dd = d.split("-")
    return sales(url, auth(url, login), d=dd, m=m, y=y).json(parse_float=Decimal)


def test_auth_answers_the_documented_shape_by_form_and_json(url):
    form, js = auth(url), auth(url, as_json=True)
    assert form["result"] == "OK" and form["SHOPID"] == shop_id_for("shop@example.fr")
    assert form == js  # the account token is stable


def test_a_wrong_password_is_ko(url):
    assert auth(url, password="nope") == {"result": "KO", "message": "Invalid login or password"}
    assert requests.get(f"{url}/_sandbox/state", timeout=5).json()["refused_logins"] == 1


def test_sales_refuse_a_wrong_key_or_format(url):
    body = auth(url)
    assert sales(url, {**body, "APIKEY": "x"}, d="14", m="03", y="2026").json()["result"] == "KO"
    r = sales(url, body, d="14", m="03", y="2026", formatExport="CSV")
    assert r.status_code == 400 and "json" in r.json()["message"]
    r = sales(url, body, d="14", m="03")
    assert r.status_code == 400 and "go together" in r.json()["message"]


def test_no_date_is_the_previous_day(url):
    assert sales(url, auth(url)).json()["date"] == "2026-03-19"


def test_a_day_is_deterministic_consistent_and_mixed(url):
    a, b = day(url), day(url)
    assert a == b and a["result"] == "OK"
    assert len(a["orders"]) == 12
    rates = {line["vatRate"] for o in a["orders"] for line in o["lines"]}
    assert rates <= {20, 10, Decimal("5.5"), Decimal("2.1")} and len(rates) >= 3
    for o in a["orders"]:
        assert Decimal(o["totalIncl"]) == sum(Decimal(line["totalIncl"]) for line in o["lines"])
        paid = sum(Decimal(p["amount"]) for p in a["payments"] if p["orderId"] == o["id"])
        assert paid == Decimal(o["totalIncl"])
    assert {c["registerId"] for c in a["closings"]} <= {"R1", "R2"}
    for c in a["closings"]:
        for m in c["methods"]:
            assert len(m["expected"].split(".")[1]) == 2
    other = day(url, login="other@example.fr")
    assert other["orders"] != a["orders"]


def test_future_days_have_no_sales(url):
    assert day(url, "2026-03-25")["orders"] == []


def test_some_days_have_a_cash_difference_and_two_method_payments(url):
    diffs, split = 0, 0
    for d in range(1, 15):
        body = day(url, f"2026-03-{d:02d}")
        diffs += sum(m["expected"] != m["counted"] for c in body["closings"] for m in c["methods"])
        counts: dict[str, int] = {}
        for p in body["payments"]:
            counts[p["orderId"]] = counts.get(p["orderId"], 0) + 1
        split += sum(1 for n in counts.values() if n == 2)
    assert diffs > 0 and split > 0


def control(url, body, login="shop@example.fr"):
    r = requests.post(f"{url}/_sandbox/shops/{login}", json=body, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def test_modify_and_cancel_an_order(url):
    first = day(url)["orders"][0]
    control(
        url,
        {
            "date": DAY,
            "modify_orders": {
                first["id"]: {
                    "lines": [
                        {"label": "X", "quantity": "1", "unitPriceIncl": "3.00", "vatRate": 20, "totalIncl": "3.00"}
                    ]
                }
            },
            "cancel_orders": [day(url)["orders"][1]["id"]],
        },
    )
    body = day(url)
    changed = body["orders"][0]
    assert changed["totalIncl"] == "3.00" and changed["updatedAt"] > first["updatedAt"]
    assert sum(Decimal(p["amount"]) for p in body["payments"] if p["orderId"] == first["id"]) == Decimal("3.00")
    assert body["orders"][1]["status"] == "cancelled"
    assert {p["status"] for p in body["payments"] if p["orderId"] == body["orders"][1]["id"]} == {"cancelled"}
    readback = requests.get(f"{url}/_sandbox/shops/shop@example.fr/day/{DAY}", timeout=5).json(parse_float=Decimal)
    assert readback == body


def test_a_closing_recounted_afterwards_keeps_its_expected_amounts(url):
    before = day(url)["closings"][0]
    cash = next(m for m in before["methods"] if m["method"] == "cash")
    control(url, {"date": DAY, "recount_closings": {before["id"]: {"cash": "0.50"}}})
    after = day(url)["closings"][0]
    assert after["id"] == before["id"]
    assert [(m["method"], m["expected"]) for m in after["methods"]] == [
        (m["method"], m["expected"]) for m in before["methods"]
    ]
    assert {m["method"]: m["counted"] for m in after["methods"]} == {
        **{m["method"]: m["counted"] for m in before["methods"]},
        "cash": "0.50",
    }
    assert cash["counted"] != "0.50"
    bad = {"date": DAY, "recount_closings": {before["id"]: {"cash": 1}}}
    assert requests.post(f"{url}/_sandbox/shops/shop@example.fr", json=bad, timeout=5).status_code == 400


def test_bad_records_and_added_orders_are_served_as_given(url):
    control(url, {"date": DAY, "bad_records": list(BAD_KINDS), "add_orders": [{"id": "raw-1", "whatever": True}]})
    body = day(url)
    ids = {o.get("id") for o in body["orders"]}
    assert "raw-1" in ids and "20260314-lines_not_adding_up" in ids
    assert any(p["method"] == "bitcoin" for p in body["payments"])
    assert any(p["amount"] == "12,34,5" for p in body["payments"])
    assert any(c["registerId"] == "R9" for c in body["closings"])
    assert any(line["vatRate"] == 7 for o in body["orders"] for line in o.get("lines", []))
    assert day(url, "2026-03-13")["orders"][0]["id"].startswith("20260313")  # other days untouched


def test_volume_and_refused_control_bodies(url):
    assert control(url, {"orders_per_day": 300})["orders_per_day"] == 300
    assert len(day(url)["orders"]) == 300
    for bad in ({"orders_per_day": -1}, {"bad_records": ["nope"], "date": DAY}, {"cancel_orders": ["x"]}, {"x": 1}):
        r = requests.post(f"{url}/_sandbox/shops/shop@example.fr", json=bad, timeout=5)
        assert r.status_code == 400, bad
