"""Integration specs (YAML) and account settings: every bad value fails with a ConfigError naming its field."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest
import yaml
from tillflow.errors import ConfigError
from tillflow.specs import AccountSettings, IntegrationSpec, load_spec, parse_settings

SPEC_PATH = Path(__file__).resolve().parents[2] / "dags" / "ajour_to_planday.yaml"


@pytest.fixture(scope="module")
def spec() -> IntegrationSpec:
    return load_spec(SPEC_PATH)


def raw_spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def write_spec(tmp_path: Path, data: dict, name: str = "variant.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------- the ajour spec


def test_the_ajour_spec_loads_with_its_own_limits(spec):
    assert spec.dag_id == "ajour_to_planday"
    assert (spec.source, spec.target, spec.flows) == ("ajour", "planday", ["revenue"])
    assert spec.per_account_run_time is True
    assert spec.earliest_run_time == time(5, 0)
    assert spec.business_day_cutoff == time(5, 0)
    assert (spec.lookback_days.min, spec.lookback_days.default, spec.lookback_days.max) == (1, 3, 31)
    assert spec.timezone == "Europe/Copenhagen"
    assert spec.start_date == date(2026, 1, 1)


def test_all_tags_are_the_fixed_set_sorted_and_unique(spec):
    assert spec.all_tags == ["flow:revenue", "source:ajour", "target:planday", "tillflow"]


def test_all_tags_adds_the_derived_tags_when_the_spec_lists_none(tmp_path):
    data = raw_spec()
    data["tags"] = []
    assert load_spec(write_spec(tmp_path, data)).all_tags == [
        "flow:revenue",
        "source:ajour",
        "target:planday",
        "tillflow",
    ]


# ---------------------------------------------------------------- bad specs name file and field


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"tags": ["source:ajour", "team:data"]}, "tags", "'team:data'"),
        ({"source": "lightspeed"}, "source", "unknown source 'lightspeed'"),
        ({"target": "deputy"}, "target", "unknown target 'deputy'"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "unknown timezone"),
        ({"dag_id": "AjourPlanday"}, "dag_id", "pattern"),
        ({"flows": ["orders"]}, "flows.0", "'revenue'"),
        ({"earliest_run_time": "5 o'clock"}, "earliest_run_time", "expected HH:MM"),
        ({"lookback_days": {"default": 40, "max": 31}}, "lookback_days", "min <= default <= max"),
        ({"lookback_days": {"default": 3, "max": 31, "step": 1}}, "lookback_days.step", "Extra inputs"),
        ({"owners": ["not-an-email"]}, "owners.0", "email"),
    ],
)
def test_a_bad_spec_fails_naming_file_and_field(tmp_path, change, field, words):
    data = {**raw_spec(), **change}
    with pytest.raises(ConfigError) as exc:
        load_spec(write_spec(tmp_path, data))
    message = str(exc.value)
    assert message.startswith(f"variant.yaml: {field}: "), message
    assert words in message


def test_every_problem_of_a_spec_is_reported_on_its_own_line(tmp_path):
    data = {**raw_spec(), "source": "nope", "colour": "blue"}
    with pytest.raises(ConfigError) as exc:
        load_spec(write_spec(tmp_path, data))
    lines = str(exc.value).splitlines()
    assert len(lines) == 2
    assert {line.split(": ")[1] for line in lines} == {"source", "colour"}


def test_a_missing_required_field_is_named(tmp_path):
    data = raw_spec()
    del data["owners"]
    with pytest.raises(ConfigError, match=r"^variant\.yaml: owners: Field required"):
        load_spec(write_spec(tmp_path, data))


def test_an_unreadable_or_invalid_yaml_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("dag_id: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: cannot read spec"):
        load_spec(broken)


# ---------------------------------------------------------------- account settings


def test_settings_defaults():
    s = parse_settings({})
    assert s.timezone == "Europe/Copenhagen"
    assert (s.vat, s.write_mode, s.lookback_days) == ("incl", "keep_manual", 3)
    assert s.run_time == time(5, 0) and s.business_day_cutoff == time(5, 0)
    assert s.weekdays == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert s.active is True and s.start_date is None


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"lookback_days": 0}, "lookback_days", "greater than or equal to 1"),
        ({"lookback_days": 32}, "lookback_days", "less than or equal to 31"),
        ({"lookback_days": "abc"}, "lookback_days", "valid integer"),
        ({"run_time": "07:30"}, "run_time", "on the hour"),
        ({"run_time": "7"}, "run_time", "expected HH:MM"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown timezone 'Mars/Olympus'"),
        ({"weekdays": ["mon", "fry"]}, "weekdays.1", "'fry'"),
        ({"weekdays": []}, "weekdays", "at least 1"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"vat": "gross"}, "vat", "'incl' or 'excl'"),
        ({"write_mode": "replace"}, "write_mode", "'overwrite', 'insert_only' or 'keep_manual'"),
        ({"start_date": "2026-13-01"}, "start_date", "valid date"),
        ({"business_day_cutoff": "25:00"}, "business_day_cutoff", "expected HH:MM"),
        ({"owner_email": "nobody"}, "owner_email", "email"),
    ],
)
def test_bad_settings_name_the_field(spec, data, field, words):
    with pytest.raises(ConfigError) as exc:
        parse_settings(data, spec=spec, where="account bar-nord")
    message = str(exc.value)
    assert message.startswith(f"account bar-nord: {field}: "), message
    assert words in message


def test_run_time_before_the_integrations_earliest_is_refused(spec):
    with pytest.raises(ConfigError) as exc:
        parse_settings({"run_time": "04:00"}, spec=spec)
    assert str(exc.value) == "run_time: ajour_to_planday runs at 05:00 at the earliest, got 04:00"
    assert parse_settings({"run_time": "05:00"}, spec=spec).run_time == time(5, 0)


def test_run_time_before_05_is_fine_without_a_spec_that_sets_an_earliest_time():
    assert parse_settings({"run_time": "04:00"}).run_time == time(4, 0)


def test_lookback_is_checked_against_the_specs_own_bounds(tmp_path):
    data = {**raw_spec(), "lookback_days": {"default": 2, "min": 1, "max": 7}}
    narrow = load_spec(write_spec(tmp_path, data))
    with pytest.raises(ConfigError, match=r"^lookback_days: must be between 1 and 7 for ajour_to_planday, got 8$"):
        parse_settings({"lookback_days": 8}, spec=narrow)
    assert parse_settings({"lookback_days": 7}, spec=narrow).lookback_days == 7


@pytest.mark.parametrize("n", [1, 31])
def test_lookback_bounds_are_inclusive(spec, n):
    assert parse_settings({"lookback_days": n}, spec=spec).lookback_days == n


def test_weekdays_are_deduplicated_and_put_in_week_order():
    assert parse_settings({"weekdays": ["sun", "fri", "mon", "fri"]}).weekdays == ["mon", "fri", "sun"]


def test_settings_are_frozen():
    s = parse_settings({})
    with pytest.raises(Exception, match="frozen"):
        s.lookback_days = 5


# ---------------------------------------------------------------- to_json round trip


def test_to_json_writes_times_as_hh_mm_and_round_trips():
    s = parse_settings(
        {
            "timezone": "Europe/Paris",
            "vat": "excl",
            "write_mode": "overwrite",
            "lookback_days": 7,
            "run_time": "07:00:00",
            "weekdays": ["fri", "mon"],
            "active": False,
            "start_date": "2026-02-01",
            "activated_at": "2026-01-15T10:30:00+00:00",
            "business_day_cutoff": "04:30",
            "owner_email": "chef@bar.example",
        }
    )
    data = s.to_json()
    assert data["run_time"] == "07:00"
    assert data["business_day_cutoff"] == "04:30"
    assert data["start_date"] == "2026-02-01"
    assert data["weekdays"] == ["mon", "fri"]
    back = parse_settings(data)
    assert back == s
    assert back.activated_at == datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


def test_to_json_leaves_out_unset_optional_fields():
    data = AccountSettings().to_json()
    assert "start_date" not in data and "activated_at" not in data and "owner_email" not in data
    assert parse_settings(data) == AccountSettings()


def test_run_time_must_fall_on_a_tick_of_the_dag_in_its_own_timezone():
    from tillflow.errors import ConfigError
    from tillflow.specs import load_spec, parse_settings

    spec = load_spec(Path(__file__).resolve().parents[2] / "dags" / "ajour_to_planday.yaml")
    # London 05:00 is 06:00 in Copenhagen: a tick
    assert parse_settings({"timezone": "Europe/London", "run_time": "05:00"}, spec=spec).run_time.hour == 5
    # Helsinki 05:00 is 04:00 in Copenhagen: the DAG does not tick then
    with pytest.raises(ConfigError, match=r"run_time: 05:00 Europe/Helsinki is 04:00 Europe/Copenhagen"):
        parse_settings({"timezone": "Europe/Helsinki", "run_time": "05:00"}, spec=spec)
