from datetime import UTC, datetime, timedelta, timezone

import pytest

from afhub.quotas.periods import (
    CalendarMonth,
    InvalidPeriod,
    RollingWindow,
    Window,
    overlap_seconds,
    parse_period,
)


def test_calendar_month_window_and_reset():
    w = parse_period("month").window(datetime(2026, 11, 25, 17, 3, tzinfo=UTC))
    assert w.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert w.end == w.resets_at == datetime(2026, 12, 1, tzinfo=UTC)


def test_december_rolls_into_next_year():
    w = CalendarMonth().window(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert w.resets_at == datetime(2027, 1, 1, tzinfo=UTC)


def test_month_uses_utc_even_for_other_timezones():
    # 2026-12-01 01:00 at UTC+2 is still November in UTC
    at = datetime(2026, 12, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert CalendarMonth().window(at).start == datetime(2026, 11, 1, tzinfo=UTC)


def test_default_period_is_calendar_month():
    assert parse_period(None) == CalendarMonth()


def test_rolling_window():
    period = parse_period("rolling:7d")
    assert isinstance(period, RollingWindow)
    at = datetime(2026, 11, 25, tzinfo=UTC)
    w = period.window(at)
    assert (w.start, w.end, w.resets_at) == (at - timedelta(days=7), at, None)
    assert parse_period("rolling:12h").length == timedelta(hours=12)
    assert period.describe() == "rolling 7 days"


@pytest.mark.parametrize(
    "spec",
    ["", "weekly", "rolling:0d", "rolling:-1d", "rolling:7", "rolling:7w", 7, "rolling:400d"],
)
def test_bad_periods_are_rejected(spec):
    with pytest.raises(InvalidPeriod):
        parse_period(spec)


def test_naive_instants_are_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        CalendarMonth().window(datetime(2026, 1, 1))


def test_overlap_seconds():
    w = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), None)
    before = datetime(2025, 12, 31, 23, tzinfo=UTC)
    inside = datetime(2026, 1, 1, 2, tzinfo=UTC)
    assert overlap_seconds(before, inside, w) == 2 * 3600
    assert overlap_seconds(before, before + timedelta(minutes=30), w) == 0
