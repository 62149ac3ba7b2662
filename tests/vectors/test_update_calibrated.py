"""Dynamic update == full re-score with the trained model at the DEFAULT `analytics.history_weight`
(None: each dataset's weight, sharpness and world cutoff are chosen by its calibration).

What holds, and why: a dataset is one loaded file and never grows (a second file is a second
dataset), so an update re-uses the stored calibration of every dataset it had scored and calibrates
a new one on the same events a full re-score would calibrate it on. The update keeps each
calibration (weight, sharpness, cutoff), and a full re-score measures the same values again: the
two store the same vectors, aggregates and calibrations. (The fixed-weight cases, and the recency
source: test_refresh.py.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from interestgeo.store import Store
from interestgeo.text import TextEncoder
from interestgeo.vectors import load_source, score_store
from tests._data.analytics import ingest, trained_store, write_checkins
from tests._data.vectors import assert_same, forget_vectors_since, snapshot

CALIBRATION = ["dataset_id", "source", "cutoff", "history_weight", "sharpness", "pairs", "stored_mrr", "history_mrr",
               "model_mrr", "weights"]


def calibrations(store: Store) -> pd.DataFrame:
    return store.calibrations()[CALIBRATION]


def test_update_with_a_new_dataset_equals_a_full_rescore_at_the_calibrated_weight(
    tmp_path: Path, encoder: TextEncoder
) -> None:
    db, config = trained_store(tmp_path)
    assert config.analytics.history_weight is None  # the default: calibrated per dataset
    may = tmp_path / "may.csv.gz"
    write_checkins(may, [f"n{i}" for i in range(10)], "2012-04-20", days=20, per_user=60, seed=2)
    with Store.open(db, config=config) as store:
        score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
        april = calibrations(store)
        assert len(april) == 1 and april["source"].iloc[0].endswith("+calibrated")
        ingest(store, may, config, "may")
        source = load_source(store, config, encoder=encoder)
        assert source.weight is None and set(source.weights) == {1}  # april's stored weight, reloaded
        update = score_store(store, config, source=source, encoder=encoder, update=True)
        assert update.mode == "update" and update.events == len(store.events([2]))
        assert list(update.calibrations) == ["may"]  # the new dataset only: april keeps its calibration
        measured = update.calibrations["may"]
        assert measured.measured and not measured.fixed  # chosen on its own events (not the too-short default)
        after_update = snapshot(store)
        calibrated = calibrations(store)
        pd.testing.assert_frame_equal(calibrated.iloc[:1], april)
        full = score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
        assert full.mode == "full" and set(full.calibrations) == {"april", "may"}
        assert (full.calibrations["may"].weight, full.calibrations["may"].sharpness) == (
            measured.weight, measured.sharpness)
        assert_same(after_update, snapshot(store))
        pd.testing.assert_frame_equal(calibrations(store), calibrated)


def test_update_of_known_users_equals_a_full_rescore_at_the_calibrated_weight(
    tmp_path: Path, encoder: TextEncoder
) -> None:
    """Known users' latest events re-scored (`score --since TIME`): the update reads the weight, the
    sharpness and the world cutoff back from the stored calibration."""
    db, config = trained_store(tmp_path)
    with Store.open(db, config=config) as store:
        score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
        full, calibrated = snapshot(store), calibrations(store)
        weight, sharpness = float(calibrated["history_weight"].iloc[0]), float(calibrated["sharpness"].iloc[0])
        since = store.events()["ts"].quantile(0.85)
        new = forget_vectors_since(store, config, since)  # only the update can bring them back
        source = load_source(store, config, encoder=encoder)
        assert source.weights == {1: weight} and source.model.sharpness[1] == pytest.approx(sharpness)
        update = score_store(store, config, source=source, encoder=encoder, since=since.isoformat())
        assert update.events == new.sum() and not update.calibrations
        assert_same(full, snapshot(store))
        pd.testing.assert_frame_equal(calibrations(store), calibrated)
