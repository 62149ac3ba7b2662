"""The dashboard's test database and AppTest helpers, shared by the page tests (tests/test_app.py and
the privacy, upload, link and browser tests).

The database is built the way users build theirs: the real ingest of a small real CSV (the first
3,000 NYC check-ins, about 500 people over six days), with k lowered to 2 so cells show.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from interestgeo.config import load_config
from interestgeo.ingest import ingest_file
from interestgeo.model import train_model
from interestgeo.store import Store
from interestgeo.text import encoder_for
from interestgeo.vectors import score_store

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
SAMPLE_ROWS = 3000
# Scoring embeds every distinct text with the real model (~30 texts/s on 2 cores): fewer rows.
SCORED_ROWS = 1200
TIMEOUT = 60


def write_sample_csv(path: Path, rows: int = SAMPLE_ROWS, skip: int = 0) -> Path:
    """The header plus `rows` check-ins (after skipping `skip`) of the shipped NYC file, as plain CSV."""
    with gzip.open(ROOT / "data" / "nyc_checkins.csv.gz", "rt", encoding="utf-8") as f:
        lines = f.readlines()
    path.write_text("".join([lines[0], *lines[1 + skip:1 + skip + rows]]), encoding="utf-8")
    return path


def build_test_database(folder: Path, *, rows: int = SAMPLE_ROWS, scored: bool = False) -> tuple[Path, Path]:
    """(database, config file): the sample CSV ingested for real; k lowered to 2 so hexagons show.

    `scored` also trains the real model for one epoch (seconds on this sample; quality is not the
    point here) and scores the events with it (`score_store`), so every analytics page, the
    explanations and the Model page have real inputs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "interestgeo.toml"
    # warm_up off: each test asks for what it needs (the warm-up tests in tests/test_app.py turn it on)
    config_file.write_text('[privacy]\nk_min_users = 2\n\n[app]\nrole = "analyst"\nwarm_up = false\n', encoding="utf-8")
    db = folder / "test.duckdb"
    config = load_config(config_file).with_db(db)
    with Store.open(db, config=config) as store:
        ingest_file(store, write_sample_csv(folder / "sample.csv", rows=rows), config=config, dataset="nyc-sample")
        if scored:
            train_model(store, config, epochs=1, seed=0)
            score_store(store, config, encoder=encoder_for(config.text))
    return db, config_file


def shared_database(factory: pytest.TempPathFactory, *, scored: bool) -> tuple[Path, Path]:
    """One database per kind per test session (the browser tests reuse the one built here)."""
    folder = factory.getbasetemp() / ("db-scored" if scored else "db-plain")
    if not (folder / "test.duckdb").exists():
        build_test_database(folder, rows=SCORED_ROWS if scored else SAMPLE_ROWS, scored=scored)
    return folder / "test.duckdb", folder / "interestgeo.toml"


def use_copy(built: tuple[Path, Path], folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of a test database (pages may write to it), wired in through the environment."""
    db = folder / "app.duckdb"
    shutil.copy(built[0], db)
    config_file = folder / "interestgeo.toml"
    shutil.copy(built[1], config_file)
    monkeypatch.setenv("INTERESTGEO_DB", str(db))
    monkeypatch.setenv("INTERESTGEO_CONFIG", str(config_file))
    return config_file


@pytest.fixture
def app_env(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Events stored, nothing scored yet: what a fresh upload looks like."""
    return use_copy(shared_database(tmp_path_factory, scored=False), tmp_path, monkeypatch)


@pytest.fixture
def scored_env(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Events stored and scored: every analytics page has data."""
    return use_copy(shared_database(tmp_path_factory, scored=True), tmp_path, monkeypatch)


def open_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if page is not None:
        at.switch_page(page).run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def deck_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.json) for el in at.get("deck_gl_json_chart")]


def open_with_params(page: str, params: dict[str, str | list[str]]) -> AppTest:
    """The app opened from a shared link: filters in the URL, then the page."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.run()
    return at.switch_page(page).run()


def histories_csv(n_users: int = 6) -> bytes:
    """Whole histories of a few moderately active demo people (months long: a split has validation)."""
    frame = pd.read_csv(ROOT / "data" / "nyc_checkins.csv.gz", dtype=str)
    users = frame["user_id"].value_counts().index[200 : 200 + n_users]
    return frame[frame["user_id"].isin(users)].to_csv(index=False).encode("utf-8")
