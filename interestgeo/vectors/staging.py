"""Where a full run's chunk results wait before the store's one write transaction.

The chunks' per-event and per-user results are staged as Arrow IPC files beside the database
(`stage_chunk`, by the worker process that scored the chunk, or by the run's own process), and so
are their cell x window sums, split into `CELL_PARTS` partitions by week: at the end each
partition is merged alone (`merge_cell_sums`: a cell x window's sums all lie in the partition of
its week), so neither the chunks nor the merge hold every cell x window at once (at millions of
events those sums outgrow the events' own vectors), and the write lock is held only for the final
inserts. ray_engine.py writes its actors' results as Parquet (readable beyond this machine) and
merges them with the same pieces.

Why Arrow IPC for a local run's staging: the files live for minutes and are read once, by DuckDB
and by the merge. Parquet widens int8 codes to 4-byte INT32 and encodes list levels per value: at
1.13M events the staged event rows were 2.39 GB of Parquet (0.66 GB as IPC), and writing every
chunk's files cost the run's process ~12 CPU-seconds while its workers needed both cores; IPC keeps
the bytes as they are in memory and is read back by memory map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interestgeo.windows import monday_on_or_before

if TYPE_CHECKING:
    from interestgeo.store import Store
    from interestgeo.vectors.chunks import ChunkScores


_STAGING_PREFIX = ".interestgeo-score-"
_OWNER = "owner.lock"  # in each staging folder: flocked by the run that writes there


class _Staging:
    """A temporary folder beside the database where a run's chunk results wait as staged files
    (`stage_chunk`), so the run holds one chunk in memory at most and the store's write transaction
    lasts only for the final inserts. Removed on exit, committed or not; the folder of a run
    killed with kill -9 (its events snapshot and chunks: gigabytes at millions of events) is
    removed by the next run beside the same database, which finds its owner's flock gone."""

    def __init__(self, db_path: Any) -> None:
        import fcntl
        import os
        import tempfile

        folder = Path(db_path).resolve().parent if db_path else None
        if folder is not None:
            _remove_orphans(folder)
        self.folder = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=folder))
        self._owner = os.open(self.folder / "owner.new", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._owner, fcntl.LOCK_EX)  # the kernel drops it when this process dies
        os.rename(self.folder / "owner.new", self.folder / _OWNER)  # found by others only once held
        self._chunks: list[StagedChunk] = []
        self.events = 0

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        import os
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)
        os.close(self._owner)

    def add(self, chunk: ChunkScores | StagedChunk) -> None:
        """Take one chunk's results: staged already (by a worker, `stage_chunk`) or staged now."""
        staged = chunk if isinstance(chunk, StagedChunk) else stage_chunk(str(self.folder), len(self._chunks), chunk)
        self._chunks.append(staged)
        self.events += staged.events

    def files(self, table: str) -> list[str]:
        """The staged files of "event_vectors" or "user_window_vectors", in chunk order."""
        return [f for c in sorted(self._chunks, key=lambda c: c.n) for f in c.files.get(table, [])]

    @property
    def cell_parts(self) -> dict[int, list[str]]:
        """{partition: its staged cell x window sums files}."""
        parts: dict[int, list[str]] = {}
        for chunk in sorted(self._chunks, key=lambda c: c.n):
            for p, path in chunk.cell_parts.items():
                parts.setdefault(p, []).append(path)
        return parts

    def snapshot(self, store: Store, datasets: list[int] | None) -> EventsSnapshot:
        """The events of `datasets` (all when None) exported to this folder (see EventsSnapshot)."""
        path = self.folder / "events.parquet"
        store.export_events(path, datasets)
        return EventsSnapshot(path)

    def merged_cells(self, topics: int) -> list[str]:
        """Merge each partition's cell sums into final cell_window_vectors rows (Arrow IPC files),
        two partitions at a time (the merge's numpy and Arrow steps run outside the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        parts = sorted(self.cell_parts.items())
        with ThreadPoolExecutor(_MERGE_THREADS) as pool:
            return list(pool.map(
                lambda part: merge_cell_sums(part[1], topics, self.folder / f"cells-{part[0]:02d}-merged.arrow"), parts))


# Partitions merged at once at the end of a run (one per core of the 2-core machine it was tuned on).
_MERGE_THREADS = 2


@dataclass
class StagedChunk:
    """One chunk's results as staged files: what a worker process hands back instead of the
    results themselves (no vectors travel through a pipe)."""

    n: int  # the chunk's number in the run (its files' names)
    events: int
    files: dict[str, list[str]] = field(default_factory=dict)  # "event_vectors", "user_window_vectors"
    cell_parts: dict[int, str] = field(default_factory=dict)  # partition -> its cell sums file


def stage_chunk(folder: str, n: int, result: ChunkScores) -> StagedChunk:
    """Write chunk `n`'s results into staging `folder` as Arrow IPC files (see the module's why)."""
    out = StagedChunk(n, len(result))
    base = Path(folder)
    path = base / f"event_vectors-{n:06d}.arrow"
    _write_staged(_arrow_with_vectors({
        "dataset_id": result.dataset_id, "event_id": result.event_id, "topic": result.topic,
        "scale": result.compact.scales,
    }, q=result.compact.codes, topic_sims=result.topic_sims), path)
    out.files["event_vectors"] = [str(path)]
    if len(result.user_windows):
        w = result.user_windows
        path = base / f"user_window_vectors-{n:06d}.arrow"
        _write_staged(_arrow_with_vectors({
            "dataset_id": w["dataset_id"].to_numpy(np.int32), "user_id": w["user_id"].astype(str).to_numpy(object),
            "window_size": w["window_size"].astype(str).to_numpy(object),
            "window_start": w["window_start"].to_numpy("datetime64[us]"), "events": w["events"].to_numpy(np.int32),
            "coherence": w["coherence"].to_numpy(np.float32),
        }, vector=result.user_window_vectors), path)
        out.files["user_window_vectors"] = [str(path)]
    if len(result.cell_windows):
        cells = result.cell_windows
        part = cell_part(cells["window_start"].to_numpy("datetime64[ns]"))
        for p in np.unique(part):
            rows = part == p
            path = base / f"cells-{int(p):02d}-{n:06d}.arrow"
            _write_staged(_arrow_with_vectors(_columns(cells.loc[rows], CELL_COLUMNS), sum=result.cell_window_sums[rows]), path)
            out.cell_parts[int(p)] = str(path)
    return out


class EventsSnapshot:
    """The events a full run scores, as one Parquet file in store.events() order and columns
    (`Store.export_events`), read a range of rows at a time.

    Why: the run reads the store for seconds and then computes with no connection held (other
    processes read and write the file meanwhile), and the driver holds one chunk of users at a
    time instead of every event (at 5.1M events that frame was 4 GB)."""

    def __init__(self, path: Any) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self._file = pq.ParquetFile(path)
        meta = self._file.metadata
        self.rows = int(meta.num_rows)
        # (groups + 1,) the first row of each row group
        self._starts = np.r_[0, np.cumsum([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])]

    def columns(self, names: list[str]) -> pd.DataFrame:
        """Some columns of every row (a narrow read: the chunk bounds, the topics' texts)."""
        return self._file.read(columns=names).to_pandas()

    def events(self, a: int, b: int) -> pd.DataFrame:
        """Rows [a, b) as store.events() gives them."""
        from interestgeo.store import Store

        first = int(np.searchsorted(self._starts, a, side="right")) - 1
        last = int(np.searchsorted(self._starts, b, side="left"))
        table = self._file.read_row_groups(list(range(first, max(last, first + 1))))
        return Store.events_from_arrow(table.slice(a - int(self._starts[first]), b - a))


def _remove_orphans(folder: Any) -> None:
    """Remove the staging folders in `folder` whose run is gone (no process holds their owner lock)."""
    import fcntl
    import os
    import shutil

    for staging in folder.glob(_STAGING_PREFIX + "*"):
        try:
            fd = os.open(staging / _OWNER, os.O_RDWR)
        except OSError:  # not one of ours, or being created this instant: left alone
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its run is alive
        finally:
            os.close(fd)
        shutil.rmtree(staging, ignore_errors=True)


def _arrow_with_vectors(columns: dict[str, np.ndarray], **matrices: np.ndarray) -> Any:
    """An Arrow table of `columns` plus one list column per named (n, D) matrix (list<int8> for
    compact codes, else list<float32>)."""
    from interestgeo.store._db import vectors_frame

    return vectors_frame(columns, None, **matrices)


# Partitions of the cell x window sums (by week): each is merged alone, 1/CELL_PARTS of the rows.
CELL_PARTS = 16
# Column types of the window tables as the store declares them (staged files carry them to DuckDB).
CELL_COLUMNS = {"dataset_id": np.int32, "resolution": np.int8, "window_size": object,
                "window_start": "datetime64[us]", "cell": np.int64, "events": np.int32, "users": np.int32}


def _columns(frame: pd.DataFrame, types: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: frame[name].astype(str).to_numpy(object) if kind is object else frame[name].to_numpy(kind)
            for name, kind in types.items()}


def _write_staged(table: Any, path: Any) -> None:
    """Write a staged table as an uncompressed Arrow IPC file (one read back, by memory map)."""
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _write_parquet(table: Any, path: Any) -> None:
    """Write a table for one quick read back as Parquet (the Ray engine's output): uncompressed, and
    its vector lists without dictionary or statistics (float vectors neither compress nor repeat,
    and building a dictionary and min/max of every float cost 4x the write itself). Scalar columns
    keep both."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    scalars = [f.name for f in table.schema if not pa.types.is_list(f.type)]
    pq.write_table(table, path, compression="none", use_dictionary=scalars, write_statistics=scalars)


def read_staged(path: str) -> Any:
    """A staged file as an Arrow table: Arrow IPC (*.arrow) by memory map, else Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if str(path).endswith(".arrow"):
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()
    return pq.read_table(path, partitioning=None)


def cell_part(window_start: np.ndarray) -> np.ndarray:
    """(N,) the partition of each cell x window row: its week's number modulo CELL_PARTS (every
    window of a stored size lies in one week, so a row's partners always share its partition)."""
    days = np.asarray(window_start, dtype="datetime64[D]").astype(np.int64)
    return (monday_on_or_before(days) // 7) % CELL_PARTS


def merge_cell_sums(paths: list[str], topics: int, out: Any) -> str:
    """Merge the cell x window sums in staged `paths` (CELL_COLUMNS + `sum`, all the users of each
    of their cells x windows) into cell_window_vectors rows written to `out` (Arrow IPC when it
    ends in .arrow, else Parquet); returns its path."""
    sums = _CellWindowSums(topics)
    for path in paths:
        table = read_staged(path)
        column = table.column("sum").combine_chunks()
        sums.add(table.select(list(CELL_COLUMNS)).to_pandas(),
                 column.flatten().to_numpy().reshape(table.num_rows, -1))
    frame, vectors, shares = sums.result()
    merged = _arrow_with_vectors(
        {**_columns(frame, CELL_COLUMNS), "coherence": frame["coherence"].to_numpy(np.float32)}, vector=vectors,
        shares=shares,
    )
    (_write_staged if str(out).endswith(".arrow") else _write_parquet)(merged, out)
    return str(out)


class _CellWindowSums:
    """The cell x window sums of the chunks so far, merged by key now and then (bounded by the
    number of distinct cells x windows, not by the events)."""

    _KEYS = ["dataset_id", "resolution", "window_size", "window_start", "cell"]

    def __init__(self, topics: int, reduce_rows: int = 200_000) -> None:
        self.topics = topics  # the last `topics` columns of the sums are topic-share sums
        self.frames: list[pd.DataFrame] = []
        self.sums: list[np.ndarray] = []
        self.rows = 0
        self.merged_rows = 0
        self.reduce_rows = reduce_rows

    def add(self, frame: pd.DataFrame, sums: np.ndarray) -> None:
        if not len(frame):
            return
        self.frames.append(frame)
        self.sums.append(np.asarray(sums, dtype=np.float32))
        self.rows += len(frame)
        if self.rows > max(self.reduce_rows, 2 * self.merged_rows):
            self._reduce()

    def _reduce(self) -> None:
        if len(self.frames) <= 1:
            return
        frame = pd.concat(self.frames, ignore_index=True)
        sums = np.concatenate(self.sums)
        group = frame.groupby(self._KEYS, sort=False).ngroup().to_numpy()  # numbered as first seen
        order = np.argsort(group, kind="stable")  # a group's rows together, in their order
        in_order = group[order]
        starts = np.flatnonzero(np.r_[True, in_order[1:] != in_order[:-1]])
        merged = frame.iloc[order[starts]][self._KEYS].reset_index(drop=True)  # each group's first row
        counts = np.add.reduceat(frame[["events", "users"]].to_numpy(np.int64)[order], starts, axis=0)
        merged["events"], merged["users"] = counts[:, 0], counts[:, 1]
        self.frames, self.sums = [merged], [np.add.reduceat(sums[order], starts, axis=0)]
        self.rows = self.merged_rows = len(merged)

    def result(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """(frame[keys, events, users, coherence], (G, D) float32 L2-normalised user-weighted mean
        vectors, (G, T) float32 user-weighted topic shares)."""
        self._reduce()
        if not self.frames:
            empty = pd.DataFrame({c: [] for c in [*self._KEYS, "events", "users", "coherence"]})
            return empty, np.zeros((0, 0), np.float32), np.zeros((0, self.topics), np.float32)
        frame, sums = self.frames[0].copy(), self.sums[0]
        means = sums / frame["users"].to_numpy(np.float32)[:, None]
        means, shares = means[:, : means.shape[1] - self.topics], means[:, means.shape[1] - self.topics :]
        norms = np.linalg.norm(means, axis=1)
        frame["coherence"] = norms.astype(np.float32)
        return frame, (means / np.maximum(norms, 1e-12)[:, None]).astype(np.float32), shares.astype(np.float32)


def _cell_window_columns(cells: pd.DataFrame, window: str) -> dict[str, Any]:
    """The cell_window_vectors columns (besides the vector) of a frame of cell x window rows."""
    return {
        "dataset_id": cells["dataset_id"].to_numpy(np.int32),
        "resolution": cells["resolution"].to_numpy(np.int8),
        "window_size": [window] * len(cells),
        "window_start": cells["window_start"].to_numpy("datetime64[us]"),
        "cell": cells["cell"].to_numpy(np.int64),
        "events": cells["events"].to_numpy(np.int32),
        "users": cells["users"].to_numpy(np.int32),
        "coherence": cells["coherence"].to_numpy(np.float32),
    }


def _user_window_columns(users: pd.DataFrame, dataset_id: int, window: str) -> dict[str, Any]:
    """The user_window_vectors columns (besides the vector) of one dataset's user x window rows."""
    return {
        "dataset_id": np.full(len(users), dataset_id, dtype=np.int32),
        "user_id": users["user_id"].astype(str).tolist(),
        "window_size": [window] * len(users),
        "window_start": users["window_start"].to_numpy("datetime64[us]"),
        "events": users["events"].to_numpy(np.int32),
        "coherence": users["coherence"].to_numpy(np.float32),
    }
