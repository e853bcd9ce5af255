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


def _flow(**change) -> dict:
    """A spec change that alters the first flow."""
    flow = {**raw_spec()["flows"][0], **change}
    return {"flows": [flow]}


def write_spec(tmp_path: Path, data: dict, name: str = "variant.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------- the ajour spec


def test_the_ajour_spec_loads_with_its_own_limits(spec):
    assert spec.integration == "ajour_to_planday"
    assert (spec.source, spec.target, spec.flow_names) == ("ajour", "planday", ["revenue"])
    flow = spec.flow("revenue")
    assert (flow.kind, flow.window_strategy, flow.due) == ("revenue", "closed_days", "account_run_time")
    assert flow.earliest_run_time == time(5, 0)
    assert flow.business_day_cutoff == time(5, 0)
    assert (flow.lookback_days.min, flow.lookback_days.default, flow.lookback_days.max) == (1, 3, 31)
    assert spec.dags() == {"ajour_to_planday": [flow]}
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
        ({"integration": "AjourPlanday"}, "integration", "pattern"),
        ({"flows": ["orders"]}, "flows.0", "valid dictionary"),
        (_flow(kind="orders_v9"), "flows.0.kind", "unknown flow kind 'orders_v9'"),
        (_flow(schedule="every hour"), "flows.0.schedule", "not a 5-field cron expression"),
        (_flow(schedule="0 5-23 * *"), "flows.0.schedule", "not a 5-field cron expression"),
        (_flow(window="snapshot"), "flows.0", "window 'snapshot' does not fit kind 'revenue'"),
        (_flow(earliest_run_time="5 o'clock"), "flows.0.earliest_run_time", "expected HH:MM"),
        (_flow(lookback_days={"default": 40, "max": 31}), "flows.0.lookback_days", "min <= default <= max"),
        (_flow(lookback_days={"default": 3, "max": 31, "step": 1}), "flows.0.lookback_days.step", "Extra inputs"),
        (_flow(colour="blue"), "flows.0.colour", "Extra inputs"),
        ({"flows": [_flow()["flows"][0]] * 2}, "flows", "duplicate flow name(s) revenue"),
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
    broken.write_text("integration: [unclosed\n")
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
    data = {**raw_spec(), **_flow(lookback_days={"default": 2, "min": 1, "max": 7})}
    narrow = load_spec(write_spec(tmp_path, data))
    with pytest.raises(
        ConfigError, match=r"^lookback_days: must be between 1 and 7 for ajour_to_planday flow revenue, got 8$"
    ):
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


# ---------------------------------------------------------------- flows and DAGs


def test_flows_that_share_a_schedule_share_a_dag_and_others_get_their_own(tmp_path):
    base = raw_spec()
    first = base["flows"][0]
    data = {
        **base,
        "integration": "ccv_salespos_to_eaccounting",
        "flows": [
            {**first, "name": "orders"},
            {**first, "name": "orders_late"},
            {
                **first,
                "name": "products",
                "schedule": "15 */2 * * *",
                "source": "eaccounting",
                "target": "ccv_salespos",
            },
            {**first, "name": "stock", "schedule": "*/30 * * * *", "dag_id": "ccv_salespos_stock_to_ccv"},
        ],
    }
    spec = load_spec(write_spec(tmp_path, data))
    dags = {dag_id: [f.name for f in flows] for dag_id, flows in spec.dags().items()}
    assert dags == {
        "ccv_salespos_to_eaccounting_orders": ["orders", "orders_late"],
        "ccv_salespos_to_eaccounting_products": ["products"],
        "ccv_salespos_stock_to_ccv": ["stock"],
    }
    products = spec.flow("products")
    assert (spec.source_of(products), spec.target_of(products)) == ("eaccounting", "ccv_salespos")
    assert "source:eaccounting" in spec.tags_for([products]) and "target:ccv_salespos" in spec.tags_for([products])


def test_a_flow_with_an_unknown_source_is_named(tmp_path):
    data = {**raw_spec(), **_flow(source="lightspeed")}
    with pytest.raises(ConfigError, match=r"flows\.0\.source: unknown source 'lightspeed'"):
        load_spec(write_spec(tmp_path, data))


def test_an_account_setting_for_a_flow_is_checked_by_its_kind(spec):
    assert parse_settings({"flows": {"revenue": {"vat": "excl"}}}, spec=spec).flows == {"revenue": {"vat": "excl"}}
    with pytest.raises(ConfigError, match=r"settings\.flows\.revenue: vat: Input should be 'incl' or 'excl'"):
        parse_settings({"flows": {"revenue": {"vat": "both"}}}, spec=spec)
    with pytest.raises(ConfigError, match=r"flows: ajour_to_planday has no flow orders"):
        parse_settings({"flows": {"orders": {}}}, spec=spec)


def test_a_setting_a_flow_kind_needs_is_refused_when_missing(spec, monkeypatch):
    from pydantic import BaseModel, ConfigDict
    from tillflow.flows import get_kind

    class Needs(BaseModel):
        model_config = ConfigDict(extra="forbid")
        team_id: int

    monkeypatch.setattr(type(get_kind("revenue")), "settings_model", Needs)
    with pytest.raises(ConfigError, match=r"settings\.flows\.revenue: team_id: Field required"):
        parse_settings({}, spec=spec)
    assert parse_settings({"flows": {"revenue": {"team_id": 7}}}, spec=spec).flows["revenue"] == {"team_id": 7}


def test_a_run_time_off_the_dags_ticks_is_refused(spec):
    with pytest.raises(ConfigError, match=r"^run_time: 07:30 .* when ajour_to_planday does not tick \(0 5-23"):
        parse_settings({"run_time": "07:30"}, spec=spec)


def test_a_flow_kind_declares_what_the_platform_needs():
    from tillflow.flows import get_kind

    assert get_kind("revenue").describe() == {
        "kind": "revenue",
        "record": "RevenueLine",
        "table": "tillflow.revenue",
        "key": ["account_id", "target_key", "business_date", "hour"],
        "windows": ["closed_days", "open_day"],
        "gate": "with_data",
        "delivery": "keyed_upsert",
        "settings": ["enabled", "notify_email", "vat"],
    }
    assert get_kind("revenue_hourly").describe()["windows"] == ["open_day", "closed_days"]


def test_every_flow_kind_names_a_record_model_of_its_own():
    from pydantic import BaseModel
    from tillflow.flows import get_kind, kind_names

    records = {name: get_kind(name).record for name in kind_names()}
    assert {n: r.__name__ for n, r in records.items()} == {
        "revenue": "RevenueLine",
        "revenue_hourly": "RevenueLine",
        "clock_times": "ShiftRecord",
        "ledger": "SaleOrder",
        "orders": "CcvOrder",
        "products": "ArticleRecord",
        "stock": "ArticleRecord",
    }
    for name, record in records.items():
        assert issubclass(record, BaseModel) and record is not get_kind(name).settings_model, name
