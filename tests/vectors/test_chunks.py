"""Scoring in chunks of whole users: the chunk size, a pickled detached state and worker processes
never change the stored result (the Ray engine against the local one: tests/test_ray_engine.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from interestgeo.store import Store
from interestgeo.text import TextEncoder
from interestgeo.vectors import chunks, load_source, score_store
from tests._data.analytics import trained_store
from tests._data.vectors import assert_same, snapshot


def test_a_chunked_run_equals_one_chunk_and_a_pickled_detached_state_scores_the_same(
    tmp_path: Path, encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # peak memory is set by the chunk size, never the answer: many small chunks (cell x window
    # sums merged across them) == one chunk == chunks scored from a state that went through pickle
    # (what a worker process or a Ray actor receives: no store, no encoder inside)
    import pickle

    db, config = trained_store(tmp_path)
    with Store.open(db, config=config) as store:
        monkeypatch.setattr(chunks, "_CHUNK_EVENTS", 10**9)
        score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
        whole = snapshot(store)
        monkeypatch.setattr(chunks, "_CHUNK_EVENTS", 37)
        score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
        assert_same(whole, snapshot(store))

        states: list[chunks.ChunkState] = []

        def pickled(state: chunks.ChunkState, parts):  # type: ignore[no-untyped-def]
            copy = pickle.loads(pickle.dumps(state))
            states.append(copy)
            return chunks.local_chunks(copy, parts)

        score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder, runner=pickled)
        assert_same(whole, snapshot(store))
    assert states[0].source.model.scorer.store is None


def test_worker_processes_score_what_one_process_scores_and_a_dead_worker_fails_the_run(
    tmp_path: Path, encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the local engine's process pool (spawned workers reading the state from a file) against the
    # same chunks in this process; then a state no worker can read: the run fails, it does not hang
    import pickle
    from concurrent.futures.process import BrokenProcessPool

    db, config = trained_store(tmp_path)
    monkeypatch.setattr(chunks, "_CHUNK_EVENTS", 200)
    with Store.open(db, config=config) as store:
        score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
        here = snapshot(store)
        pool = chunks.process_chunks(2)
        score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder, runner=pool)
        assert_same(here, snapshot(store))
        monkeypatch.setattr(pickle, "dumps", lambda obj, protocol=None: b"not a pickle")
        with pytest.raises(BrokenProcessPool):
            score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder, runner=pool)
        assert_same(here, snapshot(store))  # nothing of the failed run was written


def test_scoring_processes_keep_large_freed_blocks_in_their_heap() -> None:
    # glibc takes the two settings (on another C library the call is a no-op returning False)
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: keep_large_allocations is a no-op here")
    assert chunks.keep_large_allocations() is True
