"""Revenue entered by hand or imported from an Excel file (the seeds' "add revenue manually"). No Airflow import.

A value is (account, target key, business date, hour or the whole day, amount). The hour is the local
clock hour the user sees (``14`` or ``14:00``); on the autumn DST day the repeated hour needs its offset
(``02:00+02:00`` or ``02:00+01:00``), and an hour the spring change skips is refused. Hours before the
cutoff belong to the business day before (``01:00`` on business day 18 November is 19 November 01:00).
It is stored as the hour of the business day (:mod:`tillflow.sources.kassatellen`) with origin
``manual`` or ``excel``: keep_manual protects it from the POS, and the next run delivers it.

Target keys are checked against the target's own list (an unknown group is refused, naming it). An
Excel file is checked whole first: any bad row refuses the whole file, each bad row listed with its row
number, column and reason; a good file lands in one transaction. ``dry_run`` shows what would change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tillflow.errors import ConfigError
from tillflow.sources.kassatellen import business_day_start, hour_of_business_day

COLUMNS = ("account", "group", "date", "hour", "amount")
#: other names of the target-key column (Planday calls its keys revenue units)
ALIASES = {"unit": "group", "revenue group": "group", "revenue_group": "group"}
REQUIRED = ("account", "group", "date", "amount")
_HOUR = re.compile(r"^(\d{1,2})(?::00)?(?::00)?([+-]\d{2}:\d{2})?$")
MAX_AMOUNT = Decimal("99999999.99")


@dataclass(frozen=True)
class Entry:
    account_key: str
    target_key: str
    business_date: date
    hour: int | None  # hour of the business day; None = the whole day
    amount: Decimal
    hour_text: str = ""  # as the user wrote it, for messages
    row: int = 0  # the Excel row it came from (0: the CLI)

    def describe(self) -> str:
        when = self.business_date.isoformat() + (f" {self.hour_text}" if self.hour is not None else " (day)")
        return f"{self.account_key} group {self.target_key} {when} = {self.amount}"


def parse_amount(value: Any, where: str = "amount") -> Decimal:
    text = str(value).strip() if value is not None else ""
    if not text:
        raise ConfigError(f"{where}: empty")
    try:
        amount = Decimal(text.replace(",", ".")) if isinstance(value, str) else Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{where}: not an amount: {value!r}") from None
    if not amount.is_finite():
        raise ConfigError(f"{where}: not an amount: {value!r}")
    if amount < 0:
        raise ConfigError(f"{where}: negative amount {amount}")
    if amount != amount.quantize(Decimal("0.01")):
        raise ConfigError(f"{where}: more than 2 decimals: {value!r}")
    if amount > MAX_AMOUNT:
        raise ConfigError(f"{where}: too large: {value!r}")
    return amount.quantize(Decimal("0.01"))


def parse_day(value: Any, where: str = "date") -> date:
    if isinstance(value, datetime):
        if value.time() != time(0):
            raise ConfigError(f"{where}: a date without a time, got {value!r}")
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value or "").strip()
    for candidate in (text, text.removesuffix(" 00:00:00")):
        try:
            return date.fromisoformat(candidate)
        except ValueError:
            continue
    raise ConfigError(f"{where}: expected YYYY-MM-DD, got {value!r}")


def parse_hour(value: Any, day: date, tz: str, cutoff: time, where: str = "hour") -> int | None:
    """A local clock hour of business day ``day`` → hour of the business day (None when empty)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, time):
        value = value.strftime("%H:%M")
    text = str(value).strip()
    m = _HOUR.match(text)
    if not m or not 0 <= int(m.group(1)) <= 23:
        raise ConfigError(f"{where}: expected a local hour 0-23 (14, 14:00 or 02:00+01:00), got {value!r}")
    h, offset = int(m.group(1)), m.group(2)
    calendar_day = day + timedelta(days=1) if time(h) < cutoff else day
    zone = ZoneInfo(tz)
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
        instant = datetime.combine(calendar_day, time(h)) - delta
        instant = instant.replace(tzinfo=UTC)
        if instant.astimezone(zone).utcoffset() != delta or instant.astimezone(zone).hour != h:
            raise ConfigError(f"{where}: {text} is not a local time in {tz} on {calendar_day}")
    else:
        candidates = {
            datetime.combine(calendar_day, time(h), tzinfo=zone).replace(fold=f).astimezone(UTC) for f in (0, 1)
        }
        valid = [c for c in candidates if c.astimezone(zone).hour == h]
        if not valid:
            raise ConfigError(f"{where}: {h:02d}:00 does not exist on {calendar_day} in {tz} (DST change)")
        if len(valid) > 1:
            shown = " or ".join(
                f"{h:02d}:00{c.astimezone(zone).strftime('%z')[:3]}:{c.astimezone(zone).strftime('%z')[3:]}"
                for c in sorted(valid)
            )
            raise ConfigError(f"{where}: {h:02d}:00 happens twice on {calendar_day} in {tz}; write {shown}")
        instant = valid[0]
    got_day, ordinal = hour_of_business_day(instant, tz, cutoff)
    if got_day != day:
        raise ConfigError(f"{where}: {text} lies outside business day {day}")
    return ordinal


def hour_label(day: date, hour: int | None, tz: str, cutoff: time) -> str:
    """The local clock hour (with its offset) of an hour of the business day; '' for the whole day."""
    if hour is None:
        return ""
    local = (business_day_start(day, tz, cutoff) + timedelta(hours=hour)).astimezone(ZoneInfo(tz))
    z = local.strftime("%z")
    return f"{local:%H:%M}{z[:3]}:{z[3:]}"


def check_targets(entries: list[Entry], target_keys: set[str]) -> list[str]:
    return sorted({e.target_key for e in entries if e.target_key not in target_keys})


@dataclass
class Plan:
    """What an import or entry would change: (entry, current value or None)."""

    changes: list[tuple[Entry, Decimal | None]]
    unchanged: int

    def lines(self) -> list[str]:
        out = []
        for entry, current in self.changes:
            was = "new" if current is None else f"was {current}"
            out.append(f"{entry.describe()} ({was})")
        return out


def plan_changes(store, accounts: dict[str, Any], entries: list[Entry]) -> Plan:
    changes, unchanged = [], 0
    current: dict[str, dict] = {}
    for e in entries:
        acc = accounts[e.account_key]
        if e.account_key not in current:
            current[e.account_key] = {
                (r["target_key"], r["business_date"], r["hour"]): r["amount"] for r in store.revenue(acc.id)
            }
        now = current[e.account_key].get((e.target_key, e.business_date, e.hour))
        if now == e.amount:
            unchanged += 1
        else:
            changes.append((e, now))
    return Plan(changes, unchanged)


def apply(store, accounts: dict[str, Any], entries: list[Entry], *, origin: str) -> None:
    """Write every entry in one transaction (all or nothing)."""
    with store.conn.transaction():
        for e in entries:
            store.set_revenue_by_hand(
                accounts[e.account_key].id, e.target_key, e.business_date, e.amount, origin=origin, hour=e.hour
            )


def read_excel(path: Path, accounts: dict[str, Any]) -> tuple[list[Entry], list[str]]:
    """Every row of the first sheet → entries, and every problem as ``row N, column C: reason``.

    Columns (header row, any order, case-insensitive): account, group, date, hour (optional, may be
    empty: the whole day), amount. A duplicate (account, group, date, hour) is a problem too."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # not a zip, not xlsx, missing
        raise ConfigError(f"file: cannot read {path} as .xlsx: {type(exc).__name__}: {exc}") from None
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = next(rows, None)
    if header is None:
        raise ConfigError(f"file: {path.name} is empty (need a header row: {', '.join(COLUMNS)})")
    names = [str(h).strip().lower() if h is not None else "" for h in header]
    names = [ALIASES.get(n, n) for n in names]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ConfigError(
            f"file: {path.name} misses column(s) {', '.join(missing)} (need {', '.join(REQUIRED)}; hour optional)"
        )
    col = {name: names.index(name) for name in COLUMNS if name in names}
    entries: list[Entry] = []
    problems: list[str] = []
    seen: dict[tuple, int] = {}
    for number, values in enumerate(rows, start=2):
        if values is None or all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            continue
        cell = {name: (values[i] if i < len(values) else None) for name, i in col.items()}
        row_problems: list[str] = []
        key = str(cell["account"] or "").strip()
        account = accounts.get(key)
        if account is None:
            row_problems.append(f"column account: unknown account {cell['account']!r}")
        group = str(cell["group"]).strip() if cell["group"] is not None else ""
        if isinstance(cell["group"], float) and cell["group"].is_integer():
            group = str(int(cell["group"]))
        if not group:
            row_problems.append("column group: empty")
        day = hour = amount = None
        try:
            day = parse_day(cell["date"], "column date")
        except ConfigError as exc:
            row_problems.append(str(exc))
        try:
            amount = parse_amount(cell["amount"], "column amount")
        except ConfigError as exc:
            row_problems.append(str(exc))
        hour_text = "" if cell.get("hour") is None else str(cell["hour"]).strip()
        if day is not None and account is not None:
            s = account.settings
            try:
                hour = parse_hour(cell.get("hour"), day, s.timezone, s.business_day_cutoff, "column hour")
            except ConfigError as exc:
                row_problems.append(str(exc))
        if not row_problems:
            ident = (key, group, day, hour)
            if ident in seen:
                row_problems.append(f"duplicate of row {seen[ident]} (same account, group, date and hour)")
            else:
                seen[ident] = number
        if row_problems:
            problems += [f"row {number}, {p}" for p in row_problems]
            continue
        entries.append(Entry(key, group, day, hour, amount, hour_text, row=number))
    book.close()
    if not entries and not problems:
        problems.append(f"file: {path.name} has no data rows")
    return entries, problems
