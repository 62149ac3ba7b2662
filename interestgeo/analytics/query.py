"""Where and when people are interested in a free-text phrase (`query_interest`).

Why apart: the only analytics that needs the text encoder (`embed_phrase`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interestgeo.analytics._groups import _group
from interestgeo.analytics.filters import Filters
from interestgeo.analytics.scored import ScoredEvents, filter_mask

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = [
    "QueryResult", "embed_phrase", "query_interest",
]


@dataclass
class QueryResult:
    """Where and when people are interested in a phrase."""

    phrase: str
    cells: pd.DataFrame  # cell, events, users, score, strong_users, rank (1 = best); best first
    time_profile: pd.DataFrame  # dow, hour, events, users, score: the visible hour-of-week buckets
    hidden: int  # cells dropped by the k threshold
    hidden_times: int  # hour-of-week buckets dropped by the k threshold
    threshold: float  # the affinity above which a user counts as strongly interested
    resolution: int


def embed_phrase(encoder: Any, phrase: str, store: Store | None = None) -> np.ndarray:
    """(D,) unit embedding of a phrase with the text encoder (`.encode(list[str])`).

    With a writable `store` the embedding goes through the store's text-embedding cache, so a
    phrase asked before costs a lookup instead of a forward pass of the language model.
    """
    phrase = phrase.strip()
    if not phrase:
        raise ValueError("the query phrase is empty")
    if store is not None and not store.read_only:
        from interestgeo.text import embed_texts

        return np.asarray(embed_texts(store, encoder, [phrase], warn=None), dtype=np.float32)[0]
    return np.asarray(encoder.encode([phrase]), dtype=np.float32)[0]


def query_interest(
    scored: ScoredEvents,
    phrase: str,
    phrase_vector: np.ndarray,
    filters: Filters | None = None,
    resolution: int = 8,
) -> QueryResult:
    """Rank cells and hours of the week by the affinity of the people there to a phrase.

    `phrase_vector` is the phrase's embedding (`embed_phrase`). k threshold on cells and on
    hour-of-week buckets.
    """
    affinity = scored.affinity(phrase_vector)  # (N,) every event's interest vector against the phrase
    idx = np.flatnonzero(filter_mask(scored, filters))
    s = affinity[idx]
    # strongly interested: a user's mean affinity over the filtered events in the top quantile
    user_group = _group(scored, idx, np.zeros(len(idx), dtype=np.int64))
    user_scores = user_group.pair_mean(s) if len(idx) else np.zeros(0)
    quantile = scored.config.analytics.strong_interest_quantile
    threshold = float(np.quantile(user_scores, quantile)) if len(user_scores) else float("nan")

    # people counted per cell when strongly interested overall (not only in that cell): the same
    # number the stored aggregates give (analytics/stored.py)
    strong_user = np.zeros(int(scored.user_codes.max(initial=0)) + 1, dtype=bool)
    strong_user[user_group.pair_user[user_scores >= threshold]] = True

    groups = _group(scored, idx, scored.parents(resolution)[idx])
    visible = groups.users >= scored.k
    strong = np.bincount(groups.pair_group, weights=strong_user[groups.pair_user], minlength=groups.size).astype(np.int64)
    cells = pd.DataFrame(
        {
            "cell": groups.keys,
            "events": groups.events,
            "users": groups.users,
            "score": groups.mean(s),
            "strong_users": strong,
        }
    ).loc[visible]
    cells = cells.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    cells["rank"] = np.arange(1, len(cells) + 1)

    times = _group(scored, idx, scored.dow[idx] * 24 + scored.hour[idx])
    visible_t = times.users >= scored.k
    profile = pd.DataFrame(
        {
            "dow": times.keys // 24,
            "hour": times.keys % 24,
            "events": times.events,
            "users": times.users,
            "score": times.mean(s),
        }
    ).loc[visible_t].reset_index(drop=True)
    return QueryResult(
        phrase, cells, profile, int((~visible).sum()), int((~visible_t).sum()), threshold, resolution
    )
