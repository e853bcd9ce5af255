"""Business dates: account timezone, business-day cutoff, lookback, DST. No Airflow import.

A business day ``d`` runs from ``d`` at the cutoff (05:00 by default) to ``d + 1`` at the cutoff, in
the account's timezone: bars close after midnight, and sales before the cutoff belong to the previous
business day. On DST days it lasts 23 or 25 hours. Windows are computed from a run's *logical date*
(never from ``data_interval_*``: cron schedules in Airflow 3 have zero-width intervals).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
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
    if (local.hour, local.minute) != (settings.run_time.hour, settings.run_time.minute):
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


# ------------------------------------------------------------------ flow windows and due times


def open_day_window(settings: AccountSettings, at: datetime, lookback_days: int | None = None) -> Window | None:
    """The business day still open at ``at`` plus the N closed days before it (intra-day flows)."""
    n = settings.lookback_days if lookback_days is None else lookback_days
    today = business_date_of(at, settings.timezone, settings.business_day_cutoff)
    return clip(Window(today - timedelta(days=n), today), settings)


def snapshot_window(settings: AccountSettings, at: datetime) -> Window:
    """State-like data (stock, products): the business day of ``at`` only, as a label of the snapshot."""
    today = business_date_of(at, settings.timezone, settings.business_day_cutoff)
    return Window(today, today)


def flow_window(
    strategy: str, flow, settings: AccountSettings, at: datetime, *, since: datetime | None = None
) -> Window | None:
    """The window of one flow at ``at``. ``since`` (the last successful run) widens a window so that
    days missed while nothing ran are read again, at most ``MAX_CATCH_UP_DAYS`` back."""
    if strategy == "snapshot":
        return snapshot_window(settings, at)
    if strategy == "open_day":
        window = open_day_window(settings, at)
    elif strategy == "closed_days":
        window = lookback_window(settings, at)
    else:
        raise ValueError(f"unknown window strategy {strategy!r}")
    if window is None or since is None:
        return window
    floor = business_date_of(at, settings.timezone, settings.business_day_cutoff) - timedelta(days=MAX_CATCH_UP_DAYS)
    missed_from = max(business_date_of(since, settings.timezone, settings.business_day_cutoff), floor)
    if missed_from < window.start:
        return clip(Window(missed_from, window.end), settings)
    return window


MAX_CATCH_UP_DAYS = 31


def missed_run_times(settings: AccountSettings, after: datetime, before: datetime) -> list[datetime]:
    """The account's run times (its local time on its weekdays) strictly between ``after`` (the run time
    last served) and ``before`` (the one served now), at most ``MAX_CATCH_UP_DAYS`` back — the runs that
    never happened (the scheduler was down over several of them)."""
    zone = ZoneInfo(settings.timezone)
    first = max(_aware(after), _aware(before) - timedelta(days=MAX_CATCH_UP_DAYS)).astimezone(zone).date()
    out, day = [], first
    while day <= _aware(before).astimezone(zone).date():
        when = datetime.combine(day, settings.run_time, tzinfo=zone)
        if WEEKDAYS[day.weekday()] in settings.weekdays and after < when < before:
            if not (settings.start_date and day < settings.start_date):
                out.append(when)
        day += timedelta(days=1)
    return out


def run_time_window(
    strategy: str, flow, settings: AccountSettings, due_at: datetime, *, last_due_at: datetime | None
) -> Window | None:
    """The window of an ``account_run_time`` flow served for ``due_at``: its own window, widened to cover the
    windows of run times missed since ``last_due_at`` — two run times missed in a row lose no day."""
    window = flow_window(strategy, flow, settings, due_at)
    if window is None or last_due_at is None:
        return window
    missed = missed_run_times(settings, last_due_at, due_at)
    earlier = flow_window(strategy, flow, settings, missed[0]) if missed else None
    if earlier is not None and earlier.start < window.start:
        return clip(Window(earlier.start, window.end), settings)
    return window


@dataclass(frozen=True)
class DueAt:
    """Whether an account's flow runs on a tick, why, and the due time it serves (``None``: not due)."""

    due_at: datetime | None
    reason: str

    @property
    def due(self) -> bool:
        return self.due_at is not None


def latest_run_time(settings: AccountSettings, at: datetime, *, within: timedelta) -> datetime | None:
    """The latest of the account's run times (its local time on its weekdays) at or before ``at``,
    not older than ``within`` and not before its start date."""
    zone = ZoneInfo(settings.timezone)
    local = _aware(at).astimezone(zone)
    for back in range(within.days + 2):
        day = local.date() - timedelta(days=back)
        if WEEKDAYS[day.weekday()] not in settings.weekdays:
            continue
        if settings.start_date and day < settings.start_date:
            return None
        when = datetime.combine(day, settings.run_time, tzinfo=zone)
        if when <= at:
            return when if at - when <= within else None
    return None


def due_on_tick(
    settings: AccountSettings,
    due: str,
    tick: datetime,
    *,
    last_due_at: datetime | None,
    known_since: datetime | None = None,
    catch_up: timedelta = timedelta(hours=72),
    backfill: bool = False,
) -> DueAt:
    """Whether a scheduled (or backfill) tick runs an account's flow.

    ``every_tick`` flows run every active account on every tick. ``account_run_time`` flows run at the
    account's own time on its weekdays (the *fetch* day: Friday 07:00 fetches Thursday), and a run time
    that passed since the last successful run — the scheduler was down, a run overran — is served at the
    next tick, once: ``last_due_at`` is the run time last served. A run time from before the account
    existed (``known_since``) is not caught up; a backfill tick runs exactly the accounts due at it.
    """
    if not settings.active:
        return DueAt(None, "paused")
    local = _aware(tick).astimezone(ZoneInfo(settings.timezone))
    if settings.start_date and local.date() < settings.start_date:
        return DueAt(None, f"starts on {settings.start_date.isoformat()}")
    if due == "every_tick":
        return DueAt(tick, f"every tick ({local:%a %H:%M %Z})")
    exact = is_due(settings, tick)
    if backfill or exact.due:
        if exact.due and not backfill and last_due_at is not None and last_due_at >= tick:
            return DueAt(None, f"already ran for {local:%a %H:%M %Z}")
        return DueAt(tick if exact.due else None, exact.reason)
    missed = latest_run_time(settings, tick, within=catch_up)
    if missed is None or (last_due_at is not None and last_due_at >= missed):
        return DueAt(None, exact.reason)
    if known_since is not None and missed < known_since:
        return DueAt(None, exact.reason)
    when = missed.astimezone(ZoneInfo(settings.timezone))
    return DueAt(missed, f"catching up the run due {when:%a %H:%M %Z}")


def activation_due(settings: AccountSettings, activation: Any, tick: datetime, *, state: dict | None) -> DueAt:
    """Whether an account's activation backfill runs at ``tick``: ``delay_minutes`` after its activation
    (``settings.activated_at``), then every ``retry_minutes`` after an attempt that did not succeed (plan
    records the next attempt in ``flow_state.backfill_due_at``), never again once it succeeded for this
    activation (``backfill_done_at`` after ``activated_at``). Re-activation after a pause starts over."""
    if not settings.active:
        return DueAt(None, "paused")
    activated = settings.activated_at
    if activated is None:
        return DueAt(None, "never activated")
    state = state or {}
    done = state.get("backfill_done_at")
    if done is not None and done >= activated:
        return DueAt(None, f"activation backfill done at {done:%Y-%m-%d %H:%M %Z}")
    first = activated + timedelta(minutes=activation.delay_minutes)
    retry_at = state.get("backfill_due_at")
    due = retry_at if retry_at is not None and retry_at > first else first
    if _aware(tick) < due:
        return DueAt(None, f"activation backfill due at {due.astimezone(UTC):%Y-%m-%d %H:%M UTC}")
    return DueAt(due, f"activation backfill (activated {activated.astimezone(UTC):%Y-%m-%d %H:%M UTC})")


def activation_window(settings: AccountSettings, activation: Any, at: datetime, flow: str = "") -> Window | None:
    """The past ``days`` business days before the one open at ``at``, and that one; or, for
    ``since: fiscal_year_start``, from the flow's ``fiscal_year_start`` setting through yesterday."""
    today = business_date_of(at, settings.timezone, settings.business_day_cutoff)
    if activation.since == "fiscal_year_start":
        raw = (settings.flows.get(flow) or {}).get("fiscal_year_start")
        if not raw:
            raise ValueError(f"settings.flows.{flow}.fiscal_year_start: required for the history import")
        start = raw if isinstance(raw, date) else date.fromisoformat(str(raw))
        return clip(Window(start, today - timedelta(days=1)), settings) if start < today else None
    return clip(Window(today - timedelta(days=activation.days), today), settings)
