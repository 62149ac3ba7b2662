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
    events                     one row per accepted event, stored sorted by (dataset, user, ts)
                               so per-user histories are contiguous; H3 cell (BIGINT, base
                               resolution), local time, hour of day, day of week, window keys
    rejects                    (dataset, physical line, raw line, reason) for every rejected row
    cell_windows               per dataset x resolution x window x window start x cell: events and
                               distinct users. Users are (dataset_id, user_id), so distinct users of
                               several datasets are the sum of the per-dataset counts: maps of any
                               dataset selection are a cheap SUM over this table.

Time windows are in local wall time (ts + tz offset when known, else UTC): "Friday evening" means
the evening where the event happened. Weeks start on Monday (ISO).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from interestgeo.cells import latlng_to_cell, parent_masks
from interestgeo.config import Config
from interestgeo.schema import (
    EPOCH_MS_THRESHOLD,
    FOURSQUARE_TS_FORMAT,
    MAX_TZ_OFFSET_MIN,
    TS_MIN,
    ColumnMapping,
    Reason,
)

__all__ = ["Store", "WINDOWS", "EVENT_COLUMNS"]

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
        local_hour TINYINT NOT NULL,
        dow TINYINT NOT NULL,
        hour_start TIMESTAMP NOT NULL,
        day_start TIMESTAMP NOT NULL,
        week_start TIMESTAMP NOT NULL
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

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: Path | str, read_only: bool = False, *, config: Config | None = None) -> Store:
        """Open (creating file and schema when missing, unless read_only) the store at `path`."""
        config = config or Config()
        path = Path(path)
        if read_only and not path.exists():
            raise FileNotFoundError(f"no database at {path}")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(path), read_only=read_only)
        # UTC session time zone: TIMESTAMPTZ values come back as UTC and naive ISO timestamps in
        # CSVs are read as UTC (schema.py). Fetch timestamps via pandas/arrow (fetchall of
        # TIMESTAMPTZ needs pytz, which we do not depend on).
        con.execute("SET TimeZone = 'UTC'")
        if config.store.threads:
            con.execute("SET threads = ?", [int(config.store.threads)])
        store = cls(con, path, read_only, config)
        if not read_only:
            store._create_schema()
        return store

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        for statement in _SCHEMA:
            self.con.execute(statement)
        self.con.execute(
            "INSERT OR IGNORE INTO meta VALUES ('base_resolution', ?), ('map_resolutions', ?)",
            [str(self.config.store.base_resolution), ",".join(map(str, self.config.store.map_resolutions))],
        )

    @property
    def base_resolution(self) -> int:
        """The H3 resolution of `events.cell` in this file (fixed when the file was created)."""
        row = self.con.execute("SELECT value FROM meta WHERE key = 'base_resolution'").fetchone()
        return int(row[0]) if row else self.config.store.base_resolution

    @property
    def map_resolutions(self) -> tuple[int, ...]:
        """Resolutions precomputed in `cell_windows`."""
        row = self.con.execute("SELECT value FROM meta WHERE key = 'map_resolutions'").fetchone()
        return tuple(int(r) for r in row[0].split(",")) if row else self.config.store.map_resolutions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing block: any exception (Ctrl-C included) rolls everything back."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
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
        row = self.con.execute("SELECT dataset_id FROM datasets WHERE name = ?", [name]).fetchone()
        return None if row is None else int(row[0])

    def dataset_by_hash(self, content_hash: str) -> tuple[int, str] | None:
        row = self.con.execute(
            "SELECT dataset_id, name FROM datasets WHERE content_hash = ?", [content_hash]
        ).fetchone()
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
        if resolution in self.map_resolutions:
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
        visible = df["users"] >= k
        hidden = int((~visible).sum())
        df = df[visible].reset_index(drop=True)
        return df.astype({"cell": "int64", "events": "int64", "users": "int64"}), hidden

    def _cell_aggregates_from_events(
        self, resolution: int, window: str, start: datetime | None, ids: list[int] | None
    ) -> pd.DataFrame:
        if not 0 <= resolution <= self.base_resolution:
            raise ValueError(f"resolution must be 0..{self.base_resolution} (the base resolution)")
        and_mask, or_mask = parent_masks(resolution)
        return self.con.execute(
            f"""SELECT (cell & ?) | ? AS cell, date_trunc('{WINDOWS[window]}', local_ts) AS window_start,
                       count(*)::BIGINT AS events,
                       count(DISTINCT (dataset_id, user_id))::BIGINT AS users
                FROM events
                WHERE (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                GROUP BY ALL
                HAVING ?::TIMESTAMP IS NULL OR window_start = ?::TIMESTAMP
                ORDER BY window_start, cell""",
            [and_mask, or_mask, ids, ids, start, start],
        ).df()

    def window_starts(self, window: str, datasets: Sequence[int] | None = None) -> pd.Series:
        """The distinct local window starts that hold events (for time sliders)."""
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        ids = _id_list(datasets)
        return self.con.execute(
            """SELECT DISTINCT window_start FROM cell_windows
               WHERE window_size = ? AND resolution = ?
                 AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
               ORDER BY window_start""",
            [window, self.map_resolutions[0], ids, ids],
        ).df()["window_start"]

    # ------------------------------------------------------------------ writing

    def delete_dataset(self, dataset_id: int) -> bool:
        """Remove a dataset and everything derived from it (atomic). False when it did not exist."""
        with self.transaction():
            existed = self.con.execute("SELECT count(*) FROM datasets WHERE dataset_id = ?", [dataset_id]).fetchone()
            for table in _DATASET_TABLES:
                self.con.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [dataset_id])
        return bool(existed and existed[0])

    # --- ingest steps (owner: ingest). Called by interestgeo.ingest inside one transaction. ---

    def stage_csv(self, path: Path, columns: int, *, delimiter: str, encoding: str, compression: str) -> None:
        """Read the CSV into the temp table `ingest_raw` (columns c0.., all VARCHAR, file order).

        Everything is read as text so that validation (`check_staged`) can say exactly what is
        wrong with each value. Structurally broken lines (wrong column count, unterminated
        quote) go to the temp table `ingest_csv_errors` instead of aborting the read. The rowid
        of `ingest_raw` is the record's position among the records DuckDB kept (insertion order
        is preserved), which ingest maps back to physical line numbers.
        """
        self.con.execute("DROP TABLE IF EXISTS ingest_csv_errors")
        self.con.execute("DROP TABLE IF EXISTS ingest_csv_scans")
        self.con.execute(
            """CREATE OR REPLACE TEMP TABLE ingest_raw AS
               SELECT * FROM read_csv($path, columns = $columns, auto_detect = false, header = true,
                   delim = $delim, quote = '"', escape = '"', encoding = $encoding,
                   compression = $compression, store_rejects = true,
                   rejects_table = 'ingest_csv_errors', rejects_scan = 'ingest_csv_scans',
                   ignore_errors = true, strict_mode = true, null_padding = false,
                   max_line_size = 10000000)""",
            {
                "path": str(path),
                "columns": {f"c{i}": "VARCHAR" for i in range(columns)},
                "delim": delimiter,
                "encoding": encoding,
                "compression": compression,
            },
        )

    def staged_csv_errors(self) -> pd.DataFrame:
        """DuckDB's structural rejects of the staged file: one row per bad record, file order."""
        return self.con.execute(
            """SELECT line, min(line_byte_position) AS byte_position,
                      arg_min(error_type::VARCHAR, column_idx) AS error_type,
                      first(csv_line) AS csv_line
               FROM ingest_csv_errors GROUP BY line ORDER BY line"""
        ).df()

    def check_staged(self, mapping: ColumnMapping, columns: list[str], now: datetime) -> tuple[int, int]:
        """Parse and validate `ingest_raw` into `ingest_checked`; returns (rows_read, rows_rejected).

        Each row gets the first failing rule's reason (order in schema.Reason) or NULL. Values
        are parsed once here; later steps only read typed columns.
        """
        col = {name: f"c{i}" for i, name in enumerate(columns)}

        def ref(field_name: str) -> str:
            source = getattr(mapping, field_name)
            return col[source] if source else "NULL::VARCHAR"

        text_parts = ", ".join(f"nullif(trim({col[c]}), '')" for c in mapping.text)
        # One source column: keep the text exactly as written; several: join the non-empty parts.
        text_expr = col[mapping.text[0]] if len(mapping.text) == 1 else f"concat_ws(', ', {text_parts})"
        ts_raw = f"trim({ref('ts')})"
        ts_expr = f"""CASE WHEN regexp_full_match({ts_raw}, '-?[0-9]+(\\.[0-9]+)?') THEN
                CASE WHEN abs(try_cast({ts_raw} AS DOUBLE)) >= {EPOCH_MS_THRESHOLD}
                     THEN try(make_timestamp((try_cast({ts_raw} AS DOUBLE) * 1000)::BIGINT))
                     ELSE try(make_timestamp((try_cast({ts_raw} AS DOUBLE) * 1000000)::BIGINT)) END
                     ::TIMESTAMPTZ
            ELSE coalesce(try_cast({ts_raw} AS TIMESTAMPTZ), try_strptime({ts_raw}, $fsq)) END"""
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE ingest_checked AS
            WITH parsed AS (
                SELECT {ref('user_id')} AS user_id, {text_expr} AS text,
                       {ts_raw} AS ts_raw, {ts_expr} AS ts,
                       try_cast(trim({ref('lat')}) AS DOUBLE) AS lat,
                       try_cast(trim({ref('lon')}) AS DOUBLE) AS lon,
                       {ref('lat')} AS lat_raw, {ref('lon')} AS lon_raw,
                       {ref('tz_offset_min')} AS tz_raw,
                       try_cast(trim({ref('tz_offset_min')}) AS DOUBLE) AS tz,
                       {ref('item_id')} AS item_id, {ref('category')} AS category,
                       {ref('category_path')} AS category_path, {ref('event_type')} AS event_type
                FROM ingest_raw ORDER BY rowid
            )
            SELECT * EXCLUDE (ts_raw, lat_raw, lon_raw, tz_raw, tz),
                   CASE WHEN tz = round(tz) AND abs(tz) <= {MAX_TZ_OFFSET_MIN} THEN tz::SMALLINT END AS tz_offset_min,
                   CASE
                     WHEN user_id IS NULL OR trim(user_id) = '' THEN $r_user
                     WHEN text IS NULL OR trim(text) = '' THEN $r_text
                     WHEN ts IS NULL THEN $r_ts
                     WHEN ts < $ts_min OR ts > $ts_max THEN $r_ts_range
                     WHEN lat IS NULL THEN $r_lat
                     WHEN lon IS NULL THEN $r_lon
                     WHEN NOT (lat BETWEEN -90 AND 90) THEN $r_lat_range
                     WHEN NOT (lon BETWEEN -180 AND 180) THEN $r_lon_range
                     WHEN lat = 0 AND lon = 0 THEN $r_zero
                     WHEN tz_raw IS NOT NULL AND trim(tz_raw) <> '' AND (tz IS NULL OR tz <> round(tz)) THEN $r_tz
                     WHEN tz IS NOT NULL AND abs(tz) > {MAX_TZ_OFFSET_MIN} THEN $r_tz_range
                   END AS reason
            FROM parsed""",
            {
                "fsq": FOURSQUARE_TS_FORMAT,
                "ts_min": TS_MIN,
                "ts_max": pd.Timestamp(now) + pd.Timedelta(days=1),
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
        self.con.execute("DROP TABLE ingest_raw")
        read, rejected = self.con.execute(
            "SELECT count(*), count(reason) FROM ingest_checked"
        ).fetchone()
        return int(read), int(rejected)

    def checked_rejects(self) -> pd.DataFrame:
        """(ordinal, reason) of the rows that failed validation, in file order."""
        return self.con.execute(
            "SELECT rowid AS ordinal, reason FROM ingest_checked WHERE reason IS NOT NULL ORDER BY rowid"
        ).df()

    def load_checked(self, dataset_id: int, base_resolution: int) -> tuple[int, int]:
        """Insert the valid, de-duplicated rows of `ingest_checked` as events of `dataset_id`.

        Duplicates (same user, ts, lat, lon, text within the file) keep their first row. H3 is
        computed once per distinct coordinate pair (check-ins repeat venues, so this is far fewer
        than rows). Events are inserted sorted by (user, ts, file order) and event ids follow
        that order, so `events()` reads them back without a real sort.
        Returns (rows_stored, duplicates_skipped).
        """
        con = self.con
        con.execute(
            """CREATE OR REPLACE TEMP TABLE ingest_unique AS
               SELECT min(rowid) AS ord, user_id, ts, lat, lon, text,
                      arg_min(tz_offset_min, rowid) AS tz_offset_min, arg_min(item_id, rowid) AS item_id,
                      arg_min(category, rowid) AS category, arg_min(category_path, rowid) AS category_path,
                      arg_min(event_type, rowid) AS event_type
               FROM ingest_checked WHERE reason IS NULL
               GROUP BY user_id, ts, lat, lon, text"""
        )
        coords = con.execute("SELECT DISTINCT lat, lon FROM ingest_unique").df()
        coord_cells = pd.DataFrame(
            {
                "lat": coords["lat"].to_numpy(np.float64),
                "lon": coords["lon"].to_numpy(np.float64),
                "cell": latlng_to_cell(coords["lat"].to_numpy(), coords["lon"].to_numpy(), base_resolution),
            }
        )
        con.register("ingest_coord_cells", coord_cells)
        try:
            first_id = con.execute("SELECT coalesce(max(event_id), 0) + 1 FROM events").fetchone()[0]
            con.execute(
                """INSERT INTO events
                   SELECT ?, ? + row_number() OVER (ORDER BY u.user_id, u.ts, u.ord) - 1,
                          u.user_id, u.ts, l.local_ts, u.tz_offset_min, u.lat, u.lon, u.text,
                          u.item_id, u.category, u.category_path, u.event_type, c.cell,
                          hour(l.local_ts), isodow(l.local_ts) - 1,
                          date_trunc('hour', l.local_ts), date_trunc('day', l.local_ts),
                          date_trunc('week', l.local_ts)
                   FROM ingest_unique u
                   JOIN ingest_coord_cells c ON c.lat = u.lat AND c.lon = u.lon,
                   LATERAL (SELECT timezone('UTC', u.ts) + to_minutes(coalesce(u.tz_offset_min, 0)::BIGINT)
                            AS local_ts) l
                   ORDER BY u.user_id, u.ts, u.ord""",
                [dataset_id, int(first_id)],
            )
        finally:
            con.unregister("ingest_coord_cells")
        valid, stored = con.execute(
            "SELECT (SELECT count(*) FROM ingest_checked WHERE reason IS NULL), (SELECT count(*) FROM ingest_unique)"
        ).fetchone()
        con.execute("DROP TABLE ingest_unique")
        return int(stored), int(valid) - int(stored)

    def build_cell_windows(self, dataset_id: int) -> None:
        """Aggregate one dataset's events into `cell_windows` at every map resolution x window.

        Distinct users are computed hierarchically: the distinct (user, cell, window) triples at
        a coarser resolution or longer window are derived from the finer ones, so each step
        reads a table smaller than the last instead of all events twelve times.
        """
        con = self.con
        resolutions = sorted(self.map_resolutions, reverse=True)
        windows = list(WINDOWS)
        finest_mask = parent_masks(resolutions[0])
        con.execute(
            """CREATE OR REPLACE TEMP TABLE agg_src AS
               SELECT user_id, (cell & ?) | ? AS cell, hour_start AS ws, count(*)::INTEGER AS n
               FROM events WHERE dataset_id = ? GROUP BY ALL""",
            [*finest_mask, dataset_id],
        )
        previous_res: str | None = None
        for r in resolutions:
            res_table = f"agg_r{r}_hour"
            if previous_res is not None:
                con.execute(
                    f"""CREATE OR REPLACE TEMP TABLE {res_table} AS
                        SELECT user_id, (cell & ?) | ? AS cell, ws, sum(n)::INTEGER AS n
                        FROM {previous_res} GROUP BY ALL""",
                    list(parent_masks(r)),
                )
            else:
                con.execute(f"ALTER TABLE agg_src RENAME TO {res_table}")
            previous_window = res_table
            for w in windows:
                table = f"agg_r{r}_{w}"
                if w != "hour":
                    con.execute(
                        f"""CREATE OR REPLACE TEMP TABLE {table} AS
                            SELECT user_id, cell, date_trunc('{WINDOWS[w]}', ws) AS ws, sum(n)::INTEGER AS n
                            FROM {previous_window} GROUP BY ALL"""
                    )
                con.execute(
                    f"""INSERT INTO cell_windows
                        SELECT ?, ?, ?, ws, cell, sum(n)::INTEGER, count(*)::INTEGER
                        FROM {table} GROUP BY ws, cell ORDER BY ws, cell""",
                    [dataset_id, r, w],
                )
                if w != "hour" and previous_window != res_table:
                    con.execute(f"DROP TABLE {previous_window}")
                previous_window = table
            con.execute(f"DROP TABLE {previous_window}")
            if previous_res is not None:
                con.execute(f"DROP TABLE {previous_res}")
            previous_res = res_table
        if previous_res is not None:
            con.execute(f"DROP TABLE {previous_res}")

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
        return int(self.con.execute("SELECT coalesce(max(dataset_id), 0) + 1 FROM datasets").fetchone()[0])

    def drop_ingest_temps(self) -> None:
        for table in ("ingest_raw", "ingest_checked", "ingest_unique", "ingest_csv_errors", "ingest_csv_scans"):
            self.con.execute(f"DROP TABLE IF EXISTS {table}")

    # --- analytics (owner: analytics) ---
    # Per-event interest vectors (the source of every analytics result), the topics, and the
    # user x window and cell x window interest vectors `interestgeo score` stores. Vectors are
    # FLOAT[] lists (dimension-agnostic, like text_embeddings) read back in one Arrow buffer.

    _ANALYTICS_SCHEMA = (
        """CREATE TABLE IF NOT EXISTS event_vectors (
            dataset_id INTEGER NOT NULL,
            event_id BIGINT NOT NULL,
            topic SMALLINT NOT NULL,
            vector FLOAT[] NOT NULL
        )""",
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
    )
    # The window-vector tables `replace_window_vectors` may write (a whitelist of identifiers).
    _WINDOW_VECTOR_TABLES = ("user_window_vectors", "cell_window_vectors")
    # Their columns (besides `vector`), the only column names put into INSERT statements.
    _WINDOW_VECTOR_COLUMNS = frozenset(
        {"dataset_id", "user_id", "resolution", "window_size", "window_start", "cell", "events", "users", "coherence"}
    )

    def _analytics_tables_exist(self) -> bool:
        row = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'event_vectors' AND NOT temporary"
        ).fetchone()
        return bool(row and row[0])

    def ensure_analytics_schema(self) -> None:
        """Create the analytics tables when missing (a no-op on read-only stores)."""
        if not self.read_only:
            for statement in self._ANALYTICS_SCHEMA:
                self.con.execute(statement)

    @staticmethod
    def _vectors_frame(columns: dict[str, Any], vectors: np.ndarray) -> Any:
        """An Arrow table of `columns` plus a FLOAT[] `vector` column from a (N, D) array."""
        import pyarrow as pa

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = vectors.shape
        offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
        table = pa.table({name: pa.array(values) for name, values in columns.items()})
        return table.append_column("vector", pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1))))

    @staticmethod
    def _vectors_from_arrow(column: Any, n: int) -> np.ndarray:
        """(N, D) float32 from an Arrow list column of equal-length vectors."""
        if n == 0:
            return np.zeros((0, 0), dtype=np.float32)
        flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return flat.reshape(n, -1)

    def write_event_vectors(
        self, dataset_ids: np.ndarray, event_ids: np.ndarray, topics: np.ndarray, vectors: np.ndarray
    ) -> None:
        """Insert or replace the interest vectors of these events."""
        self.ensure_analytics_schema()
        frame = self._vectors_frame(
            {
                "dataset_id": np.asarray(dataset_ids, dtype=np.int32),
                "event_id": np.asarray(event_ids, dtype=np.int64),
                "topic": np.asarray(topics, dtype=np.int16),
            },
            vectors,
        )
        self.con.register("analytics_new_vectors", frame)
        try:
            self.con.execute(
                "DELETE FROM event_vectors WHERE event_id IN (SELECT event_id FROM analytics_new_vectors)"
            )
            self.con.execute(
                """INSERT INTO event_vectors
                   SELECT dataset_id, event_id, topic, vector::FLOAT[] FROM analytics_new_vectors ORDER BY event_id"""
            )
        finally:
            self.con.unregister("analytics_new_vectors")

    def delete_event_vectors(self, datasets: Sequence[int] | None = None) -> None:
        """Forget the interest vectors of some datasets (all when None) before a full re-score."""
        self.ensure_analytics_schema()
        ids = _id_list(datasets)
        self.con.execute(
            "DELETE FROM event_vectors WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)",
            [ids, ids],
        )

    def event_vectors(
        self, datasets: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """(event_ids int64 (N,), topics int16 (N,), vectors float32 (N, D), source) sorted by event id.

        `source` names the model of the latest score run ("" when none); empty arrays when nothing is scored.
        """
        if not self._analytics_tables_exist():
            return np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros((0, 0), np.float32), ""
        ids = _id_list(datasets)
        table = self.con.sql(
            """SELECT event_id, topic, vector FROM event_vectors
               WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)
               ORDER BY event_id""",
            params=[ids, ids],
        ).to_arrow_table()
        n = table.num_rows
        runs = self.con.execute("SELECT source FROM score_runs ORDER BY run_id DESC LIMIT 1").fetchone()
        return (
            table.column("event_id").to_numpy().astype(np.int64),
            table.column("topic").to_numpy().astype(np.int16),
            self._vectors_from_arrow(table.column("vector"), n),
            str(runs[0]) if runs else "",
        )

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
        table = self.con.sql("SELECT label, source, vector FROM analytics_topics ORDER BY topic_id").to_arrow_table()
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
    ) -> None:
        """Replace the rows of a window-vector table for `window` (in some datasets, from a window start on).

        `columns` holds the table's non-vector columns in table order, one array each.
        """
        if table not in self._WINDOW_VECTOR_TABLES:
            raise ValueError(f"not a window-vector table: {table!r}")
        self.ensure_analytics_schema()
        ids = _id_list(datasets)
        start = None if from_start is None else pd.Timestamp(from_start).to_pydatetime()
        self.con.execute(
            f"""DELETE FROM {table} WHERE window_size = ?
                  AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                  AND (?::TIMESTAMP IS NULL OR window_start >= ?::TIMESTAMP)""",
            [window, ids, ids, start, start],
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
            result = self.con.sql(
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
            result = self.con.sql(
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

    def score_runs(self) -> pd.DataFrame:
        """Every score run, newest first."""
        if not self._analytics_tables_exist():
            return pd.DataFrame()
        return self.con.execute("SELECT * FROM score_runs ORDER BY run_id DESC").df()

# Tables with a dataset_id column, children first (a whitelist for delete_dataset).
_DATASET_TABLES = ("cell_windows", "rejects", "events", "datasets")


def _id_list(datasets: Sequence[int] | None) -> list[int] | None:
    return None if datasets is None else [int(d) for d in datasets]
