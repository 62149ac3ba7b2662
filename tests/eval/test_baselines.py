"""Baselines on tiny hand-made histories where the right answer is known, and their vectorised
features against plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from interestgeo.eval.baselines import (
    DECAY_KM_GRID,
    WEIGHT_GRID,
    BlendScorer,
    MarkovScorer,
    NearestPopularScorer,
    PopularityScorer,
    UserFrequencyScorer,
    venue_distances_km,
    global_transition_counts,
    make_baselines,
    popularity,
    user_transition_counts,
    visit_counts,
)
from interestgeo.eval.run import evaluate_scorers
from interestgeo.split import history_rows, make_split, previous_rows
from tests._data.eval import make_events, random_events

# Venues on a line going north, ~1.1 km apart; P is the busiest overall.
PLACES = {"P": (40.70, -74.0), "A": (40.71, -74.0), "B": (40.72, -74.0), "C": (40.73, -74.0), "H": (40.74, -74.0)}


def _rows(user: str, start: float, venues: str, step: float = 1.0) -> list[tuple]:
    return [(user, start + i * step, v, *PLACES[v]) for i, v in enumerate(venues)]


def _hand_split():
    """Training: six walkers always go P -> A -> B; 'homer' mostly checks in at H; P is the
    busiest venue. Later (val/test): the walkers walk P -> A -> B once more, homer goes C -> H
    and a tourist who once saw P comes back to C."""
    rows = _rows("homer", 0.0, "HHPHHC", step=5.0) + [("tourist", 0.5, "P", *PLACES["P"])]
    for u in range(6):
        rows += _rows(f"walker{u}", 10.0 * u, "PAB") + _rows(f"walker{u}", 10.0 * u + 50.0, "PAB")
        rows += _rows(f"walker{u}", 300.0 + 2 * u, "PAB", step=0.5)
    rows += _rows("homer", 320.0, "CH") + [("tourist", 321.0, "C", *PLACES["C"])]
    split = make_split(make_events(rows))
    assert list(split.val.user_key) == ["1:walker2", "1:walker3"]
    assert sorted(split.test.user_key) == ["1:homer", "1:tourist", "1:walker4", "1:walker5"]
    return split


def _top(scores: np.ndarray, split, row: int) -> str:
    return split.venues["item_id"].iloc[int(np.argmax(scores[row]))]


def test_popularity_ranks_the_busiest_venue_first():
    split = _hand_split()
    venues, categories = PopularityScorer().score(split, split.test)
    assert all(_top(venues, split, i) == "P" for i in range(len(split.test)))
    assert categories.shape == (len(split.test), len(split.categories))


def test_user_frequency_predicts_the_users_own_favourite():
    split = _hand_split()
    venues, _ = UserFrequencyScorer().score(split, split.test)
    keys = list(split.test.user_key)
    assert _top(venues, split, keys.index("1:homer")) == "H"
    np.testing.assert_allclose(venues.sum(axis=1), 1.0, rtol=1e-5)


def test_markov_predicts_the_known_transition():
    split = _hand_split()
    venues, _ = MarkovScorer().score(split, split.test)
    after_a = [i for i, prev in enumerate(previous_rows(split.test)) if split.events.loc[prev, "item_id"] == "A"]
    assert len(after_a) == 2  # walker4 and walker5 are at A before their test check-in
    assert all(_top(venues, split, i) == "B" for i in after_a)


def test_nearest_popular_prefers_venues_next_to_the_last_check_in():
    split = _hand_split()
    scorer = NearestPopularScorer(decay_km=0.1)
    venues, _ = scorer.score(split, split.test)
    ev = split.events
    for i, prev in enumerate(previous_rows(split.test)):
        assert _top(venues, split, i) == ev.loc[prev, "item_id"]
    assert NearestPopularScorer().fit(split).decay_km in DECAY_KM_GRID


def test_features_match_plain_loops_on_the_first_four_samples():
    """The loops are slow (one pass over the training events per sample), so four samples."""
    split = make_split(random_events(seed=4))
    samples = split.test
    ev = split.events
    venue_idx = ev["venue_idx"].to_numpy()
    features = (visit_counts, user_transition_counts, global_transition_counts)
    visits, user_moves, all_moves = (f(split, samples) for f in features)
    train = ev[split.train_mask]
    for i in range(len(samples)):
        history = venue_idx[samples.history_start[i] : samples.history_end[i]]
        expected = np.bincount(history[history >= 0], minlength=len(split.venues))
        np.testing.assert_array_equal(visits[i], expected)
        last = history[-1]
        moves = np.zeros(len(split.venues))
        for a, b in zip(history[:-1], history[1:]):
            if a == last and last >= 0 and b >= 0:
                moves[b] += 1
        np.testing.assert_array_equal(user_moves[i], moves)
        moves = np.zeros(len(split.venues))
        if last >= 0:
            for (_, a), (_, b) in zip(train.iloc[:-1].iterrows(), train.iloc[1:].iterrows()):
                if a["traj_id"] == b["traj_id"] and a["venue_idx"] == last and b["venue_idx"] >= 0:
                    moves[b["venue_idx"]] += 1
        np.testing.assert_array_equal(all_moves[i], moves)
        if i >= 3:
            break
    assert len(history_rows(samples)[0]) == (samples.history_end - samples.history_start).sum()


def test_distances_are_great_circle_kilometres():
    split = _hand_split()
    distance = venue_distances_km(split, split.test)
    ev = split.events
    prev = previous_rows(split.test)[0]
    venue = split.venues["item_id"].tolist().index(ev.loc[prev, "item_id"])
    assert distance[0, venue] == pytest.approx(0.0, abs=1e-3)
    north = split.venues["lat"] - ev.loc[prev, "lat"]
    # 0.01 degree of latitude is 1.112 km
    np.testing.assert_allclose(distance[0], np.abs(north.to_numpy()) * 111.2, rtol=2e-3, atol=1e-3)


def test_blend_is_tuned_on_validation_deterministically_and_beats_its_parts():
    split = make_split(random_events(n_users=40, seed=6))
    blend = BlendScorer().fit(split)
    assert blend.weights is not None
    again = BlendScorer().fit(split)
    assert blend.weights == again.weights and blend.decay_km == again.decay_km
    assert blend.weights["user_markov"] == 1.0
    assert all(w in WEIGHT_GRID for w in blend.weights.values()) and blend.decay_km in DECAY_KM_GRID
    venues, categories = blend.score(split, split.val)
    np.testing.assert_allclose(venues.sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(categories.sum(axis=1), 1.0, rtol=1e-4)
    alone = {n: float(n == "user_markov") for n in blend.weights}
    user_markov_only = BlendScorer(weights=alone, decay_km=0.1, name="user_markov_only")
    results = evaluate_scorers(split, [blend, user_markov_only], part="val")["next_venue"]
    assert results["blend"]["mrr"] == pytest.approx(blend.validation_mrr, abs=1e-6)
    assert results["blend"]["mrr"] >= results["user_markov_only"]["mrr"] - 1e-9


def test_make_baselines_gives_every_issue_3_baseline_with_distinct_names():
    split = _hand_split()
    scorers = make_baselines(split)
    assert [s.name for s in scorers] == ["popularity", "user_most_frequent", "markov", "nearest_popular", "blend"]
    for scorer in scorers:
        venues, categories = scorer.score(split, split.test)
        assert venues.shape == (len(split.test), len(split.venues)) and venues.dtype == np.float32
        assert categories.shape == (len(split.test), len(split.categories))
    # walkers 4 and 5 go A -> B as every walker did before: the blend knows.
    venues, _ = scorers[-1].score(split, split.test)
    walkers = [i for i, key in enumerate(split.test.user_key) if key.startswith("1:walker")]
    assert [_top(venues, split, i) for i in walkers] == ["B", "B"]


def test_fitting_never_reads_test_period_events():
    events = random_events(n_users=40, seed=8)
    split = make_split(events)
    test_period = (split.events["part"] == "test").to_numpy()
    changed = split.events.drop(columns=["user_key", "traj_id", "part", "venue_idx", "category_idx"])
    changed.loc[test_period, ["item_id", "text", "category"]] = ["v0", "v0", "c0"]  # every test check-in at v0
    other = make_split(changed)
    assert np.array_equal(popularity(split), popularity(other))
    a, b = make_baselines(split), make_baselines(other)
    assert (a[-1].weights, a[-1].decay_km, a[3].decay_km) == (b[-1].weights, b[-1].decay_km, b[3].decay_km)
    np.testing.assert_array_equal(a[2].score(split, split.val)[0], b[2].score(other, other.val)[0])
