"""Every cached core call of the dashboard (st.cache_data / st.cache_resource).

Every cached function takes everything it depends on as arguments (the database path and the
config key first), so two databases or two filter settings never share a cache entry. The key
is `config_key`: the config plus the database's data version, so new data is read at once.
The per-person calls check the analyst role before their caches, so an analyst's cached result
never reaches a marketer.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from interestgeo import analytics
from interestgeo.config import Config
from pages._ui.encoder import text_encoder
from pages._ui.login import audit_person_view
from pages._ui.session import SCORE_HINT, TRAINING, TRAINING_NOTE, db_path, require_analyst, store_for


def config_key(config: Config) -> str:
    """The cache key of every cached call: the config as JSON (it rebuilds the same Config, see
    `_config_from`) plus the database's data version, so a reload after a load or a scoring run,
    from this dashboard or from the CLI in another process, reads the new data.

    The version is a stat of the file (store.data_version: no connection); it holds still
    while a writer works, so the cached views stay up during a load. When it moves, the big
    per-database resources (the scored events and their vectors, the venues, the model) of the
    old version are dropped at once rather than when their cache evicts them.
    """
    from interestgeo.store import data_version

    path = db_path(config)
    version = data_version(path)
    with _VERSIONS_LOCK:
        moved = _VERSIONS.get(path, version) != version
        _VERSIONS[path] = version
    if moved:
        for loader in (scored_events, venues, user_scored, interest_model):
            loader.clear()
    return json.dumps({**config.to_dict(), _VERSION_KEY: version}, sort_keys=True)


# The data version's key inside config_key's JSON (not a Config setting: _config_from drops it).
_VERSION_KEY = "data_version"
_VERSIONS: dict[str, str] = {}
_VERSIONS_LOCK = threading.Lock()


def _config_from(config_json: str) -> Config:
    data = json.loads(config_json)
    data.pop(_VERSION_KEY, None)
    return Config.from_dict(data)


@st.cache_data(show_spinner=False, max_entries=8)
def datasets(path: str, config_json: str) -> pd.DataFrame:
    with store_for(_config_from(config_json)) as store:
        return store.datasets()


@st.cache_data(show_spinner="Aggregating cells...", max_entries=64)
def cell_aggregates(
    path: str, config_json: str, resolution: int, window: str, dataset_ids: tuple[int, ...]
) -> tuple[pd.DataFrame, int]:
    config = _config_from(config_json)
    with store_for(config) as store:
        return store.cell_aggregates(resolution, window, datasets=list(dataset_ids) or None,
                                     k=config.privacy.k_min_users)


@st.cache_data(show_spinner="Counting events...", max_entries=64)
def time_filtered_cell_counts(
    path: str, config_json: str, resolution: int, window: str, dataset_ids: tuple[int, ...],
    hours: tuple[int, ...] | None, days_of_week: tuple[int, ...] | None,
) -> tuple[pd.DataFrame, int]:
    config = _config_from(config_json)
    with store_for(config) as store:
        return store.time_filtered_cell_counts(resolution, window, datasets=list(dataset_ids) or None, hours=hours,
                                               days_of_week=days_of_week, k=config.privacy.k_min_users)


@st.cache_data(show_spinner=False, max_entries=8)
def topic_labels(path: str, config_json: str) -> tuple[str, ...]:
    """The stored interest topics, in order (empty before the first `interestgeo score`).

    What the filter bar, the colours and the "is anything scored" checks need, read without the
    interest vectors: pages that need no vectors (Upload, Model) never load them.
    """
    with store_for(_config_from(config_json)) as store:
        topics = store.analytics_topics()
    return tuple(topics.labels) if topics is not None else ()


@st.cache_resource(show_spinner="Loading interest vectors...", max_entries=4)
def scored_events(path: str, config_json: str) -> analytics.ScoredEvents | None:
    """Every scored event with its interest vector (None before the first `interestgeo score`).

    Loaded once per database and shared by all sessions: the analytics filter it in numpy, so
    the filters are not part of this key. Only region-level pages need it; the User page reads
    its one person through `user_scored`.

    The events and their stored topic similarities come first (0.2-0.3 s for the NYC demo),
    the vectors when first used (0.5-1.3 s in a fresh process): only Drift or a phrase under a
    filter beyond datasets reads them (`warm_up` loads both while the server is idle).
    """
    from interestgeo.store import Store

    config = _config_from(config_json)
    if TRAINING.locked():
        raise RuntimeError(TRAINING_NOTE)

    def open_store() -> Any:
        return Store.open(path, read_only=True, config=config)

    # Its own read-only connection (the same database instance in this process): the load takes
    # seconds, and other sessions' queries should not queue behind it. The vectors come later
    # through short connections of their own, and stay in the store when they are too many.
    with open_store() as store:
        try:
            return analytics.load_scored(store, config, None, open_store=open_store)
        except LookupError:
            return None


@st.cache_resource(show_spinner="Loading the venues...", max_entries=2)
def venues(path: str, config_json: str) -> analytics.Venues:
    """Every venue with its text embedding (cached in the store), for next-venue predictions."""
    config = _config_from(config_json)
    encoder = text_encoder(config_json)
    with store_for(config) as store:
        return analytics.build_venues(store, encoder, store.events())


@st.cache_resource(show_spinner=False, max_entries=32)
def user_scored(path: str, config_json: str, dataset_id: int, user_id: str) -> analytics.ScoredEvents:
    """One person's scored events and vectors (hundreds of rows, not the whole store's 100k)."""
    config = _config_from(config_json)
    with store_for(config) as store:
        topics = store.analytics_topics()
        events, vectors = store.user_scored_events(dataset_id, user_id)
    if topics is None or events.empty:
        raise LookupError(f"no interest vectors for this person yet: {SCORE_HINT}")
    return analytics.ScoredEvents(events, vectors, topics, config)


@st.cache_data(show_spinner=False, max_entries=256)
def phrase_vector(config_json: str, phrase: str) -> np.ndarray:
    return analytics.embed_phrase(text_encoder(config_json), phrase)


def is_scored(config: Config) -> bool:
    """Whether the events have interest vectors (cheap: reads the topics, not the vectors)."""
    return bool(topic_labels(db_path(config), config_key(config)))


def is_large(config: Config) -> bool:
    """Whether the store holds more events than `app.large_store_events` (see the config)."""
    return int(datasets(db_path(config), config_key(config))["rows_stored"].sum()) > config.app.large_store_events


def topic_colors(config: Config) -> dict[str, tuple[int, int, int]]:
    """One colour per topic, the same on every page (topics in their stored order)."""
    from interestgeo import charts

    return charts.topic_colors(list(topic_labels(db_path(config), config_key(config))))


# looked up inside (they are one shared resource per database), so only small keys are hashed.


def require_scored(path: str, config_json: str) -> analytics.ScoredEvents:
    scored = scored_events(path, config_json)
    if scored is None:
        raise LookupError(f"no interest vectors yet: {SCORE_HINT}")
    return scored


def _stored(answer: Callable[..., Any], config_json: str, *args: Any) -> Any:
    """The answer of the aggregates stored at score time (`analytics.stored_*`), or None when they
    cannot give it: a question of everyone reads a few rows, at any data size, without the events."""
    config = _config_from(config_json)
    with store_for(config) as store:
        return answer(store, config, *args)


@st.cache_data(show_spinner=False, max_entries=128)
def interest_profile(path: str, config_json: str, filters: analytics.Filters) -> analytics.InterestProfile:
    stored = _stored(analytics.stored_profile, config_json, filters)
    return stored if stored is not None else analytics.interest_profile(require_scored(path, config_json), filters)


@st.cache_data(show_spinner=False, max_entries=128)
def region_map(
    path: str, config_json: str, filters: analytics.Filters, resolution: int, window: str | None
) -> analytics.RegionMap:
    stored = _stored(analytics.stored_region_map, config_json, filters, resolution, window)
    if stored is not None:
        return stored
    return analytics.region_map(require_scored(path, config_json), filters, resolution, window)


@st.cache_data(show_spinner=False, max_entries=128)
def window_counts(
    path: str, config_json: str, filters: analytics.Filters, window: str
) -> tuple[pd.DataFrame, int]:
    stored = _stored(analytics.stored_window_counts, config_json, filters, window)
    return stored if stored is not None else analytics.window_counts(require_scored(path, config_json), filters, window)


# a spinner: on a fresh server this may wait for the events (see `scored_events`)
@st.cache_data(show_spinner="Computing the drift...", max_entries=64)
def region_drift(path: str, config_json: str, filters: analytics.Filters, window: str) -> analytics.Drift:
    stored = _stored(analytics.stored_drift, config_json, filters, window)
    return stored if stored is not None else analytics.region_drift(require_scored(path, config_json), filters, window)


@st.cache_data(show_spinner="Scoring the phrase...", max_entries=64)
def query_interest(
    path: str, config_json: str, phrase: str, filters: analytics.Filters, resolution: int
) -> analytics.QueryResult:
    vector = phrase_vector(config_json, phrase)
    stored = _stored(analytics.stored_query, config_json, phrase, vector, filters, resolution)
    if stored is not None:
        return stored
    return analytics.query_interest(require_scored(path, config_json), phrase, vector, filters, resolution)


def list_users(path: str, config_json: str, filters: analytics.Filters) -> pd.DataFrame:
    require_analyst()  # before the cache: an analyst's cached result must not reach a marketer
    return _list_users(path, config_json, filters)


@st.cache_data(show_spinner=False, max_entries=16)
def _list_users(path: str, config_json: str, filters: analytics.Filters) -> pd.DataFrame:
    return analytics.list_users(require_scored(path, config_json), filters)


def user_profile(path: str, config_json: str, dataset_id: int, user_id: str) -> analytics.UserProfile:
    require_analyst()  # before the cache: an analyst's cached result must not reach a marketer
    audit_person_view(path, dataset_id, user_id)
    return _user_profile(path, config_json, dataset_id, user_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _user_profile(path: str, config_json: str, dataset_id: int, user_id: str) -> analytics.UserProfile:
    return analytics.user_profile(user_scored(path, config_json, dataset_id, user_id), dataset_id, user_id)


@st.cache_resource(show_spinner="Loading the interest model...", max_entries=2)
def interest_model(path: str, config_json: str) -> Any | None:
    """The trained model (latest checkpoint), or None when none is trained yet."""
    from interestgeo.vectors import load_source

    from interestgeo.store import StoreOnDemand

    config = _config_from(config_json)
    if TRAINING.locked():
        raise RuntimeError(TRAINING_NOTE)
    if checkpoints(path, config_json).empty:
        return None  # nothing trained or registered: no torch import (1.5-2 s) to learn that
    try:
        # The model keeps its store for later lookups (cached text embeddings): one that connects per
        # call, not a connection held for the server's life. The app's one text encoder (loading a
        # second would cost seconds and memory).
        return load_source(StoreOnDemand(path, config), config, encoder=text_encoder(config_json))
    except (LookupError, FileNotFoundError):
        return None


def explain_user(path: str, config_json: str, dataset_id: int, user_id: str) -> Any | None:
    require_analyst()  # before the cache: an analyst's cached result must not reach a marketer
    return _explain_user(path, config_json, dataset_id, user_id)


@st.cache_data(show_spinner="Explaining: re-running the model without each past event...", max_entries=32)
def _explain_user(path: str, config_json: str, dataset_id: int, user_id: str) -> Any | None:
    """The explanation of a user's current interests, or None without a trained model."""
    from interestgeo.analytics.explain import explain_scored_user

    model = interest_model(path, config_json)
    if model is None:
        return None
    return explain_scored_user(model, user_scored(path, config_json, dataset_id, user_id), dataset_id, user_id)


@st.cache_data(show_spinner=False, max_entries=8)
def checkpoints(path: str, config_json: str) -> pd.DataFrame:
    with store_for(_config_from(config_json)) as store:
        return store.checkpoints()


@st.cache_data(show_spinner=False, max_entries=8)
def score_runs(path: str, config_json: str) -> pd.DataFrame:
    with store_for(_config_from(config_json)) as store:
        return store.score_runs()


@st.cache_data(show_spinner=False, max_entries=8)
def calibrations(path: str, config_json: str) -> pd.DataFrame:
    with store_for(_config_from(config_json)) as store:
        return store.calibrations()


def next_interests(path: str, config_json: str, dataset_id: int, user_id: str) -> analytics.NextInterests:
    require_analyst()  # before the cache: an analyst's cached result must not reach a marketer
    return _next_interests(path, config_json, dataset_id, user_id)


@st.cache_data(show_spinner="Predicting...", max_entries=64)
def _next_interests(path: str, config_json: str, dataset_id: int, user_id: str) -> analytics.NextInterests:
    person = user_scored(path, config_json, dataset_id, user_id)
    model = interest_model(path, config_json)
    if model is not None and hasattr(model, "next_venues"):  # the model's own next-venue probabilities
        return analytics.next_interests(person, dataset_id, user_id, venue_model=model.next_venues)
    person = copy.copy(person)
    person.venues = venues(path, config_json)  # a shallow copy: the cached one stays venue-free
    return analytics.next_interests(person, dataset_id, user_id)
