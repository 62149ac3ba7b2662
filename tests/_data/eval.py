"""Tiny hand-built check-in histories for the evaluation tests (split, metrics, baselines).

Built in the store.events() format, so the split sees exactly what the store hands it. Times
are hours after a fixed start, which makes the 24 h trajectory cut easy to read in a test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from interestgeo.cells import latlng_to_cell

START = pd.Timestamp("2012-04-02 12:00", tz="UTC")


def make_events(rows: Sequence[tuple[str, float, str, float, float]], category: dict[str, str] | None = None) -> pd.DataFrame:
    """rows: (user_id, hours after START, venue id, lat, lon). Venue text = its id; category =
    `category[venue]` (default: the venue id). Returned sorted like store.events()."""
    frame = pd.DataFrame(rows, columns=["user_id", "hours", "item_id", "lat", "lon"])
    frame["ts"] = START + pd.to_timedelta(frame["hours"], unit="h")
    frame["dataset_id"] = np.int32(1)
    frame["event_id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    frame["tz_offset_min"] = pd.array([-240] * len(frame), dtype="Int16")
    frame["local_ts"] = (frame["ts"] + pd.Timedelta(minutes=-240)).dt.tz_localize(None)
    frame["text"] = frame["item_id"]
    names = category or {}
    frame["category"] = [names.get(item, item) for item in frame["item_id"]]
    frame["category_path"] = None
    frame["event_type"] = None
    frame["cell"] = latlng_to_cell(frame["lat"].to_numpy(), frame["lon"].to_numpy(), 10)
    frame["local_hour"] = frame["local_ts"].dt.hour.astype("int8")
    frame["dow"] = frame["local_ts"].dt.day_of_week.astype("int8")
    frame = frame.drop(columns="hours")
    return frame.sort_values(["dataset_id", "user_id", "ts", "event_id"], kind="stable").reset_index(drop=True)


def random_events(n_users: int = 30, n_venues: int = 25, per_user: int = 40, seed: int = 0) -> pd.DataFrame:
    """A seeded random history: users hop between venues with gaps from minutes to days."""
    rng = np.random.default_rng(seed)
    venue_lat = 40.7 + rng.random(n_venues) * 0.1
    venue_lon = -74.0 + rng.random(n_venues) * 0.1
    rows = []
    for u in range(n_users):
        hours = np.cumsum(rng.choice([0.5, 2.0, 6.0, 30.0, 80.0], size=per_user)) + rng.random() * 500
        venues = rng.integers(0, n_venues, size=per_user)
        rows += [(f"u{u}", float(h), f"v{v}", venue_lat[v], venue_lon[v]) for h, v in zip(hours, venues)]
    return make_events(rows, category={f"v{v}": f"c{v % 4}" for v in range(n_venues)})
