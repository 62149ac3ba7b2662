"""`Store`: one open DuckDB file, built from the parts that each hold one concern's SQL.

Lifecycle (open with the file-access rules of file_access.py, close, transaction), the resolutions
the file was built with, the ingest's session and deleting a dataset (which spans every part) live
here; everything else is in a part:
    events.py          datasets, events, rejects, cell x window aggregates
    vectors.py         event vectors, topic similarities, topics
    window_vectors.py  user x window and cell x window vectors
    runs.py            score runs, dataset calibrations
    registry.py        text-embedding cache, checkpoint registry
    parquet.py         partitioned Parquet for an engine beyond one machine
    ingest_session.py  the ingest's temp-table steps (`store.ingest_session()`)
The parts are mixins of one class (not objects behind `store.events.X`), so the many call sites
of `store.X(...)` in scoring, analytics, the CLI and the pages stayed as they were while those
modules moved in the same redesign; a part's methods reach only the state `StorePart` declares.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from interestgeo.config import Config
from interestgeo.store import _schema, file_access
from interestgeo.store.events import EventsPart
from interestgeo.store.ingest_session import IngestSession
from interestgeo.store.parquet import ParquetPart
from interestgeo.store.registry import RegistryPart, adapted_checkpoint_name
from interestgeo.store.runs import RunsPart
from interestgeo.store.vectors import EventVectorsPart
from interestgeo.store.window_vectors import WINDOW_VECTOR_TABLES, WindowVectorsPart

__all__ = ["Store"]

# Tables with a dataset_id column, children first (a whitelist for delete_dataset).
_DATASET_TABLES = ("cell_windows", "rejects", "events", "datasets")
# Analytics tables with a dataset_id column (present once a score ran).
_ANALYTICS_DATASET_TABLES = ("event_vectors", *WINDOW_VECTOR_TABLES)


class Store(EventsPart, EventVectorsPart, WindowVectorsPart, RunsPart, RegistryPart, ParquetPart):
    """One open DuckDB database (stateful: holds the connection). Use as a context manager.

    Never opened at import time; the dashboard opens a short-lived read-only one per call.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool, config: Config) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        self.config = config
        # Whether this connection has created or seen the analytics tables (see ensure_analytics_schema).
        self._analytics_ready = False
        # Version-0 files store local_hour and dow instead of generating them (see _schema).
        self._stored_hour_dow = False
        # This thread's claim on the file (file_access), released by close().
        self._access: file_access.FileAccess | None = None
        self._on_wait: Callable[[str], None] | None = None  # told when a (re)open has to wait

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        path: Path | str,
        read_only: bool = False,
        *,
        config: Config | None = None,
        wait_s: float | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> Store:
        """Open (creating file and schema when missing, unless read_only) the store at `path`.

        Several processes share the file through file_access: a read-only store waits up to
        `wait_s` (default config.store.read_wait_s) for a writer's commit, a writing one up to
        `wait_s` (default config.store.write_wait_s) for another writer and for readers' current
        queries, telling `on_wait` once when it has to wait; past the wait, StoreBusy (one plain
        sentence). Close it soon: while it is open, nobody else writes (read-write) or nobody
        writes at all (read-only).
        """
        config = config or Config()
        path = Path(path)
        if read_only and not path.exists():
            raise FileNotFoundError(f"no database at {path}")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        if wait_s is None:
            wait_s = config.store.read_wait_s if read_only else config.store.write_wait_s
        con, access = file_access.connect(path, read_only=read_only, wait_s=wait_s, on_wait=on_wait)
        try:
            # UTC session time zone: TIMESTAMPTZ values come back as UTC and naive ISO timestamps in
            # CSVs are read as UTC (schema.py). Fetch timestamps via pandas/arrow (fetchall of
            # TIMESTAMPTZ needs pytz, which we do not depend on).
            con.execute("SET TimeZone = 'UTC'")
            # DuckDB draws its own progress bar on stdout for queries over 2 s: at millions of events
            # it landed inside `score --json`'s output; progress is the CLI's to show (on stderr)
            con.execute("SET enable_progress_bar = false")
            if config.store.threads:
                con.execute("SET threads = ?", [int(config.store.threads)])
            if config.store.memory_limit_mb:
                con.execute("SET memory_limit = ?", [f"{int(config.store.memory_limit_mb)}MB"])
            store = cls(con, path, read_only, config)
            store._access = access
            store._on_wait = on_wait
            if not read_only:
                _schema.create(con, config)
                store._stored_hour_dow = _schema.stored_hour_dow(con)
        except BaseException:
            con.close()
            access.release()
            raise
        return store

    def close(self) -> None:
        self.con.close()
        if self._access is not None:
            self._access.release()  # after the close: the file is free once the claim is
            self._access = None

    def reopen(self, *, read_only: bool) -> None:
        """Close the connection and open the file again in the given mode, waiting as `open` does.

        Why: a full score reads for seconds, computes for minutes and writes for seconds; it closes
        the store while it computes (`close`, then other processes read and write the file) and
        takes the writer back only for its one transaction (vectors/refresh.py)."""
        if self._access is not None:
            self.close()
        other = Store.open(self.path, read_only, config=self.config, on_wait=self._on_wait)
        self.con, self._access, self.read_only = other.con, other._access, other.read_only
        self._stored_hour_dow, self._analytics_ready = other._stored_hour_dow, False

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing block: any exception (Ctrl-C included) rolls everything back."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            self._analytics_ready = False  # the analytics tables may have been created in it
            raise
        self.con.execute("COMMIT")

    # ------------------------------------------------------------------ what the file was built with

    @property
    def schema_version(self) -> int:
        """The schema version the file records (see _schema; 0: older than the first recorded)."""
        return _schema.schema_version(self.con)

    @property
    def base_resolution(self) -> int:
        """The H3 resolution of `events.cell` in this file (fixed when the file was created)."""
        row = self._first_row("SELECT value FROM meta WHERE key = 'base_resolution'")
        return int(row[0]) if row else self.config.store.base_resolution

    @property
    def map_resolutions(self) -> tuple[int, ...]:
        """Resolutions precomputed in `cell_windows` (for hour windows: `precomputed("hour")`)."""
        return self._meta_resolutions("map_resolutions", self.config.store.map_resolutions)

    def precomputed(self, window: str) -> tuple[int, ...]:
        """The resolutions `cell_windows` holds for a window size."""
        if window != "hour":
            return self.map_resolutions
        hourly = self._meta_resolutions("hour_resolutions", self.config.store.hour_resolutions)
        return tuple(r for r in hourly if r in self.map_resolutions)

    def _meta_resolutions(self, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
        row = self._first_row("SELECT value FROM meta WHERE key = ?", [key])
        if row is None:
            # Version-0 files from before a key existed precomputed every map resolution.
            return self.map_resolutions if key == "hour_resolutions" else default
        return tuple(int(r) for r in row[0].split(",") if r)

    # ------------------------------------------------------------------ writing

    @contextmanager
    def ingest_session(self) -> Iterator[IngestSession]:
        """The SQL steps of one file's load (see ingest_session.py); its temp tables are dropped
        when the block ends, also after a failure. Run the steps inside `transaction()`."""
        with IngestSession(self.con, self._stored_hour_dow) as session:
            yield session

    def delete_dataset(self, dataset_id: int) -> bool:
        """Remove a dataset and everything derived from it (atomic). False when it did not exist.

        Derived: interest vectors, window vectors, calibration, cell aggregates, rejects, the
        cached text embeddings of texts no other dataset has (they hold the texts themselves) and
        the checkpoints adapted to it (registry rows in the transaction, their folders after it).
        """
        dataset_id = int(dataset_id)
        adapted: list[str] = []
        with self.transaction():
            existed = self._first_row("SELECT count(*) FROM datasets WHERE dataset_id = ?", [dataset_id])
            name = self._first_row("SELECT name FROM datasets WHERE dataset_id = ?", [dataset_id])
            if name is not None and self._table_exists("checkpoints"):
                checkpoint = adapted_checkpoint_name(str(name[0]))
                adapted = [r[0] for r in self.con.execute("SELECT path FROM checkpoints WHERE name = ?", [checkpoint]).fetchall()]
                self.con.execute("DELETE FROM checkpoints WHERE name = ?", [checkpoint])
            if self._analytics_tables_exist():
                for table in _ANALYTICS_DATASET_TABLES:
                    self.con.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [dataset_id])
                if self._table_exists("dataset_calibration"):
                    self.con.execute("DELETE FROM dataset_calibration WHERE dataset_id = ?", [dataset_id])
            if self._table_exists("text_embeddings"):
                self.con.execute(
                    """DELETE FROM text_embeddings
                       WHERE text IN (SELECT text FROM events WHERE dataset_id = ?)
                         AND text NOT IN (SELECT text FROM events WHERE dataset_id <> ?)""",
                    [dataset_id, dataset_id],
                )
            for table in _DATASET_TABLES:
                self.con.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [dataset_id])
        for folder in adapted:
            shutil.rmtree(folder, ignore_errors=True)
        return bool(existed and existed[0])
