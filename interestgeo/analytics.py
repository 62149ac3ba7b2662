"""Interest analytics: what people in an area are interested in, when, how it changes, and where X is.

Everything here is computed on the fly, with numpy, from the per-event interest vectors that
`interestgeo score` stored (`ScoredEvents`, loaded once and cached by the caller). Why on the fly
rather than from precomputed cell x window tables: every question comes with arbitrary filters
(hours of day, days of week, a drawn polygon, a topic, a date range), and no precomputed table can
answer all their combinations. One pass over ~100k events in numpy takes milliseconds, because the
expensive parts are linear: a free-text query is one matrix-vector product (N x 384), topic shares
are a precomputed (N, T) matrix, and everything after that is grouped sums (`np.bincount`).

**The regional vector** of a group of events (a cell x window, a region, an hour of the week) is
the *user-weighted* mean of their interest vectors: each distinct user's events are averaged
first, then users are averaged, so one heavy user with 300 check-ins counts as much as a visitor
with one (otherwise the map shows the heaviest user's taste). Equivalently, event e of user u in
group g gets weight 1 / (events of u in g * users in g); the weights of a group sum to one.
`region_vectors` returns it L2-normalised (a direction, for similarity) plus its norm as
`coherence` (1 = everyone there wants the same thing, near 0 = scattered interests).

**Free-text query score** of a group = the regional mean vector (not normalised) dotted with the
phrase's embedding = the user-weighted mean affinity of the people there to the phrase. Keeping it
linear makes it exact at every resolution from one per-event score, and it reads as "how much does
the average person here care about X". A user is *strongly interested* when their mean affinity
over the filtered events is in the top `analytics.strong_interest_quantile` of all users' (a
relative bar: absolute cosine levels depend on the model).

**Topic shares** average each event's softmax distribution over topics with the same weights, so
they sum to one for every group.

**Privacy.** Every region-level result drops the groups (cells, windows, hour-of-week buckets)
with fewer than `privacy.k_min_users` distinct users and says how many it dropped (`hidden`).
Functions that return user ids or one user's data are marked `@analyst_only` (`access.py`):
they raise `AccessDenied` when the declared viewer is a marketer.

Time windows are in local time (what "Friday evening" means to people), weeks start on Monday.
"""

from __future__ import annotations

import functools
import io
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interestgeo.access import ANALYST_ONLY, analyst_only
from interestgeo.cells import cell_to_parent, cells_to_str, latlng_to_cell, resolution_of, str_to_cells
from interestgeo.changepoints import change_points
from interestgeo.config import Config
from interestgeo.geo import haversine_km
from interestgeo.schema import user_key_columns, user_keys
from interestgeo.topics import Topics, probabilities_from_similarities, topic_probabilities, topic_similarities
from interestgeo.windows import window_keys, window_starts

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = [
    "ANALYST_ONLY",
    "Filters",
    "ScoredEvents",
    "Venues",
    "RegionMap",
    "RegionVectors",
    "InterestProfile",
    "Drift",
    "QueryResult",
    "UserProfile",
    "NextInterests",
    "analyst_only",
    "load_scored",
    "filter_mask",
    "region_map",
    "region_vectors",
    "aggregate_cell_windows",
    "aggregate_user_windows",
    "interest_profile",
    "compare_periods",
    "region_drift",
    "query_interest",
    "embed_phrase",
    "list_users",
    "interested_users",
    "user_profile",
    "user_drift",
    "next_interests",
    "user_event_positions",
    "to_utc",
    "parse_ranges",
    "region_from_text",
    "to_records",
    "drift_series",
    "filters_from_options",
]


# --------------------------------------------------------------------------------------------
# Filters


def _as_tuple(value: Any) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return (value,)
    if isinstance(value, Iterable):
        out = tuple(int(v) if isinstance(v, np.integer) else v for v in value)
        return out or None
    return (value,)


@dataclass(frozen=True)
class Filters:
    """The filters every analytics function takes; None (or empty) means "no restriction".

    Frozen and hashable (tuples, GeoJSON as text) so the dashboard can key its caches on it.

    datasets      dataset ids
    date_from/to  local calendar dates, both inclusive
    hours         local hours of day 0-23
    days_of_week  0 = Monday .. 6 = Sunday
    cells         H3 cells (ints) at any resolution up to the base one: an event matches when its
                  cell lies inside any of them
    geojson       polygons as GeoJSON text (a FeatureCollection, Feature or bare geometry, WGS84;
                  read through geopandas): an event matches when its point lies inside
    topic         a topic label or index: events whose own topic (topics.assign_event_topics) it is
    All given filters combine with AND.
    """

    datasets: tuple[int, ...] | None = None
    date_from: date | None = None
    date_to: date | None = None
    hours: tuple[int, ...] | None = None
    days_of_week: tuple[int, ...] | None = None
    cells: tuple[int, ...] | None = None
    geojson: str | None = None
    topic: int | str | None = None

    def __post_init__(self) -> None:
        for name in ("datasets", "hours", "days_of_week", "cells"):
            value = _as_tuple(getattr(self, name))
            object.__setattr__(self, name, None if value is None else tuple(int(v) for v in value))
        if isinstance(self.geojson, dict):
            object.__setattr__(self, "geojson", json.dumps(self.geojson))
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if isinstance(value, datetime):
                object.__setattr__(self, name, value.date())
            elif isinstance(value, str):
                object.__setattr__(self, name, date.fromisoformat(value))

    def replace(self, **changes: Any) -> Filters:
        """A copy with some filters changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (dates as ISO strings); the dashboard mirrors it in the URL."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.isoformat() if isinstance(value, date) else (list(value) if isinstance(value, tuple) else value)
        return out


def _geojson_geometry(text: str) -> Any:
    """The union of the polygons in a GeoJSON text, in WGS84, prepared for fast point tests."""
    import geopandas as gpd
    import shapely

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"region is not valid GeoJSON: {exc.msg}") from None
    if isinstance(data, dict) and data.get("type") not in ("FeatureCollection", "Feature"):
        data = {"type": "Feature", "geometry": data, "properties": {}}
    try:
        frame = gpd.read_file(io.BytesIO(json.dumps(data).encode("utf-8")))
    except Exception as exc:  # pyogrio raises its own DataSourceError family for malformed input
        raise ValueError(f"region GeoJSON cannot be read: {exc}") from None
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    polygons = frame.geometry[frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if polygons.empty:
        raise ValueError("region GeoJSON has no polygons")
    geometry = shapely.union_all(polygons.values)
    shapely.prepare(geometry)
    return geometry


# --------------------------------------------------------------------------------------------
# Scored events: the per-event vectors plus what filters and groups need, built once


@dataclass(eq=False)
class Venues:
    """The items (venues) seen in the events, with their text embeddings, for next-venue ranking."""

    frame: pd.DataFrame  # item_id, text, category, lat, lon, visits (positional rows)
    vectors: np.ndarray  # (V, D) float32 text embeddings


class ScoredEvents:
    """Per-event interest vectors aligned with their events; the input of every analytics function.

    Stateful in the one sense that derived arrays (parents, window keys, probabilities) are
    computed once here; load with `load_scored` and cache it in the UI layer.

    The vectors may come later: given the events' stored `topic_sims` (N, T) and, instead of the
    array, a zero-argument loader, everything built on topic shares (maps, profiles, counts) works
    at once, and the first use of `vectors` (a phrase query, drift distances) loads them, once,
    under a lock (a dashboard's sessions are threads): `load_scored(..., vector_loader=...)`.
    """

    def __init__(
        self,
        events: pd.DataFrame,  # store.events() columns + `topic` (int16), RangeIndex aligned with vectors
        vectors: np.ndarray | Callable[[], np.ndarray],  # (N, D) float32 L2-normalised, or its loader
        topics: Topics,
        config: Config | None = None,
        source: str = "",  # which model produced the vectors (checkpoint id)
        venues: Venues | None = None,
        unscored: int = 0,  # events in the store without a vector yet (run `interestgeo score`)
        topic_sims: np.ndarray | None = None,  # (N, T) stored `topic_similarities`; required with a loader
    ) -> None:
        self.events = ev = events
        self.topics = topics
        self.config = config if config is not None else Config()
        self.source = source
        self.venues = venues
        self.unscored = unscored
        self._lock = threading.Lock()
        self._load: Callable[[], np.ndarray] | None = None
        self._vectors: np.ndarray | None = None
        temperature = self.config.analytics.topic_temperature
        if callable(vectors):
            if topic_sims is None or topic_sims.shape != (len(ev), len(topics)) or np.isnan(topic_sims).any():
                raise ValueError("vectors loaded later need every event's topic similarities")
            self._load = vectors
            self.topic_probs = probabilities_from_similarities(topic_sims, temperature)  # (N, T)
        else:
            self._vectors = self._checked(vectors)
            self.topic_probs = (
                topic_probabilities(self._vectors, topics, temperature)
                if topic_sims is None else probabilities_from_similarities(topic_sims, temperature)
            )
        codes, self.user_keys = pd.factorize(user_keys(ev), sort=True)
        self.user_codes = codes.astype(np.int64)  # (N,) dense code of (dataset_id, user_id)
        self.cells = ev["cell"].to_numpy(np.int64)
        self.dataset_ids = ev["dataset_id"].to_numpy(np.int64)
        local = ev["local_ts"].to_numpy("datetime64[ns]")
        self.local_ns = local
        self.day = local.astype("datetime64[D]").astype(np.int64)  # local days since 1970-01-01
        self.hour = ev["local_hour"].to_numpy(np.int64)
        self.dow = ev["dow"].to_numpy(np.int64)
        self.event_topic = ev["topic"].to_numpy(np.int64)
        self._parents: dict[int, np.ndarray] = {}
        self.baseline_shares: np.ndarray | None = None  # (T,) shares over all events, computed on first use

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) float32 L2-normalised interest vectors (loaded on first use when given a loader)."""
        if self._vectors is None:
            with self._lock:
                if self._vectors is None:
                    assert self._load is not None
                    self._vectors = self._checked(self._load())
                    self._load = None
        return self._vectors

    @property
    def vectors_loaded(self) -> bool:
        return self._vectors is not None

    def _checked(self, vectors: np.ndarray) -> np.ndarray:
        if len(self.events) != len(vectors):
            raise ValueError(f"{len(self.events)} events but {len(vectors)} vectors")
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def k(self) -> int:
        return self.config.privacy.k_min_users

    def parents(self, resolution: int) -> np.ndarray:
        """(N,) int64 cell of each event at `resolution` (computed once per resolution)."""
        base = self.config.store.base_resolution
        if resolution > base:
            raise ValueError(f"resolution {resolution} is finer than the stored base resolution {base}")
        if resolution not in self._parents:
            self._parents[resolution] = self.cells if resolution == base else cell_to_parent(self.cells, resolution)
        return self._parents[resolution]

    def window_keys(self, window: str) -> np.ndarray:
        """(N,) int64 key of each event's local time window (see `windows.window_starts`)."""
        return window_keys(self.local_ns, window)


def load_scored(
    store: Store,
    config: Config,
    datasets: list[int] | None = None,
    encoder: Any | None = None,
    *,
    vector_loader: Callable[[np.ndarray], np.ndarray] | None = None,
) -> ScoredEvents:
    """The stored events that have interest vectors, with topics; venues too when `encoder` is given.

    With `vector_loader` (event ids -> their vectors, in that order, e.g. `Store.event_vectors`
    on a connection of its own), only the events and their stored topic similarities are read
    now and the vectors on first use (see `ScoredEvents`); events without stored similarities
    get theirs from their vectors, read now. Raises LookupError with a one-line message when
    nothing has been scored yet.
    """
    topics = store.analytics_topics()
    if vector_loader is None or topics is None:
        events, vectors = store.scored_events(datasets)
        sims = None
    else:
        events, sims = store.scored_event_sims(datasets)
        missing = np.isnan(sims).any(axis=1) if sims.shape[1] == len(topics) else np.ones(len(events), dtype=bool)
        if missing.all():  # nothing stored (an older file): all the vectors are needed now anyway
            events, vectors = store.scored_events(datasets)
            sims = None
        else:
            if missing.any():
                sims[missing] = topic_similarities(store.event_vectors(events["event_id"].to_numpy()[missing]), topics)
            vectors = functools.partial(vector_loader, events["event_id"].to_numpy(np.int64))
    if topics is None or len(events) == 0:
        raise LookupError("no interest vectors yet: run `interestgeo score` first")
    runs = store.score_runs()
    source = str(runs["source"].iloc[0]) if len(runs) else ""
    unscored = int(store.datasets()["rows_stored"].sum()) - len(events) if datasets is None else 0
    scored = ScoredEvents(events, vectors, topics, config, source=source, unscored=max(unscored, 0), topic_sims=sims)
    if encoder is not None:
        scored.venues = build_venues(store, encoder, events)
    return scored


def build_venues(store: Store, encoder: Any, events: pd.DataFrame) -> Venues:
    """Distinct items with their most common text, mean location, visits and text embeddings."""
    from interestgeo.text import embed_texts

    have = events[events["item_id"].notna()]
    if have.empty:  # no item ids: every distinct text is an item
        have = events.assign(item_id=events["text"])
    # the most common text of each item (names can change over a data set's life)
    texts = (
        have.groupby(["item_id", "text"], sort=False).size().rename("n").reset_index()
        .sort_values(["item_id", "n"], ascending=[True, False], kind="stable")
        .drop_duplicates("item_id")
        .set_index("item_id")["text"]
    )
    grouped = have.groupby("item_id", sort=True)
    frame = pd.DataFrame(
        {
            "text": texts,
            "category": grouped["category"].first(),
            "lat": grouped["lat"].mean(),
            "lon": grouped["lon"].mean(),
            "visits": grouped.size(),
        }
    ).reset_index(names="item_id")
    vectors = embed_texts(store, encoder, frame["text"].tolist(), warn=None)
    return Venues(frame, np.asarray(vectors, dtype=np.float32))


def filter_mask(scored: ScoredEvents, filters: Filters | None) -> np.ndarray:
    """(N,) bool: the events passing every given filter (AND)."""
    mask = np.ones(len(scored), dtype=bool)
    if filters is None:
        return mask
    if filters.datasets:
        mask &= np.isin(scored.dataset_ids, filters.datasets)
    if filters.date_from is not None:
        mask &= scored.day >= np.datetime64(filters.date_from, "D").astype(np.int64)
    if filters.date_to is not None:
        mask &= scored.day <= np.datetime64(filters.date_to, "D").astype(np.int64)
    if filters.hours:
        mask &= np.isin(scored.hour, filters.hours)
    if filters.days_of_week:
        mask &= np.isin(scored.dow, filters.days_of_week)
    if filters.cells:
        inside = np.zeros(len(scored), dtype=bool)
        wanted = np.asarray(filters.cells, dtype=np.int64)
        resolutions = resolution_of(wanted)
        for res in np.unique(resolutions):
            inside |= np.isin(scored.parents(int(res)), wanted[resolutions == res])
        mask &= inside
    if filters.geojson:
        import shapely

        geometry = _geojson_geometry(filters.geojson)
        lon = scored.events["lon"].to_numpy(np.float64)
        lat = scored.events["lat"].to_numpy(np.float64)
        candidates = np.flatnonzero(mask)
        inside = np.zeros(len(scored), dtype=bool)
        inside[candidates] = shapely.contains_xy(geometry, lon[candidates], lat[candidates])
        mask &= inside
    if filters.topic is not None:
        mask &= scored.event_topic == scored.topics.index(filters.topic)
    return mask


# --------------------------------------------------------------------------------------------
# User-weighted groups


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
        import scipy.sparse

        order = np.argsort(self.group, kind="stable")
        starts = np.zeros(self.size + 1, dtype=np.int64)
        np.cumsum(self.events, out=starts[1:])
        weights = scipy.sparse.csr_matrix(
            (self.weights[order].astype(np.float32), self.idx[order], starts), shape=(self.size, matrix.shape[0])
        )
        return np.asarray(weights @ np.asarray(matrix, dtype=np.float32), dtype=np.float32)

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
    """Groups by cell (x window) with a frame of their keys: cell[, window_start], events, users."""
    idx = np.flatnonzero(filter_mask(scored, filters))
    cells = scored.parents(resolution)[idx]
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


# --------------------------------------------------------------------------------------------
# Region-level results (k threshold applied)


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
    visible = groups.users >= scored.k
    shares = groups.mean(scored.topic_probs[groups.idx])[visible]  # (G', T)
    frame = frame.loc[visible].reset_index(drop=True)
    top = np.argmax(shares, axis=1) if len(shares) else np.zeros(0, dtype=np.int64)
    labels = np.asarray(scored.topics.labels, dtype=object)
    frame["topic_id"] = top.astype(np.int64)
    frame["topic"] = labels[top] if len(top) else pd.Series([], dtype=object)
    frame["share"] = shares[np.arange(len(top)), top] if len(top) else np.zeros(0)
    share_frame = pd.DataFrame(shares, columns=list(scored.topics.labels))
    return RegionMap(frame, share_frame, int((~visible).sum()), resolution, scored.topics.labels)


def aggregate_cell_windows(
    scored: ScoredEvents, filters: Filters | None, resolution: int, window: str | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Every cell (x window) with its regional vector, WITHOUT the k threshold: for storage only.

    Returns (frame[cell, (window_start), events, users, coherence], vectors (G, D) L2-normalised).
    Readers of what is stored apply the threshold (Store.window_vectors); `region_vectors` does here.
    """
    groups, frame = _cell_window_groups(scored, filters, resolution, window)
    vectors, norms = _normalise(groups.mean_rows(scored.vectors))  # (G, D)
    frame["coherence"] = norms
    return frame, vectors


def aggregate_user_windows(
    scored: ScoredEvents, filters: Filters | None, window: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Every user x window: (frame[dataset_id, user_id, window_start, events], vectors (G, D)).

    The vector is the normalised mean of the user's interest vectors in the window. Analyst-only
    data (it names users): stored for per-user drift, never shown to the marketer role.
    """
    idx = np.flatnonzero(filter_mask(scored, filters))
    key, user_values, window_values = _combine_keys(scored.user_codes[idx], scored.window_keys(window)[idx])
    groups = _group(scored, idx, key)
    vectors, _ = _normalise(groups.mean_rows(scored.vectors))
    n_windows = len(window_values)
    keys = pd.Series(np.asarray(scored.user_keys, dtype=object)[user_values[groups.keys // n_windows]])
    users = user_key_columns(keys)
    frame = pd.DataFrame(
        {
            "dataset_id": users["dataset_id"].to_numpy(),
            "user_id": users["user_id"].to_numpy(),
            "window_start": window_starts(window_values[groups.keys % n_windows], window),
            "events": groups.events,
        }
    )
    return frame, vectors


def region_vectors(
    scored: ScoredEvents, filters: Filters | None = None, resolution: int = 8, window: str | None = None
) -> RegionVectors:
    """The regional interest vector of every visible cell (x window) (see the module docstring)."""
    frame, vectors = aggregate_cell_windows(scored, filters, resolution, window)
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
    if users < scored.k:
        empty = pd.DataFrame({"topic": [], "share": [], "baseline": [], "index": []})
        return InterestProfile(empty, events, users, True)
    if scored.baseline_shares is None:
        scored.baseline_shares = _overall_shares(scored, np.arange(len(scored)))[0]
    baseline = scored.baseline_shares
    frame = pd.DataFrame(
        {
            "topic": list(scored.topics.labels),
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


# --------------------------------------------------------------------------------------------
# Drift


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
    groups = _group(scored, idx, scored.window_keys(window)[idx])
    visible = groups.users >= k
    vectors = groups.mean_rows(scored.vectors)[visible]  # (W, D)
    shares = groups.mean(scored.topic_probs[idx])[visible]  # (W, T)
    starts = window_starts(groups.keys[visible], window)
    distance = drift_series(vectors)
    settings = scored.config.analytics
    flags = change_points(shares, groups.users[visible], settings.change_point_penalty, settings.thin_window_share)
    timeline = pd.DataFrame(
        {
            "window_start": starts,
            "events": groups.events[visible],
            "users": groups.users[visible],
            "distance": distance,
            "change_point": flags,
        }
    )
    labels = list(scored.topics.labels)
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
    return Drift(timeline, long, topics, int((~visible).sum()), window)


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


# --------------------------------------------------------------------------------------------
# Free-text query


@dataclass
class QueryResult:
    """Where and when people are interested in a phrase."""

    phrase: str
    cells: pd.DataFrame  # cell, events, users, score, strong_users, rank (1 = best); best first
    time_profile: pd.DataFrame  # dow, hour, events, users, score: the visible hour-of-week buckets
    hidden: int  # cells dropped by the k threshold
    hidden_times: int  # hour-of-week buckets dropped by the k threshold
    threshold: float  # the affinity above which a user counts as strongly interested
    resolution: int


def embed_phrase(encoder: Any, phrase: str, store: Store | None = None) -> np.ndarray:
    """(D,) unit embedding of a phrase with the text encoder (`.encode(list[str])`).

    With a writable `store` the embedding goes through the store's text-embedding cache, so a
    phrase asked before costs a lookup instead of a forward pass of the language model.
    """
    phrase = phrase.strip()
    if not phrase:
        raise ValueError("the query phrase is empty")
    if store is not None and not store.read_only:
        from interestgeo.text import embed_texts

        return np.asarray(embed_texts(store, encoder, [phrase], warn=None), dtype=np.float32)[0]
    return np.asarray(encoder.encode([phrase]), dtype=np.float32)[0]


def query_interest(
    scored: ScoredEvents,
    phrase: str,
    phrase_vector: np.ndarray,
    filters: Filters | None = None,
    resolution: int = 8,
) -> QueryResult:
    """Rank cells and hours of the week by the affinity of the people there to a phrase.

    `phrase_vector` is the phrase's embedding (`embed_phrase`). k threshold on cells and on
    hour-of-week buckets.
    """
    q = np.asarray(phrase_vector, dtype=np.float32)
    if q.shape != (scored.vectors.shape[1],):
        raise ValueError(f"phrase vector has shape {q.shape}, vectors are {scored.vectors.shape[1]}-dimensional")
    affinity = scored.vectors @ q  # (N,) every event's interest vector against the phrase
    idx = np.flatnonzero(filter_mask(scored, filters))
    s = affinity[idx]
    # strongly interested: a user's mean affinity over the filtered events in the top quantile
    user_group = _group(scored, idx, np.zeros(len(idx), dtype=np.int64))
    user_scores = user_group.pair_mean(s) if len(idx) else np.zeros(0)
    quantile = scored.config.analytics.strong_interest_quantile
    threshold = float(np.quantile(user_scores, quantile)) if len(user_scores) else float("nan")

    groups = _group(scored, idx, scored.parents(resolution)[idx])
    visible = groups.users >= scored.k
    pair_strong = groups.pair_mean(s) >= threshold if len(idx) else np.zeros(0, dtype=bool)
    strong = np.bincount(groups.pair_group, weights=pair_strong, minlength=groups.size).astype(np.int64)
    cells = pd.DataFrame(
        {
            "cell": groups.keys,
            "events": groups.events,
            "users": groups.users,
            "score": groups.mean(s),
            "strong_users": strong,
        }
    ).loc[visible]
    cells = cells.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    cells["rank"] = np.arange(1, len(cells) + 1)

    times = _group(scored, idx, scored.dow[idx] * 24 + scored.hour[idx])
    visible_t = times.users >= scored.k
    profile = pd.DataFrame(
        {
            "dow": times.keys // 24,
            "hour": times.keys % 24,
            "events": times.events,
            "users": times.users,
            "score": times.mean(s),
        }
    ).loc[visible_t].reset_index(drop=True)
    return QueryResult(
        phrase, cells, profile, int((~visible).sum()), int((~visible_t).sum()), threshold, resolution
    )


# --------------------------------------------------------------------------------------------
# Analyst-only: results about identifiable users


@analyst_only
def list_users(scored: ScoredEvents, filters: Filters | None = None) -> pd.DataFrame:
    """Users with events passing the filter: dataset_id, user_id, events, first, last (most active first)."""
    mask = filter_mask(scored, filters)
    ev = scored.events.loc[mask, ["dataset_id", "user_id", "ts"]]
    out = ev.groupby(["dataset_id", "user_id"], sort=True)["ts"].agg(["size", "min", "max"]).reset_index()
    out.columns = ["dataset_id", "user_id", "events", "first", "last"]
    return out.sort_values(["events", "dataset_id", "user_id"], ascending=[False, True, True], kind="stable").reset_index(drop=True)


@analyst_only
def interested_users(
    scored: ScoredEvents, phrase_vector: np.ndarray, filters: Filters | None = None, top: int = 50
) -> pd.DataFrame:
    """The users most interested in a phrase: dataset_id, user_id, events, affinity (best first)."""
    idx = np.flatnonzero(filter_mask(scored, filters))
    s = (scored.vectors @ np.asarray(phrase_vector, dtype=np.float32))[idx]
    groups = _group(scored, idx, np.zeros(len(idx), dtype=np.int64))
    affinity = groups.pair_mean(s) if len(idx) else np.zeros(0)
    keys = pd.Series(np.asarray(scored.user_keys, dtype=object)[groups.pair_user])
    users = user_key_columns(keys)
    out = pd.DataFrame(
        {
            "dataset_id": users["dataset_id"],
            "user_id": users["user_id"],
            "events": np.bincount(groups.pair, minlength=len(affinity)),
            "affinity": affinity,
        }
    )
    return out.sort_values("affinity", ascending=False, kind="stable").head(top).reset_index(drop=True)


def to_utc(at: datetime | str | pd.Timestamp) -> pd.Timestamp:
    """A time as a UTC timestamp; naive times are taken as UTC."""
    stamp = pd.Timestamp(at)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@analyst_only
def user_event_positions(scored: ScoredEvents, dataset_id: int, user_id: str, at: datetime | None = None) -> np.ndarray:
    """Positions of one user's events (time order), up to `at` (UTC) when given; LookupError if none."""
    key = f"{int(dataset_id)}:{user_id}"
    code = scored.user_keys.get_indexer([key])[0]
    if code < 0:
        raise LookupError(f"no scored events for user {user_id!r} in dataset {dataset_id}")
    idx = np.flatnonzero(scored.user_codes == code)
    if at is not None:
        ts = scored.events["ts"].iloc[idx]
        idx = idx[(ts <= to_utc(at)).to_numpy()]
        if len(idx) == 0:
            raise LookupError(f"user {user_id!r} has no events before {at}")
    return idx


@dataclass
class UserProfile:
    """One user's current interests (at a time)."""

    dataset_id: int
    user_id: str
    at: pd.Timestamp  # time of the last event used (UTC)
    vector: np.ndarray  # (D,) interest vector right after that event
    shares: pd.DataFrame  # topic, share: best first
    events: pd.DataFrame  # the user's events up to then (ts, local_ts, lat, lon, text, cell, topic label)


@analyst_only
def user_profile(scored: ScoredEvents, dataset_id: int, user_id: str, at: datetime | None = None) -> UserProfile:
    """A user's interest vector and topic shares right after their last event at or before `at`."""
    idx = user_event_positions(scored, dataset_id, user_id, at)
    last = idx[-1]
    shares = pd.DataFrame({"topic": list(scored.topics.labels), "share": scored.topic_probs[last]})
    shares = shares.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)
    events = scored.events.loc[idx, ["event_id", "ts", "local_ts", "lat", "lon", "text", "cell"]].reset_index(drop=True)
    events["topic"] = np.asarray(scored.topics.labels, dtype=object)[scored.event_topic[idx]]
    return UserProfile(int(dataset_id), str(user_id), scored.events["ts"].iloc[last], scored.vectors[last], shares, events)


@analyst_only
def user_drift(scored: ScoredEvents, dataset_id: int, user_id: str, window: str = "week") -> Drift:
    """Drift of one user's interests across `window`s (no k threshold: one identified user)."""
    return _drift(scored, user_event_positions(scored, dataset_id, user_id), window, 1)


@dataclass
class NextInterests:
    """Predicted next interests of a user at a time."""

    topics: pd.DataFrame  # topic, score (share), best first
    venues: pd.DataFrame  # item_id, text, category, lat, lon, visits, score, distance_km (when a place is given)
    at: pd.Timestamp


def _same_place_once(venues: pd.DataFrame) -> pd.DataFrame:
    """Items with the same text in the same H3 cell (res 9, ~0.1 km2) as one row: a dataset often
    holds one place under several ids (several "Home (private)" at one address). Probabilities and
    visits add up; `branches` counts the ids; the likeliest id's place and item_id are kept."""
    cell = latlng_to_cell(venues["lat"].to_numpy(), venues["lon"].to_numpy(), 9)
    keyed = venues.assign(_cell=cell, branches=1)
    merged = keyed.groupby(["text", "_cell"], sort=False).agg(
        {**{c: "first" for c in venues.columns if c not in ("probability", "visits")},
         "probability": "sum", "visits": "sum", "branches": "sum"}
    )
    return merged.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)


@analyst_only
def next_interests(
    scored: ScoredEvents,
    dataset_id: int,
    user_id: str,
    at: datetime | None = None,
    place: tuple[float, float] | None = None,
    k: int = 10,
    venue_model: Callable[[pd.DataFrame, int], pd.DataFrame] | None = None,
) -> NextInterests:
    """Top-k next topics and venues for a user at a time, optionally near a place (lat, lon).

    With `venue_model(the user's events up to then, n) -> its top-n venues with a `probability``
    (the trained model's own next-venue distribution: InterestScorer.next_venues), venues are
    ranked by it: the model's pointer, counts, transitions and distances, not text alone, so a
    chain's branches do not tie. Near a place, the probabilities are those of the venues within
    the radius, renormalised to sum to 1 there. Without it (no trained model) venues are ranked
    by text similarity as follows.

    The user's interest vector right after their last event at or before `at` is dotted with
    each topic and each venue's text embedding (the model is trained so that this dot product
    ranks the next event). With a place, only venues within `analytics.next_radius_km` compete.
    Venues are scored by their text, so the branches of a chain ("Starbucks, Coffee Shop") tie:
    each text is listed once, at its nearest branch to `place` (else its most visited), with
    `branches` counting the candidates that share it. Needs `scored.venues` (load_scored with an
    encoder) for venues.
    """
    profile = user_profile(scored, dataset_id, user_id, at)
    topics = profile.shares.rename(columns={"share": "score"}).head(k)
    if venue_model is not None:
        ev = scored.events
        mine = ev[(ev["dataset_id"] == dataset_id) & (ev["user_id"].astype(str) == str(user_id))]
        mine = mine[mine["ts"] <= profile.at] if profile.at is not None else mine
        venues = _same_place_once(venue_model(mine.reset_index(drop=True), 3 * k if place is None else 50 * k))
        # how far each is (from the place, else from the person's latest event)
        origin = place if place is not None else (float(mine["lat"].iloc[-1]), float(mine["lon"].iloc[-1]))
        venues = venues.assign(distance_km=haversine_km(*origin, venues["lat"].to_numpy(), venues["lon"].to_numpy()))
        if place is not None:
            venues = venues[venues["distance_km"] <= scored.config.analytics.next_radius_km].head(k)
            venues = venues.assign(probability=venues["probability"] / max(venues["probability"].sum(), 1e-12))
        venues = venues.head(k)
        return NextInterests(topics.reset_index(drop=True), venues.reset_index(drop=True), profile.at)
    if scored.venues is None:
        raise LookupError("venues are not loaded: load the scored events with a text encoder")
    frame = scored.venues.frame.copy()
    frame["score"] = scored.venues.vectors @ profile.vector
    if place is not None:
        frame["distance_km"] = haversine_km(place[0], place[1], frame["lat"].to_numpy(), frame["lon"].to_numpy())
        frame = frame[frame["distance_km"] <= scored.config.analytics.next_radius_km]
    frame["branches"] = frame.groupby("text")["text"].transform("size")
    # equal texts can differ in the last float bits (BLAS blocking), so ties are judged at 1e-6
    frame["tie"] = frame["score"].round(6)
    tie_break = ("distance_km", True) if place is not None else ("visits", False)
    frame = frame.sort_values(["tie", tie_break[0]], ascending=[False, tie_break[1]], kind="stable")
    venues = frame.drop_duplicates("text").drop(columns="tie").head(k).reset_index(drop=True)
    return NextInterests(topics.reset_index(drop=True), venues, profile.at)


# --------------------------------------------------------------------------------------------
# Edges: the CLI's and URLs' text forms of filters, and JSON-ready records


def parse_ranges(text: str, low: int, high: int) -> tuple[int, ...]:
    """'18-23,0-2' -> (0, 1, 2, 18, ..., 23); a range may wrap ('22-2' = 22, 23, 0, 1, 2)."""
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, _, b = part.partition("-")
            start, end = int(a), int(b) if b else int(a)
        except ValueError:
            raise ValueError(f"not a number or range: {part!r} (use e.g. 18-23,0-2)") from None
        if not (low <= start <= high and low <= end <= high):
            raise ValueError(f"{part!r} is outside {low}..{high}")
        span = range(start, end + 1) if start <= end else [*range(start, high + 1), *range(low, end + 1)]
        values.update(span)
    return tuple(sorted(values))


def region_from_text(text: str) -> dict[str, Any]:
    """A region argument as Filters fields: a GeoJSON file path, or comma-separated H3 cells (hex)."""
    import h3

    from pathlib import Path

    path = Path(text)
    if path.suffix.lower() in (".geojson", ".json") or path.exists():
        if not path.exists():
            raise ValueError(f"no GeoJSON file at {path}")
        return {"geojson": path.read_text(encoding="utf-8")}
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if not h3.is_valid_cell(item):
            raise ValueError(f"not an H3 cell or a GeoJSON file: {item!r}")
    return {"cells": tuple(int(c) for c in str_to_cells(items))}


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: H3 cells as hex strings, timestamps as ISO text, numpy scalars as Python."""
    out = frame.copy()
    if "cell" in out:
        out["cell"] = cells_to_str(out["cell"])
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].map(lambda t: None if pd.isna(t) else t.isoformat())
    return json.loads(out.to_json(orient="records", date_format="iso"))


def filters_from_options(
    store: Store,
    *,
    datasets: list[str] | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    hours: str | None = None,
    days: str | None = None,
    region: str | None = None,
    topic: str | None = None,
) -> Filters:
    """Filters from text options (CLI): dataset names, ISO dates, '18-23' hours, '0-4' days, region, topic."""
    ids = None
    if datasets:
        ids = []
        for name in datasets:
            dataset_id = store.dataset_id(name)
            if dataset_id is None:
                known = ", ".join(store.datasets()["name"].tolist()) or "none"
                raise ValueError(f"no dataset named {name!r} (datasets: {known})")
            ids.append(dataset_id)
    return Filters(
        datasets=ids,
        date_from=date_from,
        date_to=date_to,
        hours=parse_ranges(hours, 0, 23) if hours else None,
        days_of_week=parse_ranges(days, 0, 6) if days else None,
        topic=topic,
        **(region_from_text(region) if region else {}),
    )
