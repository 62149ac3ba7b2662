"""The DuckDB store: every table and every SQL statement of interestgeo lives in this package.

One DuckDB file (default data/interestgeo.duckdb) holds events, datasets, rejects, the cell x
window aggregates behind every map, the interest vectors `interestgeo score` writes, text
embeddings and checkpoints. Keeping all SQL here keeps it reviewable: statements are
parameterised (`con.execute(sql, params)`); the only identifiers ever put into SQL text are
generated here (`c0`, `c1`, ... for source CSV columns) or come from fixed whitelists (window
names, table and column names), never from user input.

    facade.py          Store: open/close/transaction, composed of the parts below
    events.py          datasets, events, rejects, cell x window aggregates
    ingest_session.py  IngestSession: one file's load as SQL (the temp-table steps)
    vectors.py         event vectors, topic similarities, topics
    window_vectors.py  user x window and cell x window vectors
    runs.py            score runs, dataset calibrations
    registry.py        text-embedding cache, checkpoint registry
    parquet.py         partitioned Parquet for an engine beyond one machine
    file_access.py     who may open the file when (one writer, short readers): StoreBusy, data_version
    on_demand.py       StoreOnDemand: a read-only store opened per call, for long-lived objects
    _schema.py         every CREATE TABLE, the schema version, the migrations
    _db.py             connection-free helpers (Arrow codecs, id lists, whitelists)

Tables (CREATE statements in _schema.py)
    meta(key, value)           the schema version, base resolution and map resolutions the file was
                               built with, so a store opened with another config still reads consistently
    datasets                   one row per loaded file (name, content hash, counts, time range)
    events                     one row per accepted event in file order (event_id follows it;
                               `events()` returns them per user and time): H3 cell (BIGINT, base
                               resolution), local time, hour of day and day of week (window
                               keys are not stored: cell_windows holds the maps' aggregates)
    rejects                    (dataset, physical line, raw line, reason) for every rejected row
    cell_windows               per dataset x resolution x window x window start x cell: events and
                               distinct users
    event_vectors, analytics_topics, user_window_vectors, cell_window_vectors, score_runs,
    dataset_calibration        what `interestgeo score` writes (created on its first write)
    text_embeddings, checkpoints   the embedding cache and the checkpoint registry
"""

from __future__ import annotations

from interestgeo.store._db import EVENT_COLUMNS
from interestgeo.store._schema import SCHEMA_VERSION
from interestgeo.store.facade import Store
from interestgeo.store.file_access import StoreBusy, data_version, writer_active
from interestgeo.store.ingest_session import IngestSession
from interestgeo.store.on_demand import StoreOnDemand
from interestgeo.store.registry import adapted_checkpoint_name

__all__ = [
    "EVENT_COLUMNS",
    "SCHEMA_VERSION",
    "IngestSession",
    "Store",
    "StoreBusy",
    "StoreOnDemand",
    "adapted_checkpoint_name",
    "data_version",
    "writer_active",
]
