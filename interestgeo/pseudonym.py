"""Pseudonymised people: user ids replaced by a keyed hash while a file loads.

`interestgeo ingest --pseudonymise` (and the Upload page's checkbox) stores, for each user id,
`p_` + the first 24 hex digits of HMAC-SHA256(key, id) instead of the id. Why a keyed hash and
not a plain one: user ids are often short or guessable (numbers, e-mail addresses), and anyone
could hash every candidate and join the store back to real ids; without the key they cannot.
Why HMAC and not a random pseudonym per id: the same person gets the same pseudonym in every load
with the same key, so a second file of the same people adds to their histories instead of
starting new ones.

The key is 32 random bytes in a file beside the database (`<db stem>.pseudonym.key`, mode
0600), created by the first pseudonymised load and never printed. It is kept out of the database
so that a copy of the database (or an export of it) cannot be re-identified with it. Whoever holds
the key can compute the pseudonym of any id they know; delete the key to make that impossible for
everyone (later loads then get a new key and new pseudonyms).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

__all__ = ["KEY_BYTES", "PREFIX", "WITHHELD", "PseudonymKeyError", "key_path", "load_or_create_key", "pseudonymise"]

KEY_BYTES = 32
PREFIX = "p_"
# 96 bits: no collision among a billion people in practice, short enough for tables.
HEX_DIGITS = 24
# What a pseudonymised load stores in place of a rejected row's raw text (it holds the real id).
WITHHELD = "(withheld: pseudonymised load)"


class PseudonymKeyError(ValueError):
    """The key file cannot be used (one sentence; the key itself is never in it)."""


def key_path(db_path: Path | str) -> Path:
    """The key file of a database: `data/interestgeo.duckdb` -> `data/interestgeo.pseudonym.key`."""
    db = Path(db_path)
    return db.with_name(f"{db.stem}.pseudonym.key")


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created (random, mode 0600) when there is none yet.

    A key file others can read, or of the wrong length, is refused rather than used.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PseudonymKeyError(f"the pseudonymisation key {path} is readable by others "
                                    f"(mode {mode:o}): chmod 600 it") from None
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise PseudonymKeyError(f"the pseudonymisation key {path} is not a {KEY_BYTES}-byte key") from None
        return key
    key = secrets.token_bytes(KEY_BYTES)
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    return key


def pseudonymise(user_ids: Sequence[str], key: bytes) -> list[str]:
    """The pseudonym of each id: the same id and key always give the same pseudonym."""
    return [PREFIX + hmac.new(key, str(u).encode("utf-8"), hashlib.sha256).hexdigest()[:HEX_DIGITS]
            for u in user_ids]
