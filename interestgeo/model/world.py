"""What the interest model knows about one dataset, computed from that dataset alone.

Why a module of its own: the model is inductive. Its weights read texts, times, distances and
counts; the venues it ranks and the counts it weighs (popularity, everyone's transitions) belong
to the data being scored, not to the data it was trained on. A `World` is that knowledge for one
dataset (or one evaluation split): its items (the venues, `split.item_keys`), each with a text
embedding, a place and a category, and the counts of a reference period.

Two ways to build one:

* `world_from_split`: for training and evaluation, the split's training-period venues and counts
  (the protocol in split.py: nothing from validation or test).
* `world_from_events`: for scoring a dataset, every item of the dataset, with counts from its
  events before `cutoff` only. Items first seen at or after the cutoff are reached through the
  user's own history (the pointer) but not ranked by the generative softmax, so the vectors of
  events after the cutoff never depend on what happened after it: the per-dataset quality figure
  (score.py) is measured there honestly, and a dynamic update with the same cutoff equals a full
  re-score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from interestgeo.model.network import ModelData
from interestgeo.split import NO_CATEGORY, item_keys, most_frequent

__all__ = ["World", "world_from_events", "world_from_split"]

@dataclass
class World:
    """A dataset's items and counts as the model reads them (`data`), and how events map onto them."""

    data: ModelData
    keys: pd.Index  # (V,) item keys, unique; row i of every data tensor is item i
    categories: pd.Index  # (K,) category names
    items: pd.DataFrame  # (V rows) item_id, text, category, lat, lon, visits (reference period), for people

    @property
    def n_venues(self) -> int:
        return len(self.keys)

    def venues_of(self, events: pd.DataFrame) -> np.ndarray:
        """(N,) int64 each event's item (V when the world does not know it)."""
        pos = self.keys.get_indexer(item_keys(events)) if len(events) else np.zeros(0, dtype=np.int64)
        return np.where(pos >= 0, pos, self.n_venues).astype(np.int64)

    def categories_of(self, events: pd.DataFrame) -> np.ndarray:
        """(N,) int64 each event's category index (-1 when unknown)."""
        names = events["category"].where(events["category"].notna(), NO_CATEGORY).astype(str)
        return self.categories.get_indexer(names).astype(np.int64)


def world_from_split(
    split: Any, text_of: Callable[[list[str]], np.ndarray], cell_sizes: list[int] | None = None
) -> World:
    """The split's candidate venues (training period) with training-period popularity and transitions."""
    venues = split.venues
    ev = split.events
    train = (ev["part"] == "train").to_numpy()
    pairs = _transitions(ev["venue_idx"].to_numpy(), _same_user_as_previous(ev), train)
    data = _model_data(
        venue_text=text_of(venues["text"].fillna("").astype(str).tolist()),
        lat=venues["lat"].to_numpy(), lon=venues["lon"].to_numpy(),
        category=venues["category_idx"].to_numpy(),
        category_text=text_of([str(c) for c in split.categories]),
        transitions=pairs, count=venues["count"].to_numpy(),
        candidate=np.ones(len(venues), dtype=bool),
        cell_sizes=cell_sizes or [],
        centre=(float(ev.loc[train, "lat"].mean()), float(ev.loc[train, "lon"].mean())),
    )
    items = venues[["item_id", "text", "category", "lat", "lon"]].assign(visits=venues["count"].to_numpy())
    return World(data, pd.Index(venues["key"]), pd.Index(split.categories), items.reset_index(drop=True))


def world_from_events(
    events: pd.DataFrame,
    cutoff: pd.Timestamp | None,
    text_of: Callable[[list[str]], np.ndarray],
    cell_sizes: list[int] | None = None,
) -> World:
    """Every item of `events` (one dataset, store.events() order), counted before `cutoff` (None: all).

    Items with no event before the cutoff are not candidates (see the module docstring). An item's
    text and category are its most frequent ones, its place the mean of its events'.
    """
    if events.empty:
        raise ValueError("no events to build a world from")
    keys = item_keys(events)
    before = np.ones(len(events), dtype=bool) if cutoff is None else (pd.to_datetime(events["ts"], utc=True) < cutoff).to_numpy()
    if not before.any():  # nothing before the cutoff: rank every item rather than none
        before[:] = True
    category = events["category"].where(events["category"].notna(), NO_CATEGORY).astype(str)
    frame = pd.DataFrame({"key": keys, "text": events["text"].astype(str).to_numpy(), "category": category.to_numpy(),
                          "lat": events["lat"].to_numpy(), "lon": events["lon"].to_numpy(), "before": before,
                          "item_id": events["item_id"].to_numpy(dtype=object)})
    items = frame.groupby("key", sort=True).agg(
        item_id=("item_id", "first"), lat=("lat", "mean"), lon=("lon", "mean"), count=("before", "sum")
    )
    items["text"] = most_frequent(frame["key"], frame["text"]).reindex(items.index)
    items["category"] = most_frequent(frame["key"], frame["category"]).reindex(items.index)
    categories = pd.Index(sorted(items["category"].unique()))
    index = pd.Index(items.index)
    venue = index.get_indexer(keys)
    pairs = _transitions(venue, _same_user_as_previous(events), before)
    data = _model_data(
        venue_text=text_of(items["text"].tolist()),
        lat=items["lat"].to_numpy(), lon=items["lon"].to_numpy(),
        category=categories.get_indexer(items["category"]),
        category_text=text_of(categories.tolist()),
        transitions=pairs, count=items["count"].to_numpy(),
        candidate=items["count"].to_numpy() > 0,
        cell_sizes=cell_sizes or [],
        centre=(float(frame.loc[before, "lat"].mean()), float(frame.loc[before, "lon"].mean())),
    )
    shown = items[["item_id", "text", "category", "lat", "lon"]].assign(visits=items["count"].to_numpy())
    return World(data, index, categories, shown.reset_index(drop=True))


def _same_user_as_previous(events: pd.DataFrame) -> np.ndarray:
    """(N,) bool: row i belongs to the same (dataset, user) as row i - 1."""
    same = np.zeros(len(events), dtype=bool)
    if len(events) > 1:
        dataset = events["dataset_id"].to_numpy()
        user = events["user_id"].to_numpy(dtype=object)
        same[1:] = (dataset[1:] == dataset[:-1]) & (user[1:] == user[:-1])
    return same


def _transitions(venue: np.ndarray, same: np.ndarray, counted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst, count) of consecutive same-user venue pairs with both events counted (venue -1: none)."""
    ok = same[1:] & counted[1:] & counted[:-1] & (venue[1:] >= 0) & (venue[:-1] >= 0)
    src, dst = venue[:-1][ok], venue[1:][ok]
    V = int(max(venue.max(initial=0), 0)) + 1
    key, counts = np.unique(src.astype(np.int64) * V + dst, return_counts=True)
    return key // V, key % V, counts.astype(np.float32)


def _model_data(
    *, venue_text: np.ndarray, lat: np.ndarray, lon: np.ndarray, category: np.ndarray, category_text: np.ndarray,
    transitions: tuple[np.ndarray, np.ndarray, np.ndarray], count: np.ndarray, candidate: np.ndarray,
    cell_sizes: list[int], centre: tuple[float, float],
) -> ModelData:
    src, dst, n = transitions
    return ModelData(
        venue_text=torch.from_numpy(np.array(venue_text, dtype=np.float32)),
        venue_lat=torch.from_numpy(np.array(lat, dtype=np.float32)),
        venue_lon=torch.from_numpy(np.array(lon, dtype=np.float32)),
        venue_category=torch.from_numpy(np.array(category, dtype=np.int64)),
        category_text=torch.from_numpy(np.array(category_text, dtype=np.float32)),
        markov_src=torch.from_numpy(np.array(src, dtype=np.int64)),
        markov_dst=torch.from_numpy(np.array(dst, dtype=np.int64)),
        markov_count=torch.from_numpy(np.array(n, dtype=np.float32)),
        venue_count=torch.from_numpy(np.array(count, dtype=np.float32)),
        candidate=torch.from_numpy(np.array(candidate, dtype=bool)),
        cell_sizes=list(cell_sizes),
        centre=centre,
    )
