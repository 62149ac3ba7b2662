"""What a load tells its caller: the report of one file's load and the one error a file can raise.

Typed results for the CLI and the Upload page to render (neither parses text): `IngestReport`
with its first rejects, `IngestError` whose message is one line meant for the user.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["REPORT_REJECTS", "IngestError", "IngestReport", "Reject"]

# How many rejects an IngestReport carries (all of them are in the store's rejects table).
REPORT_REJECTS = 20


class IngestError(Exception):
    """The file cannot be used at all; the message is one line meant for the user."""


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

