"""`ScoredEvents`: the per-event interest vectors and what filters and groups need, loaded once
(`load_scored`) and cached by the caller; `filter_mask` selects its rows.

Why apart: every other analytics module computes on this one object.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from interestgeo.analytics.filters import Filters, _geojson_geometry
from interestgeo.cells import cell_to_parent, resolution_of
from interestgeo.config import Config
from interestgeo.schema import user_keys
from interestgeo.topics import Topics, probabilities_from_similarities, topic_probabilities, topic_similarities
from interestgeo.windows import window_keys

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = [
    "ScoredEvents", "StoredVectors", "VectorReader", "Venues", "filter_mask", "load_scored",
]


def encoder_mismatch(stored_dim: int, phrase_vector: np.ndarray) -> ValueError:
    """The error for a phrase embedded by another encoder than the one the stored vectors come from."""
    return ValueError(
        f"the stored interest vectors ({stored_dim}-d) come from another text encoder than the configured one "
        f"({np.shape(phrase_vector)[-1]}-d): run a full `interestgeo score` to re-embed them, or set text.encoder back"
    )


class VectorReader(Protocol):
    """Where a `ScoredEvents` too large to hold its per-event vectors reads them, one question at a time."""

    dim: int

    def affinities(self, phrase_vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(event ids, vector . phrase_vector) of every scored event, any order."""
        ...

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(event ids, (n, D) vectors) batches covering every scored event once, any order."""
        ...

    def vectors(self, event_ids: np.ndarray) -> np.ndarray:
        """(len(event_ids), D) vectors of these events, in this order."""
        ...


class StoredVectors:
    """A VectorReader over a store: each call opens it (`open_store()`, a context manager giving a
    Store) and lets DuckDB do the work, so no call holds more than one batch of vectors."""

    def __init__(self, open_store: Callable[[], AbstractContextManager[Store]], datasets: list[int] | None, dim: int) -> None:
        self.open_store, self.datasets, self.dim = open_store, datasets, int(dim)

    def affinities(self, phrase_vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.open_store() as store:
            return store.event_affinities(phrase_vector, self.datasets)

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with self.open_store() as store:
            yield from store.event_vector_batches(self.datasets)

    def vectors(self, event_ids: np.ndarray) -> np.ndarray:
        with self.open_store() as store:
            return store.event_vectors(event_ids)


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

    Or never: given a `VectorReader` instead (`load_scored` does so when the vectors would exceed
    `analytics.max_vector_memory_mb`), the vectors stay in the store and the two things region
    answers need from them are computed there: every event's affinity to a phrase
    (`affinity`, a dot product inside DuckDB) and user-weighted group means (`group_means`, one
    streamed pass holding one batch). `vectors` then raises; per-person views read their rows
    (`vector_rows`).
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
        self.reader: VectorReader | None = None
        temperature = self.config.analytics.topic_temperature
        if not isinstance(vectors, np.ndarray) and hasattr(vectors, "batches"):
            if topic_sims is None or topic_sims.shape != (len(ev), len(topics)) or np.isnan(topic_sims).any():
                raise ValueError("vectors read from a store need every event's topic similarities")
            self.reader = vectors  # type: ignore[assignment]
            self.topic_probs = probabilities_from_similarities(topic_sims, temperature)
        elif callable(vectors):
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
        self._id_order: np.ndarray | None = None  # event ids' sort order and the sorted ids (`_positions`)
        self._sorted_ids = np.zeros(0, dtype=np.int64)
        self.baseline_shares: np.ndarray | None = None  # (T,) shares over all events, computed on first use

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) float32 L2-normalised interest vectors (loaded on first use when given a loader)."""
        if self.reader is not None:
            raise RuntimeError("these interest vectors stay in the store (too many to hold): use affinity / group_means")
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

    @property
    def dim(self) -> int:
        """The vectors' dimension (without loading them)."""
        return self.reader.dim if self.reader is not None else int(self.vectors.shape[1])

    def affinity(self, phrase_vector: np.ndarray) -> np.ndarray:
        """(N,) float32: every event's interest vector . phrase_vector."""
        q = np.asarray(phrase_vector, dtype=np.float32)
        if q.shape != (self.dim,):
            raise encoder_mismatch(self.dim, q)
        if self.reader is None:
            return self.vectors @ q
        ids, values = self.reader.affinities(q)
        out = np.zeros(len(self), dtype=np.float32)
        pos, has = self._positions(ids)
        out[pos[has]] = values[has]
        return out

    def group_means(self, weights: Any) -> np.ndarray:
        """(G, D) float32: `weights` (a scipy sparse (G, N) matrix over this object's rows) times
        the vectors, streamed from the store when they are not held."""
        if self.reader is None:
            return np.asarray(weights @ self.vectors, dtype=np.float32)
        columns = weights.tocsc()
        out = np.zeros((weights.shape[0], self.dim), dtype=np.float32)
        for ids, vectors in self.reader.batches():
            pos, has = self._positions(ids)
            out += np.asarray(columns[:, pos[has]] @ vectors[has], dtype=np.float32)
        return out

    def vector_rows(self, positions: np.ndarray) -> np.ndarray:
        """(n, D) vectors of some rows (a person's), without holding the rest."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.reader is None:
            return self.vectors[positions]
        return self.reader.vectors(self.events["event_id"].to_numpy(np.int64)[positions])

    def _positions(self, event_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row of each event id, whether it is one of these events)."""
        if self._id_order is None:
            ids = self.events["event_id"].to_numpy(np.int64)
            self._id_order = np.argsort(ids, kind="stable")
            self._sorted_ids = ids[self._id_order]
        sorted_ids = self._sorted_ids
        at = np.clip(np.searchsorted(sorted_ids, event_ids), 0, max(len(sorted_ids) - 1, 0))
        has = sorted_ids[at] == event_ids if len(sorted_ids) else np.zeros(len(event_ids), dtype=bool)
        return self._id_order[at], has

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
    open_store: Callable[[], AbstractContextManager[Store]] | None = None,
) -> ScoredEvents:
    """The stored events that have interest vectors, with topics; venues too when `encoder` is given.

    With `vector_loader` (event ids -> their vectors, in that order, e.g. `Store.event_vectors`
    on a connection of its own), only the events and their stored topic similarities are read
    now and the vectors on first use (see `ScoredEvents`); events without stored similarities
    get theirs from their vectors, read now. Raises LookupError with a one-line message when
    nothing has been scored yet.

    With `open_store` (a store for later questions: the same one for a CLI, a fresh read-only
    connection for the dashboard) the vectors are read on first use while they fit in
    `analytics.max_vector_memory_mb`, and never held beyond that (`StoredVectors`).
    """
    topics = store.analytics_topics()
    reader = None
    if open_store is not None and vector_loader is None and topics is not None:
        reader = StoredVectors(open_store, None if datasets is None else list(datasets), store.vector_dim())
        vector_loader = reader.vectors
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
            if reader is not None and len(events) * reader.dim * 4 > config.analytics.max_vector_memory_mb * 2**20:
                vectors = reader
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
