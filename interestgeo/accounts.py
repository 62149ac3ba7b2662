"""Dashboard accounts: a name, a role and a salted password hash, in a file beside the database.

Why a file and not a store table: the dashboard holds the DuckDB file open read-only, and DuckDB
lets one process write it at a time. Accounts kept in the store could then be added or changed
only with the dashboard stopped, and a login could not be checked against a table the Upload page
had just closed. A small JSON file beside the database (`<db stem>.accounts.json`, mode 0600,
replaced atomically) has neither problem, and deleting the database's folder removes it with it.

Passwords are hashed with Argon2id (argon2-cffi's defaults: a random salt per hash, memory-hard),
never stored or printed; `authenticate` spends the same work on an unknown name as on a known one
so response times do not tell which names exist. `LoginLimiter` bounds guessing: after
`MAX_FAILURES` failed logins for one account within `WINDOW_S` seconds, that account's logins are
refused (even with the right password) until the window has passed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from interestgeo.access import ROLES

__all__ = [
    "Account",
    "AccountsError",
    "LoginLimiter",
    "MAX_FAILURES",
    "MIN_PASSWORD_LENGTH",
    "WINDOW_S",
    "accounts_path",
    "add_account",
    "authenticate",
    "has_accounts",
    "load_accounts",
    "remove_account",
    "set_password",
]

# Failed logins allowed per account per window before its logins are refused for the window.
MAX_FAILURES = 5
WINDOW_S = 60.0
# Long enough that the rate limit, not luck, is what stops guessing.
MIN_PASSWORD_LENGTH = 8
# Names are shown in the sidebar and the audit log: letters, digits and . _ @ - only.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASHER = PasswordHasher()
# What an unknown name is verified against, so it costs what a known one does.
_DUMMY_HASH = _HASHER.hash("no such account: equal work for unknown names")


class AccountsError(ValueError):
    """An account cannot be added, changed or read (one sentence, no secrets in it; the CLI prints
    it as its one-line error, like every ValueError)."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    password_hash: str
    created_at: str  # ISO 8601 UTC

    def describe(self) -> dict[str, str]:
        """What may be shown: everything but the hash."""
        return {"name": self.name, "role": self.role, "created_at": self.created_at}


def accounts_path(db_path: Path | str) -> Path:
    """The accounts file of a database: `data/interestgeo.duckdb` -> `data/interestgeo.accounts.json`."""
    db = Path(db_path)
    return db.with_name(f"{db.stem}.accounts.json")


def load_accounts(path: Path) -> dict[str, Account]:
    """Name -> Account; {} when the file does not exist. A file that cannot be read is an error,
    never "no accounts": that would open the dashboard to anyone."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AccountsError(f"the accounts file {path} cannot be read ({exc.strerror})") from None
    try:
        rows = json.loads(text)["accounts"]
        accounts = {r["name"]: Account(r["name"], r["role"], r["password_hash"], r["created_at"]) for r in rows}
    except (ValueError, KeyError, TypeError) as exc:
        raise AccountsError(f"the accounts file {path} is damaged ({type(exc).__name__})") from None
    if any(a.role not in ROLES for a in accounts.values()):
        raise AccountsError(f"the accounts file {path} holds an unknown role")
    return accounts


def has_accounts(path: Path) -> bool:
    return bool(load_accounts(path))


def add_account(path: Path, name: str, role: str, password: str) -> Account:
    """Create an account (an existing name is an error: use `set_password`)."""
    _check_name(name)
    if role not in ROLES:
        raise AccountsError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    _check_password(password)
    with _locked(path):
        accounts = load_accounts(path)
        if name in accounts:
            raise AccountsError(f"an account named {name!r} exists; change its password with `users passwd`")
        account = Account(name, role, _HASHER.hash(password), datetime.now(UTC).isoformat(timespec="seconds"))
        _write(path, {**accounts, name: account})
    return account


def remove_account(path: Path, name: str) -> None:
    with _locked(path):
        accounts = load_accounts(path)
        if name not in accounts:
            raise AccountsError(f"no account named {name!r}")
        del accounts[name]
        _write(path, accounts)


def set_password(path: Path, name: str, password: str) -> None:
    _check_password(password)
    with _locked(path):
        accounts = load_accounts(path)
        if name not in accounts:
            raise AccountsError(f"no account named {name!r}")
        old = accounts[name]
        accounts[name] = Account(old.name, old.role, _HASHER.hash(password), old.created_at)
        _write(path, accounts)


def authenticate(path: Path, name: str, password: str) -> Account | None:
    """The account when the password is right, else None (an unknown name costs the same work)."""
    account = load_accounts(path).get(name)
    try:
        _HASHER.verify(account.password_hash if account else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return account


class LoginLimiter:
    """Failed logins per account in a sliding window; thread-safe (dashboard sessions are threads).

    Kept in the server's memory: a restart forgets it, which only gives a guesser one more window.
    """

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allowed(self, name: str, now: float | None = None) -> bool:
        """Whether a login for `name` may be tried now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = self._recent(name, now)
            return len(recent) < self.max_failures

    def failed(self, name: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._recent(name, now).append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)

    def _recent(self, name: str, now: float) -> deque[float]:
        times = self._failures.setdefault(name, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise AccountsError("an account name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
                            "or digit")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountsError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def _write(path: Path, accounts: dict[str, Account]) -> None:
    """Replace the file atomically, readable by its owner only (it holds password hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"accounts": [asdict(a) for a in sorted(accounts.values(), key=lambda a: a.name)]},
                         indent=1)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _locked:
    """An exclusive lock for a read-modify-write of the accounts file (two `users add` at once)."""

    def __init__(self, path: Path) -> None:
        self.lock_path = path.with_name(f".{path.name}.lock")

    def __enter__(self) -> None:
        import fcntl

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
