"""Ranking metrics against hand-computed ranks: the evaluation's rule (ties against the target)
and the calibration's (ties for it), each on rows with ties so the two rules tell apart."""

from __future__ import annotations

import math

import numpy as np
import pytest

from interestgeo.metrics import (
    METRICS,
    grouped_bootstrap_ratio,
    next_text_mrr,
    next_text_reciprocal_ranks,
    rank_metrics,
    target_ranks,
    venue_to_category_scores,
)
from interestgeo.split import make_split
from tests._data.eval import random_events


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


def test_ties_for_the_target_rank_it_ahead_of_its_ties():
    scores = np.array([[0.1, 0.5, 0.3, 0.0], [0.2, 0.2, 0.2, 0.2], [0.4, 0.4, 0.5, 0.1]], dtype=np.float32)
    targets = np.array([2, 1, 0])
    assert target_ranks(scores, targets, ties="for").tolist() == [2, 1, 2]
    assert target_ranks(scores, targets).tolist() == [2, 4, 3]


def test_next_text_mrr_scores_candidates_by_dot_product_with_ties_for_the_target():
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    # row 0: target 2 ties candidate 0 at the top -> rank 1; row 1: target 3 (0.8) behind 1 -> rank 2;
    # row 2: a zero vector ties everything -> rank 1 under this rule.
    assert next_text_mrr(vectors, np.array([2, 3, 0]), candidates) == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert math.isnan(next_text_mrr(vectors[:0], np.array([], dtype=np.int64), candidates))


def test_next_text_mrr_is_the_same_across_its_score_blocks():
    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(50, 8)).astype(np.float32)
    vectors = rng.normal(size=(2500, 8)).astype(np.float32)  # three 1024-row blocks
    targets = rng.integers(0, 50, size=2500)
    ranks = target_ranks(vectors @ candidates.T, targets, ties="for")
    assert next_text_mrr(vectors, targets, candidates) == pytest.approx(float(np.mean(1.0 / ranks)))


def test_next_text_reciprocal_ranks_are_per_pair_and_average_to_the_mrr():
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    rr = next_text_reciprocal_ranks(vectors, np.array([2, 3, 0]), candidates)
    assert rr.tolist() == [1.0, 0.5, 1.0]  # ranks 1, 2, 1 as in the MRR test above


def test_grouped_bootstrap_ratio_of_fixed_multiples_is_exact_and_repeatable():
    rng = np.random.default_rng(0)
    x, groups = rng.random(300) + 0.1, rng.integers(0, 40, 300)
    assert grouped_bootstrap_ratio(x, [x], groups) == pytest.approx((1.0, 1.0))
    assert grouped_bootstrap_ratio(2 * x, [x, 0.5 * x], groups) == pytest.approx((2.0, 2.0))  # vs the best baseline
    y = rng.random(300)
    assert grouped_bootstrap_ratio(x, [y], groups, seed=3) == grouped_bootstrap_ratio(x, [y], groups, seed=3)


def test_grouped_bootstrap_ratio_holds_the_ratio_and_widens_when_a_persons_pairs_move_together():
    rng = np.random.default_rng(1)
    people = np.repeat(np.arange(30), 20)  # 30 people, 20 pairs each
    baseline = np.full(600, 10.0)
    # the numerator's lead over the baseline varies by person, hardly within one
    numerator = 10.5 + rng.normal(0.0, 1.0, 30)[people] + rng.normal(0.0, 0.1, 600)
    point = numerator.mean() / baseline.mean()
    by_person = grouped_bootstrap_ratio(numerator, [baseline], people)
    by_pair = grouped_bootstrap_ratio(numerator, [baseline], np.arange(600))
    assert by_person[0] < point < by_person[1]
    # treating each pair as its own person ignores that a person's pairs move together: far too narrow
    assert by_person[1] - by_person[0] > 3 * (by_pair[1] - by_pair[0])
