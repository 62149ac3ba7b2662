"""Fixtures for the browser tests: chromium (or a loud skip / a CI failure), the server, a page.

The plumbing lives in browser_helpers.py, shared with benchmarks/bench_pages.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests._data.app import shared_database
from tests.browser.browser_helpers import CHROMIUM_ARGS, VIEWPORT, Server, chromium_or_skip, running_server


@pytest.fixture(scope="session")
def chromium() -> Path:
    return chromium_or_skip()


@pytest.fixture(scope="session")
def server(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db, config = shared_database(tmp_path_factory, scored=True)
    # The server writes (uploads): give it its own copy.
    folder = tmp_path_factory.mktemp("browser")
    db = Path(shutil.copy(db, folder / "browser.duckdb"))
    log = folder / "streamlit.log"
    with running_server(db, config, log) as url:
        yield Server(url, db, config, log)


@pytest.fixture(scope="session")
def browser(chromium: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Problems:
    """Console errors and uncaught page errors seen while a test drove the page."""

    items: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: object, server: Server) -> Iterator[object]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    tab = context.new_page()
    problems = Problems()
    tab.on("console", lambda m: problems.items.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.items.append(f"pageerror: {e}"))
    tab.problems = problems
    try:
        yield tab
    finally:
        context.close()
    assert not problems.items, "browser reported errors:\n" + "\n".join(problems.items)


