"""Analytics on hand-built events: regional vectors, shares, drift, queries, filters, the k threshold."""

from __future__ import annotations

import json

import h3
import numpy as np
import pandas as pd
import pytest

from interestgeo import access
from interestgeo import analytics as an
from interestgeo.analytics import Filters
from interestgeo.analytics._groups import _Groups
from interestgeo.analytics.users import _same_place_once
from interestgeo.cells import cell_to_parent
from tests._data.analytics import DIM, make_events, make_topics, random_city, scored_from, unit


def direct_region_vectors(events: pd.DataFrame, vectors: np.ndarray, resolution: int) -> dict[int, np.ndarray]:
    """The regional vector by its definition, with plain loops: mean per user, mean of users, normalise."""
    out = {}
    frame = events.assign(parent=cell_to_parent(events["cell"].to_numpy(), resolution)).reset_index(drop=True)
    for cell, in_cell in frame.groupby("parent"):
        # .indices are positions within in_cell: map them back to rows of the whole frame
        per_user = [vectors[in_cell.index[rows]].mean(axis=0) for rows in in_cell.groupby(["dataset_id", "user_id"]).indices.values()]
        mean = np.mean(per_user, axis=0)
        out[int(cell)] = mean / np.linalg.norm(mean)
    return out


def test_region_vectors_equal_a_direct_per_user_then_per_cell_mean() -> None:
    events, raw = random_city()
    scored = scored_from(events, raw)
    for resolution in (8, 10):
        result = an.region_vectors(scored, Filters(), resolution)
        expected = direct_region_vectors(events, scored.vectors, resolution)
        assert sorted(result.cells["cell"].tolist()) == sorted(expected)
        for cell, vector in zip(result.cells["cell"], result.vectors):
            np.testing.assert_allclose(vector, expected[int(cell)], atol=1e-5)


def test_one_heavy_user_does_not_dominate_the_regional_vector() -> None:
    a, b = unit(np.eye(DIM)[0]), unit(np.eye(DIM)[1])
    rows = [(1, "heavy", f"2012-04-02T1{i % 10}:00:00Z", 40.758, -73.9855, "x", 0) for i in range(50)]
    rows.append((1, "light", "2012-04-02T12:30:00Z", 40.758, -73.9855, "y", 0))
    events = make_events(rows)
    vectors = np.stack([a if u == "heavy" else b for u in events["user_id"]])
    result = an.region_vectors(scored_from(events, vectors), Filters(), 9)
    np.testing.assert_allclose(result.vectors[0], unit(a + b), atol=1e-6)
    assert result.cells["users"].tolist() == [2] and result.cells["events"].tolist() == [51]


def test_topic_shares_sum_to_one_everywhere() -> None:
    events, raw = random_city()
    scored = scored_from(events, raw)
    region = an.region_map(scored, Filters(), 9, window="week")
    np.testing.assert_allclose(region.shares.sum(axis=1), 1.0, atol=1e-6)
    assert (region.cells["share"] == region.shares.max(axis=1)).all()
    profile = an.interest_profile(scored, Filters(hours=tuple(range(12))))
    assert profile.shares["share"].sum() == pytest.approx(1.0)
    drift = an.region_drift(scored, Filters(), "week")
    np.testing.assert_allclose(drift.shares.groupby("window_start")["share"].sum(), 1.0, atol=1e-6)


def weekly_events(week_vectors: list[np.ndarray], users: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    """The same users at the same places every week; week w's events all carry week_vectors[w]."""
    rows, vectors = [], []
    for w, vector in enumerate(week_vectors):
        for u in range(users):
            ts = pd.Timestamp("2012-04-03 16:00", tz="UTC") + pd.Timedelta(weeks=w, hours=u)
            rows.append((1, f"u{u}", ts.isoformat(), 40.758, -73.9855, "x", 0))
            vectors.append(vector)
    events = make_events(rows)
    order = np.lexsort((pd.to_datetime([r[2] for r in rows]).asi8, [r[1] for r in rows]))
    return events, np.stack(vectors)[order]


def test_drift_is_zero_for_identical_windows() -> None:
    v = unit(np.random.default_rng(1).normal(size=DIM))
    events, vectors = weekly_events([v] * 8)
    drift = an.region_drift(scored_from(events, vectors), Filters(), "week")
    assert len(drift.timeline) == 8
    np.testing.assert_allclose(drift.timeline["distance"], 0.0, atol=1e-6)
    assert not drift.timeline["change_point"].any()


def test_drift_grows_with_a_planted_change_and_marks_it() -> None:
    rng = np.random.default_rng(2)
    topics = make_topics()
    base = topics.vectors[0]
    distances = []
    for strength in (0.5, 1.0, 3.0):
        target = unit(base + strength * topics.vectors[3])
        weeks = [unit(base + 0.02 * rng.normal(size=DIM)) for _ in range(6)]
        weeks += [unit(target + 0.02 * rng.normal(size=DIM)) for _ in range(6)]
        events, vectors = weekly_events(weeks)
        drift = an.region_drift(scored_from(events, vectors, topics=topics), Filters(), "week")
        d = drift.timeline["distance"].to_numpy()
        assert int(np.argmax(d)) == 6
        # change points segment the topic shares: the weakest change moves the vectors but no share
        # (the softmax still gives topic 0 everything), so only the others are change points
        assert np.flatnonzero(drift.timeline["change_point"]).tolist() == ([6] if strength >= 1.0 else [])
        assert drift.topics["topic"].iloc[0] == "topic 3"  # the planted topic rose most
        distances.append(d[6])
    assert distances[0] < distances[1] < distances[2]


def test_user_drift_is_per_user_and_analyst_only() -> None:
    events, raw = random_city()
    scored = scored_from(events, raw, k=100)
    drift = an.user_drift(scored, 1, "u0", "week")
    # u0 checks in every one of the city's 7 weeks; no k threshold for one identified user
    assert len(drift.timeline) == 7 and drift.timeline["users"].eq(1).all() and drift.hidden == 0
    with access.viewer("marketer"), pytest.raises(access.AccessDenied):
        an.user_drift(scored, 1, "u0", "week")


def test_every_region_level_result_hides_groups_below_k_and_counts_them() -> None:
    events, raw = random_city(n_users=12)
    for k in (1, 5, 8):
        scored = scored_from(events, raw, k=k)
        full = an.region_map(scored_from(events, raw, k=1), Filters(), 10, window="day")
        expected_hidden = int((full.cells["users"] < k).sum())
        region = an.region_map(scored, Filters(), 10, window="day")
        assert region.hidden == expected_hidden and (region.cells["users"] >= k).all()
        vectors = an.region_vectors(scored, Filters(), 10, window="day")
        assert vectors.hidden == expected_hidden and (vectors.cells["users"] >= k).all()
        query = an.query_interest(scored, "x", scored.topics.vectors[0], Filters(), 10)
        assert (query.cells["users"] >= k).all() and (query.time_profile["users"] >= k).all()
        assert query.hidden + len(query.cells) == len(an.region_map(scored_from(events, raw), Filters(), 10).cells)
        drift = an.region_drift(scored, Filters(), "day")
        assert (drift.timeline["users"] >= k).all()
        assert drift.hidden + len(drift.timeline) == len(an.region_drift(scored_from(events, raw), Filters(), "day").timeline)
        counts, hidden_days = an.window_counts(scored, Filters(), "day")  # the Overview's trend: drift's windows
        assert hidden_days == drift.hidden and (counts["users"] >= k).all()
        pd.testing.assert_frame_equal(counts, drift.timeline[["window_start", "events", "users"]], check_dtype=False)
    assert expected_hidden > 0 and query.hidden_times > 0 and drift.hidden > 0
    small = scored_from(events, raw, k=13)  # more than the 12 users there are
    assert an.interest_profile(small, Filters()).hidden
    assert an.compare_periods(small, Filters(), Filters()).empty


def test_filters_combine_with_and_and_match_a_direct_selection() -> None:
    events, raw = random_city(n_users=12, events_per_user=40)
    topics = make_topics()
    scored = scored_from(events, raw, topics=topics)
    parent = int(cell_to_parent(events["cell"].to_numpy()[:1], 8)[0])
    lat, lon = 40.7580, -73.9855
    square = {
        "type": "Polygon",
        "coordinates": [[[lon - 0.001, lat - 0.001], [lon + 0.001, lat - 0.001], [lon + 0.001, lat + 0.001],
                         [lon - 0.001, lat + 0.001], [lon - 0.001, lat - 0.001]]],
    }
    parts = {
        "datasets": (Filters(datasets=[2]), events["dataset_id"] == 2),
        "dates": (
            Filters(date_from="2012-04-10", date_to="2012-04-30"),
            (events["local_ts"].dt.date >= pd.Timestamp("2012-04-10").date())
            & (events["local_ts"].dt.date <= pd.Timestamp("2012-04-30").date()),
        ),
        "hours": (Filters(hours=range(8, 20)), events["local_hour"].between(8, 19)),
        "days": (Filters(days_of_week=[0, 1, 2, 3, 4]), events["dow"] < 5),
        "cells": (
            Filters(cells=[parent]),
            pd.Series([h3.cell_to_parent(h3.int_to_str(int(c)), 8) == h3.int_to_str(parent) for c in events["cell"]]),
        ),
        "geojson": (Filters(geojson=json.dumps(square)), (events["lat"] == lat) & (events["lon"] == lon)),
        "topic": (Filters(topic="topic 2"), events["topic"] == 2),
    }
    combined_mask = np.ones(len(events), dtype=bool)
    combined = {}
    for name, (flt, expected) in parts.items():
        mask = an.filter_mask(scored, flt)
        np.testing.assert_array_equal(mask, expected.to_numpy(), err_msg=name)
        assert 0 < mask.sum() < len(events), name  # every filter really selects something, not everything
        combined_mask &= mask
        combined.update({k: v for k, v in flt.to_dict().items()})
    together = Filters(**combined) if "geojson" not in combined else Filters(**{**combined, "geojson": json.dumps(square)})
    np.testing.assert_array_equal(an.filter_mask(scored, together), combined_mask)
    pair = Filters(hours=range(8, 20), days_of_week=[0, 1, 2, 3, 4])
    direct = events["local_hour"].between(8, 19) & (events["dow"] < 5)
    assert an.region_map(scored, pair, 10).cells["events"].sum() == direct.sum()


def test_filters_are_hashable_and_reject_bad_geojson() -> None:
    assert hash(Filters(hours=[1, 2])) == hash(Filters(hours=(1, 2)))
    events, raw = random_city()
    with pytest.raises(ValueError, match="GeoJSON"):
        an.filter_mask(scored_from(events, raw), Filters(geojson="{not json"))
    with pytest.raises(ValueError, match="unknown topic"):
        an.filter_mask(scored_from(events, raw), Filters(topic="no such topic"))


def test_query_ranks_the_cells_whose_people_lean_to_the_phrase_first() -> None:
    events, raw = random_city(n_users=12)
    scored = scored_from(events, raw)
    phrase = scored.topics.vectors[1]
    at_spot = (events["lat"] == 40.7061).to_numpy()
    boosted = scored.vectors.copy()
    boosted[at_spot] = unit(boosted[at_spot] + 3 * phrase)
    result = an.query_interest(scored_from(events, boosted), "topic 1", phrase, Filters(), 10)
    assert int(result.cells["cell"].iloc[0]) == int(events.loc[at_spot, "cell"].iloc[0])
    assert result.cells["strong_users"].iloc[0] > 0 and result.cells["rank"].tolist() == list(range(1, len(result.cells) + 1))
    assert set(result.time_profile.columns) == {"dow", "hour", "events", "users", "score"}
    assert "user_id" not in result.cells.columns


def test_user_functions_are_marked_analyst_only_and_region_functions_are_not() -> None:
    import interestgeo.analytics.explain  # noqa: F401 (its functions register when it is imported)

    assert {"list_users", "interested_users", "user_profile", "user_drift", "next_interests", "user_event_positions",
            "explain_user", "explain_scored_user", "explain_stored_user"} <= an.ANALYST_ONLY
    for name in ("region_map", "region_vectors", "region_drift", "query_interest", "interest_profile", "compare_periods"):
        assert name not in an.ANALYST_ONLY
    events, raw = random_city()
    scored = scored_from(events, raw)
    users = an.interested_users(scored, scored.topics.vectors[0], Filters(), top=3)
    assert len(users) == 3 and users["affinity"].is_monotonic_decreasing
    profile = an.user_profile(scored, 1, "u0", at="2012-04-20")
    assert profile.events["ts"].max() <= pd.Timestamp("2012-04-20", tz="UTC")
    assert profile.shares["share"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("n, groups_n", [(25_000, 12), (5_000, 300), (3, 2)])
def test_group_means_equal_a_direct_loop(n: int, groups_n: int) -> None:
    # mean_rows is one sparse product over rows picked (and weighted) in any order, some of the
    # full matrix's rows unpicked, and groups of very different sizes
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(n + 100, 8)).astype(np.float32)
    group = np.minimum(rng.geometric(0.3, n) - 1, groups_n - 1)
    groups = _Groups(
        idx=rng.permutation(n + 100)[:n], group=group, keys=np.arange(groups_n),
        events=np.bincount(group, minlength=groups_n), users=np.zeros(groups_n), weights=rng.random(n),
        pair=np.zeros(n, np.int64), pair_group=np.zeros(0, np.int64), pair_user=np.zeros(0, np.int64),
    )
    direct = np.stack([(matrix[groups.idx[group == g]] * groups.weights[group == g, None]).sum(axis=0)
                       for g in range(groups_n)])
    means = groups.mean_rows(matrix)
    assert means.dtype == np.float32 and means.shape == (groups_n, 8)
    np.testing.assert_allclose(means, direct, rtol=1e-4, atol=1e-4)


def test_vectors_given_later_are_loaded_once_on_first_use_and_change_nothing() -> None:
    import threading
    import time

    from interestgeo.topics import topic_similarities

    events, vectors = random_city(seed=4)
    eager = scored_from(events, vectors, k=2)
    calls: list[int] = []

    def slow_loader() -> np.ndarray:
        calls.append(1)
        time.sleep(0.2)  # two sessions ask meanwhile: one load, both get it
        return eager.vectors.copy()

    sims = topic_similarities(eager.vectors, eager.topics)
    lazy = an.ScoredEvents(events, slow_loader, eager.topics, eager.config, topic_sims=sims)
    assert not lazy.vectors_loaded
    np.testing.assert_allclose(lazy.topic_probs, eager.topic_probs, atol=1e-7)
    pd.testing.assert_frame_equal(an.region_map(lazy, Filters(), 8).cells, an.region_map(eager, Filters(), 8).cells)
    assert not lazy.vectors_loaded and calls == []
    got: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: got.append(lazy.vectors)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1] and got[0] is got[1] and lazy.vectors_loaded
    phrase = eager.vectors[0]
    pd.testing.assert_frame_equal(an.query_interest(lazy, "x", phrase, Filters(), 8).cells,
                                  an.query_interest(eager, "x", phrase, Filters(), 8).cells)
    with pytest.raises(ValueError, match="need every event's topic similarities"):
        an.ScoredEvents(events, slow_loader, eager.topics, eager.config)
    partial = sims.copy()
    partial[3] = np.nan
    with pytest.raises(ValueError, match="need every event's topic similarities"):
        an.ScoredEvents(events, slow_loader, eager.topics, eager.config, topic_sims=partial)
    wrong = an.ScoredEvents(events, lambda: eager.vectors[:-1], eager.topics, eager.config, topic_sims=sims)
    with pytest.raises(ValueError, match="events but"):
        wrong.vectors  # noqa: B018


def test_places_that_share_a_name_and_a_spot_are_listed_once_with_their_chances_added() -> None:
    venues = pd.DataFrame({
        "item_id": ["h1", "c1", "h2", "h3"],
        "text": ["Home (private)", "Cafe, Coffee Shop", "Home (private)", "Home (private)"],
        "category": ["Home (private)", "Coffee Shop", "Home (private)", "Home (private)"],
        "lat": [40.75000, 40.76000, 40.75001, 40.80000],  # h1 and h2 one door apart, h3 elsewhere
        "lon": [-73.98000, -73.98000, -73.98001, -73.95000],
        "visits": [10, 5, 7, 3],
        "probability": [0.5, 0.3, 0.15, 0.05],
    })
    once = _same_place_once(venues)
    assert once["item_id"].tolist() == ["h1", "c1", "h3"]  # the likelier id names the merged place
    assert once["probability"].tolist() == pytest.approx([0.65, 0.3, 0.05])
    assert once["visits"].tolist() == [17, 5, 3] and once["branches"].tolist() == [2, 1, 1]
