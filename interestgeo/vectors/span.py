"""A dynamic update's whole-span aggregates ("all", hours of the week), re-weighed by the people it
touched: their old contribution out, their new one in.

Why: a window aggregate is recomputed from the events of its window, but a whole-span one covers
every event of the dataset, and reading them all (with their vectors) for an upload of a hundred
events would cost a full score's memory. A span row holds a user-weighted mean with its people,
i.e. a sum over people of each person's mean there; people are independent, so the row's sums
minus the touched people's old per-person means plus their new ones is exactly the row a full
recompute gives (tests/vectors/test_refresh.py: an update equals a full re-score).

Two kinds of touched people. One whose events all had vectors and are only re-scored (`score
--since`) keeps their event counts everywhere, so their mean in a cell moves by (new - old) / n
for each re-scored event there, n their events in the cell: only the re-scored rows' old vectors
are read (a few per person instead of whole histories: ~0.3 s of a 1,000-event update of the
demo's known users). One with new events (or without stored user rows) is taken out and put back
whole, from every event of theirs. Memory: the touched people's histories and the dataset's span
rows, not its events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from interestgeo.analytics import Filters, ScoredEvents, aggregate_cell_windows, aggregate_user_windows
from interestgeo.cells import WHOLE_DATASET, cell_to_parent
from interestgeo.config import Config
from interestgeo.topics import Topics, topic_probabilities
from interestgeo.vectors.chunks import _new_user, stored_aggregates
from interestgeo.vectors.staging import _cell_window_columns, _user_window_columns
from interestgeo.windows import SPAN_WINDOWS, window_keys, window_starts

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = ["SpanChange", "span_change", "span_rows_stored", "update_span_aggregates"]

_KEYS = ["resolution", "cell", "window_start"]


def span_rows_stored(store: Store, config: Config, datasets: list[int]) -> bool:
    """Whether every span aggregate of these datasets is stored (with shares): what the update re-weighs."""
    return all(
        store.has_cell_window_shares(window, resolutions[0], d)
        for d in datasets for window, resolutions, _ in stored_aggregates(config) if window in SPAN_WINDOWS
    )


@dataclass
class SpanChange:
    """The touched people's events, and how each is re-weighed (`span_change`)."""

    histories: pd.DataFrame  # every event of the touched people (store.events() format and order)
    keep: np.ndarray  # (N,) bool: the rows re-scored now
    had: np.ndarray  # (N,) bool: the rows with a stored vector until now
    whole: np.ndarray  # (N,) bool: rows of people taken out and put back whole

    @property
    def reads(self) -> np.ndarray:
        """(N,) bool: the rows whose stored (old) vectors `update_span_aggregates` needs, in this order."""
        return (self.whole & self.had) | (~self.whole & self.keep)


def span_change(store: Store, config: Config, histories: pd.DataFrame, keep: np.ndarray, had: np.ndarray) -> SpanChange:
    """Which touched people are re-weighed by their re-scored rows alone: those whose re-scored
    rows all had vectors (their counts stay) and who have their stored user rows; the others whole."""
    first = _new_user(histories)
    person = np.cumsum(first) - 1  # (N,) person number of each row
    grown = np.bincount(person, weights=keep & ~had, minlength=int(first.sum())) > 0
    people = histories.loc[first, ["dataset_id", "user_id"]].reset_index(drop=True)
    for window, _, with_users in stored_aggregates(config):
        if window in SPAN_WINDOWS and with_users:
            stored = store.user_window_rows(window, people)
            known = pd.MultiIndex.from_frame(people.astype({"dataset_id": "int64", "user_id": str})).isin(
                pd.MultiIndex.from_frame(stored.astype({"dataset_id": "int64", "user_id": str}))
            )
            grown |= ~known
    return SpanChange(histories, np.asarray(keep, dtype=bool), np.asarray(had, dtype=bool), grown[person])


def update_span_aggregates(
    store: Store, config: Config, topics: Topics, change: SpanChange, old: np.ndarray, new: np.ndarray,
    datasets: list[int],
) -> None:
    """Replace the span rows of `datasets`: stored - the touched people's old contributions + their
    new ones. `old`: the stored vectors of the `change.reads` rows, `new`: the vectors of the
    `change.keep` rows (both in row order)."""
    h, keep, had, whole = change.histories, change.keep, change.had, change.whole
    old_at = np.cumsum(change.reads) - 1  # (N,) row of `old` (where read)
    new_at = np.cumsum(keep) - 1
    # people taken out whole: their events and vectors until now, and from now on
    context = h.assign(topic=np.int16(0))  # the aggregates do not read an event's own topic
    was, now = whole & had, whole & (had | keep)
    vectors = np.zeros((int(now.sum()), new.shape[1]), dtype=np.float32)
    vectors[~keep[now]] = old[old_at[now & ~keep]]
    vectors[keep[now]] = new[new_at[now & keep]]
    before = ScoredEvents(context.loc[was].reset_index(drop=True), old[old_at[was]], topics, config)
    after = ScoredEvents(context.loc[now].reset_index(drop=True), vectors, topics, config)
    # people re-scored only: each re-scored row moves its person's mean by (new - old) / n
    moved = ~whole & keep
    temperature = config.analytics.topic_temperature
    delta = _Moved(
        h.loc[~whole].reset_index(drop=True), moved[~whole],
        new[new_at[moved]].astype(np.float64) - old[old_at[moved]],
        topic_probabilities(new[new_at[moved]], topics, temperature).astype(np.float64)
        - topic_probabilities(old[old_at[moved]], topics, temperature),
    )
    for dataset_id in datasets:
        filters = Filters(datasets=(dataset_id,))
        for window, resolutions, with_users in stored_aggregates(config):
            if window not in SPAN_WINDOWS:
                continue
            # each part, as sums over its people: (keys, users, events, vector sums, share sums)
            parts = []
            for resolution in resolutions:
                got = store.cell_window_shares(window, resolution, datasets=[dataset_id], vectors=True)
                if got is None:
                    raise LookupError("no span aggregates stored to update: run a full `interestgeo score`")
                stored, unit, shares = got
                parts.append(_part(stored.assign(resolution=resolution), unit, shares, 1.0))
                for scored, sign in ((before, -1.0), (after, 1.0)):
                    if len(scored):
                        frame, unit, shares = aggregate_cell_windows(scored, filters, resolution, window)
                        parts.append(_part(frame.assign(resolution=resolution), unit, shares, sign))
                frame, vector_sums, share_sums = delta.cells(dataset_id, resolution, window)
                zero = np.zeros(len(frame))  # re-scored people: their counts stay
                parts.append((frame.assign(resolution=resolution), zero, zero, vector_sums, share_sums))
            cells, unit, shares = _summed(parts)
            store.replace_window_vectors(
                "cell_window_vectors", window, _cell_window_columns(cells.assign(dataset_id=dataset_id), window), unit,
                datasets=[dataset_id], resolution=list(resolutions), shares=shares,
            )
            if with_users:
                _replace_user_rows(store, window, dataset_id, after, delta, filters)


class _Moved:
    """The re-scored rows of people re-weighed by them: their rows (all events of those people) and,
    for the `moved` ones, the change of vector and of topic shares."""

    def __init__(self, rows: pd.DataFrame, moved: np.ndarray, vectors: np.ndarray, shares: np.ndarray) -> None:
        self.rows = rows  # every event of these people (store.events() order)
        self.moved = moved  # (n,) bool: the re-scored rows
        self.vectors = vectors  # (moved, D) float64 new - old vector
        self.shares = shares  # (moved, T) float64 new - old topic probabilities
        self.person = np.cumsum(_new_user(rows)) - 1  # (n,)
        self.dataset = rows["dataset_id"].to_numpy()
        self.local_ns = rows["local_ts"].to_numpy("datetime64[ns]")
        self.index = np.cumsum(moved) - 1  # (n,) row among the moved ones (where moved)

    def _change(self, inside: np.ndarray, cell: np.ndarray, wkey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Of the rows `inside` (with their `cell` and window key), the moved ones' (rows of
        `vectors` and `shares`, 1 / their person's events in their cell x window, and the moved
        ones as a mask of those rows)."""
        pair, _ = _groups(self.person[inside], cell, wkey)
        mine = self.moved[inside]
        return self.index[inside][mine], 1.0 / np.bincount(pair)[pair[mine]], mine

    def cells(self, dataset_id: int, resolution: int, window: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """(frame[cell, window_start], (G, D) vector sums, (G, T) share sums) of the moved rows'
        change per cell x window at `resolution`."""
        inside = self.dataset == dataset_id
        base = self.rows["cell"].to_numpy(np.int64)[inside]
        cell = np.zeros(len(base), dtype=np.int64) if resolution == WHOLE_DATASET else cell_to_parent(base, resolution)
        wkey = window_keys(self.local_ns[inside], window)
        index, weight, mine = self._change(inside, cell, wkey)
        group, first = _groups(cell[mine], wkey[mine])
        frame = pd.DataFrame({"cell": cell[mine][first], "window_start": window_starts(wkey[mine][first], window)})
        return (frame, _sums(group, len(first), self.vectors[index] * weight[:, None]),
                _sums(group, len(first), self.shares[index] * weight[:, None]))

    def users(self, dataset_id: int, window: str) -> tuple[pd.DataFrame, np.ndarray]:
        """(frame[user_id, window_start], (G, D) change of the person's mean there) of each moved
        person x window of a dataset."""
        inside = self.dataset == dataset_id
        wkey = window_keys(self.local_ns[inside], window)
        index, weight, mine = self._change(inside, np.zeros(len(wkey), dtype=np.int64), wkey)
        group, first = _groups(self.person[inside][mine], wkey[mine])
        frame = pd.DataFrame({
            "user_id": self.rows["user_id"].astype(str).to_numpy()[inside][mine][first],
            "window_start": window_starts(wkey[mine][first], window),
        })
        return frame, _sums(group, len(first), self.vectors[index] * weight[:, None])


def _groups(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m,) group of each row by its tuple of `columns` values ((m,) each), and (G,) the first row
    of each group (integer codes, kept dense after each column, instead of a MultiIndex: ~10x faster)."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        code, uniques = pd.factorize(column)
        key = pd.factorize(key * len(uniques) + code)[0].astype(np.int64)
    _, first, group = np.unique(key, return_index=True, return_inverse=True)
    return group, first


def _sums(group: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """(n, C) sums of the rows of `values` (m, C) by `group` (m,) (sorted, then one reduceat)."""
    out = np.zeros((n, values.shape[1]))
    if len(group):
        order = np.argsort(group, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
        out[group[order][starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out


def _summed(
    parts: list[tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Cell rows from parts of sums over people (see `_part`), added up per resolution x cell x
    window: (frame[resolution, cell, window_start, events, users, coherence], unit vectors, shares)."""
    keys = pd.concat([p[0][_KEYS] for p in parts], ignore_index=True)
    group, first = _groups(*(keys[k].to_numpy() for k in _KEYS))
    n = len(first)
    users, events = np.zeros(n), np.zeros(n)
    vectors, topic_sums = np.zeros((n, parts[0][3].shape[1])), np.zeros((n, parts[0][4].shape[1]))
    at = 0
    for frame, people, count, vecs, shs in parts:
        rows = group[at : at + len(frame)]
        at += len(frame)
        # each part's keys are distinct, so a plain indexed add is exact (np.add.at is ~10x slower)
        users[rows] += people
        events[rows] += count
        vectors[rows] += vecs
        topic_sums[rows] += shs
    keep = np.rint(users) > 0
    users, events = np.rint(users[keep]), np.rint(events[keep])
    means = vectors[keep] / users[:, None]
    norms = np.linalg.norm(means, axis=1)
    frame = keys.iloc[first[keep]].reset_index(drop=True).assign(
        events=events.astype(np.int64), users=users.astype(np.int64), coherence=norms.astype(np.float32)
    )
    unit = (means / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    return frame, unit, (topic_sums[keep] / users[:, None]).astype(np.float32)


def _part(
    frame: pd.DataFrame, unit: np.ndarray, shares: np.ndarray, sign: float
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cell rows (frame[resolution, cell, window_start, events, users, coherence], unit vectors,
    shares) as signed sums over their people: each person's mean vector and shares, summed."""
    people = frame["users"].to_numpy(np.float64)
    return (frame, sign * people, sign * frame["events"].to_numpy(np.float64),
            sign * unit * (frame["coherence"].to_numpy(np.float64) * people)[:, None], sign * shares * people[:, None])


def _replace_user_rows(
    store: Store, window: str, dataset_id: int, after: ScoredEvents, moved: _Moved, filters: Filters
) -> None:
    """The dataset's user rows of `window`: those of people taken out whole replaced by their new
    ones, those of people re-scored only moved by their change."""
    stored, vectors, _ = store.window_vectors("user_window_vectors", window, datasets=[dataset_id])
    fresh, fresh_vectors = aggregate_user_windows(after, filters, window)
    if len(stored):
        touched = stored["user_id"].astype(str).isin(set(fresh["user_id"].astype(str))).to_numpy()
        kept, vectors = stored.loc[~touched].reset_index(drop=True), vectors[~touched]
        change, change_vectors = moved.users(dataset_id, window)
        at = pd.MultiIndex.from_frame(kept[["user_id", "window_start"]].astype({"user_id": str})).get_indexer(
            pd.MultiIndex.from_frame(change))
        if (at < 0).any():  # span_change takes such people out whole
            raise LookupError("a re-scored person has no stored user row to update: run a full `interestgeo score`")
        means = vectors[at] * kept["coherence"].to_numpy(np.float64)[at, None] + change_vectors
        norms = np.linalg.norm(means, axis=1)
        kept.loc[at, "coherence"] = norms.astype(np.float32)
        vectors[at] = means / np.maximum(norms, 1e-12)[:, None]
        frame = pd.concat([kept[fresh.columns], fresh], ignore_index=True)
        matrix = np.concatenate([vectors, fresh_vectors])
    else:
        frame, matrix = fresh, fresh_vectors
    store.replace_window_vectors(
        "user_window_vectors", window, _user_window_columns(frame, dataset_id, window), matrix, datasets=[dataset_id],
    )
