"""This run's config, the database behind it and who is looking: what every other helper needs first.

Why a module of its own: the config, the read-only store of one core call, the TRAINING lock
and the viewer's role are read by the caches, the filter bar and the page frame alike; here
they import nothing else of pages/_ui, so there is no cycle.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import streamlit as st

from interestgeo import access
from interestgeo.config import Config, load_config

log = logging.getLogger("interestgeo.app")

ROLES = ("analyst", "marketer")
SCORE_HINT = "run `interestgeo train` and then `interestgeo score` (or `make run`, which does both)"


def app_config() -> Config:
    """The config for this run (`$INTERESTGEO_CONFIG`, `$INTERESTGEO_DB`); cheap, so not cached.

    A config that cannot be read stops the page with one line (the details go to the server
    log): the dashboard never runs on defaults the operator did not choose.
    """
    try:
        return load_config()
    except (OSError, ValueError, TypeError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        refuse_to_start("the interestgeo config file could not be read", exc)
        raise  # not reached: refuse_to_start stops the script


def refuse_to_start(what: str, exc: BaseException) -> None:
    """Stop the script run with one sentence; the exception goes to the server log only."""
    log.error("refusing to start: %s", what, exc_info=exc)
    st.error(f"The dashboard cannot start: {what}. The server log says why.", icon=":material/block:")
    st.stop()


def db_path(config: Config) -> str:
    return str(Path(config.store.path).resolve())


# Held while the Model page trains: one run at a time, and the database is open for writing.
TRAINING = threading.Lock()
TRAINING_NOTE = ("a new interest model is training (Model page); pages that read the database are back when it "
                 "finishes")


@contextmanager
def store_for(config: Config) -> Iterator[Any]:
    """A read-only store for the length of one core call, closed after it.

    No connection outlives the call: a connection held between requests kept every writer out
    (DuckDB: one read-write process or several read-only ones), so `interestgeo ingest` failed
    while the dashboard was open. Opening one costs milliseconds, and results are cached. While
    a writer commits, the open waits `store.read_wait_s` and then raises StoreBusy, which the page
    shows as one sentence ("reload in a moment").
    """
    from interestgeo.store import Store

    if TRAINING.locked():
        # DuckDB keeps one writer and no readers in a process: say so instead of failing to open
        raise RuntimeError(TRAINING_NOTE)
    with Store.open(db_path(config), read_only=True, config=config) as store:
        yield store


def require_database(config: Config) -> None:
    """Return when the database exists; otherwise tell the user how to get one and stop the page."""
    path = Path(config.store.path)
    if not path.exists():
        st.info(
            f"No database at `{path}` yet. Run `make run` (it loads the NYC demo data) or "
            "`interestgeo demo`, or load your own CSV on the **Upload** page."
        )
        st.stop()


def require_analyst() -> None:
    """Raise access.AccessDenied unless this session's viewer is an analyst.

    Checked by the per-person calls below before their caches, from the session's own role (not
    only the thread's declared viewer, which a fragment's rerun may not have)."""
    access.require_analyst("one person's data", role(app_config()))


LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")


def role(config: Config) -> str:
    """The viewer's role. With accounts: the logged-in account's (and "marketer" for anyone not
    logged in, though the login gate shows them nothing). Without: `st.secrets["role"]` when set
    (per deployment), else the config's; when neither says, "analyst" only while the server
    listens on this machine alone, else "marketer".

    A secrets file that exists but cannot be parsed stops the page (it used to read as "no
    secrets" and fall back to the analyst role).
    """
    accounts = _accounts(config)
    if accounts:
        account = accounts.get(st.session_state.get(ACCOUNT_KEY, ""))
        return account.role if account is not None else "marketer"
    try:
        secret = st.secrets.get("role")
    except FileNotFoundError as exc:  # Streamlit's "no secrets" and "cannot parse them" alike
        if any(Path(f).is_file() for f in st.get_option("secrets.files")):
            refuse_to_start("the Streamlit secrets file could not be read", exc)
        secret = None
    value = secret or config.app.role
    if value is None:
        value = "analyst" if str(st.get_option("server.address") or "") in LOCAL_ADDRESSES else "marketer"
    # An unknown role gets the narrower view.
    return str(value) if value in ROLES else "marketer"


# --- accounts and the audit log ---------------------------------------------------------------

# The logged-in account's name, in session state (the role is looked up from the file each run,
# so removing an account or changing its role takes effect at the next click).
ACCOUNT_KEY = "_account"


def _accounts(config: Config) -> dict[str, Any]:
    """The accounts beside this database; a damaged accounts file stops the page."""
    from interestgeo.accounts import AccountsError, accounts_path, load_accounts

    try:
        return load_accounts(accounts_path(config.store.path))
    except AccountsError as exc:
        refuse_to_start("the accounts file could not be read", exc)
        raise  # not reached
