"""Privacy defaults of the dashboard: a broken config or secrets file refuses to start (one line,
never a fallback to the analyst role), and with no role set the role follows where the server listens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from tests._data.app import APP, TIMEOUT
from tests._data.privacy import recency_database, use_database


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scored database and no `[app] role`: the config file's path."""
    use_database(recency_database(tmp_path_factory), tmp_path, monkeypatch, role=None)
    return tmp_path / "interestgeo.toml"


@pytest.fixture
def option() -> Iterator[object]:
    """Set Streamlit config options for one test; each is restored afterwards (and secrets read
    from a file set here are forgotten: Streamlit keeps them for the process)."""
    saved: dict[str, object] = {}

    def set_option(key: str, value: object) -> None:
        saved.setdefault(key, streamlit_config.get_option(key))
        streamlit_config.set_option(key, value)

    yield set_option
    for key, value in saved.items():
        streamlit_config.set_option(key, value)
    st.secrets._reset()


def run(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if page is not None:
        at.switch_page(page).run()
    return at


def user_page(at: AppTest) -> AppTest | None:
    """The User page after the app ran, or None when the viewer's page list has none (a marketer)."""
    try:
        return at.switch_page("pages/user.py").run()
    except ValueError:  # AppTest: "Could not find a navigation page"
        return None


def assert_refused(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] and all("cannot start" in e.value for e in at.error)
    assert len(at.error) == 1
    assert not at.title and not at.metric and not at.sidebar.multiselect  # nothing else: no page, no filters


@pytest.mark.parametrize("text", ['[app\nrole = "marketer"\n', '[app]\nrol = "marketer"\n', '[privacy]\nk_min_users = "ten"\nx'])
def test_a_broken_config_file_refuses_to_start_in_one_line(env: Path, text: str) -> None:
    env.write_text(text, encoding="utf-8")
    assert_refused(run())


def test_a_broken_secrets_file_refuses_to_start_and_never_falls_back_to_analyst(env: Path, tmp_path: Path,
                                                                                  option: object) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('role = "marketer\n', encoding="utf-8")  # unterminated string
    option("secrets.files", [str(secrets)])  # type: ignore[operator]
    assert_refused(run())
    secrets.write_text('role = "marketer"\n', encoding="utf-8")
    at = run()
    assert not at.error and at.metric and user_page(at) is None


def test_with_no_role_set_a_server_beyond_localhost_gets_the_marketer_view(env: Path, option: object) -> None:
    option("server.address", "0.0.0.0")  # type: ignore[operator]
    at = run()
    assert at.metric and user_page(at) is None
    assert any("Role: **marketer**" in c.value for c in at.sidebar.caption)
    option("server.address", "localhost")  # type: ignore[operator]
    page = user_page(run())
    assert page is not None and page.selectbox(key="user_pick")
