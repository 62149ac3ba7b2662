"""Region answers read from the aggregates `interestgeo score` stores, not from per-event data.

Why: at millions of events the per-event vectors (2 kB each) do not fit a reader's memory, and a
question asked of everyone (the Overview, the map, a phrase over all places, the drift of
everywhere) should not cost a pass over all the events. Every region answer is a user-weighted
mean of per-event values (package docstring), and score stores those means with their people per
cell and window, per cell over the whole span ("all"), dataset-wide per window, per hour of the
week and per user (`vectors.stored_aggregates`). Datasets' people are distinct, so rows of several
datasets sum exactly, weighted by their users; the answer equals the per-event one:

* maps and shares: the stored topic shares per cell (x window) and dataset-wide;
* drift: the dataset-wide window means (distance) and shares (change points);
* a phrase: each cell's stored mean . phrase (linear in the mean); the strong-interest bar from
  every user's stored mean . phrase; strongly interested people per cell counted from the events
  (SQL, no vectors); the time profile from the hour-of-week means;
* trend counts: counted by the store from the events' columns.

Only questions whose filters name nothing but datasets are answered here (`answerable`); any other
filter (dates, hours, a region, a topic) changes which events count, so those are answered from
the events (`ScoredEvents`, whose vectors stay in the store when they are too many). Callers try
these first and fall back on None. tests/analytics/test_stored.py checks both give the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from interestgeo.analytics.filters import Filters
from interestgeo.analytics.query import QueryResult
from interestgeo.analytics.scored import encoder_mismatch
from interestgeo.analytics.regions import (
    Drift, InterestProfile, RegionMap, _drift_from, _profile_from, _region_map_from,
)
from interestgeo.cells import WHOLE_DATASET
from interestgeo.config import Config
from interestgeo.windows import COUNTED_WINDOWS

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = [
    "answerable", "stored_drift", "stored_profile", "stored_query", "stored_region_map", "stored_window_counts",
]


def answerable(filters: Filters | None) -> bool:
    """Whether the stored whole-span aggregates answer a question under these filters exactly."""
    return filters is None or filters.only_datasets


def _combined(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows of several datasets with the same keys summed: events, users, and the user-weighted
    mean score (sum of users x score over users)."""
    frame = frame.assign(weighted=frame["users"] * frame["score"])
    out = frame.groupby(keys, as_index=False, sort=True)[["events", "users", "weighted"]].sum()
    out["score"] = out["weighted"] / out["users"]
    return out.drop(columns=["weighted"])


@dataclass
class _Cells:
    """Stored cell (x window) rows of several datasets summed by key (their people are distinct)."""

    frame: pd.DataFrame  # cell, window_start, events, users; sorted by cell, then window
    shares: np.ndarray  # (G, T) float64 user-weighted topic shares
    means: np.ndarray | None  # (G, D) float64 user-weighted mean vectors (not normalised), when asked


def _stored_cells(
    store: Store, window: str, resolution: int, datasets: list[int] | None, vectors: bool = False
) -> _Cells | None:
    got = store.cell_window_shares(window, resolution, datasets=datasets, vectors=vectors)
    if got is None:
        return None
    frame, unit, shares = got
    keys = pd.MultiIndex.from_frame(frame[["cell", "window_start"]])
    group, uniques = pd.factorize(keys, sort=True)
    users = frame["users"].to_numpy(np.float64)
    total = np.bincount(group, weights=users, minlength=len(uniques))

    def mean(values: np.ndarray) -> np.ndarray:
        out = np.zeros((len(uniques), values.shape[1]))
        np.add.at(out, group, values * users[:, None])
        return out / total[:, None]

    combined = pd.DataFrame(
        {
            "cell": uniques.get_level_values(0).to_numpy(np.int64),
            "window_start": uniques.get_level_values(1).to_numpy("datetime64[ns]"),
            "events": np.bincount(group, weights=frame["events"].to_numpy(np.float64), minlength=len(uniques)).astype(np.int64),
            "users": total.astype(np.int64),
        }
    )
    means = None if unit is None else mean(unit * frame["coherence"].to_numpy(np.float64)[:, None])
    return _Cells(combined, mean(shares), means)


def _datasets(filters: Filters | None) -> list[int] | None:
    return list(filters.datasets) if filters is not None and filters.datasets else None


def stored_region_map(
    store: Store, config: Config, filters: Filters | None = None, resolution: int = 8, window: str | None = None
) -> RegionMap | None:
    """`region_map` from the stored aggregates (the whole span, or a stored window's playback),
    or None when they cannot answer it."""
    stored_window = "all" if window is None else window
    if not answerable(filters) or resolution not in config.analytics.stored_resolutions:
        return None
    if window is not None and window not in config.analytics.stored_windows:
        return None
    topics = store.analytics_topics()
    cells = None if topics is None else _stored_cells(store, stored_window, resolution, _datasets(filters))
    if cells is None:
        return None
    frame = cells.frame if window is not None else cells.frame.drop(columns=["window_start"])
    return _region_map_from(frame, cells.shares, config.privacy.k_min_users, topics.labels, resolution)


def stored_profile(store: Store, config: Config, filters: Filters | None = None) -> InterestProfile | None:
    """`interest_profile` from the stored dataset-wide aggregates, or None when they cannot answer it."""
    topics = store.analytics_topics() if answerable(filters) else None
    everything = None if topics is None else _stored_cells(store, "all", WHOLE_DATASET, None)
    chosen = everything if not _datasets(filters) else _stored_cells(store, "all", WHOLE_DATASET, _datasets(filters))
    if everything is None or chosen is None:
        return None
    events, users = int(chosen.frame["events"].sum()), int(chosen.frame["users"].sum())
    return _profile_from(chosen.shares[0], events, users, everything.shares[0], topics.labels, config.privacy.k_min_users)


def stored_drift(store: Store, config: Config, filters: Filters | None = None, window: str = "week") -> Drift | None:
    """`region_drift` from the stored dataset-wide window aggregates, or None when they cannot answer it."""
    if not answerable(filters) or window not in config.analytics.stored_windows:
        return None
    topics = store.analytics_topics()
    cells = None if topics is None else _stored_cells(store, window, WHOLE_DATASET, _datasets(filters), vectors=True)
    if cells is None or cells.means is None:
        return None
    users = cells.frame["users"].to_numpy(np.int64)
    visible = users >= config.privacy.k_min_users
    return _drift_from(
        cells.frame["window_start"].to_numpy("datetime64[ns]")[visible], cells.frame["events"].to_numpy(np.int64)[visible],
        users[visible], cells.means[visible], cells.shares[visible], topics.labels, config.analytics,
        int((~visible).sum()), window,
    )


def stored_window_counts(
    store: Store, config: Config, filters: Filters | None = None, window: str = "day"
) -> tuple[pd.DataFrame, int] | None:
    """`window_counts` from the dataset-wide rows score stores for `window` (days, and the stored
    windows), else counted by the store from the scored events; None for other filters.

    The stored rows answer only when they hold every scored event of the datasets (a file scored
    before they were stored, or a dataset scored since by an older version, is counted instead)."""
    if not answerable(filters) or window not in COUNTED_WINDOWS:
        return None
    datasets = _datasets(filters)
    cells = _stored_cells(store, window, WHOLE_DATASET, datasets)
    if cells is not None and int(cells.frame["events"].sum()) == store.event_vector_count(datasets):
        frame = cells.frame.sort_values("window_start")[["window_start", "events", "users"]]
    else:
        frame = store.scored_window_counts(window, datasets)
    visible = (frame["users"] >= config.privacy.k_min_users).to_numpy()
    out = frame.loc[visible].reset_index(drop=True)
    out["window_start"] = out["window_start"].to_numpy("datetime64[ns]")
    return out.astype({"events": np.int64, "users": np.int64}), int((~visible).sum())


def stored_query(
    store: Store, config: Config, phrase: str, phrase_vector: np.ndarray, filters: Filters | None = None,
    resolution: int = 8,
) -> QueryResult | None:
    """`query_interest` from the stored aggregates: the same QueryResult, or None when they cannot
    answer it (other filters, a resolution not stored, a store scored before they existed)."""
    if not answerable(filters) or resolution not in config.analytics.stored_resolutions:
        return None
    datasets = list(filters.datasets) if filters is not None and filters.datasets else None
    q = np.asarray(phrase_vector, dtype=np.float32)
    dim = store.vector_dim()
    if q.shape != (dim,):
        if dim == 0:
            return None
        raise encoder_mismatch(dim, q)
    cells = store.window_vector_scores("cell_window_vectors", "all", q, datasets=datasets, resolution=resolution)
    times = store.window_vector_scores("cell_window_vectors", "hour_of_week", q, datasets=datasets, resolution=WHOLE_DATASET)
    users = store.window_vector_scores("user_window_vectors", "all", q, datasets=datasets)
    if cells.empty or times.empty or users.empty or users["score"].isna().any():
        return None
    k = config.privacy.k_min_users
    cells = _combined(cells, ["cell"])
    threshold = float(np.quantile(users["score"].to_numpy(np.float64), config.analytics.strong_interest_quantile))
    strong = store.users_per_cell(users.loc[users["score"] >= threshold], resolution, datasets)
    visible = cells["users"] >= k
    cells = cells.loc[visible].merge(strong.rename(columns={"users": "strong_users"}), on="cell", how="left")
    cells["strong_users"] = cells["strong_users"].fillna(0).astype(np.int64)
    cells = cells[["cell", "events", "users", "score", "strong_users"]].astype({"events": np.int64, "users": np.int64})
    cells = cells.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    cells["rank"] = np.arange(1, len(cells) + 1)

    times = _combined(times, ["window_start"])
    visible_t = times["users"] >= k
    hours = ((times["window_start"] - pd.Timestamp("1970-01-05")) // pd.Timedelta(hours=1)).to_numpy(np.int64)
    profile = pd.DataFrame(
        {
            "dow": hours // 24,
            "hour": hours % 24,
            "events": times["events"].to_numpy(np.int64),
            "users": times["users"].to_numpy(np.int64),
            "score": times["score"].to_numpy(np.float64),
        }
    ).loc[visible_t.to_numpy()].reset_index(drop=True)
    return QueryResult(
        phrase, cells, profile, int((~visible).sum()), int((~visible_t).sum()), threshold, resolution
    )
