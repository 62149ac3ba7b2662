"""Ctrl-C part way through a command (interestgeo/cli/__init__.py `main`): one line that says what the
command left behind, exit code 130, and what it says holds: a load keeps nothing of the unfinished file,
a score run leaves the stored vectors as they were, a training run registers no checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pytest

from interestgeo.cli import main, model
from interestgeo.cli.progress import Bars
from interestgeo.store import Store
from interestgeo.store.ingest_session import IngestSession
from tests._data.analytics import write_checkins
from tests._data.vectors import assert_same, snapshot


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def april(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("checkins") / "april.csv.gz"
    write_checkins(path, [f"u{i}" for i in range(12)], "2012-04-02", days=28, per_user=25, seed=1)
    return path


# The forms Ctrl-C takes: a KeyboardInterrupt; while a query runs, what DuckDB 2.0's client raises
# (a RuntimeError, seen with a real SIGINT: tests/store/test_concurrency.py), or its InterruptException.
INTERRUPTS = [KeyboardInterrupt, lambda: RuntimeError("Query interrupted"), duckdb.InterruptException]


@pytest.mark.parametrize("interrupt", INTERRUPTS, ids=["KeyboardInterrupt", "RuntimeError", "InterruptException"])
def test_an_interrupted_load_keeps_nothing_of_the_unfinished_file(
    capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fixtures_dir: Path, interrupt: Callable[[], BaseException]
) -> None:
    """Here Ctrl-C lands after the second file's events, rejects, aggregates and datasets row are all
    written, before its commit: none of them may stay, and the first file stays whole."""
    db = tmp_path / "ctrl-c.duckdb"
    insert_dataset, names = IngestSession.insert_dataset, []

    def then_interrupted(self: IngestSession, dataset_id: int, **row: object) -> None:
        insert_dataset(self, dataset_id, **row)
        names.append(row["name"])
        if len(names) == 2:
            raise interrupt()

    first, second = fixtures_dir / "unicode.csv", fixtures_dir / "bad" / "bad_rows.csv"
    with monkeypatch.context() as patch:
        patch.setattr(IngestSession, "insert_dataset", then_interrupted)
        code, _, err = _run(capsys, "ingest", str(first), str(second), "--db", str(db))
    assert names == ["unicode", "bad_rows"]  # the second file was written in full, then interrupted
    assert code == 130
    assert err == "interestgeo ingest: interrupted; nothing from the unfinished file was kept (files loaded before it are)\n"
    with Store.open(db, read_only=True) as store:
        assert store.datasets()["name"].tolist() == ["unicode"]
        tables = [r[0] for r in store.con.execute(
            "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'dataset_id' AND NOT internal "
            "AND database_name = current_database()").fetchall()]
        assert {"events", "rejects", "cell_windows", "datasets"} <= set(tables)
        left = {t: store.con.execute(f"SELECT count(*) FROM {t} WHERE dataset_id <> 1").fetchone()[0] for t in tables}
        assert left == dict.fromkeys(tables, 0)
        assert len(store.events()) == 5
    # the file was not recorded as loaded: it loads on the next try
    code, _, err = _run(capsys, "ingest", str(second), "--db", str(db))
    assert (code, err) == (0, "")
    with Store.open(db, read_only=True) as store:
        assert store.datasets()["name"].tolist() == ["unicode", "bad_rows"]


def test_an_interrupted_score_leaves_the_stored_vectors_as_they_were(
    capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, april: Path
) -> None:
    """The second run (another half-life: other vectors) is interrupted after it wrote everything
    but before its commit: the first run's vectors, aggregates and run record are what stays."""
    db = tmp_path / "scored.duckdb"
    assert _run(capsys, "ingest", str(april), "--db", str(db))[0] == 0
    assert _run(capsys, "score", "--db", str(db), "--source", "recency", "--json")[0] == 0
    with Store.open(db, read_only=True) as store:
        before, runs = snapshot(store), len(store.score_runs())
    other = tmp_path / "half-life.toml"
    other.write_text("[analytics]\nhistory_half_life_days = 0.5\n", encoding="utf-8")
    record, recorded = Store.record_score_run, []

    def then_interrupted(self: Store, *args: object) -> int:
        recorded.append(record(self, *args))  # the last write of the run's transaction
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Store, "record_score_run", then_interrupted)
        code, out, err = _run(capsys, "score", "--db", str(db), "--config", str(other), "--source", "recency")
    assert recorded and code == 130 and out == ""
    assert err.splitlines()[-1] == ("interestgeo score: interrupted; the stored interest vectors are as they were "
                                    "(a score run stores everything at once at its end)")
    with Store.open(db, read_only=True) as store:
        assert_same(before, snapshot(store))
        assert len(store.score_runs()) == runs
    # the run that was interrupted does make other vectors: the comparison above could fail
    assert _run(capsys, "score", "--db", str(db), "--config", str(other), "--source", "recency")[0] == 0
    with Store.open(db, read_only=True) as store:
        assert not np.allclose(before["vectors"], snapshot(store)["vectors"], atol=1e-3)


class _CtrlCAtTheFirstBatch(Bars):
    """The training's progress bars, with Ctrl-C pressed once the first batch is done."""

    def __call__(self, what: str, done: int, total: int, detail: str) -> None:
        if done >= 1:
            raise KeyboardInterrupt(what)


def test_an_interrupted_training_run_registers_no_checkpoint(
    capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, april: Path
) -> None:
    db = tmp_path / "train.duckdb"
    assert _run(capsys, "ingest", str(april), "--db", str(db))[0] == 0
    folder = tmp_path / "models"
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(f"[model]\nn_embd = 32\nn_layer = 1\nn_head = 2\nmax_len = 32\nbatch_size = 16\n"
                    f"checkpoint_dir = \"{folder}\"\n", encoding="utf-8")
    with Store.open(db, read_only=True) as store:
        checkpoints = len(store.checkpoints())
    with monkeypatch.context() as patch:
        patch.setattr(model, "Bars", _CtrlCAtTheFirstBatch)
        code, out, err = _run(capsys, "train", "--db", str(db), "--config", str(tiny), "--epochs", "1")
    assert code == 130 and "checkpoint #" not in out
    assert err.splitlines()[-1] == ("interestgeo train: interrupted; the unfinished training run registered no "
                                    "checkpoint (ablations finished before it did)")
    with Store.open(db, read_only=True) as store:
        assert len(store.checkpoints()) == checkpoints
    assert not folder.exists() or not any(folder.iterdir())


def test_an_interrupted_command_that_only_reads_just_says_so(capsys, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path, april: Path) -> None:
    db = tmp_path / "read.duckdb"
    assert _run(capsys, "ingest", str(april), "--db", str(db))[0] == 0
    def ctrl_c(self: Store) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Store, "datasets", ctrl_c)
        code, out, err = _run(capsys, "datasets", "--db", str(db))
    assert (code, out, err) == (130, "", "interestgeo datasets: interrupted\n")
