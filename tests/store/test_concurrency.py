"""Several processes at once on one store file: loads while the dashboard reads, loads beside loads, kill -9 and Ctrl-C.

Real processes (the CLI run as `python -m interestgeo.cli`, small helper processes that read or write
the way the dashboard and the CLI do) on real files; no mocks. The browser-level check (a real
`streamlit run app.py` server while the CLI loads) is tests/browser/test_browser_concurrency.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from interestgeo.config import Config, StoreConfig
from interestgeo.ingest import ingest_file
from interestgeo.store import file_access
from interestgeo.store import Store
from interestgeo.store import StoreBusy, data_version, writer_active
from tests._data.app import app_env  # noqa: F401 (a fixture: a copy of the test database, events not scored)
from tests._data.concurrency import LOAD_AND_HOLD, LOCK_WORDS

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "nyc_checkins.csv.gz"
CLI = [sys.executable, "-m", "interestgeo.cli"]
WAIT = 120  # seconds any helper process may take before the test gives up on it


def _config(db: Path, **store: float) -> Config:
    return Config(store=StoreConfig(path=db, **store))


def _config_file(folder: Path, **store: float) -> Path:
    path = folder / "interestgeo.toml"
    path.write_text("[store]\n" + "".join(f"{k} = {v}\n" for k, v in store.items()), encoding="utf-8")
    return path


@pytest.fixture
def db(tmp_path: Path, fixtures_dir: Path) -> Path:
    """A store with one small dataset (the NYC sample)."""
    path = tmp_path / "store.duckdb"
    config = _config(path)
    with Store.open(path, config=config) as store:
        ingest_file(store, fixtures_dir / "nyc_sample.csv", config=config, dataset="first")
    return path


def _counts(db: Path) -> tuple[int, int, list[str]]:
    with Store.open(db, read_only=True, config=_config(db)) as store:
        datasets = store.datasets()
        events = store.con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    return int(events), int(datasets["rows_stored"].sum()), sorted(datasets["name"])


def _helper(code: str, *args: str) -> subprocess.Popen[str]:
    """A Python process running `code` (sys.argv holds args); it prints 'ready' once it holds what it holds."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


HOLD_WRITE = """
import sys, time
from interestgeo.config import Config, StoreConfig
from interestgeo.store import Store
db = sys.argv[1]
with Store.open(db, config=Config(store=StoreConfig(path=db))):
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
"""

# Another program's read-only connection, held (not the dashboard's way: it opens one per call).
HOLD_RAW_READ = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""

# The dashboard's way of reading, as fast as it can: one short read-only store per query. Each
# look records what it saw; a half load would show events that no datasets row accounts for.
READ_LOOP = """
import json, sys, time
from interestgeo.config import Config, StoreConfig
from interestgeo.store import Store
from interestgeo.store import StoreBusy
db, out, until = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
config = Config(store=StoreConfig(path=db, read_wait_s=0.2))
seen, busy = [], 0
print("ready", flush=True)
while time.monotonic() < until:
    try:
        with Store.open(db, read_only=True, config=config) as store:
            events = store.con.execute("SELECT count(*) FROM events").fetchall()[0][0]
            stored = store.con.execute("SELECT coalesce(sum(rows_stored), 0) FROM datasets").fetchall()[0][0]
            seen.append([int(events), int(stored)])
    except StoreBusy:
        busy += 1
    time.sleep(0.01)
json.dump({"seen": seen, "busy": busy}, open(out, "w"))
"""


def _ingest(db: Path, csv: Path, name: str, config_file: Path | None = None,
            timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    args = [*CLI, "ingest", str(csv), "--db", str(db), "--dataset", name]
    if config_file is not None:
        args += ["--config", str(config_file)]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "INTERESTGEO_CONFIG": ""})


def _finish(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(WAIT)


def test_a_load_succeeds_while_a_dashboard_like_reader_queries_and_the_reader_never_sees_half_of_it(
        db: Path, tmp_path: Path) -> None:
    before, _, _ = _counts(db)
    out = tmp_path / "seen.json"
    reader = _helper(READ_LOOP, str(db), str(out), "8")
    try:
        done = _ingest(db, DEMO, "arrived")
    finally:
        reader.wait(WAIT)
    assert done.returncode == 0, done.stderr
    after, stored, names = _counts(db)
    assert names == ["arrived", "first"] and after == stored > before
    looks = json.loads(out.read_text())
    # every look saw the store before the load or after it, never in between
    assert looks["seen"] and all(seen in ([before, before], [after, after]) for seen in looks["seen"]), looks
    assert [after, after] in looks["seen"]  # and the reader saw the new data once it was committed


def test_a_reader_holding_the_file_makes_a_load_wait_then_say_so_in_one_plain_line(db: Path, tmp_path: Path) -> None:
    holder = _helper(HOLD_RAW_READ, str(db), "60")
    try:
        done = _ingest(db, DEMO, "blocked", _config_file(tmp_path, write_wait_s=1.0))
    finally:
        _finish(holder)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("interestgeo: waiting for readers of store.duckdb")
    assert lines[-1].startswith("interestgeo ingest: ") and "held by another program" in lines[-1]
    assert not any(word in done.stderr for word in LOCK_WORDS), done.stderr
    assert _counts(db)[2] == ["first"]


def test_a_second_load_waits_for_the_first_and_says_so(db: Path, fixtures_dir: Path) -> None:
    holder = _helper(HOLD_WRITE, str(db), "2")  # a load in progress for two more seconds
    try:
        done = _ingest(db, fixtures_dir / "mixed_language.csv", "second")
    finally:
        holder.wait(WAIT)
    assert done.returncode == 0, done.stderr
    assert "waiting for another write to store.duckdb" in done.stderr
    assert _counts(db)[2] == ["first", "second"]


def test_a_second_load_gives_up_plainly_when_the_first_outlasts_its_wait(db: Path, tmp_path: Path,
                                                                        fixtures_dir: Path) -> None:
    holder = _helper(HOLD_WRITE, str(db), "60")
    try:
        done = _ingest(db, fixtures_dir / "mixed_language.csv", "second", _config_file(tmp_path, write_wait_s=0.5))
    finally:
        _finish(holder)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("interestgeo ingest: another write to ") and "still running after 0 s" in last, last
    assert not any(word in done.stderr for word in LOCK_WORDS), done.stderr


def test_a_reader_during_a_write_gets_one_plain_sentence_after_its_short_wait(db: Path) -> None:
    holder = _helper(HOLD_WRITE, str(db), "60")
    try:
        assert writer_active(db)
        started = time.monotonic()
        with pytest.raises(StoreBusy) as busy:
            Store.open(db, read_only=True, config=_config(db), wait_s=0.3)
        assert 0.3 <= time.monotonic() - started < 5
    finally:
        _finish(holder)
    assert str(busy.value) == file_access.BUSY_READ
    assert not writer_active(db)  # the kernel dropped the killed writer's lock
    assert _counts(db)[2] == ["first"]


def test_the_data_version_holds_still_during_a_write_and_moves_after_its_commit(db: Path,
                                                                                fixtures_dir: Path) -> None:
    config = _config(db)
    before = data_version(db)
    assert data_version(db) == before  # reading does not move it
    with Store.open(db, config=config) as store:
        ingest_file(store, fixtures_dir / "mixed_language.csv", config=config, dataset="second")
        assert data_version(db) == before  # committed, but the writer still holds the file
    after = data_version(db)
    assert after != before
    with Store.open(db, read_only=True, config=config):
        assert data_version(db) == after


def test_in_one_process_a_writer_waits_for_a_reading_thread_and_a_reader_for_the_writer(db: Path) -> None:
    config = _config(db)
    opened = threading.Event()

    def read_for_a_while() -> None:
        with Store.open(db, read_only=True, config=config):
            opened.set()
            time.sleep(0.5)

    reader = threading.Thread(target=read_for_a_while)
    reader.start()
    opened.wait(WAIT)
    started = time.monotonic()
    with Store.open(db, config=config) as writer:  # DuckDB would refuse the mixed modes: it waits instead
        assert time.monotonic() - started >= 0.3
        busy: list[BaseException] = []

        def read_now() -> None:
            try:
                Store.open(db, read_only=True, config=config, wait_s=0.2)
            except StoreBusy as exc:
                busy.append(exc)

        other = threading.Thread(target=read_now)
        other.start()
        other.join(WAIT)
        assert busy
        with Store.open(db, read_only=True, config=config) as nested:  # this thread's own write: no wait
            assert nested.datasets()["name"].tolist() == writer.datasets()["name"].tolist()
    reader.join(WAIT)
    with Store.open(db, read_only=True, config=config), pytest.raises(RuntimeError, match="close the read-only"):
        Store.open(db, config=config)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill -9", "ctrl-c"])
def test_a_load_killed_or_interrupted_keeps_nothing_of_it_and_frees_the_file(
        db: Path, fixtures_dir: Path, sig: signal.Signals) -> None:
    before = _counts(db)
    proc = subprocess.Popen([*CLI, "ingest", str(DEMO), "--db", str(db), "--dataset", "killed"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT
    while not writer_active(db):  # the load has the file
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    time.sleep(0.3)  # into the load (the demo file takes about a second on two cores)
    still_loading = proc.poll() is None
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=WAIT)
    assert still_loading and "rows read" not in out  # stopped before it finished
    if sig == signal.SIGINT:  # Python saw it: one line, the shell's code for Ctrl-C
        assert proc.returncode == 130, err
        assert err == "interestgeo ingest: interrupted; nothing from the unfinished file was kept (files loaded before it are)\n"
    assert not writer_active(db)
    assert _counts(db) == before  # nothing of the killed load
    done = _ingest(db, fixtures_dir / "mixed_language.csv", "after")  # and the next load just runs
    assert done.returncode == 0, done.stderr
    assert _counts(db)[2] == ["after", "first"]


def test_the_dashboard_says_reload_in_a_moment_during_a_write_and_shows_the_new_data_after_it(
        app_env: Path, tmp_path: Path, fixtures_dir: Path) -> None:
    from tests._data.app import assert_clean, open_app

    app_env.write_text(app_env.read_text(encoding="utf-8") + "\n[store]\nread_wait_s = 0.5\n", encoding="utf-8")
    at = open_app()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Datasets"] == "1"
    db = Path(os.environ["INTERESTGEO_DB"])
    proc = subprocess.Popen([sys.executable, "-c", LOAD_AND_HOLD, str(db), str(fixtures_dir / "mixed_language.csv"),
                             "arrived"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        at.run()  # what this session has seen is still there during the write (cached, same data version)
        assert_clean(at)
        assert {m.label: m.value for m in at.metric}["Datasets"] == "1"
        fresh = open_app()  # a new session on a cold cache: one plain sentence, no lock error, no traceback
        from pages import _ui

        _ui.release_store()
        fresh.run()
        assert_clean(fresh)
        notes = [i.value.replace("\\", "") for i in fresh.info]  # markdown-escaped
        assert f"Not now: {file_access.BUSY_READ}." in notes, notes
        shown = " ".join(str(e.value) for e in [*fresh.info, *fresh.markdown, *fresh.caption])
        assert not any(word in shown for word in LOCK_WORDS)
    finally:
        proc.stdin.write("go\n")
        proc.stdin.close()
        proc.wait(WAIT)
    assert proc.returncode == 0
    at.run()  # a reload after the write: the new dataset
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Datasets"] == "2"
