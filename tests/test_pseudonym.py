"""Pseudonymised people: ids become a keyed hash at load, stable with one key, different with
another; the key lives beside the database (0600), is created once and never printed.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from interestgeo.config import Config
from interestgeo.ingest import ingest_file
from interestgeo.pseudonym import (
    KEY_BYTES,
    WITHHELD,
    PseudonymKeyError,
    key_path,
    load_or_create_key,
    pseudonymise,
)
from interestgeo.store import Store
from tests._data.app import write_sample_csv

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def real_ids(csv: Path) -> set[str]:
    return set(pd.read_csv(csv, dtype=str)["user_id"])


def test_the_same_id_and_key_give_the_same_pseudonym_and_another_key_another() -> None:
    ids = ["470", "979", "470", "alice@example.com"]
    first = pseudonymise(ids, KEY)
    assert first == pseudonymise(ids, KEY) and first[0] == first[2]
    assert len(set(first)) == 3 and all(p.startswith("p_") and len(p) == 26 for p in first)
    assert not set(first) & set(pseudonymise(ids, OTHER_KEY))
    assert not any(i in p for i, p in zip(ids, first, strict=True))


def test_the_key_is_created_once_owner_only_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    path = key_path(tmp_path / "x.duckdb")
    assert path.name == "x.pseudonym.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    path.chmod(0o644)
    with pytest.raises(PseudonymKeyError, match="readable by others"):
        load_or_create_key(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(PseudonymKeyError, match="32-byte"):
        load_or_create_key(path)


def load(db: Path, csv: Path, key: bytes | None, name: str) -> pd.DataFrame:
    config = Config().with_db(db)
    with Store.open(db, config=config) as store:
        report = ingest_file(store, csv, config=config, dataset=name, pseudonym_key=key)
        return store.events().loc[lambda e: e["dataset_id"] == report.dataset_id]


def test_a_pseudonymised_load_stores_no_real_id_and_withholds_rejected_lines(tmp_path: Path) -> None:
    csv = write_sample_csv(tmp_path / "a.csv", rows=200)
    csv.write_text(csv.read_text(encoding="utf-8") + "secret-user,v1,Cafe X,Cafe,Food > Cafe,91.5,-73.9,2012-04-03T18:00:09Z,-240\n",
                   encoding="utf-8")
    plain = load(tmp_path / "plain.duckdb", csv, None, "a")
    events = load(tmp_path / "p.duckdb", csv, KEY, "a")
    assert set(events["user_id"]) == set(pseudonymise(sorted(real_ids(csv) - {"secret-user"}), KEY))
    assert not set(events["user_id"]) & real_ids(csv)
    assert len(events) == len(plain)  # the same events, people and duplicates, only renamed
    assert events["user_id"].nunique() == plain["user_id"].nunique()
    with Store.open(tmp_path / "p.duckdb", read_only=True) as store:
        assert store.rejects(1)["raw"].tolist() == [WITHHELD]


def test_pseudonyms_are_stable_across_loads_with_one_key_and_differ_with_another(tmp_path: Path) -> None:
    first = write_sample_csv(tmp_path / "first.csv", rows=150)
    second = write_sample_csv(tmp_path / "second.csv", rows=150, skip=100)  # overlaps the first's last 50 rows
    shared = real_ids(first) & real_ids(second)
    assert shared
    a = load(tmp_path / "k.duckdb", first, KEY, "first")
    b = load(tmp_path / "k.duckdb", second, KEY, "second")
    assert set(a["user_id"]) & set(b["user_id"]) == set(pseudonymise(sorted(shared), KEY))
    other = load(tmp_path / "other.duckdb", second, OTHER_KEY, "second")
    assert not set(other["user_id"]) & set(b["user_id"])


def test_ingest_pseudonymise_keeps_its_key_beside_the_database_and_never_prints_it(tmp_path: Path) -> None:
    db = tmp_path / "cli.duckdb"
    csv = write_sample_csv(tmp_path / "a.csv", rows=100)
    done = subprocess.run([sys.executable, "-m", "interestgeo.cli", "ingest", str(csv), "--db", str(db),
                           "--pseudonymise", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    key = key_path(db).read_bytes()
    assert key.hex() not in done.stdout + done.stderr
    with Store.open(db, read_only=True) as store:
        assert set(store.events()["user_id"]) == set(pseudonymise(sorted(real_ids(csv)), key))


def test_the_upload_page_checkbox_pseudonymises_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest
    from tests._data.app import APP, TIMEOUT, assert_clean

    db = tmp_path / "app.duckdb"
    load(db, write_sample_csv(tmp_path / "first.csv", rows=50), None, "first")
    (tmp_path / "interestgeo.toml").write_text('[app]\nrole = "analyst"\nwarm_up = false\n', encoding="utf-8")
    monkeypatch.setenv("INTERESTGEO_DB", str(db))
    monkeypatch.setenv("INTERESTGEO_CONFIG", str(tmp_path / "interestgeo.toml"))
    csv = write_sample_csv(tmp_path / "extra.csv", rows=80, skip=50)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/upload.py").run()
    at.file_uploader(key="upload_file").set_value(("extra.csv", csv.read_bytes(), "text/csv")).run()
    at.checkbox(key="upload_pseudonymise").check().run()
    at.button(key="upload_go").click().run()
    assert_clean(at)
    with Store.open(db, read_only=True) as store:
        events = store.events()
    extra = events[events["dataset_id"] == 2]
    assert len(extra) and set(extra["user_id"]) == set(pseudonymise(sorted(real_ids(csv)), key_path(db).read_bytes()))
    assert set(events[events["dataset_id"] == 1]["user_id"]) <= real_ids(tmp_path / "first.csv")  # untouched
