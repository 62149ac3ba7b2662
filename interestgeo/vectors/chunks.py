"""One chunk of whole users scored anywhere: here, in worker processes, or in a Ray actor.

A user's vectors depend on that user's earlier events only, so users are scored in chunks
(`score_chunk`, pure given a `ChunkState`) and the chunks merge exactly: per event vectors as
they are, cell x window aggregates as sums of per-user means with their user counts. The chunk
size bounds memory, never the answer. Each vector is quantised as soon as it is final
(store/compact.py) and everything is computed from its dequantised value, so the stored
aggregates are exactly what the stored vectors give. `chunk_state(detach=True)` builds a state
with no store or encoder inside (worlds built, every text embedded into a `TextTable`), so it
pickles for another process; `ChunkRunner` is the engine that runs the chunks (`local_chunks`,
`process_chunks`, ray_engine.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from interestgeo.analytics import Filters, ScoredEvents, aggregate_cell_windows, aggregate_user_windows
from interestgeo.cells import WHOLE_DATASET
from interestgeo.config import Config
from interestgeo.store.compact import CompactVectors, quantise_vectors
from interestgeo.topics import Topics, assign_event_topics, topic_similarities
from interestgeo.vectors.sources import (
    BlendedSource,
    ExpectedVenueSource,
    RecencySource,
    VectorSource,
    interest_vectors,
)

if TYPE_CHECKING:
    from interestgeo.store import Store

# Users are scored in chunks of about this many events, so the progress bar moves and memory stays flat.
_CHUNK_EVENTS = 20_000


class StoredAggregate(NamedTuple):
    """One window size of the aggregates a full score stores: cell rows at `resolutions`
    (`cells.WHOLE_DATASET` for the dataset as one region) and, with `users`, user rows."""

    window: str
    resolutions: tuple[int, ...]
    users: bool


def stored_aggregates(config: Config) -> tuple[StoredAggregate, ...]:
    """Every aggregate a score run stores, the one list the chunks, the writers and the engines read.

    The configured windows (`analytics.stored_windows`) at the stored resolutions and dataset-wide,
    for maps, playback and drift; the whole span ("all") likewise plus per user, the hours of the
    week dataset-wide, and the days dataset-wide (the Overview's trend line: its events and people
    per day, which DuckDB otherwise counts over every scored event): what answers a question of
    everyone without per-event vectors (analytics/stored.py)."""
    cells = (*config.analytics.stored_resolutions, WHOLE_DATASET)
    windows = config.analytics.stored_windows
    return (
        *(StoredAggregate(window, cells, True) for window in windows),
        StoredAggregate("all", cells, True),
        StoredAggregate("hour_of_week", (WHOLE_DATASET,), False),
        *(() if "day" in windows else (StoredAggregate("day", (WHOLE_DATASET,), False),)),
    )


class TextTable:
    """The text vectors of a fixed set of texts, looked up without a store or an encoder.

    Why: a chunk of users is scored where no store is open (a worker process, a Ray actor), so
    every text the chunks can meet is embedded once, before them (`chunk_state`), and travels
    with the state. Picklable (a pandas Index and an array).
    """

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.index = pd.Index(texts)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.index.is_unique or len(self.index) != len(self.vectors):
            raise ValueError("a text table needs one vector per distinct text")

    def __call__(self, texts: list[str]) -> np.ndarray:
        pos = self.index.get_indexer(pd.Index(texts, dtype=object))
        if (pos < 0).any():
            first = texts[int(np.flatnonzero(pos < 0)[0])]
            raise LookupError(f"{int((pos < 0).sum())} texts were not embedded for this run (e.g. {first!r})")
        return self.vectors[pos]


@dataclass
class ChunkState:
    """Everything `score_chunk` reads, built once per run by `chunk_state` (worlds built, datasets
    calibrated, topics chosen, texts embedded); picklable when built with `detach=True`."""

    source: VectorSource
    topics: Topics
    text_vectors: Callable[[list[str]], np.ndarray]
    config: Config


@dataclass
class ChunkScores:
    """What `score_chunk` returns for one chunk of whole users.

    Per event (the chunk's rows in order, or its `needed` rows): ids, topic, unit vector in the
    store's compact form (`vectors` dequantises it: what every number here was computed from) and
    topic similarities. Per chunk (full runs only, empty with `needed`): the user x window vectors
    of its users, and for every stored resolution x window its cells' SUMS of per-user mean vectors with
    their user and event counts: a cell's users are split over chunks, and the user-weighted mean
    of a cell is (sum over chunks of these sums) / (sum of users), so chunks merge exactly.
    """

    dataset_id: np.ndarray  # (n,) int32
    event_id: np.ndarray  # (n,) int64
    topic: np.ndarray  # (n,) int16
    compact: CompactVectors  # (n, D) int8 codes and (n,) scales of the L2-normalised vectors
    topic_sims: np.ndarray  # (n, T) float32
    user_windows: pd.DataFrame  # dataset_id, user_id, window_size, window_start, events
    user_window_vectors: np.ndarray  # (U, D) float32 L2-normalised
    cell_windows: pd.DataFrame  # dataset_id, resolution, window_size, window_start, cell, events, users
    cell_window_sums: np.ndarray  # (G, D + T) float32 sums over the chunk's users of their mean vector and topic shares there

    def __len__(self) -> int:
        return len(self.event_id)

    @property
    def vectors(self) -> np.ndarray:
        """(n, D) float32: the vectors as the store gives them back (dequantised)."""
        return self.compact.dequantised()


ChunkRunner = Callable[[ChunkState, Iterable[pd.DataFrame]], Iterable[Any]]
"""An engine: scores chunks of whole users (`score_chunk` on each), yielding one result per chunk
in any order: its ChunkScores, or what the engine's `finish` made of them where they were
computed (process_chunks: the staged files, vectors/staging.py). `local_chunks` is the local
one; ray_engine.py holds one over Ray actors."""

ChunkFinish = Callable[[int, ChunkScores], Any]
"""What a worker does with chunk n's scores before handing them back (picklable: a module-level
function or a functools.partial of one)."""


def score_chunk(state: ChunkState, events: pd.DataFrame, needed: np.ndarray | None = None) -> ChunkScores:
    """Score one chunk of users: `events` in store.events() format and order, holding WHOLE user
    histories (a vector depends on the user's earlier events only, never on other users).

    Pure given the state (the same events give the same numbers wherever it runs: locally, in a
    worker process, in a Ray actor). `needed` (N,) bool: only those rows are returned (a dynamic
    update's new events; the rest is context) and no aggregates.
    """
    events = events.reset_index(drop=True)
    vectors = interest_vectors(state.source, events, needed)
    rows = events if needed is None else events.loc[needed].reset_index(drop=True)
    if needed is not None:
        vectors = vectors[needed]
    # quantised now: the topic similarities and every aggregate come from what the store will hold
    compact = quantise_vectors(vectors)
    vectors = compact.dequantised()
    topics = state.topics
    event_topics = _event_topics(topics, state.text_vectors, rows)
    sims = topic_similarities(vectors, topics)
    dim = vectors.shape[1]
    user_frames, user_vectors, cell_frames, cell_sums = [], [], [], []
    if needed is None and len(rows):
        scored = ScoredEvents(rows.assign(topic=event_topics), vectors, topics, state.config, topic_sims=sims)
        for dataset_id in np.unique(scored.dataset_ids):
            filters = Filters(datasets=(int(dataset_id),))
            for window, resolutions, with_users in stored_aggregates(state.config):
                if with_users:
                    frame, vecs = aggregate_user_windows(scored, filters, window)
                    user_frames.append(frame.assign(window_size=window))
                    user_vectors.append(vecs)
                for resolution in resolutions:
                    frame, vecs, shares = aggregate_cell_windows(scored, filters, resolution, window)
                    users = frame["users"].to_numpy(np.float32)[:, None]
                    sums = vecs * frame["coherence"].to_numpy(np.float32)[:, None] * users
                    cell_frames.append(frame.drop(columns=["coherence"]).assign(
                        dataset_id=np.int32(dataset_id), resolution=np.int8(resolution), window_size=window))
                    cell_sums.append(np.hstack([sums, shares * users]).astype(np.float32))
    return ChunkScores(
        dataset_id=rows["dataset_id"].to_numpy(np.int32),
        event_id=rows["event_id"].to_numpy(np.int64),
        topic=np.asarray(event_topics, dtype=np.int16),
        compact=compact,
        topic_sims=np.ascontiguousarray(sims, dtype=np.float32),
        user_windows=_frames(user_frames, _USER_WINDOW_COLUMNS),
        user_window_vectors=np.concatenate(user_vectors) if user_vectors else np.zeros((0, dim), np.float32),
        cell_windows=_frames(cell_frames, _CELL_WINDOW_COLUMNS),
        cell_window_sums=np.concatenate(cell_sums) if cell_sums else np.zeros((0, dim + len(topics)), np.float32),
    )


_USER_WINDOW_COLUMNS = ["dataset_id", "user_id", "window_size", "window_start", "events", "coherence"]
_CELL_WINDOW_COLUMNS = ["dataset_id", "resolution", "window_size", "window_start", "cell", "events", "users"]


def _frames(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame({c: [] for c in columns})
    return pd.concat([f[columns] for f in frames], ignore_index=True)


def chunk_state(
    store: Store | None, config: Config, source: VectorSource, topics: Topics, datasets: list[int],
    text_vectors: Callable[[list[str]], np.ndarray], *, detach: bool = False, table: TextTable | None = None,
) -> ChunkState:
    """The state `score_chunk` needs for `datasets` (calibrate them first: the source's weights and
    sharpness are read here). With `detach`: no store or encoder inside (worlds built now, every
    event text of the datasets embedded into a TextTable: `table` when the caller holds one, else
    read from `store`), so it pickles for another process."""
    if not detach:
        return ChunkState(source, topics, text_vectors, config)
    if table is None:
        assert store is not None, "a detached state needs the store or the run's text table"
        texts = store.distinct_texts(datasets)
        table = TextTable(texts, text_vectors(texts) if texts else np.zeros((0, topics.vectors.shape[1]), np.float32))
    return ChunkState(detach_source(source, datasets, table), topics, table, config)


def offline_source(source: VectorSource, table: TextTable) -> VectorSource | None:
    """`source` taking texts from `table` instead of the store, so a run computes with the store
    closed (it shares the source's weights, sharpness and worlds: calibrating it calibrates
    `source`, and calibration builds every world from the events it is given); None for a source
    it cannot rebuild (a caller's own, or a model with no calibration: that run keeps the store)."""
    import copy

    if isinstance(source, RecencySource):
        return RecencySource(table, source.half_life_days)
    if isinstance(source, BlendedSource) and isinstance(source.model, ExpectedVenueSource):
        model = copy.copy(source.model)
        model.scorer = source.model.scorer.reading_texts_from(table)
        out = copy.copy(source)
        out.model, out.history = model, RecencySource(table, source.history.half_life_days)
        return out
    return None


def detach_source(source: VectorSource, datasets: list[int], table: TextTable) -> VectorSource:
    """A copy of `source` that reads texts from `table` and holds no store (see chunk_state)."""
    if isinstance(source, RecencySource):
        return RecencySource(table, source.half_life_days)
    if isinstance(source, BlendedSource):
        out = BlendedSource(detach_source(source.model, datasets, table), table, source.weight, source.history.half_life_days)
        out.weights = dict(source.weights)
        out.name, out.checkpoint, out.max_len = source.name, source.checkpoint, source.max_len
        return out
    if isinstance(source, ExpectedVenueSource):
        out_ev = ExpectedVenueSource(source.scorer.detached(datasets, table))
        out_ev.sharpness = dict(source.sharpness)
        return out_ev
    raise TypeError(f"cannot detach a {type(source).__name__} from its store")


def local_chunks(state: ChunkState, chunks: Iterable[pd.DataFrame]) -> Iterator[ChunkScores]:
    """The local engine: `score_chunk` over the chunks in this process, in order."""
    for events in chunks:
        yield score_chunk(state, events)


def process_chunks(workers: int, finish: ChunkFinish | None = None) -> ChunkRunner:
    """The local engine over `workers` processes (results in the order they finish): each chunk's
    ChunkScores, or with `finish` what `finish(n, scores)` returned in the worker for chunk n (the
    run's staging writes the files there: results of hundreds of MB need not be pickled through
    a pipe and written again by the parent, which shares the same two cores).

    Why processes and not torch threads: the model's (rows, venues) steps are many small
    memory-bound passes, and on 2 shared cores two OpenMP threads scored slower than one (they wait
    for each other on every pass); two processes each scoring its own users with one thread use
    both cores. Each worker reads the detached state once; at most two chunks per worker are in
    flight, so memory stays bounded.

    The state (worlds, every text's vector: hundreds of MB) goes to the workers through a file, not
    the spawn pipe: a worker that died while the parent wrote it there left the parent blocked on
    the pipe (seen once in a test run); with a path as the only argument, the pool notices a dead
    worker and raises BrokenProcessPool.
    """
    def run(state: ChunkState, chunks: Iterable[pd.DataFrame]) -> Iterator[ChunkScores]:
        import multiprocessing
        import pickle
        import tempfile
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

        context = multiprocessing.get_context("spawn")  # no forked torch / DuckDB state
        with tempfile.TemporaryDirectory(prefix="interestgeo-state-") as folder:
            path = Path(folder) / "state.pickle"
            path.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                                     initargs=(str(path),)) as pool:
                pending: set[Future[Any]] = set()
                for n, events in enumerate(chunks):
                    pending.add(pool.submit(_worker_score, events, n, finish))
                    if len(pending) >= 2 * workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        yield from (f.result() for f in done)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)

    return run


_WORKER_STATE: ChunkState | None = None  # a worker process's state (process_chunks)


def _worker_start(state_path: str) -> None:
    import pickle

    global _WORKER_STATE
    end_with_parent()
    keep_large_allocations()
    _WORKER_STATE = pickle.loads(Path(state_path).read_bytes())


def _worker_score(events: pd.DataFrame, n: int, finish: ChunkFinish | None) -> Any:
    assert _WORKER_STATE is not None
    scores = score_chunk(_WORKER_STATE, events)
    return scores if finish is None else finish(n, scores)


# Allocations up to this size stay in the process's heap when freed (glibc's default threshold
# rises only to 32 MB, and a scoring step's temporaries are larger).
_HEAP_BYTES = 256 * 2**20


def keep_large_allocations() -> bool:
    """Let glibc reuse freed blocks of up to _HEAP_BYTES instead of returning each to the kernel.

    Why: scoring allocates and frees arrays of tens of MB per step; with the default, each one
    is a fresh mapping that the kernel zeroes page by page. A 1.13M-event score spent 33 s of
    system time so, 20 s with this, at the same peak memory (3.1 GB), and 3 % less wall time.
    For processes that exist to score (the CLI's score, pool workers, Ray actors), not a long-lived
    server (the dashboard), whose heap would keep such blocks between requests.
    Returns whether glibc took both settings (False elsewhere: a no-op)."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return mallopt(m_mmap_threshold, _HEAP_BYTES) == 1 and mallopt(m_trim_threshold, _HEAP_BYTES) == 1


def end_with_parent() -> bool:
    """Ask Linux to end this process when its parent dies (a worker of a run that was killed).

    Why: a pool's workers wait on their task queue forever once the run's process is gone (seen:
    two workers of a score killed with SIGTERM held 1.6 GB each until killed by hand). Ctrl-C
    reaches the whole process group; SIGTERM or SIGKILL reach only the run. Returns whether the
    request was taken (False off Linux); a parent already gone ends this process at once."""
    import os
    import signal
    import sys

    prctl = getattr(_libc(), "prctl", None)
    if not sys.platform.startswith("linux") or prctl is None:
        return False
    parent = os.getppid()
    pr_set_pdeathsig = 1  # linux/prctl.h
    if prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent or parent == 1:  # the parent died before the request
        os._exit(1)
    return True


def _libc() -> Any:
    """The C library this process runs on (None where ctypes cannot open it)."""
    import ctypes

    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _default_runner(config: Config, chunks: int, finish: ChunkFinish | None = None) -> ChunkRunner | None:
    """process_chunks (with `finish`) when the config (or the CPU count, for a run of 4+ chunks)
    asks for several processes; None (in this process) otherwise."""
    import os

    workers = config.analytics.score_workers
    if workers is None:
        workers = (os.cpu_count() or 1) if chunks >= 4 else 1
    return process_chunks(workers, finish) if workers > 1 else None


def _event_topics(topics: Topics, text_vectors: Callable[[list[str]], np.ndarray], events: pd.DataFrame) -> np.ndarray:
    paths = events["category_path"].tolist() if "category_path" in events else None
    return assign_event_topics(topics, text_vectors(events["text"].astype(str).tolist()), paths)


def _chunk_bounds(events: pd.DataFrame, counted: np.ndarray | None = None) -> list[int]:
    """Row bounds of chunks of whole users of about _CHUNK_EVENTS events (of `counted` rows when given)."""
    if len(events) == 0:
        return [0]
    starts = np.flatnonzero(_new_user(events))
    done = np.arange(len(events) + 1) if counted is None else np.r_[0, np.cumsum(counted)]  # counted rows before
    bounds = [0]
    for s in starts[1:]:
        if done[s] - done[bounds[-1]] >= _CHUNK_EVENTS:
            bounds.append(int(s))
    bounds.append(len(events))
    return bounds


def _new_user(events: pd.DataFrame) -> np.ndarray:
    """(N,) bool: row i is its user's first (events in store.events() order)."""
    new = np.ones(len(events), dtype=bool)
    if len(events) > 1:
        dataset = events["dataset_id"].to_numpy()
        user = events["user_id"].to_numpy(dtype=object)
        new[1:] = (dataset[1:] != dataset[:-1]) | (user[1:] != user[:-1])
    return new
