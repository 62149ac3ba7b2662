"""Datasets, events, rejects and the cell x window aggregates behind every map.

Time windows are in local wall time (ts + tz offset when known, else UTC): "Friday evening" means
the evening where the event happened. Weeks start on Monday (ISO). Maps read the precomputed
`cell_windows` (a cheap SUM over any dataset selection: users are (dataset_id, user_id), so
distinct users of several datasets are the sum of the per-dataset counts); resolutions or hour and
day filters it does not hold are counted from the events (slower, same result).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from interestgeo.cells import parent_masks
from interestgeo.store._db import EVENT_COLUMNS, EVENT_DTYPES, check_counted_window, events_frame, id_list, k_threshold
from interestgeo.store._part import StorePart
from interestgeo.windows import WINDOW_HOURS

__all__ = ["EventsPart"]


class EventsPart(StorePart):
    """Reads of datasets, events, rejects and cell aggregates."""

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
        # through Arrow: each distinct string becomes one Python object (DuckDB's own conversion made
        # one per row: 3.5 GB for 5.1M events, and a brief peak several times that)
        return events_frame(self._arrow_query(
            f"""SELECT {", ".join(EVENT_COLUMNS)}
               FROM events
               WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)
               ORDER BY dataset_id, user_id, ts, event_id""",
            params=[id_list(datasets), id_list(datasets)],
        ).to_arrow_table())

    def scored_window_counts(self, window: str, datasets: Sequence[int] | None = None) -> pd.DataFrame:
        """Events and distinct people per local `window` (a counted window) among the scored events
        of some datasets (all when None), NO k threshold: frame[window_start, events, users]."""
        check_counted_window(window)  # it is put into the SQL text below
        if not self._analytics_tables_exist():
            return pd.DataFrame({"window_start": pd.Series([], dtype="datetime64[us]"), "events": [], "users": []})
        ids = id_list(datasets)
        return self._arrow_query(
            f"""SELECT date_trunc('{window}', e.local_ts) AS window_start, count(*)::BIGINT AS events,
                       count(DISTINCT (e.dataset_id, e.user_id))::BIGINT AS users
                FROM events e SEMI JOIN event_vectors v ON v.event_id = e.event_id
                WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], e.dataset_id)
                GROUP BY 1 ORDER BY 1""",
            params=[ids, ids],
        ).to_arrow_table().to_pandas()

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
        check_counted_window(window)
        k = self.config.privacy.k_min_users if k is None else int(k)
        ids = id_list(datasets)
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
        return k_threshold(df, k)

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
        check_counted_window(window)  # it is put into the SQL text below
        if not 0 <= resolution <= self.base_resolution:
            raise ValueError(f"resolution must be 0..{self.base_resolution} (the base resolution)")
        and_mask, or_mask = parent_masks(resolution)
        return self.con.execute(
            f"""SELECT parent AS cell, ws AS window_start, count(*)::BIGINT AS events,
                       count(DISTINCT (dataset_id, user_id))::BIGINT AS users
                FROM (
                    SELECT (cell & ?) | ? AS parent, date_trunc('{window}', local_ts) AS ws,
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
            [and_mask, or_mask, ids, ids, start, start, start, WINDOW_HOURS[window],
             hours, hours, days_of_week, days_of_week],
        ).df()

    def window_starts(self, window: str, datasets: Sequence[int] | None = None) -> pd.Series:
        """The distinct local window starts that hold events (for time sliders)."""
        check_counted_window(window)
        ids = id_list(datasets)
        resolutions = self.precomputed(window)
        if not resolutions:
            return self.con.execute(
                f"""SELECT DISTINCT date_trunc('{window}', local_ts) AS window_start FROM events
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
        check_counted_window(window)
        k = self.config.privacy.k_min_users if k is None else int(k)
        df = self._cell_aggregates_from_events(resolution, window, None, id_list(datasets), id_list(hours),
                                               id_list(days_of_week))
        return k_threshold(df, k)

    def user_histories(self, users: pd.DataFrame) -> pd.DataFrame:
        """Every event of the given users (frame with dataset_id, user_id), in `events()` format and order."""
        keys = pd.DataFrame(
            {"dataset_id": users["dataset_id"].astype("int32").to_numpy(), "user_id": users["user_id"].astype(str).to_numpy()}
        ).drop_duplicates()
        columns = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
        self.con.register("analytics_users", keys)
        try:
            # through Arrow: DuckDB's own pandas conversion took ~75 ms of a dynamic update for 40k
            # rows, Arrow ~40 ms (the same frame, tests/vectors/test_refresh.py)
            table = self._arrow_query(
                f"""SELECT {columns} FROM events e SEMI JOIN analytics_users u
                      ON e.dataset_id = u.dataset_id AND e.user_id = u.user_id
                    ORDER BY e.dataset_id, e.user_id, e.ts, e.event_id"""
            ).to_arrow_table()
        finally:
            self.con.unregister("analytics_users")
        return events_frame(table)

    def distinct_texts(self, datasets: Sequence[int] | None = None) -> list[str]:
        """The distinct event texts of some datasets (all when None), sorted: what scoring embeds."""
        ids = id_list(datasets)
        rows = self.con.execute(
            """SELECT DISTINCT coalesce(text, '') FROM events
               WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id) ORDER BY 1""",
            [ids, ids],
        ).fetchall()
        return [str(r[0]) for r in rows]

    def users_with_events_since(self, since: datetime) -> pd.DataFrame:
        """(dataset_id, user_id, ts) of users with events at or after `since` (ts = their first such)."""
        return self.con.execute(
            """SELECT dataset_id, user_id, min(ts) AS ts FROM events WHERE ts >= ?
               GROUP BY ALL ORDER BY ALL""",
            [pd.Timestamp(since).to_pydatetime()],
        ).df()
