"""Time windows: the one home of the window sizes and of "a week starts on Monday".

Every window is in the event's local time (schema.py: `local_ts`). Windows are keyed by integers
so that grouping is a numpy bincount, not a datetime operation: hours and days since 1970-01-01,
weeks by the day number of their Monday, months since 1970-01. Ingest (cell x window counts), the
store's SQL (`date_trunc`, which also starts weeks on Monday), scoring (stored window vectors) and
analytics (drift, playback) all cut time the same way because they all read it here.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "WINDOWS",
    "COUNTED_WINDOWS",
    "SPAN_WINDOWS",
    "WINDOW_HOURS",
    "MONDAY_OFFSET_H",
    "check_window",
    "monday_on_or_before",
    "weekday",
    "window_keys",
    "window_starts",
    "window_floor",
]

# Every window size the product knows, shortest first.
WINDOWS = ("hour", "day", "week", "month")
# The sizes of a fixed number of hours: counted per cell at ingest and filtered in the store's SQL.
COUNTED_WINDOWS = ("hour", "day", "week")
WINDOW_HOURS = {"hour": 1, "day": 24, "week": 168}
# Two "windows" that span a dataset's whole time, for the aggregates `interestgeo score` stores so
# that region answers without a date filter read a few rows instead of every event: "all" (one
# window, starting 1970-01-01) and "hour_of_week" (168 windows, keyed by the hour since Monday
# 00:00, starting on Monday 1970-01-05 + that many hours). Not offered where a user picks a window.
SPAN_WINDOWS = ("all", "hour_of_week")
# 1970-01-01 was a Thursday: the first Monday, 1970-01-05, is 4 days (96 hours) after the epoch.
MONDAY_OFFSET_H = 4 * 24


def check_window(window: str, allowed: tuple[str, ...] = WINDOWS) -> None:
    """ValueError unless `window` is one of `allowed` (checked before it is put into SQL text)."""
    if window not in allowed:
        raise ValueError(f"window must be one of {', '.join(allowed)}, got {window!r}")


def monday_on_or_before(days: np.ndarray) -> np.ndarray:
    """Day numbers (since 1970-01-01) -> the day number of the Monday on or before each."""
    return (np.asarray(days) + 3) // 7 * 7 - 3


def weekday(days: np.ndarray) -> np.ndarray:
    """Day numbers (since 1970-01-01) -> day of week, Monday 0 ... Sunday 6."""
    return (np.asarray(days) + 3) % 7


def window_keys(local_ns: np.ndarray, window: str) -> np.ndarray:
    """(N,) int64 key of each naive local datetime64[ns]'s window (see `window_starts`)."""
    if window == "hour":
        return local_ns.astype("datetime64[h]").astype(np.int64)
    if window == "month":
        return local_ns.astype("datetime64[M]").astype(np.int64)
    if window == "all":
        return np.zeros(len(local_ns), dtype=np.int64)
    if window == "hour_of_week":
        return (local_ns.astype("datetime64[h]").astype(np.int64) - MONDAY_OFFSET_H) % WINDOW_HOURS["week"]
    days = local_ns.astype("datetime64[D]").astype(np.int64)
    if window == "day":
        return days
    if window == "week":
        return monday_on_or_before(days)
    raise ValueError(f"unknown window {window!r}; windows are {', '.join(WINDOWS + SPAN_WINDOWS)}")


def window_starts(keys: np.ndarray, window: str) -> np.ndarray:
    """Window keys (from `window_keys`) -> naive local datetime64[ns] window starts."""
    if window == "hour_of_week":
        return (np.asarray(keys, dtype=np.int64) + MONDAY_OFFSET_H).astype("datetime64[h]").astype("datetime64[ns]")
    unit = {"hour": "h", "day": "D", "week": "D", "month": "M", "all": "D"}[window]
    return np.asarray(keys, dtype=np.int64).astype(f"datetime64[{unit}]").astype("datetime64[ns]")


def window_floor(day: np.datetime64, window: str) -> np.datetime64:
    """Start day (local, naive datetime64[D]) of the day/week/month window holding local day `day`."""
    if window == "month":
        return np.datetime64(np.datetime64(day, "M"), "D")
    d = np.datetime64(day, "D").astype(np.int64)
    if window == "week":
        d = monday_on_or_before(d)
    return np.datetime64(int(d), "D")
