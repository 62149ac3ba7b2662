"""A full score reads, computes with the store file free, then writes: what other processes can do
meanwhile, and what the run does with what they changed (vectors/refresh.py score_store).

Real processes on real files: the compute phase is entered through the run's engine (a ChunkRunner
that does its work first, then scores the chunks as the local engine does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from interestgeo.store import Store, writer_active
from interestgeo.text import TextEncoder
from interestgeo.vectors import score_store
from interestgeo.vectors.chunks import ChunkScores, ChunkState, local_chunks
from interestgeo.vectors.staging import _remove_orphans
from tests._data.analytics import ingest, write_checkins
from tests._data.vectors import assert_same, snapshot
from tests.vectors.test_refresh import config_for, recency

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120  # seconds a helper process may take


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("checkins")
    first, second = folder / "april.csv.gz", folder / "may.csv.gz"
    write_checkins(first, [f"u{i}" for i in range(12)], "2012-04-02", days=28, per_user=25, seed=1)
    write_checkins(second, ["n1", "n2", "n3"], "2012-04-20", days=20, per_user=15, seed=2)
    return first, second


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=WAIT, env={**os.environ, "INTERESTGEO_CONFIG": ""})


def _counts(store: Store) -> dict[str, tuple[int, int]]:
    """{dataset name: (events, events with a vector)}."""
    rows = store.con.execute(
        """SELECT d.name, count(e.event_id), count(v.event_id) FROM datasets d JOIN events e USING (dataset_id)
           LEFT JOIN event_vectors v USING (event_id) GROUP BY 1 ORDER BY 1""").fetchall()
    return {str(name): (int(n), int(scored)) for name, n, scored in rows}


def _then_local(before: callable) -> callable:  # type: ignore[valid-type]
    """An engine that runs `before(state)` in the compute phase, then scores the chunks here."""
    def run(state: ChunkState, chunks: Iterable[pd.DataFrame]) -> Iterator[ChunkScores]:
        before(state)
        yield from local_chunks(state, chunks)

    return run


def test_while_a_full_score_computes_a_load_writes_and_a_reader_reads_and_the_new_events_wait_for_an_update(
    tmp_path: Path, files: tuple[Path, Path], encoder: TextEncoder
) -> None:
    config = config_for(tmp_path / "s.duckdb")
    db = config.store.path
    seen: dict[str, object] = {}

    def meanwhile(state: ChunkState) -> None:
        seen["writer"] = writer_active(db)  # the scoring process holds nothing now
        load = subprocess.run([sys.executable, "-m", "interestgeo.cli", "ingest", str(files[1]), "--db", str(db),
                               "--dataset", "may"], cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
                              env={**os.environ, "INTERESTGEO_CONFIG": ""})
        seen["load"] = (load.returncode, load.stderr)
        with Store.open(db, read_only=True, config=config, wait_s=2) as reader:  # the dashboard's kind of store
            seen["datasets"] = sorted(reader.datasets()["name"])

    with Store.open(db, config=config) as store:
        ingest(store, files[0], config, "april")
        report = score_store(store, config, source=recency(store, encoder), encoder=encoder, runner=_then_local(meanwhile))
        assert seen == {"writer": False, "load": (0, ""), "datasets": ["april", "may"]}
        counts = _counts(store)
        assert report.events == counts["april"][0] == counts["april"][1]
        assert counts["may"][1] == 0  # loaded after the snapshot: not scored by this run
        update = score_store(store, config, source=recency(store, encoder), encoder=encoder, update=True)
        assert update.events == counts["may"][0] and _counts(store)["may"] == (counts["may"][0],) * 2


DELETE = """
import sys
from interestgeo.config import Config, StoreConfig
from interestgeo.store import Store
db = sys.argv[1]
with Store.open(db, config=Config(store=StoreConfig(path=db))) as store:
    assert store.delete_dataset(store.require_dataset_id(sys.argv[2]))
"""


def test_a_dataset_deleted_while_a_full_score_computes_gets_no_vectors_back(
    tmp_path: Path, files: tuple[Path, Path], encoder: TextEncoder
) -> None:
    config = config_for(tmp_path / "s.duckdb")
    db = config.store.path

    def meanwhile(state: ChunkState) -> None:
        done = _python(DELETE, str(db), "may")
        assert done.returncode == 0, done.stderr

    with Store.open(db, config=config) as store:
        ingest(store, files[0], config, "april")
        ingest(store, files[1], config, "may")
        may = store.dataset_id("may")
        score_store(store, config, source=recency(store, encoder), encoder=encoder, runner=_then_local(meanwhile))
        counts = _counts(store)
        assert list(counts) == ["april"] and counts["april"][0] == counts["april"][1]
        for table in ("event_vectors", "user_window_vectors", "cell_window_vectors"):
            assert store.con.execute(f"SELECT count(*) FROM {table} WHERE dataset_id = ?", [may]).fetchall() == [(0,)]
        assert may not in set(store.calibrations()["dataset_id"])


SCORE_AND_HANG = """
import sys, time
from interestgeo.config import Config, PrivacyConfig
from interestgeo.store import Store
from interestgeo.text import encoder_for
from interestgeo.vectors import score_store
from tests.vectors.test_refresh import config_for, recency
config = config_for(sys.argv[1])
encoder = encoder_for(config.text)

def hang(state, chunks):
    print("computing", flush=True)
    time.sleep(600)
    yield from ()

with Store.open(config.store.path, config=config) as store:
    score_store(store, config, source=recency(store, encoder), encoder=encoder, runner=hang)
"""


def test_a_full_score_killed_while_it_computes_leaves_the_store_as_it_was_and_free_and_the_next_run_clears_its_folder(
    tmp_path: Path, files: tuple[Path, Path], encoder: TextEncoder
) -> None:
    config = config_for(tmp_path / "s.duckdb")
    db = config.store.path
    with Store.open(db, config=config) as store:
        ingest(store, files[0], config, "april")
        score_store(store, config, source=recency(store, encoder), encoder=encoder)
        ingest(store, files[1], config, "may")  # a second dataset the killed run would have scored
        before = snapshot(store)
    proc = subprocess.Popen([sys.executable, "-c", SCORE_AND_HANG, str(db)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "INTERESTGEO_CONFIG": ""})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "computing\n", proc.communicate(timeout=WAIT)
    assert not writer_active(db)
    _remove_orphans(tmp_path)  # what another run starting now does: a live run's folder stays
    assert len(list(tmp_path.glob(".interestgeo-score-*"))) == 1
    proc.send_signal(signal.SIGKILL)
    proc.wait(WAIT)
    left = list(tmp_path.glob(".interestgeo-score-*"))  # its events snapshot and staging folder
    assert len(left) == 1 and (left[0] / "events.parquet").exists()
    with Store.open(db, config=config, wait_s=2) as store:  # nobody holds the file
        assert_same(before, snapshot(store))
        assert _counts(store)["may"][1] == 0
        score_store(store, config, source=recency(store, encoder), encoder=encoder)  # the next run clears it
    assert not list(tmp_path.glob(".interestgeo-score-*"))
