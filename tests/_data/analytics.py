"""Small hand-built event tables for the analytics tests (shared by test_analytics and test_explain).

Events are built the way the store builds them (H3 cell from lat/lon at the base resolution,
local time from the UTC time and offset), so analytics sees exactly the store's format.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from interestgeo.analytics import ScoredEvents
from interestgeo.cells import latlng_to_cell
from interestgeo.config import Config, PrivacyConfig
from interestgeo.topics import Topics

DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_events(rows: Sequence[tuple]) -> pd.DataFrame:
    """rows: (dataset_id, user_id, utc time str, lat, lon, text, topic); events in store.events() format."""
    frame = pd.DataFrame(rows, columns=["dataset_id", "user_id", "ts", "lat", "lon", "text", "topic"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame = frame.sort_values(["dataset_id", "user_id", "ts"], kind="stable").reset_index(drop=True)
    frame["event_id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    frame["tz_offset_min"] = pd.array([-240] * len(frame), dtype="Int16")
    frame["local_ts"] = (frame["ts"] + pd.Timedelta(minutes=-240)).dt.tz_localize(None)
    frame["cell"] = latlng_to_cell(frame["lat"].to_numpy(), frame["lon"].to_numpy(), 10)
    frame["local_hour"] = frame["local_ts"].dt.hour.astype("int8")
    frame["dow"] = frame["local_ts"].dt.day_of_week.astype("int8")
    frame["item_id"] = frame["text"]
    frame["category"] = frame["text"]
    frame["category_path"] = None
    frame["dataset_id"] = frame["dataset_id"].astype("int32")
    frame["topic"] = frame["topic"].astype("int16")
    return frame


def make_topics(n: int = 4, seed: int = 0) -> Topics:
    rng = np.random.default_rng(seed)
    return Topics(tuple(f"topic {i}" for i in range(n)), unit(rng.normal(size=(n, DIM))), "phrases")


def scored_from(events: pd.DataFrame, vectors: np.ndarray, k: int = 1, topics: Topics | None = None) -> ScoredEvents:
    config = Config(privacy=PrivacyConfig(k_min_users=k))
    return ScoredEvents(events, unit(vectors), topics or make_topics(), config)


def random_city(n_users: int = 12, events_per_user: int = 30, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Users moving among a few Manhattan spots over six weeks, with random interest vectors."""
    rng = np.random.default_rng(seed)
    spots = [(40.7580, -73.9855), (40.7527, -73.9772), (40.7061, -74.0087), (40.7794, -73.9632), (40.7484, -73.9857)]
    rows = []
    start = pd.Timestamp("2012-04-02 12:00", tz="UTC")
    for u in range(n_users):
        for _ in range(events_per_user):
            lat, lon = spots[rng.integers(len(spots))]
            ts = start + pd.Timedelta(hours=float(rng.uniform(0, 24 * 42)))
            rows.append((1 + (u % 2), f"u{u}", ts.isoformat(), lat, lon, f"text {rng.integers(6)}", int(rng.integers(4))))
    events = make_events(rows)
    return events, rng.normal(size=(len(events), DIM))


VENUES = [
    # venue_id, name, category, category_path, lat, lon
    ("v1", "Blue Note", "Jazz Club", "Arts and Entertainment > Music Venue > Jazz Club", 40.7309, -74.0006),
    ("v2", "Joe's Pizza", "Pizza Place", "Dining and Drinking > Restaurant > Pizza Place", 40.7306, -73.9891),
    ("v3", "Central Park", "Park", "Landmarks and Outdoors > Park", 40.7812, -73.9665),
    ("v4", "JFK Terminal 4", "Airport", "Travel and Transportation > Airport", 40.6441, -73.7822),
    ("v5", "Blink Fitness", "Gym", "Sports and Recreation > Gym", 40.7527, -73.9772),
    ("v6", "Stumptown", "Coffee Shop", "Dining and Drinking > Cafe > Coffee Shop", 40.7457, -73.9880),
]


def write_checkins(path, users: list[str], start: str, days: int, per_user: int, seed: int) -> None:
    """A small NYC-format check-in CSV: each user favours two venues, visited at random times."""
    import csv
    import gzip

    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    with gzip.open(path, "wt", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "venue_id", "venue_name", "venue_category", "category_path",
                         "latitude", "longitude", "utc_time", "tz_offset_min"])
        for user in users:
            favourites = rng.choice(len(VENUES), size=2, replace=False)
            for _ in range(per_user):
                v = VENUES[favourites[0] if rng.random() < 0.45 else favourites[1] if rng.random() < 0.6 else rng.integers(len(VENUES))]
                ts = t0 + pd.Timedelta(minutes=int(rng.integers(0, days * 24 * 60)))
                writer.writerow([user, v[0], v[1], v[2], v[3], v[4], v[5], ts.strftime("%Y-%m-%dT%H:%M:%SZ"), -240])


def ingest(store, path, config, dataset: str) -> int:
    """Ingest a file written by write_checkins with the demo's explicit column mapping."""
    from interestgeo.ingest import detect_columns, ingest_file

    mapping = detect_columns(path).with_overrides(
        {"user_id": "user_id", "ts": "utc_time", "lat": "latitude", "lon": "longitude",
         "text": "venue_name+venue_category", "item_id": "venue_id", "category": "venue_category",
         "category_path": "category_path", "tz_offset_min": "tz_offset_min"}
    )
    return ingest_file(store, path, config=config, mapping=mapping, dataset=dataset).dataset_id


_TRAINED: dict[str, Path] = {}


def tiny_model_config(db: Path, models: Path) -> Config:
    """A tiny model (trains in seconds), k = 2 and two stored resolutions, for write_checkins data."""
    config = Config(privacy=PrivacyConfig(k_min_users=2)).with_db(db)
    return dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model, n_embd=32, n_layer=1, n_head=2, max_len=32, epochs=2, batch_size=16, checkpoint_dir=models
        ),
        analytics=dataclasses.replace(config.analytics, stored_resolutions=(8, 9)),
    )


def trained_store(tmp_path: Path) -> tuple[Path, Config]:
    """A copy (in tmp_path) of a store with 12 users' April check-ins and a TINY model trained on
    them through the real training API. Trained once per test session; each caller gets a copy."""
    from interestgeo.store import Store
    from interestgeo.model import train_model

    if "db" not in _TRAINED:
        folder = Path(tempfile.mkdtemp(prefix="interestgeo-tiny-model-"))
        atexit.register(shutil.rmtree, folder, True)
        write_checkins(folder / "april.csv.gz", [f"u{i}" for i in range(12)], "2012-04-02", days=28, per_user=40, seed=1)
        config = tiny_model_config(folder / "trained.duckdb", folder / "models")
        with Store.open(config.store.path, config=config) as store:
            ingest(store, folder / "april.csv.gz", config, "april")
            train_model(store, config, epochs=2, seed=0)
        _TRAINED["db"] = config.store.path
        _TRAINED["models"] = folder / "models"
    db = Path(tmp_path) / "trained.duckdb"
    shutil.copy(_TRAINED["db"], db)
    return db, tiny_model_config(db, _TRAINED["models"])
