"""The PostgreSQL store against a real server: migrations, accounts, mappings, the revenue merge and its
write modes, delivery state, raw landing, rejects, the activity log and the map → upsert hand-off."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pytest
from tillflow.errors import ConfigError
from tillflow.mapping import MappingRule
from tillflow.records import RawPage, Reject, TargetRow
from tillflow.sources.base import Window
from tillflow.specs import AccountSettings
from tillflow.store import Store, UpsertResult
from tillflow.store.migrate import migrate, migration_files

INTEGRATION = "ajour_to_planday"
D1, D2, D3, D4 = date(2026, 11, 16), date(2026, 11, 17), date(2026, 11, 18), date(2026, 11, 19)


def add_account(store: Store, key: str = "bar-nord", integration: str = INTEGRATION, **settings):
    return store.upsert_account(
        integration,
        key,
        name=f"Name of {key}",
        conn_id=f"ajour_{key}",
        target_conn_id=f"planday_{key}",
        settings=AccountSettings(**settings),
    )


def row(key: str, day: date, amount: str, hour: int | None = None) -> TargetRow:
    return TargetRow(target_key=key, business_date=day, hour=hour, amount=Decimal(amount))


def values(store: Store, account_id: int) -> dict[tuple, tuple[Decimal, str]]:
    return {
        (r["target_key"], r["business_date"], r["hour"]): (r["amount"], r["origin"]) for r in store.revenue(account_id)
    }


def count(store: Store, sql: str, *args) -> int:
    n = store.conn.execute(sql, args).fetchone()["n"]
    store.conn.commit()
    return n


# ---------------------------------------------------------------- migrations


def test_migrations_are_applied_once(store, pg_url):
    files = migration_files()
    assert files, "include/sql holds the migrations"
    with Store.open(pg_url, migrate_schema=True) as again:  # migrating again: nothing to do, nothing doubled
        recorded = again.conn.execute(
            "SELECT version, name FROM tillflow.schema_migrations ORDER BY version"
        ).fetchall()
        again.conn.commit()
    assert [(r["version"], r["name"]) for r in recorded] == [(v, n) for v, n, _ in files]
    with psycopg.connect(pg_url) as plain:
        assert migrate(plain) == []
    assert count(store, "SELECT count(*) AS n FROM tillflow.schema_migrations") == len(files)


def test_migrate_on_a_store_connection_is_a_no_op(store):
    assert migrate(store.conn) == []


def test_opening_the_store_never_migrates_ensure_schema_does_once(pg_url):
    import uuid

    from tillflow.store import ensure_schema

    name = f"tillflow_fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(pg_url, dbname=name)
    try:
        with Store.open(url) as store:
            found = store.conn.execute("SELECT to_regclass('tillflow.schema_migrations') AS t").fetchone()["t"]
        assert found is None  # opening does not touch the schema
        assert ensure_schema(url) == [v for v, _, _ in migration_files()]
        assert ensure_schema(url) == []  # once per process: no second migrate, not even a lock
        with Store.open(url) as store:
            assert store.conn.execute("SELECT count(*) AS n FROM tillflow.schema_migrations").fetchone()["n"] == len(
                migration_files()
            )
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- accounts


def test_upsert_account_creates_then_updates_the_same_row(store):
    first = add_account(store, lookback_days=2, run_time="07:00", weekdays=["fri"])
    assert first.key == "bar-nord" and first.conn_id == "ajour_bar-nord" and first.target_conn_id == "planday_bar-nord"
    assert first.status == "ok"
    got = store.get_account(INTEGRATION, "bar-nord")
    assert got == first
    assert got.settings.weekdays == ["fri"] and got.settings.lookback_days == 2

    second = add_account(store, lookback_days=5, vat="excl")
    assert second.id == first.id
    assert store.get_account(INTEGRATION, "bar-nord").settings.lookback_days == 5
    assert store.account_by_id(first.id).settings.vat == "excl"
    assert count(store, "SELECT count(*) AS n FROM tillflow.accounts") == 1


def test_unknown_account_names_the_key_and_lists_the_known_ones(store):
    add_account(store, "cafe-syd")
    add_account(store, "bar-nord")
    add_account(store, "other-one", integration="kassatellen_to_eitje")
    assert store.find_account(INTEGRATION, "nope") is None
    with pytest.raises(ConfigError) as exc:
        store.get_account(INTEGRATION, "nope")
    assert str(exc.value) == "account: unknown account 'nope' for ajour_to_planday; known: bar-nord, cafe-syd"
    with pytest.raises(ConfigError, match="known: none"):
        store.get_account("mpluskassa_to_shiftbase", "nope")
    with pytest.raises(ConfigError, match="no account with id 999"):
        store.account_by_id(999)


def test_list_accounts_filters_by_integration_and_sorts_by_key(store):
    add_account(store, "zulu")
    add_account(store, "alpha")
    add_account(store, "elsewhere", integration="kassatellen_to_eitje")
    assert [a.key for a in store.list_accounts(INTEGRATION)] == ["alpha", "zulu"]
    assert [(a.integration, a.key) for a in store.list_accounts()] == [
        (INTEGRATION, "alpha"),
        (INTEGRATION, "zulu"),
        ("kassatellen_to_eitje", "elsewhere"),
    ]


def test_update_settings_and_status(store):
    account = add_account(store)
    store.update_settings(account.id, account.settings.model_copy(update={"active": False}))
    store.set_status(account.id, "needs_mapping", "unmapped location(s): 3")
    got = store.account_by_id(account.id)
    assert got.settings.active is False
    assert (got.status, got.status_detail) == ("needs_mapping", "unmapped location(s): 3")


# ---------------------------------------------------------------- mappings


def test_mappings_set_overwrite_inactive_remove(store):
    account = add_account(store)
    other = add_account(store, "cafe-syd")
    store.set_mapping(account.id, "location", "bar", "U1")
    store.set_mapping(account.id, "location", "terrace", "U1")
    store.set_mapping(other.id, "location", "bar", "U9")
    store.set_mapping(account.id, "employee", "bar", "E1")
    assert store.mappings(account.id, "location") == {
        "bar": MappingRule("bar", "U1"),
        "terrace": MappingRule("terrace", "U1"),
    }

    store.set_mapping(account.id, "location", "bar", "U2")  # overwrite, not a second rule
    store.set_mapping(account.id, "location", "terrace", None)  # explicitly inactive
    rules = store.mappings(account.id, "location")
    assert rules["bar"].target_key == "U2"
    assert rules["terrace"].inactive
    assert len(rules) == 2

    assert store.remove_mapping(account.id, "location", "bar") is True
    assert store.remove_mapping(account.id, "location", "bar") is False
    assert set(store.mappings(account.id, "location")) == {"terrace"}
    assert store.mappings(other.id, "location") == {"bar": MappingRule("bar", "U9")}
    assert store.mappings(account.id, "employee") == {"bar": MappingRule("bar", "E1")}


# ---------------------------------------------------------------- upsert_revenue


def test_a_second_identical_run_changes_nothing(store):
    account = add_account(store)
    rows = [row("U1", D1, "100.10"), row("U1", D2, "0.30"), row("U2", D1, "55.00"), row("U2", D1, "5.00", hour=12)]
    first = store.upsert_revenue(account.id, rows, mode="keep_manual", run_id="run1")
    assert first == UpsertResult(inserted=4)
    snap = store.snapshot(account.id)
    for mode in ("keep_manual", "overwrite", "insert_only"):
        again = store.upsert_revenue(account.id, rows, mode=mode, run_id=f"run2-{mode}")
        assert again == UpsertResult(unchanged=4), mode
        assert again.upserted == 0
        assert store.snapshot(account.id) == snap, mode


def test_a_changed_value_updates_only_that_row(store):
    account = add_account(store)
    store.upsert_revenue(account.id, [row("U1", D1, "10.00"), row("U1", D2, "20.00")], mode="keep_manual", run_id="r1")
    before = {r[:3]: r for r in store.snapshot(account.id)["revenue"]}
    result = store.upsert_revenue(
        account.id, [row("U1", D1, "10.00"), row("U1", D2, "20.01")], mode="keep_manual", run_id="r2"
    )
    assert result == UpsertResult(updated=1, unchanged=1)
    after = {r[:3]: r for r in store.snapshot(account.id)["revenue"]}
    assert after[("U1", D1, -1)] == before[("U1", D1, -1)]  # untouched, updated_at included
    assert after[("U1", D2, -1)][3] == Decimal("20.01")
    assert after[("U1", D2, -1)][5] > before[("U1", D2, -1)][5]


@pytest.fixture
def hand_entered(store):
    """D1 entered by hand, D2 imported from Excel, D3 written by the integration."""
    account = add_account(store)
    store.set_revenue_by_hand(account.id, "U1", D1, Decimal("100.00"), origin="manual")
    store.set_revenue_by_hand(account.id, "U1", D2, Decimal("200.00"), origin="excel")
    store.upsert_revenue(account.id, [row("U1", D3, "300.00")], mode="keep_manual", run_id="r0")
    assert values(store, account.id) == {
        ("U1", D1, None): (Decimal("100.00"), "manual"),
        ("U1", D2, None): (Decimal("200.00"), "excel"),
        ("U1", D3, None): (Decimal("300.00"), "integration"),
    }
    return account


NEW = [row("U1", D1, "111.00"), row("U1", D2, "222.00"), row("U1", D3, "333.00"), row("U1", D4, "444.00")]


def test_overwrite_replaces_hand_entered_values(store, hand_entered):
    result = store.upsert_revenue(hand_entered.id, NEW, mode="overwrite", run_id="r1")
    assert result == UpsertResult(inserted=1, updated=3)
    assert values(store, hand_entered.id) == {
        ("U1", D1, None): (Decimal("111.00"), "integration"),
        ("U1", D2, None): (Decimal("222.00"), "integration"),
        ("U1", D3, None): (Decimal("333.00"), "integration"),
        ("U1", D4, None): (Decimal("444.00"), "integration"),
    }


def test_insert_only_keeps_every_existing_value_and_inserts_new_days(store, hand_entered):
    result = store.upsert_revenue(hand_entered.id, NEW, mode="insert_only", run_id="r1")
    assert result == UpsertResult(inserted=1, kept=3)
    assert values(store, hand_entered.id) == {
        ("U1", D1, None): (Decimal("100.00"), "manual"),
        ("U1", D2, None): (Decimal("200.00"), "excel"),
        ("U1", D3, None): (Decimal("300.00"), "integration"),
        ("U1", D4, None): (Decimal("444.00"), "integration"),
    }
    snap = store.snapshot(hand_entered.id)
    assert store.upsert_revenue(hand_entered.id, NEW, mode="insert_only", run_id="r2") == UpsertResult(
        unchanged=1, kept=3
    )
    assert store.snapshot(hand_entered.id) == snap


def test_keep_manual_updates_integration_values_and_keeps_manual_and_excel(store, hand_entered):
    result = store.upsert_revenue(hand_entered.id, NEW, mode="keep_manual", run_id="r1")
    assert result == UpsertResult(inserted=1, updated=1, kept=2)
    assert values(store, hand_entered.id) == {
        ("U1", D1, None): (Decimal("100.00"), "manual"),
        ("U1", D2, None): (Decimal("200.00"), "excel"),
        ("U1", D3, None): (Decimal("333.00"), "integration"),
        ("U1", D4, None): (Decimal("444.00"), "integration"),
    }
    snap = store.snapshot(hand_entered.id)
    assert store.upsert_revenue(hand_entered.id, NEW, mode="keep_manual", run_id="r2") == UpsertResult(
        unchanged=2, kept=2
    )
    assert store.snapshot(hand_entered.id) == snap


def test_a_hand_value_equal_to_the_pos_value_stays_manual(store, hand_entered):
    result = store.upsert_revenue(hand_entered.id, [row("U1", D1, "100.00")], mode="overwrite", run_id="r1")
    assert result == UpsertResult(unchanged=1)
    assert values(store, hand_entered.id)[("U1", D1, None)] == (Decimal("100.00"), "manual")


def test_a_hand_entry_overrides_an_integration_value(store, hand_entered):
    store.set_revenue_by_hand(hand_entered.id, "U1", D3, Decimal("310.00"), origin="manual")
    assert values(store, hand_entered.id)[("U1", D3, None)] == (Decimal("310.00"), "manual")
    with pytest.raises(ConfigError, match="origin: must be manual or excel, got 'integration'"):
        store.set_revenue_by_hand(hand_entered.id, "U1", D3, Decimal("1.00"), origin="integration")


def test_a_bad_write_mode_is_a_config_error_and_writes_nothing(store):
    account = add_account(store)
    with pytest.raises(ConfigError) as exc:
        store.upsert_revenue(account.id, [row("U1", D1, "1.00")], mode="replace")
    assert str(exc.value).startswith("write_mode: ") and "'replace'" in str(exc.value)
    assert store.revenue(account.id) == []


def test_an_empty_batch_does_nothing(store):
    account = add_account(store)
    assert store.upsert_revenue(account.id, [], mode="overwrite") == UpsertResult()


def test_hourly_rows_coexist_with_the_daily_row(store):
    account = add_account(store)
    rows = [row("U1", D1, "100.00"), row("U1", D1, "40.00", hour=10), row("U1", D1, "60.00", hour=0)]
    assert store.upsert_revenue(account.id, rows, mode="overwrite", run_id="r1") == UpsertResult(inserted=3)
    assert values(store, account.id) == {
        ("U1", D1, None): (Decimal("100.00"), "integration"),
        ("U1", D1, 10): (Decimal("40.00"), "integration"),
        ("U1", D1, 0): (Decimal("60.00"), "integration"),
    }
    raw_hours = store.conn.execute(
        "SELECT hour FROM tillflow.revenue WHERE account_id = %s ORDER BY hour", (account.id,)
    ).fetchall()
    store.conn.commit()
    assert [r["hour"] for r in raw_hours] == [-1, 0, 10]
    # a hand entry for hour 10 touches that hour only
    store.set_revenue_by_hand(account.id, "U1", D1, Decimal("41.00"), hour=10)
    got = values(store, account.id)
    assert got[("U1", D1, 10)] == (Decimal("41.00"), "manual")
    assert got[("U1", D1, None)] == (Decimal("100.00"), "integration")
    assert store.upsert_revenue(account.id, rows, mode="keep_manual", run_id="r2") == UpsertResult(unchanged=2, kept=1)


def test_accounts_do_not_see_each_others_revenue(store):
    a = add_account(store, "bar-nord")
    b = add_account(store, "cafe-syd")
    store.upsert_revenue(a.id, [row("U1", D1, "1.00")], mode="overwrite")
    assert store.upsert_revenue(b.id, [row("U1", D1, "2.00")], mode="overwrite") == UpsertResult(inserted=1)
    assert values(store, a.id) == {("U1", D1, None): (Decimal("1.00"), "integration")}
    assert values(store, b.id) == {("U1", D1, None): (Decimal("2.00"), "integration")}


def test_revenue_window_filter(store):
    account = add_account(store)
    store.upsert_revenue(account.id, [row("U1", d, "1.00") for d in (D1, D2, D3, D4)], mode="overwrite")
    assert [r["business_date"] for r in store.revenue(account.id, Window(D2, D3))] == [D2, D3]


# ---------------------------------------------------------------- delivery state


def pending_keys(store: Store, account_id: int, **kw) -> list[tuple]:
    return [(r.target_key, r.business_date, r.hour, r.amount) for r in store.pending_deliveries(account_id, **kw)]


def test_only_changed_rows_are_pending(store):
    account = add_account(store)
    rows = [row("U1", D1, "10.00"), row("U1", D2, "20.00"), row("U1", D2, "5.00", hour=9)]
    store.upsert_revenue(account.id, rows, mode="overwrite")
    assert pending_keys(store, account.id) == [
        ("U1", D1, None, Decimal("10.00")),
        ("U1", D2, None, Decimal("20.00")),
        ("U1", D2, 9, Decimal("5.00")),
    ]
    for r in store.pending_deliveries(account.id):
        store.record_delivery(account.id, r, "delivered", run_id="r1")
    assert pending_keys(store, account.id) == []

    store.upsert_revenue(account.id, [row("U1", D2, "21.00")], mode="overwrite")
    assert pending_keys(store, account.id) == [("U1", D2, None, Decimal("21.00"))]
    store.set_revenue_by_hand(account.id, "U1", D1, Decimal("11.00"))
    assert [k[1] for k in pending_keys(store, account.id)] == [D1, D2]


def test_failed_rows_are_pending_again_and_attempts_count(store):
    account = add_account(store)
    store.upsert_revenue(account.id, [row("U1", D1, "10.00")], mode="overwrite")
    [pending] = store.pending_deliveries(account.id)
    store.record_delivery(account.id, pending, "failed", detail="503 from Planday", run_id="r1")
    assert pending_keys(store, account.id) == [("U1", D1, None, Decimal("10.00"))]
    store.record_delivery(account.id, pending, "delivered", run_id="r2")
    assert pending_keys(store, account.id) == []
    [state] = store.delivery_state(account.id)
    assert (state["status"], state["attempts"], state["hour"]) == ("delivered", 2, None)


def test_skipped_rows_are_not_pending_until_their_amount_changes(store):
    account = add_account(store)
    store.upsert_revenue(account.id, [row("U1", D1, "10.00")], mode="overwrite")
    [pending] = store.pending_deliveries(account.id)
    store.record_delivery(account.id, pending, "skipped", detail="409: no opening day")
    assert pending_keys(store, account.id) == []
    store.upsert_revenue(account.id, [row("U1", D1, "12.00")], mode="overwrite")
    assert pending_keys(store, account.id) == [("U1", D1, None, Decimal("12.00"))]


def test_force_resends_every_row_of_the_window_only(store):
    account = add_account(store)
    store.upsert_revenue(account.id, [row("U1", d, "1.00") for d in (D1, D2, D3, D4)], mode="overwrite")
    for r in store.pending_deliveries(account.id):
        store.record_delivery(account.id, r, "delivered")
    assert pending_keys(store, account.id) == []
    assert pending_keys(store, account.id, window=Window(D2, D3)) == []
    forced = pending_keys(store, account.id, window=Window(D2, D3), force=True)
    assert [k[1] for k in forced] == [D2, D3]


def test_record_delivery_truncates_long_details(store):
    account = add_account(store)
    store.upsert_revenue(account.id, [row("U1", D1, "1.00")], mode="overwrite")
    store.record_delivery(account.id, row("U1", D1, "1.00"), "failed", detail="x" * 2000)
    assert len(store.delivery_state(account.id)[0]["detail"]) == 500


# ---------------------------------------------------------------- raw landing


def page(body: bytes, flow: str = "revenue") -> RawPage:
    return RawPage(
        flow=flow, request={"method": "GET", "path": "/revenue", "params": {"from": "2026-11-16"}}, body=body
    )


def test_land_dedupes_identical_payloads_for_the_same_window(store):
    account = add_account(store)
    w = Window(D1, D3)
    first = store.land(account.id, "ajour", w, page(b'{"rows": [1]}'), run_id="r1")
    again = store.land(account.id, "ajour", w, page(b'{"rows": [1]}'), run_id="r2")
    changed = store.land(account.id, "ajour", w, page(b'{"rows": [2]}'), run_id="r2")
    other_window = store.land(account.id, "ajour", Window(D1, D4), page(b'{"rows": [1]}'), run_id="r3")
    assert again == first
    assert len({first, changed, other_window}) == 3
    assert count(store, "SELECT count(*) AS n FROM tillflow.raw_landing WHERE account_id = %s", account.id) == 3
    landed = dict(store.landed([changed, first]))
    assert landed[first].body == b'{"rows": [1]}'
    assert landed[changed].body == b'{"rows": [2]}'
    assert landed[first].request == {"method": "GET", "path": "/revenue", "params": {"from": "2026-11-16"}}
    assert [i for i, _ in store.landed_for_window(account.id, "revenue", Window(D3, D3))] == [
        first,
        changed,
        other_window,
    ]
    assert store.landed_for_window(account.id, "revenue", Window(date(2026, 12, 1), date(2026, 12, 2))) == []


# ---------------------------------------------------------------- rejects


def test_add_rejects_is_idempotent_on_replay_of_a_landed_page(store):
    account = add_account(store)
    landing = store.land(account.id, "ajour", Window(D1, D1), page(b"{}"), run_id="r1")
    rejects = [
        Reject(reason="amount: not a decimal amount: 'abc'", payload={"amount": "abc"}, ref="row-3"),
        Reject(reason="date: missing", payload={"loc": "bar"}, ref="row-7"),
    ]
    assert store.add_rejects(account.id, "revenue", rejects, landing_id=landing, run_id="r1") == 2
    assert store.add_rejects(account.id, "revenue", rejects, landing_id=landing, run_id="r2") == 0
    stored = store.rejects(account.id)
    assert [(r["ref"], r["reason"], r["payload"]) for r in stored] == [
        ("row-3", "amount: not a decimal amount: 'abc'", {"amount": "abc"}),
        ("row-7", "date: missing", {"loc": "bar"}),
    ]


def test_add_rejects_without_a_landing_is_idempotent_too(store):
    account = add_account(store)
    rejects = [Reject(reason="amount: not an amount: 'abc'", payload={"amount": "abc"}, ref="file.xlsx:3")]
    assert store.add_rejects(account.id, "excel_import", rejects, landing_id=None, run_id=None) == 1
    assert store.add_rejects(account.id, "excel_import", rejects, landing_id=None, run_id=None) == 0
    assert len(store.rejects(account.id)) == 1


# ---------------------------------------------------------------- activity log


def test_activity_counters_are_set_not_added_across_a_task_retry(store):
    account = add_account(store)
    w = Window(D1, D3)
    store.activity_start(INTEGRATION, "run1", account.id, "revenue", w)
    store.activity_update("run1", account.id, "revenue", fetched=12, rejected=1, add_retries=2)
    store.activity_update("run1", account.id, "revenue", status="failed", error="boom", finished=True)
    # the task is retried: the same steps report the same counts again
    store.activity_start(INTEGRATION, "run1", account.id, "revenue", w)
    [mid] = store.activity(run_id="run1")
    assert (mid["status"], mid["error"], mid["finished_at"]) == ("running", "", None)
    store.activity_update("run1", account.id, "revenue", fetched=12, rejected=1, add_retries=1)
    store.activity_update("run1", account.id, "revenue", upserted=4, unchanged=8, kept=0)
    store.activity_update("run1", account.id, "revenue", delivered=4, skipped=0, status="success", finished=True)
    [a] = store.activity(run_id="run1")
    assert (a["fetched"], a["rejected"], a["upserted"], a["unchanged"], a["delivered"]) == (12, 1, 4, 8, 4)
    assert a["retries"] == 3  # HTTP retries of both attempts add up
    assert (a["status"], a["account_key"], a["window_start"], a["window_end"]) == ("success", "bar-nord", D1, D3)
    assert a["finished_at"] is not None
    assert count(store, "SELECT count(*) AS n FROM tillflow.activity") == 1
    assert store.last_runs(INTEGRATION)[account.id]["run_id"] == "run1"


def test_activity_filters_by_integration_account_and_flow_and_limit_gives_the_newest_first(store):
    nord = add_account(store)
    sud = add_account(store, "bar-sud")
    other = add_account(store, "bar-nord", integration="other_flow")
    w = Window(D1, D1)
    started = [("r1", nord, "revenue"), ("r2", sud, "revenue"), ("r3", nord, "clock"), ("r4", other, "revenue")]
    for run, account, flow in started:
        store.activity_start(account.integration, run, account.id, flow, w)
    assert [r["run_id"] for r in store.activity()] == ["r1", "r2", "r3", "r4"]  # oldest first
    assert [r["run_id"] for r in store.activity(integration=INTEGRATION, limit=10)] == ["r3", "r2", "r1"]
    assert [r["run_id"] for r in store.activity(integration=INTEGRATION, limit=2)] == ["r3", "r2"]
    assert [r["run_id"] for r in store.activity(account_key="bar-nord", limit=10)] == ["r4", "r3", "r1"]
    assert [r["run_id"] for r in store.activity(account_key="bar-nord", flow="revenue", limit=10)] == ["r4", "r1"]
    only_other = store.activity(account_key="bar-nord", integration="other_flow")
    assert [(r["run_id"], r["integration"]) for r in only_other] == [("r4", "other_flow")]


def test_activity_update_refuses_unknown_counters(store):
    account = add_account(store)
    store.activity_start(INTEGRATION, "run1", account.id, "revenue", None)
    with pytest.raises(ValueError, match="unknown activity counters: \\['fetchd'\\]"):
        store.activity_update("run1", account.id, "revenue", fetchd=1)


# ---------------------------------------------------------------- map → upsert hand-off


def test_put_and_get_batch_round_trip_with_decimal_amounts(store):
    account = add_account(store)
    rows = [
        row("U1", D1, "0.10"),
        row("U1", D1, "0.20", hour=0),
        row("U2", D2, "1234567.89", hour=23),
        row("U3", D3, "-5.00"),
    ]
    batch = store.put_batch(account.id, "revenue", Window(D1, D3), rows, run_id="r1")
    back = store.get_batch(batch)
    assert back == rows
    assert [str(r.amount) for r in back] == ["0.10", "0.20", "1234567.89", "-5.00"]
    assert all(type(r.amount) is Decimal for r in back)
    assert [r.hour for r in back] == [None, 0, 23, None]
    assert store.get_batch(store.put_batch(account.id, "revenue", Window(D1, D1), [], run_id=None)) == []
    with pytest.raises(LookupError, match="batch 99999 is gone"):
        store.get_batch(99999)


def test_revenue_of_an_unknown_account_is_refused_whole(store):
    from tillflow.errors import ConfigError

    acc = store.upsert_account("ajour_to_planday", "real", name="Real", conn_id="c", settings=AccountSettings())
    rows = [
        (acc.id, "1001", date(2026, 11, 1), None, Decimal("1.00")),
        (999, "1001", date(2026, 11, 1), None, Decimal("2.00")),
    ]
    with pytest.raises(ConfigError, match="account_id: no account with id 999"):
        store.upsert_revenue_many(rows, mode="overwrite")
    assert store.revenue(acc.id) == []


def test_deleting_an_account_deletes_its_revenue(store):
    acc = store.upsert_account("ajour_to_planday", "gone", name="Gone", conn_id="c", settings=AccountSettings())
    keep = store.upsert_account("ajour_to_planday", "kept", name="Kept", conn_id="c", settings=AccountSettings())
    for a in (acc, keep):
        store.upsert_revenue_many([(a.id, "1001", date(2026, 11, 1), None, Decimal("1.00"))], mode="overwrite")
    store.conn.execute("DELETE FROM tillflow.accounts WHERE id = %s", (acc.id,))
    store.conn.commit()
    left = store.conn.execute("SELECT account_id FROM tillflow.revenue").fetchall()
    store.conn.commit()
    assert [r["account_id"] for r in left] == [keep.id]


def test_delete_account_removes_everything_it_had(store):
    acc = store.upsert_account("ajour_to_planday", "bye", name="Bye", conn_id="c", settings=AccountSettings())
    store.set_mapping(acc.id, "location", "L1", "1001")
    row = TargetRow(target_key="1001", business_date=date(2026, 11, 1), amount=Decimal("5.00"))
    store.upsert_revenue(acc.id, [row], mode="overwrite")
    store.record_delivery(acc.id, row, "delivered")
    assert store.delete_account("ajour_to_planday", "bye") is True
    assert store.delete_account("ajour_to_planday", "bye") is False
    for table in ("mappings", "revenue", "delivery_state"):
        (n,) = store.conn.execute(f"SELECT count(*) FROM tillflow.{table}").fetchone().values()
        assert n == 0, table
    store.conn.commit()


def test_a_bad_account_key_is_refused_before_the_database(store):
    with pytest.raises(ConfigError, match=r"key: 'Bar Nord!' must be"):
        store.upsert_account("ajour_to_planday", "Bar Nord!", name="x", conn_id="c", settings=AccountSettings())
    assert store.list_accounts() == []
