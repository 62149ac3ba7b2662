"""Time windows against pandas' calendar: weeks start on Monday, months on the 1st, keys round-trip
to their window starts, and ingest's hour-based week (MONDAY_OFFSET_H) cuts where the day-based one does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interestgeo.windows import (
    COUNTED_WINDOWS,
    MONDAY_OFFSET_H,
    WINDOW_HOURS,
    WINDOWS,
    check_window,
    monday_on_or_before,
    weekday,
    window_floor,
    window_keys,
    window_starts,
)

# Two years of local times every 7 h 13 min: every weekday, hour and month boundary is crossed.
TIMES = pd.date_range("1969-12-20", "1972-01-10", freq="433min")


def test_window_starts_of_the_keys_are_pandas_calendar_starts():
    local = TIMES.to_numpy("datetime64[ns]")
    expected = {
        "hour": TIMES.floor("h"),
        "day": TIMES.floor("D"),
        "week": TIMES.to_period("W-SUN").start_time,  # weeks ending Sunday start on Monday
        "month": TIMES.to_period("M").start_time,
    }
    assert set(expected) == set(WINDOWS)
    for window, starts in expected.items():
        got = window_starts(window_keys(local, window), window)
        np.testing.assert_array_equal(got, starts.to_numpy("datetime64[ns]"), err_msg=window)


def test_weekday_is_monday_zero_and_the_monday_is_on_or_before():
    days = TIMES.floor("D").to_numpy("datetime64[D]").astype(np.int64)
    np.testing.assert_array_equal(weekday(days), TIMES.day_of_week)
    mondays = monday_on_or_before(days)
    assert (weekday(mondays) == 0).all() and ((days - mondays) >= 0).all() and ((days - mondays) < 7).all()


def test_the_hour_based_week_of_ingest_cuts_on_the_same_mondays():
    hours = TIMES.floor("h").to_numpy("datetime64[h]").astype(np.int64)
    week_hours = (hours - MONDAY_OFFSET_H) // WINDOW_HOURS["week"] * WINDOW_HOURS["week"] + MONDAY_OFFSET_H
    days = window_keys(TIMES.to_numpy("datetime64[ns]"), "week")
    np.testing.assert_array_equal(week_hours, days * 24)
    assert tuple(WINDOW_HOURS) == COUNTED_WINDOWS


def test_window_floor_is_the_start_day_of_the_window_holding_the_day():
    day = np.datetime64("2026-12-06")  # a Sunday
    assert window_floor(day, "day") == np.datetime64("2026-12-06")
    assert window_floor(day, "week") == np.datetime64("2026-11-30")
    assert window_floor(day, "month") == np.datetime64("2026-12-01")


def test_an_unknown_window_is_one_clear_error():
    with pytest.raises(ValueError, match="window must be one of hour, day, week, got 'month'"):
        check_window("month", COUNTED_WINDOWS)
    with pytest.raises(ValueError, match="unknown window 'year'"):
        window_keys(TIMES.to_numpy("datetime64[ns]"), "year")
