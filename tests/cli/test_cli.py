"""The `interestgeo` command line (interestgeo/cli/): ingest and demo (exit codes, JSON, no tracebacks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from interestgeo.cli import data, main
from interestgeo.cli.data import DEMO_DATASET, load_demo
from interestgeo.config import Config, load_config
from interestgeo.store import Store


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_json_reports_counts_and_rejects(capsys, tmp_path: Path, fixtures_dir: Path) -> None:
    db = tmp_path / "cli.duckdb"
    code, out, err = _run(capsys, "ingest", str(fixtures_dir / "bad" / "bad_rows.csv"), "--db", str(db), "--json")
    assert (code, err) == (0, "")
    payload = json.loads(out)
    assert (payload["rows_read"], payload["rows_stored"], payload["rows_rejected"], payload["duplicates_skipped"]) == (
        20, 3, 16, 1)
    assert payload["rejects"][0] == {"line": 3, "reason": "empty user_id",
                                     "raw": ",v1,Joe's Coffee,Coffee Shop,40.7359,-73.9911,2012-04-03T18:00:09Z,-240"}
    assert payload["already_loaded"] is False and payload["events_per_s"] > 0
    code, out, _ = _run(capsys, "ingest", str(fixtures_dir / "bad" / "bad_rows.csv"), "--db", str(db), "--json")
    assert code == 0 and json.loads(out)["already_loaded"] is True


def test_ingest_text_summary(capsys, tmp_path: Path, fixtures_dir: Path) -> None:
    code, out, _ = _run(capsys, "ingest", str(fixtures_dir / "bad" / "bad_rows.csv"), "--db", str(tmp_path / "c.duckdb"))
    assert code == 0
    assert "rows read 20, stored 3, rejected 16, duplicates skipped 1" in out
    assert "line 3: empty user_id" in out


def test_ingest_several_files_and_map(capsys, tmp_path: Path, fixtures_dir: Path, demo_sample_csv: Path) -> None:
    db = tmp_path / "m.duckdb"
    code, out, _ = _run(capsys, "ingest", str(demo_sample_csv), str(fixtures_dir / "unicode.csv"), "--db", str(db),
                        "--json")
    assert code == 0
    assert [f["rows_stored"] for f in json.loads(out)["files"]] == [300, 5]
    code, out, _ = _run(capsys, "ingest", str(fixtures_dir / "latin1.csv"), "--db", str(db), "--dataset", "cats",
                        "--map", "text=venue_category", "--json")
    assert code == 0 and json.loads(out)["dataset"] == "cats"
    with Store.open(db, read_only=True) as store:
        cats = store.events([store.dataset_id("cats")])
    assert cats["text"].tolist() == ["Café", "Bakery"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tests/fixtures/unusable/no_location.csv"], "no usable lat/lon column"),
        (["tests/fixtures/unusable/empty.csv"], "the file is empty"),
        (["tests/fixtures/nyc_sample.csv", "--map", "text=nope"], "no column 'nope'"),
        (["tests/fixtures/nyc_sample.csv", "--map", "colour=venue_name"], "unknown field"),
        (["tests/fixtures/missing.csv"], "no such file"),
    ],
)
def test_unusable_input_is_one_line_and_exit_2(capsys, tmp_path: Path, args: list[str], message: str) -> None:
    root = Path(__file__).parents[2]
    args = [str(root / a) if a.startswith("tests/") else a for a in args]
    code, out, err = _run(capsys, "ingest", *args, "--db", str(tmp_path / "x.duckdb"))
    assert code == 2 and out == ""
    assert err.startswith("interestgeo ingest: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_never_shows_a_traceback(tmp_path: Path, fixtures_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "interestgeo.cli", "ingest", str(fixtures_dir / "unusable" / "binary.csv"),
         "--db", str(tmp_path / "s.duckdb")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "interestgeo ingest: binary.csv: not a CSV (binary data)"


def test_the_demo_file_loads_as_the_contract_maps_it(tmp_path: Path) -> None:
    """The packaged file itself (ingest only: no model, no scoring)."""
    config = Config().with_db(tmp_path / "demo.duckdb")
    with Store.open(config.store.path, config=config) as store:
        report = load_demo(store, config)
        assert report is not None and report.rows_read == 113_344
        assert load_demo(store, config) is None  # already there: nothing read
        datasets = store.datasets()
        events = store.events()
    assert datasets["name"].tolist() == [DEMO_DATASET]
    assert len(events) == datasets["rows_stored"].iloc[0]
    assert events["item_id"].notna().all() and events["category"].notna().all()
    assert events["category_path"].notna().mean() > 0.99  # a few venues have no current path
    # text = venue name + ", " + category, or the category alone when the name is empty.
    assert (events["text"] == events["category"]).any()
    composed = [t == f"{t.rsplit(', ', 1)[0]}, {c}" for t, c in zip(events["text"], events["category"], strict=True)]
    assert any(composed)
    assert all(ok or t == c for ok, t, c in zip(composed, events["text"], events["category"], strict=True))


def test_demo_registers_the_shipped_model_scores_once_and_never_trains(
    capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, demo_sample_csv: Path
) -> None:
    """`interestgeo demo`'s steps on the first 300 check-ins of the demo file (the whole file: the slow test)."""
    monkeypatch.setattr(data, "DEMO_FILE", demo_sample_csv)
    db = tmp_path / "demo.duckdb"
    code, out, _ = _run(capsys, "demo", "--db", str(db))
    assert code == 0 and "rows read 300" in out
    assert "registered the pretrained model" in out and "scoring every event" in out
    assert "training" not in out  # make run trains nothing
    code, out, _ = _run(capsys, "demo", "--db", str(db))
    assert code == 0 and "already loaded" in out and "every event already has its interest vector" in out
    assert "training" not in out and "registered" not in out and "scoring" not in out
    with Store.open(db, read_only=True) as store:
        assert store.datasets()["name"].tolist() == [DEMO_DATASET]
        assert len(store.unscored_events()) == 0 and len(store.checkpoints()) == 1


@pytest.mark.slow
def test_demo_on_the_whole_file_scores_every_event_and_reports_its_quality(capsys, tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    code, out, _ = _run(capsys, "demo", "--db", str(db))
    assert code == 0 and "rows read 113,344" in out
    assert "registered the pretrained model" in out and "training" not in out  # make run trains nothing
    assert "than recent history" in out  # the demo's quality figure
    code, out, _ = _run(capsys, "demo", "--db", str(db))
    assert code == 0 and "already loaded" in out and "every event already has its interest vector" in out
    assert "training" not in out and "scoring" not in out
    with Store.open(db, read_only=True) as store:
        assert len(store.unscored_events()) == 0 and len(store.checkpoints()) == 1


def test_a_bug_is_one_line_with_exit_1(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import interestgeo.cli as cli

    def add_broken(subparsers) -> None:
        subparsers.add_parser("broken").set_defaults(handler=lambda args: 1 / 0)

    monkeypatch.setattr(cli, "SUBCOMMANDS", [*cli.SUBCOMMANDS, ("broken", add_broken)])
    monkeypatch.delenv("INTERESTGEO_TRACEBACK", raising=False)
    code, out, err = _run(capsys, "broken")
    assert code == 1 and out == ""
    assert err.startswith("interestgeo broken: internal error (ZeroDivisionError") and err.count("\n") == 1


def test_one_bad_file_does_not_stop_the_others(capsys, tmp_path: Path, fixtures_dir: Path) -> None:
    db = tmp_path / "many.duckdb"
    files = [fixtures_dir / "unicode.csv", fixtures_dir / "unusable" / "empty.csv", fixtures_dir / "latin1.csv"]
    code, out, err = _run(capsys, "ingest", *map(str, files), "--db", str(db), "--json")
    assert code == 2
    entries = json.loads(out)["files"]
    assert [e.get("rows_stored") for e in entries] == [5, None, 2]
    assert entries[1] == {"source": str(files[1]), "error": "empty.csv: the file is empty"}
    assert err == "interestgeo ingest: empty.csv: the file is empty\n"
    with Store.open(db, read_only=True) as store:
        assert store.datasets()["name"].tolist() == ["unicode", "latin1"]


def test_a_developers_config_does_not_reach_the_cli_tests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """tests/conftest.py: the CLI reads an empty config, whatever the working directory holds."""
    (tmp_path / "interestgeo.toml").write_text("[privacy]\nk_min_users = 99\n")
    monkeypatch.chdir(tmp_path)
    assert load_config() == Config()
