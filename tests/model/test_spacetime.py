"""Space-time features: cell vocabulary with parents, cyclic time, per-user gaps and distances."""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd
import torch

from interestgeo.cells import latlng_to_cell
from interestgeo.config import ModelConfig
from interestgeo.geo import haversine_km
from interestgeo.model.spacetime import (
    N_CONT_FEATURES,
    CellVocab,
    SpaceTimeEncoder,
    cyclic_time,
    event_features,
    fourier_features,
)


def test_cell_vocab_maps_unseen_cells_through_their_parents() -> None:
    seen = latlng_to_cell(np.array([40.7580, 40.7484]), np.array([-73.9855, -73.9857]), 10)
    nearby = latlng_to_cell(np.array([40.7581]), np.array([-73.9856]), 10)  # same res-9 block, maybe new res-10
    far = latlng_to_cell(np.array([51.5]), np.array([-0.12]), 10)  # London: unknown at every resolution
    vocab = CellVocab.build(seen, (10, 9, 7))
    want = [len({h3.cell_to_parent(h3.int_to_str(int(c)), r) for c in seen}) + 1 for r in (10, 9, 7)]
    assert vocab.sizes() == want  # distinct cells per resolution, plus the "unknown" row
    idx = vocab.lookup(np.concatenate([seen, nearby, far]))
    assert (idx[:2] > 0).all()
    assert idx[2, 1] == idx[0, 1] and idx[2, 2] == idx[0, 2]  # the neighbour shares the parents' rows
    assert (idx[3] == 0).all()
    parent = h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(seen[0])), 9))
    assert vocab.cells[1][idx[0, 1] - 1] == parent


def test_cyclic_time_wraps_around_midnight_and_the_week() -> None:
    t = cyclic_time(np.array([23.99, 0.0, 12.0]), np.array([6, 0, 3]))
    assert t.shape == (3, 6)
    continuous = [0, 2, 3, 5]  # hour of day and hour of week (the weekday itself jumps at midnight)
    assert np.abs(t[0, continuous] - t[1, continuous]).max() < 0.01  # Sunday 23:59 is next to Monday 00:00
    assert np.abs(t[2] - t[1]).max() > 0.5


def test_event_features_look_only_at_the_same_users_previous_event() -> None:
    ts = pd.to_datetime(["2012-04-02 10:00", "2012-04-02 12:00", "2012-04-02 13:00"], utc=True)
    events = pd.DataFrame({
        "dataset_id": [1, 1, 1], "user_id": ["a", "a", "b"], "ts": ts,
        "local_ts": ts.tz_localize(None) - pd.Timedelta(hours=4),
        "lat": [40.70, 40.71, 40.70], "lon": [-74.0, -74.0, -74.0],
    })
    f = event_features(events)
    assert f.cont.shape == (3, N_CONT_FEATURES)
    np.testing.assert_allclose(f.gap_hours, [0.0, 2.0, 0.0])  # user b's first event has no gap
    assert f.cont[0, 7] == 0.0 and f.cont[2, 7] == 0.0
    assert abs(np.expm1(f.cont[1, 7]) - haversine_km(40.70, -74.0, 40.71, -74.0)) < 1e-4


def test_encoder_output_shape_and_fourier_scales() -> None:
    config = ModelConfig(n_embd=8, fourier_freqs=4, cell_resolutions=(10, 9))
    enc = SpaceTimeEncoder(config, [5, 3], (40.7, -74.0))
    out = enc(torch.zeros(2, 3, 2, dtype=torch.long), torch.full((2, 3), 40.7), torch.full((2, 3), -74.0),
              torch.zeros(2, 3, N_CONT_FEATURES))
    assert out.shape == (2, 3, 8)
    four = fourier_features(torch.tensor([40.7, 40.71]), torch.tensor([-74.0, -74.0]), 4, (40.7, -74.0))
    assert four.shape == (2, 16) and not torch.allclose(four[0], four[1])
