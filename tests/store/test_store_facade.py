"""store/facade.py: deleting a dataset and everything derived, read-only opens, transactions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from interestgeo.config import Config
from interestgeo.store import Store, adapted_checkpoint_name
from interestgeo.text import embed_texts, encoder_for
from interestgeo.vectors import RecencySource, score_store


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


def test_read_only_open(tmp_path: Path, sample_store: Store) -> None:
    with pytest.raises(FileNotFoundError):
        Store.open(tmp_path / "nope.duckdb", read_only=True)
    sample_store.close()
    with Store.open(sample_store.path, read_only=True) as store:
        assert len(store.events()) == 300
        assert store.base_resolution == 10


def test_connections_draw_no_progress_bar(sample_store: Store) -> None:
    # DuckDB's own bar goes to stdout, into the CLI's --json output; both open modes turn it off
    sample_store.close()
    for read_only in (True, False):
        with Store.open(sample_store.path, read_only=read_only) as store:
            assert store.con.execute("SELECT current_setting('enable_progress_bar')").fetchone() == (False,)


def test_analytics_tables_created_in_a_rolled_back_transaction_are_created_again(tmp_store: Store) -> None:
    with pytest.raises(RuntimeError):
        with tmp_store.transaction():
            tmp_store.ensure_analytics_schema()
            raise RuntimeError("rolled back")
    tmp_store.ensure_analytics_schema()
    assert tmp_store.record_score_run("test", None, 1, 1, 1.0) == 1
