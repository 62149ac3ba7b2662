"""Hostile files: a gzip bomb is refused while it is read, not after; an upload's file name never
reaches a path; the server keeps no copy of an upload once it is loaded or refused.
"""

from __future__ import annotations

import gzip
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interestgeo.config import Config, StoreConfig
from interestgeo.ingest import IngestError, check_gzip_size, ingest_file
from interestgeo.store import Store
from tests._data.app import APP, TIMEOUT, assert_clean, write_sample_csv

MB = 1024 * 1024
UPLOAD_DIR = Path("/tmp") / "interestgeo-uploads"


def gzip_bomb(path: Path, header: bytes, members: int) -> Path:
    """A CSV header, then `members` gzip members of 64 MB of one repeated row each (a few hundred
    KB on disk, members x 64 MB decompressed)."""
    row = b"1,v,Cafe,Cafe,Food > Cafe,40.7,-73.9,2012-04-03T18:00:09Z,-240\n"
    member = gzip.compress(row * (64 * MB // len(row)), compresslevel=9)
    path.write_bytes(gzip.compress(header) + member * members)
    return path


def test_a_gzip_bomb_is_refused_after_reading_no_more_than_the_limit(tmp_path: Path) -> None:
    header = write_sample_csv(tmp_path / "h.csv", rows=0).read_bytes()
    bomb = gzip_bomb(tmp_path / "bomb.csv.gz", header, members=160)  # 10 GB decompressed
    assert bomb.stat().st_size < 30 * MB
    config = Config(store=StoreConfig(path=tmp_path / "x.duckdb", max_file_bytes=8 * MB))
    started = time.perf_counter()
    with Store.open(config.store.path, config=config) as store, pytest.raises(IngestError, match="over the 8 MB limit"):
        ingest_file(store, bomb, config=config)
    # decompressing all 10 GB takes minutes here; stopping at 8 MB takes a fraction of a second
    assert time.perf_counter() - started < 10
    with Store.open(config.store.path, read_only=True) as store:
        assert store.datasets().empty


def test_a_gzip_under_the_limit_is_counted_and_loads(tmp_path: Path) -> None:
    plain = write_sample_csv(tmp_path / "a.csv", rows=100)
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert check_gzip_size(packed, 10 * MB) == plain.stat().st_size
    config = Config(store=StoreConfig(path=tmp_path / "x.duckdb", max_file_bytes=10 * MB))
    with Store.open(config.store.path, config=config) as store:
        assert ingest_file(store, packed, config=config).rows_stored == 100


def copies() -> set[str]:
    return {p.name for p in UPLOAD_DIR.glob("*")} if UPLOAD_DIR.exists() else set()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "app.duckdb"
    config = Config().with_db(db)
    with Store.open(db, config=config) as store:
        ingest_file(store, write_sample_csv(tmp_path / "first.csv", rows=50), config=config, dataset="first")
    (tmp_path / "interestgeo.toml").write_text('[app]\nrole = "analyst"\nwarm_up = false\n', encoding="utf-8")
    monkeypatch.setenv("INTERESTGEO_DB", str(db))
    monkeypatch.setenv("INTERESTGEO_CONFIG", str(tmp_path / "interestgeo.toml"))
    return tmp_path


def upload(name: str, data: bytes) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/upload.py").run()
    return at.file_uploader(key="upload_file").set_value((name, data, "text/csv")).run()


def test_an_uploads_name_never_reaches_a_path_and_its_copy_goes_once_loaded(env: Path) -> None:
    before = copies()
    at = upload("../../../evil name\u202e.csv", write_sample_csv(env / "b.csv", rows=60, skip=50).read_bytes())
    assert_clean(at)
    waiting = copies() - before
    assert len(waiting) == 1 and re.fullmatch(r"upload-[A-Za-z0-9-]+\.csv", waiting.pop())
    assert not list(env.parents[1].glob("evil*")) and not list(Path("/tmp").glob("evil*"))
    at.button(key="upload_go").click().run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Rows stored"] == "60"
    assert copies() - before == set()


def test_a_refused_upload_leaves_no_copy(env: Path) -> None:
    before = copies()
    at = upload("broken.csv.gz", b"\x1f\x8b" + b"not really gzip" * 10)
    assert any("cannot be used" in e.value for e in at.error)
    assert copies() - before == set()
