"""Inference: a trained checkpoint behind the evaluation's Scorer protocol and the analytics API.

`InterestScorer` is the stateful part (the model, the worlds of the datasets it scores, the text
lookup and the head's reusable buffers); `score_histories` is the plain function the training loop
uses for validation, so training and the evaluation rank with the same code.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import torch

from interestgeo.calibration import calibration_cutoff
from interestgeo.model.checkpoint import LoadedCheckpoint, adapted_name, load_checkpoint
from interestgeo.model.data import (
    EventTable,
    cover_windows,
    history_windows,
    length_batches,
    split_table,
    user_starts,
)
from interestgeo.model.network import Batch, InterestModel, bfloat16_scoring
from interestgeo.model.world import World, world_from_events, world_from_split

if TYPE_CHECKING:
    from interestgeo.store import Store
    from interestgeo.text import TextEncoder

__all__ = ["InterestScorer", "score_histories", "score_rows", "torch_threads"]


@torch.no_grad()
def score_histories(
    model: InterestModel,
    table: EventTable,
    history_start: np.ndarray,
    history_end: np.ndarray,
    time_given: bool,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, V) venue log-probs and (n, K) category scores for the event after rows [start, end).

    The model reads the last max_len rows of each history; with `time_given` it also sees the
    time of the predicted event (the time features of row `end`, the next row of that user).
    """
    model.eval()
    wins = history_windows(np.asarray(history_start), np.asarray(history_end), model.config.max_len)
    out_v = np.full((len(wins), model.n_venues), -np.inf, dtype=np.float32)
    out_c = np.full((len(wins), model.n_categories), -np.inf, dtype=np.float32)
    for i in range(0, len(wins), batch_size):
        w = wins[i : i + batch_size]
        keep = [j for j, (s, e) in enumerate(w) if e > s]  # an empty history cannot be scored
        if not keep:
            continue
        batch = table.batch([w[j] for j in keep], model.config.max_len, time_given)
        v, c = model.score_last(batch)
        out_v[i + np.array(keep)] = v.numpy()
        out_c[i + np.array(keep)] = c.numpy()
    return out_v, out_c


def score_rows(
    model: InterestModel, table: EventTable, samples: Any, time_given: bool, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores for split Samples (their history ranges)."""
    return score_histories(model, table, samples.history_start, samples.history_end, time_given, batch_size)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch CPU threads set to `n` inside (None: unchanged), the previous count restored after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class InterestScorer:
    """A trained model behind the Scorer protocol and the analytics API (stateful: model + text cache).

    `.score(split, samples)`: next-venue log-probs (n, V) over the split's venues and category scores.
    `.interest_vectors(events)`: (N, E) L2-normalised interest right after each event, in text space.
    `.attention_rollup(user_events)`: how much each of the user's events feeds the last vector.
    """

    def __init__(
        self, store: Store, checkpoint: LoadedCheckpoint, *, time_given: bool | None = None, name: str | None = None,
        encoder: TextEncoder | None = None, use_adapted: bool = False,
    ) -> None:
        self.store = store
        self.checkpoint = checkpoint
        self.model = checkpoint.model  # the model of the dataset being scored (see _enter)
        # with `use_adapted`, a dataset with a checkpoint adapted to it ("adapted:NAME") is scored by that one
        self.adapted: dict[int, LoadedCheckpoint] = self._adapted_checkpoints() if use_adapted else {}
        self.config = checkpoint.config
        self.max_len = self.config.model.max_len
        self.time_given = self.config.model.use_target_time if time_given is None else time_given
        self.name = name or checkpoint.name
        # a caller's text encoder is shared when it is the model the checkpoint was trained with
        # (loading one costs about 0.2 s, as much as a dynamic update spends on a tenth of its events)
        same = encoder is not None and encoder.model_id == checkpoint.text_model_id
        self._encoder: TextEncoder | None = encoder if same else None
        # per dataset: the world it is scored against, and the cutoff its counts stop at
        self._worlds: dict[int, World] = {}
        self._cutoffs: dict[int, pd.Timestamp | None] = {}
        self._split: tuple[int, World, EventTable] | None = None  # the evaluation split's world and table
        self._model_world: World | None = None  # the world the model holds now
        # model.expected_text's (block rows, V) buffers, kept between calls
        self._workspace: dict[str, Any] = {}
        # texts without the store (a detached scorer): a lookup of every text it will meet
        self._text_lookup: Callable[[list[str]], np.ndarray] | None = None

    @classmethod
    def from_checkpoint(
        cls, store: Store, checkpoint_id: int | str | None = None, *, name: str | None = None,
        time_given: bool | None = None, scorer_name: str | None = None, encoder: TextEncoder | None = None,
    ) -> InterestScorer:
        """The newest "model" checkpoint (or one by id / name) as a scorer (`encoder`: see __init__)."""
        checkpoint = load_checkpoint(store, checkpoint_id, name)
        return cls(store, checkpoint, time_given=time_given, name=scorer_name, encoder=encoder)

    # -- inputs
    def text_vectors(self, texts: list[str]) -> np.ndarray:
        from interestgeo.text import embed_texts, encoder_for

        if self._text_lookup is not None:  # a detached scorer (see `detached`)
            return self._text_lookup(texts)
        if self._encoder is None:
            self._encoder = encoder_for(self.config.text)
        return embed_texts(self.store, self._encoder, texts, warn=None)

    def detached(self, datasets: list[int], text_vectors: Callable[[list[str]], np.ndarray]) -> InterestScorer:
        """A copy that scores `datasets` with no store and no text encoder: their worlds are built
        now, texts come from `text_vectors` (a picklable lookup: score.TextTable). It pickles, so a
        worker process or a Ray actor can hold one (score.chunk_state). Its models are copies:
        pointing them at a world does not move this scorer's."""
        for dataset_id in datasets:
            self.world(int(dataset_id))
        out = copy.copy(self)
        out.store = None  # type: ignore[assignment]
        out._encoder = None
        out._text_lookup = text_vectors
        out._worlds = {int(d): self._worlds[int(d)] for d in datasets}
        out._cutoffs = {int(d): self._cutoffs.get(int(d)) for d in datasets}
        out.checkpoint = copy.deepcopy(self.checkpoint)
        out.adapted = {d: copy.deepcopy(c) for d, c in self.adapted.items() if d in out._worlds}
        out.model = out.checkpoint.model
        out._split, out._model_world, out._workspace = None, None, {}
        return out

    def reading_texts_from(self, text_vectors: Callable[[list[str]], np.ndarray]) -> InterestScorer:
        """A copy that takes texts from `text_vectors` instead of the store (a full score computes
        with the store closed); it shares this scorer's worlds, cutoffs and models (worlds built
        through either serve both), and builds a world only from events it is given."""
        out = copy.copy(self)
        out._text_lookup = text_vectors
        return out

    def use_cutoffs(self, cutoffs: dict[int, pd.Timestamp | None]) -> None:
        """Score dataset d against its events before cutoffs[d] (see world.py); a dataset without
        one uses the cutoff its last calibration stored, else its own most recent tenth."""
        for dataset_id, cutoff in cutoffs.items():
            if dataset_id not in self._cutoffs or self._cutoffs[dataset_id] != cutoff:
                self._cutoffs[dataset_id] = cutoff
                self._worlds.pop(dataset_id, None)

    def world(self, dataset_id: int, events: pd.DataFrame | None = None) -> World:
        """The world dataset `dataset_id` is scored against (built once per scorer from its events:
        `events` when the caller holds them, store.events() order, else read from the store)."""
        if dataset_id not in self._worlds:
            if events is None:
                events = self.store.events([dataset_id])
            if events.empty:
                raise LookupError(f"dataset {dataset_id} has no events")
            if dataset_id in self._cutoffs:
                cutoff = self._cutoffs[dataset_id]
            else:
                cutoff = self.store.calibration_cutoff(dataset_id)
                if cutoff is None:
                    cutoff = calibration_cutoff(events["ts"])
                self._cutoffs[dataset_id] = cutoff
            self._worlds[dataset_id] = world_from_events(events, cutoff, self.text_vectors, self.checkpoint.vocab.sizes())
        return self._worlds[dataset_id]

    def _adapted_checkpoints(self) -> dict[int, LoadedCheckpoint]:
        """{dataset id: the newest checkpoint adapted to it} for the store's datasets."""
        out = {}
        for dataset_id, name in zip(self.store.datasets()["dataset_id"], self.store.datasets()["name"]):
            row = self.store.checkpoint(name=adapted_name(str(name)))
            if row is not None:
                out[int(dataset_id)] = load_checkpoint(self.store, int(row["id"]))
        return out

    def _enter(self, world: World, dataset_id: int | None = None) -> None:
        """Point the model of `dataset_id` (its adapted one, else the checkpoint's) at `world`
        (its (rows, V) buffers go: V changes)."""
        model = self.adapted[dataset_id].model if dataset_id in self.adapted else self.checkpoint.model
        if self._model_world is not world or self.model is not model:
            self.model = model
            self.model.set_world(world.data)
            self._workspace.clear()
            self._model_world = world

    def table(self, events: pd.DataFrame, rows: np.ndarray | None = None) -> EventTable:
        """The model inputs of `events` against the current world (all rows, or only `rows`:
        see EventTable.build)."""
        if len(events):  # the events' dataset's world (one dataset: _by_dataset splits them)
            self._enter(self.world(int(events["dataset_id"].iloc[0])), int(events["dataset_id"].iloc[0]))
        world = self._model_world
        assert world is not None
        texts = events["text"] if rows is None else events["text"][rows]
        codes, uniq = pd.factorize(texts.fillna("").astype(str))  # hashing: no sort of the strings
        vecs = self.text_vectors(list(uniq)) if len(uniq) else np.zeros((0, self.model.text_dim), np.float32)
        return EventTable.build(
            events, world.venues_of(events), world.categories_of(events), vecs, self.checkpoint.vocab,
            world.n_venues, rows=rows, text_codes=codes,
        )

    def _by_dataset(
        self, events: pd.DataFrame, fn: Callable[[pd.DataFrame, slice], np.ndarray]
    ) -> list[np.ndarray]:
        """`fn(rows of one dataset, their slice of events)` for each dataset's (contiguous) rows,
        with the model in that dataset's world."""
        ds = events["dataset_id"].to_numpy()
        bounds = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1], True])
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            self._enter(self.world(int(ds[a])), int(ds[a]))
            parts.append(fn(events.iloc[a:b].reset_index(drop=True), slice(int(a), int(b))))
        return parts

    # -- Scorer protocol
    def score(self, split: Any, samples: Any) -> tuple[np.ndarray, np.ndarray]:
        """(n, V) venue log-probs over split.venues and (n, K) category scores over split.categories:
        the model scores the split's world (its training-period venues and counts), zero-shot when
        it was trained on other data."""
        key = id(split.events)
        if self._split is None or self._split[0] != key:
            world = world_from_split(split, self.text_vectors, self.checkpoint.vocab.sizes())
            self._split = (key, world, split_table(split, world, self.checkpoint.vocab, self.text_vectors))
        _, world, table = self._split
        self._enter(world)
        return score_histories(
            self.model, table, samples.history_start, samples.history_end,
            self.time_given, self.config.model.eval_batch_size,
        )

    # -- analytics API
    def _cover_jobs(self, user_start: np.ndarray, needed: np.ndarray | None = None) -> list[tuple[int, int, int]]:
        """The covering windows (start, end, first owned row) of every user, see cover_windows.

        `user_start` (N,): first row of each row's user. With `needed` (N,) bool, windows that own
        no needed row are left out (the model is causal, so the rows before them are context only).
        Sorted by length, so a batch pads little.
        """
        starts = np.unique(user_start)
        ends = np.append(starts[1:], len(user_start))
        context = self.config.model.score_context
        jobs = [w for s, e in zip(starts, ends) for w in cover_windows(int(s), int(e), self.max_len, context)]
        if needed is not None:
            jobs = [(s, e, owned) for s, e, owned in jobs if needed[owned:e].any()]
        return sorted(jobs, key=lambda job: job[1] - job[0])

    def _jobs_table(self, events: pd.DataFrame, jobs: list[tuple[int, int, int]]) -> EventTable:
        """The table of `events` with inputs built for the rows some job reads only (all when all)."""
        edges = np.zeros(len(events) + 1, dtype=np.int64)
        np.add.at(edges, [s for s, _, _ in jobs], 1)
        np.add.at(edges, [e for _, e, _ in jobs], -1)
        rows = np.cumsum(edges[:-1]) > 0  # (N,) inside some job's window
        return self.table(events, None if rows.all() else rows)

    def interest_vectors(self, events: pd.DataFrame, neutralise_spacetime: bool = False) -> np.ndarray:
        """(N, E) float32 L2-normalised; row i uses only the same user's events up to i (causal)."""
        if len(events) == 0:
            return np.zeros((0, self.model.text_dim), dtype=np.float32)
        events = events.reset_index(drop=True)
        return np.concatenate(self._by_dataset(events, lambda part, _: self._bare_vectors(part, neutralise_spacetime)))

    @torch.inference_mode()
    def _bare_vectors(self, events: pd.DataFrame, neutralise_spacetime: bool) -> np.ndarray:
        out = np.zeros((len(events), self.model.text_dim), dtype=np.float32)
        jobs = self._cover_jobs(user_starts(events))
        table = self._jobs_table(events, jobs)
        for _, chunk, _, h in self._hidden_batches(table, jobs, neutralise_spacetime):
            z = self.model.interest(h)  # (B, T, E)
            for b, (s, e, owned) in enumerate(chunk):
                out[owned:e] = z[b, owned - s : e - s].numpy()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    # query positions per model.expected_text call (its (rows, V) passes run in blocks of
    # network.EXPECTED_BLOCK_ROWS inside; a call's per-row work and sparse products are shared)
    _HEAD_ROWS = 1024

    def _hidden_batches(
        self, table: EventTable, jobs: list[tuple[int, int, int]], neutralise_spacetime: bool, bfloat16: bool = False,
    ) -> Iterator[tuple[int, list[tuple[int, int, int]], Batch, torch.Tensor]]:
        """Run the trunk over `jobs` (start, end, owned; sorted by length) in batches of similar
        lengths (length_batches), on `model.threads` torch threads: yields (index of the chunk's
        first job, the chunk, its batch, hidden (B, T, C) float32). With `bfloat16` its matrix
        products run in bfloat16 (autocast: norms and softmax stay float32)."""
        with torch_threads(self.config.model.threads):
            for i, j in length_batches([e - s for s, e, _ in jobs], self.config.model.eval_batch_size):
                chunk = jobs[i:j]
                batch = table.batch([(s, e) for s, e, _ in chunk], self.max_len, False)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):  # not around the yield
                    h = self.model.hidden(batch, neutralise_spacetime=neutralise_spacetime)
                yield i, chunk, batch, h.float()

    def expected_venue_vectors(
        self,
        events: pd.DataFrame,
        neutralise_spacetime: bool = False,
        needed: np.ndarray | None = None,
        last_only: bool = False,
        sharpness: float | dict[int, float] | tuple[float, ...] = 1.0,
        needed_only: bool = False,
    ) -> np.ndarray:
        """(N, E) float32, unnormalised: row i = the expected text embedding of the user's next
        venue after event i under the model's full prediction in the world of the event's dataset
        (see _expected_vectors; `needed`, `last_only`, `needed_only` too).

        `sharpness` (model.sharpen): one for all, one per dataset id (1 where missing), or a tuple
        of them: then (S, N, E), one expectation per value, from one run of the model."""
        events = events.reset_index(drop=True)
        variants = isinstance(sharpness, tuple)
        if len(events) == 0:
            return np.zeros(((len(sharpness),) if variants else ()) + (0, self.model.text_dim), dtype=np.float32)

        def run(part: pd.DataFrame, rows: slice) -> np.ndarray:
            a = sharpness.get(int(part["dataset_id"].iloc[0]), 1.0) if isinstance(sharpness, dict) else sharpness
            return self._expected_vectors(
                part, neutralise_spacetime, None if needed is None else needed[rows], last_only, a, needed_only)

        return np.concatenate(self._by_dataset(events, run), axis=1 if variants else 0)

    @torch.inference_mode()
    def _expected_vectors(
        self,
        events: pd.DataFrame,
        neutralise_spacetime: bool = False,
        needed: np.ndarray | None = None,
        last_only: bool = False,
        sharpness: float | tuple[float, ...] = 1.0,
        needed_only: bool = False,
    ) -> np.ndarray:
        """(N, E) float32, unnormalised: row i = the expected text embedding of the user's next venue
        after event i under the model's full prediction (model.expected_text), from the same
        covering windows as interest_vectors.

        `needed` (N,) bool: only these rows are computed (the others are zeros), and windows owning
        none of them are skipped; with `needed_only` the result holds the needed rows alone, in
        order (calibration's few thousand rows of 100k-event groups: no (S, N, E) array of zeros).
        `last_only`: instead (users, E), each user's vector after their last event, read from their
        last max_len events (explanations need no more).
        Runs on `model.threads` torch threads: on 2 shared cores one thread scored 2-3x faster
        than two (OpenMP waits for a descheduled thread on every (N, V) op).
        """
        E = self.model.text_dim
        events = events.reset_index(drop=True)
        if len(events) == 0:
            return np.zeros((0, E), dtype=np.float32)
        user_start = user_starts(events)
        if last_only:
            starts = np.unique(user_start)
            ends = np.append(starts[1:], len(events))
            jobs = [(int(max(s, e - self.max_len)), int(e), int(e) - 1) for s, e in zip(starts, ends)]
            out_rows = np.arange(len(jobs))  # job j writes output row j
        else:
            jobs = self._cover_jobs(user_start, needed)
        # inputs for the rows in some window only: an update's older history is read for its counts
        table = self._jobs_table(events, jobs)
        lead = (len(sharpness),) if isinstance(sharpness, tuple) else ()  # (S,) variants first
        compact = needed_only and needed is not None and not last_only
        place = np.cumsum(needed) - 1 if compact else None  # event row -> its output row
        rows_out = len(jobs) if last_only else int(needed.sum()) if compact else len(events)
        out = np.zeros(lead + (rows_out, E), dtype=np.float32)
        low = bfloat16_scoring(self.model.config)  # the trunk's and the logits' products (see config)
        for i, chunk, batch, h in self._hidden_batches(table, jobs, neutralise_spacetime, low):
            qb = np.concatenate([np.full(e - owned, b) for b, (s, e, owned) in enumerate(chunk)])  # (n,)
            qt = np.concatenate([np.arange(owned - s, e - s) for s, e, owned in chunk])  # (n,)
            if last_only:
                rows = out_rows[i : i + len(chunk)]
            else:
                rows = np.concatenate([np.arange(owned, e) for s, e, owned in chunk])  # (n,) event rows
                if needed is not None:
                    wanted = needed[rows]
                    qb, qt, rows = qb[wanted], qt[wanted], rows[wanted]
            for k in range(0, len(rows), self._HEAD_ROWS):
                sl = slice(k, k + self._HEAD_ROWS)
                qb_t, qt_t = torch.from_numpy(qb[sl]), torch.from_numpy(qt[sl])
                expected = self.model.expected_text(h, batch, qb_t, qt_t, self._workspace, sharpness)
                out[..., rows[sl] if place is None else place[rows[sl]], :] = expected.numpy()  # ([S,] n, E)
        return out

    @torch.inference_mode()
    def next_venues(self, user_events: pd.DataFrame, k: int = 10) -> pd.DataFrame:
        """The model's own next-venue distribution after a person's last event (one dataset):
        the top `k` items of their dataset's world with their probabilities (pointer, counts,
        transitions, distance and interests together; the next event's time is not given), and
        the person's past venues among them. Columns: item_id, text, category, lat, lon, visits
        (everyone's, before the world's cutoff), probability."""
        events = user_events.reset_index(drop=True)
        if events.empty:
            raise LookupError("no events to predict from")
        dataset_id = int(events["dataset_id"].iloc[0])
        world = self.world(dataset_id)
        self._enter(world, dataset_id)
        start = max(0, len(events) - self.max_len)
        table = self.table(events.iloc[start:].reset_index(drop=True))
        logp, _ = self.model.score_last(table.batch([(0, len(events) - start)], self.max_len, False))
        p = logp[0].exp().numpy()
        top = np.argsort(-p, kind="stable")[:k]
        return world.items.iloc[top].assign(probability=p[top]).reset_index(drop=True)

    @torch.no_grad()
    def attention_rollup(self, user_events: pd.DataFrame) -> np.ndarray:
        """(T,) attention roll-up (Abnar & Zuidema 2020) from the last event back over the user's events.

        Per layer: heads averaged, the residual added as 0.5 * identity, rows renormalised; the
        layers' matrices multiplied. Events older than the model's window get 0. Sums to 1.
        """
        n = len(user_events)
        out = np.zeros(n, dtype=np.float64)
        if n == 0:
            return out
        events = user_events.reset_index(drop=True)
        self._enter(self.world(int(events["dataset_id"].iloc[0])), int(events["dataset_id"].iloc[0]))
        table = self.table(events)
        start = max(0, n - self.max_len)
        batch = table.batch([(start, n)], self.max_len, False)
        atts: list[torch.Tensor] = []
        self.model.hidden(batch, attentions=atts)
        T = n - start
        roll = torch.eye(T, dtype=torch.float64)
        for a in atts:
            a = a[0].mean(0).double()  # (T, T)
            a = 0.5 * a + 0.5 * torch.eye(T, dtype=torch.float64)
            a = a / a.sum(-1, keepdim=True)
            roll = a @ roll
        out[start:] = roll[-1].numpy()
        return out
