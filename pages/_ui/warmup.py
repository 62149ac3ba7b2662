"""Loading what the next pages need while the server is idle, and dropping every cache after a change.

Why idle only: the first pages of everyone (Overview, Map, the drift of a whole dataset) read the
aggregates stored at score time, so nothing loaded in advance makes them faster, while a load
running beside a page slows it (two shared cores, one GIL): started as soon as the first page's
script ended, the load of every event and vector was seen to make that page draw in 6 s instead
of 3.9 (its charts are drawn in the browser after the script) and the next click take 1.9 s
instead of 0.8. So the warm-up waits until no page has run for `QUIET_S`, and again before each
of its steps.

Both keep the set of databases already warmed (`_WARMING`): a release has to forget it, or the
next page would wait for a load no one started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import streamlit as st

from interestgeo.config import Config
from pages._ui.cached import config_key, interest_model, is_large, is_scored, scored_events, user_scored, venues
from pages._ui.session import db_path, log

# Seconds with no page running before a warm-up step starts: a visitor who clicks on at once is
# not slowed by it (their page loads what it needs itself); one who reads the page meanwhile finds
# the next pages ready. A page's browser-side drawing follows its script by 0.5-1.5 s here.
QUIET_S = 1.5


@contextmanager
def page_running() -> Iterator[None]:
    """Around every script run: the warm-up waits while any runs, and for `QUIET_S` after."""
    global _RUNNING, _LAST_RUN
    with _IDLE:
        _RUNNING += 1
    try:
        yield
    finally:
        with _IDLE:
            _RUNNING -= 1
            _LAST_RUN = time.monotonic()
            _IDLE.notify_all()


def wait_until_idle(quiet_s: float = QUIET_S) -> None:
    """Return once no page has run for `quiet_s` seconds."""
    with _IDLE:
        while True:
            left = _LAST_RUN + quiet_s - time.monotonic()
            if _RUNNING == 0 and left <= 0:
                return
            _IDLE.wait(timeout=None if _RUNNING else left)


def warm_up(config: Config, *, analyst: bool = False) -> None:
    """Once per database and process, in a background thread and only while the server is idle
    (`wait_until_idle`): what the pages after the first need and the stored aggregates do not give.

    * The change-point solver's import (ruptures with scipy.stats, about 1 s): every Drift page
      segments its shares, at any store size.
      Nothing left to do when the launcher started the server (pages/_ui/serve.py imports it).
    * The scored events with their stored topic similarities (0.2-0.3 s for the NYC demo):
      Drift's forecast, the User page's list and any filter beyond datasets read them. Not for a
      store over `app.large_store_events`: its events do not fit in advance.
    * Their interest vectors when they fit in memory (0.5-1.3 s, 170 MB for the demo): Drift or a
      phrase under a filter beyond datasets reads them (left to that view, its first filter change
      took 1.5 s instead of 0.8).
    * For analysts, the venues (the User page's predictions without a trained model; stored
      embeddings looked up by model id, no language model).

    Not torch: its import
    holds the GIL for 1-1.5 s in C, so a click during it waits that long, however idle the server
    looked when it started; a page that needs it (a trained model's predictions, an explanation, an
    upload) imports it. Nor transformers or the text encoder: importing transformers here while a
    page imported it too was seen to hang a page's first render (its lazy modules).

    The cached loaders hold a per-key lock, so a page asking meanwhile waits for this load instead
    of starting a second one. Errors are left for the page's own call to report.
    """
    path, key = db_path(config), config_key(config)
    with _WARMING_LOCK:
        if not config.app.warm_up or (path, key) in _WARMING or not is_scored(config):
            return
        _WARMING.add((path, key))
    steps: list[Callable[[], object]] = [import_change_points]
    if not is_large(config):
        steps += [lambda: scored_events(path, key), lambda: _load_vectors(path, key)]
        if analyst:
            steps.append(lambda: venues(path, key))

    def load() -> None:
        try:
            for step in steps:
                wait_until_idle()
                step()
        except Exception:  # the page's own call shows the error in words; the log keeps this one
            log.exception("warm-up failed")

    threading.Thread(target=load, name="interestgeo-warm-up", daemon=True).start()


def _load_vectors(path: str, key: str) -> None:
    scored = scored_events(path, key)
    if scored is not None and scored.reader is None:  # None: they stay in the store (too many to hold)
        scored.vectors  # noqa: B018 (the load)


def import_change_points() -> None:
    """The change-point solver's import (ruptures with scipy.stats, about 1 s): by the launcher
    before the server listens (pages/_ui/serve.py), else as the warm-up's first idle step."""
    from interestgeo.changepoints import change_points

    change_points(np.zeros((0, 1)), np.zeros(0))  # an empty series: imports its solver, segments nothing


_RUNNING = 0
_LAST_RUN = 0.0  # time.monotonic() when the last page run ended
_IDLE = threading.Condition()
_WARMING: set[tuple[str, str]] = set()
_WARMING_LOCK = threading.Lock()


def release_store() -> None:
    """Drop every cached result (after an upload or training changed the database in this process)."""
    for loader in (scored_events, venues, user_scored, interest_model):
        loader.clear()
    st.cache_data.clear()
    with _WARMING_LOCK:
        _WARMING.clear()
