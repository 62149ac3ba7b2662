"""The store: events() format, cell x window aggregates against pandas, the k threshold, deletes."""

from __future__ import annotations

from pathlib import Path

import duckdb
import h3
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from cell_windows_data import expected_cell_windows, sorted_cell_windows

from interestgeo.config import Config
from interestgeo.ingest import ingest_file
from interestgeo.score import RecencySource, score_store
from interestgeo.store import SCHEMA_VERSION, Store, _schema, adapted_checkpoint_name
from interestgeo.store._db import vectors_from_arrow
from interestgeo.text import embed_texts, encoder_for

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


def test_delete_dataset_removes_everything_derived(sample_store: Store, tmp_config: Config, tmp_path: Path) -> None:
    # Scored first (recency vectors: event, user x window and cell x window vectors, topics, the
    # text cache), with a calibration and an adapted checkpoint, so every derived table has rows.
    encoder = encoder_for(tmp_config.text)
    score_store(sample_store, tmp_config, encoder=encoder,
                source=RecencySource(lambda texts: embed_texts(sample_store, encoder, texts, warn=None)))
    sample_store.write_calibration(1, "recency", pd.Timestamp("2012-04-10", tz="UTC").to_pydatetime(), 0.5, 4.0, 10,
                                   0.3, 0.2, None, "{}")
    folder = tmp_path / "adapted"
    folder.mkdir()
    sample_store.add_checkpoint(adapted_checkpoint_name("nyc-sample"), str(folder), "{}", "{}")
    tables = [r[0] for r in sample_store.con.execute(
        "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'dataset_id' AND NOT internal "
        "AND database_name = current_database() ORDER BY 1").fetchall()]
    assert {"event_vectors", "user_window_vectors", "cell_window_vectors", "dataset_calibration"} <= set(tables)

    def rows(table: str) -> int:
        return sample_store.con.execute(f"SELECT count(*) FROM {table} WHERE dataset_id = 1").fetchall()[0][0]

    assert [table for table in tables if not rows(table)] == ["rejects"]  # the sample has no bad rows
    assert sample_store.embedding_count(encoder.model_id) > 0
    assert sample_store.delete_dataset(1) is True
    assert {table: rows(table) for table in tables} == {table: 0 for table in tables}
    assert sample_store.embedding_count(encoder.model_id) == 0  # the texts were this dataset's alone
    assert sample_store.checkpoints().empty and not folder.exists()
    assert sample_store.delete_dataset(1) is False


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


def test_read_only_open(tmp_path: Path, sample_store: Store) -> None:
    with pytest.raises(FileNotFoundError):
        Store.open(tmp_path / "nope.duckdb", read_only=True)
    sample_store.close()
    with Store.open(sample_store.path, read_only=True) as store:
        assert len(store.events()) == 300
        assert store.base_resolution == 10


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


def _cell_rows(resolutions: list[int], events: int) -> tuple[dict[str, object], np.ndarray]:
    """One cell_window_vectors row per resolution, `events` in each (a marker of which write it came from)."""
    n = len(resolutions)
    columns = {
        "dataset_id": np.ones(n, dtype=np.int32),
        "resolution": np.array(resolutions, dtype=np.int8),
        "window_size": ["week"] * n,
        "window_start": np.full(n, np.datetime64("2012-04-02", "us")),
        "cell": np.arange(n, dtype=np.int64),
        "events": np.full(n, events, dtype=np.int32),
        "users": np.full(n, 5, dtype=np.int32),
        "coherence": np.ones(n, dtype=np.float32),
    }
    return columns, np.ones((n, 3), dtype=np.float32)


def test_cell_window_vectors_replaced_for_several_resolutions_at_once(tmp_store: Store) -> None:
    columns, vectors = _cell_rows([8, 9], events=1)
    tmp_store.replace_window_vectors("cell_window_vectors", "week", columns, vectors, datasets=[1], resolution=[8, 9])
    columns, vectors = _cell_rows([9], events=2)  # only resolution 9 is replaced
    tmp_store.replace_window_vectors("cell_window_vectors", "week", columns, vectors, datasets=[1], resolution=[9])
    for resolution, events in ((8, 1), (9, 2)):
        frame, stored, _ = tmp_store.window_vectors("cell_window_vectors", "week", resolution=resolution, k=0)
        assert frame["events"].tolist() == [events] and stored.shape == (1, 3)


def test_analytics_tables_created_in_a_rolled_back_transaction_are_created_again(tmp_store: Store) -> None:
    with pytest.raises(RuntimeError):
        with tmp_store.transaction():
            tmp_store.ensure_analytics_schema()
            raise RuntimeError("rolled back")
    tmp_store.ensure_analytics_schema()
    assert tmp_store.record_score_run("test", None, 1, 1, 1.0) == 1


def test_files_that_store_local_hour_and_dow_keep_working(
    tmp_config: Config, demo_sample_csv: Path, sample_store: Store
) -> None:
    # A file from before local_hour and dow became generated columns stores them: ingest must
    # still fill them (NOT NULL there) and every read must give the same values as a new file.
    old_schema = _schema.CORE_TABLES[2].replace(
        "GENERATED ALWAYS AS (hour(local_ts)) VIRTUAL", "NOT NULL"
    ).replace("GENERATED ALWAYS AS (isodow(local_ts) - 1) VIRTUAL", "NOT NULL")
    assert "GENERATED" not in old_schema and "events" in old_schema
    path = tmp_config.store.path.with_name("old.duckdb")
    con = duckdb.connect(str(path))
    con.execute(old_schema)
    con.close()
    with Store.open(path, config=tmp_config) as old:
        ingest_file(old, demo_sample_csv, config=tmp_config, dataset="nyc-sample")
        stored = old.events()
        generated = old.con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events' AND is_generated"
        ).fetchone()[0]
    assert generated == 0
    new = sample_store.events()
    pd.testing.assert_frame_equal(stored.drop(columns=["event_id"]), new.drop(columns=["event_id"]))
    assert new["local_hour"].tolist() == new["local_ts"].dt.hour.tolist()
    assert new["dow"].tolist() == new["local_ts"].dt.day_of_week.tolist()


def test_a_version_0_file_is_migrated_on_a_write_open_and_read_as_is_read_only(tmp_path: Path) -> None:
    # A file from before schema versions, with the window-key columns events once had.
    path = tmp_path / "v0.duckdb"
    con = duckdb.connect(str(path))
    con.execute(_schema.CORE_TABLES[2])
    con.execute("ALTER TABLE events ADD COLUMN week_start TIMESTAMP")
    con.close()
    with Store.open(path, read_only=True) as old:
        assert old.schema_version == 0
    with Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert "week_start" not in store.events().columns
        assert not _schema.has_column(store.con, "events", "week_start")
    with Store.open(path) as again:  # migrated once
        assert again.schema_version == SCHEMA_VERSION


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


def test_vectors_from_arrow_scatters_selected_rows_across_chunks() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 3)).astype(np.float32)
    chunks = [vectors[:3], vectors[3:3], vectors[3:]]  # an empty chunk in the middle, as Arrow may give
    column = pa.chunked_array([
        pa.ListArray.from_arrays(pa.array(np.arange(0, (len(c) + 1) * 3, 3, dtype=np.int32)), pa.array(c.reshape(-1)))
        for c in chunks
    ])
    np.testing.assert_array_equal(vectors_from_arrow(column, 7), vectors)
    rows = np.array([6, 0, 4, 2])
    np.testing.assert_array_equal(vectors_from_arrow(column, 7, rows), vectors[rows])
    every = np.array([3, 6, 0, 5, 1, 4, 2])  # all rows, reordered (a whole load)
    np.testing.assert_array_equal(vectors_from_arrow(column, 7, every), vectors[every])
    assert vectors_from_arrow(column, 7, rows[:0]).shape == (0, 3)


def test_topic_similarities_are_stored_with_the_vectors_and_dropped_with_their_topics(sample_store: Store) -> None:
    # sims given: stored and read back aligned like scored_events; not given: NaN rows; new topics
    # make every stored similarity meaningless (NULL) until the vectors are written again
    events = sample_store.events()
    rng = np.random.default_rng(2)
    order = rng.permutation(len(events))
    with_sims, without = order[:40], order[40:50]
    vectors = rng.normal(size=(len(events), 4)).astype(np.float32)
    sims = rng.normal(size=(len(events), 3)).astype(np.float32)
    ids, datasets = events["event_id"].to_numpy(), events["dataset_id"].to_numpy()
    sample_store.write_topics(["a", "b", "c"], "phrases", np.eye(3, 4, dtype=np.float32))
    sample_store.write_event_vectors(datasets[with_sims], ids[with_sims], np.zeros(40), vectors[with_sims], sims[with_sims])
    sample_store.write_event_vectors(datasets[without], ids[without], np.zeros(10), vectors[without])
    frame, got = sample_store.scored_event_sims()
    scored_frame, _ = sample_store.scored_events()
    pd.testing.assert_frame_equal(frame, scored_frame)
    row = {event_id: i for i, event_id in enumerate(ids)}
    expected = np.full((len(frame), 3), np.nan, dtype=np.float32)
    for i, event_id in enumerate(frame["event_id"]):
        if row[event_id] in set(with_sims.tolist()):
            expected[i] = sims[row[event_id]]
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got).any(axis=1).sum() == 10
    sample_store.write_topics(["a", "b"], "phrases", np.eye(2, 4, dtype=np.float32))
    _, got = sample_store.scored_event_sims()
    assert np.isnan(got).all()


def test_missing_topic_similarities_are_filled_from_the_vectors_in_batches(sample_store: Store) -> None:
    events = sample_store.events()
    ids, datasets = events["event_id"].to_numpy(), events["dataset_id"].to_numpy()
    vectors = np.random.default_rng(4).normal(size=(len(events), 4)).astype(np.float32)
    topics = np.eye(3, 4, dtype=np.float32)
    sample_store.write_event_vectors(datasets[:7], ids[:7], np.zeros(7), vectors[:7], vectors[:7] @ topics.T)
    sample_store.write_event_vectors(datasets[7:], ids[7:], np.zeros(len(ids) - 7), vectors[7:])  # none stored
    sample_store.write_topics(["a", "b", "c"], "phrases", topics)  # (drops the first 7's too)
    filled = sample_store.fill_topic_sims(lambda v: v @ topics.T + 1.0, batch=3)  # +1: see what was filled
    assert filled == len(ids)
    frame, sims = sample_store.scored_event_sims()
    rows = [int(np.flatnonzero(ids == i)[0]) for i in frame["event_id"]]
    np.testing.assert_allclose(sims, vectors[rows] @ topics.T + 1.0, rtol=1e-6)
    assert sample_store.fill_topic_sims(lambda v: v @ topics.T) == 0  # nothing left to fill


def test_event_vectors_come_in_the_asked_order_or_not_at_all(sample_store: Store) -> None:
    events = sample_store.events()
    ids, datasets = events["event_id"].to_numpy(), events["dataset_id"].to_numpy()
    vectors = np.random.default_rng(3).normal(size=(len(events), 5)).astype(np.float32)
    sample_store.write_event_vectors(datasets[::-1], ids[::-1], np.zeros(len(ids)), vectors[::-1])
    for wanted in (np.array([ids[7], ids[2], ids[30]]), ids[::-1], np.roll(ids, 5)):  # few (a join), most (a scan)
        rows = [int(np.flatnonzero(ids == i)[0]) for i in wanted]
        np.testing.assert_array_equal(sample_store.event_vectors(wanted), vectors[rows])
    with pytest.raises(LookupError, match="1 of 2 events have no interest vector"):
        sample_store.event_vectors(np.array([ids[0], ids.max() + 1]))


def test_a_file_from_before_topic_similarities_reads_and_gains_the_column_on_write(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with Store.open(path) as store:
        store.ensure_analytics_schema()
        store.con.execute("ALTER TABLE event_vectors DROP COLUMN topic_sims")
        store.con.execute("INSERT INTO event_vectors VALUES (1, 5, 0, [1.0, 0.0])")
    with Store.open(path, read_only=True) as store:  # cannot add the column: reads without it
        frame, sims = store.scored_event_sims()
        assert sims.shape == (len(frame), 0)
        assert store.event_vectors(np.array([5])).tolist() == [[1.0, 0.0]]
    with Store.open(path) as store:
        store.write_event_vectors(np.array([1]), np.array([6]), np.array([0]), np.array([[0.0, 1.0]]), np.array([[0.5]]))
        rows = store.con.execute("SELECT event_id, topic_sims FROM event_vectors ORDER BY event_id").fetchall()
    assert rows == [(5, None), (6, [0.5])]


def test_scored_events_align_vectors_with_events(sample_store: Store) -> None:
    # Vectors written in shuffled order for all but a few events: each comes back on its event's
    # row, in events() order, and events without one are left out.
    events = sample_store.events()
    rng = np.random.default_rng(1)
    chosen = rng.permutation(len(events))[: len(events) - 5]
    vectors = rng.normal(size=(len(chosen), 4)).astype(np.float32)
    sample_store.write_event_vectors(events["dataset_id"].to_numpy()[chosen], events["event_id"].to_numpy()[chosen],
                                     np.arange(len(chosen)) % 3, vectors)
    frame, got = sample_store.scored_events()
    kept = np.sort(chosen)
    pd.testing.assert_frame_equal(frame.drop(columns=["topic"]), events.iloc[kept].reset_index(drop=True))
    by_id = dict(zip(events["event_id"].to_numpy()[chosen], range(len(chosen)), strict=True))
    order = [by_id[i] for i in frame["event_id"]]
    np.testing.assert_array_equal(got, vectors[order])
    assert frame["topic"].tolist() == [int(i) % 3 for i in order]
