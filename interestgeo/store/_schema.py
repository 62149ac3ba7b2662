"""Every table of the store: its CREATE statement, the schema version a file records, and the
migrations that bring an older file to it.

One place answers "what does a file from version N need". Three groups of tables:
    CORE_TABLES        created when a file is opened read-write (meta, datasets, events, rejects,
                       cell_windows)
    ANALYTICS_TABLES   created on the first write of `interestgeo score` (event vectors, topics,
                       window vectors, score runs, calibrations)
    MODEL_TABLES       created on the first write of the text-embedding cache or the checkpoint
                       registry
Files are opened by versions of interestgeo older and newer than the one that wrote them, so a
read-only open reads any version as it is (nothing is written), and readers of a lazily created
group check that it exists first (`table_exists`).

Schema versions (meta key 'schema_version'; a file without the key is version 0):
    0   files from before the version was recorded. They may hold window-key columns in events
        (dropped by `migrate`), store local_hour/dow as plain columns instead of generated ones
        (DuckDB cannot add a generated column to a table: such files keep them, `stored_hour_dow`
        tells the ingest to write them), lack the meta key 'hour_resolutions' (every map
        resolution was precomputed for hours) and lack event_vectors.topic_sims (added with the
        analytics tables' first write; NULL means "not stored").
    1   event_vectors stores each vector as `vector FLOAT[]`.
    2   this layout: event_vectors stores each vector in compact form (`q TINYINT[]`, `scale FLOAT`,
        store/compact.py). A write open converts an older file's vectors (`migrate`: the codes are
        computed from the float vectors, in batches, swapped in at once; the aggregates stored
        beside them stay as they were, within the quantisation error of the vectors until the next
        full score); a read-only open reads the FLOAT[] column as it is.
"""

from __future__ import annotations

import duckdb

from interestgeo.config import Config
from interestgeo.store._db import first_row

__all__ = [
    "ANALYTICS_TABLES", "CORE_TABLES", "EVENT_VECTORS_TABLE", "MODEL_TABLES", "SCHEMA_VERSION",
    "compact_event_vectors", "create", "ensure_analytics",
    "ensure_model", "has_column", "schema_version", "stored_hour_dow", "table_exists",
]

SCHEMA_VERSION = 2

CORE_TABLES = [
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
    # event_id is unique by construction (see IngestSession.insert_events).
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


# The interest vector right after each event, as int8 codes q and a scale: vector = q * scale
# (store/compact.py). Version-1 files hold `vector FLOAT[]` instead (see `migrate`).
EVENT_VECTORS_TABLE = """CREATE TABLE IF NOT EXISTS event_vectors (
        dataset_id INTEGER NOT NULL,
        event_id BIGINT NOT NULL,
        topic SMALLINT NOT NULL,
        q TINYINT[] NOT NULL,
        scale FLOAT NOT NULL,
        topic_sims FLOAT[]
    )"""

ANALYTICS_TABLES = (
    EVENT_VECTORS_TABLE,
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
    # Files from before them: NULL (the stored-aggregate answers then fall back to per-event vectors).
    "ALTER TABLE user_window_vectors ADD COLUMN IF NOT EXISTS coherence FLOAT",
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
    "ALTER TABLE cell_window_vectors ADD COLUMN IF NOT EXISTS shares FLOAT[]",
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
    # Per dataset, what the last calibrating score measured on its most recent events (vectors/refresh.py):
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

MODEL_TABLES = (
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

# Window-key columns version-0 files may have in events (whitelisted identifiers for the migration).
DROPPED_EVENT_COLUMNS = ("hour_start", "day_start", "week_start")


def create(con: duckdb.DuckDBPyConnection, config: Config) -> None:
    """Create the core tables when missing, migrate an older file, and record the resolutions
    the file is built with (a file keeps those of its creation, whatever config opens it later)."""
    for statement in CORE_TABLES:
        con.execute(statement)
    migrate(con)
    con.execute(
        "INSERT OR IGNORE INTO meta VALUES ('base_resolution', ?), ('map_resolutions', ?), ('hour_resolutions', ?)",
        [str(config.store.base_resolution), ",".join(map(str, config.store.map_resolutions)),
         ",".join(map(str, config.store.hour_resolutions))],
    )


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring an older file to SCHEMA_VERSION (see the module docstring)."""
    if schema_version(con) >= SCHEMA_VERSION:
        return
    # Version 0 files written before the window keys were dropped from events (nothing read them; the
    # maps use cell_windows, and date_trunc of local_ts is cheap where a key is needed).
    for column in DROPPED_EVENT_COLUMNS:
        if has_column(con, "events", column):
            con.execute(f"ALTER TABLE events DROP COLUMN {column}")
    if has_column(con, "event_vectors", "vector"):  # versions 0 and 1: FLOAT[] vectors
        compact_event_vectors(con)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])


# Rows a migration quantises at once (about 100 MB of float vectors at D = 512).
_MIGRATION_BATCH = 50_000


def compact_event_vectors(con: duckdb.DuckDBPyConnection, batch: int = _MIGRATION_BATCH) -> int:
    """Replace a version-0/1 event_vectors (`vector FLOAT[]`) by the compact layout, keeping its
    row order; returns the rows converted.

    A second cursor streams the old rows while this connection inserts their codes into a new
    table, a committed batch at a time: one batch of float vectors is in memory at once (one
    transaction holding every new row peaked at 5.4 GB for 1.1M rows). The swap (drop the old
    table, rename the new one) is one transaction, so readers see the old table or the new one;
    a run interrupted before it leaves the old table as it was (the half-filled new one is
    dropped now or by the next try)."""
    import pyarrow as pa

    from interestgeo.store._db import vectors_frame, vectors_from_arrow
    from interestgeo.store.compact import quantise_vectors

    sims = "topic_sims" if has_column(con, "event_vectors", "topic_sims") else "NULL::FLOAT[] AS topic_sims"
    rows = 0
    con.execute("DROP TABLE IF EXISTS event_vectors_compact")
    try:
        con.execute(EVENT_VECTORS_TABLE.replace("event_vectors", "event_vectors_compact"))
        reader = con.cursor()
        try:
            select = f"SELECT dataset_id, event_id, topic, vector, {sims} FROM event_vectors"
            batches = reader.sql(select).to_arrow_reader(batch)
            for batch_rows in batches:
                if not batch_rows.num_rows:
                    continue
                part = pa.Table.from_batches([batch_rows])
                compact = quantise_vectors(vectors_from_arrow(part.column("vector"), part.num_rows))
                keys = {name: part.column(name).to_numpy() for name in ("dataset_id", "event_id", "topic")}
                frame = vectors_frame({**keys, "scale": compact.scales}, None, q=compact.codes)
                con.register("migrated_vectors", frame.append_column("topic_sims", part.column("topic_sims")))
                try:
                    con.execute(
                        """INSERT INTO event_vectors_compact
                           SELECT dataset_id, event_id, topic, q, scale, topic_sims::FLOAT[] FROM migrated_vectors"""
                    )
                finally:
                    con.unregister("migrated_vectors")
                rows += part.num_rows
        finally:
            reader.close()
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DROP TABLE event_vectors")
            con.execute("ALTER TABLE event_vectors_compact RENAME TO event_vectors")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    except BaseException:
        con.execute("DROP TABLE IF EXISTS event_vectors_compact")
        raise
    return rows


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version the file records (0 before versions were recorded)."""
    if not table_exists(con, "meta"):
        return 0
    row = first_row(con, "SELECT value FROM meta WHERE key = 'schema_version'")
    return 0 if row is None else int(row[0])


def stored_hour_dow(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether events stores local_hour and dow (a version-0 file) instead of generating them."""
    return bool(first_row(
        con,
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events' AND column_name = 'local_hour' "
        "AND NOT is_generated AND schema_name = 'main' AND database_name = current_database()",
    )[0])


def ensure_analytics(con: duckdb.DuckDBPyConnection) -> None:
    """Create the analytics tables when missing."""
    for statement in ANALYTICS_TABLES:
        con.execute(statement)


def ensure_model(con: duckdb.DuckDBPyConnection) -> None:
    """Create the text-embedding cache and checkpoint registry when missing."""
    for statement in MODEL_TABLES:
        con.execute(statement)


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether this file has the (non-temporary) table."""
    row = first_row(
        con,
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary AND database_name = current_database()",
        [table],
    )
    return bool(row and row[0])


def has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Whether this file's table has the (non-internal) column."""
    row = first_row(
        con,
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = ? "
        "AND NOT internal AND schema_name = 'main' AND database_name = current_database()",
        [table, column],
    )
    return bool(row and row[0])
