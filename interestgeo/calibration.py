"""How well a dataset's stored interest vectors anticipate its people's next events, and the blend.

Why per dataset: a model is good where it was trained and may be worse on someone else's data
(another platform, city or kind of text). Each dataset's stored vector is
normalise((1 - w) * model + w * history) (vectors.BlendedSource), and w is chosen on *that*
dataset's own most recent events, never on other data. The same measurement is the quality
figure every score run reports: "interest vectors anticipate next events N % better than recent
history".

The measure is the product's own use of a vector: a free-text query is a dot product, so the
vector after event i should rank event i + 1's text first among the dataset's distinct texts
(MRR, rank = 1 + texts scored strictly higher). Pairs are those whose next event falls at or
after the dataset's cutoff (world.py: the world's counts stop there, so nothing the vectors
used saw these next events). Half the pairs choose w, the other half report the figure, so the
figure is not flattered by the choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from interestgeo.metrics import next_text_mrr
from interestgeo.schema import user_keys

__all__ = [
    "Calibration",
    "HISTORY_WEIGHTS",
    "SHARPNESS",
    "MIN_PAIRS",
    "blend",
    "calibrate",
    "calibration_cutoff",
    "next_event_pairs",
    "stored_calibrations",
]

# Candidate history weights (0 = the model alone, 1 = the history alone).
HISTORY_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Candidate sharpness of the model's expectation (model.sharpen: 1 = the plain expectation).
SHARPNESS = (1.0, 2.0, 4.0)
# (event, next event) pairs sampled per dataset, evenly spread over the held-out period.
MAX_PAIRS = 5000
# Below this many held-out pairs there is nothing to measure: the default weight is used and said.
MIN_PAIRS = 20
# The weight used when a dataset is too small to calibrate: half model, half history.
DEFAULT_WEIGHT = 0.5
# The most recent share of a dataset's events its quality figure is measured on (and whose counts
# the model's world leaves out: world.py).
HOLDOUT_SHARE = 0.1


def calibration_cutoff(ts: pd.Series) -> pd.Timestamp:
    """The time from which the most recent HOLDOUT_SHARE of these events start (UTC)."""
    values = np.sort(pd.to_datetime(ts, utc=True).to_numpy("datetime64[ns]"))
    at = min(int((1.0 - HOLDOUT_SHARE) * len(values)), len(values) - 1)
    return pd.Timestamp(values[at], tz="UTC")


def unit(x: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32. `in_place` (float32 x): x itself
    is scaled and returned, the same numbers without a (N, D) temporary (scoring's hot path: fresh
    temporaries of millions of floats cost page faults)."""
    norms = np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    if in_place and x.dtype == np.float32:
        return np.divide(x, norms, out=x)
    return (x / norms).astype(np.float32)


def blend(model: np.ndarray, history: np.ndarray, weight: float, in_place: bool = False) -> np.ndarray:
    """normalise((1 - w) * model + w * history) of unit vectors; the end weights pass one side through.
    `in_place` (float32 model): the result is written into `model`, the same numbers."""
    if weight <= 0:
        return model
    if weight >= 1:
        return history
    if in_place and model.dtype == np.float32:
        np.multiply(model, 1.0 - weight, out=model)
        model += weight * history
        return unit(model, in_place=True)
    return unit((1.0 - weight) * model + weight * history)


def next_event_pairs(
    events: pd.DataFrame, cutoff: pd.Timestamp | None = None, limit: int = MAX_PAIRS
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rows i (n,), index of event i + 1's text (n,), the distinct texts): up to `limit` pairs of
    consecutive events of one user whose second event is at or after `cutoff` (all when None),
    evenly spread, in row order."""
    users = user_keys(events).to_numpy()
    distinct, inverse = _sorted_distinct(events["text"].astype(str).to_numpy())
    ok = users[1:] == users[:-1]
    if cutoff is not None:
        ok &= (pd.to_datetime(events["ts"], utc=True) >= cutoff).to_numpy()[1:]
    pairs = np.flatnonzero(ok)
    if len(pairs) > limit:
        pairs = pairs[np.linspace(0, len(pairs) - 1, limit).astype(int)]
    return pairs, inverse[pairs + 1], distinct.tolist()


def _sorted_distinct(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(texts, return_inverse=True) by hashing first: only the distinct texts are sorted
    (5.1M texts, 40k distinct: np.unique 5.1 s, this 1.2 s)."""
    codes, uniques = pd.factorize(texts)
    order = np.argsort(np.asarray(uniques, dtype=object), kind="stable")
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    return np.asarray(uniques, dtype=object)[order], rank[codes]


@dataclass
class Calibration:
    """One dataset's measurement: the weight chosen and how its stored vectors did on held-out pairs."""

    dataset_id: int
    cutoff: pd.Timestamp
    weight: float
    pairs: int  # held-out pairs the figures are measured on (the other half chose the weight)
    stored_mrr: float  # the stored (blended) vectors
    history_mrr: float  # the history alone (w = 1)
    model_mrr: float  # the model alone (w = 0) at the chosen sharpness
    by_weight: dict[float, float] = field(default_factory=dict)  # MRR per weight (chosen sharpness), choosing half
    fixed: bool = False  # the weight came from the config, not from this measurement
    sharpness: float = 1.0  # the model expectation's sharpness chosen with the weight

    @property
    def measured(self) -> bool:
        return bool(self.pairs >= MIN_PAIRS and np.isfinite(self.stored_mrr) and np.isfinite(self.history_mrr))

    @property
    def gain(self) -> float:
        """Stored vectors' MRR over the history's, minus 1 (0.25: 25 % better); NaN when not measured."""
        if not self.measured or self.history_mrr <= 0:
            return float("nan")
        return self.stored_mrr / self.history_mrr - 1.0

    def sentence(self, dataset: str) -> str:
        """What a person reads about this dataset's vectors."""
        if not self.measured:
            return (
                f"{dataset}: too few recent next events to measure the interest vectors ({self.pairs} held-out "
                f"pairs; needs at least {MIN_PAIRS}, i.e. people with 2+ events in the latest tenth of the data); "
                f"history weight {self.weight:g} used"
            )
        gain = self.gain
        if gain >= 0.005:
            verdict = f"anticipate next events {100 * gain:.0f} % better than recent history"
        elif gain > -0.005:
            verdict = "anticipate next events as well as recent history (no better)"
        else:
            verdict = (
                f"anticipate next events {100 * -gain:.0f} % worse than recent history: adapt the model to this data "
                f"(`interestgeo train --dataset {dataset} --from model`)"
            )
        how = "fixed in the config" if self.fixed else "chosen on its own recent events"
        return (
            f"{dataset}: interest vectors {verdict} (next-event MRR {self.stored_mrr:.3f} vs {self.history_mrr:.3f}, "
            f"model alone {self.model_mrr:.3f}; {self.pairs} held-out pairs; history weight {self.weight:g}, {how}; "
            f"sharpness {self.sharpness:g})"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset_id": self.dataset_id, "cutoff": self.cutoff.isoformat(), "history_weight": self.weight,
            "sharpness": self.sharpness,
            "pairs": self.pairs, "stored_mrr": _nan_none(self.stored_mrr), "history_mrr": _nan_none(self.history_mrr),
            "model_mrr": _nan_none(self.model_mrr), "gain": _nan_none(self.gain), "measured": bool(self.measured),
            "weight_fixed": self.fixed, "mrr_by_weight": {f"{w:g}": _nan_none(m) for w, m in self.by_weight.items()},
        }

    def weights_json(self) -> str:
        return json.dumps({f"{w:g}": _nan_none(m) for w, m in self.by_weight.items()})


def calibrate(
    dataset_id: int,
    events: pd.DataFrame,
    model: np.ndarray,
    history: np.ndarray,
    text_vectors: Callable[[list[str]], np.ndarray],
    cutoff: pd.Timestamp,
    fixed_weight: float | None = None,
    *,
    sharpness: tuple[float, ...] = (1.0,),
    rows: np.ndarray | None = None,
    pairs: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
) -> Calibration:
    """Choose the history weight (and the model's sharpness) of one dataset's events
    (store.events() order) and measure the result on the other half of the pairs.

    `model`: unit vectors, (S, R, D) one set per `sharpness` value, or (R, D) for one; `history`:
    (R, D). R rows are `rows` of events (ascending; every pair's first row among them), or all.
    `pairs`: next_event_pairs(events, cutoff) when the caller has it already.
    """
    model = model[None] if model.ndim == 2 else model
    pairs, targets, distinct = next_event_pairs(events, cutoff) if pairs is None else pairs
    if len(pairs) < 2 * MIN_PAIRS:
        weight = DEFAULT_WEIGHT if fixed_weight is None else fixed_weight
        return Calibration(dataset_id, cutoff, weight, len(pairs) // 2, float("nan"), float("nan"), float("nan"),
                           fixed=fixed_weight is not None)
    at = pairs if rows is None else np.searchsorted(rows, pairs)
    candidates = text_vectors(distinct)
    choose, report = slice(0, None, 2), slice(1, None, 2)
    m, h = model[:, at], history[at]
    weights = HISTORY_WEIGHTS if fixed_weight is None else (float(fixed_weight),)
    scores = {
        (s, w): next_text_mrr(blend(m[i][choose], h[choose], w), targets[choose], candidates)
        for i, s in enumerate(sharpness) for w in weights
    }
    # the best pair; ties go to the plainer choice (less history, then less sharpening)
    best_s, weight = max(scores, key=lambda sw: (scores[sw], -sw[1], -sw[0]))
    best = m[sharpness.index(best_s)]
    return Calibration(
        dataset_id, cutoff, weight, len(targets[report]),
        stored_mrr=next_text_mrr(blend(best[report], h[report], weight), targets[report], candidates),
        history_mrr=next_text_mrr(h[report], targets[report], candidates),
        model_mrr=next_text_mrr(best[report], targets[report], candidates),
        by_weight={w: scores[(best_s, w)] for w in weights}, fixed=fixed_weight is not None, sharpness=best_s,
    )


def stored_calibrations(frame: pd.DataFrame) -> list[tuple[str, Calibration]]:
    """(dataset name, Calibration) per row of Store.calibrations(): what the last scores measured."""
    out = []
    for row in frame.itertuples(index=False):
        weights = {float(w): (float("nan") if m is None else float(m)) for w, m in json.loads(row.weights).items()}
        out.append((str(row.name), Calibration(
            int(row.dataset_id), pd.Timestamp(row.cutoff), float(row.history_weight), int(row.pairs),
            _nan(row.stored_mrr), _nan(row.history_mrr), _nan(row.model_mrr), weights,
            fixed=len(weights) == 1 and int(row.pairs) >= MIN_PAIRS, sharpness=float(row.sharpness),
        )))
    return out


def _nan(x: object) -> float:
    return float("nan") if x is None or pd.isna(x) else float(x)


def _nan_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
