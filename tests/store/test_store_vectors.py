"""store/vectors.py and window_vectors.py: vectors in and out (Arrow codecs, order, topic similarities,
window-vector replacement)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from interestgeo.store import Store
from interestgeo.store._db import vectors_from_arrow
from interestgeo.store.compact import quantise_vectors


def _cell_rows(resolutions: list[int], events: int) -> tuple[dict[str, object], np.ndarray]:
    """One cell_window_vectors row per resolution, `events` in each (a marker of which write it came from)."""
    n = len(resolutions)
    columns = {
        "dataset_id": np.ones(n, dtype=np.int32),
        "resolution": np.array(resolutions, dtype=np.int8),
        "window_size": ["week"] * n,
        "window_start": np.full(n, np.datetime64("2012-04-02", "us")),
        "cell": np.arange(n, dtype=np.int64),
        "events": np.full(n, events, dtype=np.int32),
        "users": np.full(n, 5, dtype=np.int32),
        "coherence": np.ones(n, dtype=np.float32),
    }
    return columns, np.ones((n, 3), dtype=np.float32)


def test_cell_window_vectors_replaced_for_several_resolutions_at_once(tmp_store: Store) -> None:
    columns, vectors = _cell_rows([8, 9], events=1)
    tmp_store.replace_window_vectors("cell_window_vectors", "week", columns, vectors, datasets=[1], resolution=[8, 9])
    columns, vectors = _cell_rows([9], events=2)  # only resolution 9 is replaced
    tmp_store.replace_window_vectors("cell_window_vectors", "week", columns, vectors, datasets=[1], resolution=[9])
    for resolution, events in ((8, 1), (9, 2)):
        frame, stored, _ = tmp_store.window_vectors("cell_window_vectors", "week", resolution=resolution, k=0)
        assert frame["events"].tolist() == [events] and stored.shape == (1, 3)


def test_vectors_from_arrow_scatters_selected_rows_across_chunks() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 3)).astype(np.float32)
    chunks = [vectors[:3], vectors[3:3], vectors[3:]]  # an empty chunk in the middle, as Arrow may give
    column = pa.chunked_array([
        pa.ListArray.from_arrays(pa.array(np.arange(0, (len(c) + 1) * 3, 3, dtype=np.int32)), pa.array(c.reshape(-1)))
        for c in chunks
    ])
    np.testing.assert_array_equal(vectors_from_arrow(column, 7), vectors)
    rows = np.array([6, 0, 4, 2])
    np.testing.assert_array_equal(vectors_from_arrow(column, 7, rows), vectors[rows])
    every = np.array([3, 6, 0, 5, 1, 4, 2])  # all rows, reordered (a whole load)
    np.testing.assert_array_equal(vectors_from_arrow(column, 7, every), vectors[every])
    assert vectors_from_arrow(column, 7, rows[:0]).shape == (0, 3)


def test_topic_similarities_are_stored_with_the_vectors_and_dropped_with_their_topics(sample_store: Store) -> None:
    # sims given: stored and read back aligned like scored_events; not given: NaN rows; new topics
    # make every stored similarity meaningless (NULL) until the vectors are written again
    events = sample_store.events()
    rng = np.random.default_rng(2)
    order = rng.permutation(len(events))
    with_sims, without = order[:40], order[40:50]
    vectors = rng.normal(size=(len(events), 4)).astype(np.float32)
    sims = rng.normal(size=(len(events), 3)).astype(np.float32)
    ids, datasets = events["event_id"].to_numpy(), events["dataset_id"].to_numpy()
    sample_store.write_topics(["a", "b", "c"], "phrases", np.eye(3, 4, dtype=np.float32))
    sample_store.write_event_vectors(datasets[with_sims], ids[with_sims], np.zeros(40), vectors[with_sims], sims[with_sims])
    sample_store.write_event_vectors(datasets[without], ids[without], np.zeros(10), vectors[without])
    frame, got = sample_store.scored_event_sims()
    scored_frame, _ = sample_store.scored_events()
    pd.testing.assert_frame_equal(frame, scored_frame)
    row = {event_id: i for i, event_id in enumerate(ids)}
    expected = np.full((len(frame), 3), np.nan, dtype=np.float32)
    for i, event_id in enumerate(frame["event_id"]):
        if row[event_id] in set(with_sims.tolist()):
            expected[i] = sims[row[event_id]]
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got).any(axis=1).sum() == 10
    sample_store.write_topics(["a", "b"], "phrases", np.eye(2, 4, dtype=np.float32))
    _, got = sample_store.scored_event_sims()
    assert np.isnan(got).all()


def test_missing_topic_similarities_are_filled_from_the_vectors_in_batches(sample_store: Store) -> None:
    events = sample_store.events()
    ids, datasets = events["event_id"].to_numpy(), events["dataset_id"].to_numpy()
    vectors = np.random.default_rng(4).normal(size=(len(events), 4)).astype(np.float32)
    stored = quantise_vectors(vectors).dequantised()  # what the store gives back
    topics = np.eye(3, 4, dtype=np.float32)
    sample_store.write_event_vectors(datasets[:7], ids[:7], np.zeros(7), vectors[:7], vectors[:7] @ topics.T)
    sample_store.write_event_vectors(datasets[7:], ids[7:], np.zeros(len(ids) - 7), vectors[7:])  # none stored
    sample_store.write_topics(["a", "b", "c"], "phrases", topics)  # (drops the first 7's too)
    filled = sample_store.fill_topic_sims(lambda v: v @ topics.T + 1.0, batch=3)  # +1: see what was filled
    assert filled == len(ids)
    frame, sims = sample_store.scored_event_sims()
    rows = [int(np.flatnonzero(ids == i)[0]) for i in frame["event_id"]]
    np.testing.assert_allclose(sims, stored[rows] @ topics.T + 1.0, rtol=1e-6)
    assert sample_store.fill_topic_sims(lambda v: v @ topics.T) == 0  # nothing left to fill


def test_event_vectors_come_in_the_asked_order_or_not_at_all(sample_store: Store) -> None:
    events = sample_store.events()
    ids, datasets = events["event_id"].to_numpy(), events["dataset_id"].to_numpy()
    written = np.random.default_rng(3).normal(size=(len(events), 5)).astype(np.float32)
    sample_store.write_event_vectors(datasets[::-1], ids[::-1], np.zeros(len(ids)), written[::-1])
    vectors = quantise_vectors(written).dequantised()  # what the store gives back
    for wanted in (np.array([ids[7], ids[2], ids[30]]), ids[::-1], np.roll(ids, 5)):  # few (a join), most (a scan)
        rows = [int(np.flatnonzero(ids == i)[0]) for i in wanted]
        np.testing.assert_array_equal(sample_store.event_vectors(wanted), vectors[rows])
    with pytest.raises(LookupError, match="1 of 2 events have no interest vector"):
        sample_store.event_vectors(np.array([ids[0], ids.max() + 1]))


def test_scored_events_align_vectors_with_events(sample_store: Store) -> None:
    # Vectors written in shuffled order for all but a few events: each comes back on its event's
    # row, in events() order, and events without one are left out.
    events = sample_store.events()
    rng = np.random.default_rng(1)
    chosen = rng.permutation(len(events))[: len(events) - 5]
    written = rng.normal(size=(len(chosen), 4)).astype(np.float32)
    sample_store.write_event_vectors(events["dataset_id"].to_numpy()[chosen], events["event_id"].to_numpy()[chosen],
                                     np.arange(len(chosen)) % 3, written)
    vectors = quantise_vectors(written).dequantised()  # what the store gives back
    frame, got = sample_store.scored_events()
    kept = np.sort(chosen)
    pd.testing.assert_frame_equal(frame.drop(columns=["topic"]), events.iloc[kept].reset_index(drop=True))
    by_id = dict(zip(events["event_id"].to_numpy()[chosen], range(len(chosen)), strict=True))
    order = [by_id[i] for i in frame["event_id"]]
    np.testing.assert_array_equal(got, vectors[order])
    assert frame["topic"].tolist() == [int(i) % 3 for i in order]
