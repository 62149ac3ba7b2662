"""Deleting a dataset removes it and everything derived from it, and nothing of the others: from
the store, the CLI (`interestgeo datasets [delete NAME]`) and the Upload page (analysts only).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interestgeo.audit import audit_path, read_audit
from interestgeo.config import load_config
from interestgeo.ingest import ingest_file
from interestgeo.store import Store
from interestgeo.text import embed_texts, encoder_for
from interestgeo.vectors import RecencySource, score_store
from tests._data.app import APP, TIMEOUT, assert_clean, write_sample_csv
from tests._data.privacy import CONFIG

# Tables with a dataset_id column: what a deleted dataset must leave no row in.
PER_DATASET = ("events", "datasets", "rejects", "cell_windows", "event_vectors", "user_window_vectors",
               "cell_window_vectors")
ROWS = 150


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Datasets "a" and "b" (the first and the next 150 NYC check-ins, "b" with a bad row), scored."""
    folder = tmp_path_factory.mktemp("two-datasets")
    (folder / "interestgeo.toml").write_text(CONFIG.format(role="analyst"), encoding="utf-8")
    db = folder / "test.duckdb"
    config = load_config(folder / "interestgeo.toml").with_db(db)
    b = write_sample_csv(folder / "b.csv", rows=ROWS, skip=ROWS)
    b.write_text(b.read_text(encoding="utf-8") + "u1,v1,c1,Cafe,not-a-lat,-73.9,-240,Tue Apr 03 18:00:09 +0000 2012\n",
                 encoding="utf-8")
    with Store.open(db, config=config) as store:
        ingest_file(store, write_sample_csv(folder / "a.csv", rows=ROWS), config=config, dataset="a")
        ingest_file(store, b, config=config, dataset="b")
        encoder = encoder_for(config.text)
        score_store(store, config, source=RecencySource(lambda t: embed_texts(store, encoder, t, warn=None)),
                    encoder=encoder)
    return db


def counts(store: Store, dataset_id: int) -> dict[str, int]:
    return {t: store.con.execute(f"SELECT count(*) FROM {t} WHERE dataset_id = ?", [dataset_id]).fetchall()[0][0]
            for t in PER_DATASET}


def texts(store: Store, dataset_id: int) -> set[str]:
    return {r[0] for r in store.con.execute("SELECT DISTINCT text FROM events WHERE dataset_id = ?",
                                            [dataset_id]).fetchall()}


def cached_texts(store: Store) -> set[str]:
    return {r[0] for r in store.con.execute("SELECT text FROM text_embeddings").fetchall()}


def copy_of(db: Path, folder: Path) -> Path:
    target = folder / "app.duckdb"
    target.write_bytes(db.read_bytes())
    (folder / "interestgeo.toml").write_text(CONFIG.format(role="analyst"), encoding="utf-8")
    return target


def test_deleting_a_dataset_removes_everything_derived_and_keeps_the_other(two_datasets: Path, tmp_path: Path) -> None:
    db = copy_of(two_datasets, tmp_path)
    with Store.open(db) as store:
        a, b = store.dataset_id("a"), store.dataset_id("b")
        kept_before = counts(store, a)
        assert kept_before["events"] and kept_before["event_vectors"] and all(counts(store, b).values())
        only_b = texts(store, b) - texts(store, a)
        shared = texts(store, b) & texts(store, a)
        assert only_b and only_b <= cached_texts(store)
        assert store.delete_dataset(b) is True
        assert set(counts(store, b).values()) == {0}
        assert counts(store, a) == kept_before
        assert not only_b & cached_texts(store)  # the texts themselves are personal data
        assert shared <= cached_texts(store)  # still used by "a"
        assert store.delete_dataset(b) is False


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interestgeo.cli", *args], capture_output=True, text=True, timeout=120)


def test_the_datasets_command_lists_and_deletes(two_datasets: Path, tmp_path: Path) -> None:
    db = copy_of(two_datasets, tmp_path)
    listed = cli("datasets", "--db", str(db), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [d["name"] for d in json.loads(listed.stdout)["datasets"]] == ["a", "b"]
    gone = cli("datasets", "delete", "b", "--db", str(db), "--json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["rejects"] == 1
    assert [d["name"] for d in json.loads(cli("datasets", "--db", str(db), "--json").stdout)["datasets"]] == ["a"]
    missing = cli("datasets", "delete", "b", "--db", str(db))
    assert missing.returncode == 2 and "no dataset named 'b'" in missing.stderr
    assert [(e["event"], e["dataset"], e["via"]) for e in read_audit(audit_path(db))] == [("dataset_deleted", "b", "cli")]
    log = cli("audit", "--db", str(db))
    assert log.returncode == 0 and "dataset_deleted" in log.stdout and "dataset=b via=cli" in log.stdout


@pytest.fixture
def upload_env(two_datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = copy_of(two_datasets, tmp_path)
    monkeypatch.setenv("INTERESTGEO_DB", str(db))
    monkeypatch.setenv("INTERESTGEO_CONFIG", str(tmp_path / "interestgeo.toml"))
    return db


def test_an_analyst_deletes_a_dataset_on_the_upload_page(upload_env: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert at.multiselect(key="ds").options == ["a", "b"]
    at.switch_page("pages/upload.py").run()
    assert_clean(at)
    at.selectbox(key="delete_name").select("b")
    at.button[0].click().run()  # not ticked: nothing happens
    assert any("tick the box" in w.value for w in at.warning)
    at.selectbox(key="delete_name").select("b")
    at.checkbox(key="delete_sure").check()
    at.button[0].click().run()
    assert_clean(at)
    assert any("Deleted dataset" in s.value for s in at.success)
    # a fresh visit (AppTest drops the sidebar after switch_page) no longer lists it
    assert AppTest.from_file(str(APP), default_timeout=TIMEOUT).run().multiselect(key="ds").options == ["a"]
    with Store.open(upload_env, read_only=True) as store:
        assert store.dataset_id("b") is None and store.dataset_id("a") is not None
    assert read_audit(audit_path(upload_env))[-1]["via"] == "dashboard"


def test_a_marketer_has_no_delete_action(upload_env: Path) -> None:
    (upload_env.parent / "interestgeo.toml").write_text(CONFIG.format(role="marketer"), encoding="utf-8")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/upload.py").run()
    assert_clean(at)
    assert "delete_name" not in [s.key for s in at.selectbox]
