"""A small real store for the model tests: the full histories of a few demo users.

The first rows of the demo file (tests/fixtures/nyc_sample.csv) cover only a few hours, too
short for the time-based split; a handful of users over the whole period gives real validation
and test samples while training in seconds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from interestgeo.config import Config
from interestgeo.ingest import ingest_file
from interestgeo.store import Store

DEMO = Path(__file__).resolve().parents[2] / "data" / "nyc_checkins.csv.gz"


def small_store(tmp_path: Path, n_users: int = 10) -> tuple[Store, Config]:
    """A store with `n_users` moderately active demo users (~200 check-ins each over the whole
    period, so every split part has samples), and a tiny fast model config."""
    frame = pd.read_csv(DEMO, dtype=str)
    users = frame["user_id"].value_counts().index[100 : 100 + n_users]
    path = tmp_path / "small.csv"
    frame[frame["user_id"].isin(users)].to_csv(path, index=False)
    config = Config().with_db(tmp_path / "small.duckdb")
    config = dataclasses.replace(
        config,
        text=dataclasses.replace(config.text, cache_dir=Config().text.cache_dir),
        model=dataclasses.replace(config.model, n_embd=32, n_layer=1, n_head=2, max_len=32, epochs=2, batch_size=16),
    )
    store = Store.open(config.store.path, config=config)
    ingest_file(store, path, config=config, dataset="nyc-small")
    return store, config
