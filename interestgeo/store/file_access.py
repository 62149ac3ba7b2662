"""Who may open the store file, and when: one writer at a time, readers that never hold it for long.

Why this module exists: DuckDB lets one process hold a database file read-write, or several hold it
read-only, never both (the other side gets "Could not set lock on file ... Conflicting lock is held");
and inside one process every connection to a file must have the same mode. A dashboard that kept a
read-only connection open refused every `interestgeo ingest` for as long as it ran. So:

- Readers (the dashboard) open a read-only connection for one call and close it. Opening costs
  milliseconds; a conflict with a writer is retried for a short, bounded wait and then reported as
  `StoreBusy`, one plain sentence, never DuckDB's message.
- Writers first take `<db>.writer` (an flock: released by the kernel when the process dies, kill -9
  included), so a second load waits, and says so, instead of failing on DuckDB's lock. While that file is
  held, readers start no new connections: a writer waiting for the readers' current queries gets the
  file as soon as they end, however many sessions keep asking. Then the DuckDB lock, retried the same way.
- Inside one process a lock per file orders threads the same way (readers share, a writer excludes), as
  DuckDB would refuse the mixed modes.
- `data_version` is a cheap key (no connection) that changes when committed data does: the dashboard's
  caches include it, so a reload after a load shows the new data. While a writer holds the file it keeps
  the last version seen, so cached views stay up during a load.

Loads stay all-or-nothing because each is one DuckDB transaction; a reader cannot open the file while a
writer holds it, so it never sees half a load. DuckLake (Parquet + catalog snapshots) would let readers
in during a load, but its extension is built per DuckDB version and the registry has none for the pinned
DuckDB 2.0.1 (duckdb-extension-ducklake 1.5.5 refuses to load: "built specifically for DuckDB v1.5.5").
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

__all__ = ["StoreBusy", "FileAccess", "connect", "data_version", "writer_active", "WRITER_SUFFIX"]

# Beside the database: `<db>.writer`, held (flock) by whoever writes.
WRITER_SUFFIX = ".writer"
# How often a wait looks again.
POLL_S = 0.05

BUSY_READ = "the database is being written (a load or scoring run is committing); reload in a moment"
BUSY_WRITE = ("another write to {path} (a load, scoring or training) is still running after {wait:.0f} s; "
              "try again when it has finished")


class StoreBusy(RuntimeError):
    """The file is held by a writer (or, for a writer, by another writer) longer than the wait allowed."""


@dataclass
class _FileState:
    """One database file's in-process lock: readers share it, a writer excludes (re-entrant per thread)."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    readers: dict[int, int] = field(default_factory=dict)  # thread id -> open read-only stores
    writer: int | None = None
    writer_depth: int = 0
    writers_waiting: int = 0
    writer_fd: int | None = None  # the `<db>.writer` flock, held while writer_depth > 0


_FILES: dict[Path, _FileState] = {}
_FILES_LOCK = threading.Lock()
_VERSIONS: dict[Path, str] = {}


def _state(path: Path) -> _FileState:
    with _FILES_LOCK:
        return _FILES.setdefault(path, _FileState())


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


class FileAccess:
    """This thread's claim on one database file, from `connect` until `release` (Store.close calls it)."""

    def __init__(self, path: Path, state: _FileState, write: bool) -> None:
        self.path = path
        self._state = state
        self._write = write
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        state, me = self._state, threading.get_ident()
        with state.cond:
            if self._write:
                state.writer_depth -= 1
                if state.writer_depth == 0:
                    state.writer = None
                    if state.writer_fd is not None:
                        os.close(state.writer_fd)  # closing drops the flock
                        state.writer_fd = None
            else:
                state.readers[me] -= 1
                if not state.readers[me]:
                    del state.readers[me]
            state.cond.notify_all()


def connect(
    path: Path, *, read_only: bool, wait_s: float, on_wait: Callable[[str], None] | None = None
) -> tuple[duckdb.DuckDBPyConnection, FileAccess]:
    """A DuckDB connection to `path` and this thread's claim on it (release it after closing).

    A read-only request from a thread that is already writing the file gets a read-write connection
    (DuckDB allows one mode per process); the caller's Store still only reads through it.
    Raises StoreBusy when the file stays held past `wait_s`; `on_wait` hears one sentence when a
    writer has to wait.
    """
    path = path.resolve()
    state = _state(path)
    deadline = time.monotonic() + wait_s
    told = False

    def tell(message: str) -> None:
        nonlocal told
        if on_wait is not None and not told:
            told = True
            on_wait(message)

    access = _claim(path, state, write=not read_only, deadline=deadline, tell=tell, wait_s=wait_s)
    try:
        writing_here = state.writer == threading.get_ident()
        con = _connect_retrying(path, read_only=read_only and not writing_here, deadline=deadline,
                                tell=tell, wait_s=wait_s)
    except BaseException:
        access.release()
        raise
    return con, access


def _claim(path: Path, state: _FileState, *, write: bool, deadline: float, tell: Callable[[str], None],
           wait_s: float) -> FileAccess:
    me = threading.get_ident()
    with state.cond:
        if write and state.writer == me:
            state.writer_depth += 1
            return FileAccess(path, state, True)
        if not write and (state.writer == me or state.readers.get(me)):
            # nested in this thread's own claim: waiting on a queued writer would wait on ourselves
            state.readers[me] = state.readers.get(me, 0) + 1
            return FileAccess(path, state, False)
        if write:
            if state.readers.get(me):
                # DuckDB cannot hold one file read-only and read-write in one process: a bug in the caller
                raise RuntimeError(f"close the read-only store of {path} before opening it for writing")
            state.writers_waiting += 1
            try:
                while state.writer is not None or state.readers:
                    if state.writer is not None:
                        tell("waiting for another write in this process to finish")
                    if not state.cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                        raise StoreBusy(BUSY_WRITE.format(path=path, wait=wait_s))
                state.writer, state.writer_depth = me, 1  # reserved: this process's readers now wait
            finally:
                state.writers_waiting -= 1
        else:
            while state.writer is not None or state.writers_waiting or writer_active(path):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreBusy(BUSY_READ)
                state.cond.wait(timeout=min(POLL_S, remaining))
            state.readers[me] = state.readers.get(me, 0) + 1
            return FileAccess(path, state, False)
    # Outside the condition: another process's load can take minutes, and this process's readers
    # must meanwhile be able to look and give up.
    access = FileAccess(path, state, True)
    try:
        fd = _take_writer_file(path, deadline, tell, wait_s)
    except BaseException:
        access.release()
        raise
    with state.cond:
        state.writer_fd = fd
    return access


def _expired(deadline: float) -> bool:
    return time.monotonic() >= deadline


def _take_writer_file(path: Path, deadline: float, tell: Callable[[str], None], wait_s: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_writer_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if _expired(deadline):
                    raise StoreBusy(BUSY_WRITE.format(path=path, wait=wait_s)) from None
                tell(f"waiting for another write to {path.name} (a load, scoring or training) to finish")
                time.sleep(POLL_S)
    except BaseException:
        os.close(fd)
        raise


def _connect_retrying(path: Path, *, read_only: bool, deadline: float, tell: Callable[[str], None],
                      wait_s: float) -> duckdb.DuckDBPyConnection:
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _is_lock_conflict(exc):
                raise
            if _expired(deadline):
                if read_only:
                    raise StoreBusy(BUSY_READ) from None
                raise StoreBusy(f"{path} is held by another program (DuckDB's lock) after {wait_s:.0f} s; "
                                "close it (or the dashboard's page that is reading) and try again") from None
            if not read_only:
                tell(f"waiting for readers of {path.name} to finish their queries")
            time.sleep(POLL_S)


def _writer_path(path: Path) -> Path:
    return path.with_name(path.name + WRITER_SUFFIX)


def writer_active(path: Path | str) -> bool:
    """Whether some process (this one included) holds or waits for the right to write `path`."""
    try:
        fd = os.open(_writer_path(Path(path).resolve()), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return False


def data_version(path: Path | str) -> str:
    """A cheap key that changes when the committed data of `path` does (no connection opened).

    The size and modification time of the file and its write-ahead log. While a writer holds the
    file it is the last version this process saw, so caches keyed by it keep serving the committed
    data until the write ends (a writer's uncommitted blocks can change the file's stat).
    """
    path = Path(path).resolve()
    if writer_active(path):
        return _VERSIONS.get(path, "writing")
    parts = []
    for part in (path, path.with_name(path.name + ".wal")):
        try:
            stat = part.stat()
        except FileNotFoundError:
            parts.append("-")
            continue
        parts.append(f"{stat.st_mtime_ns}:{stat.st_size}")
    version = "/".join(parts)
    _VERSIONS[path] = version
    return version
