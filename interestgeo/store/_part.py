"""What every part of the store shares: the connection and config, and the checks for tables
created lazily (analytics tables on the first score, model tables on the first cached embedding).

The `Store` facade (facade.py) is one class built from the parts (events.py, vectors.py,
window_vectors.py, runs.py, registry.py, parquet.py): each part holds the SQL of one concern and
reaches the connection through this base, so `store.X(...)` call sites stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from interestgeo.config import Config
from interestgeo.store import _schema
from interestgeo.store._db import arrow_query, first_row

__all__ = ["StorePart"]


class StorePart:
    """The state every part of `Store` reads (set by `Store.__init__`)."""

    con: duckdb.DuckDBPyConnection
    path: Path
    read_only: bool
    config: Config
    # Whether this connection has created or seen the analytics tables (see ensure_analytics_schema).
    _analytics_ready: bool

    def _first_row(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        return first_row(self.con, sql, params)

    def _arrow_query(self, sql: str, params: list[Any] | None = None) -> Any:
        return arrow_query(self.con, sql, params)

    def _table_exists(self, table: str) -> bool:
        return _schema.table_exists(self.con, table)

    def _analytics_tables_exist(self) -> bool:
        return self._analytics_ready or self._table_exists("event_vectors")

    def _compact_layout(self) -> bool:
        """Whether event_vectors stores compact vectors (q, scale): every file a write open
        migrated; a read-only open of an older file reads its `vector FLOAT[]` (see _schema)."""
        return not _schema.has_column(self.con, "event_vectors", "vector")

    def _vector_sql(self, prefix: str = "") -> str:
        """The stored vector columns to select (`prefix` a table alias of ours, e.g. "v."), as
        store/vectors.py `_stored_vectors` reads them: "q, scale", or "vector" in an older file."""
        if prefix not in ("", "v."):
            raise ValueError(f"not a table alias of ours: {prefix!r}")
        return f"{prefix}q, {prefix}scale" if self._compact_layout() else f"{prefix}vector"

    def ensure_analytics_schema(self) -> None:
        """Create the analytics tables when missing (a no-op on read-only stores).

        Once per connection: a dynamic update called it nine times, 3 ms each (tables are only
        dropped by a rolled-back transaction, which clears the flag).
        """
        if not self.read_only and not self._analytics_ready:
            _schema.ensure_analytics(self.con)
            self._analytics_ready = True

    def _ensure_model_schema(self) -> None:
        """Create the embedding cache and checkpoint tables when missing (no-op on read-only stores)."""
        if not self.read_only:
            _schema.ensure_model(self.con)
