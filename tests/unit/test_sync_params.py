"""Manual-run parameters (RunParams.from_params) and the WorkItem that travels through XCom."""

from __future__ import annotations

import json
from datetime import date

import pytest
from tillflow.errors import ConfigError
from tillflow.sources.base import Window
from tillflow.sync import RunParams, WorkItem


def test_no_params_means_nothing_targeted():
    for params in (None, {}, {"accounts": None, "date_from": "", "date_to": None, "overwrite": None}):
        p = RunParams.from_params(params)
        assert p == RunParams()
        assert (p.accounts, p.date_from, p.date_to, p.overwrite) == ([], None, None, None)
        assert p.targeted is False


def test_dates_are_parsed_from_iso_strings_and_date_objects():
    p = RunParams.from_params({"date_from": "2026-11-01", "date_to": date(2026, 11, 5)})
    assert (p.date_from, p.date_to) == (date(2026, 11, 1), date(2026, 11, 5))
    assert p.targeted is True


def test_date_from_alone_is_a_single_day_request():
    p = RunParams.from_params({"date_from": "2026-11-01"})
    assert (p.date_from, p.date_to) == (date(2026, 11, 1), None)
    assert p.targeted


@pytest.mark.parametrize(
    "params, field, bad",
    [
        ({"date_from": "2026-02-30"}, "date_from", "'2026-02-30'"),
        ({"date_from": "2026-11-01", "date_to": "01/11/2026"}, "date_to", "'01/11/2026'"),
        ({"date_from": "yesterday"}, "date_from", "'yesterday'"),
    ],
)
def test_a_bad_date_names_its_field_and_value(params, field, bad):
    with pytest.raises(ConfigError) as exc:
        RunParams.from_params(params)
    assert str(exc.value) == f"{field}: expected YYYY-MM-DD, got {bad}"


def test_date_to_without_date_from_is_refused():
    with pytest.raises(ConfigError, match=r"^date_from: required when date_to is given$"):
        RunParams.from_params({"date_to": "2026-11-05"})


@pytest.mark.parametrize("value", [True, False, None])
def test_overwrite_accepts_true_false_and_null(value):
    assert RunParams.from_params({"overwrite": value}).overwrite is value


@pytest.mark.parametrize("value", ["yes", "true", "0", 2])
def test_overwrite_refuses_anything_else(value):
    with pytest.raises(ConfigError) as exc:
        RunParams.from_params({"overwrite": value})
    assert str(exc.value) == (
        f"overwrite: expected account_default, overwrite, keep_existing (or true, false, null), got {value!r}"
    )


def test_overwrite_alone_does_not_target_accounts_or_dates():
    assert RunParams.from_params({"overwrite": True}).targeted is False


def test_accounts_as_a_comma_string_are_split_and_trimmed():
    p = RunParams.from_params({"accounts": " bar-nord, cafe-syd ,,bistro "})
    assert p.accounts == ["bar-nord", "cafe-syd", "bistro"]
    assert p.targeted


def test_accounts_as_a_list_are_kept_in_order():
    assert RunParams.from_params({"accounts": ["b", "a"]}).accounts == ["b", "a"]


def test_an_empty_accounts_string_means_all():
    assert RunParams.from_params({"accounts": " , "}).accounts == []


# ---------------------------------------------------------------- WorkItem


def item(**kw) -> WorkItem:
    base = dict(
        account_id=7,
        account_key="bar-nord",
        name="Bar Nord",
        flow="revenue",
        window_start=date(2026, 11, 17),
        window_end=date(2026, 11, 19),
        mode="keep_manual",
    )
    return WorkItem(**{**base, **kw})


@pytest.mark.parametrize("force", [False, True])
def test_work_item_round_trips_through_json_xcom(force):
    original = item(force_delivery=force, mode="overwrite")
    data = json.loads(json.dumps(original.to_xcom()))
    assert data["window_start"] == "2026-11-17" and data["window_end"] == "2026-11-19"
    back = WorkItem.from_xcom(data)
    assert back == original
    assert back.force_delivery is force
    assert isinstance(back.window_start, date)


def test_work_item_xcom_carries_keys_only():
    assert set(item().to_xcom()) == {
        "account_id",
        "account_key",
        "name",
        "flow",
        "window_start",
        "window_end",
        "mode",
        "force_delivery",
        "due_at",
        "shard",
    }


def test_work_item_window_and_label():
    w = item()
    assert w.window == Window(date(2026, 11, 17), date(2026, 11, 19))
    assert w.label == "Bar Nord (bar-nord) 2026-11-17..2026-11-19"


@pytest.mark.parametrize("value", [1, 0])
def test_overwrite_as_an_integer_is_refused_or_made_a_bool(value):
    try:
        p = RunParams.from_params({"overwrite": value})
    except ConfigError:
        return
    assert p.overwrite is bool(value)
