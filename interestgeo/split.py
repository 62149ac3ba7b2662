"""The evaluation split of issue 3: who is predicted, from what, among which venues.

Every number interestgeo reports about prediction quality (the model, each baseline, each
ablation) is measured on the samples built here, so the protocol lives in one place and is the
one the published NYC next-POI results use (GETNext, STHGCN), which keeps our figures comparable:

1. All events are sorted by time (ties by event_id). The timestamp at 80% of them starts
   validation and the one at 90% starts test; an event's `part` is the period its own time falls
   in (train: ts < val_start, val: val_start <= ts < test_start, test: ts >= test_start). Cutting
   at timestamps, not at row positions, keeps events of the same instant together.
2. Each user's events are cut into trajectories at gaps of more than 24 hours.
3. A trajectory belongs to the part of its LAST event; a trajectory that straddles a boundary
   therefore counts once, in the later part, and its earlier events stay in their own period.
4. A validation (test) sample is the last event of each validation (test) trajectory. It is
   predicted from everything of that user strictly before it in time: earlier trajectories and
   the trajectory's own earlier events, whatever their period.
5. Samples whose user or venue never occurs in a training-period event are dropped, and
   candidates are all venues seen in training (`Split.venues`).

Nothing from a validation or test period is training input: models and baselines fit their
parameters on `part == "train"` events only (the targets are by construction never there), and
use later events only as the history of a sample, which is what a deployed model would see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from interestgeo.config import Config
from interestgeo.schema import user_keys

__all__ = [
    "PARTS",
    "SplitProtocol",
    "Samples",
    "Split",
    "make_split",
    "history_rows",
    "item_keys",
    "most_frequent",
    "previous_rows",
]

PARTS = ("train", "val", "test")
# Category name given to events without one, so every venue has exactly one category.
NO_CATEGORY = "(no category)"


@dataclass(frozen=True)
class SplitProtocol:
    """The protocol's constants. Fixed by issue 3 so numbers stay comparable across runs and
    with the published figures; tests use the same values on tiny frames."""

    # A silence longer than this starts a new trajectory (a new "visit" to the city).
    trajectory_gap_hours: float = 24.0
    # Share of events (by global time order) before validation starts.
    train_share: float = 0.8
    # Share of events before test starts (so validation is 0.8-0.9 and test 0.9-1.0).
    train_val_share: float = 0.9


@dataclass(frozen=True)
class Samples:
    """One entry per sample; all arrays have the same length n.

    `row` is the positional index of the target event in `Split.events`; the sample's history is
    `Split.events.iloc[history_start[i]:history_end[i]]` (the user's events strictly before the
    target's time, in time order; `Split.events` is sorted by user then time).
    """

    row: np.ndarray  # (n,) int64
    venue: np.ndarray  # (n,) int64 target venue index into Split.venues
    category: np.ndarray  # (n,) int64 target category index into Split.categories
    user_key: np.ndarray  # (n,) object "dataset_id:user_id"
    history_start: np.ndarray  # (n,) int64 first row of the user
    history_end: np.ndarray  # (n,) int64 one past the last history row

    def __len__(self) -> int:
        return len(self.row)


@dataclass(frozen=True)
class Split:
    """The events with their split columns, the candidate venues and the val/test samples.

    `events` has the store.events() columns plus `user_key`, `traj_id`, `part`, `venue_idx`
    (-1 when the venue never occurs in training) and `category_idx` (the venue's category, -1
    with the venue). `venues` is indexed 0..V-1: key (`item_keys`), dataset_id, item_id, category, category_idx,
    text, lat, lon, count (training-period events).
    """

    events: pd.DataFrame
    venues: pd.DataFrame
    categories: list[str]
    val: Samples
    test: Samples
    val_start: pd.Timestamp
    test_start: pd.Timestamp
    protocol: SplitProtocol

    def samples(self, part: str) -> Samples:
        """The samples of "val" or "test"."""
        if part == "val":
            return self.val
        if part == "test":
            return self.test
        raise ValueError(f"no samples for part {part!r}: choose 'val' or 'test'")

    @property
    def train_mask(self) -> np.ndarray:
        """(N,) bool: the events models and baselines may fit on."""
        return (self.events["part"] == "train").to_numpy()


def make_split(events: pd.DataFrame, config: Config | None = None, protocol: SplitProtocol | None = None) -> Split:
    """Build the issue-3 split from events in the store.events() format.

    `config` is the run's Config, accepted so every pipeline step has the same signature; the
    split depends only on `protocol` (see the module docstring), never on model settings.
    """
    del config  # the protocol is fixed; see the docstring
    protocol = protocol or SplitProtocol()
    if len(events) == 0:
        raise ValueError("no events to split")
    ev = events.sort_values(["dataset_id", "user_id", "ts", "event_id"], kind="stable").reset_index(drop=True)
    ev["user_key"] = user_keys(ev)
    ts_ns = ev["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64)

    val_start, test_start = _period_starts(ts_ns, ev["event_id"].to_numpy(), protocol)
    part = np.where(ts_ns < val_start, 0, np.where(ts_ns < test_start, 1, 2))
    ev["part"] = pd.Categorical.from_codes(part, categories=list(PARTS)).astype(str)

    user_code = pd.factorize(ev["user_key"])[0]
    new_user = np.r_[True, user_code[1:] != user_code[:-1]]
    gap = np.r_[True, np.diff(ts_ns) > protocol.trajectory_gap_hours * 3600e9]
    ev["traj_id"] = np.cumsum(new_user | gap) - 1

    venues, categories, venue_idx = _training_venues(ev, part == 0)
    ev["venue_idx"] = venue_idx
    ev["category_idx"] = np.where(venue_idx >= 0, venues["category_idx"].to_numpy()[venue_idx], -1)

    user_index = np.cumsum(new_user) - 1  # (N,) 0..U-1 in row order
    user_start = np.flatnonzero(new_user)[user_index]  # (N,) first row of the event's user
    trained_user = np.bincount(user_index[part == 0], minlength=user_index[-1] + 1) > 0  # (U,)
    # History ends at the user's first event with the target's timestamp (strictly earlier only).
    first_same_ts = _first_row_of_run(user_code, ts_ns)
    traj = ev["traj_id"].to_numpy()
    is_last = np.r_[traj[1:] != traj[:-1], True]
    ok = is_last & (venue_idx >= 0) & trained_user[user_index]

    def samples_of(p: int) -> Samples:
        rows = np.flatnonzero(ok & (part == p)).astype(np.int64)
        return Samples(
            row=rows,
            venue=venue_idx[rows].astype(np.int64),
            category=ev["category_idx"].to_numpy()[rows].astype(np.int64),
            user_key=ev["user_key"].to_numpy(dtype=object)[rows],
            history_start=user_start[rows].astype(np.int64),
            history_end=first_same_ts[rows].astype(np.int64),
        )

    return Split(
        events=ev,
        venues=venues,
        categories=categories,
        val=samples_of(1),
        test=samples_of(2),
        val_start=pd.Timestamp(val_start, tz="UTC"),
        test_start=pd.Timestamp(test_start, tz="UTC"),
        protocol=protocol,
    )


def item_keys(events: pd.DataFrame) -> np.ndarray:
    """(N,) object: each event's item, the one identity of a venue (or place) everywhere.

    "dataset\x1fitem_id" when the event has an item id; else "dataset\x1f\x1etext\x1fcell" (the
    same text in the same H3 cell is the same place: a dataset without ids still has items).
    """
    dataset = events["dataset_id"].astype(str) + "\x1f"
    by_id = dataset + events["item_id"].astype(str)
    by_text = dataset + "\x1e" + events["text"].astype(str) + "\x1f" + events["cell"].astype(str)
    return by_id.where(events["item_id"].notna(), by_text).to_numpy(dtype=object)


def history_rows(samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Every (sample index, event row) history pair, grouped by sample and in time order."""
    lengths = samples.history_end - samples.history_start
    sample_index = np.repeat(np.arange(len(samples), dtype=np.int64), lengths)
    offsets = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return sample_index, np.repeat(samples.history_start, lengths) + offsets


def previous_rows(samples: Samples) -> np.ndarray:
    """(n,) the row of each sample's latest history event (-1 when the history is empty)."""
    return np.where(samples.history_end > samples.history_start, samples.history_end - 1, -1)


def _period_starts(ts_ns: np.ndarray, event_id: np.ndarray, protocol: SplitProtocol) -> tuple[int, int]:
    order = np.lexsort((event_id, ts_ns))
    n = len(order)
    sorted_ts = ts_ns[order]
    val_start = sorted_ts[min(int(protocol.train_share * n), n - 1)]
    test_start = sorted_ts[min(int(protocol.train_val_share * n), n - 1)]
    return int(val_start), int(test_start)


def _first_row_of_run(user_code: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
    """For each row, the first row of the same user with the same timestamp (rows sorted)."""
    starts = np.r_[True, (user_code[1:] != user_code[:-1]) | (ts_ns[1:] != ts_ns[:-1])]
    first = np.flatnonzero(starts)
    return first[np.cumsum(starts) - 1]


def _training_venues(ev: pd.DataFrame, train: np.ndarray) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """Candidate venues (those with a training-period event) and every event's venue index.

    A venue is an item (`item_keys`: the item id, else text and cell, within the dataset). Its category, text and coordinates are the most
    frequent category and text and the mean position of its training events.
    """
    key = pd.Series(item_keys(ev), index=ev.index)
    item = ev["item_id"].where(ev["item_id"].notna(), ev["text"]).astype(str)
    category = ev["category"].where(ev["category"].notna(), NO_CATEGORY).astype(str)
    tr = pd.DataFrame(
        {
            "key": key[train],
            "dataset_id": ev["dataset_id"][train],
            "item_id": item[train],
            "category": category[train],
            "text": ev["text"][train].astype(str),
            "lat": ev["lat"][train],
            "lon": ev["lon"][train],
        }
    )
    grouped = tr.groupby("key", sort=True)
    venues = grouped.agg(
        dataset_id=("dataset_id", "first"),
        item_id=("item_id", "first"),
        lat=("lat", "mean"),
        lon=("lon", "mean"),
        count=("lat", "size"),
    )
    venues["category"] = most_frequent(tr["key"], tr["category"]).reindex(venues.index)
    venues["text"] = most_frequent(tr["key"], tr["text"]).reindex(venues.index)
    categories = sorted(venues["category"].unique().tolist())
    venues["category_idx"] = pd.Index(categories).get_indexer(venues["category"])
    keys = venues.index
    venues = venues.reset_index(names="key")
    venue_idx = keys.get_indexer(key).astype(np.int64)
    return venues, categories, venue_idx


def most_frequent(keys: pd.Series, values: pd.Series) -> pd.Series:
    """The most frequent value per key, ties broken alphabetically so the split is deterministic."""
    counts = pd.DataFrame({"key": keys, "value": values}).value_counts().rename("n").reset_index()
    counts = counts.sort_values(["key", "n", "value"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("key").set_index("key")["value"]
