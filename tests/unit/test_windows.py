"""Business dates: timezone, cutoff, DST (23 h and 25 h days), weekdays, lookback, start date, manual ranges."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from tillflow.sources.base import Window
from tillflow.specs import AccountSettings
from tillflow.windows import (
    MAX_MANUAL_DAYS,
    Due,
    business_date_of,
    business_day_bounds,
    clip,
    days,
    is_due,
    last_closed_business_date,
    lookback_window,
    manual_window,
)

CPH = "Europe/Copenhagen"
CET_ZONES = ["Europe/Copenhagen", "Europe/Amsterdam", "Europe/Paris"]
MIDNIGHT = time(0, 0)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz))


def settings(**kw) -> AccountSettings:
    base = {"timezone": CPH, "run_time": "07:00", "lookback_days": 3}
    return AccountSettings(**{**base, **kw})


# ---------------------------------------------------------------- DST: exact bounds


@pytest.mark.parametrize("tz", CET_ZONES)
def test_calendar_day_of_spring_forward_has_23_hours_with_midnight_cutoff(tz):
    start, end = business_day_bounds(date(2026, 3, 29), tz, MIDNIGHT)
    assert (start, end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert end - start == timedelta(hours=23)


@pytest.mark.parametrize("tz", CET_ZONES)
def test_calendar_day_of_fall_back_has_25_hours_with_midnight_cutoff(tz):
    start, end = business_day_bounds(date(2026, 10, 25), tz, MIDNIGHT)
    assert (start, end) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert end - start == timedelta(hours=25)


@pytest.mark.parametrize("tz", CET_ZONES)
def test_with_the_default_cutoff_the_short_business_day_is_the_saturday_before(tz):
    # 28 March 05:00 CET → 29 March 05:00 CEST: the switch at 02:00 falls inside business day 28 March
    start, end = business_day_bounds(date(2026, 3, 28), tz)
    assert (start, end) == (utc(2026, 3, 28, 4), utc(2026, 3, 29, 3))
    assert end - start == timedelta(hours=23)
    after_start, after_end = business_day_bounds(date(2026, 3, 29), tz)
    assert (after_start, after_end) == (utc(2026, 3, 29, 3), utc(2026, 3, 30, 3))
    assert after_end - after_start == timedelta(hours=24)


@pytest.mark.parametrize("tz", CET_ZONES)
def test_with_the_default_cutoff_the_long_business_day_is_the_saturday_before(tz):
    start, end = business_day_bounds(date(2026, 10, 24), tz)
    assert (start, end) == (utc(2026, 10, 24, 3), utc(2026, 10, 25, 4))
    assert end - start == timedelta(hours=25)
    after_start, after_end = business_day_bounds(date(2026, 10, 25), tz)
    assert (after_start, after_end) == (utc(2026, 10, 25, 4), utc(2026, 10, 26, 4))
    assert after_end - after_start == timedelta(hours=24)


def test_consecutive_business_days_tile_time_without_gap_or_overlap_across_both_switches():
    day = date(2026, 3, 20)
    prev_end = business_day_bounds(day - timedelta(days=1), CPH)[1]
    while day <= date(2026, 11, 1):
        start, end = business_day_bounds(day, CPH)
        assert start == prev_end, day
        prev_end = end
        day += timedelta(days=1)


@pytest.mark.parametrize(
    "instant, expected",
    [
        # the repeated hour 02:00–03:00 local on 25 October: both passes belong to business day 24 October
        (utc(2026, 10, 25, 0, 30), date(2026, 10, 24)),  # 02:30 CEST
        (utc(2026, 10, 25, 1, 30), date(2026, 10, 24)),  # 02:30 CET (second pass)
        (utc(2026, 10, 25, 3, 59), date(2026, 10, 24)),  # 04:59 CET
        (utc(2026, 10, 25, 4, 0), date(2026, 10, 25)),  # 05:00 CET
        # spring forward: 01:59 CET then 03:00 CEST
        (utc(2026, 3, 29, 0, 59), date(2026, 3, 28)),
        (utc(2026, 3, 29, 2, 59), date(2026, 3, 28)),  # 04:59 CEST
        (utc(2026, 3, 29, 3, 0), date(2026, 3, 29)),  # 05:00 CEST
    ],
)
def test_business_date_of_instants_around_the_switches(instant, expected):
    assert business_date_of(instant, CPH) == expected


def test_every_instant_of_a_business_day_maps_back_to_it_with_the_bounds_agreeing():
    for day in (date(2026, 3, 28), date(2026, 10, 24), date(2026, 11, 20)):
        start, end = business_day_bounds(day, CPH)
        assert business_date_of(start, CPH) == day
        assert business_date_of(end - timedelta(seconds=1), CPH) == day
        assert business_date_of(end, CPH) == day + timedelta(days=1)


# ---------------------------------------------------------------- cutoff


def test_a_sale_at_0230_belongs_to_the_previous_business_day():
    assert business_date_of(local(CPH, 2026, 11, 21, 2, 30), CPH) == date(2026, 11, 20)


def test_a_sale_at_exactly_the_cutoff_belongs_to_the_new_business_day():
    assert business_date_of(local(CPH, 2026, 11, 21, 5, 0), CPH) == date(2026, 11, 21)
    assert business_date_of(local(CPH, 2026, 11, 21, 4, 59, 59), CPH) == date(2026, 11, 20)


def test_business_date_uses_the_accounts_timezone_not_utc():
    # 23:30 UTC on the 20th is 00:30 on the 21st in Copenhagen: still business day 20 (before cutoff)…
    assert business_date_of(utc(2026, 11, 20, 23, 30), CPH) == date(2026, 11, 20)
    # …but with a midnight cutoff it is already the 21st locally, while UTC still says the 20th
    assert business_date_of(utc(2026, 11, 20, 23, 30), CPH, MIDNIGHT) == date(2026, 11, 21)
    assert business_date_of(utc(2026, 11, 20, 23, 30), "UTC", MIDNIGHT) == date(2026, 11, 20)


def test_a_custom_cutoff_with_minutes_is_honoured():
    cutoff = time(4, 30)
    assert business_date_of(local(CPH, 2026, 11, 21, 4, 29), CPH, cutoff) == date(2026, 11, 20)
    assert business_date_of(local(CPH, 2026, 11, 21, 4, 30), CPH, cutoff) == date(2026, 11, 21)
    assert business_day_bounds(date(2026, 11, 20), CPH, cutoff) == (utc(2026, 11, 20, 3, 30), utc(2026, 11, 21, 3, 30))


def test_naive_timestamps_are_refused():
    with pytest.raises(ValueError, match="no timezone"):
        business_date_of(datetime(2026, 11, 21, 2, 30), CPH)
    with pytest.raises(ValueError, match="no timezone"):
        is_due(settings(), datetime(2026, 11, 20, 7))


def test_last_closed_business_date_at_and_just_before_the_cutoff():
    assert last_closed_business_date(local(CPH, 2026, 11, 21, 5, 0), CPH) == date(2026, 11, 20)
    assert last_closed_business_date(local(CPH, 2026, 11, 21, 4, 59), CPH) == date(2026, 11, 19)
    # the 25-hour business day 24 October closes at 05:00 CET = 04:00 UTC, not 03:00 UTC
    assert last_closed_business_date(utc(2026, 10, 25, 3, 30), CPH) == date(2026, 10, 23)
    assert last_closed_business_date(utc(2026, 10, 25, 4, 0), CPH) == date(2026, 10, 24)


# ---------------------------------------------------------------- is_due: weekdays, run time, pause, start date

FRIDAY_0700_CPH = utc(2026, 11, 20, 6)  # Friday 07:00 CET


def test_friday_0700_fetches_thursday():
    s = settings(weekdays=["fri"], lookback_days=1)
    due = is_due(s, FRIDAY_0700_CPH)
    assert due.due, due.reason
    assert lookback_window(s, FRIDAY_0700_CPH) == Window(date(2026, 11, 19), date(2026, 11, 19))


def test_the_weekday_is_the_fetch_day_not_the_sales_day():
    # Thursday is the sales day of a Friday run: an account fetching on Thursdays only is not due on Friday
    due = is_due(settings(weekdays=["thu"]), FRIDAY_0700_CPH)
    assert not due.due
    assert due.reason == "fri is not a fetch day"


def test_the_weekday_is_taken_in_the_accounts_timezone():
    tick = utc(2026, 11, 19, 23, 0)  # Thursday in UTC, Friday 00:00 in Copenhagen
    assert is_due(settings(run_time="00:00", weekdays=["fri"]), tick).due
    not_due = is_due(settings(run_time="00:00", weekdays=["thu"]), tick)
    assert not not_due.due and not_due.reason == "fri is not a fetch day"


def test_the_run_time_hour_must_match_the_local_hour():
    s = settings(run_time="07:00")
    assert is_due(s, utc(2026, 11, 20, 6)).due  # 07:00 CET
    early = is_due(s, utc(2026, 11, 20, 5))
    late = is_due(s, utc(2026, 11, 20, 7))
    assert not early.due and early.reason == "runs at 07:00, tick is 06:00"
    assert not late.due and late.reason == "runs at 07:00, tick is 08:00"


def test_the_run_time_follows_local_summer_time():
    s = settings(run_time="07:00", weekdays=["fri"])
    assert is_due(s, utc(2026, 7, 3, 5)).due  # Friday 07:00 CEST
    assert not is_due(s, utc(2026, 7, 3, 6)).due  # 08:00 CEST


def test_a_paused_account_is_never_due():
    due = is_due(settings(active=False), FRIDAY_0700_CPH)
    assert due == Due(False, "paused")


def test_not_due_before_the_start_date():
    due = is_due(settings(start_date=date(2026, 11, 21)), FRIDAY_0700_CPH)
    assert not due.due
    assert due.reason == "starts on 2026-11-21"
    assert is_due(settings(start_date=date(2026, 11, 20)), FRIDAY_0700_CPH).due


# ---------------------------------------------------------------- lookback and start date


@pytest.mark.parametrize(
    "n, start",
    [(1, date(2026, 11, 19)), (3, date(2026, 11, 17)), (31, date(2026, 10, 20))],
)
def test_lookback_counts_back_from_the_last_closed_day(n, start):
    window = lookback_window(settings(lookback_days=n), FRIDAY_0700_CPH)
    assert window == Window(start, date(2026, 11, 19))
    assert len(days(window)) == n


def test_lookback_argument_overrides_the_setting():
    assert lookback_window(settings(lookback_days=3), FRIDAY_0700_CPH, 1) == Window(
        date(2026, 11, 19), date(2026, 11, 19)
    )


def test_a_window_across_the_fall_back_weekend_counts_calendar_days():
    window = lookback_window(settings(lookback_days=3), utc(2026, 10, 26, 6))  # Monday 07:00 CET
    assert days(window) == [date(2026, 10, 23), date(2026, 10, 24), date(2026, 10, 25)]


def test_a_later_cutoff_than_the_tick_ends_the_window_two_days_back():
    s = settings(business_day_cutoff="06:00", run_time="05:00", lookback_days=1)
    tick = utc(2026, 11, 20, 4)  # Friday 05:00 CET: business day Thursday has not closed until 06:00
    assert is_due(s, tick).due
    assert lookback_window(s, tick) == Window(date(2026, 11, 18), date(2026, 11, 18))


def test_the_window_is_clipped_at_the_start_date():
    s = settings(lookback_days=5, start_date=date(2026, 11, 18))
    assert lookback_window(s, FRIDAY_0700_CPH) == Window(date(2026, 11, 18), date(2026, 11, 19))


def test_a_start_date_on_the_last_day_leaves_one_day():
    s = settings(lookback_days=5, start_date=date(2026, 11, 19))
    assert lookback_window(s, FRIDAY_0700_CPH) == Window(date(2026, 11, 19), date(2026, 11, 19))


def test_a_window_entirely_before_the_start_date_is_none():
    s = settings(lookback_days=5, start_date=date(2026, 11, 20))
    assert lookback_window(s, FRIDAY_0700_CPH) is None


def test_clip_leaves_a_window_after_the_start_date_alone():
    w = Window(date(2026, 11, 10), date(2026, 11, 12))
    assert clip(w, settings(start_date=date(2026, 11, 10))) == w
    assert clip(w, settings()) == w
    assert clip(w, settings(start_date=date(2026, 11, 11))) == Window(date(2026, 11, 11), date(2026, 11, 12))
    assert clip(w, settings(start_date=date(2026, 11, 13))) is None


# ---------------------------------------------------------------- manual ranges


def test_manual_window_single_day_and_range():
    assert manual_window(date(2026, 11, 1)) == Window(date(2026, 11, 1), date(2026, 11, 1))
    assert manual_window(date(2026, 11, 1), date(2026, 11, 30)) == Window(date(2026, 11, 1), date(2026, 11, 30))


def test_manual_window_reversed_range_names_both_dates():
    with pytest.raises(ValueError) as exc:
        manual_window(date(2026, 11, 30), date(2026, 11, 1))
    assert "2026-11-01" in str(exc.value) and "2026-11-30" in str(exc.value)


def test_manual_window_accepts_exactly_the_maximum():
    w = manual_window(date(2026, 1, 1), date(2026, 1, 1) + timedelta(days=MAX_MANUAL_DAYS - 1))
    assert len(days(w)) == MAX_MANUAL_DAYS == 400


def test_manual_window_refuses_more_than_400_days():
    with pytest.raises(ValueError, match="401 days"):
        manual_window(date(2025, 1, 1), date(2025, 1, 1) + timedelta(days=400))


def test_manual_window_too_long_names_the_dates():
    with pytest.raises(ValueError) as exc:
        manual_window(date(2025, 1, 1), date(2026, 2, 5))
    assert "2025-01-01" in str(exc.value) and "2026-02-05" in str(exc.value)


# ---------------------------------------------------------------- intra-day windows and due times


def test_the_open_day_window_holds_today_and_the_lookback_days_before_it():
    from tillflow.windows import open_day_window

    at = local(CPH, 2026, 11, 20, 11, 15)
    assert open_day_window(settings(lookback_days=1), at) == Window(date(2026, 11, 19), date(2026, 11, 20))
    # 02:00 on Saturday still belongs to Friday's business day: Friday stays open until the cutoff
    night = local(CPH, 2026, 11, 21, 2, 0)
    assert open_day_window(settings(lookback_days=1), night) == Window(date(2026, 11, 19), date(2026, 11, 20))
    # never before the start date
    started = settings(lookback_days=3, start_date="2026-11-19")
    assert open_day_window(started, at) == Window(date(2026, 11, 19), date(2026, 11, 20))


@pytest.mark.parametrize("tz", CET_ZONES)
def test_the_open_day_on_dst_days_is_the_same_business_day_all_day(tz):
    from tillflow.windows import open_day_window

    s = settings(timezone=tz, lookback_days=1)
    # the business day of Saturday 2026-10-24 runs 05:00 CEST → Sunday 05:00 CET: 25 hours
    start = local(tz, 2026, 10, 24, 5, 0).astimezone(UTC)
    for hour in range(26):
        at = start + timedelta(hours=hour)
        expect = date(2026, 10, 24) if hour < 25 else date(2026, 10, 25)
        assert open_day_window(s, at).end == expect, (hour, at)
    # the business day of Saturday 2026-03-28 runs 05:00 CET → Sunday 05:00 CEST: 23 hours
    start = local(tz, 2026, 3, 28, 5, 0).astimezone(UTC)
    assert open_day_window(s, start + timedelta(hours=22, minutes=59)).end == date(2026, 3, 28)
    assert open_day_window(s, start + timedelta(hours=23)).end == date(2026, 3, 29)


def test_a_last_success_widens_the_window_to_the_days_missed_since():
    from tillflow.windows import MAX_CATCH_UP_DAYS, flow_window

    s = settings(lookback_days=1)
    at = local(CPH, 2026, 11, 20, 11, 15)
    assert flow_window("open_day", None, s, at) == Window(date(2026, 11, 19), date(2026, 11, 20))
    since = local(CPH, 2026, 11, 16, 22, 0)  # the scheduler was down from Monday evening
    assert flow_window("open_day", None, s, at, since=since) == Window(date(2026, 11, 16), date(2026, 11, 20))
    long_ago = at - timedelta(days=400)
    widest = flow_window("open_day", None, s, at, since=long_ago)
    assert widest.start == date(2026, 11, 20) - timedelta(days=MAX_CATCH_UP_DAYS)
    assert flow_window("snapshot", None, s, at, since=since) == Window(date(2026, 11, 20), date(2026, 11, 20))


def test_every_tick_flows_are_due_on_every_tick_but_never_when_paused():
    from tillflow.windows import due_on_tick

    tick = utc(2026, 11, 22, 13, 45)  # a Sunday: weekdays are run times, not for every-tick flows
    due = due_on_tick(settings(weekdays=["mon"]), "every_tick", tick, last_due_at=tick)
    assert due.due and due.due_at == tick
    assert due_on_tick(settings(active=False), "every_tick", tick, last_due_at=None).reason == "paused"


def test_a_run_time_is_served_once_and_a_missed_one_is_caught_up_once():
    from tillflow.windows import due_on_tick

    s = settings(run_time="07:00")
    seven = local(CPH, 2026, 11, 20, 7, 0).astimezone(UTC)
    nine = seven + timedelta(hours=2)
    known = seven - timedelta(days=30)
    assert due_on_tick(s, "account_run_time", seven, last_due_at=None, known_since=known).due_at == seven
    assert not due_on_tick(s, "account_run_time", seven, last_due_at=seven, known_since=known).due  # a rerun
    missed = due_on_tick(s, "account_run_time", nine, last_due_at=seven - timedelta(days=1), known_since=known)
    assert missed.due_at == seven and missed.reason.startswith("catching up the run due Fri 07:00")
    assert not due_on_tick(s, "account_run_time", nine, last_due_at=seven, known_since=known).due
    # not caught up: a run time from before the account existed, or older than the catch-up limit
    assert not due_on_tick(s, "account_run_time", nine, last_due_at=None, known_since=nine).due
    fridays = settings(run_time="07:00", weekdays=["fri"])
    saturday_night = seven + timedelta(hours=39)  # 39 h after Friday 07:00, the last run time
    args = {"last_due_at": seven - timedelta(days=7), "known_since": known}
    assert due_on_tick(fridays, "account_run_time", saturday_night, **args).due_at == seven
    assert not due_on_tick(fridays, "account_run_time", saturday_night, catch_up=timedelta(hours=12), **args).due


def test_a_run_time_on_a_day_that_is_not_a_fetch_day_is_not_caught_up():
    from tillflow.windows import due_on_tick

    s = settings(run_time="07:00", weekdays=["thu"])
    friday_nine = local(CPH, 2026, 11, 20, 9, 0).astimezone(UTC)
    thursday_seven = local(CPH, 2026, 11, 19, 7, 0).astimezone(UTC)
    due = due_on_tick(s, "account_run_time", friday_nine, last_due_at=None, known_since=thursday_seven)
    assert due.due_at == thursday_seven  # Thursday's run was missed: served on Friday, once
    done = due_on_tick(s, "account_run_time", friday_nine, last_due_at=thursday_seven, known_since=thursday_seven)
    assert not done.due and done.reason == "fri is not a fetch day"
