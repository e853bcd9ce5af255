"""Retention against the real store: old rows go in batches, recent rows stay, bad settings are refused;
and raw landing is deduplicated by its unique key even when two landers race."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from tillflow.errors import ConfigError
from tillflow.maintenance import DEFAULT_RETENTION_DAYS, purge, retention
from tillflow.records import RawPage, Reject, TargetRow
from tillflow.sources.base import Window
from tillflow.specs import parse_settings
from tillflow.store import Store

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
W = Window(date(2026, 11, 1), date(2026, 11, 2))


@pytest.fixture
def account(store):
    return store.upsert_account("ajour_to_planday", "old-new", name="Old New", conn_id="x", settings=parse_settings({}))


def _age(store, table, column, row_id, days):
    store.conn.execute(f"UPDATE tillflow.{table} SET {column} = %s WHERE id = %s", (NOW - timedelta(days=days), row_id))
    store.conn.commit()


def test_purge_deletes_only_rows_past_their_retention_in_batches(store, account):
    old_page = store.land(account.id, "ajour", W, RawPage(flow="revenue", request={}, body=b"old"), run_id="r")
    new_page = store.land(account.id, "ajour", W, RawPage(flow="revenue", request={}, body=b"new"), run_id="r")
    _age(store, "raw_landing", "fetched_at", old_page, 401)
    _age(store, "raw_landing", "fetched_at", new_page, 399)
    batches = [store.put_batch(account.id, "revenue", W, [], run_id=str(i)) for i in range(5)]
    for b in batches[:3]:
        _age(store, "batches", "created_at", b, 15)
    store.add_rejects(
        account.id,
        "revenue",
        [Reject(reason="bad", payload={}, ref=str(i)) for i in range(2)],
        landing_id=None,
        run_id="r",
    )
    rejects = [r["id"] for r in store.rejects(account.id)]
    _age(store, "rejects", "created_at", rejects[0], 181)
    for i, days in enumerate((401, 1)):
        store.activity_start("d", f"run{i}", account.id, "revenue", W)
        row = store.activity(run_id=f"run{i}")[0]
        _age(store, "activity", "started_at", row["id"], days)
    store.upsert_revenue(account.id, [TargetRow(target_key="1", business_date=W.start, amount=1)], mode="overwrite")

    deleted = purge(store.conn, batch_size=2, now=NOW)
    assert deleted == {"raw_landing": 1, "batches": 3, "activity": 1, "rejects": 1}
    assert [i for i, _ in store.landed([old_page, new_page])] == [new_page]
    assert [r["id"] for r in store.rejects(account.id)] == rejects[1:]
    assert [r["run_id"] for r in store.activity(account_id=account.id)] == ["run1"]
    assert len(store.revenue(account.id)) == 1  # canonical data is never purged
    assert purge(store.conn, now=NOW) == dict.fromkeys(DEFAULT_RETENTION_DAYS, 0)  # a second pass: nothing


@pytest.mark.parametrize(
    "days, words",
    [
        ({"raw_landing": 0}, "retention.raw_landing: must be a whole number of days >= 1, got 0"),
        ({"activity": "30"}, "retention.activity"),
        ({"revenue": 30}, "unknown table 'revenue'"),
    ],
)
def test_a_bad_retention_is_refused_naming_the_table(days, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        retention(days)


def test_two_concurrent_landers_of_the_same_page_get_one_row(store, account, pg_url):
    page = RawPage(flow="revenue", request={"path": "/x"}, body=b'{"days": []}')
    ids: list[int] = []
    barrier = threading.Barrier(4)

    def land():
        with Store.open(pg_url) as own:
            barrier.wait()
            ids.append(own.land(account.id, "ajour", W, page, run_id="r"))

    threads = [threading.Thread(target=land) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 4
    n = store.conn.execute("SELECT count(*) AS n FROM tillflow.raw_landing").fetchone()["n"]
    store.conn.commit()
    assert n == 1


def test_purging_landings_never_collides_on_the_rejects_that_pointed_at_them(store, account):
    """Rejects outlive their page (ON DELETE SET NULL); the same reject from two purged pages must not
    trip the rejects' unique key (NULLS NOT DISTINCT) and stop the purge."""
    pages = [
        store.land(account.id, "ajour", W, RawPage(flow="revenue", request={}, body=body), run_id="r")
        for body in (b"a", b"b", b"c")
    ]
    for landing_id in pages:
        store.add_rejects(
            account.id,
            "revenue",
            [Reject(reason="bad amount", payload={}, ref="o1")],
            landing_id=landing_id,
            run_id="r",
        )
        _age(store, "raw_landing", "fetched_at", landing_id, 500)
    store.add_rejects(
        account.id, "revenue", [Reject(reason="other", payload={}, ref="o1")], landing_id=pages[0], run_id="r"
    )

    deleted = purge(store.conn, {"rejects": 1000}, batch_size=2, now=NOW)
    assert deleted["raw_landing"] == 3
    left = [(r["landing_id"], r["ref"], r["reason"]) for r in store.rejects(account.id)]
    assert sorted(left) == [(None, "o1", "bad amount"), (None, "o1", "other")]  # one of each kept, none lost
