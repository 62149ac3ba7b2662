"""Streamlit-only plumbing shared by every page: store access, cached core calls, the filter bar.

Why this module exists: the core (`interestgeo/`) never imports streamlit, so caching, session
state and widgets live here, in the UI layer, and the pages stay thin (widgets -> one core call
-> a chart). Every cached function takes everything it depends on as arguments (the database
path and the config first), so two databases or two filter settings never share a cache entry.

The filter bar's widgets are bound to the URL (`bind="query-params"`), so any view is a link;
cells picked on the map travel in the `cells` parameter.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from interestgeo import access, analytics
from interestgeo.config import Config, load_config

log = logging.getLogger("interestgeo.app")

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
COMPARE_CHOICES = ("none", "previous period")
ROLES = ("analyst", "marketer")
# Named areas for the demo city's region filter (NYC Neighborhood Tabulation Areas), shipped in data/.
AREAS_FILE = Path(__file__).resolve().parents[1] / "data" / "nyc_neighborhoods.geojson"
SCORE_HINT = "run `interestgeo train` and then `interestgeo score` (or `make run`, which does both)"


# --- store ------------------------------------------------------------------------------------


def app_config() -> Config:
    """The config for this run (`$INTERESTGEO_CONFIG`, `$INTERESTGEO_DB`); cheap, so not cached.

    A config that cannot be read stops the page with one line (the details go to the server
    log): the dashboard never runs on defaults the operator did not choose.
    """
    try:
        return load_config()
    except (OSError, ValueError, TypeError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        refuse_to_start("the interestgeo config file could not be read", exc)
        raise  # not reached: refuse_to_start stops the script


def refuse_to_start(what: str, exc: BaseException) -> None:
    """Stop the script run with one sentence; the exception goes to the server log only."""
    log.error("refusing to start: %s", what, exc_info=exc)
    st.error(f"The dashboard cannot start: {what}. The server log says why.", icon=":material/block:")
    st.stop()


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


def db_path(config: Config) -> str:
    return str(Path(config.store.path).resolve())


# Held while the Model page trains: one run at a time, and the database is open for writing.
TRAINING = threading.Lock()
TRAINING_NOTE = ("a new interest model is training (Model page); pages that read the database are back when it "
                 "finishes")


@contextmanager
def store_for(config: Config) -> Iterator[Any]:
    """A read-only store for the length of one core call, closed after it.

    No connection outlives the call: a connection held between requests kept every writer out
    (DuckDB: one read-write process or several read-only ones), so `interestgeo ingest` failed
    while the dashboard was open. Opening one costs milliseconds, and results are cached. While
    a writer commits, the open waits `store.read_wait_s` and then raises StoreBusy, which the page
    shows as one sentence ("reload in a moment").
    """
    from interestgeo.store import Store

    if TRAINING.locked():
        # DuckDB keeps one writer and no readers in a process: say so instead of failing to open
        raise RuntimeError(TRAINING_NOTE)
    with Store.open(db_path(config), read_only=True, config=config) as store:
        yield store


def release_store() -> None:
    """Drop every cached result (after an upload or training changed the database in this process)."""
    for loader in (scored_events, venues, user_scored, interest_model):
        loader.clear()
    st.cache_data.clear()
    with _WARMING_LOCK:
        _WARMING.clear()


def require_database(config: Config) -> None:
    """Return when the database exists; otherwise tell the user how to get one and stop the page."""
    path = Path(config.store.path)
    if not path.exists():
        st.info(
            f"No database at `{path}` yet. Run `make run` (it loads the NYC demo data) or "
            "`interestgeo demo`, or load your own CSV on the **Upload** page."
        )
        st.stop()


# --- cached core calls ------------------------------------------------------------------------


def require_analyst() -> None:
    """Raise access.AccessDenied unless this session's viewer is an analyst.

    Checked by the per-person calls below before their caches, from the session's own role (not
    only the thread's declared viewer, which a fragment's rerun may not have)."""
    access.require_analyst("one person's data", role(app_config()))


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
    the vectors when first used (0.5-1.3 s in a fresh process): the Overview and the Map's
    topic colouring need none, so a fresh server's first region page waits for the small part
    only; `warm_up` then loads the vectors in the background for Drift and phrase queries.
    """
    from interestgeo.store import Store

    config = _config_from(config_json)
    if TRAINING.locked():
        raise RuntimeError(TRAINING_NOTE)

    def vectors(event_ids: np.ndarray) -> np.ndarray:
        with Store.open(path, read_only=True, config=config) as store:
            return store.event_vectors(event_ids)

    # Its own read-only connection (the same database instance in this process): the load takes
    # seconds, and other sessions' queries should not queue behind it.
    with Store.open(path, read_only=True, config=config) as store:
        try:
            return analytics.load_scored(store, config, None, vector_loader=vectors)
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


def text_encoder(config_json: str) -> Any:
    """The text encoder of this config: one per text-model setting, whatever the database."""
    return _text_encoder(json.dumps(json.loads(config_json)["text"], sort_keys=True))


@st.cache_resource(show_spinner=False, max_entries=2)
def _text_encoder(text_json: str) -> LazyTextEncoder:
    return LazyTextEncoder(Config.from_dict({"text": json.loads(text_json)}).text)


class LazyTextEncoder:
    """The text encoder, its language model loaded on the first use that needs it.

    Most pages only look up embeddings the store already caches by model id (the venues for
    next-interest predictions, the events' texts in the interest model), which needs the id and
    not the model; importing torch and transformers and loading the weights costs 4-6 s on the
    shared cores, so it waits for a new phrase or text to embed. Anything else asked of it
    (`encode`, `dim`, ...) loads the real encoder once, under a lock (sessions are threads).
    """

    def __init__(self, config: Any) -> None:
        from interestgeo.text import text_model_id

        self.config = config
        self.model_id = text_model_id(config)
        self._lock = threading.Lock()
        self._encoder: Any = None

    def _loaded(self) -> Any:
        with self._lock:
            if self._encoder is None:
                from interestgeo.text import encoder_for

                self._encoder = encoder_for(self.config)
            return self._encoder

    def __getattr__(self, name: str) -> Any:
        # only for attributes not set in __init__: the loaded encoder's
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._loaded(), name)


@st.cache_data(show_spinner=False, max_entries=256)
def phrase_vector(config_json: str, phrase: str) -> np.ndarray:
    return analytics.embed_phrase(text_encoder(config_json), phrase)


def is_scored(config: Config) -> bool:
    """Whether the events have interest vectors (cheap: reads the topics, not the vectors)."""
    return bool(topic_labels(db_path(config), config_key(config)))


def topic_colors(config: Config) -> dict[str, tuple[int, int, int]]:
    """One colour per topic, the same on every page (topics in their stored order)."""
    from interestgeo import charts

    return charts.topic_colors(list(topic_labels(db_path(config), config_key(config))))


def warm_up(config: Config, *, analyst: bool = False) -> None:
    """Load the scored events and then their interest vectors in a background thread, once per
    database and process, so the first page that needs them waits less or not at all.

    The cached loader holds a per-key lock (and the vectors one of their own), so a page asking
    meanwhile waits for this load instead of starting a second one. Errors are left for the
    page's own call to report.

    For analysts, the venues too (the User page's predictions; stored embeddings looked up by
    model id, no language model). Not torch: its import holds the GIL for 1-1.5 s, and done in
    the background it landed on whatever click came next (a Map filter change 0.7-0.8 s instead of
    0.25 s), however it was timed. The region pages do not need it (grouped means are scipy
    sparse products); what does (a new free-text phrase, the User page's explanation, scoring an
    upload) imports it when asked. Nor transformers, the text
    encoder or the model: importing transformers here while a page imported it too was seen to
    hang a page's first render (its lazy modules).
    """
    path, key = db_path(config), config_key(config)
    with _WARMING_LOCK:
        if not config.app.warm_up or (path, key) in _WARMING or not is_scored(config):
            return
        _WARMING.add((path, key))

    def load() -> None:
        try:
            scored = scored_events(path, key)
            if scored is not None:
                scored.vectors  # noqa: B018 (loads them: Drift and phrase queries need them)
            if analyst:
                venues(path, key)
        except Exception:  # the page's own call shows the error in words; the log keeps this one
            log.exception("warm-up failed")

    threading.Thread(target=load, name="interestgeo-warm-up", daemon=True).start()


_WARMING: set[tuple[str, str]] = set()
_WARMING_LOCK = threading.Lock()

# Region-level analytics, cached by (database, config, filters, arguments). The scored events are
# looked up inside (they are one shared resource per database), so only small keys are hashed.


def _scored(path: str, config_json: str) -> analytics.ScoredEvents:
    scored = scored_events(path, config_json)
    if scored is None:
        raise LookupError(f"no interest vectors yet: {SCORE_HINT}")
    return scored


@st.cache_data(show_spinner=False, max_entries=128)
def interest_profile(path: str, config_json: str, filters: analytics.Filters) -> analytics.InterestProfile:
    return analytics.interest_profile(_scored(path, config_json), filters)


@st.cache_data(show_spinner=False, max_entries=128)
def region_map(
    path: str, config_json: str, filters: analytics.Filters, resolution: int, window: str | None
) -> analytics.RegionMap:
    return analytics.region_map(_scored(path, config_json), filters, resolution, window)


@st.cache_data(show_spinner=False, max_entries=128)
def window_counts(
    path: str, config_json: str, filters: analytics.Filters, window: str
) -> tuple[pd.DataFrame, int]:
    return analytics.window_counts(_scored(path, config_json), filters, window)


# a spinner: on a fresh server this may wait for the vectors (see `scored_events`)
@st.cache_data(show_spinner="Computing the drift...", max_entries=64)
def region_drift(path: str, config_json: str, filters: analytics.Filters, window: str) -> analytics.Drift:
    return analytics.region_drift(_scored(path, config_json), filters, window)


@st.cache_data(show_spinner="Scoring the phrase...", max_entries=64)
def query_interest(
    path: str, config_json: str, phrase: str, filters: analytics.Filters, resolution: int
) -> analytics.QueryResult:
    vector = phrase_vector(config_json, phrase)
    return analytics.query_interest(_scored(path, config_json), phrase, vector, filters, resolution)


def list_users(path: str, config_json: str, filters: analytics.Filters) -> pd.DataFrame:
    require_analyst()  # before the cache: an analyst's cached result must not reach a marketer
    return _list_users(path, config_json, filters)


@st.cache_data(show_spinner=False, max_entries=16)
def _list_users(path: str, config_json: str, filters: analytics.Filters) -> pd.DataFrame:
    return analytics.list_users(_scored(path, config_json), filters)


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
    from interestgeo.score import load_source

    from interestgeo.store import StoreOnDemand

    config = _config_from(config_json)
    if TRAINING.locked():
        raise RuntimeError(TRAINING_NOTE)
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


# --- named areas ------------------------------------------------------------------------------


@st.cache_data(show_spinner=False)
def named_areas(path: str) -> dict[str, str]:
    """Area label -> GeoJSON text of its polygons: each borough, then each neighbourhood."""
    source = Path(path)
    if not source.exists():
        return {}
    features = json.loads(source.read_text(encoding="utf-8"))["features"]
    boroughs: dict[str, list[dict[str, Any]]] = {}
    areas: dict[str, str] = {}
    for feature in features:
        props = feature.get("properties") or {}
        boroughs.setdefault(str(props.get("borough", "")), []).append(feature)
    for borough, members in sorted(boroughs.items()):
        if borough:
            areas[borough] = json.dumps({"type": "FeatureCollection", "features": members})
    for feature in sorted(features, key=lambda f: str((f.get("properties") or {}).get("neighborhood", ""))):
        props = feature.get("properties") or {}
        label = f"{props.get('neighborhood', '?')} ({props.get('borough', '')})"
        areas[label] = json.dumps({"type": "FeatureCollection", "features": [feature]})
    return areas


@st.cache_data(show_spinner=False)
def area_outlines(path: str) -> list[list[list[float]]]:
    """The named areas' borough outlines, drawn with the maps in place of a basemap (none when
    the file is missing or unreadable: the maps still draw)."""
    from interestgeo import charts

    try:
        return charts.area_outlines(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return []


def areas_geojson(labels: tuple[str, ...]) -> str | None:
    """One FeatureCollection with the polygons of the chosen named areas (None when none chosen)."""
    if not labels:
        return None
    catalogue = named_areas(str(AREAS_FILE))
    features = [f for label in labels if label in catalogue for f in json.loads(catalogue[label])["features"]]
    return json.dumps({"type": "FeatureCollection", "features": features}) if features else None


# --- filters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterState:
    """What the sidebar selected; hashable so it can key cached queries."""

    dataset_ids: tuple[int, ...]
    dataset_names: tuple[str, ...]
    start: dt.date
    end: dt.date
    compare: str = "none"
    hours: tuple[int, int] = (0, 23)
    days: tuple[int, ...] = tuple(range(7))
    areas: tuple[str, ...] = ()
    cells: tuple[int, ...] = ()
    geojson: str | None = None
    topic: str | None = None
    polygon: tuple[tuple[float, float], ...] = ()  # drawn on the map, (lon, lat) corners
    uploaded: bool = False  # a GeoJSON file is part of `geojson`

    @property
    def comparison(self) -> tuple[dt.date, dt.date] | None:
        """The equally long period just before the selected one, when comparing."""
        if self.compare != "previous period":
            return None
        length = self.end - self.start + dt.timedelta(days=1)
        return self.start - length, self.start - dt.timedelta(days=1)

    @property
    def has_region(self) -> bool:
        return bool(self.cells) or self.geojson is not None

    def to_filters(self, *, period: tuple[dt.date, dt.date] | None = None, region: bool = True) -> analytics.Filters:
        """The analytics' Filters for this selection (another period or no region when asked)."""
        start, end = period or (self.start, self.end)
        return analytics.Filters(
            datasets=self.dataset_ids or None,
            date_from=start,
            date_to=end,
            hours=None if self.hours == (0, 23) else tuple(range(self.hours[0], self.hours[1] + 1)),
            days_of_week=None if len(self.days) == 7 else self.days,
            cells=(self.cells or None) if region else None,
            geojson=self.geojson if region else None,
            topic=self.topic,
        )

    def describe_region(self) -> str:
        """The region in words (markdown-escaped), for headings."""
        parts = [md(a) for a in self.areas]
        if self.cells:
            parts.append(f"{len(self.cells)} picked cells")
        if self.polygon:
            parts.append("drawn polygon")
        if self.uploaded:
            parts.append("uploaded region")
        return ", ".join(parts) or "Everywhere"

    def describe(self) -> str:
        """One line for captions: what the numbers on the page are about."""
        parts = [", ".join(md(n) for n in self.dataset_names) or "all datasets",
                 f"{self.start:%d %b %Y} – {self.end:%d %b %Y}"]
        if self.hours != (0, 23):
            parts.append(f"{self.hours[0]:02d}:00–{self.hours[1]:02d}:59")
        if len(self.days) != 7:
            parts.append(" ".join(DAY_NAMES[d] for d in self.days))
        region = self.describe_region()
        if region != "Everywhere":
            parts.append(region)
        if self.topic:
            parts.append(f"topic: {md(self.topic)}")
        return " · ".join(parts)


def whole_period(filters: FilterState, config: Config) -> FilterState:
    """The same datasets and region over every date, hour and day, any topic.

    What the Map fits its view to: the view then stays put while the time filters change (the
    analyst keeps their place, and deck.gl redraws once instead of three times: a moved view
    state costs two more frames). With no time filter set it is `filters` itself, so the
    region map behind the view is the page's own, cached.
    """
    lo, hi = _date_bounds(datasets(db_path(config), config_key(config)))
    return replace(filters, start=lo, end=hi, compare="none", hours=(0, 23), days=tuple(range(7)), topic=None)


def _date_bounds(frame: pd.DataFrame) -> tuple[dt.date, dt.date]:
    lo = pd.to_datetime(frame["ts_min"], utc=True).min()
    hi = pd.to_datetime(frame["ts_max"], utc=True).max()
    # Local dates can run a day either side of the UTC range.
    return (lo - pd.Timedelta(days=1)).date(), (hi + pd.Timedelta(days=1)).date()


def picked_cells() -> tuple[int, ...]:
    """Cells picked on the map (session state, mirrored in the URL's `cells` parameter)."""
    if "region_cells" not in st.session_state:
        st.session_state["region_cells"] = parse_cells(str(st.query_params.get("cells", "")))
    return tuple(st.session_state["region_cells"])


# Cells a link may carry: more than a map click session picks, few enough to bound the work.
MAX_LINK_CELLS = 5000


def parse_cells(text: str) -> tuple[int, ...]:
    """The valid H3 cells in a `cells` URL parameter (hex, comma-separated); anything else is dropped.

    A link is hostile input: h3 raises OverflowError on a number past 64 bits (it was a traceback
    on every page), so each token is checked as 1-16 hex digits before h3 sees it.
    """
    cells: list[int] = []
    for token in text.split(",")[:MAX_LINK_CELLS]:
        token = token.strip()
        if _HEX_CELL.fullmatch(token) and h3.is_valid_cell(token):
            cells.append(h3.str_to_int(token))
    return tuple(dict.fromkeys(cells))


_HEX_CELL = re.compile(r"[0-9a-fA-F]{1,16}")


def set_picked_cells(cells: tuple[int, ...]) -> None:
    st.session_state["region_cells"] = tuple(int(c) for c in cells)
    if cells:
        st.query_params["cells"] = ",".join(h3.int_to_str(int(c)) for c in cells)
    elif "cells" in st.query_params:
        del st.query_params["cells"]


# A drawn polygon travels in the URL: enough corners for a hand-drawn outline, few enough for a link.
MAX_POLYGON_CORNERS = 64


def drawn_polygon() -> tuple[tuple[float, float], ...]:
    """The polygon drawn on the map (session state, mirrored in the URL's `poly` parameter)."""
    if "region_polygon" not in st.session_state:
        st.session_state["region_polygon"] = parse_polygon(str(st.query_params.get("poly", "")))
    return tuple(st.session_state["region_polygon"])


def set_drawn_polygon(corners: tuple[tuple[float, float], ...]) -> None:
    st.session_state["region_polygon"] = tuple(corners)
    if corners:
        st.query_params["poly"] = format_polygon(corners)
    elif "poly" in st.query_params:
        del st.query_params["poly"]


def format_polygon(corners: tuple[tuple[float, float], ...]) -> str:
    """`lon,lat;lon,lat;...` at 5 decimals (about a metre): the URL form of a drawn polygon."""
    return ";".join(f"{lon:.5f},{lat:.5f}" for lon, lat in corners)


def parse_polygon(text: str) -> tuple[tuple[float, float], ...]:
    """The corners in a `poly` URL parameter; () when it is not a usable polygon (a bad link)."""
    pairs = text.split(";")
    if len(pairs) > MAX_POLYGON_CORNERS:  # more than a drawn polygon ever has: not ours
        return ()
    corners = []
    for pair in pairs:
        lon_text, _, lat_text = pair.partition(",")
        try:
            lon, lat = float(lon_text), float(lat_text)
        except ValueError:
            return ()
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            return ()
        corners.append((lon, lat))
    return tuple(corners) if len(corners) >= 3 else ()


def polygon_from_selection(selection: Any) -> tuple[tuple[float, float], ...]:
    """The corners of the last lasso (or box) drawn on a plotly chart with lon/lat axes; () if none.

    A hand-drawn lasso has hundreds of points: it is simplified (shapely, to ~10 m, then coarser
    if needed) to at most MAX_POLYGON_CORNERS so it fits in a link.
    """
    import shapely

    shapes = []
    for kind in ("lasso", "box"):
        for shape in (selection or {}).get(kind, []) or []:
            xs, ys = list(shape.get("x", [])), list(shape.get("y", []))
            if kind == "box" and len(xs) == 2 and len(ys) == 2:
                xs, ys = [xs[0], xs[1], xs[1], xs[0]], [ys[0], ys[0], ys[1], ys[1]]
            if len(xs) >= 3 and len(xs) == len(ys):
                shapes.append(list(zip(xs, ys, strict=True)))
    if not shapes:
        return ()
    polygon = shapely.Polygon(shapes[-1])
    if not polygon.is_valid:
        polygon = polygon.buffer(0)  # a lasso that crosses itself: its outline
    tolerance = 1e-4
    while True:
        simple = polygon.simplify(tolerance)
        if isinstance(simple, shapely.MultiPolygon):
            simple = max(simple.geoms, key=lambda g: g.area)
        corners = list(simple.exterior.coords)[:-1] if isinstance(simple, shapely.Polygon) else []
        if len(corners) <= MAX_POLYGON_CORNERS or tolerance > 1:
            break
        tolerance *= 2
    corners = [(round(float(x), 5), round(float(y), 5)) for x, y in corners]
    return tuple(corners) if len(corners) >= 3 else ()


def polygon_geojson(corners: tuple[tuple[float, float], ...]) -> str:
    """A drawn polygon as a GeoJSON FeatureCollection (the region filter's input)."""
    ring = [list(c) for c in corners] + [list(corners[0])]
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "drawn"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]})


def filter_bar(config: Config) -> FilterState | None:
    """The global filter bar in the sidebar; None when there is no data to filter yet."""
    if not Path(config.store.path).exists():
        return None
    if TRAINING.locked():
        st.sidebar.info(f"Filters: {TRAINING_NOTE}.")
        return None
    from interestgeo.store import StoreBusy

    try:
        frame = datasets(db_path(config), config_key(config))
        labels = topic_labels(db_path(config), config_key(config)) if not frame.empty else ()
    except StoreBusy as busy:  # a writer is committing: the page says so too (page_frame)
        st.sidebar.info(f"Filters: {md(str(busy))}.", icon=":material/hourglass_top:")
        return None
    if frame.empty:
        return None
    names = frame["name"].astype(str).tolist()
    lo, hi = _date_bounds(frame)
    with st.sidebar:
        st.subheader("Filters")
        chosen = st.multiselect(
            "Datasets", names, key="ds", bind="query-params", placeholder="All datasets",
            help="Analyse uploads alone or together; empty means all.",
        )
        picked = st.date_input(
            "Dates", value=(lo, hi), min_value=lo, max_value=hi, key="dates", bind="query-params",
            help="Local calendar dates of the events.",
        )
        start, end = _as_range(picked, lo, hi)
        compare = st.selectbox(
            "Compare with", COMPARE_CHOICES, key="cmp", bind="query-params",
            help="KPI changes against the equally long period just before the selected one.",
        )
        hours = st.slider("Hours of day (local)", 0, 23, (0, 23), key="hours", bind="query-params")
        days = st.pills(
            "Days of week", list(range(7)), selection_mode="multi", default=list(range(7)),
            format_func=lambda d: DAY_NAMES[d], key="days", bind="query-params",
        )
        areas = tuple(st.multiselect(
            "Region: named areas", list(named_areas(str(AREAS_FILE))), key="area", bind="query-params",
            placeholder="Everywhere", help="New York boroughs and neighbourhoods (NYC Open Data).",
        ))
        cells = picked_cells()
        if cells:
            _map_region_note(f"Region: {len(cells)} cells picked on the map.", "Clear picked cells", "clear_cells",
                             lambda: set_picked_cells(()))
        polygon = drawn_polygon()
        if polygon:
            _map_region_note(f"Region: a polygon drawn on the map ({len(polygon)} corners).", "Clear drawn polygon",
                             "clear_polygon", lambda: set_drawn_polygon(()))
        topic = None
        if labels:
            topic = st.selectbox("Topic", list(labels), index=None, key="topic",
                                 bind="query-params", placeholder="All topics",
                                 help="Only events about this topic.")
        # folded: the uploader is the tallest control and the least used; at 1280x800 it pushed
        # the topic filter below the fold
        with st.expander("Region from a GeoJSON file", expanded=st.session_state.get("region_file") is not None):
            upload = st.file_uploader("Region: GeoJSON polygon", type=["geojson", "json"], key="region_file",
                                      help="A FeatureCollection, Feature or polygon in WGS84.")
    geojson = areas_geojson(areas)
    uploaded = upload is not None and (joined := _uploaded_geojson(upload.getvalue(), geojson)) != geojson
    if uploaded:
        geojson = joined
    if polygon:
        geojson = _joined_geojson(geojson, polygon_geojson(polygon))
    ids = tuple(int(i) for i, n in zip(frame["dataset_id"], names, strict=True) if n in set(chosen))
    return FilterState(
        dataset_ids=ids,
        dataset_names=tuple(chosen),
        start=start,
        end=end,
        compare=str(compare),
        hours=(int(hours[0]), int(hours[1])),
        days=tuple(sorted(int(d) for d in days or ())) or tuple(range(7)),
        areas=areas,
        cells=cells,
        geojson=geojson,
        topic=topic,
        polygon=polygon,
        uploaded=uploaded,
    )


def _map_region_note(note: str, label: str, key: str, clear: Callable[[], None]) -> None:
    """A region set on the map: what it is, and a button that clears it."""
    st.caption(note)
    if st.button(label, key=key):
        clear()
        st.rerun()  # from the top: the note above is already drawn


def _uploaded_geojson(raw: bytes, areas: str | None) -> str | None:
    """The uploaded polygon (joined with any named areas), or the areas alone with a warning."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        st.sidebar.warning("The region file is not valid GeoJSON; it is ignored.")
        return areas
    features = data.get("features") if isinstance(data, dict) and data.get("type") == "FeatureCollection" else None
    if features is None:
        feature = data if isinstance(data, dict) and data.get("type") == "Feature" else {
            "type": "Feature", "geometry": data, "properties": {}}
        features = [feature]
    return _joined_geojson(areas, json.dumps({"type": "FeatureCollection", "features": features}))


def _joined_geojson(first: str | None, second: str) -> str:
    """Two FeatureCollections as one (the region is their union); `first` may be None."""
    if first is None:
        return second
    features = [*json.loads(first)["features"], *json.loads(second)["features"]]
    return json.dumps({"type": "FeatureCollection", "features": features})


def _as_range(picked: object, lo: dt.date, hi: dt.date) -> tuple[dt.date, dt.date]:
    """A (start, end) pair from the date widget, which yields one date while a range is half picked."""
    values = [v for v in (picked if isinstance(picked, (tuple, list)) else [picked]) if v is not None]
    if not values:
        return lo, hi
    return min(values), max(values)


def current_filters() -> FilterState | None:
    return st.session_state.get("_filters")


# --- page helpers -----------------------------------------------------------------------------


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def md(text: object) -> str:
    """Text from data or users, escaped for Streamlit markdown (captions, alerts, headers).

    Without it a dataset called `![x](http://host/pixel)` would make every viewer's browser
    fetch that image, and `:red[...]` or `**...**` would restyle the page.
    """
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")


def role(config: Config) -> str:
    """The viewer's role. With accounts: the logged-in account's (and "marketer" for anyone not
    logged in, though the login gate shows them nothing). Without: `st.secrets["role"]` when set
    (per deployment), else the config's; when neither says, "analyst" only while the server
    listens on this machine alone, else "marketer".

    A secrets file that exists but cannot be parsed stops the page (it used to read as "no
    secrets" and fall back to the analyst role).
    """
    accounts = _accounts(config)
    if accounts:
        account = accounts.get(st.session_state.get(ACCOUNT_KEY, ""))
        return account.role if account is not None else "marketer"
    try:
        secret = st.secrets.get("role")
    except FileNotFoundError as exc:  # Streamlit's "no secrets" and "cannot parse them" alike
        if any(Path(f).is_file() for f in st.get_option("secrets.files")):
            refuse_to_start("the Streamlit secrets file could not be read", exc)
        secret = None
    value = secret or config.app.role
    if value is None:
        value = "analyst" if str(st.get_option("server.address") or "") in LOCAL_ADDRESSES else "marketer"
    # An unknown role gets the narrower view.
    return str(value) if value in ROLES else "marketer"


# --- accounts and the audit log ---------------------------------------------------------------

# The logged-in account's name, in session state (the role is looked up from the file each run,
# so removing an account or changing its role takes effect at the next click).
ACCOUNT_KEY = "_account"


def _accounts(config: Config) -> dict[str, Any]:
    """The accounts beside this database; a damaged accounts file stops the page."""
    from interestgeo.accounts import AccountsError, accounts_path, load_accounts

    try:
        return load_accounts(accounts_path(config.store.path))
    except AccountsError as exc:
        refuse_to_start("the accounts file could not be read", exc)
        raise  # not reached


@st.cache_resource(show_spinner=False)
def _login_limiter(accounts_file: str) -> Any:
    """One failed-login counter per accounts file, shared by every session of this server."""
    from interestgeo.accounts import LoginLimiter

    return LoginLimiter()


def login_gate(config: Config) -> str | None:
    """With accounts: the logged-in account's name, or else the login form and nothing more (the
    script stops). Without accounts (local single-user mode): None."""
    accounts = _accounts(config)
    if not accounts:
        return None
    name = st.session_state.get(ACCOUNT_KEY)
    if name in accounts:
        return str(name)
    st.session_state.pop(ACCOUNT_KEY, None)

    def log_in() -> None:
        _login_form(config)

    # A page list of its own, hidden (without st.navigation Streamlit would list the pages/ files
    # in the sidebar): the login form at every page's address. A shared link such as /drift?...
    # then shows the form instead of "page not found", and after the login Streamlit runs the
    # page of that address (a page's identity is the hash of its URL path), or the Overview when
    # this viewer's list has no such page.
    paths = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    st.navigation([st.Page(log_in, title="Log in", url_path="login", default=True),
                   *(st.Page(log_in, title="Log in", url_path=path) for path in paths)], position="hidden").run()
    st.stop()
    return None  # not reached


def _login_form(config: Config) -> None:
    from interestgeo import audit
    from interestgeo.accounts import MAX_FAILURES, WINDOW_S, accounts_path, authenticate

    st.title("interestgeo")
    st.caption("Log in to see the dashboard.")
    # cleared on submit: the password does not stay in the session's widget state
    with st.form("login", clear_on_submit=True):
        name = st.text_input("Account", key="login_name", max_chars=64)
        password = st.text_input("Password", type="password", key="login_password", max_chars=1024)
        submitted = st.form_submit_button("Log in", type="primary")
    if not submitted:
        return
    path = accounts_path(config.store.path)
    log_path = audit.audit_path(config.store.path)
    limiter = _login_limiter(str(path))
    if not limiter.allowed(name):
        audit.record(log_path, "login_limited", name)
        st.error(f"More than {MAX_FAILURES} failed logins for this account within {WINDOW_S:.0f} seconds: "
                 "try again in a minute.", icon=":material/block:")
        return
    account = authenticate(path, name, password)
    if account is None:
        limiter.failed(name)
        audit.record(log_path, "login_failed", name)
        st.error("Wrong account name or password.", icon=":material/block:")
        return
    limiter.succeeded(name)
    audit.record(log_path, "login", account.name, role=account.role)
    st.session_state[ACCOUNT_KEY] = account.name
    st.rerun()


def logout(config: Config) -> None:
    from interestgeo import audit

    name = st.session_state.pop(ACCOUNT_KEY, None)
    if name is not None:
        audit.record(audit.audit_path(config.store.path), "logout", name)


def audit_person_view(path: str, dataset_id: int, user_id: str) -> None:
    """Log that this session looked at one person (once per person in a row, not per rerun)."""
    from interestgeo import audit

    seen = (path, int(dataset_id), str(user_id))
    if st.session_state.get("_audit_last_person") == seen:
        return
    audit.record(audit.audit_path(path), "person_viewed", st.session_state.get(ACCOUNT_KEY),
                 dataset_id=int(dataset_id), user_id=str(user_id))
    st.session_state["_audit_last_person"] = seen


def csv_download(frame: pd.DataFrame | Callable[[], pd.DataFrame], name: str, *, label: str = "Download CSV",
                 key: str | None = None) -> None:
    """A download button for the data behind a table or chart (a frame, or a function that builds it).

    The CSV is written when the button is clicked (Streamlit's deferred download), not on every
    rerun: writing them all cost every filter change tens of milliseconds for files rarely fetched.
    """

    def to_csv() -> bytes:
        return (frame() if callable(frame) else frame).to_csv(index=False).encode("utf-8")

    st.download_button(label, to_csv, file_name=f"{name}.csv", mime="text/csv", key=key or f"csv-{name}",
                       icon=":material/download:")


def with_hex(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with the int64 `cell` column as H3 hex strings (for CSV export and tables)."""
    if "cell" not in frame:
        return frame
    return frame.assign(cell=[h3.int_to_str(int(c)) for c in frame["cell"]])


def start_page(title: str, *, needs_scores: str | None = None) -> tuple[Config, FilterState] | None:
    """The page title and its inputs, or None after an empty state told the user what to do.

    `needs_scores` is the sentence that explains why the page needs interest vectors; without
    it the page also runs on events that are not scored yet.
    """
    config = app_config()
    st.title(title)
    require_database(config)
    filters = current_filters()
    if TRAINING.locked():
        st.info(f"Not now: {TRAINING_NOTE}.", icon=":material/hourglass_top:")
        return None
    if filters is None:
        from interestgeo.store.file_access import BUSY_READ, writer_active

        if writer_active(config.store.path):  # no filters because a writer holds the file, not for want of data
            st.info(f"Not now: {BUSY_READ}.", icon=":material/hourglass_top:")
            return None
        st.info("No events yet: run `make run` (the NYC demo) or load a CSV on the **Upload** page.")
        return None
    if needs_scores and not is_scored(config):
        st.info(f"{needs_scores}: {SCORE_HINT}.")
        return None
    st.caption(filters.describe())
    return config, filters


def run_guarded(page: Callable[[], None]) -> None:
    """Run a page; an unexpected error becomes one message (the traceback goes to the server log)."""
    from interestgeo.store import StoreBusy

    try:
        page()
    except StoreBusy as exc:  # a writer is committing: not an error, and never DuckDB's lock message
        log.info("page waited for a writer: %s", exc)
        st.info(f"Not now: {md(str(exc))}.", icon=":material/hourglass_top:")
    except Exception as exc:
        log.exception("page failed")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        st.error(f"This page could not be built: {md(first)}. Try other filters or reload; "
                 "the server log has the details.")


def guarded_fragment(fn: Callable[..., None]) -> Callable[..., None]:
    """`st.fragment` with run_guarded's one-sentence error: a fragment reruns alone, outside the
    page's guard, so an error there would otherwise reach the person as Streamlit's own box."""

    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> None:
        run_guarded(lambda: fn(*args, **kwargs))

    return st.fragment(body)


def run_page(page: Callable[[], None]) -> None:
    """A page's entry point: `run_guarded`, after making sure the app's frame ran first."""
    if NAVIGATION_KEY not in st.session_state:
        # app.py did not run first: Streamlit's legacy `pages/` mode served this file directly (a
        # deep link as the very first request after the server started). Start from the app, whose
        # st.navigation switches Streamlit to its page list for good, and have it come back here
        # with the link's filters (`resume_deep_link`): a shared link must open what it shows.
        params = {k: st.query_params.get_all(k) for k in st.query_params}
        st.session_state["_deep_link"] = (f"pages/{Path(page.__code__.co_filename).name}", params)
        st.switch_page("app.py", query_params=params)
    run_guarded(page)


# Set by app.py once its page list exists. Not `_filters`: the filter bar can fail on a bad link
# and leave that unset, and run_page then took the page for a deep link and switched to app.py,
# which navigation mode does not know (a StreamlitPageNotFoundError traceback).
NAVIGATION_KEY = "_navigation"


def resume_deep_link() -> None:
    """In app.py once its page list exists: go on to the page a first request linked to (see run_page)."""
    st.session_state[NAVIGATION_KEY] = True
    link = st.session_state.pop("_deep_link", None)
    if link is not None:
        try:
            st.switch_page(link[0], query_params=link[1])
        except StreamlitPageNotFoundError:  # a page this viewer's list leaves out (User, for a marketer)
            log.info("deep link to %s is not in this viewer's pages", link[0])


def kpi_delta(current: float, previous: float | None) -> str | None:
    """`+12.5%` style change for st.metric; None when there is nothing to compare with."""
    if previous is None or previous == 0:
        return None
    return f"{(current - previous) / previous:+.1%}"
