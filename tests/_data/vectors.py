"""Snapshots of a scored store, shared by the tests that compare two ways of scoring it
(tests/vectors/, tests/analytics/test_explain.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interestgeo.analytics import ScoredEvents
from interestgeo.config import Config
from interestgeo.store import Store
from interestgeo.topics import topic_similarities
from interestgeo.vectors.refresh import _write_aggregates


def snapshot(store: Store) -> dict[str, object]:
    events, vectors = store.scored_events()
    frame, sims = store.scored_event_sims()
    pd.testing.assert_frame_equal(frame, events)
    # every vector's topic similarities are stored with it, and are its similarities
    np.testing.assert_allclose(sims, topic_similarities(vectors, store.analytics_topics()), atol=1e-6)
    out: dict[str, object] = {"events": events[["event_id", "topic"]], "vectors": vectors, "sims": sims}
    for window in ("week", "all", "hour_of_week"):  # the dated and the whole-span aggregates
        cells, cell_vectors, _ = store.window_vectors("cell_window_vectors", window, k=0)
        users, user_vectors, _ = store.window_vectors("user_window_vectors", window)
        assert len(cells) and (window == "hour_of_week") != bool(len(users)), window
        out |= {
            f"cells {window}": cells.drop(columns=["coherence"]),
            f"coherence {window}": cells["coherence"].to_numpy(),
            f"cell_vectors {window}": cell_vectors,
            f"users {window}": users.drop(columns=["coherence"]),
            f"user coherence {window}": users["coherence"].to_numpy(np.float64) if len(users) else np.zeros(0),
            f"user_vectors {window}": user_vectors,
        }
    return out


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    for key in a:
        if isinstance(a[key], pd.DataFrame):
            pd.testing.assert_frame_equal(a[key].reset_index(drop=True), b[key].reset_index(drop=True), obj=key)
        else:
            np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


def forget_vectors_since(store: Store, config: Config, since: pd.Timestamp) -> pd.Series:
    """Zero the vectors of the events at/after `since` and store the aggregates a full score of what
    is left would store, so that only an update (`since=`) can bring them back; the (N,) mask of the
    forgotten events over store.events(). (An update re-weighs the whole-span aggregates by the
    touched people's stored vectors: those must be the forgotten ones.)"""
    events = store.events()
    new = events["ts"] >= since
    _, stored = store.scored_events()
    store.write_event_vectors(
        events.loc[new, "dataset_id"].to_numpy(), events.loc[new, "event_id"].to_numpy(),
        np.zeros(new.sum(), dtype=np.int16), np.zeros((new.sum(), stored.shape[1]), dtype=np.float32),
    )
    forgotten, vectors = store.scored_events()
    _write_aggregates(store, config, ScoredEvents(forgotten, vectors, store.analytics_topics(), config),
                      sorted(forgotten["dataset_id"].unique().tolist()), None)
    return new
