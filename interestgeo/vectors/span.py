"""A dynamic update's whole-span aggregates ("all", hours of the week), re-weighed by the people it
touched: their old contribution out, their new one in.

Why: a window aggregate is recomputed from the events of its window, but a whole-span one covers
every event of the dataset, and reading them all (with their vectors) for an upload of a hundred
events would cost a full score's memory. A span row holds a user-weighted mean with its people,
i.e. a sum over people of each person's mean there; people are independent, so the row's sums
minus the touched people's old per-person means plus their new ones is exactly the row a full
recompute gives (tests/vectors/test_refresh.py: an update equals a full re-score). Memory: the
touched people's histories and the dataset's span rows, not its events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from interestgeo.analytics import Filters, ScoredEvents, aggregate_cell_windows, aggregate_user_windows
from interestgeo.config import Config
from interestgeo.topics import Topics
from interestgeo.vectors.chunks import stored_aggregates
from interestgeo.vectors.staging import _cell_window_columns, _user_window_columns
from interestgeo.windows import SPAN_WINDOWS

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = ["span_rows_stored", "update_span_aggregates"]

_KEYS = ["cell", "window_start"]


def span_rows_stored(store: Store, config: Config, datasets: list[int]) -> bool:
    """Whether every span aggregate of these datasets is stored (with shares): what the update re-weighs."""
    return all(
        store.cell_window_shares(window, resolutions[0], datasets=[d]) is not None
        for d in datasets for window, resolutions, _ in stored_aggregates(config) if window in SPAN_WINDOWS
    )


def update_span_aggregates(
    store: Store, config: Config, topics: Topics, before: ScoredEvents, after: ScoredEvents, datasets: list[int]
) -> None:
    """Replace the span rows of `datasets`: stored - `before` (the touched people's events and
    vectors as stored until now) + `after` (their events and vectors from now on)."""
    for dataset_id in datasets:
        filters = Filters(datasets=(dataset_id,))
        for window, resolutions, with_users in stored_aggregates(config):
            if window not in SPAN_WINDOWS:
                continue
            frames, vectors, shares = [], [], []
            for resolution in resolutions:
                frame, vecs, shs = _reweighed(store, window, resolution, dataset_id, before, after, filters)
                frames.append(frame.assign(dataset_id=dataset_id, resolution=np.int8(resolution)))
                vectors.append(vecs)
                shares.append(shs)
            cells = pd.concat(frames, ignore_index=True)
            store.replace_window_vectors(
                "cell_window_vectors", window, _cell_window_columns(cells, window), np.concatenate(vectors),
                datasets=[dataset_id], resolution=list(resolutions), shares=np.concatenate(shares),
            )
            if with_users:
                _replace_user_rows(store, window, dataset_id, after, filters)


def _reweighed(
    store: Store, window: str, resolution: int, dataset_id: int, before: ScoredEvents, after: ScoredEvents,
    filters: Filters,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    got = store.cell_window_shares(window, resolution, datasets=[dataset_id], vectors=True)
    if got is None:
        raise LookupError("no span aggregates stored to update: run a full `interestgeo score`")
    stored, unit, shares = got
    parts = [(stored, unit, shares, 1.0)]
    for scored, sign in ((before, -1.0), (after, 1.0)):
        if len(scored):
            frame, vecs, shs = aggregate_cell_windows(scored, filters, resolution, window)
            parts.append((frame, vecs, shs, sign))
    keys = pd.concat([p[0][_KEYS] for p in parts], ignore_index=True)
    group, uniques = pd.factorize(pd.MultiIndex.from_frame(keys), sort=True)
    n, dim, n_topics = len(uniques), unit.shape[1], shares.shape[1]
    users, events = np.zeros(n), np.zeros(n)
    vector_sums, share_sums = np.zeros((n, dim)), np.zeros((n, n_topics))
    at = 0
    for frame, vecs, shs, sign in parts:
        rows = group[at : at + len(frame)]
        at += len(frame)
        people = frame["users"].to_numpy(np.float64)
        # each part's keys are distinct, so a plain indexed add is exact (np.add.at is ~10x slower)
        users[rows] += sign * people
        events[rows] += sign * frame["events"].to_numpy(np.float64)
        vector_sums[rows] += sign * vecs * (frame["coherence"].to_numpy(np.float64) * people)[:, None]
        share_sums[rows] += sign * shs * people[:, None]
    keep = np.rint(users) > 0
    users, events = np.rint(users[keep]), np.rint(events[keep])
    means = vector_sums[keep] / users[:, None]
    norms = np.linalg.norm(means, axis=1)
    frame = pd.DataFrame(
        {
            "cell": uniques.get_level_values(0).to_numpy(np.int64)[keep],
            "window_start": uniques.get_level_values(1).to_numpy("datetime64[ns]")[keep],
            "events": events.astype(np.int64),
            "users": users.astype(np.int64),
            "coherence": norms.astype(np.float32),
        }
    )
    unit_out = (means / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    return frame, unit_out, (share_sums[keep] / users[:, None]).astype(np.float32)


def _replace_user_rows(store: Store, window: str, dataset_id: int, after: ScoredEvents, filters: Filters) -> None:
    """The dataset's user rows of `window` with the touched people's replaced by their new ones."""
    stored, vectors, _ = store.window_vectors("user_window_vectors", window, datasets=[dataset_id])
    fresh, fresh_vectors = aggregate_user_windows(after, filters, window)
    touched = stored["user_id"].astype(str).isin(set(fresh["user_id"].astype(str))).to_numpy() if len(stored) else np.zeros(0, bool)
    kept = stored.loc[~touched] if len(stored) else stored
    frame = pd.concat([kept[fresh.columns] if len(kept) else kept, fresh], ignore_index=True)
    matrix = np.concatenate([vectors[~touched], fresh_vectors]) if len(stored) else fresh_vectors
    store.replace_window_vectors(
        "user_window_vectors", window, _user_window_columns(frame, dataset_id, window), matrix, datasets=[dataset_id],
    )
