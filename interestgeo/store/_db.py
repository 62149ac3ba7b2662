"""Connection-free helpers of the store's parts: codecs between numpy and DuckDB's Arrow, id lists,
alignment by id, the privacy threshold, and the whitelists of identifiers the SQL text may hold.

Functions, not `Store` privates, so each is testable alone and every part uses the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from interestgeo.windows import COUNTED_WINDOWS, check_window

__all__ = [
    "EVENT_COLUMNS", "EVENT_DTYPES", "align", "arrow_query", "check_counted_window", "empty_vector_table",
    "events_frame", "finite_or_none", "first_row", "id_list", "k_threshold", "list_column", "vectors_frame",
    "vectors_from_arrow",
]

EVENT_COLUMNS = (
    "dataset_id", "event_id", "user_id", "ts", "local_ts", "tz_offset_min", "lat", "lon", "text",
    "item_id", "category", "category_path", "event_type", "cell", "local_hour", "dow",
)
# The dtypes `events()` gives where DuckDB's or Arrow's own conversion differs (CONTRACT.md).
EVENT_DTYPES = {"dataset_id": "int32", "tz_offset_min": "Int16", "local_hour": "int8", "dow": "int8"}


def check_counted_window(window: str) -> None:
    """ValueError unless `window` is one of windows.COUNTED_WINDOWS: the whitelist of the window
    names the store puts into SQL text (each is also DuckDB's date_trunc part of that name)."""
    check_window(window, COUNTED_WINDOWS)


def first_row(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
    """The first row of a query, with the result fully consumed (DuckDB 2 refuses new work on
    a connection whose last result was only partly fetched, as fetchone() leaves it)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def arrow_query(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """Run a query through the relation API (Arrow without an extra copy).

    `complete()` first: a DB-API result left half-read (a `fetchone()` anywhere) otherwise
    blocks the relation API on this connection.
    """
    con.complete()
    return con.sql(sql, params=params)


def vectors_frame(columns: dict[str, Any], vectors: np.ndarray | None, **matrices: np.ndarray) -> pa.Table:
    """An Arrow table of `columns` plus a FLOAT[] `vector` column from a (N, D) array (none when
    None) and one list column per further named (N, K) array (see `list_column`)."""
    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    named = matrices if vectors is None else {"vector": vectors, **matrices}
    for name, matrix in named.items():
        table = table.append_column(name, list_column(matrix))
    return table


def list_column(matrix: np.ndarray) -> pa.ListArray:
    """A (N, D) array as an Arrow list column of N rows: list<int8> for int8 codes (compact
    vectors, store/compact.py), else list<float32>. No copy beyond the dtype's."""
    matrix = np.ascontiguousarray(matrix, dtype=np.int8 if np.asarray(matrix).dtype == np.int8 else np.float32)
    n, d = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))


def vectors_from_arrow(column: Any, n: int, rows: np.ndarray | None = None) -> np.ndarray:
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


def events_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of EVENT_COLUMNS as `events()` gives it (Arrow's pandas conversion is about
    twice as fast as DuckDB's own for these columns)."""
    frame = table.to_pandas()
    for name in ("event_type", "category_path", "category", "item_id"):
        if 0 < table.num_rows == table.column(name).null_count:  # as events() gives an all-null text column
            frame[name] = pd.Series([None] * len(frame), dtype=object)
    return frame.astype(EVENT_DTYPES)


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def k_threshold(df: pd.DataFrame, k: int) -> tuple[pd.DataFrame, int]:
    """The cell x window rows with at least k distinct users, and how many were hidden."""
    visible = df["users"] >= k
    return (df[visible].reset_index(drop=True).astype({"cell": "int64", "events": "int64", "users": "int64"}),
            int((~visible).sum()))


def align(stored_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each wanted id, whether `stored_ids` has it, and the rows of those it has (in order)."""
    order = np.argsort(stored_ids, kind="stable")
    if len(order) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(len(wanted), dtype=bool)
    pos = np.minimum(np.searchsorted(stored_ids[order], wanted), len(order) - 1)
    has = stored_ids[order][pos] == wanted
    return order[pos[has]], has


def empty_vector_table(column: str | None) -> pa.Table:
    fields = {"event_id": pa.array([], pa.int64()), "topic": pa.array([], pa.int16())}
    if column is not None:
        fields[column] = pa.array([], pa.list_(pa.float32()))
    return pa.table(fields)


def id_list(datasets: Sequence[int] | None) -> list[int] | None:
    return None if datasets is None else [int(d) for d in datasets]
