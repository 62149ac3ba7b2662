"""Scoring: run the trained model over every user's history and store the interest vectors.

What is stored, and why:

* **Per event** (`event_vectors`): the user's interest vector right after each event, plus the
  event's own topic. This is the source of truth: every analytics answer (maps under any filter,
  drift, queries) is a user-weighted average of these, computed on the fly in numpy
  (interestgeo/analytics/ explains why on the fly). 113k events x 384 floats is ~170 MB in DuckDB, read
  back in one Arrow buffer in well under a second and cached by the dashboard. Beside each
  vector, its similarity to each topic (T floats), so shares and maps need not wait for the
  vectors (`ScoredEvents` loading them later).
* **Per user x window** and **per cell x window** at `analytics.stored_resolutions` for
  `analytics.stored_windows` (`user_window_vectors`, `cell_window_vectors`): the same
  user-weighted means (analytics.aggregate_*), precomputed for the CLI, exports and other tools
  that want a table rather than numpy. Stored *without* the k threshold (it depends on the
  reader's config); every reader applies it (Store.window_vectors).
* **Topics** (`analytics_topics`): derived once and then kept, so legends and shares stay
  comparable across runs and dynamic updates (`refresh_topics=True` re-derives them; a changed
  `analytics.topic_phrases` does too).

**Dynamic update** (`since=`): new events arrive (a new ingest: events without vectors) or
events from some time on need re-scoring. Only the affected users' histories are run forward
(their full histories, because a user's vector depends on everything before it), only their
events from the first affected one on are rewritten (earlier vectors cannot change: the model is
causal), and only the affected windows of the aggregates are recomputed. The result equals a
full re-score (tests/test_score.py proves it). No retraining: the model's weights are fixed.

**Which vector.** The vector source is one call, `interest_vectors(source, events)`, where
`source` is anything with `.interest_vectors(events) -> (N, D)`. The product's source is
`load_source`: the trained model read as `ExpectedVenueSource` (the expected text embedding of the
next venue under the model's FULL prediction, in the world of the event's own dataset: world.py),
blended with the user's recent history (`BlendedSource`) by a weight chosen per dataset on that
dataset's own most recent events (calibration.py), which also gives each score run its quality
figure. Why not the model's bare
interest vector: the model scores a venue as interest . text PLUS a pointer over the user's own
past venues (returns are three check-ins in four), so the bare vector only says what a user would
explore. Measured on NYC (1-epoch model, 15k events), MRR of the next event's text by dot product:
bare vector 0.065, history alone 0.184, expected next venue 0.298. Before any model is trained,
`RecencySource` (the history alone) keeps the analytics usable on a fresh upload.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from interestgeo.analytics import Filters, ScoredEvents, aggregate_cell_windows, aggregate_user_windows
from interestgeo.calibration import (
    HISTORY_WEIGHTS,
    SHARPNESS,
    Calibration,
    blend,
    calibrate,
    calibration_cutoff,
    next_event_pairs,
)
from interestgeo.calibration import unit as _unit
from interestgeo.config import Config
from interestgeo.schema import user_keys
from interestgeo.topics import Topics, assign_event_topics, derive_topics, topic_similarities, topics_from_phrases
from interestgeo.windows import window_floor

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = [
    "VectorSource",
    "RecencySource",
    "BlendedSource",
    "ExpectedVenueSource",
    "ScoreReport",
    "interest_vectors",
    "load_source",
    "last_run_source",
    "source_label",
    "source_words",
    "score_store",
    "ChunkRunner",
    "ChunkScores",
    "ChunkState",
    "TextTable",
    "chunk_state",
    "local_chunks",
    "process_chunks",
    "score_chunk",
    "adapt_to_dataset",
    "HISTORY_WEIGHTS",
    "Calibration",
]

# Users are scored in chunks of about this many events, so the progress bar moves and memory stays flat.
_CHUNK_EVENTS = 20_000


class VectorSource(Protocol):
    """Anything that turns event histories into per-event interest vectors (the model does)."""

    name: str

    def interest_vectors(self, events: pd.DataFrame) -> np.ndarray: ...


def interest_vectors(source: VectorSource, events: pd.DataFrame, needed: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float32 L2-normalised interest vectors of `events` (store.events() format): the one call.

    Row i is the user's interest right after event i, computed from that user's events up to i.
    `needed` (N,) bool: only these rows are wanted (the others may come back as zeros); sources
    that can skip work for the rest (`accepts_needed`) do.
    """
    if needed is not None and getattr(source, "accepts_needed", False):
        vectors = np.asarray(source.interest_vectors(events, needed=needed), dtype=np.float32)  # type: ignore[call-arg]
    else:
        vectors = np.asarray(source.interest_vectors(events), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(events):
        raise ValueError(f"{source.name} returned vectors of shape {vectors.shape} for {len(events)} events")
    if needed is None:
        return _unit(vectors)
    vectors[needed] = _unit(vectors[needed])  # an update's long context: only its new rows are wanted
    return vectors


class RecencySource:
    """Baseline interest: the decayed mean of the user's past event text embeddings.

    v_i = normalise(sum_{j <= i} exp(-(t_i - t_j) / half_life * ln 2) * text_j): what the user did
    lately, in the text space, with no training. Used when no model is trained yet.
    """

    name = "recency"

    def __init__(self, text_vectors: Callable[[list[str]], np.ndarray], half_life_days: float = 7.0) -> None:
        self._text_vectors = text_vectors
        self.half_life_days = half_life_days

    def interest_vectors(self, events: pd.DataFrame) -> np.ndarray:
        codes, unique = pd.factorize(events["text"].astype(str))
        texts = self._text_vectors(list(unique))  # (U, D): one lookup per distinct text, not per event
        out = np.zeros((len(events), texts.shape[1]), dtype=np.float32)
        seconds = events["ts"].to_numpy("datetime64[ns]").astype(np.int64) / 1e9
        users = user_keys(events).to_numpy()
        rate = np.log(2.0) / (self.half_life_days * 86400.0)
        state = np.zeros(texts.shape[1], dtype=np.float64)
        for i in range(len(events)):
            if i == 0 or users[i] != users[i - 1]:
                state[:] = 0.0
            else:
                state *= np.exp(-rate * max(seconds[i] - seconds[i - 1], 0.0))
            state += texts[codes[i]]
            out[i] = state
        return out




def _unit_rows(x: np.ndarray, needed: np.ndarray | None) -> np.ndarray:
    """_unit of every row, or (in place, float32 x) of the `needed` rows only (the others stay as they are)."""
    if needed is None:
        return _unit(x)
    x = np.asarray(x, dtype=np.float32)
    x[needed] = _unit(x[needed])
    return x


class BlendedSource:
    """The model's interest vector blended with the user's recent history, both in the text space.

    Why: the model scores a next venue as interest . text(venue) PLUS a pointer over the user's
    own past events (returns, about three check-ins in four) and count/transition/distance terms.
    Its text-space vector therefore describes what a user would *explore* and can point away from
    where they keep going (on the tiny test model the just-visited venue ranks last). Analytics asks
    what people are into, returns included, so the stored vector is
    normalise((1 - w) * model + w * history) with w per dataset (`weights`, chosen by calibration
    on the dataset's own recent events) or `analytics.history_weight` for all when set (0 = model
    only); history = RecencySource. Explanations run through this same object, so what they
    explain is exactly what is stored.
    """

    def __init__(
        self, model: Any, text_vectors: Callable[[list[str]], np.ndarray], weight: float | None, half_life_days: float,
    ) -> None:
        self.model = model
        self.history = RecencySource(text_vectors, half_life_days)
        self.weight = None if weight is None else float(weight)  # fixed for every dataset (config)
        self.weights: dict[int, float] = {}  # per dataset id, when not fixed (calibration sets them)
        self.name = model.name
        self.checkpoint = getattr(model, "checkpoint", None)
        self.max_len = getattr(model, "max_len", None)  # the events of history the model reads

    def weight_of(self, dataset_id: int) -> float:
        """The history weight of one dataset's vectors."""
        if self.weight is not None:
            return self.weight
        if int(dataset_id) not in self.weights:
            raise LookupError(f"dataset {dataset_id} has no history weight yet: run `interestgeo score`")
        return self.weights[int(dataset_id)]

    def row_weights(self, events: pd.DataFrame) -> np.ndarray:
        """(N,) each event's history weight (its dataset's)."""
        ds = events["dataset_id"].to_numpy()
        out = np.empty(len(ds))
        for d in np.unique(ds):
            out[ds == d] = self.weight_of(int(d))
        return out

    def use_cutoffs(self, cutoffs: dict[int, pd.Timestamp]) -> None:
        if hasattr(self.model, "use_cutoffs"):
            self.model.use_cutoffs(cutoffs)

    def blend_rows(self, model: np.ndarray, history: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """`blend` with a weight per row (each event's dataset's)."""
        out = np.empty_like(model)
        for w in np.unique(weights):
            rows = weights == w
            out[rows] = blend(model[rows], history[rows], float(w))
        return out

    accepts_needed = True

    def interest_vectors(
        self, events: pd.DataFrame, neutralise_spacetime: bool = False, needed: np.ndarray | None = None
    ) -> np.ndarray:
        weights = self.row_weights(events)
        kwargs: dict[str, Any] = {"neutralise_spacetime": neutralise_spacetime}
        if needed is not None and getattr(self.model, "accepts_needed", False):
            kwargs["needed"] = needed
        model = _unit_rows(np.asarray(self.model.interest_vectors(events, **kwargs)), needed)
        if (weights <= 0).all():
            return model
        history = _unit_rows(self.history.interest_vectors(events), needed)
        if needed is None:
            return self.blend_rows(model, history, weights)
        model[needed] = self.blend_rows(model[needed], history[needed], weights[needed])
        return model

    def last_interest_vectors(self, events: pd.DataFrame, neutralise_spacetime: bool = False) -> np.ndarray:
        """(users, D): each user's vector after their last event (the model part computed for it only)."""
        keys = user_keys(events).to_numpy()
        last = np.append(np.flatnonzero(keys[1:] != keys[:-1]), len(keys) - 1)
        weights = self.row_weights(events)[last]
        if hasattr(self.model, "last_interest_vectors"):
            model = _unit(np.asarray(self.model.last_interest_vectors(events, neutralise_spacetime)))
        else:
            model = _unit(np.asarray(self.model.interest_vectors(events, neutralise_spacetime=neutralise_spacetime)))[last]
        if (weights <= 0).all():
            return model
        return self.blend_rows(model, _unit(self.history.interest_vectors(events))[last], weights)

    def attention_rollup(self, user_events: pd.DataFrame) -> np.ndarray:
        return self.model.attention_rollup(user_events)

    def next_venues(self, user_events: pd.DataFrame, k: int = 10) -> pd.DataFrame:
        """The model's top-k next venues with probabilities (see InterestScorer.next_venues)."""
        return self.model.next_venues(user_events, k)


class ExpectedVenueSource:
    """The model's whole next-event prediction as one text-space vector.

    v_i = sum_venues p(venue | events <= i) * text(venue): the expected text embedding of the next
    venue under the model's full output distribution (the interest . text scores AND its pointer
    over the user's own past venues, counts, transitions and distances). A phrase's dot product
    with it is the expected similarity of the user's next venue to the phrase, returns included,
    which the model's bare interest vector cannot say (returns bypass it). Computed by
    InterestScorer.expected_venue_vectors (the model's windows and prediction head live there).
    Per dataset, p may be sharpened (p^a renormalised, model.sharpen) by the a its calibration chose.
    """

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.name = scorer.name
        self.checkpoint = getattr(scorer, "checkpoint", None)
        self.max_len = scorer.max_len
        self.sharpness: dict[int, float] = {}  # per dataset id (1 where missing)

    accepts_needed = True

    def interest_vectors(
        self, events: pd.DataFrame, neutralise_spacetime: bool = False, needed: np.ndarray | None = None
    ) -> np.ndarray:
        vectors = self.scorer.expected_venue_vectors(events, neutralise_spacetime, needed=needed, sharpness=self.sharpness)
        return _unit_rows(vectors, needed)

    def variants(self, events: pd.DataFrame, needed: np.ndarray, sharpness: tuple[float, ...]) -> np.ndarray:
        """(S, needed rows, D) unit vectors of the `needed` rows at each sharpness (calibration)."""
        out = self.scorer.expected_venue_vectors(events, needed=needed, sharpness=sharpness)[:, needed]
        return np.stack([_unit(v) for v in out])

    def last_interest_vectors(self, events: pd.DataFrame, neutralise_spacetime: bool = False) -> np.ndarray:
        """(users, D): each user's vector after their LAST event only (explanations need no more)."""
        return _unit(self.scorer.expected_venue_vectors(
            events, neutralise_spacetime, last_only=True, sharpness=self.sharpness))

    def attention_rollup(self, user_events: pd.DataFrame) -> np.ndarray:
        return self.scorer.attention_rollup(user_events)

    def next_venues(self, user_events: pd.DataFrame, k: int = 10) -> pd.DataFrame:
        return self.scorer.next_venues(user_events, k)


def load_source(
    store: Store, config: Config, checkpoint_id: int | None = None, encoder: Any | None = None
) -> BlendedSource:
    """The trained model of the store (latest checkpoint unless one is named), blended with history.

    Raises LookupError with a one-line message when no model has been trained.
    """
    from interestgeo.model import CheckpointError, InterestScorer, load_checkpoint

    try:
        checkpoint = load_checkpoint(store, checkpoint_id)
    except CheckpointError as exc:
        raise LookupError(f"no trained model ({exc}): run `interestgeo train` first") from None
    if encoder is None:
        from interestgeo.text import encoder_for

        encoder = encoder_for(config.text)
    if checkpoint.text_model_id and checkpoint.text_model_id != encoder.model_id:
        raise LookupError(
            f"checkpoint {checkpoint.id} was trained on text vectors of {checkpoint.text_model_id!r}, but this store's "
            f"text model is {encoder.model_id!r}: train a model for it (`interestgeo train`) or switch the text model back"
        )
    model = InterestScorer(store, checkpoint, encoder=encoder, use_adapted=True)  # one text encoder for both
    source = BlendedSource(
        ExpectedVenueSource(model), _text_vectors_fn(store, encoder), config.analytics.history_weight,
        config.analytics.history_half_life_days,
    )
    # the weights the stored vectors were made with, when they came from this model
    base = source_label(source).rsplit("+", 1)[0] + "+"
    latest = store.latest_score_source()
    if source.weight is None and latest is not None and latest.startswith(base + "history"):
        source.weight = float(latest[len(base + "history"):])  # scored with a weight fixed then
    calibrations = store.calibrations()
    mine = calibrations[calibrations["source"] == source_label(source)]
    source.weights = dict(zip(mine["dataset_id"].astype(int), mine["history_weight"].astype(float)))
    source.model.sharpness.update(zip(mine["dataset_id"].astype(int), mine["sharpness"].astype(float)))
    return source


def last_run_source(store: Store, config: Config, encoder: Any) -> VectorSource | None:
    """The source of the store's last score run, rebuilt, to score new events as the others were
    (no retraining): the recency baseline, or the latest trained model blended with history.

    None before the first score run. Raises LookupError (or FileNotFoundError) as `load_source`
    does when that run's model cannot be loaded.
    """
    runs = store.score_runs()
    if runs.empty:
        return None
    if str(runs["source"].iloc[0]) == RecencySource.name:
        return RecencySource(_text_vectors_fn(store, encoder))
    return load_source(store, config, encoder=encoder)


def source_label(source: VectorSource) -> str:
    """Which vectors these are: checkpoint id and history weight (names repeat across retrainings)."""
    checkpoint = getattr(source, "checkpoint", None)
    label = f"{source.name}#{checkpoint.id}" if checkpoint is not None else source.name
    scorer = getattr(getattr(source, "model", None), "scorer", None)  # BlendedSource > ExpectedVenueSource > scorer
    for dataset_id, adapted in sorted(getattr(scorer, "adapted", {}).items()):
        label += f"+{adapted.name}#{adapted.id}"  # datasets scored by their adapted checkpoints
    if not isinstance(source, BlendedSource):
        return label
    return f"{label}+history{source.weight:g}" if source.weight is not None else f"{label}+calibrated"


# A source id as `source_label` writes it: name, checkpoint id, adapted checkpoints, the history blend.
_SOURCE_ID = re.compile(
    r"(?P<name>[\w-]+)(?:#(?P<id>\d+))?(?P<adapted>(?:\+adapted:[^#+]+#\d+)*)"
    r"(?:\+history(?P<weight>[\d.]+|\?)|\+calibrated)?"
)


def source_words(label: str) -> str:
    """`model#1+history0` -> "checkpoint 1": a score run's source id (`source_label`) as a reader says it.

    Recency, and any id not in `source_label`'s form, stay as they are.
    """
    match = _SOURCE_ID.fullmatch(label)
    if match is None or match["name"] == RecencySource.name:
        return label
    words = f"checkpoint {match['id']}" if match["id"] else match["name"]
    if match["adapted"]:
        words += " + adapted"
    weight = match["weight"]
    return words if weight in (None, "0", "?") else f"{words} + {weight} history"


@dataclass
class ScoreReport:
    """What one `interestgeo score` run did."""

    source: str
    mode: str  # "full" or "update"
    events: int  # events whose vectors were (re)written
    users: int  # users whose histories were run forward
    history_events: int  # events run through the model (the affected users' whole histories)
    elapsed_s: float
    topics: int
    topics_source: str
    since: str | None
    # per dataset (name): the blend chosen and how the stored vectors anticipate next events there
    calibrations: dict[str, Calibration] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.history_events / max(self.elapsed_s, 1e-9)

    @property
    def seconds_per_1000(self) -> float:
        """Wall time per 1,000 (re)scored events (the dynamic-update figure)."""
        return 1000.0 * self.elapsed_s / max(self.events, 1)

    def quality_lines(self) -> list[str]:
        """One sentence per calibrated dataset (calibration.Calibration.sentence)."""
        return [c.sentence(name) for name, c in self.calibrations.items()]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["calibrations"] = {name: {**c.to_dict(), "sentence": c.sentence(name)} for name, c in self.calibrations.items()}
        out["events_per_s"] = self.events_per_s
        out["seconds_per_1000"] = self.seconds_per_1000
        return out


# ---------------------------------------------------------------------------- one chunk of users
class TextTable:
    """The text vectors of a fixed set of texts, looked up without a store or an encoder.

    Why: a chunk of users is scored where no store is open (a worker process, a Ray actor), so
    every text the chunks can meet is embedded once, before them (`chunk_state`), and travels
    with the state. Picklable (a pandas Index and an array).
    """

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.index = pd.Index(texts)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.index.is_unique or len(self.index) != len(self.vectors):
            raise ValueError("a text table needs one vector per distinct text")

    def __call__(self, texts: list[str]) -> np.ndarray:
        pos = self.index.get_indexer(pd.Index(texts, dtype=object))
        if (pos < 0).any():
            first = texts[int(np.flatnonzero(pos < 0)[0])]
            raise LookupError(f"{int((pos < 0).sum())} texts were not embedded for this run (e.g. {first!r})")
        return self.vectors[pos]


@dataclass
class ChunkState:
    """Everything `score_chunk` reads, built once per run by `chunk_state` (worlds built, datasets
    calibrated, topics chosen, texts embedded); picklable when built with `detach=True`."""

    source: VectorSource
    topics: Topics
    text_vectors: Callable[[list[str]], np.ndarray]
    config: Config


@dataclass
class ChunkScores:
    """What `score_chunk` returns for one chunk of whole users.

    Per event (the chunk's rows in order, or its `needed` rows): ids, topic, unit vector and topic
    similarities. Per chunk (full runs only, empty with `needed`): the user x window vectors of its
    users, and for every stored resolution x window its cells' SUMS of per-user mean vectors with
    their user and event counts: a cell's users are split over chunks, and the user-weighted mean
    of a cell is (sum over chunks of these sums) / (sum of users), so chunks merge exactly.
    """

    dataset_id: np.ndarray  # (n,) int32
    event_id: np.ndarray  # (n,) int64
    topic: np.ndarray  # (n,) int16
    vectors: np.ndarray  # (n, D) float32 L2-normalised
    topic_sims: np.ndarray  # (n, T) float32
    user_windows: pd.DataFrame  # dataset_id, user_id, window_size, window_start, events
    user_window_vectors: np.ndarray  # (U, D) float32 L2-normalised
    cell_windows: pd.DataFrame  # dataset_id, resolution, window_size, window_start, cell, events, users
    cell_window_sums: np.ndarray  # (G, D) float32 sum over the chunk's users of their mean vector there

    def __len__(self) -> int:
        return len(self.event_id)


def score_chunk(state: ChunkState, events: pd.DataFrame, needed: np.ndarray | None = None) -> ChunkScores:
    """Score one chunk of users: `events` in store.events() format and order, holding WHOLE user
    histories (a vector depends on the user's earlier events only, never on other users).

    Pure given the state (the same events give the same numbers wherever it runs: locally, in a
    worker process, in a Ray actor). `needed` (N,) bool: only those rows are returned (a dynamic
    update's new events; the rest is context) and no aggregates.
    """
    events = events.reset_index(drop=True)
    vectors = interest_vectors(state.source, events, needed)
    rows = events if needed is None else events.loc[needed].reset_index(drop=True)
    if needed is not None:
        vectors = vectors[needed]
    topics = state.topics
    event_topics = _event_topics(topics, state.text_vectors, rows)
    sims = topic_similarities(vectors, topics)
    dim = vectors.shape[1]
    user_frames, user_vectors, cell_frames, cell_sums = [], [], [], []
    if needed is None and len(rows):
        scored = ScoredEvents(rows.assign(topic=event_topics), vectors, topics, state.config, topic_sims=sims)
        for dataset_id in np.unique(scored.dataset_ids):
            for window in state.config.analytics.stored_windows:
                filters = Filters(datasets=(int(dataset_id),))
                frame, vecs = aggregate_user_windows(scored, filters, window)
                user_frames.append(frame.assign(window_size=window))
                user_vectors.append(vecs)
                for resolution in state.config.analytics.stored_resolutions:
                    frame, vecs = aggregate_cell_windows(scored, filters, resolution, window)
                    sums = vecs * (frame["coherence"].to_numpy(np.float32) * frame["users"].to_numpy(np.float32))[:, None]
                    cell_frames.append(frame.drop(columns=["coherence"]).assign(
                        dataset_id=np.int32(dataset_id), resolution=np.int8(resolution), window_size=window))
                    cell_sums.append(sums.astype(np.float32))
    return ChunkScores(
        dataset_id=rows["dataset_id"].to_numpy(np.int32),
        event_id=rows["event_id"].to_numpy(np.int64),
        topic=np.asarray(event_topics, dtype=np.int16),
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        topic_sims=np.ascontiguousarray(sims, dtype=np.float32),
        user_windows=_frames(user_frames, _USER_WINDOW_COLUMNS),
        user_window_vectors=np.concatenate(user_vectors) if user_vectors else np.zeros((0, dim), np.float32),
        cell_windows=_frames(cell_frames, _CELL_WINDOW_COLUMNS),
        cell_window_sums=np.concatenate(cell_sums) if cell_sums else np.zeros((0, dim), np.float32),
    )


_USER_WINDOW_COLUMNS = ["dataset_id", "user_id", "window_size", "window_start", "events"]
_CELL_WINDOW_COLUMNS = ["dataset_id", "resolution", "window_size", "window_start", "cell", "events", "users"]


def _frames(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat([f[columns] for f in frames], ignore_index=True)


def chunk_state(
    store: Store, config: Config, source: VectorSource, topics: Topics, datasets: list[int],
    text_vectors: Callable[[list[str]], np.ndarray], *, detach: bool = False,
) -> ChunkState:
    """The state `score_chunk` needs for `datasets` (calibrate them first: the source's weights and
    sharpness are read here). With `detach`: no store or encoder inside (worlds built now, every
    event text of the datasets embedded into a TextTable), so it pickles for another process."""
    if not detach:
        return ChunkState(source, topics, text_vectors, config)
    texts = store.distinct_texts(datasets)
    table = TextTable(texts, text_vectors(texts) if texts else np.zeros((0, topics.vectors.shape[1]), np.float32))
    return ChunkState(detach_source(source, datasets, table), topics, table, config)


def detach_source(source: VectorSource, datasets: list[int], table: TextTable) -> VectorSource:
    """A copy of `source` that reads texts from `table` and holds no store (see chunk_state)."""
    if isinstance(source, RecencySource):
        return RecencySource(table, source.half_life_days)
    if isinstance(source, BlendedSource):
        out = BlendedSource(detach_source(source.model, datasets, table), table, source.weight, source.history.half_life_days)
        out.weights = dict(source.weights)
        out.name, out.checkpoint, out.max_len = source.name, source.checkpoint, source.max_len
        return out
    if isinstance(source, ExpectedVenueSource):
        out_ev = ExpectedVenueSource(source.scorer.detached(datasets, table))
        out_ev.sharpness = dict(source.sharpness)
        return out_ev
    raise TypeError(f"cannot detach a {type(source).__name__} from its store")


def local_chunks(state: ChunkState, chunks: Iterable[pd.DataFrame]) -> Iterator[ChunkScores]:
    """The local engine: `score_chunk` over the chunks in this process, in order."""
    for events in chunks:
        yield score_chunk(state, events)


def process_chunks(workers: int) -> ChunkRunner:
    """The local engine over `workers` processes (results in the order they finish).

    Why processes and not torch threads: the model's (rows, venues) steps are many small
    memory-bound passes, and on 2 shared cores two OpenMP threads scored slower than one (they wait
    for each other on every pass); two processes each scoring its own users with one thread use
    both cores. Each worker reads the detached state once; at most two chunks per worker are in
    flight, so memory stays bounded.

    The state (worlds, every text's vector: hundreds of MB) goes to the workers through a file, not
    the spawn pipe: a worker that died while the parent wrote it there left the parent blocked on
    the pipe (seen once in a test run); with a path as the only argument, the pool notices a dead
    worker and raises BrokenProcessPool.
    """
    def run(state: ChunkState, chunks: Iterable[pd.DataFrame]) -> Iterator[ChunkScores]:
        import multiprocessing
        import pickle
        import tempfile
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

        context = multiprocessing.get_context("spawn")  # no forked torch / DuckDB state
        with tempfile.TemporaryDirectory(prefix="interestgeo-state-") as folder:
            path = Path(folder) / "state.pickle"
            path.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                                     initargs=(str(path),)) as pool:
                pending: set[Future[ChunkScores]] = set()
                for events in chunks:
                    pending.add(pool.submit(_worker_score, events))
                    if len(pending) >= 2 * workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        yield from (f.result() for f in done)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)

    return run


_WORKER_STATE: ChunkState | None = None  # a worker process's state (process_chunks)


def _worker_start(state_path: str) -> None:
    import pickle

    global _WORKER_STATE
    _WORKER_STATE = pickle.loads(Path(state_path).read_bytes())


def _worker_score(events: pd.DataFrame) -> ChunkScores:
    assert _WORKER_STATE is not None
    return score_chunk(_WORKER_STATE, events)


def _default_runner(config: Config, chunks: int) -> ChunkRunner | None:
    """process_chunks when the config (or the CPU count, for a run of 4+ chunks) asks for several
    processes; None (in this process) otherwise."""
    import os

    workers = config.analytics.score_workers
    if workers is None:
        workers = (os.cpu_count() or 1) if chunks >= 4 else 1
    return process_chunks(workers) if workers > 1 else None


def _text_vectors_fn(store: Store, encoder: Any) -> Callable[[list[str]], np.ndarray]:
    from interestgeo.text import embed_texts

    return lambda texts: embed_texts(store, encoder, texts, warn=None)


def _topics(
    store: Store, config: Config, text_vectors: Callable[[list[str]], np.ndarray], events: pd.DataFrame, refresh: bool
) -> tuple[Topics, bool]:
    """Stored topics unless missing, refreshed, or the configured phrases changed; and whether
    they are new (the caller writes new ones in its transaction)."""
    phrases = tuple(config.analytics.topic_phrases)
    stored = None if refresh else store.analytics_topics()
    if stored is not None and (not phrases or (stored.source == "phrases" and stored.labels == phrases)):
        return stored, False
    if phrases:
        topics = topics_from_phrases(phrases, text_vectors(list(phrases)))
    else:
        distinct = events.drop_duplicates("text")
        topics = derive_topics(
            distinct["text"].tolist(),
            text_vectors(distinct["text"].tolist()),
            distinct["category_path"].tolist() if "category_path" in distinct else None,
            min_path_share=config.analytics.category_path_min_share,
            clusters=config.analytics.topic_clusters,
            seed=config.model.seed,
        )
    return topics, True


def _event_topics(topics: Topics, text_vectors: Callable[[list[str]], np.ndarray], events: pd.DataFrame) -> np.ndarray:
    paths = events["category_path"].tolist() if "category_path" in events else None
    return assign_event_topics(topics, text_vectors(events["text"].astype(str).tolist()), paths)


def _write_aggregates(
    store: Store, config: Config, scored: ScoredEvents, datasets: list[int], from_day: dict[int, np.datetime64] | None
) -> None:
    """(Re)write the user x window and cell x window vectors of `datasets` (from a local day on)."""
    for dataset_id in datasets:
        start = None if from_day is None else from_day[dataset_id]
        for window in config.analytics.stored_windows:
            # windows overlapping the start day are recomputed whole: start from the window's start
            window_from = None if start is None else window_floor(start, window)
            filters = Filters(
                datasets=(dataset_id,),
                date_from=None if window_from is None else pd.Timestamp(window_from).date(),
            )
            frame, vectors = aggregate_user_windows(scored, filters, window)
            store.replace_window_vectors(
                "user_window_vectors",
                window,
                {
                    "dataset_id": np.full(len(frame), dataset_id, dtype=np.int32),
                    "user_id": frame["user_id"].astype(str).tolist(),
                    "window_size": [window] * len(frame),
                    "window_start": frame["window_start"].to_numpy("datetime64[us]"),
                    "events": frame["events"].to_numpy(np.int32),
                },
                vectors,
                datasets=[dataset_id],
                from_start=window_from,
            )
            # every resolution's cells in one replace (one DELETE + INSERT instead of one per resolution)
            resolutions = list(config.analytics.stored_resolutions)
            if not resolutions:
                continue
            parts = [(r, *aggregate_cell_windows(scored, filters, r, window)) for r in resolutions]
            filled = [part for part in parts if len(part[1])] or parts[:1]
            cells = pd.concat([f for _, f, _ in filled], ignore_index=True)
            cell_vectors = np.concatenate([v for _, _, v in filled])
            cells = cells.assign(
                dataset_id=dataset_id,
                resolution=np.repeat(np.array([r for r, _, _ in filled], dtype=np.int8), [len(f) for _, f, _ in filled]),
            )
            columns = _cell_window_columns(cells, window)
            store.replace_window_vectors(
                "cell_window_vectors", window, columns, cell_vectors,
                datasets=[dataset_id], from_start=window_from, resolution=resolutions,
            )


def score_store(
    store: Store,
    config: Config,
    *,
    source: VectorSource | None = None,
    encoder: Any | None = None,
    datasets: list[int] | None = None,
    since: datetime | str | None = None,
    update: bool = False,
    refresh_topics: bool = False,
    progress: Callable[[float, str], None] | None = None,
    runner: ChunkRunner | None = None,
) -> ScoreReport:
    """Score the store's events and store vectors, topics and window aggregates.

    Full (default): every event of `datasets` (all when None). Update (`update=True` or a `since`
    time): only users with unscored events or events at/after `since`, from their first such event
    on. `source` defaults to the latest trained checkpoint; `encoder` (a TextEncoder) to the
    configured one. Raises LookupError with a one-line message when there is nothing to score with.

    A full run scores chunks of whole users (`score_chunk`) with `runner` (default `local_chunks`;
    another engine gets a detached, picklable state), stages their results as Parquet beside the
    database and writes everything in one short transaction at the end.
    """
    started = time.perf_counter()
    if encoder is None:
        from interestgeo.text import encoder_for

        encoder = encoder_for(config.text)
    if source is None:
        source = load_source(store, config, encoder=encoder)
    text_vectors = _text_vectors_fn(store, encoder)
    store.ensure_analytics_schema()
    since_ts = None if since is None else pd.Timestamp(since)
    if since_ts is not None and since_ts.tzinfo is None:
        since_ts = since_ts.tz_localize("UTC")
    if update or since_ts is not None:
        previous = store.latest_score_source()
        if previous is not None and previous != source_label(source):
            raise LookupError(
                f"stored vectors come from {previous!r}, not {source_label(source)!r}: "
                "run a full `interestgeo score` instead of an update"
            )
        topics = store.analytics_topics() if previous is not None else None
        if topics is not None:
            return _score_update(store, config, source, text_vectors, topics, since_ts, started, progress)
    events = store.events(datasets)
    if events.empty:
        raise LookupError("no events to score: ingest a CSV first (`interestgeo ingest FILE`)")
    dataset_ids = sorted(int(d) for d in events["dataset_id"].unique())
    calibrations: dict[int, Calibration] = {}
    if isinstance(source, BlendedSource):
        for dataset_id, rows in _dataset_slices(events):
            calibrations[dataset_id] = _calibrate(
                source, events.iloc[rows].reset_index(drop=True), dataset_id, text_vectors, config
            )
    topics, topics_fresh = _topics(store, config, text_vectors, events, refresh_topics)
    bounds = _chunk_bounds(events)
    runner = runner or _default_runner(config, len(bounds) - 1)
    try:
        state = chunk_state(store, config, source, topics, dataset_ids, text_vectors, detach=runner is not None)
    except TypeError:  # a source that cannot leave this process (a caller's own): score here
        runner, state = None, chunk_state(store, config, source, topics, dataset_ids, text_vectors)
    chunks = (events.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:]))
    bounds_users = np.flatnonzero(_new_user(events))
    with _Staging(store.path) as staging:
        cells = _CellWindowSums()
        for result in (runner or local_chunks)(state, chunks):
            staging.add(result)
            cells.add(result.cell_windows, result.cell_window_sums)
            if progress is not None:
                progress(staging.events / len(events), f"{staging.events:,} of {len(events):,} events")
        if staging.events != len(events):
            raise RuntimeError(f"the scoring engine returned {staging.events:,} of {len(events):,} events")
        users = len(bounds_users)
        # one short transaction: what the chunks wrote to Parquet goes in at once (all or nothing)
        with store.transaction():
            if topics_fresh:
                store.write_topics(topics.labels, topics.source, topics.vectors)
            store.delete_event_vectors(datasets)
            store.insert_parquet("event_vectors", staging.files("event_vectors"))
            for window in config.analytics.stored_windows:
                store.replace_window_vectors("user_window_vectors", window, {}, np.zeros((0, 0)), datasets=dataset_ids)
            store.insert_parquet("user_window_vectors", staging.files("user_window_vectors"))
            _write_cell_windows(store, config, cells.result(), dataset_ids)
            _write_calibrations(store, source, calibrations.values())
            elapsed = time.perf_counter() - started
            store.record_score_run(source_label(source), None, len(events), users, elapsed)
    return ScoreReport(
        source_label(source), "full", len(events), users, len(events), elapsed,
        len(topics), topics.source, None, _by_name(store, calibrations),
    )


ChunkRunner = Callable[[ChunkState, Iterable[pd.DataFrame]], Iterable[ChunkScores]]
"""An engine: scores chunks of whole users (`score_chunk` on each), yielding one ChunkScores per
chunk in any order. `local_chunks` is the local one; ray_engine.py holds one over Ray actors."""


def _chunk_bounds(events: pd.DataFrame, counted: np.ndarray | None = None) -> list[int]:
    """Row bounds of chunks of whole users of about _CHUNK_EVENTS events (of `counted` rows when given)."""
    if len(events) == 0:
        return [0]
    starts = np.flatnonzero(_new_user(events))
    done = np.arange(len(events) + 1) if counted is None else np.r_[0, np.cumsum(counted)]  # counted rows before
    bounds = [0]
    for s in starts[1:]:
        if done[s] - done[bounds[-1]] >= _CHUNK_EVENTS:
            bounds.append(int(s))
    bounds.append(len(events))
    return bounds


def _new_user(events: pd.DataFrame) -> np.ndarray:
    """(N,) bool: row i is its user's first (events in store.events() order)."""
    new = np.ones(len(events), dtype=bool)
    if len(events) > 1:
        dataset = events["dataset_id"].to_numpy()
        user = events["user_id"].to_numpy(dtype=object)
        new[1:] = (dataset[1:] != dataset[:-1]) | (user[1:] != user[:-1])
    return new


class _Staging:
    """A temporary folder beside the database where a run's chunk results wait as Parquet, so the
    run holds one chunk in memory and the store's write transaction lasts only for the final
    inserts (DuckDB reads Parquet fast). Removed on exit, committed or not."""

    def __init__(self, db_path: Any) -> None:
        import tempfile
        from pathlib import Path

        folder = Path(db_path).resolve().parent if db_path else None
        self.folder = Path(tempfile.mkdtemp(prefix=".interestgeo-score-", dir=folder))
        self._files: dict[str, list[str]] = {"event_vectors": [], "user_window_vectors": []}
        self.events = 0

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)

    def add(self, result: ChunkScores) -> None:
        n = len(self._files["event_vectors"])
        self._write("event_vectors", n, {
            "dataset_id": result.dataset_id, "event_id": result.event_id, "topic": result.topic,
        }, vector=result.vectors, topic_sims=result.topic_sims)
        if len(result.user_windows):
            w = result.user_windows
            self._write("user_window_vectors", n, {
                "dataset_id": w["dataset_id"].to_numpy(np.int32), "user_id": w["user_id"].astype(str).to_numpy(object),
                "window_size": w["window_size"].astype(str).to_numpy(object),
                "window_start": w["window_start"].to_numpy("datetime64[us]"), "events": w["events"].to_numpy(np.int32),
            }, vector=result.user_window_vectors)
        self.events += len(result)

    def _write(self, table: str, n: int, columns: dict[str, np.ndarray], **matrices: np.ndarray) -> None:
        import pyarrow.parquet as pq

        path = self.folder / f"{table}-{n:06d}.parquet"
        pq.write_table(_arrow_with_vectors(columns, **matrices), path)
        self._files[table].append(str(path))

    def files(self, table: str) -> list[str]:
        return list(self._files[table])


def _arrow_with_vectors(columns: dict[str, np.ndarray], **matrices: np.ndarray) -> Any:
    """An Arrow table of `columns` plus one list<float32> column per named (n, D) matrix."""
    import pyarrow as pa

    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    for name, matrix in matrices.items():
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        n, d = matrix.shape
        offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
        table = table.append_column(name, pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1))))
    return table


class _CellWindowSums:
    """The cell x window sums of the chunks so far, merged by key now and then (bounded by the
    number of distinct cells x windows, not by the events)."""

    _KEYS = ["dataset_id", "resolution", "window_size", "window_start", "cell"]

    def __init__(self, reduce_rows: int = 200_000) -> None:
        self.frames: list[pd.DataFrame] = []
        self.sums: list[np.ndarray] = []
        self.rows = 0
        self.merged_rows = 0
        self.reduce_rows = reduce_rows

    def add(self, frame: pd.DataFrame, sums: np.ndarray) -> None:
        if not len(frame):
            return
        self.frames.append(frame)
        self.sums.append(np.asarray(sums, dtype=np.float32))
        self.rows += len(frame)
        if self.rows > max(self.reduce_rows, 2 * self.merged_rows):
            self._reduce()

    def _reduce(self) -> None:
        if len(self.frames) <= 1:
            return
        frame = pd.concat(self.frames, ignore_index=True)
        sums = np.concatenate(self.sums)
        group = frame.groupby(self._KEYS, sort=False).ngroup().to_numpy()
        order = np.argsort(group, kind="stable")
        starts = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
        merged = frame.groupby(self._KEYS, sort=False, as_index=False)[["events", "users"]].sum()
        self.frames, self.sums = [merged], [np.add.reduceat(sums[order], starts, axis=0)]
        self.rows = self.merged_rows = len(merged)

    def result(self) -> tuple[pd.DataFrame, np.ndarray]:
        """(frame[keys, events, users, coherence], (G, D) float32 L2-normalised user-weighted means)."""
        self._reduce()
        if not self.frames:
            return pd.DataFrame({c: [] for c in [*self._KEYS, "events", "users", "coherence"]}), np.zeros((0, 0), np.float32)
        frame, sums = self.frames[0].copy(), self.sums[0]
        means = sums / frame["users"].to_numpy(np.float32)[:, None]
        norms = np.linalg.norm(means, axis=1)
        frame["coherence"] = norms.astype(np.float32)
        return frame, (means / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)


def _write_cell_windows(
    store: Store, config: Config, merged: tuple[pd.DataFrame, np.ndarray], datasets: list[int]
) -> None:
    """Replace the cell x window vectors of `datasets` by the merged sums of a full run."""
    resolutions = list(config.analytics.stored_resolutions)
    if not resolutions:
        return
    frame, vectors = merged
    for window in config.analytics.stored_windows:
        rows = (frame["window_size"] == window).to_numpy() if len(frame) else np.zeros(0, dtype=bool)
        store.replace_window_vectors(
            "cell_window_vectors", window, _cell_window_columns(frame.loc[rows], window),
            vectors[rows] if len(frame) else np.zeros((0, 0)), datasets=datasets, resolution=resolutions,
        )


def _cell_window_columns(cells: pd.DataFrame, window: str) -> dict[str, Any]:
    """The cell_window_vectors columns (besides the vector) of a frame of cell x window rows."""
    return {
        "dataset_id": cells["dataset_id"].to_numpy(np.int32),
        "resolution": cells["resolution"].to_numpy(np.int8),
        "window_size": [window] * len(cells),
        "window_start": cells["window_start"].to_numpy("datetime64[us]"),
        "cell": cells["cell"].to_numpy(np.int64),
        "events": cells["events"].to_numpy(np.int32),
        "users": cells["users"].to_numpy(np.int32),
        "coherence": cells["coherence"].to_numpy(np.float32),
    }


def _dataset_slices(events: pd.DataFrame) -> list[tuple[int, slice]]:
    """(dataset id, its rows) of events sorted by dataset first (store.events() order)."""
    ds = events["dataset_id"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1], True])
    return [(int(ds[a]), slice(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:])]


def _sub_progress(
    progress: Callable[[float, str], None] | None, rows: slice, total: int
) -> Callable[[float, str], None] | None:
    """A progress callback for `rows` of `total` events, reporting the whole run's fraction."""
    if progress is None:
        return None
    start, size = rows.start, rows.stop - rows.start
    return lambda fraction, _msg: progress(
        (start + fraction * size) / max(total, 1), f"{int(start + fraction * size):,} of {total:,} events"
    )


def _calibrate(
    source: BlendedSource, events: pd.DataFrame, dataset_id: int, text_vectors: Callable[[list[str]], np.ndarray],
    config: Config,
) -> Calibration:
    """One dataset's calibration, set on `source`: its world's counts stop at the cutoff of its
    most recent tenth, where the history weight (and the model's sharpness) are chosen and the
    quality figure measured. The model runs over the few windows holding the measured pairs
    (every sharpness at once); the chunks then score everything with the chosen values."""
    cutoff = calibration_cutoff(events["ts"])
    source.use_cutoffs({dataset_id: cutoff})
    pairs, _, _ = next_event_pairs(events, cutoff)
    needed = np.zeros(len(events), dtype=bool)
    needed[pairs] = True
    sharpness = getattr(source.model, "sharpness", None)
    options = SHARPNESS if sharpness is not None else (1.0,)
    # the model and the history run over the histories of the users owning a pair only (a few
    # thousand users at most, however big the dataset); the MRR candidates stay all the texts
    owner = np.cumsum(_new_user(events))  # (N,) user number of each row
    users = events.iloc[np.flatnonzero(np.isin(owner, owner[needed]))].reset_index(drop=True)
    rows = needed[np.isin(owner, owner[needed])]
    if hasattr(source.model, "variants"):
        model = source.model.variants(users, rows, options)  # (S, pairs, D)
    else:
        model = _unit(np.asarray(source.model.interest_vectors(users)))[rows][None]
    history = _unit(source.history.interest_vectors(users))[rows]
    calibration = calibrate(
        dataset_id, events, model, history, text_vectors, cutoff, config.analytics.history_weight,
        sharpness=options, rows=np.flatnonzero(needed),
    )
    if source.weight is None:
        source.weights[dataset_id] = calibration.weight
    if sharpness is not None:
        sharpness[dataset_id] = calibration.sharpness
    return calibration


def _write_calibrations(store: Store, source: VectorSource, calibrations: Any) -> None:
    for c in calibrations:
        store.write_calibration(
            c.dataset_id, source_label(source), c.cutoff.to_pydatetime(), c.weight, c.sharpness, c.pairs,
            c.stored_mrr, c.history_mrr, c.model_mrr, c.weights_json(),
        )


def _by_name(store: Store, calibrations: dict[int, Calibration]) -> dict[str, Calibration]:
    names = dict(zip(store.datasets()["dataset_id"].astype(int), store.datasets()["name"]))
    return {names.get(d, str(d)): c for d, c in sorted(calibrations.items())}


def _score_update(
    store: Store,
    config: Config,
    source: VectorSource,
    text_vectors: Callable[[list[str]], np.ndarray],
    topics: Topics,
    since: pd.Timestamp | None,
    started: float,
    progress: Callable[[float, str], None] | None,
) -> ScoreReport:
    affected = store.unscored_events()
    if since is not None:
        affected = pd.concat([affected, store.users_with_events_since(since.to_pydatetime())])
    affected = affected.groupby(["dataset_id", "user_id"], as_index=False)["ts"].min()
    since_text = None if since is None else since.isoformat()
    if affected.empty:
        return ScoreReport(source_label(source), "update", 0, 0, 0, time.perf_counter() - started, 0, "", since_text)
    histories = store.user_histories(affected)
    calibrations: dict[int, Calibration] = {}
    if isinstance(source, BlendedSource):  # a dataset scored for the first time is calibrated first
        for dataset_id in sorted(set(histories["dataset_id"].astype(int)) - set(source.weights)):
            if store.calibration_cutoff(dataset_id) is None or source.weight is None:
                calibrations[dataset_id] = _calibrate(source, store.events([dataset_id]), dataset_id, text_vectors, config)
    first = histories[["dataset_id", "user_id"]].merge(
        affected.astype({"dataset_id": "int32"}), on=["dataset_id", "user_id"], how="left"
    )["ts"]
    keep = (histories["ts"] >= first).to_numpy()  # (aligned Series: no per-row Timestamp objects)
    # earlier events are context only: the model skips the windows and predictions it need not make
    state = chunk_state(store, config, source, topics, sorted(int(d) for d in histories["dataset_id"].unique()), text_vectors)
    bounds = _chunk_bounds(histories, keep)  # chunks of about _CHUNK_EVENTS new events
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        parts.append(score_chunk(state, histories.iloc[a:b], keep[a:b]))
        if progress is not None:
            progress(b / len(histories), f"{int(keep[:b].sum()):,} of {int(keep.sum()):,} events")
    vectors = np.concatenate([p.vectors for p in parts])  # (new events, D)
    event_topics = np.concatenate([p.topic for p in parts])
    sims = np.concatenate([p.topic_sims for p in parts])
    new = histories.loc[keep].reset_index(drop=True)
    from_day = new.groupby("dataset_id")["local_ts"].min().to_numpy("datetime64[D]")
    datasets = sorted(new["dataset_id"].unique().tolist())
    with store.transaction():
        store.write_event_vectors(new["dataset_id"].to_numpy(), new["event_id"].to_numpy(), event_topics, vectors, sims)
        starts = dict(zip(datasets, from_day))
        earliest = min(window_floor(d, w) for d in from_day for w in config.analytics.stored_windows)
        events, stored_vectors = store.scored_events(datasets, pd.Timestamp(earliest).to_pydatetime())
        scored = ScoredEvents(events, stored_vectors, topics, config)
        _write_aggregates(store, config, scored, datasets, starts)
        _write_calibrations(store, source, calibrations.values())
        elapsed = time.perf_counter() - started
        store.record_score_run(source_label(source), since.to_pydatetime() if since is not None else None, len(new), len(affected), elapsed)
    return ScoreReport(
        source_label(source), "update", len(new), len(affected), len(histories), elapsed, len(topics), topics.source,
        since_text, _by_name(store, calibrations),
    )


def adapt_to_dataset(
    store: Store,
    config: Config,
    dataset: str,
    *,
    minutes: float,
    encoder: Any | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[int, ScoreReport]:
    """Fine-tune the newest model on one dataset within `minutes` (early stopping on its own
    validation), register it as that dataset's ("adapted:NAME") and re-score the dataset with it.
    Returns (checkpoint id, the score report with the dataset's new quality figure)."""
    from interestgeo.model import CheckpointError, adapted_name, train_model

    try:
        checkpoint_id = train_model(
            store, config, name=adapted_name(dataset), dataset=dataset, init_from="model", minutes=minutes, log=log,
        )
    except CheckpointError as exc:
        raise LookupError(str(exc)) from None
    dataset_id = store.dataset_id(dataset)
    report = score_store(store, config, encoder=encoder, datasets=[dataset_id], progress=progress)
    return checkpoint_id, report


def fill_missing_similarities(store: Store) -> int:
    """Give every stored vector its topic similarities where it has none (see Store.fill_topic_sims):
    a file scored by an older version then loads in the dashboard without waiting for its vectors."""
    topics = store.analytics_topics()
    if topics is None:
        return 0
    with store.transaction():
        return store.fill_topic_sims(lambda vectors: topic_similarities(vectors, topics))
