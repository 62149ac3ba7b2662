"""The pretrained model in data/model: it loads, is what its JSON says, and scores the demo's people."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from interestgeo.cli import DEMO_FILE
from interestgeo.config import Config
from interestgeo.score import load_source, score_store
from interestgeo.text import TextEncoder
from interestgeo.train import SHIPPED_MODEL_DIR, load_checkpoint, read_checkpoint, register_checkpoint
from model_data import small_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_shipped_model_is_small_inductive_safetensors_with_its_config() -> None:
    files = {p.name for p in SHIPPED_MODEL_DIR.iterdir()}
    assert files == {"model.safetensors", "config.json", "metrics.json", "meta.json"}  # no pickle
    size_mb = sum(p.stat().st_size for p in SHIPPED_MODEL_DIR.iterdir()) / 2**20
    assert size_mb <= 25
    checkpoint = read_checkpoint(SHIPPED_MODEL_DIR)
    recorded = json.loads((SHIPPED_MODEL_DIR / "config.json").read_text())
    assert checkpoint.config.to_dict() == recorded
    assert checkpoint.model.tied_venues is None and not checkpoint.vocab.resolutions  # no learned ids or cells
    assert checkpoint.text_model_id == TextEncoder(Config().text).model_id  # the default encoder's space
    assert checkpoint.config.model.seed == 0


def test_the_shipped_model_was_trained_on_the_shipped_demo_file_only() -> None:
    meta = json.loads((SHIPPED_MODEL_DIR / "meta.json").read_text())
    (trained_on,) = meta["trained_on"]
    assert trained_on["dataset"] == "nyc-demo"
    assert trained_on["content_hash"] == hashlib.sha256(Path(DEMO_FILE).read_bytes()).hexdigest()


def test_the_shipped_model_scores_demo_people_in_a_new_store(tmp_path: Path) -> None:
    store, config = small_store(tmp_path, n_users=6)
    with store:
        checkpoint_id = register_checkpoint(store, SHIPPED_MODEL_DIR)
        assert load_checkpoint(store).id == checkpoint_id
        encoder = TextEncoder(config.text)
        report = score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
        events, vectors = store.scored_events()
        assert len(events) == report.events > 500
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        (calibration,) = report.calibrations.values()
        assert calibration.pairs > 0 and np.isfinite(calibration.model_mrr)
