"""ingest/aggregate.py: the cell x window counts against an independent pandas computation."""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd
import pytest

from interestgeo.ingest import aggregate
from interestgeo.ingest.aggregate import cell_window_counts
from tests._data.cell_windows import expected_cell_windows, sorted_cell_windows


def test_cell_window_counts_matches_pandas_on_random_data() -> None:
    rng = np.random.default_rng(3)
    n = 5_000
    lat, lon = rng.normal(40.73, 0.05, n), rng.normal(-73.95, 0.05, n)
    cells = np.array([h3.str_to_int(h3.latlng_to_cell(a, b, 10)) for a, b in zip(lat, lon, strict=True)])
    users = rng.integers(0, 40, n)
    hours = rng.integers(372_000, 372_000 + 24 * 60, n)
    local_ts = pd.to_datetime(hours * 3600, unit="s").astype("datetime64[us]")
    events = pd.DataFrame({"dataset_id": 1, "event_id": np.arange(n), "user_id": users.astype(str),
                           "cell": cells, "local_ts": local_ts})
    got = cell_window_counts(users, cells, hours, (6, 8))
    for (resolution, window), part in got.groupby(["resolution", "window_size"], observed=True):
        expected = expected_cell_windows(events, int(resolution), str(window))
        pd.testing.assert_frame_equal(sorted_cell_windows(part[["cell", "window_start", "events", "users"]]), expected)


def test_cell_window_counts_hour_resolutions_subset() -> None:
    rng = np.random.default_rng(5)
    n = 2_000
    cells = np.array([h3.str_to_int(h3.latlng_to_cell(a, b, 10))
                      for a, b in zip(rng.normal(40.73, 0.05, n), rng.normal(-73.95, 0.05, n), strict=True)])
    users, hours = rng.integers(0, 30, n), rng.integers(372_000, 372_000 + 24 * 30, n)
    full = cell_window_counts(users, cells, hours, (6, 7, 8, 9))
    sparse = cell_window_counts(users, cells, hours, (6, 7, 8, 9), hour_resolutions=(7,))
    combos = set(map(tuple, sparse[["window_size", "resolution"]].drop_duplicates().astype(str).to_numpy()))
    assert ("hour", "7") in combos and ("hour", "6") not in combos and ("hour", "9") not in combos
    assert ("day", "9") in combos and ("week", "6") in combos
    kept = (full["window_size"] != "hour") | (full["resolution"] == 7)
    pd.testing.assert_frame_equal(sparse, full[kept].reset_index(drop=True))


def test_cell_window_counts_sort_path_equals_bincount_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sparse (window, cell) groups are counted by sorting instead of bincount; both must agree.
    rng = np.random.default_rng(11)
    n = 3_000
    cells = np.array([h3.str_to_int(h3.latlng_to_cell(a, b, 10))
                      for a, b in zip(rng.normal(40.73, 0.05, n), rng.normal(-73.95, 0.05, n), strict=True)])
    users, hours = rng.integers(0, 25, n), rng.integers(372_000, 372_000 + 24 * 400, n)
    dense = cell_window_counts(users, cells, hours, (6, 9))
    monkeypatch.setattr(aggregate, "_BINCOUNT_DENSITY", 0.0)
    pd.testing.assert_frame_equal(cell_window_counts(users, cells, hours, (6, 9)), dense)
