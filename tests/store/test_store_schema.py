"""store/_schema.py: files written by older versions read and migrate (schema_version, stored hour/dow, topic_sims)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from interestgeo.config import Config
from interestgeo.ingest import ingest_file
from interestgeo.store import SCHEMA_VERSION, Store, _schema


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
