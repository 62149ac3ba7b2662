"""Load a CSV of events into the store: detect its format and columns, validate, de-duplicate.

The same `ingest_file` serves the CLI (`interestgeo ingest`) and the dashboard's Upload page.
DuckDB's CSV reader does the parsing (fast, parallel, handles gzip, quoting, CRLF and the BOM);
Python only looks at the first 64 KiB (compression, delimiter, header, binary junk) and hashes
the file's bytes (re-ingesting the same content adds nothing). Encoding: the file is read as
UTF-8; if DuckDB meets invalid UTF-8 anywhere, the whole file is read again as Latin-1 (in which
every byte is valid), because a file is one encoding, not a mix.

Line numbers in rejects are the file's physical line numbers as an editor shows them: 1-based,
the header is line 1, blank lines count, and a record spanning several lines (a quoted field with
newlines) is reported at its first line. This costs nothing for clean files. With rejects, one
newline count tells whether every record is one line (the common case: line numbers follow from
record positions and DuckDB's own error lines); otherwise a Python csv pass maps records to their
first lines. Either way the raw text of each rejected record is read back from the file.

Each file is loaded in one transaction: rows, rejects, aggregates and the datasets row appear
together or not at all. `progress` is called inside that transaction, so an exception raised by
it (a UI's cancel button, Ctrl-C) rolls the whole file back.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from interestgeo.config import Config
from interestgeo.schema import ColumnMapping, Reason, detect_mapping
from interestgeo.store import Store, cell_window_counts

__all__ = [
    "ColumnMapping",
    "CsvFormat",
    "IngestError",
    "IngestReport",
    "Reject",
    "detect_columns",
    "detect_format",
    "ingest_file",
]

Progress = Callable[[float, str], None]

# How many rejects an IngestReport carries (all of them are in the store's rejects table).
REPORT_REJECTS = 20
_SNIFF_BYTES = 1 << 16
_CHUNK_BYTES = 1 << 24
_HASH_BUFFER_BYTES = 1 << 22
_DELIMITERS = (",", "\t", ";")


class IngestError(Exception):
    """The file cannot be used at all; the message is one line meant for the user."""


class _AlreadyLoaded(Exception):
    """Raised inside a load's transaction (rolling it back) when the file's content is stored."""

    def __init__(self, dataset_id: int, name: str) -> None:
        super().__init__(name)
        self.dataset_id, self.name = dataset_id, name


@dataclass(frozen=True)
class Reject:
    """One rejected record: its first physical line, why, and its raw text (line breaks kept)."""

    line: int
    reason: str
    raw: str


@dataclass(frozen=True)
class IngestReport:
    """What one file's load did. rows_read = rows_stored + rows_rejected + duplicates_skipped.

    `rejects` holds the first REPORT_REJECTS (store.rejects(dataset_id) has them all). For a file
    whose content was loaded before, `already_loaded` is True, the ids name the existing dataset
    and every count is 0.
    """

    dataset_id: int
    dataset: str
    rows_read: int
    rows_stored: int
    rows_rejected: int
    duplicates_skipped: int
    rejects: list[Reject]
    elapsed_s: float
    events_per_s: float
    already_loaded: bool
    source: str = ""
    encoding: str = ""
    delimiter: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (what `interestgeo ingest --json` prints)."""
        return asdict(self)


@dataclass(frozen=True)
class CsvFormat:
    """What DuckDB needs to know to read the file, found by `detect_format`."""

    delimiter: str
    encoding: str  # "utf-8" or "latin-1"
    compression: str  # "gzip" or "none"
    columns: list[str]


def detect_format(path: Path | str, *, max_bytes: int | None = None) -> CsvFormat:
    """Compression, delimiter, encoding and header of a CSV, from its first 64 KiB.

    Raises IngestError for a missing, empty, oversized, binary or header-less file.
    """
    path = Path(path)
    head, compression = _read_head(path, max_bytes)
    try:
        text = head.decode("utf-8-sig")
        encoding = "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the 64 KiB boundary is not an encoding problem.
        text = head[: exc.start].decode("utf-8-sig") if exc.start > len(head) - 4 else None
        encoding = "utf-8"
        if text is None:
            text, encoding = head.decode("latin-1"), "latin-1"
    first_line = text.split("\n", 1)[0]
    delimiter = max(_DELIMITERS, key=first_line.count)
    header = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    columns = [c.strip() for c in header]
    if len(columns) < 2 or not any(columns):
        raise IngestError(f"{path.name}: not a CSV with a header row (need columns for user, time, location, text)")
    return CsvFormat(delimiter=delimiter, encoding=encoding, compression=compression, columns=columns)


def detect_columns(path: Path | str) -> ColumnMapping:
    """The automatic column mapping of a CSV (the Upload page shows it before ingesting)."""
    return detect_mapping(detect_format(path).columns)


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
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            # The hash (the re-ingest key) is computed while DuckDB parses: on two cores this hides
            # it. A file loaded before is found right after the parse and rolled back.
            hashing = pool.submit(_content_hash, path)
            with store.transaction():
                report = _load(store, path, fmt, mapping, dataset, hashing, now, pool, report_progress,
                               pseudonym_key)
    except _AlreadyLoaded as loaded:
        return IngestReport(loaded.dataset_id, loaded.name, 0, 0, 0, 0, [], time.perf_counter() - started, 0.0, True,
                            str(path), fmt.encoding, fmt.delimiter)
    finally:
        store.drop_ingest_temps()
    elapsed = time.perf_counter() - started
    return replace(report, elapsed_s=elapsed, events_per_s=report.rows_read / elapsed if elapsed > 0 else 0.0)


def _load(
    store: Store,
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
    dataset_id = store.next_dataset_id()
    report_progress(0.1, "parsing and validating CSV")
    kept, _, csv_errors = _read_checked(store, path, fmt, mapping, now)
    if (csv_errors["error_type"] == "INVALID ENCODING").any():
        # Not UTF-8: read the whole file again as Latin-1 (every byte is valid there).
        fmt = replace(fmt, encoding="latin-1")
        kept, _, csv_errors = _read_checked(store, path, fmt, mapping, now)
    content_hash = hashing.result()
    existing = store.dataset_by_hash(content_hash)
    if existing is not None:
        raise _AlreadyLoaded(*existing)
    name = _dataset_name(store, dataset, path)
    rows_read = kept + len(csv_errors)
    if rows_read == 0:
        raise IngestError(f"{path.name}: no data rows after the header")
    rejects = _locate_rejects(path, fmt, store.checked_rejects(), csv_errors, kept)
    if pseudonym_key is not None:
        from interestgeo.pseudonym import WITHHELD, pseudonymise

        store.replace_checked_user_ids(lambda ids: pseudonymise(ids, pseudonym_key))
        rejects = rejects.assign(raw=WITHHELD)
    users, cell_ranks, hours, unique_cells = store.prepare_checked(store.base_resolution)
    counting = pool.submit(
        cell_window_counts, users, unique_cells[cell_ranks], hours, store.map_resolutions,
        hour_resolutions=store.precomputed("hour"), ranked=(unique_cells, cell_ranks),
    )
    report_progress(0.45, "storing events")
    stored, duplicates = store.insert_events(dataset_id)
    store.insert_rejects(dataset_id, rejects)
    report_progress(0.7, "aggregating cells and windows")
    store.insert_cell_windows(dataset_id, counting.result())
    store.insert_dataset(
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


# ---------------------------------------------------------------------------- file checks


def _read_head(path: Path, max_bytes: int | None) -> tuple[bytes, str]:
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if not path.is_file():
        raise IngestError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise IngestError(f"{path.name}: the file is empty")
    if max_bytes is not None and size > max_bytes:
        raise IngestError(f"{path.name}: {size / 1e6:.0f} MB is over the {max_bytes / 1e6:.0f} MB limit")
    try:
        with open(path, "rb") as f:
            raw = f.read(_SNIFF_BYTES)
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot be read ({exc.strerror})") from exc
    compression = "gzip" if raw[:2] == b"\x1f\x8b" else "none"
    if compression == "gzip":
        try:
            raw = zlib.decompressobj(wbits=31).decompress(raw, _SNIFF_BYTES)
        except zlib.error as exc:
            raise IngestError(f"{path.name}: damaged gzip file") from exc
        if not raw:
            raise IngestError(f"{path.name}: the file is empty")
    if b"\x00" in raw:
        raise IngestError(f"{path.name}: not a CSV (binary data)")
    return raw, compression


def check_gzip_size(path: Path, max_bytes: int) -> int:
    """The decompressed size of a gzip file; IngestError as soon as it passes `max_bytes`.

    A few KB of gzip can expand to terabytes (a "gzip bomb"). The parser would decompress it all
    into the database, so the content is counted first, in bounded chunks, and reading stops at
    the limit: a bomb costs at most `max_bytes` of decompression, never its full size.
    """
    total = 0
    buffer = bytearray(_GZIP_CHUNK_BYTES)
    try:
        with gzip.open(path, "rb") as f:
            while size := f.readinto(buffer):  # type: ignore[attr-defined]
                total += size
                if total > max_bytes:
                    raise IngestError(f"{path.name}: decompressed, it is over the {max_bytes / 1e6:.0f} MB limit "
                                      "(reading stopped there)")
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise IngestError(f"{path.name}: damaged gzip file") from exc
    return total


# Decompressed per read while counting a gzip's size: big enough to keep Python out of the way.
_GZIP_CHUNK_BYTES = 4 * 1024 * 1024


def _content_hash(path: Path) -> str:
    """sha256 of the file's bytes (as stored, compressed or not): the re-ingest key."""
    digest = hashlib.sha256()
    # One reused buffer, unbuffered reads: no fresh 16 MB object per chunk (a third of the CPU).
    buffer = bytearray(_HASH_BUFFER_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def _count_lines(path: Path, fmt: CsvFormat) -> int:
    """Physical lines of the (decompressed) file; a last line without a newline counts."""
    lines, last = 0, b""
    opener = gzip.open if fmt.compression == "gzip" else open
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (1 if last and last != b"\n" else 0)


def _read_checked(
    store: Store, path: Path, fmt: CsvFormat, mapping: ColumnMapping, now: datetime
) -> tuple[int, int, pd.DataFrame]:
    try:
        return store.read_csv_checked(path, mapping, fmt.columns, delimiter=fmt.delimiter, encoding=fmt.encoding,
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


# ---------------------------------------------------------------------------- line numbers


def _locate_rejects(
    path: Path,
    fmt: CsvFormat,
    checked: pd.DataFrame,
    csv_errors: pd.DataFrame,
    kept: int,
) -> pd.DataFrame:
    """Physical line, raw text and reason of every rejected row, in file order.

    `checked` holds the ordinals (position among the records DuckDB kept) of rows failing
    validation; `csv_errors` the records DuckDB could not split into the header's columns.
    """
    if checked.empty and csv_errors.empty:
        return pd.DataFrame({"line": np.empty(0, np.int64), "raw": [], "reason": []})
    ncols = len(fmt.columns)
    if _count_lines(path, fmt) == 1 + kept + len(csv_errors):
        # Every record is exactly one line: kept record r sits on line r + 2 plus the bad
        # lines before it. DuckDB's own line numbers are physical here (no multi-line records).
        bad_lines = csv_errors["line"].to_numpy(np.int64)
        before = bad_lines - 2 - np.arange(len(bad_lines))
        ordinals = checked["ordinal"].to_numpy(np.int64)
        lines = ordinals + 2 + np.searchsorted(before, ordinals, side="right")
        wanted = set(lines.tolist()) | set(bad_lines.tolist())
        raw = _fetch_lines(path, fmt, wanted)
        bad_raw = [raw.get(int(line), "") for line in bad_lines]
    else:
        good_lines, bad = _record_lines(path, fmt, ncols)
        if len(good_lines) != kept or len(bad) != len(csv_errors):
            first = bad[0][0] if bad else int(csv_errors["line"].min()) if not csv_errors.empty else 1
            raise IngestError(
                f"{path.name}: inconsistent quoting near line {first}; fix the quotes and try again"
            )
        ordinals = checked["ordinal"].to_numpy(np.int64)
        good = np.asarray(good_lines, dtype=np.int64)
        lines = good[ordinals] if len(ordinals) else np.empty(0, np.int64)
        bad_lines = np.array([b[0] for b in bad], dtype=np.int64)
        bad_raw = [b[1] for b in bad]
        raw = _record_raw(path, fmt, set(lines.tolist()))
    structural = [
        _structural_reason(error_type, raw_text, fmt.delimiter, ncols)
        for error_type, raw_text in zip(csv_errors["error_type"], bad_raw, strict=True)
    ]
    frame = pd.DataFrame(
        {
            "line": np.concatenate([lines, bad_lines]).astype(np.int64),
            "raw": [raw.get(int(line), "") for line in lines] + bad_raw,
            "reason": checked["reason"].astype(str).tolist() + structural,
        }
    )
    return frame.sort_values("line", kind="stable").reset_index(drop=True)


def _structural_reason(error_type: str, raw: str, delimiter: str, ncols: int) -> str:
    if error_type in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
        found = len(next(csv.reader(io.StringIO(raw), delimiter=delimiter), []))
        return Reason.column_count(ncols, found)
    if error_type == "UNQUOTED VALUE":
        return Reason.UNTERMINATED_QUOTE
    if error_type == "INVALID ENCODING":
        return Reason.BAD_ENCODING
    return f"malformed CSV line ({error_type.lower()})"


def _physical_lines(path: Path, fmt: CsvFormat) -> Iterator[str]:
    """The file's lines, decoded, with their line endings (BOM removed)."""
    opener = gzip.open if fmt.compression == "gzip" else open
    encoding = "utf-8-sig" if fmt.encoding == "utf-8" else fmt.encoding
    with opener(path, "rb") as f:
        first = True
        for raw in f:
            text = raw.decode(encoding if first else fmt.encoding, errors="replace")
            first = False
            yield text


def _fetch_lines(path: Path, fmt: CsvFormat, wanted: set[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    last = max(wanted) if wanted else 0
    for number, text in enumerate(_physical_lines(path, fmt), start=1):
        if number in wanted:
            out[number] = text.rstrip("\r\n")
        if number >= last:
            break
    return out


def _records(path: Path, fmt: CsvFormat) -> Iterator[tuple[int, str, int]]:
    """(first line, raw text, field count) of every non-blank record after the header."""
    buffer: list[str] = []

    def feed() -> Iterator[str]:
        for text in _physical_lines(path, fmt):
            buffer.append(text)
            yield text

    reader = csv.reader(feed(), delimiter=fmt.delimiter, quotechar='"', doublequote=True, strict=False)
    line = 0
    for index, row in enumerate(reader):
        start = line + 1
        line = reader.line_num
        raw = "".join(buffer).rstrip("\r\n")
        buffer.clear()
        if index == 0 or not row:
            continue
        yield start, raw, len(row)


def _record_lines(path: Path, fmt: CsvFormat, ncols: int) -> tuple[list[int], list[tuple[int, str]]]:
    """First lines of well-formed records, and (line, raw) of records with a wrong field count."""
    good: list[int] = []
    bad: list[tuple[int, str]] = []
    for start, raw, count in _records(path, fmt):
        if count == ncols:
            good.append(start)
        else:
            bad.append((start, raw))
    return good, bad


def _record_raw(path: Path, fmt: CsvFormat, wanted: set[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    if not wanted:
        return out
    last = max(wanted)
    for start, raw, _ in _records(path, fmt):
        if start in wanted:
            out[start] = raw
        if start >= last:
            break
    return out
