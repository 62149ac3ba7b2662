"""What the concurrency tests share (tests/store/test_concurrency.py and the browser's
tests/browser/test_browser_concurrency.py): the words of a lock error no user may see, and a helper
process that loads a file and keeps the store open."""

from __future__ import annotations

__all__ = ["LOAD_AND_HOLD", "LOCK_WORDS"]

# DuckDB's lock errors and a traceback: none may reach a user during another's write.
LOCK_WORDS = ("Conflicting lock", "Could not set lock", "IO Error", "Traceback")

# A load by another process that keeps the file after its commit until told to go (a line on stdin).
LOAD_AND_HOLD = """
import sys
from interestgeo.config import Config, StoreConfig
from interestgeo.ingest import ingest_file
from interestgeo.store import Store
db, csv, name = sys.argv[1:4]
config = Config(store=StoreConfig(path=db))
with Store.open(db, config=config) as store:
    ingest_file(store, csv, config=config, dataset=name)
    print("ready", flush=True)
    sys.stdin.readline()
"""
