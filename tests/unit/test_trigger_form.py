"""The trigger form (``tillflow.factory.PARAMS``): what Airflow 3.3 renders and checks when a run is created,
and what the plan task checks before any account runs (RunParams.from_params)."""

from __future__ import annotations

from datetime import date

import pytest
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from tillflow.errors import ConfigError
from tillflow.factory import OVERWRITE_DISPLAY, PARAMS
from tillflow.sync import OVERWRITE_CHOICES, RunParams


def _ui_required(schema: dict) -> bool:
    """Airflow 3.3's trigger form marks a field required when its schema has a type that does not include
    "null" (``ui/dist``: ``!!schema.type && (!Array.isArray(schema.type) || !schema.type.includes("null"))``),
    and then refuses an empty (null) value before the run is created."""
    kind = schema.get("type")
    return bool(kind) and (not isinstance(kind, list) or "null" not in kind)


def _validate(conf: dict) -> dict:
    """What the API server does when a run is created: the DAG's params, overlaid with the conf, validated."""
    params = ParamsDict({k: Param(v.value, **v.schema, description=v.description) for k, v in PARAMS.items()})
    params.update(conf)
    return params.validate()


def test_the_defaults_are_an_ordinary_run_of_every_account():
    values = _validate({})
    assert values == {
        "accounts": None,
        "date_from": None,
        "date_to": None,
        "overwrite": "account_default",
        "replay": False,
        "dry_run": False,
    }
    p = RunParams.from_params(values)
    assert p == RunParams() and not p.targeted and not p.replay and not p.dry_run


@pytest.mark.parametrize("name", ["accounts", "date_from", "date_to"])
def test_optional_fields_are_not_required_in_the_form(name):
    schema = PARAMS[name].schema
    assert not _ui_required(schema)
    assert PARAMS[name].value is None
    assert _validate({name: None})[name] is None  # a cleared field is accepted when the run is created


def test_accounts_is_a_list_of_account_keys():
    schema = PARAMS["accounts"].schema
    assert schema["type"] == ["null", "array"] and schema["items"]["type"] == "string"
    assert _validate({"accounts": ["cafe_nord", "bar-2"]})["accounts"] == ["cafe_nord", "bar-2"]
    with pytest.raises(Exception, match="accounts"):
        _validate({"accounts": ["Café Nord"]})
    assert RunParams.from_params(_validate({"accounts": ["cafe_nord"]})).accounts == ["cafe_nord"]


def test_overwrite_is_one_choice_of_three_with_labels():
    schema = PARAMS["overwrite"].schema
    assert schema["enum"] == ["account_default", "overwrite", "keep_existing"]
    assert set(schema["values_display"]) == set(schema["enum"])
    assert schema["values_display"] == OVERWRITE_DISPLAY
    assert schema["values_display"]["account_default"].startswith("account default")
    assert schema["values_display"]["keep_existing"].startswith("keep existing")
    for choice, meaning in (("account_default", None), ("overwrite", True), ("keep_existing", False)):
        assert RunParams.from_params(_validate({"overwrite": choice})).overwrite is meaning
    assert OVERWRITE_CHOICES == {"account_default": None, "overwrite": True, "keep_existing": False}
    with pytest.raises(Exception, match="overwrite"):
        _validate({"overwrite": "sometimes"})


@pytest.mark.parametrize("legacy, meaning", [(True, True), (False, False), (None, None)])
def test_the_old_true_false_null_still_mean_the_same_to_the_run(legacy, meaning):
    assert RunParams.from_params({"overwrite": legacy}).overwrite is meaning


@pytest.mark.parametrize("name", ["date_from", "date_to"])
@pytest.mark.parametrize("bad", ["2026-02-30", "01/11/2026", "20261101", "yesterday", "2026-11-1"])
def test_a_bad_date_is_refused_when_the_run_is_created(name, bad):
    conf = {"date_from": "2026-11-01", name: bad}
    with pytest.raises(Exception, match=f"Invalid input for param {name}"):
        _validate(conf)


def test_good_dates_pass_the_form():
    values = _validate({"date_from": "2026-11-01", "date_to": "2026-11-07"})
    p = RunParams.from_params(values)
    assert (p.date_from, p.date_to) == (date(2026, 11, 1), date(2026, 11, 7))


def test_date_to_before_date_from_is_refused_naming_both_fields():
    values = _validate({"date_from": "2026-11-07", "date_to": "2026-11-01"})  # each date alone is fine
    with pytest.raises(ConfigError) as exc:
        RunParams.from_params(values)
    assert str(exc.value) == "date_to: 2026-11-01 lies before date_from 2026-11-07; date_to must be on or after it"


def test_a_range_longer_than_a_manual_run_allows_is_refused_up_front():
    with pytest.raises(ConfigError, match=r"^date_from/date_to: date range 2024-01-01\.\.2026-11-01 is \d+ days"):
        RunParams.from_params({"date_from": "2024-01-01", "date_to": "2026-11-01"})


def test_replay_and_dry_run_are_switches_and_a_dry_run_previews_a_replay():
    for name in ("replay", "dry_run"):
        assert PARAMS[name].schema["type"] == "boolean" and PARAMS[name].value is False
    p = RunParams.from_params(_validate({"replay": True}))
    assert p.replay and not p.dry_run
    p = RunParams.from_params(_validate({"dry_run": True}))
    assert p.replay and p.dry_run
    assert RunParams(dry_run=True).replay
    with pytest.raises(ConfigError, match=r"^dry_run: expected true or false, got 'yes'$"):
        RunParams.from_params({"dry_run": "yes"})


def test_the_dag_carries_the_form():
    from pathlib import Path

    from tillflow.factory import build_dag

    dag = build_dag(Path(__file__).resolve().parents[2] / "dags" / "ajour_to_planday.yaml")
    assert list(dag.params) == list(PARAMS)
    assert not _ui_required(dag.params.get_param("accounts").schema)
    assert dag.params.get_param("overwrite").schema["enum"] == list(OVERWRITE_DISPLAY)
