"""Ranking metrics and the one evaluation loop every scorer goes through.

The model, the baselines and the ablations are compared only when they rank the same samples
with the same code, so scoring is split from measuring: a *scorer* turns samples into scores
(see `Scorer`), and this module turns scores into Acc@k, MRR and NDCG@10 for the next venue and
the next category.

Ties are counted against the target (pessimistic rank): a scorer that gives every venue the same
score ranks the target last, not first, so a constant or degenerate scorer cannot look good.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Protocol as TypingProtocol

import numpy as np

from interestgeo.split import Samples, Split

__all__ = [
    "METRICS",
    "Scorer",
    "rank_metrics",
    "target_ranks",
    "venue_to_category_scores",
    "evaluate_scorers",
    "format_table",
    "results_to_json",
]

METRICS = ("acc@1", "acc@5", "acc@10", "mrr", "ndcg@10")
TASKS = ("next_venue", "next_category")


class Scorer(TypingProtocol):
    """Anything that scores candidates for samples; higher means more likely."""

    name: str

    def score(self, split: Split, samples: Samples) -> tuple[np.ndarray, np.ndarray | None]:
        """(venue scores (n, V) float32, category scores (n, C) float32 or None)."""
        ...


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(n,) 1-based rank of each target: 1 + candidates scoring higher + other candidates tied.

    NaN scores count as the lowest possible score, so a NaN target ranks behind everything.
    """
    scores = np.asarray(scores)  # (n, V), compared in the scorer's own precision
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        scores = np.nan_to_num(scores, nan=-np.inf)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != len(targets):
        raise ValueError(f"scores {scores.shape} do not match {len(targets)} targets")
    target_score = scores[np.arange(len(targets)), targets][:, None]  # (n, 1)
    at_least = (scores >= target_score).sum(axis=1)  # higher or tied, the target included
    return at_least.astype(np.int64)


def rank_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Acc@1/5/10, MRR and NDCG@10 (one relevant item, so DCG = 1/log2(rank+1)) of the targets."""
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


def venue_to_category_scores(split: Split, venue_probs: np.ndarray) -> np.ndarray:
    """(n, C) category scores as the sum of the venue probabilities of each category."""
    venue_probs = np.asarray(venue_probs, dtype=np.float32)
    out = np.zeros((venue_probs.shape[0], len(split.categories)), dtype=np.float32)
    np.add.at(out.T, split.venues["category_idx"].to_numpy(), venue_probs.T)
    return out


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = np.nan_to_num(scores.astype(np.float64), nan=-np.inf)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def evaluate_scorers(split: Split, scorers: Iterable[Scorer], part: str = "test") -> dict[str, dict[str, dict[str, float]]]:
    """Metrics of every scorer on the samples of `part`, as
    {"next_venue": {name: metrics}, "next_category": {name: metrics}}.

    A scorer that returns no category scores is given the category sums of the softmax of its
    venue scores (its venue scores read as logits).
    """
    samples = split.samples(part)
    results: dict[str, dict[str, dict[str, float]]] = {task: {} for task in TASKS}
    for scorer in scorers:
        venue_scores, category_scores = scorer.score(split, samples)
        if venue_scores.shape != (len(samples), len(split.venues)):
            raise ValueError(f"{scorer.name}: venue scores {venue_scores.shape}, want {(len(samples), len(split.venues))}")
        if category_scores is None:
            category_scores = venue_to_category_scores(split, _softmax(venue_scores))
        results["next_venue"][scorer.name] = rank_metrics(venue_scores, samples.venue)
        results["next_category"][scorer.name] = rank_metrics(category_scores, samples.category)
    return results


def format_table(results: dict[str, dict[str, dict[str, float]]], title: str = "") -> str:
    """A fixed-width text table: one block per task, one row per scorer."""
    lines = [title] if title else []
    width = max([len(name) for task in results.values() for name in task] + [5])
    for task, by_name in results.items():
        lines.append(f"{task:<{width}}  " + "  ".join(f"{m:>7}" for m in METRICS))
        for name, metrics in by_name.items():
            lines.append(f"{name:<{width}}  " + "  ".join(f"{metrics[m]:>7.4f}" for m in METRICS))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def results_to_json(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """The results as one JSON object (metrics rounded to 6 digits so reruns compare equal)."""
    rounded = {
        task: {name: {m: round(v, 6) for m, v in metrics.items()} for name, metrics in by_name.items()}
        for task, by_name in results.items()
    }
    return json.dumps(rounded, indent=2)
