"""`interestgeo export vectors` and the dashboard's vector downloads, on a small real scored store.

The store is built the way users build theirs (the real ingest of small check-in CSVs) and scored
with RecencySource (no training), with the real packaged text model.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from interestgeo import export
from interestgeo.cli import main
from interestgeo.config import Config, PrivacyConfig
from interestgeo.export import VECTOR_SCHEMA, ExportError, export_vectors, vectors_parquet
from interestgeo.store import Store
from interestgeo.text import TextEncoder, TextModelError, embed_texts, encoder_for, text_hashes
from interestgeo.vectors import RecencySource, score_store
from tests._data.analytics import ingest, write_checkins

USERS = [f"u{i}" for i in range(12)]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return encoder_for(Config().text)


def config_for(db: Path) -> Config:
    config = Config(privacy=PrivacyConfig(k_min_users=2)).with_db(db)
    return dataclasses.replace(config, analytics=dataclasses.replace(config.analytics, stored_resolutions=(8, 9)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, encoder: TextEncoder) -> Path:
    """Datasets "april" (12 users, 300 events) and "may" (3 users) scored; "june" loaded after, not scored."""
    folder = tmp_path_factory.mktemp("export")
    files = {name: folder / f"{name}.csv.gz" for name in ("april", "may", "june")}
    write_checkins(files["april"], USERS, "2012-04-02", days=28, per_user=25, seed=1)
    write_checkins(files["may"], ["n1", "n2", "n3"], "2012-05-01", days=20, per_user=15, seed=2)
    write_checkins(files["june"], ["j1", "j2"], "2012-06-01", days=10, per_user=5, seed=3)
    config = config_for(folder / "built.duckdb")
    with Store.open(config.store.path, config=config) as store:
        ingest(store, files["april"], config, "april")
        ingest(store, files["may"], config, "may")
        source = RecencySource(lambda texts: embed_texts(store, encoder, texts, warn=None))
        score_store(store, config, source=source, encoder=encoder)
        ingest(store, files["june"], config, "june")
    return config.store.path


@pytest.fixture
def db(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built store (a test may change it)."""
    copy = tmp_path / "store.duckdb"
    shutil.copy(built, copy)
    return copy


def files_in(folder: Path) -> list[str]:
    """The folder's files besides the test's store."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("store.duckdb"))


def read_only(db: Path) -> Store:
    return Store.open(db, read_only=True, config=config_for(db))


def test_export_writes_one_row_per_scored_event_in_the_documented_columns(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "april.parquet"
    with read_only(db) as store:
        result = export_vectors(store, config_for(db), "april", out)
        scored, _ = store.scored_events([store.dataset_id("april")])
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == VECTOR_SCHEMA
    assert table.num_rows == len(scored) == result.rows == 300
    encoder = encoder_for(config_for(db).text)
    dim = encoder.dim
    assert result.unscored == 0 and result.dim == dim and result.bytes == out.stat().st_size
    assert result.path == out and result.seconds > 0
    assert set(table.column("dataset").to_pylist()) == {"april"}
    assert set(table.column("user_id").to_pylist()) == set(USERS)
    lengths = pc.list_value_length
    assert set(lengths(table.column("vector")).to_pylist()) == {dim}
    assert set(lengths(table.column("text_vector")).to_pylist()) == {dim}
    meta = json.loads(table.schema.metadata[b"interestgeo"])
    assert meta == {"text_model": encoder.model_id, "vector_source": "recency"}
    assert files_in(tmp_path) == ["april.parquet"]  # the partial file was renamed into place


def test_exported_vectors_are_the_stored_ones_and_text_vectors_the_encoders(
    db: Path, tmp_path: Path, encoder: TextEncoder
) -> None:
    out = tmp_path / "april.parquet"
    with read_only(db) as store:
        export_vectors(store, config_for(db), "april", out)
        events, stored = store.scored_events([store.dataset_id("april")])
        order = np.argsort(events["event_id"].to_numpy())  # the file is in event-id order
        events, stored = events.iloc[order].reset_index(drop=True), stored[order]
        some = [0, 7, 150, 299]
        from_store = store.event_vectors(events["event_id"].to_numpy()[some])
    frame = pq.read_table(out).to_pandas()
    assert frame["user_id"].tolist() == events["user_id"].tolist()
    assert frame["text"].tolist() == events["text"].tolist()
    assert (frame["ts"] == events["ts"]).all() and str(frame["ts"].dt.tz) == "UTC"
    np.testing.assert_array_equal(frame[["lat", "lon"]].to_numpy(), events[["lat", "lon"]].to_numpy())
    vectors = np.stack(frame["vector"].to_numpy())
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, stored)
    np.testing.assert_array_equal(vectors[some], from_store)
    texts = frame["text"].iloc[some].tolist()
    np.testing.assert_allclose(np.stack(frame["text_vector"].iloc[some].to_numpy()), encoder.encode(texts), atol=1e-5)


def test_a_dataset_exports_part_by_part_into_one_row_group_each_with_the_same_rows(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with read_only(db) as store:
        export_vectors(store, config_for(db), "april", tmp_path / "whole.parquet")
        monkeypatch.setattr(export, "PART_EVENTS", 7)
        export_vectors(store, config_for(db), "april", tmp_path / "parts.parquet")
    assert pq.ParquetFile(tmp_path / "whole.parquet").metadata.num_row_groups == 1
    assert pq.ParquetFile(tmp_path / "parts.parquet").metadata.num_row_groups == 43  # ceil(300 / 7)
    assert pq.read_table(tmp_path / "parts.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))


def test_texts_missing_from_the_cache_are_embedded_and_cached_again(
    db: Path, tmp_path: Path, encoder: TextEncoder
) -> None:
    config = config_for(db)
    with Store.open(db, config=config) as store:
        texts = sorted(set(store.events([store.dataset_id("april")])["text"]))[:3]
        before = store.embedding_count(encoder.model_id)
        store.con.execute("DELETE FROM text_embeddings WHERE list_contains(?, text_hash)", [text_hashes(texts)])
        assert store.embedding_count(encoder.model_id) == before - 3
        export_vectors(store, config, "april", tmp_path / "april.parquet", encoder=encoder)
        assert store.embedding_count(encoder.model_id) == before
    frame = pq.read_table(tmp_path / "april.parquet").to_pandas().drop_duplicates("text").set_index("text")
    np.testing.assert_allclose(np.stack(frame.loc[texts, "text_vector"].to_numpy()), encoder.encode(texts), atol=1e-5)


def test_one_users_download_holds_that_users_rows_only(db: Path) -> None:
    with read_only(db) as store:
        april = store.dataset_id("april")
        events, _ = store.scored_events([april])
        data = vectors_parquet(store, config_for(db), [april], user_id="u3")
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.remove_metadata() == VECTOR_SCHEMA
    assert set(table.column("user_id").to_pylist()) == {"u3"}
    assert table.num_rows == int((events["user_id"] == "u3").sum()) == 25


def test_a_download_of_several_datasets_holds_the_scored_ones(db: Path) -> None:
    with read_only(db) as store:
        ids = [store.dataset_id(name) for name in ("april", "may", "june")]
        data = vectors_parquet(store, config_for(db), ids)
        with pytest.raises(ExportError, match="no interest vectors in 'june' yet"):
            vectors_parquet(store, config_for(db), ids[2:])
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == 300 + 45
    assert table.column("dataset").to_pylist() == ["april"] * 300 + ["may"] * 45


def test_unknown_or_unscored_datasets_are_clear_errors_and_write_nothing(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    with read_only(db) as store:
        with pytest.raises(ExportError, match=r"unknown dataset 'july' \(datasets: 'april', 'may', 'june'\)"):
            export_vectors(store, config_for(db), "july", out)
        with pytest.raises(ExportError, match=r"no interest vectors in 'june' yet: run `interestgeo score` first"):
            export_vectors(store, config_for(db), "june", out)
        with pytest.raises(ExportError, match="is a folder"):
            export_vectors(store, config_for(db), "april", tmp_path)
        (tmp_path / "a-file").write_text("")
        with pytest.raises(ExportError, match="cannot write .*a-file/x.parquet: no folder"):
            export_vectors(store, config_for(db), "april", tmp_path / "a-file" / "x.parquet")
    assert files_in(tmp_path) == ["a-file"]


def test_a_failed_export_keeps_the_previous_file_and_leaves_no_partial_one(db: Path, tmp_path: Path) -> None:
    # A real failure once the partial file is open: a text the cache lacks, and a text model
    # folder that does not exist.
    config = config_for(db)
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, model_path=tmp_path / "no-model"))
    out = tmp_path / "april.parquet"
    out.write_bytes(b"the previous export")
    with Store.open(db, config=config) as store:
        text = store.events([store.dataset_id("april")])["text"].iloc[-1]
        store.con.execute("DELETE FROM text_embeddings WHERE text_hash = ?", text_hashes([text]))
        with pytest.raises(TextModelError, match="text model folder not found"):
            export_vectors(store, config, "april", out)
    assert out.read_bytes() == b"the previous export"
    assert files_in(tmp_path) == ["april.parquet"]


def test_cli_exports_vectors_and_reports_failures_in_one_line(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "april.parquet"
    assert main(["export", "vectors", "--db", str(db), "--dataset", "april", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    dim = encoder_for(config_for(db).text).dim
    assert report["rows"] == 300 and report["dim"] == dim and report["path"] == str(out)
    assert pq.read_metadata(out).num_rows == 300
    assert main(["export", "vectors", "--db", str(db), "--dataset", "april", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote 300 events of dataset 'april' to {out}: {dim}-dim")
    failures = {
        "unknown dataset 'july'": ["--db", str(db), "--dataset", "july", "--out", str(out)],
        "no interest vectors in 'june' yet": ["--db", str(db), "--dataset", "june", "--out", str(out)],
        "no database at": ["--db", str(tmp_path / "none.duckdb"), "--dataset", "april", "--out", str(out)],
        "cannot write": ["--db", str(db), "--dataset", "april", "--out", str(tmp_path / "no" / "x.parquet")],
    }
    for message, args in failures.items():
        assert main(["export", "vectors", *args]) == 2, message
        captured = capsys.readouterr()
        assert captured.out == ""
        (line,) = captured.err.splitlines()
        assert line.startswith("interestgeo export: ") and message in line
    assert not (tmp_path / "none.duckdb").exists()  # a missing database is not created


# --- the dashboard: analysts get the downloads, marketers do not -----------------------------

ROOT = Path(__file__).resolve().parents[1]
CONFIG_TOML = '[privacy]\nk_min_users = 2\n\n[app]\nrole = "{role}"\nwarm_up = false\n'


def open_page(db: Path, folder: Path, role: str, page: str, monkeypatch: pytest.MonkeyPatch) -> object:
    from streamlit.testing.v1 import AppTest

    config_file = folder / "interestgeo.toml"
    config_file.write_text(CONFIG_TOML.format(role=role), encoding="utf-8")
    monkeypatch.setenv("INTERESTGEO_DB", str(db))
    monkeypatch.setenv("INTERESTGEO_CONFIG", str(config_file))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


VECTORS_LABEL = "Download interest vectors (Parquet)"


@pytest.mark.parametrize(("page", "rows"), [("pages/user.py", 25), ("pages/map.py", 345)])
def test_analysts_download_the_vectors_as_parquet_built_when_clicked(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str, rows: int
) -> None:
    # Streamlit keeps a deferred download's function for the click; AppTest cannot click one, so
    # the functions the page registers are collected as they are registered, and called here.
    from streamlit.runtime.media_file_manager import MediaFileManager

    registered: dict[str, object] = {}
    add_deferred = MediaFileManager.add_deferred

    def collect(self: MediaFileManager, data: object, *args: object, **kwargs: object) -> str:
        registered[str(kwargs.get("file_name"))] = data
        return add_deferred(self, data, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", collect)
    at = open_page(db, tmp_path, "analyst", page, monkeypatch)
    assert VECTORS_LABEL in [d.label for d in at.download_button]
    (build,) = [f for name, f in registered.items() if name.endswith(".parquet")]
    table = pq.read_table(io.BytesIO(build()))  # the one person picked (25 events) or every scored event
    assert table.schema.remove_metadata() == VECTOR_SCHEMA and table.num_rows == rows


def test_marketers_get_no_vector_download(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(db, tmp_path, "marketer", "pages/map.py", monkeypatch)
    assert at.download_button  # the map's own CSV
    assert VECTORS_LABEL not in [d.label for d in at.download_button]
