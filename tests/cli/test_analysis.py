"""cli/analysis.py: `score`, `query` and `drift` on a tiny store (12 users, 300 check-ins), and `forecast` on a
recency-scored one: JSON, text, and bad input as one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interestgeo.cli import main
from interestgeo.config import Config
from interestgeo.store import Store
from tests._data.analytics import ingest, write_checkins
from tests._data.forecast import recency_store


@pytest.fixture(scope="module")
def april(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("checkins") / "april.csv.gz"
    write_checkins(path, [f"u{i}" for i in range(12)], "2012-04-02", days=28, per_user=25, seed=1)
    return path


def test_cli_scores_queries_and_reports_drift(tmp_path: Path, april: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.duckdb"
    config = Config().with_db(db)  # k = 10 people (the default, as the CLI reads it)
    with Store.open(db, config=config) as store:
        ingest(store, april, config, "april")
    assert main(["score", "--db", str(db), "--source", "recency", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["events"] == 300 and scored["mode"] == "full"

    query_args = ["query", "jazz club", "--db", str(db), "--resolution", "9", "--hours", "0-23"]
    assert main([*query_args, "--json"]) == 0
    query = json.loads(capsys.readouterr().out)
    # the k threshold at work: one cell has 10 people, five have fewer; every hour of the week has fewer
    assert [cell["users"] for cell in query["cells"]] == [10] and query["hidden_cells"] == 5
    assert query["time_profile"] == [] and query["hidden_times"] > 0
    assert main(query_args) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == "where people are into 'jazz club' (H3 resolution 9; 5 cells hidden: fewer than 10 users)"
    assert text[2].split()[:2] == ["1", query["cells"][0]["cell"]]

    assert main(["drift", "--db", str(db), "--user", "u1", "--json"]) == 0
    drift = json.loads(capsys.readouterr().out)
    assert drift["subject"] == "user" and len(drift["timeline"]) == 4 and drift["hidden_windows"] == 0
    assert main(["drift", "--db", str(db), "--json"]) == 0
    region = json.loads(capsys.readouterr().out)
    assert region["subject"] == "region" and len(region["timeline"]) == 4
    assert main(["drift", "--db", str(db), "--user", "u1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("interest drift of user 'u1' per week (4 windows, 0 hidden") and "change points: " in text

    assert main(["query", "jazz", "--db", str(tmp_path / "empty.duckdb")]) == 2
    assert "run `interestgeo score`" in capsys.readouterr().err


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def forecast_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return recency_store(tmp_path_factory.mktemp("forecast"))


def test_cli_forecast_json_and_text(capsys: pytest.CaptureFixture[str], forecast_db: tuple[Path, Path]) -> None:
    db, toml = forecast_db
    code, out, _ = _run(capsys, "forecast", "--db", str(db), "--config", str(toml), "--json", "--horizon", "2")
    assert code == 0
    payload = json.loads(out)
    assert set(payload["backtest"]) >= {"model", "persistence", "moving_average"}
    labels = {r["region"] for r in payload["forecast"]["regions"]}
    assert {"everywhere", "Manhattan"} <= labels
    code, out, _ = _run(capsys, "forecast", "--db", str(db), "--config", str(toml), "--region", "Manhattan",
                        "--window", "day")
    assert code == 0 and "Manhattan [selection" in out and "backtest" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--horizon", "0"], "horizon must be 1..52"),
        (["--dataset", "nope"], "no dataset named 'nope'"),
        (["--region", "not-a-cell"], "not an H3 cell or a GeoJSON file"),
        (["--window", "month"], "invalid choice"),
    ],
)
def test_cli_forecast_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], forecast_db: tuple[Path, Path], args: list[str], message: str
) -> None:
    db, toml = forecast_db
    if args[0] == "--window":
        with pytest.raises(SystemExit) as exit_info:
            main(["forecast", "--db", str(db), *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
        return
    code, out, err = _run(capsys, "forecast", "--db", str(db), "--config", str(toml), *args)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_cli_forecast_before_scoring_says_what_to_run(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      demo_sample_csv: Path) -> None:
    db = tmp_path / "unscored.duckdb"
    assert _run(capsys, "ingest", str(demo_sample_csv), "--db", str(db))[0] == 0
    code, _, err = _run(capsys, "forecast", "--db", str(db))
    assert code == 2 and "interestgeo score" in err
