"""The cell x window aggregates computed independently (h3-py parents, pandas windows, nunique users):
the reference that the ingest's counting (ingest/aggregate.py) and the store's reads are checked against."""

from __future__ import annotations

import h3
import pandas as pd


def expected_cell_windows(events: pd.DataFrame, resolution: int, window: str) -> pd.DataFrame:
    """The same aggregation computed independently: h3-py parents, pandas windows, nunique users."""
    frame = events.copy()
    frame["cell"] = [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), resolution)) for c in frame["cell"]]
    if window == "week":
        day = frame["local_ts"].dt.floor("D")
        frame["window_start"] = day - pd.to_timedelta(day.dt.day_of_week, unit="D")
    else:
        frame["window_start"] = frame["local_ts"].dt.floor({"hour": "h", "day": "D"}[window])
    frame["user_key"] = frame["dataset_id"].astype(str) + ":" + frame["user_id"]
    out = frame.groupby(["cell", "window_start"]).agg(events=("event_id", "size"), users=("user_key", "nunique"))
    return out.reset_index().sort_values(["window_start", "cell"]).reset_index(drop=True)


def sorted_cell_windows(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values(["window_start", "cell"]).reset_index(drop=True)
    return frame.astype({"window_start": "datetime64[us]", "events": "int64", "users": "int64"})

