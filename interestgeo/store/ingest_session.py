"""One file's load as SQL: the temp-table protocol of the ingest, as one object.

`with store.ingest_session() as session:` then, inside the caller's transaction, in this order:
read_csv_checked (parse and validate into the temp table `ingest_checked`) -> checked_rejects ->
[replace_checked_user_ids] -> prepare_checked (duplicates, H3 cells, dense user numbers) ->
insert_events -> insert_rejects -> insert_cell_windows -> insert_dataset. Leaving the block drops
every temp table and registered frame (also after a failure). The steps talk through those temp
tables (ingest_checked, ingest_dups, ingest_coord_cells, ...), which is why they live together
here and nowhere else. interestgeo.ingest orchestrates (line numbers, counting, the report).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from interestgeo.cells import latlng_to_cell
from interestgeo.schema import (
    EPOCH_MS_THRESHOLD,
    FOURSQUARE_TS_FORMAT,
    MAX_TZ_OFFSET_MIN,
    TS_FUTURE_SLACK_DAYS,
    TS_MIN,
    ColumnMapping,
    Reason,
)
from interestgeo.store._db import first_row

__all__ = ["CountingInput", "IngestSession"]


class CountingInput(NamedTuple):
    """What `prepare_checked` hands the cell x window counting (ingest/aggregate.py), per stored row."""

    users: np.ndarray  # (N,) int64 dense user numbers
    cell_ranks: np.ndarray  # (N,) int64 index of the row's H3 cell into unique_cells
    hours: np.ndarray  # (N,) int64 local hours since 1970-01-01 00:00
    unique_cells: np.ndarray  # (C,) int64 the file's distinct cells, sorted

# The ordinal of an ingest_checked row is rowid minus this (see read_csv_checked).
_FIRST_ROWID = "SELECT min(rowid) FROM ingest_checked"
# The rows an ingest stores: valid, not a duplicate, with their cell (see prepare_checked).
_KEPT_ROWS = f"""
    SELECT u.rowid - ({_FIRST_ROWID}) AS ord, u.*, c.cell, c.cell_rank
    FROM ingest_checked u JOIN ingest_coord_cells c ON c.lat = u.lat AND c.lon = u.lon
    WHERE u.reason IS NULL AND u.rowid NOT IN (SELECT ord FROM ingest_dups)"""


class IngestSession:
    """The SQL steps of one file's load (see the module docstring for their order)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, stored_hour_dow: bool) -> None:
        self.con = con
        # A version-0 file stores local_hour and dow (see _schema.stored_hour_dow): written by insert_events.
        self._stored_hour_dow = stored_hour_dow

    def __enter__(self) -> IngestSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop_temps()

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
        kept, invalid = first_row(self.con, "SELECT count(*), count(reason) FROM ingest_checked")
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

    def prepare_checked(self, base_resolution: int) -> CountingInput:
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
        return CountingInput(users=np.asarray(valid["uid"], np.int64)[keep],
                             cell_ranks=np.asarray(valid["cell_rank"], np.int64)[keep],
                             hours=np.asarray(valid["h"], np.int64)[keep], unique_cells=unique_cells.astype(np.int64))

    def insert_events(self, dataset_id: int) -> tuple[int, int]:
        """Insert the rows `prepare_checked` kept as events of `dataset_id`.

        event_id = first free id + file position, so ids are unique across the store and follow
        file order. Returns (rows_stored, duplicates_skipped).
        """
        first_id = first_row(self.con, "SELECT coalesce(max(event_id), -1) + 1 FROM events")[0]
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
        valid, duplicates = first_row(self.con, 
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
        return int(first_row(self.con, "SELECT coalesce(max(dataset_id), 0) + 1 FROM datasets")[0])

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

    def drop_temps(self) -> None:
        """Free the ingest's temporary tables and registered frames (also after a failure)."""
        for table in ("ingest_checked", "ingest_dups", "ingest_csv_errors", "ingest_csv_scans"):
            self.con.execute(f"DROP TABLE IF EXISTS {table}")
        for view in ("ingest_coord_cells", "ingest_dup_keys", "ingest_cell_windows", "ingest_reject_rows"):
            self.con.unregister(view)
