"""The audit log: who logged in, who failed to, and who looked at which person, and when.

One JSON object per line in a file beside the database (`<db stem>.audit.jsonl`, mode 0600),
appended, never rewritten. Why not a store table: the dashboard holds the DuckDB file read-only
and DuckDB lets one process write it at a time, so the dashboard could not write a row per login
or per person viewed while it runs (see accounts.py). Each line is written with one `write` on a
file opened for appending, so lines from concurrent sessions do not interleave.

Entries: `at` (ISO 8601 UTC), `event` (one of EVENTS), `account` (the account name; None in
single-user mode or the CLI) and, for a person viewed, `dataset_id` and `user_id`; for a dataset
deleted, its name and `via` (cli or dashboard). Failed logins record the name that was tried,
never the password.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["EVENTS", "audit_path", "read_audit", "record"]

EVENTS = ("login", "login_failed", "login_limited", "logout", "person_viewed", "dataset_deleted")


def audit_path(db_path: Path | str) -> Path:
    """The audit log of a database: `data/interestgeo.duckdb` -> `data/interestgeo.audit.jsonl`."""
    db = Path(db_path)
    return db.with_name(f"{db.stem}.audit.jsonl")


def record(path: Path, event: str, account: str | None, **detail: Any) -> dict[str, Any]:
    """Append one entry and return it."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    entry = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, "account": account,
             **detail}
    line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return entry


def read_audit(path: Path, last: int | None = None) -> list[dict[str, Any]]:
    """The entries, oldest first (the `last` ones only when given); [] when there is no log yet."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    entries = [json.loads(line) for line in lines if line.strip()]
    return entries[-last:] if last else entries
