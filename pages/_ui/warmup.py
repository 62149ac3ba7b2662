"""Loading the big cached resources in the background, and dropping every cache after a change.

Both keep the set of databases already warmed (`_WARMING`): a release has to forget it, or the
next page would wait for a load no one started.
"""

from __future__ import annotations

import threading

import streamlit as st

from interestgeo.config import Config
from pages._ui.cached import config_key, interest_model, is_large, is_scored, scored_events, user_scored, venues
from pages._ui.session import db_path, log


def warm_up(config: Config, *, analyst: bool = False) -> None:
    """Load the scored events and then their interest vectors in a background thread, once per
    database and process, so the first page that needs them waits less or not at all.

    The cached loader holds a per-key lock (and the vectors one of their own), so a page asking
    meanwhile waits for this load instead of starting a second one. Errors are left for the
    page's own call to report.

    For analysts, the venues too (the User page's predictions; stored embeddings looked up by
    model id, no language model). Not torch: its import holds the GIL for 1-1.5 s, and done in
    the background it landed on whatever click came next (a Map filter change 0.7-0.8 s instead of
    0.25 s), however it was timed. The region pages do not need it (grouped means are scipy
    sparse products); what does (a new free-text phrase, the User page's explanation, scoring an
    upload) imports it when asked. Nor transformers, the text
    encoder or the model: importing transformers here while a page imported it too was seen to
    hang a page's first render (its lazy modules).
    """
    path, key = db_path(config), config_key(config)
    with _WARMING_LOCK:
        if not config.app.warm_up or (path, key) in _WARMING or not is_scored(config):
            return
        if is_large(config):
            return  # its pages of everyone read the stored aggregates; the rest load on demand
        _WARMING.add((path, key))

    def load() -> None:
        try:
            scored = scored_events(path, key)
            if scored is not None and scored.reader is None:
                scored.vectors  # noqa: B018 (loads them when they fit: Drift and phrase queries need them)
            if analyst:
                venues(path, key)
        except Exception:  # the page's own call shows the error in words; the log keeps this one
            log.exception("warm-up failed")

    threading.Thread(target=load, name="interestgeo-warm-up", daemon=True).start()


_WARMING: set[tuple[str, str]] = set()
_WARMING_LOCK = threading.Lock()


def release_store() -> None:
    """Drop every cached result (after an upload or training changed the database in this process)."""
    for loader in (scored_events, venues, user_scored, interest_model):
        loader.clear()
    st.cache_data.clear()
    with _WARMING_LOCK:
        _WARMING.clear()
