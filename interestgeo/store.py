"""The DuckDB store: every table and every SQL statement of interestgeo lives here.

One DuckDB file (default data/interestgeo.duckdb) holds events, datasets, rejects, the cell x
window aggregates behind every map, and (in sections owned by other helpers, at the end of
`Store`) text embeddings and checkpoints. Keeping all SQL in one module keeps it reviewable:
statements are parameterised (`con.execute(sql, params)`); the only identifiers ever put into SQL
text are generated here (`c0`, `c1`, ... for source CSV columns) or come from fixed whitelists
(window names), never from user input.

Tables
    meta(key, value)           the base resolution and map resolutions the file was built with, so
                               a store opened with another config still reads consistently
    datasets                   one row per loaded file (name, content hash, counts, time range)
    events                     one row per accepted event in file order (event_id follows it;
                               `events()` returns them per user and time): H3 cell (BIGINT, base
                               resolution), local time, hour of day and day of week (window
                               keys are not stored: cell_windows holds the maps' aggregates)
    rejects                    (dataset, physical line, raw line, reason) for every rejected row
    cell_windows               per dataset x resolution x window x window start x cell: events and
                               distinct users. Users are (dataset_id, user_id), so distinct users of
                               several datasets are the sum of the per-dataset counts: maps of any
                               dataset selection are a cheap SUM over this table.

Time windows are in local wall time (ts + tz offset when known, else UTC): "Friday evening" means
the evening where the event happened. Weeks start on Monday (ISO).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from interestgeo import store_access
from interestgeo.cells import latlng_to_cell, parent_masks
from interestgeo.config import Config
from interestgeo.schema import (
    EPOCH_MS_THRESHOLD,
    FOURSQUARE_TS_FORMAT,
    MAX_TZ_OFFSET_MIN,
    TS_FUTURE_SLACK_DAYS,
    TS_MIN,
    ColumnMapping,
    Reason,
)

__all__ = ["Store", "WINDOWS", "EVENT_COLUMNS", "adapted_checkpoint_name"]

# Window name -> DuckDB date_trunc part (a whitelist: these are the only window identifiers).
WINDOWS: dict[str, str] = {"hour": "hour", "day": "day", "week": "week"}

EVENT_COLUMNS = (
    "dataset_id", "event_id", "user_id", "ts", "local_ts", "tz_offset_min", "lat", "lon", "text",
    "item_id", "category", "category_path", "event_type", "cell", "local_hour", "dow",
)

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE IF NOT EXISTS datasets (
        dataset_id INTEGER PRIMARY KEY,
        name VARCHAR NOT NULL UNIQUE,
        source VARCHAR NOT NULL,
        content_hash VARCHAR NOT NULL UNIQUE,
        rows_read BIGINT NOT NULL,
        rows_stored BIGINT NOT NULL,
        rows_rejected BIGINT NOT NULL,
        duplicates_skipped BIGINT NOT NULL,
        ts_min TIMESTAMPTZ,
        ts_max TIMESTAMPTZ,
        loaded_at TIMESTAMPTZ NOT NULL,
        mapping VARCHAR NOT NULL
    )""",
    # No primary key / index on events: DuckDB's ART indexes slow bulk inserts several-fold, and
    # event_id is unique by construction (see _insert_events).
    """CREATE TABLE IF NOT EXISTS events (
        dataset_id INTEGER NOT NULL,
        event_id BIGINT NOT NULL,
        user_id VARCHAR NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        local_ts TIMESTAMP NOT NULL,
        tz_offset_min SMALLINT,
        lat DOUBLE NOT NULL,
        lon DOUBLE NOT NULL,
        text VARCHAR NOT NULL,
        item_id VARCHAR,
        category VARCHAR,
        category_path VARCHAR,
        event_type VARCHAR,
        cell BIGINT NOT NULL,
        -- Derived from local_ts when read, not stored: writing them was a sixth of the ingest's
        -- events INSERT, and nothing filters on them without also reading local_ts's row groups.
        local_hour TINYINT GENERATED ALWAYS AS (hour(local_ts)) VIRTUAL,
        dow TINYINT GENERATED ALWAYS AS (isodow(local_ts) - 1) VIRTUAL
    )""",
    """CREATE TABLE IF NOT EXISTS rejects (
        dataset_id INTEGER NOT NULL,
        line BIGINT NOT NULL,
        raw VARCHAR NOT NULL,
        reason VARCHAR NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS cell_windows (
        dataset_id INTEGER NOT NULL,
        resolution TINYINT NOT NULL,
        window_size VARCHAR NOT NULL,
        window_start TIMESTAMP NOT NULL,
        cell BIGINT NOT NULL,
        events INTEGER NOT NULL,
        users INTEGER NOT NULL
    )""",
]


class Store:
    """One open DuckDB database (stateful: holds the connection). Use as a context manager.

    Never opened at import time; the dashboard caches one per session in its UI layer.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool, config: Config) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        self.config = config
        # Whether this connection has created or seen the analytics tables (see ensure_analytics_schema).
        self._analytics_ready = False
        # Files created before local_hour and dow became generated columns store them (see _create_schema).
        self._stored_hour_dow = False
        # This thread's claim on the file (store_access), released by close().
        self._access: store_access.FileAccess | None = None

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

        Several processes share the file through store_access: a read-only store waits up to
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
        con, access = store_access.connect(path, read_only=read_only, wait_s=wait_s, on_wait=on_wait)
        try:
            # UTC session time zone: TIMESTAMPTZ values come back as UTC and naive ISO timestamps in
            # CSVs are read as UTC (schema.py). Fetch timestamps via pandas/arrow (fetchall of
            # TIMESTAMPTZ needs pytz, which we do not depend on).
            con.execute("SET TimeZone = 'UTC'")
            if config.store.threads:
                con.execute("SET threads = ?", [int(config.store.threads)])
            store = cls(con, path, read_only, config)
            store._access = access
            if not read_only:
                store._create_schema()
        except BaseException:
            con.close()
            access.release()
            raise
        return store

    def close(self) -> None:
        self.con.close()
        if self._access is not None:
            self._access.release()  # after the close: the file is free once the claim is

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        for statement in _SCHEMA:
            self.con.execute(statement)
        # Files written before the window keys were dropped from events (nothing read them; the
        # maps use cell_windows, and date_trunc of local_ts is cheap where a key is needed).
        for column in _DROPPED_EVENT_COLUMNS:
            if self._first_row(
                "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events' AND column_name = ? "
                "AND NOT internal AND schema_name = 'main' AND database_name = current_database()",
                [column],
            )[0]:
                self.con.execute(f"ALTER TABLE events DROP COLUMN {column}")
        # DuckDB cannot add a generated column to an existing table, so older files keep storing
        # local_hour and dow (insert_events writes them there); both kinds read the same.
        self._stored_hour_dow = bool(self._first_row(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events' AND column_name = 'local_hour' "
            "AND NOT is_generated AND schema_name = 'main' AND database_name = current_database()"
        )[0])
        self.con.execute(
            "INSERT OR IGNORE INTO meta VALUES ('base_resolution', ?), ('map_resolutions', ?), ('hour_resolutions', ?)",
            [str(self.config.store.base_resolution), ",".join(map(str, self.config.store.map_resolutions)),
             ",".join(map(str, self.config.store.hour_resolutions))],
        )

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
            # Files from before a key existed precomputed every map resolution.
            return self.map_resolutions if key == "hour_resolutions" else default
        return tuple(int(r) for r in row[0].split(",") if r)

    def _first_row(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of a query, with the result fully consumed (DuckDB 2 refuses new work on
        a connection whose last result was only partly fetched, as fetchone() leaves it)."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

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

    # ------------------------------------------------------------------ reading

    def datasets(self) -> pd.DataFrame:
        """One row per loaded file, oldest first."""
        return self.con.execute(
            """SELECT dataset_id, name, source, content_hash, rows_read, rows_stored, rows_rejected,
                      duplicates_skipped, ts_min, ts_max, loaded_at
               FROM datasets ORDER BY dataset_id"""
        ).df()

    def dataset_id(self, name: str) -> int | None:
        row = self._first_row("SELECT dataset_id FROM datasets WHERE name = ?", [name])
        return None if row is None else int(row[0])

    def require_dataset_id(self, name: str) -> int:
        """The id of dataset `name`; a LookupError naming the known datasets when there is none."""
        dataset_id = self.dataset_id(name)
        if dataset_id is None:
            known = ", ".join(self.datasets()["name"].astype(str)) or "none"
            raise LookupError(f"no dataset named {name!r} (datasets: {known})")
        return int(dataset_id)

    def dataset_by_hash(self, content_hash: str) -> tuple[int, str] | None:
        row = self._first_row(
            "SELECT dataset_id, name FROM datasets WHERE content_hash = ?", [content_hash]
        )
        return None if row is None else (int(row[0]), str(row[1]))

    def events(self, datasets: Sequence[int] | None = None) -> pd.DataFrame:
        """One row per event, sorted by (dataset_id, user_id, ts, event_id); dtypes per CONTRACT.md."""
        df = self.con.execute(
            """SELECT dataset_id, event_id, user_id, ts, local_ts, tz_offset_min, lat, lon, text,
                      item_id, category, category_path, event_type, cell, local_hour, dow
               FROM events
               WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)
               ORDER BY dataset_id, user_id, ts, event_id""",
            [_id_list(datasets), _id_list(datasets)],
        ).df()
        return df.astype({"dataset_id": "int32", "tz_offset_min": "Int16", "local_hour": "int8", "dow": "int8"})

    def rejects(self, dataset_id: int) -> pd.DataFrame:
        """Every rejected row of a dataset: physical line number, the raw line(s), reason."""
        return self.con.execute(
            "SELECT line, raw, reason FROM rejects WHERE dataset_id = ? ORDER BY line", [dataset_id]
        ).df()

    def cell_aggregates(
        self,
        resolution: int,
        window: str,
        window_start: datetime | pd.Timestamp | None = None,
        datasets: Sequence[int] | None = None,
        k: int | None = None,
    ) -> tuple[pd.DataFrame, int]:
        """Events and distinct users per H3 cell x local time window, with the privacy threshold.

        Returns (frame[cell int64, window_start, events, users], hidden) where rows with fewer
        than k distinct users (k defaults to config.privacy.k_min_users) are removed and counted
        in `hidden`. `window_start` (naive local time) selects one window; None returns all.
        Resolutions not precomputed are derived from the events on the fly (slower, same result).
        """
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        k = self.config.privacy.k_min_users if k is None else int(k)
        ids = _id_list(datasets)
        start = None if window_start is None else pd.Timestamp(window_start).to_pydatetime()
        if resolution in self.precomputed(window):
            df = self.con.execute(
                """SELECT cell, window_start, sum(events)::BIGINT AS events, sum(users)::BIGINT AS users
                   FROM cell_windows
                   WHERE resolution = ? AND window_size = ?
                     AND (?::TIMESTAMP IS NULL OR window_start = ?::TIMESTAMP)
                     AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                   GROUP BY cell, window_start
                   ORDER BY window_start, cell""",
                [resolution, window, start, start, ids, ids],
            ).df()
        else:
            df = self._cell_aggregates_from_events(resolution, window, start, ids)
        return _k_threshold(df, k)

    def _cell_aggregates_from_events(
        self,
        resolution: int,
        window: str,
        start: datetime | None,
        ids: list[int] | None,
        hours: list[int] | None = None,
        days_of_week: list[int] | None = None,
    ) -> pd.DataFrame:
        """cell_aggregates' frame (before the k threshold) counted from the events; optionally
        one window only, and only some local hours of day and days of week."""
        if not 0 <= resolution <= self.base_resolution:
            raise ValueError(f"resolution must be 0..{self.base_resolution} (the base resolution)")
        and_mask, or_mask = parent_masks(resolution)
        return self.con.execute(
            f"""SELECT parent AS cell, ws AS window_start, count(*)::BIGINT AS events,
                       count(DISTINCT (dataset_id, user_id))::BIGINT AS users
                FROM (
                    SELECT (cell & ?) | ? AS parent, date_trunc('{WINDOWS[window]}', local_ts) AS ws,
                           dataset_id, user_id
                    FROM events
                    WHERE (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                      -- A range on local_ts (not on ws) so DuckDB skips row groups by their min/max.
                      AND (?::TIMESTAMP IS NULL
                           OR (local_ts >= ?::TIMESTAMP AND local_ts < ?::TIMESTAMP + to_hours(?::BIGINT)))
                      AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], local_hour))
                      AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dow))
                )
                GROUP BY parent, ws
                ORDER BY ws, parent""",
            [and_mask, or_mask, ids, ids, start, start, start, _WINDOW_HOURS[window],
             hours, hours, days_of_week, days_of_week],
        ).df()

    def window_starts(self, window: str, datasets: Sequence[int] | None = None) -> pd.Series:
        """The distinct local window starts that hold events (for time sliders)."""
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        ids = _id_list(datasets)
        resolutions = self.precomputed(window)
        if not resolutions:
            return self.con.execute(
                f"""SELECT DISTINCT date_trunc('{WINDOWS[window]}', local_ts) AS window_start FROM events
                    WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)
                    ORDER BY window_start""",
                [ids, ids],
            ).df()["window_start"]
        return self.con.execute(
            """SELECT DISTINCT window_start FROM cell_windows
               WHERE window_size = ? AND resolution = ?
                 AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
               ORDER BY window_start""",
            [window, min(resolutions), ids, ids],
        ).df()["window_start"]

    # ------------------------------------------------------------------ writing

    def delete_dataset(self, dataset_id: int) -> bool:
        """Remove a dataset and everything derived from it (atomic). False when it did not exist.

        Derived: interest vectors, window vectors, calibration, cell aggregates, rejects, the
        cached text embeddings of texts no other dataset has (they hold the texts themselves) and
        the checkpoints adapted to it (registry rows in the transaction, their folders after it).
        """
        adapted: list[str] = []
        with self.transaction():
            existed = self._first_row("SELECT count(*) FROM datasets WHERE dataset_id = ?", [dataset_id])
            name = self._first_row("SELECT name FROM datasets WHERE dataset_id = ?", [dataset_id])
            if name is not None and self._model_table_exists("checkpoints"):
                checkpoint = adapted_checkpoint_name(str(name[0]))
                adapted = [r[0] for r in self.con.execute("SELECT path FROM checkpoints WHERE name = ?", [checkpoint]).fetchall()]
                self.con.execute("DELETE FROM checkpoints WHERE name = ?", [checkpoint])
            # Derived tables owned by other areas first (interest vectors; see their section).
            self.delete_dataset_vectors(dataset_id)
            if self._model_table_exists("text_embeddings"):
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

    # --- ingest steps. Called by interestgeo.ingest inside one transaction. ---

    def read_csv_checked(
        self,
        path: Path,
        mapping: ColumnMapping,
        columns: list[str],
        *,
        delimiter: str,
        encoding: str,
        compression: str,
        now: datetime,
    ) -> tuple[int, int, pd.DataFrame]:
        """Parse and validate a CSV into the temp table `ingest_checked` in one pass.

        DuckDB reads every field as text (so validation can say exactly what is wrong with each
        value; source columns get generated names c0, c1, ... so header text never reaches SQL),
        then typed columns and a `reason` (the first failing rule in schema.Reason order, NULL
        when the row is valid) are computed in the same statement. The table's rowids follow the
        records' order in the file (insertion order is preserved); rowid - min(rowid) is the
        record's position among the records DuckDB kept (rowids of a table created inside a
        transaction start at a large transaction-local offset), which ingest maps back to
        physical line numbers. Structurally broken records (wrong column
        count, unterminated quote, bad encoding) do not abort the read: they are returned, one
        row per record in file order (line, error_type).
        Returns (records kept, rows failing validation, structural errors).
        """
        col = {name: f"c{i}" for i, name in enumerate(columns)}

        def ref(field_name: str) -> str:
            source = getattr(mapping, field_name)
            return col[source] if source else "NULL::VARCHAR"

        def number(expr: str) -> str:
            # In a semicolon-separated file a comma can only be a decimal comma (40,7128).
            # (DuckDB's casts ignore surrounding spaces, so no trim() is needed on the fast path.)
            return f"replace({expr}, ',', '.')" if delimiter == ";" else expr

        def stripped(expr: str) -> str:
            # nullif(trim(x), '') with trim() only where x starts or ends with a space (a byte
            # test): the same result for about a third of the CPU on real, mostly clean text.
            return f"CASE WHEN prefix({expr}, ' ') OR suffix({expr}, ' ') THEN nullif(trim({expr}), '') " \
                   f"ELSE nullif({expr}, '') END"

        if len(mapping.text) == 1:
            # One source column: the text is kept exactly as written.
            text_expr = col[mapping.text[0]]
            text_blank = f"{stripped('text')} IS NULL"
        else:
            text_expr = "concat_ws(', ', " + ", ".join(stripped(col[c]) for c in mapping.text) + ")"
            # Composed from trimmed non-empty parts: blank only when empty (no second trim pass
            # over every row's text, about a tenth of this statement's CPU).
            text_blank = "text = ''"
        ts = ref("ts")
        # ISO 8601 first (the common case, one cast), then epoch numbers, then the Foursquare
        # format; COALESCE only evaluates a later branch for rows the earlier ones left NULL.
        # The epoch number is named once, inside a lambda: written out three times, DuckDB's
        # common-subexpression pass hoisted try_cast(ts AS DOUBLE) out of the COALESCE and ran it
        # (failing) on every ISO row, a sixth of this statement's CPU.
        ts_expr = f"""coalesce(
                try_cast({ts} AS TIMESTAMPTZ),
                try(make_timestamp(list_transform([try_cast({ts} AS DOUBLE)], lambda v:
                    CASE WHEN abs(v) >= {EPOCH_MS_THRESHOLD} THEN v * 1000 ELSE v * 1000000 END)[1]::BIGINT))::TIMESTAMPTZ,
                try_strptime(trim({ts}), $fsq))"""
        tz_raw = ref("tz_offset_min")
        self.con.execute("DROP TABLE IF EXISTS ingest_csv_errors")
        self.con.execute("DROP TABLE IF EXISTS ingest_csv_scans")
        # Line numbers depend on rows keeping file order (DuckDB's default, stated explicitly).
        self.con.execute("SET preserve_insertion_order = true")
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE ingest_checked AS
            WITH source AS (
                SELECT * FROM read_csv($path, columns = $columns, auto_detect = false, header = true,
                    delim = $delim, quote = '"', escape = '"', encoding = $encoding,
                    compression = $compression, store_rejects = true,
                    rejects_table = 'ingest_csv_errors', rejects_scan = 'ingest_csv_scans',
                    ignore_errors = true, strict_mode = true, null_padding = false,
                    max_line_size = 10000000)
            ), parsed AS (
                SELECT {ref('user_id')} AS user_id, {text_expr} AS text, {ts_expr} AS ts,
                       try_cast({number(ref('lat'))} AS DOUBLE) AS lat,
                       try_cast({number(ref('lon'))} AS DOUBLE) AS lon,
                       nullif(trim({tz_raw}), '') AS tz_raw,
                       try_cast(nullif(trim({tz_raw}), '') AS DOUBLE) AS tz,
                       {ref('item_id')} AS item_id, {ref('category')} AS category,
                       {ref('category_path')} AS category_path, {ref('event_type')} AS event_type
                FROM source
            )
            SELECT user_id, text, ts, lat, lon, hash(user_id, ts) AS dup_key,
                   CASE WHEN tz = round(tz) AND abs(tz) <= {MAX_TZ_OFFSET_MIN} THEN tz::SMALLINT END AS tz_offset_min,
                   item_id, category, category_path, event_type,
                   CASE
                     WHEN user_id IS NULL OR trim(user_id) = '' THEN $r_user
                     WHEN text IS NULL OR {text_blank} THEN $r_text
                     WHEN ts IS NULL THEN $r_ts
                     WHEN ts < $ts_min OR ts > $ts_max THEN $r_ts_range
                     WHEN lat IS NULL THEN $r_lat
                     WHEN lon IS NULL THEN $r_lon
                     WHEN NOT (lat BETWEEN -90 AND 90) THEN $r_lat_range
                     WHEN NOT (lon BETWEEN -180 AND 180) THEN $r_lon_range
                     WHEN lat = 0 AND lon = 0 THEN $r_zero
                     WHEN tz_raw IS NOT NULL AND (tz IS NULL OR tz <> round(tz)) THEN $r_tz
                     WHEN abs(tz) > {MAX_TZ_OFFSET_MIN} THEN $r_tz_range
                   END AS reason
            FROM parsed""",
            {
                "path": str(path),
                "columns": {f"c{i}": "VARCHAR" for i in range(len(columns))},
                "delim": delimiter,
                "encoding": encoding,
                "compression": compression,
                "fsq": FOURSQUARE_TS_FORMAT,
                "ts_min": TS_MIN,
                "ts_max": now + timedelta(days=TS_FUTURE_SLACK_DAYS),
                "r_user": Reason.EMPTY_USER,
                "r_text": Reason.EMPTY_TEXT,
                "r_ts": Reason.BAD_TS,
                "r_ts_range": Reason.IMPLAUSIBLE_TS,
                "r_lat": Reason.BAD_LAT,
                "r_lon": Reason.BAD_LON,
                "r_lat_range": Reason.LAT_RANGE,
                "r_lon_range": Reason.LON_RANGE,
                "r_zero": Reason.NULL_ISLAND,
                "r_tz": Reason.BAD_TZ,
                "r_tz_range": Reason.TZ_RANGE,
            },
        )
        kept, invalid = self._first_row("SELECT count(*), count(reason) FROM ingest_checked")
        # DuckDB logs one error per affected column; keep one per record.
        errors = self.con.execute(
            """SELECT line, arg_min(error_type::VARCHAR, column_idx) AS error_type
               FROM ingest_csv_errors GROUP BY line ORDER BY line"""
        ).df()
        return int(kept), int(invalid), errors

    def checked_rejects(self) -> pd.DataFrame:
        """(ordinal, reason) of the rows that failed validation, in file order."""
        return self.con.execute(
            f"""SELECT rowid - ({_FIRST_ROWID}) AS ordinal, reason FROM ingest_checked
                WHERE reason IS NOT NULL ORDER BY rowid"""
        ).df()

    def prepare_checked(self, base_resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Find duplicates and H3 cells for the valid rows of `ingest_checked`; return the
        aggregation input (users, cell ranks, local hours, sorted unique cells) of the rows to store.

        Duplicates (same user, ts, lat, lon, text within the file) keep their first row. They
        are found by a 64-bit hash of (user, ts) first (two events of one person in the same
        instant are rare, and hashing the text too cost more), repeats of which numpy finds in the
        fetched aggregation input; only rows sharing a repeated hash are compared exactly.
        H3 is computed once per distinct coordinate pair (check-ins repeat venues), and each
        distinct cell gets its rank among the file's sorted cells (see cell_window_counts).
        Users are numbered densely by an exact join on user_id, so user counts are exact.
        """
        coords = self.con.execute("SELECT DISTINCT lat, lon FROM ingest_checked WHERE reason IS NULL").fetchnumpy()
        cells = latlng_to_cell(coords["lat"], coords["lon"], base_resolution)
        unique_cells, rank = np.unique(cells, return_inverse=True)
        self.con.register(
            "ingest_coord_cells",
            pd.DataFrame({"lat": coords["lat"], "lon": coords["lon"], "cell": cells, "cell_rank": rank.astype(np.int64)}),
        )
        valid = self.con.execute(
            """WITH valid AS (
                   SELECT rowid AS ord, dup_key, user_id, ts, tz_offset_min, lat, lon
                   FROM ingest_checked WHERE reason IS NULL
               ), users AS (
                   SELECT user_id, (row_number() OVER () - 1)::BIGINT AS uid FROM (SELECT DISTINCT user_id FROM valid)
               )
               SELECT valid.ord, valid.dup_key, users.uid, c.cell_rank,
                      floor((epoch(valid.ts) + coalesce(valid.tz_offset_min, 0)::BIGINT * 60) / 3600)::BIGINT AS h
               FROM valid JOIN ingest_coord_cells c ON c.lat = valid.lat AND c.lon = valid.lon
                          JOIN users USING (user_id)"""
        ).fetchnumpy()
        # Duplicate candidates: hashes seen twice (a value sort in numpy, ~5x cheaper than a
        # GROUP BY over every row); only their rows are compared exactly, in SQL.
        keys = np.sort(np.asarray(valid["dup_key"]))
        repeated = np.unique(keys[1:][keys[1:] == keys[:-1]])
        self.con.execute("CREATE OR REPLACE TEMP TABLE ingest_dups (ord BIGINT NOT NULL)")
        keep = np.ones(len(keys), dtype=bool)
        if len(repeated):
            self.con.register("ingest_dup_keys", pa.table({"dup_key": pa.array(repeated)}))
            self.con.execute(
                """INSERT INTO ingest_dups
                   SELECT ord FROM (
                       SELECT rowid AS ord, row_number() OVER (
                           PARTITION BY user_id, ts, lat, lon, text ORDER BY rowid) AS k
                       FROM ingest_checked
                       WHERE reason IS NULL AND dup_key IN (SELECT dup_key FROM ingest_dup_keys)
                   ) WHERE k > 1"""
            )
            dups = self.con.execute("SELECT ord FROM ingest_dups").fetchnumpy()["ord"]
            keep = ~np.isin(np.asarray(valid["ord"]), np.asarray(dups))
        return (np.asarray(valid["uid"], np.int64)[keep], np.asarray(valid["cell_rank"], np.int64)[keep],
                np.asarray(valid["h"], np.int64)[keep], unique_cells.astype(np.int64))

    def insert_events(self, dataset_id: int) -> tuple[int, int]:
        """Insert the rows `prepare_checked` kept as events of `dataset_id`.

        event_id = first free id + file position, so ids are unique across the store and follow
        file order. Returns (rows_stored, duplicates_skipped).
        """
        first_id = self._first_row("SELECT coalesce(max(event_id), -1) + 1 FROM events")[0]
        stored = ", hour(local_ts) AS local_hour, isodow(local_ts) - 1 AS dow" if self._stored_hour_dow else ""
        self.con.execute(
            f"""INSERT INTO events BY NAME
               SELECT ?::INTEGER AS dataset_id, ? + ord AS event_id, user_id, ts, local_ts, tz_offset_min, lat, lon,
                      text, item_id, category, category_path, event_type, cell{stored}
               FROM (
                   SELECT *, make_timestamp(epoch_us(ts) + coalesce(tz_offset_min, 0)::BIGINT * 60000000) AS local_ts
                   FROM ({_KEPT_ROWS})
               )""",
            [dataset_id, int(first_id)],
        )
        valid, duplicates = self._first_row(
            "SELECT (SELECT count(*) FROM ingest_checked WHERE reason IS NULL), (SELECT count(*) FROM ingest_dups)"
        )
        return int(valid) - int(duplicates), int(duplicates)

    def insert_cell_windows(self, dataset_id: int, frame: pd.DataFrame) -> None:
        """Append one dataset's `cell_window_counts` result to `cell_windows`.

        Handed over as an Arrow table with window_size dictionary-encoded (from the categorical's
        codes): DuckDB reads it zero-copy, which costs about a third less CPU than scanning the
        pandas frame (the rows often outnumber the events: most hour x cell groups hold one event).
        """
        window_size = frame["window_size"]
        if isinstance(window_size.dtype, pd.CategoricalDtype):
            window_array = pa.DictionaryArray.from_arrays(
                pa.array(window_size.cat.codes.to_numpy()), pa.array([str(c) for c in window_size.cat.categories])
            )
        else:
            window_array = pa.array(window_size.astype(str).to_numpy(object), pa.string())
        table = pa.table(
            {
                "resolution": pa.array(frame["resolution"].to_numpy()),
                "window_size": window_array,
                "window_start": pa.array(frame["window_start"].to_numpy()),
                "cell": pa.array(frame["cell"].to_numpy()),
                "events": pa.array(frame["events"].to_numpy()),
                "users": pa.array(frame["users"].to_numpy()),
            }
        )
        self.con.register("ingest_cell_windows", table)
        try:
            self.con.execute(
                """INSERT INTO cell_windows
                   SELECT ?, resolution, window_size, window_start, cell, events, users
                   FROM ingest_cell_windows""",
                [dataset_id],
            )
        finally:
            self.con.unregister("ingest_cell_windows")

    def insert_dataset(
        self,
        dataset_id: int,
        *,
        name: str,
        source: str,
        content_hash: str,
        rows_read: int,
        rows_stored: int,
        rows_rejected: int,
        duplicates_skipped: int,
        loaded_at: datetime,
        mapping_json: str,
    ) -> None:
        self.con.execute(
            """INSERT INTO datasets
               SELECT ?, ?, ?, ?, ?, ?, ?, ?, min(ts), max(ts), ?, ?
               FROM events WHERE dataset_id = ?""",
            [dataset_id, name, source, content_hash, rows_read, rows_stored, rows_rejected,
             duplicates_skipped, loaded_at, mapping_json, dataset_id],
        )

    def insert_rejects(self, dataset_id: int, rejects: pd.DataFrame) -> None:
        """Append rejects (columns line, raw, reason)."""
        if rejects.empty:
            return
        frame = pd.DataFrame(
            {
                "dataset_id": np.full(len(rejects), dataset_id, dtype=np.int32),
                "line": rejects["line"].to_numpy(np.int64),
                "raw": rejects["raw"].astype(str).to_numpy(object),
                "reason": rejects["reason"].astype(str).to_numpy(object),
            }
        )
        self.con.register("ingest_reject_rows", frame)
        try:
            self.con.execute("INSERT INTO rejects SELECT dataset_id, line, raw, reason FROM ingest_reject_rows")
        finally:
            self.con.unregister("ingest_reject_rows")

    def next_dataset_id(self) -> int:
        return int(self._first_row("SELECT coalesce(max(dataset_id), 0) + 1 FROM datasets")[0])

    def replace_checked_user_ids(self, replace: Callable[[list[str]], list[str]]) -> int:
        """Replace every user id in `ingest_checked` by `replace(ids)` (pseudonymisation, before the
        events are written); returns how many distinct ids were replaced."""
        ids = [str(r[0]) for r in self.con.execute(
            "SELECT DISTINCT user_id FROM ingest_checked WHERE user_id IS NOT NULL").fetchall()]
        if not ids:
            return 0
        self.con.register("ingest_pseudonyms", pd.DataFrame({"user_id": ids, "pseudonym": replace(ids)}))
        try:
            self.con.execute("""UPDATE ingest_checked SET user_id = p.pseudonym FROM ingest_pseudonyms p
                                WHERE ingest_checked.user_id = p.user_id""")
        finally:
            self.con.unregister("ingest_pseudonyms")
        return len(ids)

    def drop_ingest_temps(self) -> None:
        """Free the ingest's temporary tables and registered frames (also after a failure)."""
        for table in ("ingest_checked", "ingest_dups", "ingest_csv_errors", "ingest_csv_scans"):
            self.con.execute(f"DROP TABLE IF EXISTS {table}")
        for view in ("ingest_coord_cells", "ingest_dup_keys", "ingest_cell_windows", "ingest_reject_rows"):
            self.con.unregister(view)

    # --- analytics ---
    # Per-event interest vectors (the source of every analytics result), the topics, and the
    # user x window and cell x window interest vectors `interestgeo score` stores. Vectors are
    # FLOAT[] lists (dimension-agnostic, like text_embeddings) read back in one Arrow buffer.
    # Beside each event's vector, its cosine similarity to each stored topic (`topic_sims`, T
    # floats): topic shares need only these, so a dashboard reads 10 floats per event before the
    # 384 (the vectors' 170 MB for the NYC demo took 0.5-1.3 s to load in a fresh process).
    # NULL means "not stored" (files from before the column; rows whose topics were replaced
    # since): readers compute those from the vectors.

    _ANALYTICS_SCHEMA = (
        """CREATE TABLE IF NOT EXISTS event_vectors (
            dataset_id INTEGER NOT NULL,
            event_id BIGINT NOT NULL,
            topic SMALLINT NOT NULL,
            vector FLOAT[] NOT NULL,
            topic_sims FLOAT[]
        )""",
        # Files from before topic_sims: the column is added on the first write (NULL: not stored).
        "ALTER TABLE event_vectors ADD COLUMN IF NOT EXISTS topic_sims FLOAT[]",
        """CREATE TABLE IF NOT EXISTS analytics_topics (
            topic_id SMALLINT NOT NULL,
            label VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            vector FLOAT[] NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS user_window_vectors (
            dataset_id INTEGER NOT NULL,
            user_id VARCHAR NOT NULL,
            window_size VARCHAR NOT NULL,
            window_start TIMESTAMP NOT NULL,
            events INTEGER NOT NULL,
            vector FLOAT[] NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS cell_window_vectors (
            dataset_id INTEGER NOT NULL,
            resolution TINYINT NOT NULL,
            window_size VARCHAR NOT NULL,
            window_start TIMESTAMP NOT NULL,
            cell BIGINT NOT NULL,
            events INTEGER NOT NULL,
            users INTEGER NOT NULL,
            coherence FLOAT NOT NULL,
            vector FLOAT[] NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS score_runs (
            run_id INTEGER NOT NULL,
            source VARCHAR NOT NULL,
            scored_at TIMESTAMPTZ NOT NULL,
            since TIMESTAMPTZ,
            events BIGINT NOT NULL,
            users BIGINT NOT NULL,
            elapsed_s DOUBLE NOT NULL,
            events_per_s DOUBLE NOT NULL
        )""",
        # Per dataset, what the last calibrating score measured on its most recent events (score.py):
        # the cutoff its world counts stop at, the history weight chosen, and the next-event MRR of
        # the stored vectors against the history baseline on held-out pairs.
        """CREATE TABLE IF NOT EXISTS dataset_calibration (
            dataset_id INTEGER PRIMARY KEY,
            source VARCHAR NOT NULL,
            cutoff TIMESTAMPTZ NOT NULL,
            history_weight DOUBLE NOT NULL,
            sharpness DOUBLE NOT NULL,
            pairs INTEGER NOT NULL,
            stored_mrr DOUBLE,
            history_mrr DOUBLE,
            model_mrr DOUBLE,
            weights VARCHAR NOT NULL,
            calibrated_at TIMESTAMPTZ NOT NULL
        )""",
    )
    # The window-vector tables `replace_window_vectors` may write (a whitelist of identifiers).
    _WINDOW_VECTOR_TABLES = ("user_window_vectors", "cell_window_vectors")
    # Their columns (besides `vector`), the only column names put into INSERT statements.
    _WINDOW_VECTOR_COLUMNS = frozenset(
        {"dataset_id", "user_id", "resolution", "window_size", "window_start", "cell", "events", "users", "coherence"}
    )

    def _analytics_tables_exist(self) -> bool:
        if self._analytics_ready:
            return True
        row = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'event_vectors' AND NOT temporary"
        ).fetchone()
        return bool(row and row[0])

    def ensure_analytics_schema(self) -> None:
        """Create the analytics tables when missing (a no-op on read-only stores).

        Once per connection: a dynamic update called it nine times, 3 ms each (tables are only
        dropped by a rolled-back transaction, which clears the flag).
        """
        if not self.read_only and not self._analytics_ready:
            for statement in self._ANALYTICS_SCHEMA:
                self.con.execute(statement)
            self._analytics_ready = True

    def _arrow_query(self, sql: str, params: list[Any] | None = None) -> Any:
        """Run a query through the relation API (Arrow without an extra copy).

        `complete()` first: a DB-API result left half-read (a `fetchone()` anywhere) otherwise
        blocks the relation API on this connection.
        """
        self.con.complete()
        return self.con.sql(sql, params=params)

    @staticmethod
    def _vectors_frame(columns: dict[str, Any], vectors: np.ndarray, **matrices: np.ndarray) -> Any:
        """An Arrow table of `columns` plus a FLOAT[] `vector` column from a (N, D) array (and one
        FLOAT[] column per further named (N, K) array)."""
        import pyarrow as pa

        table = pa.table({name: pa.array(values) for name, values in columns.items()})
        for name, matrix in {"vector": vectors, **matrices}.items():
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            n, d = matrix.shape
            offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
            table = table.append_column(name, pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1))))
        return table

    @staticmethod
    def _vectors_from_arrow(column: Any, n: int, rows: np.ndarray | None = None) -> np.ndarray:
        """(N, D) float32 from an Arrow list column of equal-length vectors; with `rows`, the
        (len(rows), D) array of those rows in that order."""
        if n == 0:
            return np.zeros((0 if rows is None else len(rows), 0), dtype=np.float32)
        # Chunk by chunk: flattening a list chunk is zero-copy, so the only copy is into the result
        # (with `rows`: scattered straight to their places, not concatenated and then gathered).
        flats = [chunk.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                 for chunk in column.chunks if len(chunk)]
        dim = sum(flat.size for flat in flats) // n
        if rows is None:
            return np.concatenate(flats).reshape(n, dim)
        out = np.empty((len(rows), dim), dtype=np.float32)
        target = np.empty(n, dtype=np.int64)
        target.fill(-1)
        target[rows] = np.arange(len(rows))
        start = 0
        for flat in flats:
            chunk = flat.reshape(-1, dim)
            place = target[start:start + len(chunk)]
            kept = place >= 0
            if kept.all():  # every row wanted (a whole load): no temporary copy of the chunk
                out[place] = chunk
            else:
                out[place[kept]] = chunk[kept]
            start += len(chunk)
        return out

    def write_event_vectors(
        self,
        dataset_ids: np.ndarray,
        event_ids: np.ndarray,
        topics: np.ndarray,
        vectors: np.ndarray,
        topic_sims: np.ndarray | None = None,
    ) -> None:
        """Insert or replace the interest vectors of these events, with their (N, T) similarities
        to the stored topics when given (`interestgeo.topics.topic_similarities`; else NULL)."""
        self.ensure_analytics_schema()
        sims = {} if topic_sims is None else {"topic_sims": topic_sims}
        frame = self._vectors_frame(
            {
                "dataset_id": np.asarray(dataset_ids, dtype=np.int32),
                "event_id": np.asarray(event_ids, dtype=np.int64),
                "topic": np.asarray(topics, dtype=np.int16),
            },
            vectors,
            **sims,
        )
        sims_sql = "NULL::FLOAT[]" if topic_sims is None else "topic_sims::FLOAT[]"
        self.con.register("analytics_new_vectors", frame)
        try:
            self.con.execute(
                "DELETE FROM event_vectors WHERE event_id IN (SELECT event_id FROM analytics_new_vectors)"
            )
            self.con.execute(
                f"""INSERT INTO event_vectors (dataset_id, event_id, topic, vector, topic_sims)
                    SELECT dataset_id, event_id, topic, vector::FLOAT[], {sims_sql}
                    FROM analytics_new_vectors ORDER BY event_id"""
            )
        finally:
            self.con.unregister("analytics_new_vectors")

    def fill_topic_sims(self, similarities: Callable[[np.ndarray], np.ndarray], batch: int = 20_000) -> int:
        """Store the topic similarities of every vector that has none (a file scored before the
        column existed, or whose topics were replaced since), `similarities` mapping (n, D) vectors
        to (n, T); returns how many rows it filled. Batches bound the numpy copies and the
        UPDATE frames (the Arrow read is whole); the caller's transaction (if any) makes it
        all-or-nothing."""
        self.ensure_analytics_schema()
        table = self._arrow_query(
            "SELECT event_id, vector FROM event_vectors WHERE topic_sims IS NULL ORDER BY event_id"
        ).to_arrow_table()
        for start in range(0, table.num_rows, batch):
            part = table.slice(start, batch)
            sims = similarities(self._vectors_from_arrow(part.column("vector"), part.num_rows))
            frame = self._vectors_frame({"event_id": part.column("event_id").to_numpy()}, sims)
            self.con.register("analytics_filled_sims", frame)
            try:
                self.con.execute(
                    """UPDATE event_vectors SET topic_sims = f.vector::FLOAT[]
                       FROM analytics_filled_sims f WHERE event_vectors.event_id = f.event_id"""
                )
            finally:
                self.con.unregister("analytics_filled_sims")
        return table.num_rows

    def delete_event_vectors(self, datasets: Sequence[int] | None = None) -> None:
        """Forget the interest vectors of some datasets (all when None) before a full re-score."""
        self.ensure_analytics_schema()
        ids = _id_list(datasets)
        self.con.execute(
            "DELETE FROM event_vectors WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)",
            [ids, ids],
        )

    def delete_dataset_vectors(self, dataset_id: int) -> None:
        """Drop a dataset's interest vectors and window vectors (for delete_dataset to call)."""
        if not self._analytics_tables_exist():
            return
        for table in ("event_vectors", *self._WINDOW_VECTOR_TABLES):
            self.con.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [int(dataset_id)])
        if self._table_exists("dataset_calibration"):
            self.con.execute("DELETE FROM dataset_calibration WHERE dataset_id = ?", [int(dataset_id)])

    def scored_events(
        self, datasets: Sequence[int] | None = None, local_from: datetime | pd.Timestamp | None = None
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Events that have interest vectors, as `events()` plus `topic`, and their vectors (N, D).

        Same order as `events()`; `local_from` (naive local time) keeps events from then on.
        """
        frame, table, rows = self._scored_rows(datasets, local_from, "vector")
        return frame, self._vectors_from_arrow(table.column("vector"), table.num_rows, rows)

    def scored_event_sims(self, datasets: Sequence[int] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """`scored_events` without the vectors: the same frame and each event's stored (N, T)
        similarities to the topics, NaN rows where none are stored (see the section comment)."""
        if not self._has_topic_sims():
            frame, _, _ = self._scored_rows(datasets, None, None)
            return frame, np.full((len(frame), 0), np.nan, dtype=np.float32)
        frame, table, rows = self._scored_rows(datasets, None, "topic_sims")
        n_topics = self._first_row("SELECT count(*) FROM analytics_topics")[0]
        # NULL rows read as NaN rows, so one aligned read serves stored and missing alike
        column = table.column("topic_sims").fill_null(pa.scalar([np.nan] * n_topics, pa.list_(pa.float32())))
        return frame, self._vectors_from_arrow(column, table.num_rows, rows).reshape(len(rows), n_topics)

    def event_vectors(self, event_ids: np.ndarray) -> np.ndarray:
        """The stored interest vectors (len(event_ids), D) of these events, in this order.

        Raises LookupError when one has none (it was deleted or re-scored away meanwhile).
        """
        wanted = np.asarray(event_ids, dtype=np.int64)
        stored = self._first_row("SELECT count(*) FROM event_vectors")[0]
        if 2 * len(wanted) >= stored:  # most of them: a plain scan (the join costs more than it saves)
            table = self._arrow_query("SELECT event_id, vector FROM event_vectors").to_arrow_table()
        else:
            self.con.register("analytics_wanted", pa.table({"event_id": wanted}))
            try:
                table = self._arrow_query(
                    "SELECT v.event_id, v.vector FROM event_vectors v SEMI JOIN analytics_wanted w ON v.event_id = w.event_id"
                ).to_arrow_table()
            finally:
                self.con.unregister("analytics_wanted")
        rows, has = _align(table.column("event_id").to_numpy(), wanted)
        if not has.all():
            raise LookupError(f"{int((~has).sum())} of {len(wanted)} events have no interest vector any more")
        return self._vectors_from_arrow(table.column("vector"), table.num_rows, rows)

    def scored_event_parts(self, dataset_id: int, size: int, user_id: str | None = None) -> list[tuple[int, int, int]]:
        """(first event id, last event id, events) of consecutive runs of `size` scored events of a
        dataset (or of one of its users), in event-id order: the parts `scored_event_rows` reads, so
        that a reader of a whole dataset holds one part's vectors at a time. [] when none is scored."""
        if not self._analytics_tables_exist():
            return []
        rows = self.con.execute(
            """SELECT min(event_id), max(event_id), count(*) FROM (
                   SELECT event_id, (row_number() OVER (ORDER BY event_id) - 1) // ? AS part
                   FROM event_vectors
                   WHERE dataset_id = ? AND event_id IN (
                       SELECT event_id FROM events
                       WHERE dataset_id = ? AND (?::VARCHAR IS NULL OR user_id = ?::VARCHAR)))
               GROUP BY part ORDER BY part""",
            [int(size), int(dataset_id), int(dataset_id), user_id, user_id],
        ).fetchall()
        return [(int(first), int(last), int(n)) for first, last, n in rows]

    def scored_event_rows(
        self, dataset_id: int, first_id: int, last_id: int, user_id: str | None = None
    ) -> pa.Table:
        """The scored events of a dataset (or of one of its users) with first_id <= event_id <=
        last_id, in event-id order, as Arrow: event_id, user_id, ts (UTC), lat, lon, text and the
        stored `vector` (list<float32>), handed on as DuckDB gives it (no numpy round trip).

        The id range is put on both tables so DuckDB skips the row groups outside it (vectors are
        written in event-id order): reading a dataset part by part costs about one read of it."""
        return self._arrow_query(
            """SELECT e.event_id, e.user_id, e.ts, e.lat, e.lon, e.text, v.vector
               FROM events e JOIN event_vectors v ON v.event_id = e.event_id
               WHERE e.dataset_id = ? AND v.dataset_id = ?
                 AND e.event_id BETWEEN ? AND ? AND v.event_id BETWEEN ? AND ?
                 AND (?::VARCHAR IS NULL OR e.user_id = ?::VARCHAR)
               ORDER BY e.event_id""",
            params=[int(dataset_id), int(dataset_id), int(first_id), int(last_id), int(first_id), int(last_id),
                    user_id, user_id],
        ).to_arrow_table()

    def _scored_rows(
        self, datasets: Sequence[int] | None, local_from: datetime | pd.Timestamp | None, column: str | None
    ) -> tuple[pd.DataFrame, Any, np.ndarray]:
        """The scored events' frame, the event_vectors rows (event_id, topic, `column`) as Arrow,
        and for each frame row its row in that table.

        Two plain scans aligned by event id in numpy: joining and sorting 100k rows that carry
        384 floats each costs DuckDB about twice as much. `column` is one of two identifiers
        (a whitelist), never user input.
        """
        if column not in (None, "vector", "topic_sims"):
            raise ValueError(f"not a vector column: {column!r}")
        if not self._analytics_tables_exist():
            frame = self.events(datasets).assign(topic=np.int16(0)).iloc[:0]
            return frame, _empty_vector_table(column), np.zeros(0, dtype=np.int64)
        ids = _id_list(datasets)
        start = None if local_from is None else pd.Timestamp(local_from).to_pydatetime()
        columns = ", ".join(EVENT_COLUMNS)
        frame = _events_frame(self._arrow_query(
            f"""SELECT {columns} FROM events
                WHERE (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                  AND (?::TIMESTAMP IS NULL OR local_ts >= ?::TIMESTAMP)
                ORDER BY dataset_id, user_id, ts, event_id""",
            params=[ids, ids, start, start],
        ).to_arrow_table())
        extra = "" if column is None else f", v.{column}"
        table = self._arrow_query(
            f"""SELECT v.event_id, v.topic{extra} FROM event_vectors v
               WHERE (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], v.dataset_id))
                 AND (?::TIMESTAMP IS NULL OR v.event_id IN (SELECT event_id FROM events WHERE local_ts >= ?::TIMESTAMP))""",
            params=[ids, ids, start, start],
        ).to_arrow_table()
        rows, has = _align(table.column("event_id").to_numpy(), frame["event_id"].to_numpy(np.int64))
        frame = frame.loc[has].reset_index(drop=True)
        frame["topic"] = table.column("topic").to_numpy()[rows].astype(np.int16)
        return frame, table, rows

    def _has_topic_sims(self) -> bool:
        row = self._first_row(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'event_vectors' AND column_name = 'topic_sims'"
        )
        return bool(row and row[0])

    def user_histories(self, users: pd.DataFrame) -> pd.DataFrame:
        """Every event of the given users (frame with dataset_id, user_id), in `events()` format and order."""
        keys = pd.DataFrame(
            {"dataset_id": users["dataset_id"].astype("int32").to_numpy(), "user_id": users["user_id"].astype(str).to_numpy()}
        ).drop_duplicates()
        columns = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
        self.con.register("analytics_users", keys)
        try:
            # through Arrow: DuckDB's own pandas conversion took ~75 ms of a dynamic update for 40k
            # rows, Arrow ~40 ms (the same frame, tests/test_score.py)
            table = self._arrow_query(
                f"""SELECT {columns} FROM events e SEMI JOIN analytics_users u
                      ON e.dataset_id = u.dataset_id AND e.user_id = u.user_id
                    ORDER BY e.dataset_id, e.user_id, e.ts, e.event_id"""
            ).to_arrow_table()
        finally:
            self.con.unregister("analytics_users")
        return _events_frame(table)

    def distinct_texts(self, datasets: Sequence[int] | None = None) -> list[str]:
        """The distinct event texts of some datasets (all when None), sorted: what scoring embeds."""
        ids = _id_list(datasets)
        rows = self.con.execute(
            """SELECT DISTINCT coalesce(text, '') FROM events
               WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id) ORDER BY 1""",
            [ids, ids],
        ).fetchall()
        return [str(r[0]) for r in rows]

    def user_event_counts(self, datasets: Sequence[int] | None = None) -> pd.DataFrame:
        """(dataset_id, user_id, events) of every user, in `events()` order: how scoring cuts its
        chunks of whole users without reading the events."""
        ids = _id_list(datasets)
        return self._arrow_query(
            """SELECT dataset_id, user_id, count(*)::BIGINT AS events FROM events
               WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)
               GROUP BY ALL ORDER BY dataset_id, user_id""",
            params=[ids, ids],
        ).df()

    def unscored_events(self) -> pd.DataFrame:
        """(dataset_id, user_id, ts) of events without an interest vector: what `score --since` must add."""
        self.ensure_analytics_schema()
        return self.con.execute(
            """SELECT e.dataset_id, e.user_id, min(e.ts) AS ts FROM events e
               ANTI JOIN event_vectors v ON v.event_id = e.event_id
               GROUP BY ALL ORDER BY ALL"""
        ).df()

    def users_with_events_since(self, since: datetime) -> pd.DataFrame:
        """(dataset_id, user_id, ts) of users with events at or after `since` (ts = their first such)."""
        return self.con.execute(
            """SELECT dataset_id, user_id, min(ts) AS ts FROM events WHERE ts >= ?
               GROUP BY ALL ORDER BY ALL""",
            [pd.Timestamp(since).to_pydatetime()],
        ).df()

    def write_topics(self, labels: Sequence[str], source: str, vectors: np.ndarray) -> None:
        """Replace the stored interest topics."""
        self.ensure_analytics_schema()
        frame = self._vectors_frame(
            {
                "topic_id": np.arange(len(labels), dtype=np.int16),
                "label": list(labels),
                "source": [source] * len(labels),
            },
            vectors,
        )
        self.con.register("analytics_new_topics", frame)
        try:
            # similarities to the old topics mean nothing now (the writer of new vectors stores
            # fresh ones; readers compute any still missing)
            self.con.execute("UPDATE event_vectors SET topic_sims = NULL WHERE topic_sims IS NOT NULL")
            self.con.execute("DELETE FROM analytics_topics")
            self.con.execute(
                "INSERT INTO analytics_topics SELECT topic_id, label, source, vector::FLOAT[] FROM analytics_new_topics"
            )
        finally:
            self.con.unregister("analytics_new_topics")

    def analytics_topics(self) -> Any:
        """The stored topics as `interestgeo.topics.Topics`, or None before the first score run."""
        from interestgeo.topics import Topics

        if not self._analytics_tables_exist():
            return None
        table = self._arrow_query("SELECT label, source, vector FROM analytics_topics ORDER BY topic_id").to_arrow_table()
        if table.num_rows == 0:
            return None
        labels = tuple(table.column("label").to_pylist())
        vectors = self._vectors_from_arrow(table.column("vector"), table.num_rows)
        return Topics(labels, vectors, str(table.column("source")[0].as_py()))

    def replace_window_vectors(
        self,
        table: str,
        window: str,
        columns: dict[str, Any],
        vectors: np.ndarray,
        *,
        datasets: Sequence[int] | None = None,
        from_start: datetime | pd.Timestamp | None = None,
        resolution: int | Sequence[int] | None = None,
    ) -> None:
        """Replace the rows of a window-vector table for `window` (in some datasets, from a window
        start on, at the given resolution(s) for cell_window_vectors).

        `columns` holds the table's non-vector columns, one array each. Several resolutions go in
        one DELETE and one INSERT (a dynamic update spent ~10 ms per statement pair).
        """
        if table not in self._WINDOW_VECTOR_TABLES:
            raise ValueError(f"not a window-vector table: {table!r}")
        if (resolution is None) != (table == "user_window_vectors"):
            raise ValueError("cell_window_vectors rows are replaced for given resolutions")
        self.ensure_analytics_schema()
        ids = _id_list(datasets)
        start = None if from_start is None else pd.Timestamp(from_start).to_pydatetime()
        resolutions = None if resolution is None else [int(r) for r in np.atleast_1d(resolution)]
        resolution_clause = "" if resolutions is None else "AND list_contains(?::INTEGER[], resolution)"
        self.con.execute(
            f"""DELETE FROM {table} WHERE window_size = ?
                  AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                  AND (?::TIMESTAMP IS NULL OR window_start >= ?::TIMESTAMP) {resolution_clause}""",
            [window, ids, ids, start, start] + ([] if resolutions is None else [resolutions]),
        )
        if len(vectors) == 0:
            return
        frame = self._vectors_frame(columns, vectors)
        names = ", ".join(f'"{name}"' for name in frame.column_names[:-1])
        if set(frame.column_names[:-1]) - self._WINDOW_VECTOR_COLUMNS:
            raise ValueError(f"unknown column(s) for {table}")
        self.con.register("analytics_new_windows", frame)
        try:
            self.con.execute(
                f"INSERT INTO {table} ({names}, vector) SELECT {names}, vector::FLOAT[] FROM analytics_new_windows"
            )
        finally:
            self.con.unregister("analytics_new_windows")

    def window_vectors(
        self,
        table: str,
        window: str,
        *,
        datasets: Sequence[int] | None = None,
        resolution: int | None = None,
        user: tuple[int, str] | None = None,
        k: int | None = None,
    ) -> tuple[pd.DataFrame, np.ndarray, int]:
        """Stored window vectors: (frame without the vector, vectors (N, D), hidden).

        For `cell_window_vectors` rows with fewer than k users (default config.privacy.k_min_users)
        are dropped and counted in `hidden`; `user_window_vectors` (analyst-only data) can be
        narrowed to one (dataset_id, user_id).
        """
        if table not in self._WINDOW_VECTOR_TABLES:
            raise ValueError(f"not a window-vector table: {table!r}")
        empty = (pd.DataFrame(), np.zeros((0, 0), np.float32), 0)
        if not self._analytics_tables_exist():
            return empty
        ids = _id_list(datasets)
        if table == "cell_window_vectors":
            k = self.config.privacy.k_min_users if k is None else int(k)
            result = self._arrow_query(
                """SELECT dataset_id, resolution, window_size, window_start, cell, events, users, coherence, vector
                   FROM cell_window_vectors
                   WHERE window_size = ? AND (?::TINYINT IS NULL OR resolution = ?::TINYINT)
                     AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                   ORDER BY dataset_id, resolution, window_start, cell""",
                params=[window, resolution, resolution, ids, ids],
            ).to_arrow_table()
        else:
            k = 0
            uid = None if user is None else user[1]
            did = None if user is None else int(user[0])
            result = self._arrow_query(
                """SELECT dataset_id, user_id, window_size, window_start, events, vector
                   FROM user_window_vectors
                   WHERE window_size = ? AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                     AND (?::VARCHAR IS NULL OR (user_id = ?::VARCHAR AND dataset_id = ?::INTEGER))
                   ORDER BY dataset_id, user_id, window_start""",
                params=[window, ids, ids, uid, uid, did],
            ).to_arrow_table()
        frame = result.drop(["vector"]).to_pandas()
        vectors = self._vectors_from_arrow(result.column("vector"), result.num_rows)
        if table == "cell_window_vectors" and len(frame):
            visible = (frame["users"] >= k).to_numpy()
            return frame[visible].reset_index(drop=True), vectors[visible], int((~visible).sum())
        return frame, vectors, 0

    def record_score_run(
        self, source: str, since: datetime | None, events: int, users: int, elapsed_s: float
    ) -> int:
        """Log one `interestgeo score` run; returns its id."""
        self.ensure_analytics_schema()
        run_id = int(self.con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM score_runs").fetchone()[0])
        self.con.execute(
            "INSERT INTO score_runs VALUES (?, ?, now(), ?, ?, ?, ?, ?)",
            [run_id, source, since, int(events), int(users), float(elapsed_s), float(events) / max(elapsed_s, 1e-9)],
        )
        return run_id

    def write_calibration(
        self, dataset_id: int, source: str, cutoff: datetime, history_weight: float, sharpness: float, pairs: int,
        stored_mrr: float | None, history_mrr: float | None, model_mrr: float | None, weights_json: str,
    ) -> None:
        """Record (replace) one dataset's calibration."""
        self.ensure_analytics_schema()
        self.con.execute("DELETE FROM dataset_calibration WHERE dataset_id = ?", [int(dataset_id)])
        self.con.execute(
            "INSERT INTO dataset_calibration VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [int(dataset_id), source, cutoff, float(history_weight), float(sharpness), int(pairs),
             _finite_or_none(stored_mrr), _finite_or_none(history_mrr), _finite_or_none(model_mrr), weights_json],
        )

    def calibrations(self) -> pd.DataFrame:
        """Every dataset's calibration with its dataset name, by dataset id (empty before any)."""
        if not self._analytics_tables_exist() or not self._table_exists("dataset_calibration"):
            return pd.DataFrame(columns=["dataset_id", "name", "source", "cutoff", "history_weight", "sharpness", "pairs",
                                         "stored_mrr", "history_mrr", "model_mrr", "weights", "calibrated_at"])
        return self.con.execute(
            """SELECT c.dataset_id, d.name, c.source, c.cutoff, c.history_weight, c.sharpness, c.pairs, c.stored_mrr,
                      c.history_mrr, c.model_mrr, c.weights, c.calibrated_at
               FROM dataset_calibration c JOIN datasets d USING (dataset_id) ORDER BY c.dataset_id"""
        ).df()

    def calibration_cutoff(self, dataset_id: int) -> Any:
        """The stored cutoff (a UTC pd.Timestamp) of a dataset's world, or None before its first calibration."""
        if not self._analytics_tables_exist() or not self._table_exists("dataset_calibration"):
            return None
        row = self._first_row("SELECT epoch_us(cutoff) FROM dataset_calibration WHERE dataset_id = ?", [int(dataset_id)])
        return None if row is None else pd.Timestamp(int(row[0]), unit="us", tz="UTC")

    def _table_exists(self, table: str) -> bool:
        row = self._first_row(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary AND database_name = current_database()",
            [table],
        )
        return bool(row and row[0])

    def score_runs(self) -> pd.DataFrame:
        """Every score run, newest first."""
        if not self._analytics_tables_exist():
            return pd.DataFrame()
        return self.con.execute("SELECT * FROM score_runs ORDER BY run_id DESC").df()

    def latest_score_source(self) -> str | None:
        """The vector source of the newest score run (None before the first): what an update must match.

        One value, not score_runs(): its pandas frame was ~5 ms of each dynamic update."""
        if not self._analytics_tables_exist():
            return None
        row = self.con.execute("SELECT source FROM score_runs ORDER BY run_id DESC LIMIT 1").fetchall()
        return str(row[0][0]) if row else None

    # --- model: text embedding cache and checkpoint registry ---
    # Every distinct text is encoded once per model: vectors are keyed by (model_id, sha256 of the
    # text). Checkpoints live on disk (safetensors + JSON); this table only registers them.

    _MODEL_SCHEMA = (
        """CREATE TABLE IF NOT EXISTS text_embeddings (
            model_id VARCHAR NOT NULL,
            text_hash VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            vector FLOAT[] NOT NULL,
            PRIMARY KEY (model_id, text_hash)
        )""",
        """CREATE TABLE IF NOT EXISTS checkpoints (
            id INTEGER PRIMARY KEY,
            name VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            path VARCHAR NOT NULL,
            config JSON NOT NULL,
            metrics JSON NOT NULL
        )""",
    )

    def _model_table_exists(self, table: str) -> bool:
        rows = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [table]
        ).fetchall()
        return bool(rows and rows[0][0])

    def ensure_model_schema(self) -> None:
        """Create the embedding cache and checkpoint tables when missing (no-op on read-only stores)."""
        if not self.read_only:
            for statement in self._MODEL_SCHEMA:
                self.con.execute(statement)

    def cached_embeddings(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """{text_hash: vector} for the hashes already embedded by `model_id`."""
        if not text_hashes or not self._model_table_exists("text_embeddings"):
            return {}
        import pyarrow as pa

        wanted = pa.table({"text_hash": pa.array(list(text_hashes), pa.string())})
        self.con.register("_wanted_hashes", wanted)
        try:
            table = self.con.sql(
                "SELECT e.text_hash, e.vector FROM text_embeddings e "
                "JOIN _wanted_hashes w USING (text_hash) WHERE e.model_id = ?",
                params=[model_id],
            ).to_arrow_table()
        finally:
            self.con.unregister("_wanted_hashes")
        vectors = self._vectors_from_arrow(table.column("vector"), table.num_rows)
        return dict(zip(table.column("text_hash").to_pylist(), vectors))

    def put_embeddings(
        self, model_id: str, text_hashes: Sequence[str], texts: Sequence[str], vectors: np.ndarray
    ) -> None:
        """Store new vectors (existing (model_id, text_hash) rows are kept as they are)."""
        if len(text_hashes) == 0 or self.read_only:
            return
        self.ensure_model_schema()
        frame = self._vectors_frame(
            {"model_id": [model_id] * len(text_hashes), "text_hash": list(text_hashes), "text": list(texts)},
            vectors,
        )
        self.con.register("_new_embeddings", frame)
        try:
            self.con.execute(
                "INSERT INTO text_embeddings SELECT model_id, text_hash, text, vector FROM _new_embeddings "
                "ON CONFLICT DO NOTHING"
            )
        finally:
            self.con.unregister("_new_embeddings")

    def embedding_count(self, model_id: str) -> int:
        """How many texts `model_id` has embedded in this store."""
        if not self._model_table_exists("text_embeddings"):
            return 0
        rows = self.con.execute("SELECT count(*) FROM text_embeddings WHERE model_id = ?", [model_id]).fetchall()
        return int(rows[0][0])

    def add_checkpoint(self, name: str, path: str, config_json: str, metrics_json: str) -> int:
        """Register a checkpoint folder; returns its id."""
        self.ensure_model_schema()
        new_id = int(self.con.execute("SELECT coalesce(max(id), 0) + 1 FROM checkpoints").fetchall()[0][0])
        self.con.execute(
            "INSERT INTO checkpoints VALUES (?, ?, now(), ?, ?, ?)", [new_id, name, path, config_json, metrics_json]
        )
        return new_id

    def checkpoints(self) -> pd.DataFrame:
        """Registered checkpoints [id, name, created_at, path, config, metrics], newest first."""
        if not self._model_table_exists("checkpoints"):
            return pd.DataFrame(columns=["id", "name", "created_at", "path", "config", "metrics"])
        return self.con.execute("SELECT * FROM checkpoints ORDER BY id DESC").df()

    def checkpoint(self, checkpoint_id: int | None = None, name: str | None = None) -> dict[str, Any] | None:
        """One checkpoint row as a dict: by id, else the newest with `name`, else the newest; None if none."""
        if not self._model_table_exists("checkpoints"):
            return None
        if checkpoint_id is not None:
            cur = self.con.execute("SELECT * FROM checkpoints WHERE id = ?", [int(checkpoint_id)])
        elif name is not None:
            cur = self.con.execute("SELECT * FROM checkpoints WHERE name = ? ORDER BY id DESC LIMIT 1", [name])
        else:
            cur = self.con.execute("SELECT * FROM checkpoints ORDER BY id DESC LIMIT 1")
        rows = cur.df()  # via pandas: fetchall() of the TIMESTAMPTZ column needs pytz, not a dependency
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in rows.iloc[0].items()} if len(rows) else None

    # --- dashboard ---
    # Read-only queries for the dashboard's pages that must not load every event's vector.

    def user_scored_events(self, dataset_id: int, user_id: str) -> tuple[pd.DataFrame, np.ndarray]:
        """One user's scored events, as `scored_events` (events() columns + topic, same order), and
        their vectors (N, D): the User page reads one person, not the whole store."""
        if not self._analytics_tables_exist():
            return self.events([int(dataset_id)]).assign(topic=np.int16(0)).iloc[:0], np.zeros((0, 0), np.float32)
        columns = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
        table = self._arrow_query(
            f"""SELECT {columns}, v.topic, v.vector FROM events e JOIN event_vectors v ON v.event_id = e.event_id
                WHERE e.dataset_id = ? AND e.user_id = ? AND v.dataset_id = ?
                ORDER BY e.ts, e.event_id""",
            params=[int(dataset_id), str(user_id), int(dataset_id)],
        ).to_arrow_table()
        vectors = self._vectors_from_arrow(table.column("vector"), table.num_rows)
        frame = table.drop(["vector"]).to_pandas()
        frame = frame.astype({"dataset_id": "int32", "tz_offset_min": "Int16", "local_hour": "int8", "dow": "int8",
                              "topic": "int16"})
        return frame, vectors

    def time_filtered_cell_counts(
        self,
        resolution: int,
        window: str,
        *,
        datasets: Sequence[int] | None = None,
        hours: Sequence[int] | None = None,
        days_of_week: Sequence[int] | None = None,
        k: int | None = None,
    ) -> tuple[pd.DataFrame, int]:
        """`cell_aggregates` counted from the events of some local hours of day and days of week only
        (0 = Monday): the Map page's counts before scoring, with the filter bar's time filters (the
        precomputed aggregates hold every hour and day). None = no restriction."""
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        k = self.config.privacy.k_min_users if k is None else int(k)
        df = self._cell_aggregates_from_events(resolution, window, None, _id_list(datasets), _id_list(hours),
                                               _id_list(days_of_week))
        return _k_threshold(df, k)

    # --- partitioned Parquet: events and vectors for an engine beyond one machine (ray_engine.py) ---
    # Hive folders dataset_id=D/week=YYYY-MM-DD/parent=P, where `week` is the Monday of the event's
    # local week and `parent` its H3 cell at PARQUET_PARENT_RESOLUTION. Why these keys: every stored
    # cell x window aggregate (hour, day and week windows; cells at resolution >= the parent's) then
    # lies inside exactly one folder, so an engine aggregates folder by folder with no shuffle, and a
    # reader prunes by dataset, time and region. Why resolution 3 (~12,000 km², a metro area and its
    # surroundings): coarse enough that a city is one to three folders a week (res 4 would split
    # cities into more folders of a few hundred events), fine enough that a continent-wide dataset
    # still splits into hundreds of regions. The key columns are kept inside the files too (typed),
    # so a file read alone is complete.

    PARQUET_PARENT_RESOLUTION = 3
    # What each exportable table writes besides the keys (whitelisted identifiers only).
    _PARQUET_EXPORTS = {
        "events": "SELECT e.*, {keys} FROM ({events}) e",
        "event_vectors": """SELECT v.dataset_id, v.event_id, v.topic, v.vector, v.topic_sims, {keys}
                            FROM event_vectors v JOIN ({events}) e USING (dataset_id, event_id)""",
    }
    # The tables `insert_parquet` fills from an engine's Parquet output, with their columns.
    _PARQUET_IMPORTS = {
        "event_vectors": ("dataset_id", "event_id", "topic", "vector", "topic_sims"),
        "user_window_vectors": ("dataset_id", "user_id", "window_size", "window_start", "events", "vector"),
        "cell_window_vectors": (
            "dataset_id", "resolution", "window_size", "window_start", "cell", "events", "users", "coherence", "vector",
        ),
    }

    def export_parquet(
        self, folder: Path | str, table: str = "events", *, datasets: Sequence[int] | None = None,
        parent_resolution: int = PARQUET_PARENT_RESOLUTION,
    ) -> int:
        """Write `table` ("events" or "event_vectors") of some datasets (all when None) as Hive-
        partitioned Parquet under `folder` (replacing what is there); returns the rows written."""
        if table not in self._PARQUET_EXPORTS:
            raise ValueError(f"cannot export {table!r} as Parquet (tables: {', '.join(self._PARQUET_EXPORTS)})")
        if table == "event_vectors":
            self.ensure_analytics_schema()
        and_mask, or_mask = parent_masks(parent_resolution)
        events = """SELECT dataset_id, event_id, user_id, ts, local_ts, tz_offset_min, lat, lon, text, item_id,
                           category, category_path, event_type, cell, local_hour, dow
                    FROM events WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)"""
        keys = "CAST(date_trunc('week', e.local_ts) AS DATE) AS week, (e.cell & ?) | ? AS parent"
        select = self._PARQUET_EXPORTS[table].format(keys=keys, events=events)
        ids = _id_list(datasets)
        params = [and_mask, or_mask, ids, ids]  # {keys} comes before {events} in both statements
        rows = self._first_row(f"SELECT count(*) FROM ({select})", params)[0]
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)
        if rows:
            self.con.execute(
                f"COPY ({select}) TO ? (FORMAT parquet, PARTITION_BY (dataset_id, week, parent), "
                "WRITE_PARTITION_COLUMNS true, OVERWRITE_OR_IGNORE true)",
                [*params, str(folder)],
            )
        return int(rows)

    @staticmethod
    def events_from_arrow(table: pa.Table) -> pd.DataFrame:
        """Events read back from `export_parquet` files, as `events()` gives them (columns, dtypes;
        not its order)."""
        return _events_frame(table.select(list(EVENT_COLUMNS)))

    def insert_parquet(self, table: str, files: Sequence[str]) -> int:
        """Append the rows of Parquet `files` (an engine's output, with this table's columns) to
        `table` (event_vectors or a window-vector table); returns how many. The caller deletes
        what they replace first, in the same transaction."""
        if table not in self._PARQUET_IMPORTS:
            raise ValueError(f"cannot fill {table!r} from Parquet")
        if not files:
            return 0
        self.ensure_analytics_schema()
        names = ", ".join(self._PARQUET_IMPORTS[table])
        cast = names.replace("vector", "vector::FLOAT[]").replace("topic_sims", "topic_sims::FLOAT[]")
        before = self._first_row(f"SELECT count(*) FROM {table}")[0]
        order = "ORDER BY event_id" if table == "event_vectors" else ""
        self.con.execute(
            f"INSERT INTO {table} ({names}) SELECT {cast} FROM read_parquet(?::VARCHAR[]) {order}",
            [[str(f) for f in files]],
        )
        return int(self._first_row(f"SELECT count(*) FROM {table}")[0] - before)

# The ordinal of an ingest_checked row is rowid minus this (see read_csv_checked).
_FIRST_ROWID = "SELECT min(rowid) FROM ingest_checked"
# The rows an ingest stores: valid, not a duplicate, with their cell (see prepare_checked).
_KEPT_ROWS = f"""
    SELECT u.rowid - ({_FIRST_ROWID}) AS ord, u.*, c.cell, c.cell_rank
    FROM ingest_checked u JOIN ingest_coord_cells c ON c.lat = u.lat AND c.lon = u.lon
    WHERE u.reason IS NULL AND u.rowid NOT IN (SELECT ord FROM ingest_dups)"""
# Window-key columns older files have in events (whitelisted identifiers for the migration).
_DROPPED_EVENT_COLUMNS = ("hour_start", "day_start", "week_start")
# Tables with a dataset_id column, children first (a whitelist for delete_dataset).
_DATASET_TABLES = ("cell_windows", "rejects", "events", "datasets")


def _events_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of EVENT_COLUMNS as `events()` gives it (Arrow's pandas conversion is about
    twice as fast as DuckDB's own for these columns)."""
    frame = table.to_pandas()
    for name in ("event_type", "category_path", "category", "item_id"):
        if 0 < table.num_rows == table.column(name).null_count:  # as events() gives an all-null text column
            frame[name] = pd.Series([None] * len(frame), dtype=object)
    return frame.astype({"dataset_id": "int32", "tz_offset_min": "Int16", "local_hour": "int8", "dow": "int8"})


def adapted_checkpoint_name(dataset: str) -> str:
    """The registry name of a checkpoint adapted to one dataset (scoring that dataset prefers it;
    deleting the dataset deletes it)."""
    return f"adapted:{dataset}"


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _k_threshold(df: pd.DataFrame, k: int) -> tuple[pd.DataFrame, int]:
    """The cell x window rows with at least k distinct users, and how many were hidden."""
    visible = df["users"] >= k
    return (df[visible].reset_index(drop=True).astype({"cell": "int64", "events": "int64", "users": "int64"}),
            int((~visible).sum()))


def _align(stored_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each wanted id, whether `stored_ids` has it, and the rows of those it has (in order)."""
    order = np.argsort(stored_ids, kind="stable")
    if len(order) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(len(wanted), dtype=bool)
    pos = np.minimum(np.searchsorted(stored_ids[order], wanted), len(order) - 1)
    has = stored_ids[order][pos] == wanted
    return order[pos[has]], has


def _empty_vector_table(column: str | None) -> pa.Table:
    fields = {"event_id": pa.array([], pa.int64()), "topic": pa.array([], pa.int16())}
    if column is not None:
        fields[column] = pa.array([], pa.list_(pa.float32()))
    return pa.table(fields)


def _id_list(datasets: Sequence[int] | None) -> list[int] | None:
    return None if datasets is None else [int(d) for d in datasets]


# Hours per window size (the SQL range of one window in _cell_aggregates_from_events).
_WINDOW_HOURS = {"hour": 1, "day": 24, "week": 168}
