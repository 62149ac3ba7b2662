"""The model's inputs: events -> per-event arrays (`EventTable`) -> padded windows (`Batch`).

Why a module of its own: training and scoring must read exactly the same inputs, so both build
them here (training windows in `training_windows`, scoring windows through `cover_windows` /
`history_windows` in scorer.py). Data flow: split (split.py) -> text vectors (text.py, cached in
the store) -> `EventTable` (per-event arrays) -> windows of one user's events -> `Batch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from interestgeo.config import ModelConfig
from interestgeo.model.network import N_NEXT_TIME, Batch, ModelData
from interestgeo.model.spacetime import CellVocab, event_features
from interestgeo.model.world import World, world_from_split

__all__ = [
    "EventTable",
    "Prepared",
    "cover_windows",
    "history_windows",
    "length_batches",
    "placeholder_world",
    "prepare",
    "split_table",
    "training_windows",
    "user_starts",
]


@dataclass
class EventTable:
    """Per-event model inputs for one events frame (rows in frame order), plus per-user row ranges."""

    venue: np.ndarray  # (N,) int64 in [0, V]; V = unknown venue
    category: np.ndarray  # (N,) int64, -1 = unknown category
    text: np.ndarray  # (U + 1, E) float32 distinct text embeddings; row 0 zeros (padding, rows without inputs)
    text_row: np.ndarray  # (N,) int64 each event's row of `text`
    cells: np.ndarray  # (N, R) int64
    lat: np.ndarray  # (N,) float32
    lon: np.ndarray  # (N,) float32
    cont: np.ndarray  # (N, 8) float32
    next_time: np.ndarray  # (N, 7) float32 time features of the same user's next event (zeros if none)
    user_start: np.ndarray  # (N,) int64 first row of this event's user
    n_venues: int  # V: the venue id used for unknown venues and padding

    @classmethod
    def build(
        cls,
        events: pd.DataFrame,
        venue: np.ndarray,
        category: np.ndarray,
        text_vectors: np.ndarray,
        vocab: CellVocab,
        n_venues: int,
        rows: np.ndarray | None = None,
        text_codes: np.ndarray | None = None,
    ) -> EventTable:
        """`venue` (N,) each event's venue idx (`n_venues`: unknown) and `category` (N,) its
        category idx (-1: unknown), from a World; `text_vectors` is one row per event (per row of
        `rows`), or with `text_codes` (one per event / row of `rows`) the distinct vectors they index:
        a (N, E) copy per event would cost a fresh process more in page faults than its use.

        `rows` (N,) bool: only these rows get model inputs (text, cells, place, time); the others
        keep their venue and user only, which is all the visit and transition counts before a
        window read (a dynamic update reads a long history for the counts, but runs the model over
        a few windows of it). Their inputs are zeros.
        """
        n = len(events)
        venue = np.asarray(venue, dtype=np.int64)
        category = np.asarray(category, dtype=np.int64)
        user_start = user_starts(events)
        new_user = user_start == np.arange(n)
        if rows is None:
            at = np.arange(n)  # the rows whose inputs are built
        else:
            # the rows' features read the previous event (gap, distance) and the next (its time)
            rows = np.asarray(rows, dtype=bool)
            ctx = rows.copy()
            ctx[:-1] |= rows[1:] & ~new_user[1:]
            ctx[1:] |= rows[:-1] & ~new_user[1:]
            at = np.flatnonzero(ctx)
            events = events.iloc[at]
        category_at = category[at]
        feats = event_features(events)
        nt = np.zeros((len(at), N_NEXT_TIME), dtype=np.float32)  # time features of each row's next event
        if len(at) > 1:
            has_next = (at[1:] == at[:-1] + 1) & ~new_user[at[1:]]  # the next row is there, same user
            nxt = np.concatenate([feats.cont[1:, :6], np.log1p(feats.gap_hours[1:])[:, None]], axis=1)
            nt[:-1][has_next] = nxt[has_next]

        def spread(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
            """Values at the rows of `at` -> (N, ...) with only `rows` filled."""
            if rows is None:
                return values
            out = np.full((n, *values.shape[1:]), fill, dtype=values.dtype)
            keep = rows[at]
            out[at[keep]] = values[keep]
            return out

        text = np.asarray(text_vectors, dtype=np.float32)
        codes = np.arange(len(text)) if text_codes is None else np.asarray(text_codes, dtype=np.int64)
        text_row = np.zeros(n, dtype=np.int64)
        text_row[slice(None) if rows is None else rows] = codes + 1
        return cls(
            venue=venue,
            category=spread(category_at, -1),
            text=np.concatenate([np.zeros((1, text.shape[1]), dtype=np.float32), text]),
            text_row=text_row,
            cells=spread(vocab.lookup(events["cell"].to_numpy(dtype=np.int64))),
            lat=spread(feats.lat.astype(np.float32)),
            lon=spread(feats.lon.astype(np.float32)),
            cont=spread(feats.cont),
            next_time=spread(nt),
            user_start=user_start,
            n_venues=n_venues,
        )

    def _before_windows(self, windows: list[tuple[int, int]]) -> list[np.ndarray]:
        """Visit counts and transition counts of each window's user before the window starts."""
        V = self.n_venues
        visits, transitions = [], []
        for s, e in windows:
            u = int(self.user_start[s]) if s < len(self.user_start) else s
            before = self.venue[u:s]
            before = before[before < V]
            ids, counts = np.unique(before, return_counts=True)
            visits.append((ids, counts.astype(np.float32)))
            # transitions (i-1 -> i) for i in (u, s]: the one into the window's first event included
            src, dst = self.venue[u:s], self.venue[u + 1 : s + 1]
            ok = (src < V) & (dst < V)
            keys, tr_counts = np.unique(src[ok] * (V + 1) + dst[ok], return_counts=True)
            transitions.append((keys // (V + 1), keys % (V + 1), tr_counts.astype(np.float32)))
        pre_v, pre_c = _padded(visits, (V, 0.0), (np.int64, np.float32))
        pre_s, pre_d, pre_t = _padded(transitions, (V, V, 0.0), (np.int64, np.int64, np.float32))
        return [pre_v, pre_c, pre_s, pre_d, pre_t]

    def batch(self, windows: list[tuple[int, int]], max_len: int, time_given: np.ndarray | bool) -> Batch:
        """Right-padded Batch of row ranges [start, end); `time_given` per window or for all."""
        B = len(windows)
        T = max(1, max(e - s for s, e in windows))
        T = min(T, max_len)
        idx = np.zeros((B, T), dtype=np.int64)
        valid = np.zeros((B, T), dtype=bool)
        for b, (s, e) in enumerate(windows):
            L = e - s
            idx[b, :L] = np.arange(s, e)
            valid[b, :L] = True
        venue = np.where(valid, self.venue[idx], self.n_venues)
        given_rows = np.broadcast_to(np.asarray(time_given, dtype=bool), (B,))
        given = given_rows[:, None] & valid  # (B, T)
        pre_v, pre_c, pre_s, pre_d, pre_t = self._before_windows(windows)
        return Batch(
            pre_venue=torch.from_numpy(pre_v),
            pre_count=torch.from_numpy(pre_c),
            pre_src=torch.from_numpy(pre_s),
            pre_dst=torch.from_numpy(pre_d),
            pre_tr_count=torch.from_numpy(pre_t),
            venue=torch.from_numpy(venue),
            text=torch.from_numpy(self.text[np.where(valid, self.text_row[idx], 0)]),  # (B, T, E), padding 0
            cells=torch.from_numpy(self.cells[idx] * valid[..., None]),
            lat=torch.from_numpy(self.lat[idx]),
            lon=torch.from_numpy(self.lon[idx]),
            cont=torch.from_numpy(self.cont[idx] * valid[..., None]),
            next_time=torch.from_numpy(self.next_time[idx] * valid[..., None]),
            next_time_given=torch.from_numpy(np.ascontiguousarray(given)),
            length=torch.tensor([e - s for s, e in windows], dtype=torch.int64),
        )


def _padded(groups: list[tuple[np.ndarray, ...]], pads: tuple[float, ...], dtypes: tuple[Any, ...]) -> list[np.ndarray]:
    """Stack per-row arrays of different lengths into (B, max_len) arrays padded with `pads`."""
    width = max([len(g[0]) for g in groups] + [1])
    out = [np.full((len(groups), width), pad, dtype=dt) for pad, dt in zip(pads, dtypes)]
    for b, group in enumerate(groups):
        for arr, values in zip(out, group):
            arr[b, : len(values)] = values
    return out


def user_starts(events: pd.DataFrame) -> np.ndarray:
    """(N,) int64 first row of each row's user (events in store.events() order)."""
    n = len(events)
    new_user = np.ones(n, dtype=bool)
    if n > 1:  # a user is (dataset_id, user_id): compared column by column (joined keys cost 3x as much)
        dataset = events["dataset_id"].to_numpy()
        user = events["user_id"].to_numpy(dtype=object)
        new_user[1:] = (dataset[1:] != dataset[:-1]) | (user[1:] != user[:-1])
    starts = np.flatnonzero(new_user)
    return np.repeat(starts, np.diff(np.append(starts, n))).astype(np.int64)


def history_windows(starts: np.ndarray, ends: np.ndarray, max_len: int) -> list[tuple[int, int]]:
    """Row ranges [max(start, end - max_len), end) — the last max_len events before each end."""
    return [(int(max(s, e - max_len)), int(e)) for s, e in zip(starts, ends)]


def cover_windows(start: int, end: int, max_len: int, context: int | None = None) -> list[tuple[int, int, int]]:
    """Windows (s, e, first_owned) covering rows [start, end): each row is owned by exactly one
    window, in which it has at least `context` rows of context (at most and by default max_len/2;
    or every row before it).

    The windows sit on a fixed grid from the user's first row (every max_len - context rows), so a
    row's output never depends on how many rows come after it: appending events changes nothing
    earlier. Less context, fewer windows: a long history's rows pass through about
    max_len / (max_len - context) windows each (2 at the default).
    """
    half = max(1, max_len // 2)
    if context is None or context >= half:
        context = step = half
    else:
        context = max(1, context)
        step = max_len - context
    out = [(start, min(start + max_len, end), start)]
    s = start + step
    while s + context < end:
        out.append((s, min(s + max_len, end), s + context))
        s += step
    return out


# A batch of windows is cut where padding it to its longest window would waste more than this share
# of its positions and more than _PADDING_SLACK positions (small waste costs less than another call).
# Measured on a known-user update (NYC, 1,000 events): 12.5% / 1,024 padded 14% of the positions,
# 5% / 256 padded 7% and took 5-8% less time over the trunk and head.
_PADDING_SHARE = 0.05


_PADDING_SLACK = 256


# Positions (windows x padded length) per batch at most: the trunk's activations stay a few MB,
# cache-sized and reused from batch to batch (32k-position batches measured 5-10% slower per
# dynamic update, most of it in a fresh process's first batches; 2,048 a few % faster than 4,096,
# 1,024 slower again: per-batch steps).
_MAX_BATCH_POSITIONS = 2048


def length_batches(lengths: list[int], max_windows: int) -> list[tuple[int, int]]:
    """[i, j) ranges of `lengths` (window lengths, ascending) to run as one right-padded batch each.

    At most `max_windows` and _MAX_BATCH_POSITIONS positions per batch, and a new batch where the
    next window would make the padding too big (above): an update's windows range from a few
    events to max_len, and one batch padded them all to max_len (40% of the positions were padding).
    """
    out: list[tuple[int, int]] = []
    first, real = 0, 0
    for k, length in enumerate(lengths):
        size = k - first
        padded = (size + 1) * length  # positions if this window joins the batch
        too_big = size == max_windows or padded > _MAX_BATCH_POSITIONS
        if size and (too_big or padded - (real + length) > max(_PADDING_SHARE * (real + length), _PADDING_SLACK)):
            out.append((first, k))
            first, real = k, 0
        real += length
    if first < len(lengths):
        out.append((first, len(lengths)))
    return out


@dataclass
class Prepared:
    """Everything training and scoring need for one split."""

    split: Any
    table: EventTable
    world: World
    vocab: CellVocab

    @property
    def data(self) -> ModelData:
        return self.world.data


def split_table(split: Any, world: World, vocab: CellVocab, text_of: Callable[[list[str]], np.ndarray]) -> EventTable:
    """The model inputs of every event of the split, against `world` (built from the same split)."""
    ev = split.events
    codes, uniq = pd.factorize(ev["text"].fillna("").astype(str))
    venue = np.where(ev["venue_idx"].to_numpy() >= 0, ev["venue_idx"].to_numpy(), world.n_venues)
    category = world.categories_of(ev)
    return EventTable.build(ev, venue, category, text_of(list(uniq)), vocab, world.n_venues, text_codes=codes)


def prepare(split: Any, config: ModelConfig, text_of: Callable[[list[str]], np.ndarray]) -> Prepared:
    """`text_of(texts) -> (N, E)` embeds texts (through the store cache in production)."""
    ev = split.events
    train = (ev["part"] == "train").to_numpy()
    vocab = CellVocab.build(ev.loc[train, "cell"].to_numpy(dtype=np.int64), tuple(config.cell_resolutions))
    world = world_from_split(split, text_of, vocab.sizes())
    return Prepared(split, split_table(split, world, vocab, text_of), world, vocab)


def training_windows(prep: Prepared, max_len: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Windows over each user's training-period events with (B, T) next-venue/category targets."""
    ev = prep.split.events
    t = prep.table
    train = (ev["part"] == "train").to_numpy()
    n = len(ev)
    target_v = np.full(n, -1, dtype=np.int64)
    target_c = np.full(n, -1, dtype=np.int64)
    nxt_same = np.zeros(n, dtype=bool)
    nxt_same[:-1] = t.user_start[1:] == t.user_start[:-1]
    ok = np.zeros(n, dtype=bool)
    ok[:-1] = nxt_same[:-1] & train[1:] & train[:-1] & (t.venue[1:] < prep.world.n_venues)
    target_v[:-1] = np.where(ok[:-1], t.venue[1:], -1)
    target_c[:-1] = np.where(ok[:-1], t.category[1:], -1)
    windows: list[tuple[int, int]] = []
    tv, tc = [], []
    starts = np.unique(t.user_start)
    ends = np.append(starts[1:], n)
    for s, e in zip(starts, ends):
        rows = np.flatnonzero(train[s:e])
        if len(rows) < 2:
            continue
        e_train = s + rows[-1] + 1  # training events are a time prefix of the user's events
        for ws, we, owned in cover_windows(int(s), int(e_train), max_len):
            windows.append((ws, we))
            v = target_v[ws:we].copy()
            c = target_c[ws:we].copy()
            v[: owned - ws] = -1
            c[: owned - ws] = -1
            tv.append(v)
            tc.append(c)
    T = max_len
    V = np.full((len(windows), T), -1, dtype=np.int64)
    C = np.full((len(windows), T), -1, dtype=np.int64)
    for i, (v, c) in enumerate(zip(tv, tc)):
        V[i, : len(v)] = v
        C[i, : len(c)] = c
    return windows, V, C


def placeholder_world(text_dim: int, venues: int | None, categories: int | None, vocab: CellVocab) -> ModelData:
    """An empty world of the right shapes, to build a model before the data it scores is known."""
    V, K = venues or 1, categories or 1
    return ModelData(
        venue_text=torch.zeros(V, text_dim), venue_lat=torch.zeros(V), venue_lon=torch.zeros(V),
        venue_category=torch.zeros(V, dtype=torch.int64), category_text=torch.zeros(K, text_dim),
        markov_src=torch.zeros(0, dtype=torch.int64), markov_dst=torch.zeros(0, dtype=torch.int64),
        markov_count=torch.zeros(0), venue_count=torch.zeros(V), candidate=torch.ones(V, dtype=torch.bool),
        cell_sizes=vocab.sizes(), centre=(0.0, 0.0),
    )
