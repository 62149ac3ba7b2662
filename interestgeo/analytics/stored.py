"""Region answers read from the aggregates `interestgeo score` stores, not from per-event vectors.

Why: at millions of events the per-event vectors (2 kB each) do not fit a reader's memory, and a
question asked of everyone (a phrase over all places, the drift of everywhere) should not cost a
pass over all of them. A phrase's score for a group is linear in the group's user-weighted mean
vector (package docstring), so the means stored per cell over the whole span ("all"), per hour
of the week and per user give the per-event answer exactly, in a few thousand rows:

* cells: the cell's stored mean . phrase, summed over datasets weighted by their users (a
  dataset's people are its own, so users add up);
* the strong-interest bar: the quantile of every user's stored mean . phrase; strongly
  interested people per cell are then counted from the events (SQL, no vectors);
* the time profile: the dataset-wide hour-of-week means (`cells.WHOLE_DATASET`).

Only questions whose filters name nothing but datasets are answered here (`answerable`); any other
filter (dates, hours, a region, a topic) changes which events count, so those are answered from
the per-event vectors (`ScoredEvents.affinity`, computed inside the store when they are not held).
tests/analytics/test_stored.py checks both give the same answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from interestgeo.analytics.filters import Filters
from interestgeo.analytics.query import QueryResult
from interestgeo.cells import WHOLE_DATASET
from interestgeo.config import Config

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = ["answerable", "combined_window_means", "stored_query"]


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


def combined_window_means(
    frame: pd.DataFrame, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored dataset-wide rows (window_start, users, coherence; unit vectors) of one or more
    datasets -> (window starts, (W, D) user-weighted mean vectors, users), datasets summed."""
    starts, group = np.unique(frame["window_start"].to_numpy("datetime64[ns]"), return_inverse=True)
    users = frame["users"].to_numpy(np.float64)
    weighted = vectors * (users * frame["coherence"].to_numpy(np.float64))[:, None]
    sums = np.zeros((len(starts), vectors.shape[1]))
    np.add.at(sums, group, weighted)
    total = np.bincount(group, weights=users, minlength=len(starts))
    return starts, (sums / total[:, None]).astype(np.float32), total.astype(np.int64)


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
        raise ValueError(
            f"the stored interest vectors ({dim}-d) come from another text encoder than the configured one "
            f"({q.shape[-1]}-d): run a full `interestgeo score` to re-embed them, or set text.encoder back"
        )
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
