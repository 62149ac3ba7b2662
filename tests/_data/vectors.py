"""Snapshots of a scored store, shared by the tests that compare two ways of scoring it
(tests/vectors/, tests/analytics/test_explain.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interestgeo.store import Store
from interestgeo.topics import topic_similarities


def snapshot(store: Store) -> dict[str, object]:
    events, vectors = store.scored_events()
    frame, sims = store.scored_event_sims()
    pd.testing.assert_frame_equal(frame, events)
    # every vector's topic similarities are stored with it, and are its similarities
    np.testing.assert_allclose(sims, topic_similarities(vectors, store.analytics_topics()), atol=1e-6)
    cells, cell_vectors, _ = store.window_vectors("cell_window_vectors", "week", k=0)
    users, user_vectors, _ = store.window_vectors("user_window_vectors", "week")
    return {
        "events": events[["event_id", "topic"]],
        "vectors": vectors,
        "sims": sims,
        "cells": cells.drop(columns=["coherence"]),
        "coherence": cells["coherence"].to_numpy(),
        "cell_vectors": cell_vectors,
        "users": users,
        "user_vectors": user_vectors,
    }


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    for key in a:
        if isinstance(a[key], pd.DataFrame):
            pd.testing.assert_frame_equal(a[key].reset_index(drop=True), b[key].reset_index(drop=True), obj=key)
        else:
            np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)
