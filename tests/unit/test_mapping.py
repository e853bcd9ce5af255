"""Mapping POS locations to revenue units: validation report, summing with Decimal, inactive and unmapped keys."""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal

import pytest
from tillflow.errors import NeedsMapping
from tillflow.mapping import MappingRule, apply_mapping, rules_by_key, validate_mapping
from tillflow.records import RefItem, RevenueLine, TargetRow

D1 = date(2026, 11, 19)
D2 = date(2026, 11, 20)


def item(key: str) -> RefItem:
    return RefItem(key=key, name=f"name of {key}")


def line(key: str, incl: str, excl: str | None = None, *, day: date = D1, hour: int | None = None) -> RevenueLine:
    return RevenueLine(
        source_key=key, business_date=day, hour=hour, amount_incl=incl, amount_excl=excl if excl is not None else incl
    )


def rules(*pairs: tuple[str, str | None]) -> dict[str, MappingRule]:
    return rules_by_key(MappingRule(s, t) for s, t in pairs)


# ---------------------------------------------------------------- validate_mapping


def test_validate_sorts_every_source_key_into_exactly_one_bucket():
    report = validate_mapping(
        [
            MappingRule("bar", "U1"),
            MappingRule("terrace", "U1"),
            MappingRule("kitchen", None),
            MappingRule("cellar", "U9"),  # U9 is not a Planday unit
            MappingRule("closed-shop", "U2"),  # the POS no longer lists it
        ],
        [item("bar"), item("terrace"), item("kitchen"), item("cellar"), item("pop-up"), item("club")],
        [item("U1"), item("U2")],
    )
    assert report.mapped == {"bar": "U1", "terrace": "U1"}
    assert report.inactive == ["kitchen"]
    assert report.unmapped == ["pop-up", "club"]
    assert report.unknown_targets == {"cellar": "U9"}
    assert report.stale == ["closed-shop"]
    assert report.complete is False


def test_validate_is_complete_when_every_key_is_mapped_or_inactive():
    report = validate_mapping(
        [MappingRule("bar", "U1"), MappingRule("kitchen", None)], [item("bar"), item("kitchen")], [item("U1")]
    )
    assert report.complete
    assert (report.unmapped, report.unknown_targets, report.stale) == ([], {}, [])


def test_unknown_targets_alone_make_the_mapping_incomplete():
    report = validate_mapping([MappingRule("bar", "U7")], [item("bar")], [item("U1")])
    assert report.unknown_targets == {"bar": "U7"}
    assert report.mapped == {}
    assert not report.complete


def test_without_a_target_list_targets_are_not_checked():
    report = validate_mapping([MappingRule("bar", "U7")], [item("bar")])
    assert report.mapped == {"bar": "U7"}
    assert report.complete


def test_stale_rules_do_not_make_the_mapping_incomplete_and_are_sorted():
    report = validate_mapping(
        [MappingRule("zeta", "U1"), MappingRule("alpha", None), MappingRule("bar", "U1")], [item("bar")], [item("U1")]
    )
    assert report.stale == ["alpha", "zeta"]
    assert report.complete


# ---------------------------------------------------------------- apply_mapping


def test_several_locations_sum_into_one_unit_exactly():
    rows, ignored = apply_mapping(
        [line("bar", "0.10"), line("terrace", "0.20"), line("club", "99.99")],
        rules(("bar", "U1"), ("terrace", "U1"), ("club", "U2")),
        vat="incl",
    )
    assert ignored == 0
    assert rows == [
        TargetRow(target_key="U1", business_date=D1, hour=None, amount=Decimal("0.30")),
        TargetRow(target_key="U2", business_date=D1, hour=None, amount=Decimal("99.99")),
    ]
    assert rows[0].amount == Decimal("0.30") and str(rows[0].amount) == "0.30"
    assert all(isinstance(r.amount, Decimal) for r in rows)


def test_a_thousand_cents_sum_without_float_drift():
    lines = [line(f"loc{i}", "0.01", "0.01") for i in range(1000)]
    rows, _ = apply_mapping(lines, rules(*((f"loc{i}", "U1") for i in range(1000))), vat="incl")
    assert [r.amount for r in rows] == [Decimal("10.00")]


def test_float_inputs_become_exact_decimals():
    rows, _ = apply_mapping(
        [line("bar", 0.1), line("terrace", 0.2)], rules(("bar", "U1"), ("terrace", "U1")), vat="incl"
    )
    assert rows[0].amount == Decimal("0.30")


@pytest.mark.parametrize("vat, expected", [("incl", Decimal("250.00")), ("excl", Decimal("200.00"))])
def test_vat_choice_picks_the_incl_or_excl_amount(vat, expected):
    rows, _ = apply_mapping(
        [line("bar", "125.00", "100.00"), line("terrace", "125.00", "100.00")],
        rules(("bar", "U1"), ("terrace", "U1")),
        vat=vat,
    )
    assert [r.amount for r in rows] == [expected]


def test_inactive_lines_are_counted_and_dropped():
    rows, ignored = apply_mapping(
        [line("bar", "10.00"), line("kitchen", "5.00"), line("kitchen", "7.00", day=D2)],
        rules(("bar", "U1"), ("kitchen", None)),
        vat="incl",
    )
    assert ignored == 2
    assert rows == [TargetRow(target_key="U1", business_date=D1, amount=Decimal("10.00"))]


def test_unmapped_keys_raise_naming_every_key_sorted():
    with pytest.raises(NeedsMapping) as exc:
        apply_mapping(
            [line("zulu", "1"), line("bar", "1"), line("alpha", "1"), line("zulu", "2", day=D2), line("kitchen", "1")],
            rules(("bar", "U1"), ("kitchen", None)),
            vat="incl",
            kind="location",
        )
    assert exc.value.kind == "location"
    assert exc.value.keys == ["alpha", "zulu"]
    assert "unmapped location(s): alpha, zulu" in str(exc.value)


def test_an_unmapped_key_without_lines_does_not_block():
    rows, ignored = apply_mapping([], rules(("bar", "U1")), vat="incl")
    assert (rows, ignored) == ([], 0)


def test_hours_stay_separate_from_each_other_and_from_the_day():
    rows, _ = apply_mapping(
        [
            line("bar", "1.00", hour=10),
            line("terrace", "2.00", hour=10),
            line("bar", "4.00", hour=11),
            line("bar", "8.00"),
        ],
        rules(("bar", "U1"), ("terrace", "U1")),
        vat="incl",
    )
    assert [(r.hour, r.amount) for r in rows] == [(None, Decimal("8.00")), (10, Decimal("3.00")), (11, Decimal("4.00"))]


def test_days_stay_separate():
    rows, _ = apply_mapping(
        [line("bar", "1.00", day=D2), line("bar", "2.00", day=D1)], rules(("bar", "U1")), vat="incl"
    )
    assert [(r.business_date, r.amount) for r in rows] == [(D1, Decimal("2.00")), (D2, Decimal("1.00"))]


def test_output_is_sorted_by_unit_day_hour_whatever_the_input_order():
    lines = [
        line(src, f"{i}.00", day=day, hour=hour)
        for i, (src, day, hour) in enumerate(
            [
                ("b", D2, 13),
                ("a", D1, 9),
                ("c", D2, 1),
                ("b", D1, 23),
                ("a", D2, 9),
                ("c", D1, 5),
            ],
            start=1,
        )
    ]
    mapping = rules(("a", "U2"), ("b", "U1"), ("c", "U1"))
    expected, _ = apply_mapping(lines, mapping, vat="incl")
    keys = [(r.target_key, r.business_date, r.hour) for r in expected]
    assert keys == sorted(keys)
    assert keys[0] == ("U1", D1, 5)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = lines[:]
        rng.shuffle(shuffled)
        assert apply_mapping(shuffled, mapping, vat="incl")[0] == expected


def test_hour_zero_and_the_whole_day_sort_deterministically():
    lines = [line("bar", "1.00", hour=0), line("bar", "2.00")]
    mapping = rules(("bar", "U1"))
    first, _ = apply_mapping(lines, mapping, vat="incl")
    second, _ = apply_mapping(list(reversed(lines)), mapping, vat="incl")
    assert first == second
