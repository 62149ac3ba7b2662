"""Hostile shared links: whatever a URL carries, a page shows no traceback and no error box.

A link is input from anyone: SQL-, HTML-, size- and unicode-shaped values go into every filter
parameter of every page (the table below), and the parsers of the parameters the app reads itself
(`cells`, `poly`) are checked property-based in tests/pages/test_state.py. The case that was a traceback:
`/?cells=99999999999999999999999` (h3 overflowed, the filter bar failed, and `run_page` took the
page for a deep link and switched to `app.py`, which navigation mode does not know).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests._data.app import APP, ROOT, TIMEOUT, assert_clean
from tests._data.privacy import recency_database, use_database


# Every query parameter a page binds or reads.
PARAMS = ("ds", "dates", "cmp", "hours", "days", "area", "topic", "cells", "poly", "map_mode", "map_res",
          "map_window", "q", "count_window", "count_res", "drift_window", "drift_vs")
HOSTILE = {
    "too-big-number": "99999999999999999999999",
    "negative": "-1",
    "sql": "' OR 1=1; DROP TABLE events; --",
    "html": "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "markdown-image": "![x](http://127.0.0.1:1/pixel)",
    "unicode": "\u202e\ufffd🧭\u0301ﾟ",
    "numbers": "nan,inf;1e308,-inf;0,0",
    "bad-date": "2012-13-45",
    "huge": "8a2a1072b59ffff," * 20_000,
    "empty": "",
}
PAGES = ("pages/overview.py", "pages/map.py", "pages/drift.py", "pages/user.py", "pages/upload.py", "pages/model.py")


@pytest.fixture
def scored_env(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_database(recency_database(tmp_path_factory), tmp_path, monkeypatch, role="analyst")


def open_link(page: str, params: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    return at


def test_an_overflowing_cell_in_the_link_is_ignored(scored_env: Path) -> None:
    at = open_link(PAGES[0], {"cells": "99999999999999999999999"})
    assert_clean(at)
    assert at.title[0].value == "Overview"
    assert not any("picked on the map" in c.value for c in at.caption)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_value_in_every_parameter_shows_no_error_on_any_page(scored_env: Path, name: str) -> None:
    params = dict.fromkeys(PARAMS, HOSTILE[name])
    for page in PAGES:
        at = open_link(page, params)
        assert_clean(at)
        assert at.title, page  # the page itself rendered, not only the frame


# Each parameter alone (so no other bad value masks it), on the page that reads it.
PAGE_OF = {"map_mode": "pages/map.py", "map_res": "pages/map.py", "map_window": "pages/map.py", "q": "pages/map.py",
           "count_window": "pages/map.py", "count_res": "pages/map.py", "drift_window": "pages/drift.py",
           "drift_vs": "pages/drift.py"}


@pytest.mark.parametrize("param", PARAMS)
def test_each_parameter_alone_with_the_worst_values_shows_no_error(scored_env: Path, param: str) -> None:
    for name in ("too-big-number", "html", "huge", "unicode"):
        at = open_link(PAGE_OF.get(param, PAGES[0]), {param: HOSTILE[name]})
        assert_clean(at)
        assert at.title, (param, name)


def test_a_hostile_free_text_query_is_scored_as_text(scored_env: Path) -> None:
    """`q` is only read in the query mode: there it reaches the language model, as plain text."""
    for name in ("sql", "html", "huge", "unicode", "markdown-image"):
        at = open_link("pages/map.py", {"map_mode": "Free-text query", "q": HOSTILE[name][:5000]})
        assert_clean(at)
        value = at.text_input(key="q").value
        assert value and HOSTILE[name].startswith(value)  # the box may cut it to its length limit


def test_error_details_stay_in_the_server_log() -> None:
    options = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert options["client"]["showErrorDetails"] == "none"
