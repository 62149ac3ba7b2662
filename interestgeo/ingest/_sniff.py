"""What a file is before DuckDB reads it: compression, delimiter, encoding, header, size and hash.

Python looks only at the first 64 KiB (compression, delimiter, header, binary junk) and hashes the
file's bytes (re-ingesting the same content adds nothing); DuckDB's CSV reader does the parsing.
A gzip's decompressed size is counted first, in bounded chunks (a "gzip bomb" never expands fully).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

from interestgeo.ingest.report import IngestError
from interestgeo.schema import ColumnMapping, detect_mapping

__all__ = ["CsvFormat", "check_gzip_size", "content_hash", "detect_columns", "detect_format"]

_SNIFF_BYTES = 1 << 16
_HASH_BUFFER_BYTES = 1 << 22
_DELIMITERS = (",", "\t", ";")


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


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes (as stored, compressed or not): the re-ingest key."""
    digest = hashlib.sha256()
    # One reused buffer, unbuffered reads: no fresh 16 MB object per chunk (a third of the CPU).
    buffer = bytearray(_HASH_BUFFER_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()

