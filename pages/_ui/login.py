"""Accounts on the dashboard: the login form, logging out, and the audit log of who viewed whom.

Only with an accounts file beside the database (interestgeo/accounts.py); without one the
dashboard is local and single-user, and `login_gate` returns None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from interestgeo.config import Config
from pages._ui.session import ACCOUNT_KEY, _accounts


@st.cache_resource(show_spinner=False)
def _login_limiter(accounts_file: str) -> Any:
    """One failed-login counter per accounts file, shared by every session of this server."""
    from interestgeo.accounts import LoginLimiter

    return LoginLimiter()


def login_gate(config: Config) -> str | None:
    """With accounts: the logged-in account's name, or else the login form and nothing more (the
    script stops). Without accounts (local single-user mode): None."""
    accounts = _accounts(config)
    if not accounts:
        return None
    name = st.session_state.get(ACCOUNT_KEY)
    if name in accounts:
        return str(name)
    st.session_state.pop(ACCOUNT_KEY, None)

    def log_in() -> None:
        _login_form(config)

    # A page list of its own, hidden (without st.navigation Streamlit would list the pages/ files
    # in the sidebar): the login form at every page's address. A shared link such as /drift?...
    # then shows the form instead of "page not found", and after the login Streamlit runs the
    # page of that address (a page's identity is the hash of its URL path), or the Overview when
    # this viewer's list has no such page.
    paths = sorted(p.stem for p in Path(__file__).parents[1].glob("*.py") if not p.stem.startswith("_"))
    st.navigation([st.Page(log_in, title="Log in", url_path="login", default=True),
                   *(st.Page(log_in, title="Log in", url_path=path) for path in paths)], position="hidden").run()
    st.stop()
    return None  # not reached


def _login_form(config: Config) -> None:
    from interestgeo import audit
    from interestgeo.accounts import MAX_FAILURES, WINDOW_S, accounts_path, authenticate

    st.title("interestgeo")
    st.caption("Log in to see the dashboard.")
    # cleared on submit: the password does not stay in the session's widget state
    with st.form("login", clear_on_submit=True):
        name = st.text_input("Account", key="login_name", max_chars=64)
        password = st.text_input("Password", type="password", key="login_password", max_chars=1024)
        submitted = st.form_submit_button("Log in", type="primary")
    if not submitted:
        return
    path = accounts_path(config.store.path)
    log_path = audit.audit_path(config.store.path)
    limiter = _login_limiter(str(path))
    if not limiter.allowed(name):
        audit.record(log_path, "login_limited", name)
        st.error(f"More than {MAX_FAILURES} failed logins for this account within {WINDOW_S:.0f} seconds: "
                 "try again in a minute.", icon=":material/block:")
        return
    account = authenticate(path, name, password)
    if account is None:
        limiter.failed(name)
        audit.record(log_path, "login_failed", name)
        st.error("Wrong account name or password.", icon=":material/block:")
        return
    limiter.succeeded(name)
    audit.record(log_path, "login", account.name, role=account.role)
    st.session_state[ACCOUNT_KEY] = account.name
    st.rerun()


def logout(config: Config) -> None:
    from interestgeo import audit

    name = st.session_state.pop(ACCOUNT_KEY, None)
    if name is not None:
        audit.record(audit.audit_path(config.store.path), "logout", name)


def audit_person_view(path: str, dataset_id: int, user_id: str) -> None:
    """Log that this session looked at one person (once per person in a row, not per rerun)."""
    from interestgeo import audit

    seen = (path, int(dataset_id), str(user_id))
    if st.session_state.get("_audit_last_person") == seen:
        return
    audit.record(audit.audit_path(path), "person_viewed", st.session_state.get(ACCOUNT_KEY),
                 dataset_id=int(dataset_id), user_id=str(user_id))
    st.session_state["_audit_last_person"] = seen
