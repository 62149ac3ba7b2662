"""The pretrained models in data/model/<encoder>: each loads, is what its JSON says, reads its encoder's
vectors, and the default encoder's scores the demo's people."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from interestgeo.cli.data import DEMO_FILE
from interestgeo.config import Config
from interestgeo.model import SHIPPED_MODELS_DIR, load_checkpoint, read_checkpoint, register_checkpoint, shipped_model_dir
from interestgeo.text import ENCODERS, encoder_for, text_model_id
from interestgeo.vectors import load_source, score_store
from tests._data.model import small_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHIPPED = sorted(p.name for p in SHIPPED_MODELS_DIR.iterdir())


def test_every_packaged_encoder_has_a_shipped_model() -> None:
    assert SHIPPED == sorted(ENCODERS)
    assert shipped_model_dir(text_model_id(Config().text)).is_dir()


@pytest.mark.parametrize("encoder_id", SHIPPED)
def test_the_shipped_model_is_small_inductive_safetensors_with_its_config(encoder_id: str) -> None:
    folder = shipped_model_dir(encoder_id)
    files = {p.name for p in folder.iterdir()}
    assert files == {"model.safetensors", "config.json", "metrics.json", "meta.json"}  # no pickle
    size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    assert size_mb <= 25
    checkpoint = read_checkpoint(folder)
    recorded = json.loads((folder / "config.json").read_text())
    loaded = checkpoint.config.to_dict()
    # every recorded setting is the one loaded (settings added to the config since take their defaults)
    assert {part: {k: loaded[part][k] for k in fields} for part, fields in recorded.items()} == recorded
    assert checkpoint.model.tied_venues is None and not checkpoint.vocab.resolutions  # no learned ids or cells
    assert checkpoint.text_model_id == encoder_id == text_model_id(checkpoint.config.text)  # its folder's space
    assert checkpoint.config.model.seed == 0


@pytest.mark.parametrize("encoder_id", SHIPPED)
def test_the_shipped_model_was_trained_on_the_shipped_demo_file_only(encoder_id: str) -> None:
    meta = json.loads((shipped_model_dir(encoder_id) / "meta.json").read_text())
    (trained_on,) = meta["trained_on"]
    assert trained_on["dataset"] == "nyc-demo"
    assert trained_on["content_hash"] == hashlib.sha256(Path(DEMO_FILE).read_bytes()).hexdigest()


def test_the_shipped_model_scores_demo_people_in_a_new_store(tmp_path: Path) -> None:
    store, config = small_store(tmp_path, n_users=6)
    with store:
        checkpoint_id = register_checkpoint(store, shipped_model_dir(text_model_id(config.text)))
        assert load_checkpoint(store).id == checkpoint_id
        encoder = encoder_for(config.text)
        report = score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
        events, vectors = store.scored_events()
        assert len(events) == report.events > 500
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        (calibration,) = report.calibrations.values()
        assert calibration.pairs > 0 and np.isfinite(calibration.model_mrr)
