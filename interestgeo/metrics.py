"""Ranking metrics: the one home of "rank of the target", Acc@k, MRR and NDCG@10.

A metric is a leaf (numpy only): training (validation MRR), the baselines (tuning on
validation), the evaluation loop and the vector calibration all import it at the top, so none of
them needs a lazy import or an injected metric callback to stay out of an import cycle.

One rank function, two tie rules, each named where it is used (`ties=`):

- "against" (`target_ranks`' default; the evaluation's and training's rule): rank = 1 + candidates
  scoring higher + other candidates tied with the target. Evaluation scorers are counts and
  probabilities with many exact ties (every venue a user never visited scores 0), so ties must
  count against the target: a constant or degenerate scorer then ranks the target last, not
  first, and cannot look good.
- "for" (`next_text_mrr`, the calibration's rule): rank = 1 + candidates scoring strictly higher.
  Its scores are dot products of continuous text embeddings, where an exact tie means two distinct
  texts with the same embedding (an uncased encoder folds case), which no vector can tell apart;
  the stored calibration figures were measured this way and keep their meaning.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from interestgeo.split import Samples, Split

__all__ = [
    "METRICS",
    "TASKS",
    "Scorer",
    "Ties",
    "target_ranks",
    "rank_metrics",
    "next_text_mrr",
    "next_text_reciprocal_ranks",
    "grouped_bootstrap_ratio",
    "venue_to_category_scores",
]

METRICS = ("acc@1", "acc@5", "acc@10", "mrr", "ndcg@10")
TASKS = ("next_venue", "next_category")

Ties = Literal["against", "for"]


class Scorer(Protocol):
    """Anything that scores candidates for samples; higher means more likely."""

    name: str

    def score(self, split: Split, samples: Samples) -> tuple[np.ndarray, np.ndarray | None]:
        """(venue scores (n, V) float32, category scores (n, C) float32 or None)."""
        ...


def target_ranks(scores: np.ndarray, targets: np.ndarray, *, ties: Ties = "against") -> np.ndarray:
    """(n,) 1-based rank of each target among its row's candidates.

    ties="against": 1 + candidates scoring higher + other candidates tied; ties="for": 1 +
    candidates scoring strictly higher (the module docstring says which caller uses which, and
    why). NaN scores count as the lowest possible score, so a NaN target ranks behind everything.
    """
    scores = np.asarray(scores)  # (n, V), compared in the scorer's own precision
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        scores = np.nan_to_num(scores, nan=-np.inf)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != len(targets):
        raise ValueError(f"scores {scores.shape} do not match {len(targets)} targets")
    target_score = scores[np.arange(len(targets)), targets][:, None]  # (n, 1)
    if ties == "against":
        return (scores >= target_score).sum(axis=1).astype(np.int64)  # higher or tied, the target included
    return 1 + (scores > target_score).sum(axis=1).astype(np.int64)


def rank_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Acc@1/5/10, MRR and NDCG@10 (one relevant item, so DCG = 1/log2(rank+1)) of the targets,
    ties counted against the target."""
    ranks = target_ranks(scores, targets).astype(np.float64)
    if len(ranks) == 0:
        return {m: math.nan for m in METRICS}
    return {
        "acc@1": float(np.mean(ranks <= 1)),
        "acc@5": float(np.mean(ranks <= 5)),
        "acc@10": float(np.mean(ranks <= 10)),
        "mrr": float(np.mean(1.0 / ranks)),
        "ndcg@10": float(np.mean(np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0))),
    }


def next_text_reciprocal_ranks(vectors: np.ndarray, targets: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(n,) 1 / rank of candidate `targets[i]` among all `candidates` (U, D) scored by `vectors[i]`
    (n, D), ties counted for the target (see the module docstring).

    Under this rule a zero vector ties every candidate and ranks every target 1.
    """
    out = np.empty(len(targets))
    for a in range(0, len(targets), 1024):  # (1024, U) score blocks: bounded memory for large U
        scores = vectors[a : a + 1024] @ candidates.T
        out[a : a + 1024] = 1.0 / target_ranks(scores, targets[a : a + 1024], ties="for")
    return out


def next_text_mrr(vectors: np.ndarray, targets: np.ndarray, candidates: np.ndarray) -> float:
    """The mean of `next_text_reciprocal_ranks`; NaN for no targets."""
    if len(targets) == 0:
        return float("nan")
    return float(next_text_reciprocal_ranks(vectors, targets, candidates).mean())


def grouped_bootstrap_ratio(
    numerator: np.ndarray, baselines: list[np.ndarray], groups: np.ndarray, *,
    level: float = 0.9, draws: int = 2000, seed: int = 0,
) -> tuple[float, float]:
    """Confidence interval of mean(numerator) / max(mean(b) for b in baselines), resampling whole groups.

    Why groups: one person's consecutive pairs are alike (the same history, often the same kind of
    post), so resampling pairs as if independent gives an interval too narrow; resampling people
    with replacement (each drawn person brings all their pairs) keeps that dependence. The best
    baseline is taken again in every draw, so the interval is of "vs the best of them". `numerator`,
    each baseline and `groups` are (n,) per pair; a fixed `seed` makes the interval repeatable.
    """
    _, group = np.unique(np.asarray(groups), return_inverse=True)
    k = int(group.max()) + 1 if len(group) else 0
    if k == 0:
        return float("nan"), float("nan")
    count = np.bincount(group, minlength=k).astype(np.float64)  # (k,) pairs per group
    sums = [np.bincount(group, weights=np.asarray(x, dtype=np.float64), minlength=k) for x in (numerator, *baselines)]
    rng = np.random.default_rng(seed)
    times = rng.multinomial(k, np.full(k, 1.0 / k), size=draws).astype(np.float64)  # (draws, k) copies drawn
    n = times @ count  # (draws,) pairs in each draw
    means = [(times @ s) / n for s in sums]  # per draw: the numerator's mean, then each baseline's
    ratios = means[0] / np.maximum.reduce(means[1:])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


def venue_to_category_scores(split: Split, venue_probs: np.ndarray) -> np.ndarray:
    """(n, C) category scores as the sum of the venue probabilities of each category."""
    venue_probs = np.asarray(venue_probs, dtype=np.float32)
    one_hot = np.zeros((len(split.venues), len(split.categories)), dtype=np.float32)  # (V, C)
    one_hot[np.arange(len(split.venues)), split.venues["category_idx"].to_numpy()] = 1.0
    return venue_probs @ one_hot  # (n, C): a matmul is ~5x faster than np.add.at here
