"""Why does the model think this user is interested in that? Two views of the same question, side by side.

* **Attention roll-up** (the model's `attention_rollup`): how much each past event flows into
  the last interest vector through the attention layers. Cheap (one forward pass) but it is the
  model's internal routing, which need not equal influence.
* **Leave-one-out occlusion**: re-run the model with one past event removed and measure how far
  the interest vector moves (1 - cosine). Honest about influence, one forward pass per event,
  batched into a single call: every variant history becomes a separate pseudo-user of one
  DataFrame, so the cost is one model call of (L + 1) short histories.

They are shown side by side with their rank agreement (Spearman) rather than merged, because
where they disagree is itself informative (an event the model attends to but does not need).

**Time and place**: the interest vector is recomputed with the space-time inputs neutralised
(`neutralise_spacetime=True`); the distance between the two and the change in topic shares say
how much *where and when* the events happened, beyond *what* they were, shaped the prediction.

Only the last `analytics.explain_max_events` events are explained, within a context of the last
`model.max_len` events (what the Transformer reads): occluding older events is both slow and
invisible to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd

from interestgeo.access import analyst_only
from interestgeo.analytics.scored import ScoredEvents
from interestgeo.analytics.users import to_utc, user_event_positions
from interestgeo.config import Config
from interestgeo.topics import Topics, topic_probabilities

__all__ = ["Explainer", "Explanation", "explain_user", "explain_scored_user", "occlusion_effects", "rank_agreement", "explain_stored_user"]


class Explainer(Protocol):
    """What explanations need from the model (InterestScorer provides it)."""

    name: str

    def interest_vectors(self, events: pd.DataFrame, neutralise_spacetime: bool = False) -> np.ndarray: ...

    def attention_rollup(self, user_events: pd.DataFrame) -> np.ndarray: ...


@dataclass
class Explanation:
    """One user's interest at a time, explained."""

    dataset_id: int
    user_id: str
    at: pd.Timestamp  # time of the last event explained (UTC)
    events: pd.DataFrame  # event_id, ts, local_ts, text, lat, lon, cell, attention, occlusion,
    #                       attention_rank, occlusion_rank (1 = most important); oldest first
    vector: np.ndarray  # (D,) the interest vector right after the last event
    neutral_vector: np.ndarray  # (D,) the same with space-time inputs neutralised
    spacetime_effect: float  # 1 - cos(vector, neutral_vector)
    topics: pd.DataFrame  # topic, share, share_without_spacetime, change (sorted by share)
    agreement: float  # Spearman rank correlation of attention and occlusion (nan when < 3 events)

    def to_dict(self) -> dict[str, Any]:
        from interestgeo.analytics.records import to_records

        return {
            "dataset_id": self.dataset_id,
            "user_id": self.user_id,
            "at": self.at.isoformat(),
            "spacetime_effect": self.spacetime_effect,
            "agreement": None if np.isnan(self.agreement) else self.agreement,
            "events": to_records(self.events),
            "topics": to_records(self.topics),
        }


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def occlusion_effects(model: Explainer, context: pd.DataFrame, explained: int) -> tuple[np.ndarray, np.ndarray]:
    """(full last vector (D,), effects (explained,)) for the last `explained` events of `context`.

    effects[j] = 1 - cos(last vector, last vector with event j of those removed); `context` is one
    user's events in store.events() order. One model call over explained + 1 pseudo-users.
    """
    n = len(context)
    first = n - explained
    variants = []
    for j in range(explained + 1):  # j == explained: the full history
        keep = np.ones(n, dtype=bool)
        if j < explained:
            keep[first + j] = False
        variants.append(context.loc[keep].assign(user_id=f"{context['user_id'].iloc[0]}#{j:05d}"))
    batch = pd.concat(variants, ignore_index=True)
    if hasattr(model, "last_interest_vectors"):  # only each variant's last vector is needed
        last = _unit(np.asarray(model.last_interest_vectors(batch), dtype=np.float64))  # (explained + 1, D)
    else:
        vectors = np.asarray(model.interest_vectors(batch), dtype=np.float64)  # (rows, D)
        last = _unit(vectors[np.cumsum([len(v) for v in variants]) - 1])
    full = last[-1]
    return full.astype(np.float32), np.clip(1.0 - last[:-1] @ full, 0.0, 2.0)


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan for fewer than 3 values."""
    if len(a) < 3:
        return float("nan")
    ra = pd.Series(a).rank().to_numpy()
    rb = pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _shares(vector: np.ndarray, topics: Topics, config: Config) -> np.ndarray:
    return topic_probabilities(vector[None, :], topics, config.analytics.topic_temperature)[0]


@analyst_only
def explain_user(
    model: Explainer,
    events: pd.DataFrame,
    topics: Topics,
    config: Config,
    dataset_id: int,
    user_id: str,
    at: datetime | str | None = None,
) -> Explanation:
    """Explain a user's interest vector right after their last event at or before `at`.

    `events` holds (at least) this user's events in store.events() format (e.g. store.events()
    or ScoredEvents.events); `model` is the trained InterestScorer.
    """
    user = events[(events["dataset_id"] == int(dataset_id)) & (events["user_id"] == str(user_id))]
    if user.empty:
        raise LookupError(f"no events for user {user_id!r} in dataset {dataset_id}")
    if at is not None:
        user = user[user["ts"] <= to_utc(at)]
        if user.empty:
            raise LookupError(f"user {user_id!r} has no events before {at}")
    # the events the Transformer reads: its own window (the checkpoint's max_len, not the caller's config)
    context = user.tail(int(getattr(model, "max_len", config.model.max_len))).reset_index(drop=True)
    explained = min(config.analytics.explain_max_events, len(context))
    vector, occlusion = occlusion_effects(model, context, explained)
    attention_all = np.asarray(model.attention_rollup(context), dtype=np.float64)  # (T,)
    attention = attention_all[-explained:]
    if hasattr(model, "last_interest_vectors"):
        neutral = _unit(np.asarray(model.last_interest_vectors(context, neutralise_spacetime=True), dtype=np.float64)[-1])
    else:
        neutral = _unit(np.asarray(model.interest_vectors(context, neutralise_spacetime=True), dtype=np.float64)[-1])
    shown = context.iloc[-explained:][["event_id", "ts", "local_ts", "text", "lat", "lon", "cell"]].reset_index(drop=True)
    shown["attention"] = attention
    shown["occlusion"] = occlusion
    shown["attention_rank"] = pd.Series(-attention).rank(method="min").astype(int).to_numpy()
    shown["occlusion_rank"] = pd.Series(-occlusion).rank(method="min").astype(int).to_numpy()
    with_st = _shares(vector, topics, config)
    without = _shares(neutral.astype(np.float32), topics, config)
    topic_frame = pd.DataFrame(
        {"topic": list(topics.labels), "share": with_st, "share_without_spacetime": without, "change": with_st - without}
    ).sort_values("share", ascending=False, kind="stable").reset_index(drop=True)
    return Explanation(
        int(dataset_id),
        str(user_id),
        context["ts"].iloc[-1],
        shown,
        vector,
        neutral.astype(np.float32),
        float(np.clip(1.0 - float(neutral @ _unit(vector.astype(np.float64))), 0.0, 2.0)),
        topic_frame,
        rank_agreement(attention, occlusion),
    )


@analyst_only
def explain_scored_user(
    model: Explainer, scored: ScoredEvents, dataset_id: int, user_id: str, at: datetime | str | None = None
) -> Explanation:
    """`explain_user` over the events of a loaded ScoredEvents (the dashboard's path)."""
    idx = user_event_positions(scored, dataset_id, user_id, at)
    return explain_user(model, scored.events.iloc[idx], scored.topics, scored.config, dataset_id, user_id, at)


@analyst_only  # before it reads anything: even "no scored user X" would tell a marketer who is in the data
def explain_stored_user(
    store: Any, config: Config, user_id: str, *, dataset: str | None = None, at: str | None = None
) -> Explanation:
    """`explain_scored_user` for a user of the store (`interestgeo explain`): the dataset by name,
    or the only one holding a scored user of that id (ValueError otherwise)."""
    from interestgeo.analytics.scored import load_scored
    from interestgeo.vectors import load_source

    scored = load_scored(store, config)
    if dataset is not None:
        dataset_id = store.dataset_id(dataset)
        if dataset_id is None:
            raise ValueError(f"no dataset named {dataset!r}")
    else:
        owners = scored.events.loc[scored.events["user_id"] == str(user_id), "dataset_id"].unique()
        if len(owners) != 1:
            raise ValueError(
                f"user {user_id!r} is in {len(owners)} datasets: name one with --dataset" if len(owners)
                else f"no scored user {user_id!r}"
            )
        dataset_id = int(owners[0])
    model = load_source(store, config)
    return explain_scored_user(model, scored, dataset_id, user_id, at)  # type: ignore[arg-type]
