"""Mapping of source keys (POS locations, revenue groups…) to target keys (revenue units…). No Airflow import.

A source key is *mapped* to one target key, or explicitly *inactive* (its data is ignored on
purpose). Anything else that carries data is *unmapped*, and the account needs mapping before it
syncs: a clear status, never a silent drop. Several source keys may feed one target key: they sum.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from tillflow.errors import NeedsMapping
from tillflow.records import RefItem, RevenueLine, TargetRow


@dataclass(frozen=True)
class MappingRule:
    source_key: str
    target_key: str | None  # None = inactive

    @property
    def inactive(self) -> bool:
        return self.target_key is None


@dataclass
class MappingReport:
    """What a set of rules does with a list of source items (the "test settings" screen)."""

    mapped: dict[str, str] = field(default_factory=dict)
    inactive: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    unknown_targets: dict[str, str] = field(default_factory=dict)  # source key → target key not in target
    stale: list[str] = field(default_factory=list)  # rules for source keys the POS no longer lists

    @property
    def complete(self) -> bool:
        return not self.unmapped and not self.unknown_targets


def rules_by_key(rules: Iterable[MappingRule]) -> dict[str, MappingRule]:
    return {r.source_key: r for r in rules}


def validate_mapping(
    rules: Iterable[MappingRule],
    source_items: Iterable[RefItem],
    target_items: Iterable[RefItem] | None = None,
) -> MappingReport:
    """Check rules against what the source (and, if given, the target) lists right now."""
    by_key = rules_by_key(rules)
    source_keys = [i.key for i in source_items]
    target_keys = None if target_items is None else {i.key for i in target_items}
    report = MappingReport()
    for key in source_keys:
        rule = by_key.get(key)
        if rule is None:
            report.unmapped.append(key)
        elif rule.inactive:
            report.inactive.append(key)
        elif target_keys is not None and rule.target_key not in target_keys:
            report.unknown_targets[key] = rule.target_key
        else:
            report.mapped[key] = rule.target_key
    report.stale = sorted(set(by_key) - set(source_keys))
    return report


def _hour_key(hour: int | None) -> int:
    return -1 if hour is None else hour  # the whole-day row sorts before hour 0


def apply_mapping(
    lines: Iterable[RevenueLine],
    rules: Mapping[str, MappingRule],
    *,
    vat: Literal["incl", "excl"],
    kind: str = "location",
) -> tuple[list[TargetRow], int]:
    """Sum revenue lines into target rows (per target key, day and hour).

    Returns the rows and how many lines were dropped because their source key is inactive.
    Raises :class:`NeedsMapping` naming every unmapped source key that carries data.
    """
    totals: dict[tuple[str, object, int | None], Decimal] = defaultdict(lambda: Decimal("0.00"))
    unmapped: set[str] = set()
    ignored = 0
    for line in lines:
        rule = rules.get(line.source_key)
        if rule is None:
            unmapped.add(line.source_key)
            continue
        if rule.inactive:
            ignored += 1
            continue
        totals[(rule.target_key, line.business_date, line.hour)] += line.amount(vat)
    if unmapped:
        raise NeedsMapping(kind, sorted(unmapped))
    rows = [
        TargetRow(target_key=k, business_date=d, hour=h, amount=amount.quantize(Decimal("0.01")))
        for (k, d, h), amount in sorted(totals.items(), key=lambda kv: (kv[0][0], kv[0][1], _hour_key(kv[0][2])))
    ]
    return rows, ignored
