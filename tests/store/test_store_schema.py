"""store/_schema.py: files written by older versions read and migrate (schema_version, stored hour/dow, topic_sims)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from interestgeo.config import Config
from interestgeo.ingest import ingest_file
from interestgeo.store import SCHEMA_VERSION, Store, _schema
from interestgeo.store import compact as compact_module
from interestgeo.store.compact import quantise_vectors


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


def _version_1_vectors(path: Path, vectors: np.ndarray, topic_sims: bool = True, first_id: int = 0) -> None:
    """A file as version 1 wrote it: event_vectors with `vector FLOAT[]` (and, before topic
    similarities were stored, without topic_sims), one row per vector, event ids first_id.. and
    topic similarity [i] for the i-th row."""
    with Store.open(path) as store:
        store.ensure_analytics_schema()
        store.con.execute("DROP TABLE event_vectors")
        sims = ", topic_sims FLOAT[]" if topic_sims else ""
        store.con.execute(f"CREATE TABLE event_vectors (dataset_id INTEGER NOT NULL, event_id BIGINT NOT NULL, "
                          f"topic SMALLINT NOT NULL, vector FLOAT[] NOT NULL{sims})")
        for i, vector in enumerate(vectors):
            extra = [[float(i)]] if topic_sims else []
            store.con.execute(f"INSERT INTO event_vectors VALUES (1, ?, 0, ?{', ?' if topic_sims else ''})",
                              [first_id + i, vector.tolist(), *extra])
        store.con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")


def test_a_file_from_before_topic_similarities_reads_and_gains_the_column_on_write(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _version_1_vectors(path, np.array([[1.0, 0.0]]), topic_sims=False, first_id=5)
    with Store.open(path, read_only=True) as store:  # cannot add the column: reads without it
        frame, sims = store.scored_event_sims()
        assert sims.shape == (len(frame), 0)
        assert store.event_vectors(np.array([5])).tolist() == [[1.0, 0.0]]
    with Store.open(path) as store:
        store.write_event_vectors(np.array([1]), np.array([6]), np.array([0]), np.array([[0.0, 1.0]]), np.array([[0.5]]))
        rows = store.con.execute("SELECT event_id, topic_sims FROM event_vectors ORDER BY event_id").fetchall()
        assert store.event_vectors(np.array([5, 6])).tolist() == [[1.0, 0.0], [0.0, 1.0]]  # exact: codes 127, 0
    assert rows == [(5, None), (6, [0.5])]


def test_a_file_with_float_vectors_reads_them_read_only_and_a_write_open_compacts_them(tmp_path: Path) -> None:
    path = tmp_path / "v1.duckdb"
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(23, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    _version_1_vectors(path, vectors)
    ids = np.arange(len(vectors))
    with Store.open(path, read_only=True) as old:  # the dashboard: the FLOAT[] column as it is
        assert old.schema_version == 1 and _schema.has_column(old.con, "event_vectors", "vector")
        np.testing.assert_array_equal(old.event_vectors(ids[::-1]), vectors[::-1])
        np.testing.assert_array_equal(np.concatenate([v for _, v in old.event_vector_batches(batch=5)]), vectors)
        got_ids, affinities = old.event_affinities(vectors[0])
        np.testing.assert_allclose(affinities, vectors[got_ids] @ vectors[0], atol=1e-6)
        assert old.vector_dim() == 16
    with Store.open(path) as store:  # a writer: converted in batches, in the rows' order
        assert store.schema_version == SCHEMA_VERSION
        assert not _schema.has_column(store.con, "event_vectors", "vector")
        compact = quantise_vectors(vectors)
        np.testing.assert_array_equal(store.event_vectors(ids), compact.dequantised())
        stored = store.con.execute("SELECT event_id, q, scale, topic_sims FROM event_vectors").fetchall()
        assert [r[0] for r in stored] == ids.tolist()
        assert [r[1] for r in stored] == compact.codes.tolist()
        np.testing.assert_array_equal(np.array([r[2] for r in stored], np.float32), compact.scales)
        assert [r[3] for r in stored] == [[float(i)] for i in ids]
        assert store.vector_dim() == 16
    with Store.open(path) as again:  # once
        assert again.schema_version == SCHEMA_VERSION


def test_a_failed_compaction_leaves_the_float_vectors_as_they_were(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "v1.duckdb"
    vectors = np.eye(7, 4, dtype=np.float32)
    _version_1_vectors(path, vectors)
    calls = []

    def failing(batch: np.ndarray) -> None:
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the second batch
        return quantise_vectors(batch)

    monkeypatch.setattr(compact_module, "quantise_vectors", failing)
    con = duckdb.connect(str(path))
    try:
        try:
            _schema.compact_event_vectors(con, batch=3)
        except KeyboardInterrupt:
            pass
        assert calls == [3, 3]
        assert _schema.has_column(con, "event_vectors", "vector") and not _schema.table_exists(con, "event_vectors_compact")
        assert con.execute("SELECT count(*) FROM event_vectors").fetchone()[0] == 7
    finally:
        con.close()
