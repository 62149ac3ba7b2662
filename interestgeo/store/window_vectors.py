"""The user x window and cell x window interest vectors `interestgeo score` stores (the drift,
trend and map views read them instead of every event's vector).

Cell rows carry their distinct users, so the privacy threshold k applies on read; user rows are
analyst-only data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from interestgeo.cells import parent_masks
from interestgeo.store import _schema
from interestgeo.store._db import id_list, vectors_frame, vectors_from_arrow
from interestgeo.store._part import StorePart

__all__ = ["WindowVectorsPart", "WINDOW_VECTOR_TABLES"]

# The window-vector tables `replace_window_vectors` may write (a whitelist of identifiers).
WINDOW_VECTOR_TABLES = ("user_window_vectors", "cell_window_vectors")
# Their columns (besides `vector`), the only column names put into INSERT statements.
WINDOW_VECTOR_COLUMNS = frozenset(
    {"dataset_id", "user_id", "resolution", "window_size", "window_start", "cell", "events", "users", "coherence"}
)


class WindowVectorsPart(StorePart):
    """Replace and read window-vector rows."""

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
        shares: np.ndarray | None = None,
    ) -> None:
        """Replace the rows of a window-vector table for `window` (in some datasets, from a window
        start on, at the given resolution(s) for cell_window_vectors).

        `columns` holds the table's non-vector columns, one array each; `shares` (cell rows) their
        (N, T) topic shares. Several resolutions go in one DELETE and one INSERT (a dynamic update
        spent ~10 ms per statement pair).
        """
        if table not in WINDOW_VECTOR_TABLES:
            raise ValueError(f"not a window-vector table: {table!r}")
        if (resolution is None) != (table == "user_window_vectors"):
            raise ValueError("cell_window_vectors rows are replaced for given resolutions")
        self.ensure_analytics_schema()
        ids = id_list(datasets)
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
        with_shares = shares is not None and table == "cell_window_vectors"
        frame = vectors_frame(columns, vectors, **({"shares": shares} if with_shares else {}))
        plain = [name for name in frame.column_names if name not in ("vector", "shares")]
        names = ", ".join(f'"{name}"' for name in plain)
        if set(plain) - WINDOW_VECTOR_COLUMNS:
            raise ValueError(f"unknown column(s) for {table}")
        extra = ", shares" if with_shares else ""
        self.con.register("analytics_new_windows", frame)
        try:
            self.con.execute(
                f"""INSERT INTO {table} ({names}, vector{extra})
                    SELECT {names}, vector::FLOAT[]{", shares::FLOAT[]" if with_shares else ""} FROM analytics_new_windows"""
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
        if table not in WINDOW_VECTOR_TABLES:
            raise ValueError(f"not a window-vector table: {table!r}")
        empty = (pd.DataFrame(), np.zeros((0, 0), np.float32), 0)
        if not self._analytics_tables_exist():
            return empty
        ids = id_list(datasets)
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
                """SELECT dataset_id, user_id, window_size, window_start, events, coherence, vector
                   FROM user_window_vectors
                   WHERE window_size = ? AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                     AND (?::VARCHAR IS NULL OR (user_id = ?::VARCHAR AND dataset_id = ?::INTEGER))
                   ORDER BY dataset_id, user_id, window_start""",
                params=[window, ids, ids, uid, uid, did],
            ).to_arrow_table()
        frame = result.drop(["vector"]).to_pandas()
        vectors = vectors_from_arrow(result.column("vector"), result.num_rows)
        if table == "cell_window_vectors" and len(frame):
            visible = (frame["users"] >= k).to_numpy()
            return frame[visible].reset_index(drop=True), vectors[visible], int((~visible).sum())
        return frame, vectors, 0

    def user_window_rows(self, window: str, users: pd.DataFrame) -> pd.DataFrame:
        """Which of `users` (columns dataset_id, user_id) have stored user rows of `window`: their
        (dataset_id, user_id) pairs, without the vectors (a dynamic update asks this of the people
        it touched, not of every user)."""
        empty = pd.DataFrame({"dataset_id": pd.Series([], dtype="int32"), "user_id": pd.Series([], dtype=object)})
        if not self._analytics_tables_exist() or users.empty:
            return empty
        wanted = pd.DataFrame({"dataset_id": users["dataset_id"].to_numpy(np.int32),
                               "user_id": users["user_id"].astype(str).to_numpy()})
        self.con.register("analytics_users_wanted", wanted)
        try:
            return self._arrow_query(
                """SELECT DISTINCT u.dataset_id, u.user_id FROM user_window_vectors u
                   SEMI JOIN analytics_users_wanted w ON u.dataset_id = w.dataset_id AND u.user_id = w.user_id
                   WHERE u.window_size = ?""",
                params=[window],
            ).to_arrow_table().to_pandas()
        finally:
            self.con.unregister("analytics_users_wanted")

    def has_cell_window_shares(self, window: str, resolution: int, dataset_id: int) -> bool:
        """Whether a dataset's cell rows of one window size and resolution are stored with their
        topic shares (what `cell_window_shares` returns rows for), counted without reading them."""
        if not self._analytics_tables_exist() or not _schema.has_column(self.con, "cell_window_vectors", "shares"):
            return False
        rows, with_shares = self._first_row(
            """SELECT count(*), count(shares) FROM cell_window_vectors
               WHERE window_size = ? AND resolution = ?::TINYINT AND dataset_id = ?""",
            [window, resolution, int(dataset_id)],
        )
        return 0 < rows == with_shares

    def cell_window_shares(
        self, window: str, resolution: int, *, datasets: Sequence[int] | None = None, vectors: bool = False
    ) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray] | None:
        """Stored cell rows of one window size and resolution with their topic shares, WITHOUT the
        k threshold (the caller sums datasets first): (frame[dataset_id, cell, window_start,
        events, users, coherence], (N, D) unit vectors when asked, (N, T) shares), or None when
        the rows lack shares (a file scored before they were stored) or none is stored."""
        if not self._analytics_tables_exist() or not _schema.has_column(self.con, "cell_window_vectors", "shares"):
            return None
        ids = id_list(datasets)
        result = self._arrow_query(
            f"""SELECT dataset_id, cell, window_start, events, users, coherence, shares{", vector" if vectors else ""}
               FROM cell_window_vectors
               WHERE window_size = ? AND resolution = ?::TINYINT
                 AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
               ORDER BY dataset_id, window_start, cell""",
            params=[window, resolution, ids, ids],
        ).to_arrow_table()
        if result.num_rows == 0 or result.column("shares").null_count:
            return None
        frame = result.select(["dataset_id", "cell", "window_start", "events", "users", "coherence"]).to_pandas()
        shares = vectors_from_arrow(result.column("shares"), result.num_rows)
        return frame, vectors_from_arrow(result.column("vector"), result.num_rows) if vectors else None, shares

    def window_vector_scores(
        self,
        table: str,
        window: str,
        phrase_vector: np.ndarray,
        *,
        datasets: Sequence[int] | None = None,
        resolution: int | None = None,
    ) -> pd.DataFrame:
        """Stored window rows without their vectors, plus `score`: the row's user-weighted mean
        interest vector (unit vector x coherence) . phrase_vector, computed inside DuckDB.

        NO k threshold: the caller first sums the rows of several datasets that share a cell
        (their users are distinct) and then applies it. Cell rows: dataset_id, cell,
        window_start, events, users, score. User rows (analyst-only data, in no particular
        order): dataset_id, user_id, window_start, events, score (NaN where a file from before
        `coherence` lacks it).
        """
        if table not in WINDOW_VECTOR_TABLES:
            raise ValueError(f"not a window-vector table: {table!r}")
        if not self._analytics_tables_exist():
            return pd.DataFrame()
        ids = id_list(datasets)
        q = np.asarray(phrase_vector, dtype=np.float32).tolist()
        if table == "cell_window_vectors":
            sql = """SELECT dataset_id, cell, window_start, events, users,
                            coherence * list_inner_product(vector, ?::FLOAT[]) AS score
                     FROM cell_window_vectors
                     WHERE window_size = ? AND resolution = ?::TINYINT
                       AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                     ORDER BY dataset_id, window_start, cell"""
            params = [q, window, resolution, ids, ids]
        else:
            sql = """SELECT dataset_id, user_id, window_start, events,
                            coherence * list_inner_product(vector, ?::FLOAT[]) AS score
                     FROM user_window_vectors
                     WHERE window_size = ? AND (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))"""
            params = [q, window, ids, ids]
        return self._arrow_query(sql, params=params).to_arrow_table().to_pandas()

    def users_per_cell(self, users: pd.DataFrame, resolution: int, datasets: Sequence[int] | None = None) -> pd.DataFrame:
        """How many of `users` (columns dataset_id, user_id) have scored events in each cell at
        `resolution`: frame[cell, users] (cells without any of them left out). No k threshold:
        these are counts inside cells the caller already thresholds."""
        and_mask, or_mask = parent_masks(resolution)
        ids = id_list(datasets)
        where = "?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)"
        counts = self._first_row(
            f"SELECT (SELECT count(*) FROM events WHERE {where}), (SELECT count(*) FROM event_vectors WHERE {where})",
            [ids, ids, ids, ids],
        )
        # unscored events (a load not yet scored) do not count; when there are none, skip the join
        scored_only = "" if counts[0] == counts[1] else "SEMI JOIN event_vectors v ON v.event_id = e.event_id"
        self.con.register("analytics_users_wanted", users[["dataset_id", "user_id"]].astype({"dataset_id": "int32", "user_id": str}))
        try:
            return self._arrow_query(
                f"""SELECT (e.cell & ?::BIGINT) | ?::BIGINT AS cell, count(DISTINCT (e.dataset_id, e.user_id))::BIGINT AS users
                   FROM events e
                   SEMI JOIN analytics_users_wanted w ON e.dataset_id = w.dataset_id AND e.user_id = w.user_id
                   {scored_only}
                   WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], e.dataset_id)
                   GROUP BY 1 ORDER BY 1""",
                params=[and_mask, or_mask, ids, ids],
            ).to_arrow_table().to_pandas()
        finally:
            self.con.unregister("analytics_users_wanted")
