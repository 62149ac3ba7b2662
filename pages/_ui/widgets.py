"""The frame of every page: its start (title, empty states), its error guard, downloads, deep links.

A page is `run_page(main)` with `start_page(...)` first in `main`: an unexpected error becomes
one sentence (the traceback goes to the server log), and a first request to a page's address
goes through app.py's frame first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from interestgeo.config import Config
from pages._ui.cached import is_scored
from pages._ui.filters import current_filters
from pages._ui.format import md
from pages._ui.session import SCORE_HINT, TRAINING, TRAINING_NOTE, app_config, log, require_database
from pages._ui.state import FilterState


def csv_download(frame: pd.DataFrame | Callable[[], pd.DataFrame], name: str, *, label: str = "Download CSV",
                 key: str | None = None) -> None:
    """A download button for the data behind a table or chart (a frame, or a function that builds it).

    The CSV is written when the button is clicked (Streamlit's deferred download), not on every
    rerun: writing them all cost every filter change tens of milliseconds for files rarely fetched.
    """

    def to_csv() -> bytes:
        return (frame() if callable(frame) else frame).to_csv(index=False).encode("utf-8")

    st.download_button(label, to_csv, file_name=f"{name}.csv", mime="text/csv", key=key or f"csv-{name}",
                       icon=":material/download:")


def start_page(title: str, *, needs_scores: str | None = None) -> tuple[Config, FilterState] | None:
    """The page title and its inputs, or None after an empty state told the user what to do.

    `needs_scores` is the sentence that explains why the page needs interest vectors; without
    it the page also runs on events that are not scored yet.
    """
    config = app_config()
    st.title(title)
    require_database(config)
    filters = current_filters()
    if TRAINING.locked():
        st.info(f"Not now: {TRAINING_NOTE}.", icon=":material/hourglass_top:")
        return None
    if filters is None:
        from interestgeo.store.file_access import BUSY_READ, writer_active

        if writer_active(config.store.path):  # no filters because a writer holds the file, not for want of data
            st.info(f"Not now: {BUSY_READ}.", icon=":material/hourglass_top:")
            return None
        st.info("No events yet: run `make run` (the NYC demo) or load a CSV on the **Upload** page.")
        return None
    if needs_scores and not is_scored(config):
        st.info(f"{needs_scores}: {SCORE_HINT}.")
        return None
    st.caption(filters.describe())
    return config, filters


def run_guarded(page: Callable[[], None]) -> None:
    """Run a page; an unexpected error becomes one message (the traceback goes to the server log)."""
    from interestgeo.store import StoreBusy

    try:
        page()
    except StoreBusy as exc:  # a writer is committing: not an error, and never DuckDB's lock message
        log.info("page waited for a writer: %s", exc)
        st.info(f"Not now: {md(str(exc))}.", icon=":material/hourglass_top:")
    except Exception as exc:
        log.exception("page failed")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        st.error(f"This page could not be built: {md(first)}. Try other filters or reload; "
                 "the server log has the details.")


def guarded_fragment(fn: Callable[..., None]) -> Callable[..., None]:
    """`st.fragment` with run_guarded's one-sentence error: a fragment reruns alone, outside the
    page's guard, so an error there would otherwise reach the person as Streamlit's own box."""

    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> None:
        run_guarded(lambda: fn(*args, **kwargs))

    return st.fragment(body)


def run_page(page: Callable[[], None]) -> None:
    """A page's entry point: `run_guarded`, after making sure the app's frame ran first."""
    if NAVIGATION_KEY not in st.session_state:
        # app.py did not run first: Streamlit's legacy `pages/` mode served this file directly (a
        # deep link as the very first request after the server started). Start from the app, whose
        # st.navigation switches Streamlit to its page list for good, and have it come back here
        # with the link's filters (`resume_deep_link`): a shared link must open what it shows.
        params = {k: st.query_params.get_all(k) for k in st.query_params}
        st.session_state["_deep_link"] = (f"pages/{Path(page.__code__.co_filename).name}", params)
        st.switch_page("app.py", query_params=params)
    run_guarded(page)


# Set by app.py once its page list exists. Not `_filters`: the filter bar can fail on a bad link
# and leave that unset, and run_page then took the page for a deep link and switched to app.py,
# which navigation mode does not know (a StreamlitPageNotFoundError traceback).
NAVIGATION_KEY = "_navigation"


def resume_deep_link() -> None:
    """In app.py once its page list exists: go on to the page a first request linked to (see run_page)."""
    st.session_state[NAVIGATION_KEY] = True
    link = st.session_state.pop("_deep_link", None)
    if link is not None:
        try:
            st.switch_page(link[0], query_params=link[1])
        except StreamlitPageNotFoundError:  # a page this viewer's list leaves out (User, for a marketer)
            log.info("deep link to %s is not in this viewer's pages", link[0])
