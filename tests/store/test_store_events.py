"""store/events.py and the ingest's SQL: events() format, cell x window aggregates against pandas, the k
threshold, local-time windows, duplicates."""

from __future__ import annotations

from pathlib import Path

import h3
import numpy as np
import pandas as pd
import pytest

from interestgeo.config import Config
from interestgeo.ingest import ingest_file
from interestgeo.store import Store
from tests._data.cell_windows import expected_cell_windows, sorted_cell_windows

EVENT_DTYPES = {
    "dataset_id": "int32", "event_id": "int64", "user_id": "str", "ts": "datetime64[us, UTC]",
    "local_ts": "datetime64[us]", "tz_offset_min": "Int16", "lat": "float64", "lon": "float64", "text": "str",
    "cell": "int64", "local_hour": "int8", "dow": "int8",
}
OPTIONAL_TEXT = ("item_id", "category", "category_path", "event_type")


def test_events_columns_dtypes_and_order(sample_store: Store) -> None:
    events = sample_store.events()
    assert list(events.columns) == list(EVENT_DTYPES)[:9] + list(OPTIONAL_TEXT) + ["cell", "local_hour", "dow"]
    for column, dtype in EVENT_DTYPES.items():
        assert str(events[column].dtype) == dtype, column
    for column in OPTIONAL_TEXT:
        assert all(v is None or isinstance(v, str) for v in events[column]), column
    assert events["event_id"].is_unique
    key = events[["dataset_id", "user_id", "ts", "event_id"]]
    pd.testing.assert_frame_equal(key, key.sort_values(list(key.columns)).reset_index(drop=True))
    assert len(events) == 300
    expected_cells = [h3.str_to_int(h3.latlng_to_cell(a, b, 10)) for a, b in zip(events["lat"], events["lon"], strict=True)]
    assert events["cell"].tolist() == expected_cells


def test_events_filter_by_dataset(sample_store: Store, tmp_config: Config, fixtures_dir: Path) -> None:
    other = ingest_file(sample_store, fixtures_dir / "unicode.csv", config=tmp_config)
    assert set(sample_store.events()["dataset_id"]) == {1, other.dataset_id}
    assert set(sample_store.events([other.dataset_id])["user_id"]) == {"u1", "u2", "u3", "u4", "u5"}
    assert sample_store.events([]).empty


@pytest.mark.parametrize("window", ["hour", "day", "week"])
@pytest.mark.parametrize("resolution", [6, 7, 8, 9, 5, 10])
def test_cell_aggregates_match_pandas(sample_store: Store, resolution: int, window: str) -> None:
    # 6-9 come from the precomputed table, 5 and 10 are derived from events on the fly.
    got, hidden = sample_store.cell_aggregates(resolution, window, k=1)
    assert hidden == 0
    assert got["cell"].dtype == np.int64
    pd.testing.assert_frame_equal(sorted_cell_windows(got), expected_cell_windows(sample_store.events(), resolution, window))


def test_k_threshold_hides_small_groups_and_counts_them(sample_store: Store) -> None:
    everything, _ = sample_store.cell_aggregates(6, "week", k=1)
    for k in (2, 3, 5):
        shown, hidden = sample_store.cell_aggregates(6, "week", k=k)
        assert (shown["users"] >= k).all()
        assert hidden == int((everything["users"] < k).sum())
        assert len(shown) + hidden == len(everything)
    assert hidden > 0 and len(shown) > 0  # the sample exercises both sides at k=5


def test_time_filtered_counts_match_pandas_and_hide_cells_below_k(sample_store: Store) -> None:
    # The Map's counts with the filter bar's hours and days: only events of those local hours
    # and days count, and a cell with fewer than k people is hidden and counted, not shown.
    hours, days = [17, 18, 19], [1]  # the sample: Tuesday 14:00-19:59
    events = sample_store.events()
    picked = events[events["local_hour"].isin(hours) & events["dow"].isin(days)]
    expected = expected_cell_windows(picked, 7, "week")
    for k in (1, 2, 3):
        shown, hidden = sample_store.time_filtered_cell_counts(7, "week", hours=hours, days_of_week=days, k=k)
        visible = expected[expected["users"] >= k].reset_index(drop=True)
        pd.testing.assert_frame_equal(sorted_cell_windows(shown), visible)
        assert hidden == len(expected) - len(visible)
    assert hidden > 0 and len(shown) > 0  # both sides at k=3
    assert 0 < len(picked) < len(events)
    none, hidden = sample_store.time_filtered_cell_counts(7, "week", hours=hours, days_of_week=[0], k=1)
    assert none.empty and hidden == 0


def test_k_defaults_to_the_privacy_config(tmp_path: Path, demo_sample_csv: Path) -> None:
    config = Config().with_db(tmp_path / "k.duckdb")
    with Store.open(config.store.path, config=config) as store:
        ingest_file(store, demo_sample_csv, config=config)
        everything, _ = store.cell_aggregates(6, "week", k=1)
        shown, hidden = store.cell_aggregates(6, "week")
    assert config.privacy.k_min_users == 10
    assert hidden == int((everything["users"] < 10).sum())
    assert len(shown) == int((everything["users"] >= 10).sum())


def test_one_window_start_and_several_datasets(
    sample_store: Store, tmp_config: Config, demo_sample_csv: Path, tmp_path: Path
) -> None:
    # A second dataset with the same user ids: users are (dataset, user), so they add up.
    copy = tmp_path / "again.csv"
    lines = demo_sample_csv.read_text(encoding="utf-8").splitlines(keepends=True)
    copy.write_text("".join(lines[:1] + lines[1:150] + ["\n"]), encoding="utf-8")
    ingest_file(sample_store, copy, config=tmp_config)
    expected = expected_cell_windows(sample_store.events(), 7, "day")
    both, _ = sample_store.cell_aggregates(7, "day", k=1)
    pd.testing.assert_frame_equal(sorted_cell_windows(both), expected)
    busiest = expected.groupby("window_start")["events"].sum().idxmax()
    one, _ = sample_store.cell_aggregates(7, "day", window_start=busiest, datasets=[1, 2], k=1)
    pd.testing.assert_frame_equal(sorted_cell_windows(one), expected[expected["window_start"] == busiest].reset_index(drop=True))
    only_first, _ = sample_store.cell_aggregates(7, "day", datasets=[1], k=1)
    pd.testing.assert_frame_equal(
        sorted_cell_windows(only_first), expected_cell_windows(sample_store.events([1]), 7, "day")
    )
    assert list(sample_store.window_starts("day")) == sorted(expected["window_start"].unique())



def test_hour_maps_not_precomputed_are_counted_from_events(sample_store: Store) -> None:
    # Default config precomputes hour windows at res 6 only; res 7-9 hours come from the events.
    assert sample_store.precomputed("hour") == (6,)
    assert sample_store.precomputed("day") == (6, 7, 8, 9)
    stored = sample_store.con.execute(
        "SELECT DISTINCT resolution FROM cell_windows WHERE window_size = 'hour' ORDER BY 1").fetchall()
    assert stored == [(6,)]
    events = sample_store.events()
    for resolution in (7, 9):
        expected = expected_cell_windows(events, resolution, "hour")
        got, hidden = sample_store.cell_aggregates(resolution, "hour", k=1)
        assert hidden == 0
        pd.testing.assert_frame_equal(sorted_cell_windows(got), expected)
        busiest = expected.groupby("window_start")["events"].sum().idxmax()
        one, _ = sample_store.cell_aggregates(resolution, "hour", window_start=busiest, k=1)
        pd.testing.assert_frame_equal(
            sorted_cell_windows(one), expected[expected["window_start"] == busiest].reset_index(drop=True))
    assert list(sample_store.window_starts("hour")) == sorted(
        expected_cell_windows(events, 9, "hour")["window_start"].unique())


def test_unknown_window_and_resolution_raise(sample_store: Store) -> None:
    with pytest.raises(ValueError, match="window"):
        sample_store.cell_aggregates(8, "month")
    with pytest.raises(ValueError, match="resolution"):
        sample_store.cell_aggregates(11, "day")


def test_datasets_row(sample_store: Store, demo_sample_csv: Path) -> None:
    row = sample_store.datasets().iloc[0]
    assert list(sample_store.datasets().columns) == [
        "dataset_id", "name", "source", "content_hash", "rows_read", "rows_stored", "rows_rejected",
        "duplicates_skipped", "ts_min", "ts_max", "loaded_at",
    ]
    events = sample_store.events()
    assert (row["name"], row["rows_read"], row["rows_stored"]) == ("nyc-sample", 300, 300)
    assert (row["ts_min"], row["ts_max"]) == (events["ts"].min(), events["ts"].max())
    assert row["source"] == str(demo_sample_csv)


def test_windows_use_local_time_with_odd_offsets(tmp_store: Store, tmp_config: Config, tmp_path: Path) -> None:
    # Half-hour and large offsets: local hour windows start at local :00, e.g. 23:40 UTC at +330.
    path = tmp_path / "offsets.csv"
    rows = [("a", "2012-04-03T23:40:00Z", 330), ("b", "2012-04-03T23:40:00Z", 660), ("c", "2012-04-04T02:10:00Z", -570),
            ("d", "2012-04-08T22:30:00Z", 90), ("a", "2012-04-03T23:59:00Z", 330)]
    path.write_text("user,lat,lon,time,tz_offset_min,text\n"
                    + "".join(f"{u},40.7,-73.9,{t},{o},x\n" for u, t, o in rows))
    ingest_file(tmp_store, path, config=tmp_config)
    events = tmp_store.events()
    assert events["local_ts"].dt.strftime("%H:%M").tolist() == ["05:10", "05:29", "10:40", "16:40", "00:00"]
    for window in ("hour", "day", "week"):
        got, _ = tmp_store.cell_aggregates(9, window, k=1)
        pd.testing.assert_frame_equal(sorted_cell_windows(got), expected_cell_windows(events, 9, window))


def test_duplicates_are_skipped_before_counting(tmp_store: Store, tmp_config: Config, tmp_path: Path) -> None:
    # An exact pair, an exact triple, and a same-user-same-instant pair with other text (both
    # kept): the precomputed counts must equal a count of the events actually stored.
    rows = [
        "u1,2012-04-01T10:00:00Z,40.70,-73.90,Deli",
        "u1,2012-04-01T10:00:00Z,40.70,-73.90,Deli",
        "u2,2012-04-01T11:00:00Z,40.71,-73.91,Bar",
        "u2,2012-04-01T11:00:00Z,40.71,-73.91,Bar",
        "u2,2012-04-01T11:00:00Z,40.71,-73.91,Bar",
        "u3,2012-04-01T12:00:00Z,40.72,-73.92,Park",
        "u3,2012-04-01T12:00:00Z,40.72,-73.92,Gym",
        "u4,2012-04-02T09:00:00Z,40.70,-73.90,Deli",
    ]
    path = tmp_path / "dups.csv"
    path.write_text("user,time,lat,lon,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    report = ingest_file(tmp_store, path, config=tmp_config)
    assert (report.rows_stored, report.duplicates_skipped) == (5, 3)
    events = tmp_store.events()
    assert sorted(zip(events["user_id"], events["text"])) == [
        ("u1", "Deli"), ("u2", "Bar"), ("u3", "Gym"), ("u3", "Park"), ("u4", "Deli")]
    # The first of each duplicate group is kept: event ids follow the file's first occurrences.
    assert sorted(events["event_id"] - events["event_id"].min()) == [0, 2, 5, 6, 7]
    for resolution, window in [(6, "hour"), (9, "day"), (7, "week")]:
        got, _ = tmp_store.cell_aggregates(resolution, window, k=1)
        pd.testing.assert_frame_equal(sorted_cell_windows(got), expected_cell_windows(events, resolution, window))
