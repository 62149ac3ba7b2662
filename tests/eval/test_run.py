"""The evaluation loop on a tiny split (every scorer, both tasks, the checks on scorers), its
table and JSON, and the `evaluate` command on a small ingested store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from interestgeo.cli import main

from interestgeo.cli.render import results_json, results_table
from interestgeo.eval.run import evaluate_scorers
from interestgeo.metrics import METRICS
from interestgeo.split import make_split
from tests._data.eval import random_events


class _Oracle:
    """Scores the true target highest (venue and category): every metric must be 1."""

    name = "oracle"

    def score(self, split, samples):
        venues = np.zeros((len(samples), len(split.venues)), dtype=np.float32)
        venues[np.arange(len(samples)), samples.venue] = 1.0
        categories = np.zeros((len(samples), len(split.categories)), dtype=np.float32)
        categories[np.arange(len(samples)), samples.category] = 1.0
        return venues, categories


class _Constant:
    """No information: every candidate tied; no category scores (derived by the loop)."""

    name = "constant"

    def score(self, split, samples):
        return np.zeros((len(samples), len(split.venues)), dtype=np.float32), None


def test_evaluate_scorers_reports_every_scorer_for_both_tasks():
    split = make_split(random_events(seed=0))
    results = evaluate_scorers(split, [_Oracle(), _Constant()], part="val")
    assert set(results) == {"next_venue", "next_category"}
    assert all(v == 1.0 for v in results["next_venue"]["oracle"].values())
    assert all(v == 1.0 for v in results["next_category"]["oracle"].values())
    # All venues tied -> every target ranks last among the V venues.
    assert results["next_venue"]["constant"]["mrr"] == pytest.approx(1 / len(split.venues))
    # Derived category scores: equal venue probabilities summed, so a category's score is its
    # number of venues and the target ranks behind every category with at least as many.
    venues_per_category = np.bincount(split.venues["category_idx"], minlength=len(split.categories))
    target_count = venues_per_category[split.val.category]
    ranks = (venues_per_category[None, :] >= target_count[:, None]).sum(axis=1)
    assert results["next_category"]["constant"]["mrr"] == pytest.approx(np.mean(1 / ranks))


def test_wrong_score_shape_names_the_scorer():
    class Bad:
        name = "bad"

        def score(self, split, samples):
            return np.zeros((len(samples), 2), dtype=np.float32), None

    with pytest.raises(ValueError, match="bad"):
        evaluate_scorers(make_split(random_events(seed=0)), [Bad()])


def test_two_scorers_with_one_name_are_an_error():
    with pytest.raises(ValueError, match="constant"):
        evaluate_scorers(make_split(random_events(seed=0)), [_Constant(), _Constant()])


def test_table_and_json_show_every_scorer():
    split = make_split(random_events(seed=0))
    results = evaluate_scorers(split, [_Oracle(), _Constant()])
    table = results_table(results)
    assert "oracle" in table and "constant" in table and "next_category" in table
    parsed = json.loads(results_json(results))
    assert parsed["next_venue"]["oracle"]["acc@1"] == 1.0
    assert set(parsed["next_category"]["constant"]) == set(METRICS)


def _write_checkins_csv(path, events) -> None:
    """The demo file's columns, so the CLI's own ingest maps it like the demo."""
    pd.DataFrame(
        {
            "user_id": events["user_id"],
            "venue_id": events["item_id"],
            "venue_name": "Place " + events["item_id"],
            "venue_category": events["category"],
            "category_path": "Test > " + events["category"],
            "latitude": events["lat"],
            "longitude": events["lon"],
            "utc_time": events["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tz_offset_min": -240,
        }
    ).to_csv(path, index=False)


def test_cli_evaluate_prints_baselines_and_says_the_model_is_untrained(tmp_path, capsys):
    db = str(tmp_path / "eval.duckdb")
    csv = tmp_path / "checkins.csv"
    _write_checkins_csv(csv, random_events(seed=7))
    assert main(["ingest", str(csv), "--db", db]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--db", db, "--json"]) == 0
    first = capsys.readouterr()
    results = json.loads(first.out)
    assert set(results["next_venue"]) == {"popularity", "user_most_frequent", "markov", "nearest_popular", "blend"}
    assert "not trained" in first.err
    assert main(["evaluate", "--db", db, "--json"]) == 0
    assert capsys.readouterr().out == first.out  # same data, same numbers
    assert main(["evaluate", "--db", db]) == 0
    table = capsys.readouterr().out
    assert "next_category" in table and "blend weights tuned on validation" in table


def test_cli_evaluate_on_an_empty_store_is_one_clear_line(tmp_path, capsys):
    assert main(["evaluate", "--db", str(tmp_path / "empty.duckdb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no events" in err and "Traceback" not in err
