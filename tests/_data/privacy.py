"""A small scored database for the privacy and hostile-input tests, built without training.

The real ingest of the first NYC check-ins, scored with `RecencySource` (each person's decayed
mean of their event texts' real embeddings): every analytics page and the User page have real
interest vectors, and these tests do not depend on the interest model or its training.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from interestgeo.config import load_config
from interestgeo.ingest import ingest_file
from interestgeo.store import Store
from interestgeo.text import embed_texts, encoder_for
from interestgeo.vectors import RecencySource, score_store
from tests._data.app import write_sample_csv

ROWS = 600
CONFIG = '[privacy]\nk_min_users = 2\n\n[app]\nrole = "{role}"\nwarm_up = false\n'


def recency_database(factory: pytest.TempPathFactory) -> Path:
    """One scored database per test session (copy it before writing)."""
    folder = factory.getbasetemp() / "db-recency"
    db = folder / "test.duckdb"
    if not db.exists():
        folder.mkdir(parents=True, exist_ok=True)
        config = load_config(_write_config(folder / "interestgeo.toml", "analyst")).with_db(db)
        with Store.open(db, config=config) as store:
            ingest_file(store, write_sample_csv(folder / "sample.csv", rows=ROWS), config=config, dataset="nyc-sample")
            encoder = encoder_for(config.text)
            source = RecencySource(lambda texts: embed_texts(store, encoder, texts, warn=None))
            score_store(store, config, source=source, encoder=encoder)
    return db


def use_database(built: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, *, role: str | None) -> Path:
    """A private copy wired in through the environment; `role` None leaves `[app] role` unset."""
    db = folder / "app.duckdb"
    shutil.copy(built, db)
    config_file = _write_config(folder / "interestgeo.toml", role)
    monkeypatch.setenv("INTERESTGEO_DB", str(db))
    monkeypatch.setenv("INTERESTGEO_CONFIG", str(config_file))
    return db


def _write_config(path: Path, role: str | None) -> Path:
    text = CONFIG.format(role=role) if role else CONFIG.replace('role = "{role}"\n', "")
    path.write_text(text, encoding="utf-8")
    return path
