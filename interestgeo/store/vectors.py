"""Per-event interest vectors (the source of every analytics result), their topic similarities
and the topics, as `interestgeo score` stores them.

Vectors are stored in compact form, int8 codes (`q TINYINT[]`, dimension-agnostic) and a `scale`
per row (store/compact.py), read back in one Arrow buffer and returned as float32 by every
reader (a read-only open of a file from before, with `vector FLOAT[]`, reads that column as it is).
Beside each event's vector, its cosine similarity to each stored topic (`topic_sims`, T floats):
topic shares need only these, so a dashboard reads 10 floats per event before the 384 (the
vectors' 170 MB for the NYC demo took 0.5-1.3 s to load in a fresh process). NULL means "not
stored" (files from before the column; rows whose topics were replaced since): readers compute
those from the vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from interestgeo.store import _schema
from interestgeo.store._db import (
    EVENT_COLUMNS,
    EVENT_DTYPES,
    align,
    empty_vector_table,
    events_frame,
    id_list,
    list_column,
    vectors_frame,
    vectors_from_arrow,
)
from interestgeo.store._part import StorePart
from interestgeo.store.compact import CompactVectors, dequantise_arrow, quantise_vectors

if TYPE_CHECKING:
    from interestgeo.topics import Topics

__all__ = ["EventVectorsPart"]


class EventVectorsPart(StorePart):
    """Event vectors, topic similarities and topics."""

    def write_event_vectors(
        self,
        dataset_ids: np.ndarray,
        event_ids: np.ndarray,
        topics: np.ndarray,
        vectors: np.ndarray | CompactVectors,
        topic_sims: np.ndarray | None = None,
    ) -> None:
        """Insert or replace the interest vectors of these events, with their (N, T) similarities
        to the stored topics when given (`interestgeo.topics.topic_similarities`; else NULL).

        `vectors`: (N, D) floats, stored quantised (readers get `quantise_vectors(v).dequantised()`),
        or already in compact form (a scorer that computed from the dequantised values)."""
        self.ensure_analytics_schema()
        compact = vectors if isinstance(vectors, CompactVectors) else quantise_vectors(vectors)
        sims = {} if topic_sims is None else {"topic_sims": topic_sims}
        frame = vectors_frame(
            {
                "dataset_id": np.asarray(dataset_ids, dtype=np.int32),
                "event_id": np.asarray(event_ids, dtype=np.int64),
                "topic": np.asarray(topics, dtype=np.int16),
                "scale": compact.scales,
            },
            None,
            q=compact.codes,
            **sims,
        )
        sims_sql = "NULL::FLOAT[]" if topic_sims is None else "topic_sims::FLOAT[]"
        self.con.register("analytics_new_vectors", frame)
        try:
            self.con.execute(
                "DELETE FROM event_vectors WHERE event_id IN (SELECT event_id FROM analytics_new_vectors)"
            )
            self.con.execute(
                f"""INSERT INTO event_vectors (dataset_id, event_id, topic, q, scale, topic_sims)
                    SELECT dataset_id, event_id, topic, q::TINYINT[], scale, {sims_sql}
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
            f"SELECT event_id, {self._vector_sql()} FROM event_vectors WHERE topic_sims IS NULL ORDER BY event_id"
        ).to_arrow_table()
        for start in range(0, table.num_rows, batch):
            part = table.slice(start, batch)
            sims = similarities(_stored_vectors(part))
            frame = vectors_frame({"event_id": part.column("event_id").to_numpy()}, sims)
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
        ids = id_list(datasets)
        self.con.execute(
            "DELETE FROM event_vectors WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)",
            [ids, ids],
        )

    def scored_events(
        self, datasets: Sequence[int] | None = None, local_from: datetime | pd.Timestamp | None = None
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Events that have interest vectors, as `events()` plus `topic`, and their vectors (N, D).

        Same order as `events()`; `local_from` (naive local time) keeps events from then on.
        """
        frame, table, rows = self._scored_rows(datasets, local_from, "vector")
        return frame, _stored_vectors(table, rows)

    def scored_event_sims(self, datasets: Sequence[int] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """`scored_events` without the vectors: the same frame and each event's stored (N, T)
        similarities to the topics, NaN rows where none are stored (see the module docstring)."""
        if not _schema.has_column(self.con, "event_vectors", "topic_sims"):
            frame, _, _ = self._scored_rows(datasets, None, None)
            return frame, np.full((len(frame), 0), np.nan, dtype=np.float32)
        frame, table, rows = self._scored_rows(datasets, None, "topic_sims")
        n_topics = self._first_row("SELECT count(*) FROM analytics_topics")[0]
        # NULL rows read as NaN rows, so one aligned read serves stored and missing alike
        column = table.column("topic_sims").fill_null(pa.scalar([np.nan] * n_topics, pa.list_(pa.float32())))
        return frame, vectors_from_arrow(column, table.num_rows, rows).reshape(len(rows), n_topics)

    def event_vectors(self, event_ids: np.ndarray) -> np.ndarray:
        """The stored interest vectors (len(event_ids), D) of these events, in this order.

        Raises LookupError when one has none (it was deleted or re-scored away meanwhile).
        """
        has, vectors = self.existing_event_vectors(event_ids)
        if not has.all():
            raise LookupError(f"{int((~has).sum())} of {len(has)} events have no interest vector any more")
        return vectors

    def existing_event_vectors(self, event_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(len(event_ids),) bool: which of these events have a stored vector, and those vectors
        ((has.sum(), D), in the order of the ids)."""
        wanted = np.asarray(event_ids, dtype=np.int64)
        if not self._analytics_tables_exist():
            return np.zeros(len(wanted), dtype=bool), np.zeros((0, 0), np.float32)
        stored = self._first_row("SELECT count(*) FROM event_vectors")[0]
        if 2 * len(wanted) >= stored:  # most of them: a plain scan (the join costs more than it saves)
            table = self._arrow_query(f"SELECT event_id, {self._vector_sql()} FROM event_vectors").to_arrow_table()
        else:
            table = self._event_vector_rows(wanted, with_vectors=True)
        rows, has = align(table.column("event_id").to_numpy(), wanted)
        return has, _stored_vectors(table, rows)

    def event_vector_count(self, datasets: Sequence[int] | None = None) -> int:
        """How many events of some datasets (all when None) have a stored vector."""
        if not self._analytics_tables_exist():
            return 0
        ids = id_list(datasets)
        row = self.con.execute(
            "SELECT count(*) FROM event_vectors WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)",
            [ids, ids],
        ).fetchone()
        return int(row[0]) if row else 0

    def has_event_vectors(self, event_ids: np.ndarray) -> np.ndarray:
        """(len(event_ids),) bool: which of these events have a stored vector (ids only: a dynamic
        update reads the vectors of the few rows it needs afterwards, not of whole histories)."""
        wanted = np.asarray(event_ids, dtype=np.int64)
        if not self._analytics_tables_exist():
            return np.zeros(len(wanted), dtype=bool)
        return align(self._event_vector_rows(wanted, with_vectors=False).column("event_id").to_numpy(), wanted)[1]

    def _event_vector_rows(self, event_ids: np.ndarray, with_vectors: bool) -> pa.Table:
        """The event_vectors rows of these event ids (any order): event_id, and the stored vector
        columns when asked (`_stored_vectors` reads them)."""
        vector_sql = ", " + self._vector_sql("v.") if with_vectors else ""
        self.con.register("analytics_wanted", pa.table({"event_id": event_ids}))
        try:
            return self._arrow_query(
                f"""SELECT v.event_id{vector_sql} FROM event_vectors v
                    SEMI JOIN analytics_wanted w ON v.event_id = w.event_id"""
            ).to_arrow_table()
        finally:
            self.con.unregister("analytics_wanted")

    def vector_dim(self) -> int:
        """The dimension of the stored interest vectors (0 when none is stored)."""
        if not self._analytics_tables_exist():
            return 0
        codes = "q" if self._compact_layout() else "vector"  # (a whitelist of two)
        row = self._first_row(f"SELECT len({codes}) FROM event_vectors LIMIT 1")
        return 0 if row is None else int(row[0])

    def event_affinities(self, phrase_vector: np.ndarray, datasets: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(event ids, each stored vector . phrase_vector) of the scored events of `datasets`,
        in storage order: the dot products run inside DuckDB, so only two numbers per event
        leave it (a phrase query over millions of events without holding their vectors)."""
        ids = id_list(datasets)
        phrase = np.asarray(phrase_vector, dtype=np.float32)
        # compact rows: (q . phrase) * scale, the codes cast to FLOAT (exact) inside the product
        product = "list_inner_product(q::FLOAT[], ?::FLOAT[]) * scale" if self._compact_layout() else (
            "list_inner_product(vector, ?::FLOAT[])")
        table = self._arrow_query(
            f"""SELECT event_id, ({product})::FLOAT AS affinity FROM event_vectors
               WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)""",
            params=[phrase.tolist(), ids, ids],
        ).to_arrow_table()
        return (table.column("event_id").to_numpy().astype(np.int64, copy=False),
                table.column("affinity").to_numpy().astype(np.float32, copy=False))

    def event_vector_batches(
        self, datasets: Sequence[int] | None = None, batch: int = 50_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(event ids, their (n, D) vectors) of the scored events of `datasets` in batches of about
        `batch` rows, in storage order: one pass over the table holding one batch at a time."""
        ids = id_list(datasets)
        reader = self._arrow_query(
            f"""SELECT event_id, {self._vector_sql()} FROM event_vectors
               WHERE ?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id)""",
            params=[ids, ids],
        ).to_arrow_reader(batch)
        for part in reader:
            if part.num_rows:
                yield (part.column("event_id").to_numpy().astype(np.int64, copy=False),
                       _stored_vectors(pa.Table.from_batches([part])))

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
        table = self._arrow_query(
            f"""SELECT e.event_id, e.user_id, e.ts, e.lat, e.lon, e.text, {self._vector_sql("v.")}
               FROM events e JOIN event_vectors v ON v.event_id = e.event_id
               WHERE e.dataset_id = ? AND v.dataset_id = ?
                 AND e.event_id BETWEEN ? AND ? AND v.event_id BETWEEN ? AND ?
                 AND (?::VARCHAR IS NULL OR e.user_id = ?::VARCHAR)
               ORDER BY e.event_id""",
            params=[int(dataset_id), int(dataset_id), int(first_id), int(last_id), int(first_id), int(last_id),
                    user_id, user_id],
        ).to_arrow_table()
        if "q" not in table.column_names:
            return table
        return table.drop(["q", "scale"]).append_column("vector", list_column(_stored_vectors(table)))

    def _scored_rows(
        self, datasets: Sequence[int] | None, local_from: datetime | pd.Timestamp | None, column: str | None
    ) -> tuple[pd.DataFrame, Any, np.ndarray]:
        """The scored events' frame, the event_vectors rows (event_id, topic, `column`) as Arrow,
        and for each frame row its row in that table.

        Two plain scans aligned by event id in numpy: joining and sorting 100k rows that carry
        384 floats each costs DuckDB about twice as much. `column` is one of two names (a
        whitelist), never user input: "vector" selects the stored vector columns (`_stored_vectors`
        reads them), "topic_sims" that column.
        """
        if column not in (None, "vector", "topic_sims"):
            raise ValueError(f"not a vector column: {column!r}")
        if not self._analytics_tables_exist():
            frame = self.events(datasets).assign(topic=np.int16(0)).iloc[:0]
            return frame, empty_vector_table(column), np.zeros(0, dtype=np.int64)
        ids = id_list(datasets)
        start = None if local_from is None else pd.Timestamp(local_from).to_pydatetime()
        columns = ", ".join(EVENT_COLUMNS)
        frame = events_frame(self._arrow_query(
            f"""SELECT {columns} FROM events
                WHERE (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], dataset_id))
                  AND (?::TIMESTAMP IS NULL OR local_ts >= ?::TIMESTAMP)
                ORDER BY dataset_id, user_id, ts, event_id""",
            params=[ids, ids, start, start],
        ).to_arrow_table())
        extra = "" if column is None else ", " + (self._vector_sql("v.") if column == "vector" else "v.topic_sims")
        table = self._arrow_query(
            f"""SELECT v.event_id, v.topic{extra} FROM event_vectors v
               WHERE (?::INTEGER[] IS NULL OR list_contains(?::INTEGER[], v.dataset_id))
                 AND (?::TIMESTAMP IS NULL OR v.event_id IN (SELECT event_id FROM events WHERE local_ts >= ?::TIMESTAMP))""",
            params=[ids, ids, start, start],
        ).to_arrow_table()
        rows, has = align(table.column("event_id").to_numpy(), frame["event_id"].to_numpy(np.int64))
        frame = frame.loc[has].reset_index(drop=True)
        frame["topic"] = table.column("topic").to_numpy()[rows].astype(np.int16)
        return frame, table, rows


    def unscored_events(self) -> pd.DataFrame:
        """(dataset_id, user_id, ts) of events without an interest vector: what `score --since` must add."""
        self.ensure_analytics_schema()
        return self.con.execute(
            """SELECT e.dataset_id, e.user_id, min(e.ts) AS ts FROM events e
               ANTI JOIN event_vectors v ON v.event_id = e.event_id
               GROUP BY ALL ORDER BY ALL"""
        ).df()

    def write_topics(self, labels: Sequence[str], source: str, vectors: np.ndarray) -> None:
        """Replace the stored interest topics."""
        self.ensure_analytics_schema()
        frame = vectors_frame(
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

    def analytics_topics(self) -> Topics | None:
        """The stored topics as `interestgeo.topics.Topics`, or None before the first score run."""
        # Imported here: topics (a leaf) may pull in its clustering library, which a store opened
        # for a map never needs.
        from interestgeo.topics import Topics

        if not self._analytics_tables_exist():
            return None
        table = self._arrow_query("SELECT label, source, vector FROM analytics_topics ORDER BY topic_id").to_arrow_table()
        if table.num_rows == 0:
            return None
        labels = tuple(table.column("label").to_pylist())
        vectors = vectors_from_arrow(table.column("vector"), table.num_rows)
        return Topics(labels, vectors, str(table.column("source")[0].as_py()))

    def user_scored_events(self, dataset_id: int, user_id: str) -> tuple[pd.DataFrame, np.ndarray]:
        """One user's scored events, as `scored_events` (events() columns + topic, same order), and
        their vectors (N, D): the User page reads one person, not the whole store."""
        if not self._analytics_tables_exist():
            return self.events([int(dataset_id)]).assign(topic=np.int16(0)).iloc[:0], np.zeros((0, 0), np.float32)
        columns = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
        table = self._arrow_query(
            f"""SELECT {columns}, v.topic, {self._vector_sql("v.")} FROM events e
                JOIN event_vectors v ON v.event_id = e.event_id
                WHERE e.dataset_id = ? AND e.user_id = ? AND v.dataset_id = ?
                ORDER BY e.ts, e.event_id""",
            params=[int(dataset_id), str(user_id), int(dataset_id)],
        ).to_arrow_table()
        vectors = _stored_vectors(table)
        frame = table.drop([c for c in ("q", "scale", "vector") if c in table.column_names]).to_pandas()
        frame = frame.astype({**EVENT_DTYPES, "topic": "int16"})
        return frame, vectors


def _stored_vectors(table: pa.Table, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float32 vectors of an Arrow table holding the stored vector columns (q and scale, or
    an older file's `vector`); with `rows`, those rows in that order (as `vectors_from_arrow`)."""
    if "q" in table.column_names:
        return dequantise_arrow(table.column("q"), table.column("scale"), table.num_rows, rows)
    return vectors_from_arrow(table.column("vector"), table.num_rows, rows)
