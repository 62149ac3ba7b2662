"""Accounts, the login gate, the failed-login limit and the audit log.

Real Argon2id hashes, a real accounts file beside a real (small, scored) database, the real CLI
in a subprocess, and the dashboard under AppTest.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interestgeo.accounts import (
    MAX_FAILURES,
    AccountsError,
    LoginLimiter,
    accounts_path,
    add_account,
    authenticate,
    load_accounts,
    remove_account,
    set_password,
)
from interestgeo.audit import audit_path, read_audit
from tests._data.app import APP, TIMEOUT, assert_clean
from tests._data.privacy import recency_database, use_database

PASSWORD = "correct horse battery"


def test_a_password_round_trips_through_its_salted_hash(tmp_path: Path) -> None:
    path = tmp_path / "db.accounts.json"
    add_account(path, "ana", "analyst", PASSWORD)
    add_account(path, "mo", "marketer", PASSWORD)
    assert authenticate(path, "ana", PASSWORD).role == "analyst"  # type: ignore[union-attr]
    assert authenticate(path, "mo", PASSWORD).role == "marketer"  # type: ignore[union-attr]
    stored = path.read_text(encoding="utf-8")
    assert PASSWORD not in stored
    hashes = [a.password_hash for a in load_accounts(path).values()]
    assert all(h.startswith("$argon2id$") for h in hashes) and hashes[0] != hashes[1]  # salted: same password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_wrong_password_or_an_unknown_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.accounts.json"
    add_account(path, "ana", "analyst", PASSWORD)
    assert authenticate(path, "ana", PASSWORD + "x") is None
    assert authenticate(path, "ana", "") is None
    assert authenticate(path, "nobody", PASSWORD) is None


def test_passwd_and_remove(tmp_path: Path) -> None:
    path = tmp_path / "db.accounts.json"
    add_account(path, "ana", "analyst", PASSWORD)
    set_password(path, "ana", "another long password")
    assert authenticate(path, "ana", PASSWORD) is None
    assert authenticate(path, "ana", "another long password") is not None
    remove_account(path, "ana")
    assert load_accounts(path) == {}


@pytest.mark.parametrize(("name", "role", "password", "message"), [
    ("ana", "admin", PASSWORD, "unknown role"),
    ("../etc/passwd", "analyst", PASSWORD, "account name"),
    ("", "analyst", PASSWORD, "account name"),
    ("ana", "analyst", "short", "at least 8"),
])
def test_bad_accounts_are_refused(tmp_path: Path, name: str, role: str, password: str, message: str) -> None:
    with pytest.raises(AccountsError, match=message):
        add_account(tmp_path / "db.accounts.json", name, role, password)


def test_a_damaged_accounts_file_is_an_error_never_no_accounts(tmp_path: Path) -> None:
    path = tmp_path / "db.accounts.json"
    path.write_text('{"accounts": [{"name": "ana"', encoding="utf-8")
    with pytest.raises(AccountsError, match="damaged"):
        load_accounts(path)


def test_the_limiter_refuses_an_account_after_five_failures_a_minute() -> None:
    limiter = LoginLimiter()
    for second in range(MAX_FAILURES):
        assert limiter.allowed("ana", now=float(second))
        limiter.failed("ana", now=float(second))
    assert not limiter.allowed("ana", now=10.0)
    assert limiter.allowed("mo", now=10.0)  # per account
    assert limiter.allowed("ana", now=61.0)  # the first failure left the window


def users(db: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interestgeo.cli", "users", *args, "--db", str(db)], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_the_users_commands_read_the_password_from_stdin_and_never_print_it(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    done = users(db, "add", "ana", "--role", "analyst", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert authenticate(accounts_path(db), "ana", PASSWORD) is not None
    listed = users(db, "list", "--json")
    assert json.loads(listed.stdout) == {"accounts": [{"name": "ana", "role": "analyst",
                                                       "created_at": load_accounts(accounts_path(db))["ana"].created_at}]}
    assert users(db, "passwd", "ana", stdin="a new long password\n").returncode == 0
    assert authenticate(accounts_path(db), "ana", "a new long password") is not None
    again = users(db, "add", "ana", "--role", "marketer", stdin=PASSWORD + "\n")
    assert again.returncode == 2 and "exists" in again.stderr
    assert users(db, "remove", "ana").returncode == 0
    assert "no accounts" in users(db, "list").stdout
    for run in (done, listed, again):
        assert PASSWORD not in run.stdout + run.stderr


# --- the dashboard ---------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scored database with an analyst and a marketer account (and no `[app] role`)."""
    db = use_database(recency_database(tmp_path_factory), tmp_path, monkeypatch, role=None)
    add_account(accounts_path(db), "ana", "analyst", PASSWORD)
    add_account(accounts_path(db), "mo", "marketer", PASSWORD)
    return db


def log_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    return at.button[0].click().run()


def test_with_accounts_the_login_form_is_all_there_is(db: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert [t.value for t in at.text_input] == ["", ""]
    assert not at.metric and not at.sidebar.multiselect and not at.dataframe and not at.get("plotly_chart")
    log_in(at, "ana", "wrong password")
    assert [e.value for e in at.error] == ["Wrong account name or password."]
    assert not at.metric
    log_in(at, "ana", PASSWORD)
    assert_clean(at)
    assert at.title[0].value == "Overview" and at.metric
    assert any("Account **ana**, role **analyst**" in c.value for c in at.sidebar.caption)
    at.switch_page("pages/user.py").run()
    assert_clean(at)
    assert at.selectbox(key="user_pick")
    events = read_audit(audit_path(db))
    assert [e["event"] for e in events] == ["login_failed", "login", "person_viewed"]
    assert events[0]["account"] == "ana" and "password" not in json.dumps(events)
    assert events[2]["account"] == "ana" and events[2]["user_id"]


def test_a_marketer_account_has_no_user_page(db: Path) -> None:
    at = log_in(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run(), "mo", PASSWORD)
    assert_clean(at)
    assert any("role **marketer**" in c.value for c in at.sidebar.caption)
    with pytest.raises(Exception, match="(?i)could not find a navigation page"):
        at.switch_page("pages/user.py")


def test_after_five_failed_logins_even_the_right_password_waits(db: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    for _ in range(MAX_FAILURES):
        log_in(at, "ana", "wrong password")
    log_in(at, "ana", PASSWORD)
    assert any("try again in a minute" in e.value for e in at.error)
    assert not at.metric
    assert [e["event"] for e in read_audit(audit_path(db))][-1] == "login_limited"
    other = log_in(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run(), "mo", PASSWORD)
    assert other.metric  # the limit is per account


def test_removing_the_last_account_returns_to_single_user_mode(db: Path) -> None:
    remove_account(accounts_path(db), "ana")
    remove_account(accounts_path(db), "mo")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert at.metric and any("local single-user mode" in c.value for c in at.sidebar.caption)
