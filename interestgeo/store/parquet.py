"""Events and vectors as partitioned Parquet, for an engine beyond one machine (ray_engine.py).

Hive folders dataset_id=D/week=YYYY-MM-DD/parent=P, where `week` is the Monday of the event's
local week and `parent` its H3 cell at PARQUET_PARENT_RESOLUTION. Why these keys: every stored
cell x window aggregate (hour, day and week windows; cells at resolution >= the parent's) then
lies inside exactly one folder, so an engine aggregates folder by folder with no shuffle, and a
reader prunes by dataset, time and region. Why resolution 3 (~12,000 km², a metro area and its
surroundings): coarse enough that a city is one to three folders a week (res 4 would split
cities into more folders of a few hundred events), fine enough that a continent-wide dataset
still splits into hundreds of regions. The key columns are kept inside the files too (typed),
so a file read alone is complete.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interestgeo.cells import parent_masks
from interestgeo.store._db import EVENT_COLUMNS, events_frame, id_list
from interestgeo.store._part import StorePart

__all__ = ["ParquetPart"]


class ParquetPart(StorePart):
    """Export events/vectors as Hive-partitioned Parquet; fill vector tables from an engine's Parquet."""

    PARQUET_PARENT_RESOLUTION = 3
    # What each exportable table writes besides the keys (whitelisted identifiers only); event
    # vectors as the store holds them (compact: q, scale; an older file read-only: vector).
    _PARQUET_EXPORTS = {
        "events": "SELECT e.*, {keys} FROM ({events}) e",
        "event_vectors": """SELECT v.dataset_id, v.event_id, v.topic, {vectors}, v.topic_sims, {keys}
                            FROM event_vectors v JOIN ({events}) e USING (dataset_id, event_id)""",
    }
    # The tables `insert_staged` fills from an engine's Parquet output, with their columns.
    _PARQUET_IMPORTS = {
        "event_vectors": ("dataset_id", "event_id", "topic", "q", "scale", "topic_sims"),
        "user_window_vectors": ("dataset_id", "user_id", "window_size", "window_start", "events", "coherence", "vector"),
        "cell_window_vectors": (
            "dataset_id", "resolution", "window_size", "window_start", "cell", "events", "users", "coherence", "vector",
            "shares",
        ),
    }

    # How Parquet's list columns become the store's types.
    _PARQUET_CASTS = {"vector": "vector::FLOAT[]", "topic_sims": "topic_sims::FLOAT[]", "q": "q::TINYINT[]"}

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
        vectors = self._vector_sql("v.") if table == "event_vectors" else ""
        select = self._PARQUET_EXPORTS[table].format(keys=keys, events=events, vectors=vectors)
        ids = id_list(datasets)
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

    def export_events(self, path: Path | str, datasets: Sequence[int] | None = None, row_group: int = 65_536) -> int:
        """Write the events of some datasets (all when None) to one Parquet file, in `events()`'s
        order and columns, in row groups of `row_group` rows; returns how many.

        Why: a full score snapshots what it scores in a few seconds, then reads the file a chunk
        of users at a time without holding the store (vectors/staging.py EventsSnapshot)."""
        ids = id_list(datasets)
        self.con.execute(
            f"""COPY (SELECT {", ".join(EVENT_COLUMNS)} FROM events
                      WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)
                      ORDER BY dataset_id, user_id, ts, event_id)
                TO ? (FORMAT parquet, ROW_GROUP_SIZE {int(row_group)})""",
            [ids, ids, str(path)],
        )
        return int(pq.ParquetFile(path).metadata.num_rows)

    @staticmethod
    def events_from_arrow(table: pa.Table) -> pd.DataFrame:
        """Events read back from `export_parquet` files, as `events()` gives them (columns, dtypes;
        not its order)."""
        return events_frame(table.select(list(EVENT_COLUMNS)))

    def insert_staged(
        self, table: str, files: Sequence[str], window: str | None = None, datasets: Sequence[int] | None = None,
    ) -> int:
        """Append the rows of staged `files` with this table's columns (an engine's Parquet output,
        or a local run's Arrow IPC files, named *.arrow: vectors/staging.py) to `table`
        (event_vectors or a window-vector table); returns how many. The caller deletes what they
        replace first, in the same transaction. With `window`, only that window size's rows
        (inserted one size at a time, each size's rows lie together: a reader of one size skips
        the others' row groups); with `datasets`, only their rows (a dataset deleted while a score
        computed gets none back)."""
        if table not in self._PARQUET_IMPORTS:
            raise ValueError(f"cannot fill {table!r} from staged files")
        if not files:
            return 0
        self.ensure_analytics_schema()
        columns = self._PARQUET_IMPORTS[table]
        names = ", ".join(columns)
        cast = ", ".join(self._PARQUET_CASTS.get(c, c) for c in columns)
        before = self._first_row(f"SELECT count(*) FROM {table}")[0]
        order = "ORDER BY event_id" if table == "event_vectors" else ""
        ids = id_list(datasets)
        window_rows = "" if window is None else "window_size = ? AND"  # event_vectors has no window_size
        arrow = [str(f) for f in files if str(f).endswith(".arrow")]
        if arrow and len(arrow) != len(files):
            raise ValueError("staged files are all Arrow IPC or all Parquet")
        rows = "read_parquet(?::VARCHAR[])"
        params: list[object] = [[str(f) for f in files]]
        if arrow:  # DuckDB scans Arrow IPC through a pyarrow dataset (memory-mapped, no copy)
            import pyarrow.dataset as ds

            self.con.register(_STAGED_VIEW, ds.dataset(arrow, format="ipc"))
            rows, params = _STAGED_VIEW, []
        try:
            self.con.execute(
                f"""INSERT INTO {table} ({names}) SELECT {cast} FROM {rows}
                    WHERE {window_rows} (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)) {order}""",
                [*params, *([] if window is None else [window]), ids, ids],
            )
        finally:
            if arrow:
                self.con.unregister(_STAGED_VIEW)
        return int(self._first_row(f"SELECT count(*) FROM {table}")[0] - before)


# The name under which insert_staged shows DuckDB a set of Arrow IPC files (a fixed identifier).
_STAGED_VIEW = "interestgeo_staged_rows"
