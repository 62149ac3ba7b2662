"""Region-level results (k threshold applied): maps, cell x window vectors, interest profiles,
period comparison, drift of a region and window counts.

Why together: they are all groupings of the filtered events by cell, window or both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from interestgeo.analytics._groups import _cell_window_groups, _combine_keys, _group, _normalise
from interestgeo.analytics.filters import Filters
from interestgeo.analytics.scored import ScoredEvents, filter_mask
from interestgeo.changepoints import change_points
from interestgeo.config import AnalyticsConfig
from interestgeo.schema import user_key_columns
from interestgeo.windows import window_starts

__all__ = [
    "Drift", "InterestProfile", "RegionMap", "RegionVectors", "aggregate_cell_windows", "aggregate_user_windows",
    "compare_periods", "drift_series", "interest_profile", "region_drift", "region_map", "region_vectors",
]


@dataclass
class RegionMap:
    """One row per visible cell (x window): what the map draws."""

    cells: pd.DataFrame  # cell (int64), [window_start], events, users, topic_id, topic, share
    shares: pd.DataFrame  # same rows: one column per topic label, each row sums to one
    hidden: int  # cells (x windows) dropped by the k threshold
    resolution: int
    topics: tuple[str, ...]


@dataclass
class RegionVectors:
    """Regional interest vectors, one per visible cell (x window)."""

    cells: pd.DataFrame  # cell, [window_start], events, users, coherence
    vectors: np.ndarray  # (G, D) float32 L2-normalised user-weighted means
    hidden: int
    resolution: int


def region_map(
    scored: ScoredEvents, filters: Filters | None = None, resolution: int = 8, window: str | None = None
) -> RegionMap:
    """Cells at `resolution` with their dominant interest topic and shares, k threshold applied.

    With `window` ("hour", "day", "week", "month") one row per cell x window (map playback);
    without, one row per cell over the whole filtered period.
    """
    groups, frame = _cell_window_groups(scored, filters, resolution, window)
    shares = groups.mean(scored.topic_probs[groups.idx])  # (G, T)
    return _region_map_from(frame, shares, scored.k, scored.topics.labels, resolution)


def _region_map_from(
    frame: pd.DataFrame, shares: np.ndarray, k: int, labels: tuple[str, ...], resolution: int
) -> RegionMap:
    """A RegionMap from every cell (x window) (frame: cell, [window_start], events, users) and its
    (G, T) shares: the k threshold, then each cell's dominant topic."""
    visible = (frame["users"] >= k).to_numpy()
    shares = shares[visible]
    frame = frame.loc[visible].reset_index(drop=True)
    top = np.argmax(shares, axis=1) if len(shares) else np.zeros(0, dtype=np.int64)
    names = np.asarray(labels, dtype=object)
    frame["topic_id"] = top.astype(np.int64)
    frame["topic"] = names[top] if len(top) else pd.Series([], dtype=object)
    frame["share"] = shares[np.arange(len(top)), top] if len(top) else np.zeros(0)
    share_frame = pd.DataFrame(shares, columns=list(labels))
    return RegionMap(frame, share_frame, int((~visible).sum()), resolution, tuple(labels))


def aggregate_cell_windows(
    scored: ScoredEvents, filters: Filters | None, resolution: int, window: str | None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Every cell (x window) with its regional vector, WITHOUT the k threshold: for storage only.

    Returns (frame[cell, (window_start), events, users, coherence], vectors (G, D) L2-normalised,
    topic shares (G, T): what `region_map` shows). Readers of what is stored apply the threshold
    (Store.window_vectors); `region_vectors` does here.
    """
    groups, frame = _cell_window_groups(scored, filters, resolution, window)
    vectors, norms = _normalise(groups.means_of(scored))  # (G, D)
    frame["coherence"] = norms
    return frame, vectors, groups.mean(scored.topic_probs[groups.idx])


def aggregate_user_windows(
    scored: ScoredEvents, filters: Filters | None, window: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Every user x window: (frame[dataset_id, user_id, window_start, events, coherence], vectors (G, D)).

    The vector is the normalised mean of the user's interest vectors in the window, `coherence`
    its norm (mean . phrase = coherence x vector . phrase). Analyst-only data (it names users):
    stored for per-user drift and the strong-interest bar, never shown to the marketer role.
    """
    idx = np.flatnonzero(filter_mask(scored, filters))
    key, user_values, window_values = _combine_keys(scored.user_codes[idx], scored.window_keys(window)[idx])
    groups = _group(scored, idx, key)
    vectors, norms = _normalise(groups.means_of(scored))
    n_windows = len(window_values)
    keys = pd.Series(np.asarray(scored.user_keys, dtype=object)[user_values[groups.keys // n_windows]])
    users = user_key_columns(keys)
    frame = pd.DataFrame(
        {
            "dataset_id": users["dataset_id"].to_numpy(),
            "user_id": users["user_id"].to_numpy(),
            "window_start": window_starts(window_values[groups.keys % n_windows], window),
            "events": groups.events,
            "coherence": norms.astype(np.float32),
        }
    )
    return frame, vectors


def region_vectors(
    scored: ScoredEvents, filters: Filters | None = None, resolution: int = 8, window: str | None = None
) -> RegionVectors:
    """The regional interest vector of every visible cell (x window) (see the module docstring)."""
    frame, vectors, _ = aggregate_cell_windows(scored, filters, resolution, window)
    visible = (frame["users"] >= scored.k).to_numpy()
    return RegionVectors(frame.loc[visible].reset_index(drop=True), vectors[visible], int((~visible).sum()), resolution)


@dataclass
class InterestProfile:
    """Topic shares of everything passing a filter, against the whole data set."""

    shares: pd.DataFrame  # topic, share, baseline, index (100 = as common as overall), sorted by share
    events: int
    users: int
    hidden: bool  # True when fewer than k users pass the filter (shares are then empty)


def _overall_shares(scored: ScoredEvents, idx: np.ndarray) -> tuple[np.ndarray, int, int]:
    groups = _group(scored, idx, np.zeros(len(idx), dtype=np.int64))
    if groups.size == 0:
        return np.zeros(len(scored.topics)), 0, 0
    return groups.mean(scored.topic_probs[idx])[0], int(groups.events[0]), int(groups.users[0])


def interest_profile(scored: ScoredEvents, filters: Filters | None = None) -> InterestProfile:
    """Top interests of the filtered events, each with its share and index against all events."""
    idx = np.flatnonzero(filter_mask(scored, filters))
    shares, events, users = _overall_shares(scored, idx)
    if users >= scored.k and scored.baseline_shares is None:
        scored.baseline_shares = _overall_shares(scored, np.arange(len(scored)))[0]
    return _profile_from(shares, events, users, scored.baseline_shares, scored.topics.labels, scored.k)


def _profile_from(
    shares: np.ndarray, events: int, users: int, baseline: np.ndarray | None, labels: tuple[str, ...], k: int
) -> InterestProfile:
    """An InterestProfile from the filtered events' (T,) shares and counts, against (T,) `baseline`."""
    if users < k or baseline is None:
        empty = pd.DataFrame({"topic": [], "share": [], "baseline": [], "index": []})
        return InterestProfile(empty, events, users, True)
    frame = pd.DataFrame(
        {
            "topic": list(labels),
            "share": shares,
            "baseline": baseline,
            "index": 100.0 * shares / np.maximum(baseline, 1e-12),
        }
    ).sort_values("share", ascending=False, kind="stable")
    return InterestProfile(frame.reset_index(drop=True), events, users, False)


def compare_periods(scored: ScoredEvents, before: Filters, after: Filters) -> pd.DataFrame:
    """Topic shares in two filters (e.g. two periods) and their change, rising first.

    Columns: topic, before, after, change. Empty when either side has fewer than k users.
    """
    a = interest_profile(scored, before)
    b = interest_profile(scored, after)
    if a.hidden or b.hidden:
        return pd.DataFrame({"topic": [], "before": [], "after": [], "change": []})
    merged = a.shares[["topic", "share"]].merge(b.shares[["topic", "share"]], on="topic", suffixes=("_a", "_b"))
    frame = pd.DataFrame(
        {"topic": merged["topic"], "before": merged["share_a"], "after": merged["share_b"]}
    )
    frame["change"] = frame["after"] - frame["before"]
    return frame.sort_values("change", ascending=False, kind="stable").reset_index(drop=True)


@dataclass
class Drift:
    """How interests moved across consecutive windows."""

    timeline: pd.DataFrame  # window_start, events, users, distance (1 - cosine to the previous window), change_point
    shares: pd.DataFrame  # window_start, topic, share (long, for a stacked area chart)
    topics: pd.DataFrame  # topic, before, after, change: around the last change point (or halves), rising first
    hidden: int  # windows dropped by the k threshold
    window: str


def drift_series(vectors: np.ndarray) -> np.ndarray:
    """Distances between consecutive vectors: distance[0] = 0; distance[t] = 1 - cos(v[t], v[t-1]).

    How far each window moved from the previous one. Change points are not a rule on these
    steps but a segmentation of the topic shares (`changepoints.change_points`).
    """
    unit, _ = _normalise(np.asarray(vectors, dtype=np.float64))
    distance = np.zeros(len(unit))
    if len(unit) > 1:
        distance[1:] = np.clip(1.0 - np.sum(unit[1:] * unit[:-1], axis=1), 0.0, 2.0)
    return distance


def _drift(scored: ScoredEvents, idx: np.ndarray, window: str, k: int) -> Drift:
    """Drift of the events at `idx` (a region's or one person's) across `window`s."""
    groups = _group(scored, idx, scored.window_keys(window)[idx])
    visible = groups.users >= k
    vectors = groups.means_of(scored)[visible]  # (W, D)
    shares = groups.mean(scored.topic_probs[idx])[visible]  # (W, T)
    return _drift_from(
        window_starts(groups.keys[visible], window), groups.events[visible], groups.users[visible], vectors, shares,
        scored.topics.labels, scored.config.analytics, int((~visible).sum()), window,
    )


def _drift_from(
    starts: np.ndarray, events: np.ndarray, users: np.ndarray, vectors: np.ndarray, shares: np.ndarray,
    labels: tuple[str, ...], settings: AnalyticsConfig, hidden: int, window: str,
) -> Drift:
    """A Drift from the visible windows' starts, counts, (W, D) mean vectors and (W, T) shares."""
    distance = drift_series(vectors)
    flags = change_points(shares, users, settings.change_point_penalty, settings.thin_window_share)
    timeline = pd.DataFrame(
        {"window_start": starts, "events": events, "users": users, "distance": distance, "change_point": flags}
    )
    labels = list(labels)
    long = pd.DataFrame(
        {
            "window_start": np.repeat(starts, len(labels)),
            "topic": np.tile(np.asarray(labels, dtype=object), len(starts)),
            "share": shares.reshape(-1),
        }
    )
    n = len(starts)
    points = np.flatnonzero(flags)
    split = int(points[-1]) if len(points) else n // 2
    if n >= 2 and 0 < split < n:
        before, after = shares[:split].mean(axis=0), shares[split:].mean(axis=0)
        topics = pd.DataFrame({"topic": labels, "before": before, "after": after, "change": after - before})
        topics = topics.sort_values("change", ascending=False, kind="stable").reset_index(drop=True)
    else:
        topics = pd.DataFrame({"topic": [], "before": [], "after": [], "change": []})
    return Drift(timeline, long, topics, hidden, window)


def region_drift(scored: ScoredEvents, filters: Filters | None = None, window: str = "week") -> Drift:
    """Drift of the regional interest vector of the filtered events across `window`s (k applied)."""
    idx = np.flatnonzero(filter_mask(scored, filters))
    return _drift(scored, idx, window, scored.k)


def window_counts(scored: ScoredEvents, filters: Filters | None = None, window: str = "day") -> tuple[pd.DataFrame, int]:
    """Events and people per `window` of the filtered events, k threshold applied:
    (frame[window_start, events, users], windows hidden).

    The counts of `region_drift`'s timeline without its (W, D) mean vectors, for a trend line.
    """
    idx = np.flatnonzero(filter_mask(scored, filters))
    groups = _group(scored, idx, scored.window_keys(window)[idx])
    visible = groups.users >= scored.k
    frame = pd.DataFrame(
        {
            "window_start": window_starts(groups.keys[visible], window),
            "events": groups.events[visible],
            "users": groups.users[visible],
        }
    )
    return frame, int((~visible).sum())
