"""Physical line numbers and raw text of rejected records, as an editor shows them.

Line numbers are 1-based, the header is line 1, blank lines count, and a record spanning several
lines (a quoted field with newlines) is reported at its first line. This costs nothing for clean
files. With rejects, one newline count tells whether every record is one line (the common case:
line numbers follow from record positions and DuckDB's own error lines); otherwise a Python csv
pass maps records to their first lines. Either way the raw text of each rejected record is read
back from the file.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from interestgeo.ingest._sniff import CsvFormat
from interestgeo.ingest.report import IngestError
from interestgeo.schema import Reason

__all__ = ["locate_rejects"]

_CHUNK_BYTES = 1 << 24


def _count_lines(path: Path, fmt: CsvFormat) -> int:
    """Physical lines of the (decompressed) file; a last line without a newline counts."""
    lines, last = 0, b""
    opener = gzip.open if fmt.compression == "gzip" else open
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (1 if last and last != b"\n" else 0)


def locate_rejects(
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
