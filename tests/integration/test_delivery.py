"""Delivery strategies against the real store: keyed upsert finishes what it can, create-if-absent
creates once and remembers the target's id. The target is a fake (these isolate the strategy); the
real Planday stand-in is exercised in tests/e2e."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from tillflow.delivery.create_if_absent import deliver_create_if_absent
from tillflow.delivery.keyed import deliver_keyed
from tillflow.errors import DeliveryRefused, RemoteError, TransientError
from tillflow.records import DeliveryResult, TargetRow
from tillflow.specs import parse_settings
from tillflow.sync import WorkItem

DAY0 = date(2026, 11, 1)


class FakeKeyedTarget:
    name = "fake"

    def __init__(self, refuse=(), fail_transient_at=None):
        self.sent: list[TargetRow] = []
        self.refuse = set(refuse)
        self.fail_transient_at = fail_transient_at
        self.ids = 0

    def existing(self, kind, keys, window):
        return {}

    def deliver(self, kind, row):
        if (row.target_key, row.business_date) in self.refuse:
            raise RemoteError(f"fake: HTTP 400 for unit {row.target_key} on {row.business_date}: too big", status=400)
        if self.fail_transient_at is not None and len(self.sent) == self.fail_transient_at:
            raise TransientError("fake: HTTP 503 after 6 attempts")
        self.sent.append(row)
        self.ids += 1
        return DeliveryResult(status="delivered", target_id=f"T{self.ids}")


@pytest.fixture
def account(store):
    return store.upsert_account("ajour_to_planday", "fifty", name="Fifty", conn_id="x", settings=parse_settings({}))


def _fifty_rows(store, account):
    rows = [
        TargetRow(target_key=unit, business_date=DAY0 + timedelta(days=d), amount=Decimal("100.00") + d)
        for d in range(25)
        for unit in ("1001", "1002")
    ]
    store.upsert_revenue(account.id, rows, mode="overwrite", run_id="r")
    return rows


def _item(account, mode="overwrite"):
    return WorkItem(account.id, account.key, account.name, "revenue", DAY0, DAY0 + timedelta(days=24), mode)


def test_one_refused_row_of_fifty_is_recorded_and_the_other_49_go(store, account):
    _fifty_rows(store, account)
    store.activity_start("d", "r", account.id, "revenue", _item(account).window)
    refused_day = DAY0 + timedelta(days=7)
    target = FakeKeyedTarget(refuse={("1002", refused_day)})
    with pytest.raises(DeliveryRefused) as exc:
        deliver_keyed(store, _item(account), target, kind="revenue", hourly=False, run_id="r")
    assert len(target.sent) == 49
    assert "refused 1 of 50" in str(exc.value) and "too big" in str(exc.value)
    states = {(d["target_key"], d["business_date"]): d for d in store.delivery_state(account.id)}
    assert states[("1002", refused_day)]["status"] == "failed"
    assert (
        "HTTP 400" in states[("1002", refused_day)]["detail"] and "too big" in states[("1002", refused_day)]["detail"]
    )
    assert sum(d["status"] == "delivered" for d in states.values()) == 49
    assert {d["target_id"] for d in states.values() if d["status"] == "delivered"} == {f"T{i}" for i in range(1, 50)}
    (act,) = store.activity(run_id="r")
    assert (act["delivered"], act["failed"]) == (49, 1)
    # the next run sends only the refused row again, never the 49
    again = FakeKeyedTarget()
    assert deliver_keyed(store, _item(account), again, kind="revenue", hourly=False, run_id="r2")["delivered"] == 1
    assert [(r.target_key, r.business_date) for r in again.sent] == [("1002", refused_day)]


def test_a_transient_failure_stops_the_account_and_leaves_the_rest_pending(store, account):
    _fifty_rows(store, account)
    store.activity_start("d", "r", account.id, "revenue", _item(account).window)
    target = FakeKeyedTarget(fail_transient_at=10)
    with pytest.raises(TransientError):
        deliver_keyed(store, _item(account), target, kind="revenue", hourly=False, run_id="r")
    assert len(target.sent) == 10
    assert len(store.pending_deliveries(account.id)) == 40  # the failed row and the 39 never tried
    rest = FakeKeyedTarget()
    deliver_keyed(store, _item(account), rest, kind="revenue", hourly=False, run_id="r2")
    assert len(rest.sent) == 40 and not store.pending_deliveries(account.id)


def test_hourly_and_daily_flows_deliver_only_their_own_rows(store, account):
    store.upsert_revenue(
        account.id,
        [
            TargetRow(target_key="g1", business_date=DAY0, amount=Decimal("5.00")),
            TargetRow(target_key="g1", business_date=DAY0, hour=13, amount=Decimal("2.00")),
        ],
        mode="overwrite",
    )
    store.activity_start("d", "r", account.id, "revenue", _item(account).window)
    hourly = FakeKeyedTarget()
    deliver_keyed(store, _item(account), hourly, kind="revenue_hourly", hourly=True, run_id="r")
    assert [(r.hour, r.amount) for r in hourly.sent] == [(13, Decimal("2.00"))]
    daily = FakeKeyedTarget()
    deliver_keyed(store, _item(account), daily, kind="revenue", hourly=False, run_id="r")
    assert [(r.hour, r.amount) for r in daily.sent] == [(None, Decimal("5.00"))]


class FakeCatalog:
    name = "catalog"

    def __init__(self, existing=None, refuse=()):
        self.objects = dict(existing or {})
        self.refuse = set(refuse)
        self.creates = 0

    def find(self, key):
        return self.objects.get(key)

    def create(self, key, payload):
        if key in self.refuse:
            raise RemoteError(f"catalog: HTTP 422: SKU {key} has no price", status=422)
        self.creates += 1
        self.objects[key] = f"id-{key}"
        return self.objects[key]


def test_create_if_absent_creates_once_skips_existing_and_finishes_what_it_can(store, account):
    objects = [(f"SKU{i}", {"name": f"Product {i}", "price": str(i)}) for i in range(5)]
    catalog = FakeCatalog(existing={"SKU1": "theirs-1"}, refuse={"SKU3"})
    with pytest.raises(DeliveryRefused, match="SKU3 has no price"):
        deliver_create_if_absent(store, account.id, "products", objects, catalog, run_id="r")
    assert catalog.creates == 3 and catalog.objects["SKU1"] == "theirs-1"
    rows = {
        r["object_key"]: r
        for r in store.conn.execute("SELECT * FROM tillflow.object_delivery WHERE account_id = %s", (account.id,))
    }
    store.conn.commit()
    assert {k: (r["status"], r["target_id"]) for k, r in rows.items()} == {
        "SKU0": ("created", "id-SKU0"),
        "SKU1": ("exists", "theirs-1"),
        "SKU2": ("created", "id-SKU2"),
        "SKU3": ("failed", None),
        "SKU4": ("created", "id-SKU4"),
    }
    # a second pass asks only about the refused one, and creates nothing twice
    catalog.refuse.clear()
    asked = []
    catalog.find = lambda key: asked.append(key) or FakeCatalog.find(catalog, key)
    counts = deliver_create_if_absent(store, account.id, "products", objects, catalog, run_id="r2")
    assert counts == {"created": 1, "exists": 0, "failed": 0} and asked == ["SKU3"] and catalog.creates == 4
