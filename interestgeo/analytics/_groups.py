"""The user-weighted group kernel: each distinct user's events are averaged first, then users
(see the package docstring). Private: regions, drift and query build on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from interestgeo.analytics.filters import Filters
from interestgeo.analytics.scored import ScoredEvents, filter_mask
from interestgeo.cells import WHOLE_DATASET
from interestgeo.windows import window_starts



@dataclass
class _Groups:
    """Events (given by positions `idx`) grouped by a key, with user-balanced weights."""

    idx: np.ndarray  # (n,) positions of the selected events in ScoredEvents
    group: np.ndarray  # (n,) group index of each selected event
    keys: np.ndarray  # (G,) key of each group (sorted)
    events: np.ndarray  # (G,) events per group
    users: np.ndarray  # (G,) distinct users per group
    weights: np.ndarray  # (n,) 1 / (events of the user in the group * users in the group)
    pair: np.ndarray  # (n,) index of the event's (group, user) pair
    pair_group: np.ndarray  # (P,) group of each pair
    pair_user: np.ndarray  # (P,) user code of each pair

    @property
    def size(self) -> int:
        return len(self.keys)

    def mean(self, values: np.ndarray) -> np.ndarray:
        """User-weighted mean per group of per-event values (n,) or (n, C) -> (G,) or (G, C)."""
        w = self.weights
        if values.ndim == 1:
            return np.bincount(self.group, weights=w * values, minlength=self.size)
        if values.shape[1] <= 32:
            return np.stack(
                [np.bincount(self.group, weights=w * values[:, c], minlength=self.size) for c in range(values.shape[1])],
                axis=1,
            )
        raise ValueError("wide values: use mean_rows with the full (N, D) matrix")

    def mean_rows(self, matrix: np.ndarray) -> np.ndarray:
        """User-weighted mean per group of rows of the FULL (N, D) matrix -> (G, D) float32.

        A sparse (G x N) weight matrix (scipy CSR) times the matrix: one pass over the selected
        rows, no copy of them (at 100k x 384 floats a gather alone costs more than the product).
        0.02-0.03 s for the demo's 113k events into 43 weeks or 245 days. A dense weight matrix
        was one BLAS call but G times the work (0.1-0.7 s for the weeks); torch's sparse product
        was as fast but its import costs a fresh dashboard 1-1.5 s, scipy's 0.1 s.
        """
        return np.asarray(self.weight_matrix(matrix.shape[0]) @ np.asarray(matrix, dtype=np.float32), dtype=np.float32)

    def weight_matrix(self, n: int) -> Any:
        """The (G, n) scipy CSR matrix of the user-balanced weights over all n rows (`mean_rows`)."""
        import scipy.sparse

        order = np.argsort(self.group, kind="stable")
        starts = np.zeros(self.size + 1, dtype=np.int64)
        np.cumsum(self.events, out=starts[1:])
        return scipy.sparse.csr_matrix(
            (self.weights[order].astype(np.float32), self.idx[order], starts), shape=(self.size, n)
        )

    def means_of(self, scored: ScoredEvents) -> np.ndarray:
        """(G, D) user-weighted mean interest vectors of the groups, wherever the vectors are."""
        return scored.group_means(self.weight_matrix(len(scored)))

    def pair_mean(self, values: np.ndarray) -> np.ndarray:
        """(P,) plain mean per (group, user) pair of per-event values (n,)."""
        counts = np.bincount(self.pair)
        return np.bincount(self.pair, weights=values) / counts


def _group(scored: ScoredEvents, idx: np.ndarray, key: np.ndarray) -> _Groups:
    """Group the events at positions `idx` by `key` (n,) int64."""
    group, keys = pd.factorize(key, sort=True)
    group = group.astype(np.int64)
    user = scored.user_codes[idx]
    n_users = int(scored.user_codes.max(initial=0)) + 1
    pair, pair_keys = pd.factorize(group * n_users + user)
    pair = pair.astype(np.int64)
    pair_group = pair_keys // n_users
    pair_user = pair_keys % n_users
    pair_events = np.bincount(pair)
    users = np.bincount(pair_group, minlength=len(keys))
    events = np.bincount(group, minlength=len(keys))
    weights = 1.0 / (pair_events[pair] * users[group])
    return _Groups(idx, group, np.asarray(keys, dtype=np.int64), events, users, weights, pair, pair_group, pair_user)


def _combine_keys(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One int64 key for a pair of int64 keys (factorised), plus the decoders for each part."""
    ca, ua = pd.factorize(a, sort=True)
    cb, ub = pd.factorize(b, sort=True)
    return ca.astype(np.int64) * len(ub) + cb, np.asarray(ua, dtype=np.int64), np.asarray(ub, dtype=np.int64)


def _normalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(x, axis=-1)
    return (x / np.maximum(norms, 1e-12)[..., None]).astype(np.float32), norms


def _cell_window_groups(
    scored: ScoredEvents, filters: Filters | None, resolution: int, window: str | None
) -> tuple[_Groups, pd.DataFrame]:
    """Groups by cell (x window) with a frame of their keys: cell[, window_start], events, users.

    `resolution` WHOLE_DATASET groups everything filtered as one cell 0 (per window)."""
    idx = np.flatnonzero(filter_mask(scored, filters))
    cells = np.zeros(len(idx), dtype=np.int64) if resolution == WHOLE_DATASET else scored.parents(resolution)[idx]
    if window is None:
        groups = _group(scored, idx, cells)
        frame = pd.DataFrame({"cell": groups.keys})
    else:
        key, cell_values, window_values = _combine_keys(cells, scored.window_keys(window)[idx])
        groups = _group(scored, idx, key)
        n_windows = len(window_values)
        frame = pd.DataFrame(
            {
                "cell": cell_values[groups.keys // n_windows],
                "window_start": window_starts(window_values[groups.keys % n_windows], window),
            }
        )
    frame["events"] = groups.events
    frame["users"] = groups.users
    return groups, frame
