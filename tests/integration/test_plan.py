"""sync.plan against the real store: which accounts run on a tick or a manual run, for which window and mode."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from tillflow.errors import ConfigError
from tillflow.specs import load_spec, parse_settings
from tillflow.sync import RunParams, WorkItem, plan

SPEC = load_spec(Path(__file__).resolve().parents[2] / "dags" / "ajour_to_planday.yaml")
FRIDAY_0700_CPH = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)  # Friday 07:00 CET
THU = date(2026, 11, 19)

ACCOUNTS = {
    "a-daily": {"run_time": "07:00", "lookback_days": 3},
    "b-fridays": {"run_time": "07:00", "weekdays": ["fri"], "lookback_days": 1, "write_mode": "insert_only"},
    "c-late": {"run_time": "09:00"},
    "d-weekend": {"run_time": "07:00", "weekdays": ["sat", "sun"]},
    "e-paused": {"run_time": "07:00", "active": False},
    "f-starts-today": {"run_time": "07:00", "start_date": "2026-11-20"},
    "g-starts-later": {"run_time": "07:00", "start_date": "2026-12-01"},
    "h-started-tue": {"run_time": "07:00", "lookback_days": 7, "start_date": "2026-11-17"},
    "i-london": {"run_time": "07:00", "timezone": "Europe/London", "lookback_days": 2},
}


@pytest.fixture
def accounts(store):
    made = {}
    for key, settings in ACCOUNTS.items():
        made[key] = store.upsert_account(
            SPEC.integration,
            key,
            name=key.title(),
            conn_id=f"ajour_{key}",
            settings=parse_settings(settings, spec=SPEC),
        )
    # same settings in another integration: never planned here
    store.upsert_account(
        "kassatellen_to_eitje", "a-daily", name="Other", conn_id="x", settings=parse_settings(ACCOUNTS["a-daily"])
    )
    return made


def windows(result) -> dict[str, tuple[date, date, str]]:
    return {i.account_key: (i.window_start, i.window_end, i.mode) for i in result.items}


def test_a_scheduled_friday_0700_tick_runs_only_the_accounts_due_then(store, accounts):
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(), manual=False)
    assert windows(result) == {
        "a-daily": (date(2026, 11, 17), THU, "keep_manual"),
        "b-fridays": (THU, THU, "insert_only"),
        "h-started-tue": (date(2026, 11, 17), THU, "keep_manual"),  # 7 days back, clipped at the start date
    }
    assert result.not_run == {
        "c-late": "runs at 09:00, tick is 07:00",
        "d-weekend": "fri is not a fetch day",
        "e-paused": "paused",
        "f-starts-today": "window lies before the start date 2026-11-20",
        "g-starts-later": "starts on 2026-12-01",
        "i-london": "runs at 07:00, tick is 06:00",
    }
    a = next(i for i in result.items if i.account_key == "a-daily")
    assert a == WorkItem(
        accounts["a-daily"].id,
        "a-daily",
        "A-Daily",
        "revenue",
        date(2026, 11, 17),
        THU,
        "keep_manual",
        False,
        due_at=FRIDAY_0700_CPH,
    )
    assert all(not i.force_delivery and i.flow == "revenue" for i in result.items)


def test_every_active_account_is_either_run_or_explained(store, accounts):
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(), manual=False)
    assert {i.account_key for i in result.items} | set(result.not_run) == set(ACCOUNTS)
    assert not {i.account_key for i in result.items} & set(result.not_run)


def test_the_london_account_runs_an_hour_later_in_utc(store, accounts):
    result = plan(store, SPEC, logical_date=datetime(2026, 11, 20, 7, tzinfo=UTC), params=RunParams(), manual=False)
    assert windows(result) == {"i-london": (date(2026, 11, 18), THU, "keep_manual")}


def test_in_summer_time_0700_copenhagen_is_0500_utc(store, accounts):
    result = plan(store, SPEC, logical_date=datetime(2026, 7, 3, 5, tzinfo=UTC), params=RunParams(), manual=False)
    assert windows(result) == {
        "a-daily": (date(2026, 6, 30), date(2026, 7, 2), "keep_manual"),
        "b-fridays": (date(2026, 7, 2), date(2026, 7, 2), "insert_only"),
    }
    assert result.not_run["h-started-tue"] == "starts on 2026-11-17"


def test_a_manual_run_without_params_runs_every_active_account_for_its_lookback(store, accounts):
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(), manual=True)
    assert windows(result) == {
        "a-daily": (date(2026, 11, 17), THU, "keep_manual"),
        "b-fridays": (THU, THU, "insert_only"),
        "c-late": (date(2026, 11, 17), THU, "keep_manual"),  # the default lookback, 3
        "d-weekend": (date(2026, 11, 17), THU, "keep_manual"),
        "h-started-tue": (date(2026, 11, 17), THU, "keep_manual"),
        "i-london": (date(2026, 11, 18), THU, "keep_manual"),
    }
    assert result.not_run == {
        "e-paused": "paused",
        "f-starts-today": "window lies before the start date 2026-11-20",
        "g-starts-later": "window lies before the start date 2026-12-01",
    }
    assert not any(i.force_delivery for i in result.items)


def test_a_manual_run_for_named_accounts_and_dates_runs_exactly_those(store, accounts):
    params = RunParams.from_params(
        {"accounts": "h-started-tue, c-late", "date_from": "2026-11-10", "date_to": "2026-11-18"}
    )
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=params, manual=True)
    assert [(i.account_key, i.window_start, i.window_end) for i in result.items] == [
        ("h-started-tue", date(2026, 11, 17), date(2026, 11, 18)),  # clipped at its start date
        ("c-late", date(2026, 11, 10), date(2026, 11, 18)),
    ]
    assert result.not_run == {}


def test_a_manual_single_day_before_the_start_date_is_not_run(store, accounts):
    params = RunParams(accounts=["g-starts-later", "a-daily"], date_from=date(2026, 11, 2))
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=params, manual=True)
    assert windows(result) == {"a-daily": (date(2026, 11, 2), date(2026, 11, 2), "keep_manual")}
    assert result.not_run == {"g-starts-later": "window lies before the start date 2026-12-01"}


def test_a_named_paused_account_still_does_not_run(store, accounts):
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(accounts=["e-paused"]), manual=True)
    assert result.items == []
    assert result.not_run == {"e-paused": "paused"}


@pytest.mark.parametrize("overwrite, mode, force", [(True, "overwrite", True), (False, "insert_only", False)])
def test_overwrite_param_sets_the_write_mode_of_a_manual_run(store, accounts, overwrite, mode, force):
    params = RunParams(accounts=["a-daily", "b-fridays"], overwrite=overwrite)
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=params, manual=True)
    assert [(i.account_key, i.mode, i.force_delivery) for i in result.items] == [
        ("a-daily", mode, force),
        ("b-fridays", mode, force),
    ]


def test_overwrite_on_a_scheduled_tick_changes_the_mode_but_never_forces_delivery(store, accounts):
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(overwrite=True), manual=False)
    assert {(i.account_key, i.mode, i.force_delivery) for i in result.items} == {
        ("a-daily", "overwrite", False),
        ("b-fridays", "overwrite", False),
        ("h-started-tue", "overwrite", False),
    }


def test_an_unknown_account_names_it_and_lists_the_known_ones(store, accounts):
    with pytest.raises(ConfigError) as exc:
        plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(accounts=["a-daily", "zz-nope"]), manual=True)
    message = str(exc.value)
    assert message.startswith("accounts: unknown account(s) zz-nope for ajour_to_planday; known: ")
    assert message.endswith("known: " + ", ".join(sorted(ACCOUNTS)))


def test_no_accounts_means_an_empty_plan(store):
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(), manual=False)
    assert (result.items, result.not_run) == ([], {})
    with pytest.raises(ConfigError, match="known: none"):
        plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(accounts=["x"]), manual=True)


def test_work_items_survive_the_xcom_round_trip(store, accounts):
    result = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(overwrite=True), manual=True)
    assert [WorkItem.from_xcom(i.to_xcom()) for i in result.items] == result.items


# ---------------------------------------------------------------- no lost tick: catch-up of missed run times


def _known_since(store, account, when):
    store.conn.execute("UPDATE tillflow.accounts SET created_at = %s WHERE id = %s", (when, account.id))
    store.conn.commit()


def test_a_missed_run_time_is_caught_up_at_the_next_tick_once(store, accounts):
    _known_since(store, accounts["a-daily"], datetime(2026, 11, 1, tzinfo=UTC))
    friday_0900 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # 09:00 CET: the 07:00 tick never ran
    result = plan(store, SPEC, logical_date=friday_0900, params=RunParams(), manual=False)
    a = next(i for i in result.items if i.account_key == "a-daily")
    assert (a.window_start, a.window_end, a.due_at) == (date(2026, 11, 17), THU, FRIDAY_0700_CPH)
    assert "c-late" in {i.account_key for i in result.items}  # 09:00 is its own time
    assert "b-fridays" not in {i.account_key for i in result.items}  # created after its 07:00: nothing missed
    store.flow_success(a.account_id, "revenue", due_at=a.due_at, window=a.window, run_id="r1")
    later = plan(store, SPEC, logical_date=datetime(2026, 11, 20, 9, 0, tzinfo=UTC), params=RunParams(), manual=False)
    assert "a-daily" not in {i.account_key for i in later.items}  # served once, not again at 10:00
    assert later.not_run["a-daily"] == "runs at 07:00, tick is 10:00"


def test_several_missed_run_times_in_a_row_lose_no_day(store, accounts):
    """The scheduler was down from Tuesday 08:00 to Friday 09:00: Wednesday's, Thursday's and Friday's run times
    never ran. The catch-up tick serves Friday's, with a window that also covers what Wednesday's and
    Thursday's would have fetched — with lookback 1, Tuesday and Wednesday would otherwise be lost."""
    daily = store.upsert_account(
        SPEC.integration, "j-lookback-1", name="J", conn_id="ajour_j",
        settings=parse_settings({"run_time": "07:00", "lookback_days": 1}, spec=SPEC),
    )  # fmt: skip
    _known_since(store, daily, datetime(2026, 11, 1, tzinfo=UTC))
    tuesday_0700 = datetime(2026, 11, 17, 6, 0, tzinfo=UTC)
    store.flow_success(daily.id, "revenue", due_at=tuesday_0700, window=None, run_id="tue")
    _known_since(store, accounts["b-fridays"], datetime(2026, 11, 1, tzinfo=UTC))
    store.flow_success(
        accounts["b-fridays"].id, "revenue", due_at=datetime(2026, 11, 13, 6, 0, tzinfo=UTC), window=None, run_id="f"
    )
    result = plan(store, SPEC, logical_date=datetime(2026, 11, 20, 8, 0, tzinfo=UTC), params=RunParams(), manual=False)
    j = next(i for i in result.items if i.account_key == "j-lookback-1")
    assert (j.window_start, j.window_end, j.due_at) == (date(2026, 11, 17), THU, FRIDAY_0700_CPH)
    # a weekday the account does not run on is not a missed run time: Friday-only still fetches Thursday
    b = next(i for i in result.items if i.account_key == "b-fridays")
    assert (b.window_start, b.window_end) == (THU, THU)
    # and on an ordinary day (yesterday's run time served) the window is the plain lookback
    store.flow_success(daily.id, "revenue", due_at=FRIDAY_0700_CPH, window=None, run_id="fri")
    saturday = plan(store, SPEC, logical_date=datetime(2026, 11, 21, 6, tzinfo=UTC), params=RunParams(), manual=False)
    j = next(i for i in saturday.items if i.account_key == "j-lookback-1")
    assert (j.window_start, j.window_end) == (date(2026, 11, 20), date(2026, 11, 20))


def test_a_failed_run_stays_due_until_it_succeeds(store, accounts):
    _known_since(store, accounts["a-daily"], datetime(2026, 11, 1, tzinfo=UTC))
    store.set_flow_status(accounts["a-daily"].id, "revenue", "failing", "HTTP 503")
    for hour in (8, 9, 10):
        result = plan(
            store, SPEC, logical_date=datetime(2026, 11, 20, hour, 0, tzinfo=UTC), params=RunParams(), manual=False
        )
        assert "a-daily" in {i.account_key for i in result.items}


def test_a_backfill_tick_runs_exactly_the_accounts_due_at_it(store, accounts):
    _known_since(store, accounts["a-daily"], datetime(2026, 11, 1, tzinfo=UTC))
    store.flow_success(
        accounts["a-daily"].id, "revenue", due_at=datetime(2026, 11, 24, tzinfo=UTC), window=None, run_id="later"
    )
    at_7 = plan(store, SPEC, logical_date=FRIDAY_0700_CPH, params=RunParams(), manual=False, backfill=True)
    assert "a-daily" in {i.account_key for i in at_7.items}  # a later success does not hide a backfilled tick
    at_9 = plan(
        store,
        SPEC,
        logical_date=datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
        params=RunParams(),
        manual=False,
        backfill=True,
    )
    assert "a-daily" not in {i.account_key for i in at_9.items}


def test_an_every_tick_flow_runs_every_active_account_with_today_open(store, accounts):
    flow = SPEC.flow("revenue").model_copy(update={"due": "every_tick", "window": "open_day"})
    spec = SPEC.model_copy(update={"flows": [flow]})
    tick = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)  # Friday 11:15 CET: Friday is still open
    result = plan(store, spec, logical_date=tick, params=RunParams(), manual=False)
    got = {i.account_key: (i.window_start, i.window_end) for i in result.items}
    assert got["c-late"] == (date(2026, 11, 17), date(2026, 11, 20))  # 3 closed days + today
    assert got["b-fridays"] == (THU, date(2026, 11, 20))
    assert "d-weekend" in got  # weekdays belong to run times, not to every-tick flows
    assert set(result.not_run) == {"e-paused", "g-starts-later"}


def test_plan_run_shards_and_writes_the_work_list(store, accounts):
    from tillflow.sync import plan_run

    flows = SPEC.flows
    small = plan_run(
        store, SPEC, flows, dag_id="d", run_id="r-small", logical_date=FRIDAY_0700_CPH, params=RunParams(), manual=False
    )
    assert [s["shard"] for s in small.shards] == [0]  # 3 accounts: below min_accounts_per_shard, one shard
    assert {r["account_key"] for r in store.run_items("r-small", 0)} == {"a-daily", "b-fridays", "h-started-tue"}
    spec = SPEC.model_copy(
        update={"execution": SPEC.execution.model_copy(update={"min_accounts_per_shard": 1, "max_shards": 2})}
    )
    manual = plan_run(
        store, spec, flows, dag_id="d", run_id="r-man", logical_date=FRIDAY_0700_CPH, params=RunParams(), manual=True
    )
    assert len(manual.shards) == 2
    per_shard = [{r["account_key"] for r in store.run_items("r-man", s["shard"])} for s in manual.shards]
    assert not per_shard[0] & per_shard[1] and len(per_shard[0] | per_shard[1]) == 6
    named = plan_run(
        store,
        spec,
        flows,
        dag_id="d",
        run_id="r-named",
        logical_date=FRIDAY_0700_CPH,
        params=RunParams(accounts=["a-daily", "c-late", "e-paused"]),
        manual=True,
    )
    assert [s["label"] for s in named.shards] == [
        "A-Daily (a-daily) 2026-11-17..2026-11-19",
        "C-Late (c-late) 2026-11-17..2026-11-19",
    ]
    assert named.not_run == {"e-paused": "paused"}


def test_a_manual_run_naming_more_accounts_than_the_per_account_limit_is_sharded():
    from tillflow.sync import PER_ACCOUNT_LIMIT, assign_shards

    def items(n):
        return [WorkItem(i, f"acc-{i:04d}", f"Acc {i}", "revenue", THU, THU, "keep_manual") for i in range(n)]

    few = assign_shards(items(3), SPEC, per_account=True)
    assert [s["label"] for s in few] == [f"Acc {i} (acc-{i:04d}) 2026-11-19..2026-11-19" for i in range(3)]
    many = items(PER_ACCOUNT_LIMIT + 1)
    shards = assign_shards(many, SPEC, per_account=True)
    assert len(shards) <= SPEC.execution.max_shards < PER_ACCOUNT_LIMIT
    assert all(s["label"].startswith("shard ") for s in shards)
    assert sum(s["accounts"] for s in shards) == PER_ACCOUNT_LIMIT + 1
    assert {i.shard for i in many} == {s["shard"] for s in shards}
