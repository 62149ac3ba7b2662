"""Privacy in a real browser: with accounts the login form is all a visitor gets, and a marketer's
browser never receives a person's id, on any page it can reach or link to.

The database is pseudonymised at load, so every user id is `p_` + 24 hex digits: a string that
cannot occur by chance, searched for in everything the server sends (the websocket frames) and in
the rendered page. An analyst's visit to the User page shows the same search finds them there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from interestgeo.accounts import accounts_path, add_account
from interestgeo.config import load_config
from interestgeo.ingest import ingest_file
from interestgeo.pseudonym import key_path, load_or_create_key
from interestgeo.store import Store
from interestgeo.text import embed_texts, encoder_for
from interestgeo.vectors import RecencySource, score_store
from tests._data.app import write_sample_csv
from tests.browser.browser_helpers import RENDER_TIMEOUT_MS, VIEWPORT, built_server, go_to, wait_rendered

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
PERSON = re.compile(rb"p_[0-9a-f]{24}")
MARKETER_PAGES = ["Overview", "Map", "Drift", "Upload", "Model"]


@pytest.fixture(scope="module")
def private_server(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server over a pseudonymised, scored database with an analyst and a marketer account."""
    def build(db: Path, config_file: Path) -> None:
        config = load_config(config_file).with_db(db)
        with Store.open(db, config=config) as store:
            ingest_file(store, write_sample_csv(db.parent / "sample.csv", rows=600), config=config,
                        dataset="nyc-sample", pseudonym_key=load_or_create_key(key_path(db)))
            encoder = encoder_for(config.text)
            score_store(store, config, source=RecencySource(lambda t: embed_texts(store, encoder, t, warn=None)),
                        encoder=encoder)
        add_account(accounts_path(db), "ana", "analyst", PASSWORD)
        add_account(accounts_path(db), "mo", "marketer", PASSWORD)

    config_text = '[privacy]\nk_min_users = 2\n\n[app]\nwarm_up = false\n'
    with built_server(tmp_path_factory.mktemp("browser-privacy"), config_text, build) as url:
        yield url


def visit(browser: object, url: str) -> tuple[object, object, list[bytes]]:
    """A fresh browser context on the app, recording every websocket frame the server sends."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    tab = context.new_page()
    frames: list[bytes] = []
    tab.on("websocket", lambda ws: ws.on(
        "framereceived", lambda payload: frames.append(payload if isinstance(payload, bytes) else payload.encode())))
    tab.goto(url)
    tab.get_by_role("button", name="Log in").wait_for(timeout=RENDER_TIMEOUT_MS)
    wait_rendered(tab, started=True)
    return context, tab, frames


def assert_no_page_not_found(tab: object) -> None:
    """No "Page not found" dialog (it would cover the login form and say which pages exist)."""
    tab.wait_for_timeout(500)  # type: ignore[attr-defined]
    assert tab.get_by_role("dialog").count() == 0  # type: ignore[attr-defined]


def log_in(tab: object, name: str, lands_on: str = "Overview") -> None:
    tab.get_by_label("Account", exact=True).fill(name)  # type: ignore[attr-defined]
    tab.get_by_label("Password", exact=True).fill(PASSWORD)  # type: ignore[attr-defined]
    tab.get_by_role("button", name="Log in").click()  # type: ignore[attr-defined]
    tab.wait_for_selector(f'h1:has-text("{lands_on}")', timeout=RENDER_TIMEOUT_MS)  # type: ignore[attr-defined]
    wait_rendered(tab, started=True)


def test_the_login_form_is_all_a_visitor_gets(browser: object, private_server: str) -> None:
    context, tab, frames = visit(browser, private_server)
    try:
        assert tab.locator('[data-testid="stSidebarNavLink"]').count() == 0  # type: ignore[attr-defined]
        assert tab.locator("h1", has_text="Overview").count() == 0  # type: ignore[attr-defined]
        tab.goto(f"{private_server}/user")  # type: ignore[attr-defined]
        tab.get_by_role("button", name="Log in").wait_for(timeout=RENDER_TIMEOUT_MS)  # type: ignore[attr-defined]
        assert_no_page_not_found(tab)
        assert not PERSON.search(b"".join(frames))
    finally:
        context.close()


def test_a_shared_link_opens_its_page_and_filters_after_the_login(browser: object, private_server: str) -> None:
    context, tab, _ = visit(browser, f"{private_server}/drift?hours=6&hours=20")
    try:
        assert_no_page_not_found(tab)
        log_in(tab, "ana", lands_on="Drift")
        caption = tab.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()  # type: ignore[attr-defined]
        assert "06:00–20:59" in caption
    finally:
        context.close()


def test_a_marketers_browser_never_receives_a_persons_id(browser: object, private_server: str) -> None:
    context, tab, frames = visit(browser, private_server)
    try:
        log_in(tab, "mo")
        links = tab.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()  # type: ignore[attr-defined]
        assert "User" not in " ".join(links) and "Map" in " ".join(links)
        for title in MARKETER_PAGES:
            go_to(tab, title)
            assert tab.locator('[data-testid="stException"]').count() == 0, title  # type: ignore[attr-defined]
        tab.goto(f"{private_server}/user")  # type: ignore[attr-defined]  # a new session: log in again
        tab.get_by_role("button", name="Log in").wait_for(timeout=RENDER_TIMEOUT_MS)  # type: ignore[attr-defined]
        assert_no_page_not_found(tab)
        log_in(tab, "mo")  # the User page is not in a marketer's list: the Overview
        assert not PERSON.search(b"".join(frames))
        assert not PERSON.search(tab.content().encode())  # type: ignore[attr-defined]
    finally:
        context.close()
    # the search can fail: an analyst's User page sends the ids
    context, tab, frames = visit(browser, private_server)
    try:
        log_in(tab, "ana")
        go_to(tab, "User")
        assert PERSON.search(b"".join(frames))
    finally:
        context.close()
