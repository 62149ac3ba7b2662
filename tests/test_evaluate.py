"""Ranking metrics against hand-computed ranks (ties counted against the target), and the
evaluation loop on a tiny split."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from eval_data import random_events

from interestgeo.cli import main

from interestgeo.evaluate import (
    METRICS,
    evaluate_scorers,
    format_table,
    rank_metrics,
    results_to_json,
    target_ranks,
    venue_to_category_scores,
)
from interestgeo.split import make_split


def test_ranks_count_higher_scores_and_ties_against_the_target():
    scores = np.array(
        [
            [0.1, 0.5, 0.3, 0.0],  # target 2: one higher -> rank 2
            [0.2, 0.2, 0.2, 0.2],  # target 1: all tied -> rank 4 (last), not 1
            [0.9, 0.1, 0.1, 0.1],  # target 0: highest -> rank 1
            [0.4, 0.4, 0.5, 0.1],  # target 0: one higher, one tie -> rank 3
        ],
        dtype=np.float32,
    )
    targets = np.array([2, 1, 0, 0])
    assert target_ranks(scores, targets).tolist() == [2, 4, 1, 3]


def test_metrics_match_hand_computed_values():
    # ranks 2, 4, 1, 3 as above
    scores = np.array([[0.1, 0.5, 0.3, 0.0], [0.2, 0.2, 0.2, 0.2], [0.9, 0.1, 0.1, 0.1], [0.4, 0.4, 0.5, 0.1]])
    metrics = rank_metrics(scores, np.array([2, 1, 0, 0]))
    assert metrics["acc@1"] == pytest.approx(1 / 4)
    assert metrics["acc@5"] == pytest.approx(1.0)
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 4 + 1 + 1 / 3) / 4)
    ndcg = (1 / math.log2(3) + 1 / math.log2(5) + 1 + 1 / math.log2(4)) / 4
    assert metrics["ndcg@10"] == pytest.approx(ndcg)
    assert list(metrics) == list(METRICS)


def test_cutoffs_at_5_and_10_are_inclusive():
    scores = np.tile(-np.arange(12, dtype=np.float32), (3, 1))  # candidate i has rank i + 1
    metrics = rank_metrics(scores, np.array([4, 9, 10]))  # ranks 5, 10, 11
    assert metrics["acc@5"] == pytest.approx(1 / 3)
    assert metrics["acc@10"] == pytest.approx(2 / 3)
    assert metrics["ndcg@10"] == pytest.approx((1 / math.log2(6) + 1 / math.log2(11)) / 3)


def test_nan_scores_rank_last():
    scores = np.array([[np.nan, 0.1, 0.2], [0.5, np.nan, 0.1]])
    assert target_ranks(scores, np.array([0, 0])).tolist() == [3, 1]


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="do not match"):
        rank_metrics(np.zeros((2, 3)), np.array([0, 1, 2]))


def test_category_scores_sum_venue_probabilities():
    split = make_split(random_events(seed=0))
    probs = np.full((2, len(split.venues)), 1.0 / len(split.venues), dtype=np.float32)
    categories = venue_to_category_scores(split, probs)
    share = split.venues["category_idx"].value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(categories[0], share, rtol=1e-5)


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
    table = format_table(results)
    assert "oracle" in table and "constant" in table and "next_category" in table
    parsed = json.loads(results_to_json(results))
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
