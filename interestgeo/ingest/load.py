"""Load a CSV of events into the store: detect its format and columns, validate, de-duplicate.

The same `ingest_file` serves the CLI (`interestgeo ingest`) and the dashboard's Upload page.
DuckDB's CSV reader does the parsing (fast, parallel, handles gzip, quoting, CRLF and the BOM);
_sniff.py looks at the file first, _lines.py maps rejects to physical lines, aggregate.py counts
the cell x window aggregates. Encoding: the file is read as UTF-8; if DuckDB meets invalid UTF-8
anywhere, the whole file is read again as Latin-1 (in which every byte is valid), because a file
is one encoding, not a mix.

Each file is loaded in one transaction: rows, rejects, aggregates and the datasets row appear
together or not at all. `progress` is called inside that transaction, so an exception raised by
it (a UI's cancel button, Ctrl-C) rolls the whole file back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

from interestgeo.config import Config
from interestgeo.ingest._lines import locate_rejects
from interestgeo.ingest._sniff import CsvFormat, check_gzip_size, content_hash, detect_format
from interestgeo.ingest.aggregate import cell_window_counts
from interestgeo.ingest.report import REPORT_REJECTS, IngestError, IngestReport, Reject
from interestgeo.schema import ColumnMapping, detect_mapping
from interestgeo.store import IngestSession, Store

__all__ = ["Progress", "ingest_file"]

Progress = Callable[[float, str], None]


class _AlreadyLoaded(Exception):
    """Raised inside a load's transaction (rolling it back) when the file's content is stored."""

    def __init__(self, dataset_id: int, name: str) -> None:
        super().__init__(name)
        self.dataset_id, self.name = dataset_id, name


def ingest_file(
    store: Store,
    path: Path | str,
    *,
    config: Config,
    mapping: ColumnMapping | None = None,
    dataset: str | None = None,
    progress: Progress | None = None,
    pseudonym_key: bytes | None = None,
) -> IngestReport:
    """Load one CSV file as a new dataset of `store` (atomically) and report what happened.

    `mapping` defaults to `detect_columns(path)`; `dataset` defaults to the file name (made unique).
    A file whose content was already loaded adds nothing (`already_loaded=True`).
    With `pseudonym_key` (see pseudonym.py) every user id is stored as its keyed hash, and the raw
    text of rejected rows (which holds the real id) is withheld.
    Raises IngestError when the file cannot be used at all.
    """
    started = time.perf_counter()
    report_progress: Progress = progress or (lambda fraction, message: None)
    path = Path(path)
    fmt = detect_format(path, max_bytes=config.store.max_file_bytes)
    if fmt.compression == "gzip":
        check_gzip_size(path, config.store.max_file_bytes)
    mapping = mapping or detect_mapping(fmt.columns)
    _check_mapping(mapping, fmt.columns, path)
    now = datetime.now(timezone.utc)
    # The session's temp tables are dropped when it ends, after the commit or the rollback.
    with store.ingest_session() as session:
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                # The hash (the re-ingest key) is computed while DuckDB parses: on two cores this hides
                # it. A file loaded before is found right after the parse and rolled back.
                hashing = pool.submit(content_hash, path)
                with store.transaction():
                    report = _load(store, session, path, fmt, mapping, dataset, hashing, now, pool, report_progress,
                                   pseudonym_key)
        except _AlreadyLoaded as loaded:
            return IngestReport(loaded.dataset_id, loaded.name, 0, 0, 0, 0, [], time.perf_counter() - started, 0.0,
                                True, str(path), fmt.encoding, fmt.delimiter)
    elapsed = time.perf_counter() - started
    return replace(report, elapsed_s=elapsed, events_per_s=report.rows_read / elapsed if elapsed > 0 else 0.0)


def _load(
    store: Store,
    session: IngestSession,
    path: Path,
    fmt: CsvFormat,
    mapping: ColumnMapping,
    dataset: str | None,
    hashing: Future[str],
    now: datetime,
    pool: ThreadPoolExecutor,
    report_progress: Progress,
    pseudonym_key: bytes | None = None,
) -> IngestReport:
    """The steps of one file's load, inside the caller's transaction (timings left to it).

    The cell x window counting (numpy, one core) runs in `pool` while DuckDB writes the events
    (both release the GIL), so the two overlap on a multi-core machine.
    """
    dataset_id = session.next_dataset_id()
    report_progress(0.1, "parsing and validating CSV")
    kept, _, csv_errors = _read_checked(session, path, fmt, mapping, now)
    if (csv_errors["error_type"] == "INVALID ENCODING").any():
        # Not UTF-8: read the whole file again as Latin-1 (every byte is valid there).
        fmt = replace(fmt, encoding="latin-1")
        kept, _, csv_errors = _read_checked(session, path, fmt, mapping, now)
    content_hash = hashing.result()
    existing = store.dataset_by_hash(content_hash)
    if existing is not None:
        raise _AlreadyLoaded(*existing)
    name = _dataset_name(store, dataset, path)
    rows_read = kept + len(csv_errors)
    if rows_read == 0:
        raise IngestError(f"{path.name}: no data rows after the header")
    rejects = locate_rejects(path, fmt, session.checked_rejects(), csv_errors, kept)
    if pseudonym_key is not None:
        from interestgeo.pseudonym import WITHHELD, pseudonymise

        session.replace_checked_user_ids(lambda ids: pseudonymise(ids, pseudonym_key))
        rejects = rejects.assign(raw=WITHHELD)
    users, cell_ranks, hours, unique_cells = session.prepare_checked(store.base_resolution)
    counting = pool.submit(
        cell_window_counts, users, unique_cells[cell_ranks], hours, store.map_resolutions,
        hour_resolutions=store.precomputed("hour"), ranked=(unique_cells, cell_ranks),
    )
    report_progress(0.45, "storing events")
    stored, duplicates = session.insert_events(dataset_id)
    session.insert_rejects(dataset_id, rejects)
    report_progress(0.7, "aggregating cells and windows")
    session.insert_cell_windows(dataset_id, counting.result())
    session.insert_dataset(
        dataset_id,
        name=name,
        source=str(path),
        content_hash=content_hash,
        rows_read=rows_read,
        rows_stored=stored,
        rows_rejected=len(rejects),
        duplicates_skipped=duplicates,
        loaded_at=now,
        mapping_json=json.dumps({"columns": mapping.to_dict(), "delimiter": fmt.delimiter,
                                 "encoding": fmt.encoding, "compression": fmt.compression}),
    )
    report_progress(1.0, "done")
    return IngestReport(
        dataset_id=dataset_id,
        dataset=name,
        rows_read=rows_read,
        rows_stored=stored,
        rows_rejected=len(rejects),
        duplicates_skipped=duplicates,
        rejects=[Reject(int(r.line), str(r.reason), str(r.raw)) for r in rejects.head(REPORT_REJECTS).itertuples()],
        elapsed_s=0.0,
        events_per_s=0.0,
        already_loaded=False,
        source=str(path),
        encoding=fmt.encoding,
        delimiter=fmt.delimiter,
    )


def _read_checked(
    session: IngestSession, path: Path, fmt: CsvFormat, mapping: ColumnMapping, now: datetime
) -> tuple[int, int, pd.DataFrame]:
    try:
        return session.read_csv_checked(path, mapping, fmt.columns, delimiter=fmt.delimiter, encoding=fmt.encoding,
                                        compression=fmt.compression, now=now)
    except duckdb.Error as exc:
        raise IngestError(f"{path.name}: cannot be read as CSV ({_first_line(exc)})") from exc


def _check_mapping(mapping: ColumnMapping, columns: list[str], path: Path) -> None:
    missing = mapping.missing()
    if missing:
        raise IngestError(
            f"{path.name}: no usable {'/'.join(missing)} column (columns: {', '.join(columns)}; "
            "map them with --map field=column)"
        )
    for fld, sources in mapping.used_columns().items():
        for source in sources:
            if source not in columns:
                raise IngestError(f"{path.name}: mapped {fld} column {source!r} is not in the file")


def _dataset_name(store: Store, requested: str | None, path: Path) -> str:
    if requested:
        if store.dataset_id(requested) is not None:
            raise IngestError(f"dataset name {requested!r} is already used by another file; delete it or pick another")
        return requested
    stem = path.name
    for suffix in (".gz", ".csv", ".tsv", ".txt"):
        stem = stem.removesuffix(suffix)
    name, n = stem, 1
    while store.dataset_id(name) is not None:
        n += 1
        name = f"{stem}-{n}"
    return name


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
