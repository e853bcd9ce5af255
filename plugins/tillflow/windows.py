"""Business dates: account timezone, business-day cutoff, lookback, DST. No Airflow import.

A business day ``d`` runs from ``d`` at the cutoff (05:00 by default) to ``d + 1`` at the cutoff, in
the account's timezone: bars close after midnight, and sales before the cutoff belong to the previous
business day. On DST days it lasts 23 or 25 hours. Windows are computed from a run's *logical date*
(never from ``data_interval_*``: cron schedules in Airflow 3 have zero-width intervals).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from tillflow.sources.base import Window
from tillflow.specs import WEEKDAYS, AccountSettings

MAX_MANUAL_DAYS = 400


def _aware(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no timezone")
    return ts


def business_date_of(ts: datetime, tz: str, cutoff: time = time(5, 0)) -> date:
    """The business date an instant belongs to (local wall time minus the cutoff)."""
    local = _aware(ts).astimezone(ZoneInfo(tz)).replace(tzinfo=None)
    return (local - timedelta(hours=cutoff.hour, minutes=cutoff.minute)).date()


def business_day_bounds(day: date, tz: str, cutoff: time = time(5, 0)) -> tuple[datetime, datetime]:
    """UTC start (inclusive) and end (exclusive) of a business day."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, cutoff, tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), cutoff, tzinfo=zone).astimezone(UTC)
    return start, end


def last_closed_business_date(ts: datetime, tz: str, cutoff: time = time(5, 0)) -> date:
    """The most recent business day that has fully closed at ``ts``."""
    return business_date_of(ts, tz, cutoff) - timedelta(days=1)


@dataclass(frozen=True)
class Due:
    due: bool
    reason: str


def is_due(settings: AccountSettings, logical_date: datetime) -> Due:
    """Whether a scheduled tick at ``logical_date`` runs this account.

    The weekday is the *fetch* day in the account's timezone, not the sales day (Friday 07:00 fetches
    Thursday). The tick's local hour must equal the account's run time.
    """
    if not settings.active:
        return Due(False, "paused")
    local = _aware(logical_date).astimezone(ZoneInfo(settings.timezone))
    if settings.start_date and local.date() < settings.start_date:
        return Due(False, f"starts on {settings.start_date.isoformat()}")
    weekday = WEEKDAYS[local.weekday()]
    if weekday not in settings.weekdays:
        return Due(False, f"{weekday} is not a fetch day")
    if local.hour != settings.run_time.hour:
        return Due(False, f"runs at {settings.run_time:%H:%M}, tick is {local:%H:%M}")
    return Due(True, f"due at {local:%a %H:%M %Z}")


def lookback_window(
    settings: AccountSettings, logical_date: datetime, lookback_days: int | None = None
) -> Window | None:
    """The previous N closed business days at ``logical_date``, never before the start date.

    ``None`` when the whole window lies before the account's start date.
    """
    n = lookback_days or settings.lookback_days
    end = last_closed_business_date(logical_date, settings.timezone, settings.business_day_cutoff)
    start = end - timedelta(days=n - 1)
    return clip(Window(start, end), settings)


def clip(window: Window, settings: AccountSettings) -> Window | None:
    """Cut a window at the account's start date (no data exists before it)."""
    if settings.start_date and window.start < settings.start_date:
        if window.end < settings.start_date:
            return None
        return Window(settings.start_date, window.end)
    return window


def manual_window(date_from: date, date_to: date | None = None) -> Window:
    """A window asked for by hand (a manual run or the CLI); refuses absurd ranges with a clear error."""
    date_to = date_to or date_from
    if date_to < date_from:
        raise ValueError(f"date_to {date_to} is before date_from {date_from}")
    days = (date_to - date_from).days + 1
    if days > MAX_MANUAL_DAYS:
        raise ValueError(f"date range {date_from}..{date_to} is {days} days, longer than {MAX_MANUAL_DAYS}; split it")
    return Window(date_from, date_to)


def days(window: Window) -> list[date]:
    return [window.start + timedelta(days=i) for i in range((window.end - window.start).days + 1)]
