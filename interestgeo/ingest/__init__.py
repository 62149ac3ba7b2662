"""Load CSV files of events into the store (the CLI's `interestgeo ingest` and the Upload page).

    load.py       ingest_file: one file, one transaction (orchestration)
    _sniff.py     format, columns, size and content hash, before DuckDB reads the file
    _lines.py     physical line numbers and raw text of rejected records
    aggregate.py  cell x window counts (pure numpy) the store keeps for the maps
    report.py     IngestReport, Reject, IngestError: what a load returns or raises
"""

from __future__ import annotations

from interestgeo.ingest._sniff import CsvFormat, check_gzip_size, detect_columns, detect_format
from interestgeo.ingest.load import Progress, ingest_file
from interestgeo.ingest.report import REPORT_REJECTS, IngestError, IngestReport, Reject
from interestgeo.schema import ColumnMapping

__all__ = [
    "REPORT_REJECTS",
    "ColumnMapping",
    "CsvFormat",
    "IngestError",
    "IngestReport",
    "Progress",
    "Reject",
    "check_gzip_size",
    "detect_columns",
    "detect_format",
    "ingest_file",
]
