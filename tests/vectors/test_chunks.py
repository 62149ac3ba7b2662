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
    # same chunks in this process, with the workers staging their own results (the default
    # engine's) and handing them back to be staged here; then a state no worker can read: the run
    # fails, it does not hang
    import dataclasses
    import pickle
    from concurrent.futures.process import BrokenProcessPool

    from interestgeo.vectors import staging

    db, config = trained_store(tmp_path)
    monkeypatch.setattr(chunks, "_CHUNK_EVENTS", 200)
    one, two = (dataclasses.replace(config, analytics=dataclasses.replace(config.analytics, score_workers=w))
                for w in (1, 2))
    written_here: list[str] = []  # staged files this process wrote (a spawned worker's module is its own)
    write = staging._write_staged
    monkeypatch.setattr(staging, "_write_staged", lambda table, path: written_here.append(str(path)) or write(table, path))
    with Store.open(db, config=config) as store:
        score_store(store, one, source=load_source(store, one, encoder=encoder), encoder=encoder)
        here = snapshot(store)
        assert sum("event_vectors-" in p for p in written_here) >= 2  # several chunks, each staged here
        written_here.clear()
        score_store(store, two, source=load_source(store, two, encoder=encoder), encoder=encoder)
        assert_same(here, snapshot(store))
        assert written_here and not any("event_vectors-" in p for p in written_here)  # the workers staged them
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


def test_a_worker_ends_when_the_run_that_started_it_is_killed(tmp_path: Path) -> None:
    # a run's process is killed (SIGKILL: no cleanup runs); its spawned worker does not linger
    import os
    import signal
    import subprocess
    import sys
    import time

    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    pid_file = tmp_path / "worker.pid"
    script = f"""
import multiprocessing, os, time
from interestgeo.vectors.chunks import end_with_parent

def worker(path):
    assert end_with_parent()
    open(path, "w").write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    multiprocessing.get_context("spawn").Process(target=worker, args=({str(pid_file)!r},)).start()
    time.sleep(120)
"""
    (tmp_path / "run.py").write_text(script, encoding="utf-8")
    run = subprocess.Popen([sys.executable, str(tmp_path / "run.py")], cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and run.poll() is None, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        os.kill(worker, 0)  # alive while its parent is
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return
            # a dead worker is reaped by init; one still waiting would stay
            if Path(f"/proc/{worker}/stat").exists() and Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z":
                return
            time.sleep(0.1)
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the worker outlived its killed parent")
    finally:
        if run.poll() is None:
            run.kill()
