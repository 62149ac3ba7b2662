"""Vector sources: what turns a user's events into an interest vector after each event.

`interest_vectors(source, events)` is the one call; `load_source` builds the product's source:
the trained model read as `ExpectedVenueSource` (the expected text embedding of the next venue
under the model's FULL prediction, in the world of the event's own dataset: world.py), blended
with the user's recent history (`BlendedSource`) by a weight chosen per dataset on that dataset's
own most recent events (calibration.py). `RecencySource` (the history alone) keeps the analytics
usable before any model is trained. `source_label` names a source in the store's score runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from interestgeo.calibration import blend
from interestgeo.calibration import unit as _unit
from interestgeo.config import Config
from interestgeo.schema import user_keys

if TYPE_CHECKING:
    from interestgeo.store import Store


class VectorSource(Protocol):
    """Anything that turns event histories into per-event interest vectors (the model does).

    `interest_vectors` returns a fresh array the caller owns: scoring normalises and blends it in
    place (a cached or shared array handed out here would be rescaled)."""

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
        if len(events) == 0:
            return out
        seconds = events["ts"].to_numpy("datetime64[ns]").astype(np.int64) / 1e9
        users = user_keys(events).to_numpy()
        rate = np.log(2.0) / (self.half_life_days * 86400.0)
        # every user's k-th event in one step (users are contiguous runs of rows): as many numpy
        # steps as the longest history instead of one Python step per event, and per user the same
        # float64 operations in the same order as a row-by-row loop
        first = np.r_[True, users[1:] != users[:-1]]
        starts = np.flatnonzero(first)
        owner = np.cumsum(first) - 1  # (N,) run number
        position = np.arange(len(events)) - starts[owner]  # (N,) k of the row in its run
        decay = np.exp(-rate * np.maximum(np.diff(seconds, prepend=seconds[0]), 0.0))  # (N,) from the row before
        state = np.zeros((len(starts), texts.shape[1]), dtype=np.float64)
        order = np.argsort(position, kind="stable")
        steps = np.flatnonzero(np.r_[True, np.diff(position[order]) != 0, True])
        for a, b in zip(steps[:-1], steps[1:]):
            rows = order[a:b]  # the k-th row of each run that has one
            runs = owner[rows]
            if position[rows[0]] > 0:
                state[runs] *= decay[rows][:, None]
            state[runs] += texts[codes[rows]]
            out[rows] = state[runs]
        return out


def _unit_rows(x: np.ndarray, needed: np.ndarray | None) -> np.ndarray:
    """_unit of every row, or of the `needed` rows only (the others stay as they are); in place
    for float32 `x`, which the caller owns (VectorSource)."""
    x = np.asarray(x, dtype=np.float32)
    if needed is None:
        return _unit(x, in_place=True)
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

    def use_events(self, dataset_id: int, events: pd.DataFrame) -> None:
        """The dataset's events, held by the caller: the model builds its world from them instead
        of reading them again (a second copy of millions of rows)."""
        if hasattr(self.model, "use_events"):
            self.model.use_events(dataset_id, events)

    def blend_rows(self, model: np.ndarray, history: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """`blend` with a weight per row (each event's dataset's); `model` may be overwritten."""
        distinct = np.unique(weights)
        if len(distinct) == 1:  # one dataset: in place, no per-row copies
            return blend(np.asarray(model, dtype=np.float32), history, float(distinct[0]), in_place=True)
        out = np.empty_like(model)
        for w in distinct:
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

    def use_cutoffs(self, cutoffs: dict[int, pd.Timestamp]) -> None:
        """Count each dataset's world up to its calibration's cutoff (see InterestScorer.use_cutoffs)."""
        self.scorer.use_cutoffs(cutoffs)

    def use_events(self, dataset_id: int, events: pd.DataFrame) -> None:
        """Build the dataset's world from `events` (all of them, store.events() order) now."""
        self.scorer.world(dataset_id, events)

    def variants(self, events: pd.DataFrame, needed: np.ndarray, sharpness: tuple[float, ...]) -> np.ndarray:
        """(S, needed rows, D) unit vectors of the `needed` rows at each sharpness (calibration)."""
        out = self.scorer.expected_venue_vectors(events, needed=needed, sharpness=sharpness, needed_only=True)
        return _unit(out, in_place=True)

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


def _text_vectors_fn(store: Store, encoder: Any) -> Callable[[list[str]], np.ndarray]:
    from interestgeo.text import embed_texts

    return lambda texts: embed_texts(store, encoder, texts, warn=None)
