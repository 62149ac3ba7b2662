"""The one evaluation loop every scorer goes through, and the `evaluate` run.

The model, the baselines and the ablations are compared only when they rank the same samples
with the same code, so scoring is split from measuring: a *scorer* turns samples into scores
(`metrics.Scorer`), and this module turns scores into Acc@k, MRR and NDCG@10 for the next venue
and the next category (`metrics.rank_metrics`: ties count against the target).

This is the one module that composes the model's scorers and the baselines, so it sits on top of
both: nothing in the core imports it (the CLI and benchmarks do). The model code (torch) is
imported lazily (`model_scorers`), so the baselines run without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interestgeo.config import Config
from interestgeo.eval.baselines import BlendScorer, NearestPopularScorer, make_baselines
from interestgeo.metrics import TASKS, Scorer, rank_metrics, venue_to_category_scores
from interestgeo.split import Split, make_split

if TYPE_CHECKING:
    from interestgeo.model.scorer import InterestScorer
    from interestgeo.store import Store

__all__ = [
    "evaluate_scorers",
    "EvaluationError",
    "EvaluationRun",
    "run_evaluation",
]

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
        if scorer.name in results["next_venue"]:
            raise ValueError(f"two scorers are named {scorer.name!r}: names label the rows, so they must differ")
        venue_scores, category_scores = scorer.score(split, samples)
        if venue_scores.shape != (len(samples), len(split.venues)):
            raise ValueError(f"{scorer.name}: venue scores {venue_scores.shape}, want {(len(samples), len(split.venues))}")
        if category_scores is None:
            category_scores = venue_to_category_scores(split, _softmax(venue_scores))
        results["next_venue"][scorer.name] = rank_metrics(venue_scores, samples.venue)
        results["next_category"][scorer.name] = rank_metrics(category_scores, samples.category)
    return results


# ---------------------------------------------------------------------------- the `evaluate` command


class EvaluationError(Exception):
    """The evaluation cannot run (no data, no samples, an unusable checkpoint): one line for users."""


@dataclass
class EvaluationRun:
    """What `interestgeo evaluate` shows: the results table plus the facts needed to read it (the CLI
    renders it: cli/render.py evaluation_text)."""

    results: dict[str, dict[str, dict[str, float]]]
    part: str
    n_samples: int
    n_venues: int
    n_categories: int
    notes: list[str] = field(default_factory=list)


def run_evaluation(
    store: Store, config: Config, *, checkpoint_id: int | None = None, part: str = "test", dataset: str | None = None,
) -> EvaluationRun:
    """Evaluate the trained model (newest "model" checkpoint, or `checkpoint_id`), its ablations
    and every baseline on the same split and samples. Without a checkpoint the baselines alone
    are evaluated and a note says so.

    `dataset`: that dataset alone, on its own chronological split; the model scores it zero-shot
    (its world is the dataset's training period, world.py) unless it was adapted to it, the
    baselines are fitted on its training period, and a checkpoint that trained on events of its
    validation or test period is refused (leakage). Ablations, tied to their training venues, are
    left out."""
    try:
        dataset_id = None if dataset is None else store.require_dataset_id(dataset)
    except LookupError as exc:
        raise EvaluationError(str(exc)) from None
    events = store.events(None if dataset_id is None else [dataset_id])
    if events.empty:
        raise EvaluationError("the store has no events: run `interestgeo demo` or `interestgeo ingest` first")
    split = make_split(events, config)
    if len(split.val) == 0 or len(split.samples(part)) == 0:
        raise EvaluationError(
            f"no {'validation' if len(split.val) == 0 else part} samples: the data is too small or too short "
            "to evaluate (it needs trajectories ending after the 80% time cut by users and venues seen before it)"
        )
    model_scorers, notes = _model_scorers(store, checkpoint_id, dataset)
    if dataset_id is not None:
        notes = [*_leakage_notes(store, dataset_id, split, model_scorers), *notes]
    results = _evaluate_model(split, model_scorers, part)
    baselines = make_baselines(split)
    for task, by_name in evaluate_scorers(split, baselines, part=part).items():
        results[task].update(by_name)
    for scorer in baselines:
        if isinstance(scorer, BlendScorer) and scorer.weights is not None:
            tuned = ", ".join(f"{k} {v:g}" for k, v in scorer.weights.items())
            notes.append(f"blend weights tuned on validation: {tuned}; decay {scorer.decay_km:g} km")
        elif isinstance(scorer, NearestPopularScorer) and scorer.decay_km is not None:
            notes.append(f"nearest_popular decay tuned on validation: {scorer.decay_km:g} km")
    samples = split.samples(part)
    return EvaluationRun(results, part, len(samples), len(split.venues), len(split.categories), notes)


def _evaluate_model(split: Split, scorers: list[Any], part: str) -> dict[str, dict[str, dict[str, float]]]:
    from interestgeo.text import TextModelError

    try:
        return evaluate_scorers(split, scorers, part=part)
    except TextModelError as exc:
        raise EvaluationError(f"the model cannot be scored: {exc}") from None


def _leakage_notes(store: Store, dataset_id: int, split: Split, scorers: list[Any]) -> list[str]:
    """Refuse a checkpoint that trained on this dataset's validation or test period; say which
    scorers see the dataset zero-shot."""
    content_hash = store.datasets().set_index("dataset_id").loc[dataset_id, "content_hash"]
    notes: list[str] = []
    seen_ids: set[int] = set()
    for scorer in scorers:
        checkpoint = scorer.checkpoint
        if checkpoint.id in seen_ids:
            continue
        seen_ids.add(checkpoint.id)
        mine = [t for t in checkpoint.trained_on if t.get("content_hash") == content_hash]
        for entry in mine:
            until = pd.Timestamp(entry["train_until"])
            if until > split.val_start:
                raise EvaluationError(
                    f"checkpoint {checkpoint.id} trained on this dataset's events up to {until:%Y-%m-%d %H:%M}, past "
                    f"its validation start {split.val_start:%Y-%m-%d %H:%M}: its scores would leak; evaluate another "
                    "checkpoint (--checkpoint) or retrain on this dataset (`interestgeo train --dataset`)"
                )
        if not mine:
            trained = ", ".join(sorted({str(t.get("dataset")) for t in checkpoint.trained_on})) or "other data"
            notes.append(f"{scorer.name}: zero-shot (checkpoint {checkpoint.id} was trained on {trained}, never on this dataset)")
    return notes


def _model_scorers(store: Store, checkpoint_id: int | None, dataset: str | None = None) -> tuple[list[Any], list[str]]:
    """The model's scorers (the checkpoint and each trained ablation) and notes about them.

    The model code (torch) is imported only here: the baselines need none of it, so an
    installation without it still evaluates them and says why the model is missing."""
    try:
        from interestgeo.text import TextModelError
        from interestgeo.model import CheckpointError, InterestScorer
    except ImportError as exc:
        if checkpoint_id is not None:
            raise EvaluationError(f"the model code cannot be imported ({exc})") from None
        return [], [f"the model code cannot be imported ({exc}): baselines only"]
    try:
        scorers = model_scorers(store, dataset)
        if checkpoint_id is not None:
            chosen = [InterestScorer.from_checkpoint(store, checkpoint_id, scorer_name="model")]
            if chosen[0].time_given:  # also show it without the next check-in's time, as for the newest
                chosen.append(
                    InterestScorer.from_checkpoint(
                        store, checkpoint_id, time_given=False, scorer_name="model (next time not given)"
                    )
                )
            scorers = [*chosen, *(s for s in scorers if not s.name.startswith("model"))]
    except CheckpointError as exc:
        raise EvaluationError(str(exc)) from None
    except TextModelError as exc:
        raise EvaluationError(f"the model cannot be scored: {exc}") from None
    except (RuntimeError, KeyError, OSError) as exc:
        # A checkpoint written by an incompatible version (missing tensors, changed shapes).
        reason = f"{type(exc).__name__}: {exc}"
        raise EvaluationError(f"a checkpoint cannot be loaded ({reason}); retrain with `interestgeo train`") from None
    if not any(s.name.startswith("model") for s in scorers):
        return scorers, ["the model is not trained yet: run `interestgeo train` (baselines only)"]
    return scorers, []


def model_scorers(store: Store, dataset: str | None = None) -> list[InterestScorer]:
    """Every scorer the evaluation table shows for the model: the newest "model" checkpoint with and
    without the next event's time, and the newest checkpoint of each ablation that exists.

    With `dataset`: the newest "model" (zero-shot there unless it trained on it) and the newest
    checkpoint adapted to that dataset ("adapted:NAME"), each with and without the next time;
    no ablations (their learned ids tie them to their training venues)."""
    from interestgeo.model import ABLATIONS, CheckpointError, InterestScorer, adapted_name, load_checkpoint

    scorers: list[InterestScorer] = []
    names = [("model", "model")] + ([(adapted_name(dataset), "model adapted")] if dataset else [])
    for checkpoint_name, label in names:
        try:
            ck = load_checkpoint(store, name=checkpoint_name)
        except CheckpointError:
            continue
        spec = ck.config.model
        if spec.use_target_time and spec.use_spacetime:
            scorers.append(InterestScorer(store, ck, time_given=True, name=label))
            scorers.append(InterestScorer(store, ck, time_given=False, name=f"{label} (next time not given)"))
        else:
            scorers.append(InterestScorer(store, ck, name=label))
    if dataset:
        return scorers
    for ablation in ABLATIONS:
        try:
            ck = load_checkpoint(store, name=f"ablation:{ablation}")
        except CheckpointError:
            continue
        scorers.append(InterestScorer(store, ck, name=f"ablation: {ablation}"))
    return scorers
