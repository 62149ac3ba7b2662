"""A small scored store for the forecast tests (CLI and pages), built without training.

12 people's check-ins over 12 weeks (the NYC venues of tests/_data/analytics.write_checkins), ingested
for real and scored with RecencySource (each person's decayed mean of their event texts' real
embeddings): enough weeks for forecasts and their backtest, no dependency on the interest model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from interestgeo.config import Config, PrivacyConfig
from tests._data.analytics import ingest, write_checkins

CONFIG_TOML = '[privacy]\nk_min_users = 2\n\n[app]\nrole = "{role}"\nwarm_up = false\n'


def recency_store(folder: Path, role: str = "analyst") -> tuple[Path, Path]:
    """(database, config file) in `folder`, k = 2."""
    from interestgeo.store import Store
    from interestgeo.text import embed_texts, encoder_for
    from interestgeo.vectors import RecencySource, score_store

    write_checkins(folder / "weeks.csv.gz", [f"u{i}" for i in range(12)], "2012-04-02", days=84, per_user=60, seed=4)
    config = Config(privacy=PrivacyConfig(k_min_users=2)).with_db(folder / "scored.duckdb")
    config = dataclasses.replace(config, analytics=dataclasses.replace(config.analytics, stored_resolutions=(8,)))
    with Store.open(config.store.path, config=config) as store:
        ingest(store, folder / "weeks.csv.gz", config, "weeks")
        encoder = encoder_for(config.text)
        score_store(store, config, source=RecencySource(lambda texts: embed_texts(store, encoder, texts, warn=None)),
                    encoder=encoder)
    toml = folder / "interestgeo.toml"
    toml.write_text(CONFIG_TOML.format(role=role), encoding="utf-8")
    return config.store.path, toml
