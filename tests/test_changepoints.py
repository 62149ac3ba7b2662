"""Change points: a planted shift is found, a data gap or a thin window is not a change."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interestgeo import analytics as an
from interestgeo.analytics import Filters
from interestgeo.changepoints import change_points
from tests._data.analytics import DIM, make_events, make_topics, scored_from


def noisy_shares(levels: list[np.ndarray], rng: np.random.Generator, noise: float = 0.01) -> np.ndarray:
    x = np.stack(levels) + rng.normal(scale=noise, size=(len(levels), len(levels[0])))
    x = np.clip(x, 1e-4, None)
    return x / x.sum(axis=1, keepdims=True)


def test_a_planted_shift_is_found_and_a_thin_window_is_not_a_change() -> None:
    rng = np.random.default_rng(0)
    before, after = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.25, 0.3, 0.2, 0.25])
    levels = [before] * 18 + [after] * 14
    shares = noisy_shares(levels, rng)
    users = np.full(len(levels), 300)
    shares[9] = [0.05, 0.05, 0.1, 0.8]  # a thin week: 12 people, shares far off by sampling alone
    users[9] = 12
    assert np.flatnonzero(change_points(shares, users)).tolist() == [18]
    # counted as a normal week, the thin one would open and close a regime of its own
    assert {9, 18} <= set(np.flatnonzero(change_points(shares, users, thin_share=0.0)).tolist())


def test_steady_noisy_shares_have_no_change_point() -> None:
    for seed in range(5):
        shares = noisy_shares([np.array([0.4, 0.3, 0.2, 0.1])] * 40, np.random.default_rng(seed), noise=0.02)
        assert not change_points(shares, np.full(40, 200)).any()
    assert not change_points(np.tile([0.5, 0.5], (10, 1)), np.full(10, 5)).any()  # identical windows
    assert not change_points(np.zeros((3, 2)), np.ones(3)).any()  # too short to segment


def _weekly_rows(topic_of_week: list[list[int]]) -> list[tuple]:
    """Week w: one event per person, person u choosing topic_of_week[w][u]."""
    rows = []
    for w, topics in enumerate(topic_of_week):
        ts = pd.Timestamp("2012-04-04 16:00", tz="UTC") + pd.Timedelta(weeks=w)
        for u, topic in enumerate(topics):
            rows.append((1, f"u{u}", ts.isoformat(), 40.758, -73.9855, f"text {topic}", topic))
    return rows


def test_region_drift_marks_the_planted_shift_not_the_gap_and_its_thin_week() -> None:
    rng = np.random.default_rng(2)
    people = 40
    weeks: list[list[int]] = []
    for w in range(30):
        if w in (10, 11):  # a data gap: nobody
            weeks.append([])
            continue
        favourite = 0 if w < 20 else 3
        n = 8 if w == 12 else people  # the week after the gap is thin (8 people, k = 5), and odd
        weeks.append([favourite if rng.random() < 0.6 else int(rng.integers(0, 4)) for _ in range(n)]
                     if w != 12 else [2] * n)
    events = make_events(_weekly_rows(weeks))
    topics = make_topics()
    vectors = topics.vectors[events["topic"].to_numpy()] + np.random.default_rng(3).normal(scale=0.05, size=(len(events), DIM))
    drift = an.region_drift(scored_from(events, vectors, k=5, topics=topics), Filters(), "week")
    timeline = drift.timeline
    assert len(timeline) == 28  # the two empty weeks are not windows
    flagged = timeline.loc[timeline["change_point"], "window_start"].dt.date.astype(str).tolist()
    assert flagged == [str((pd.Timestamp("2012-04-02") + pd.Timedelta(weeks=20)).date())]
    assert drift.topics["topic"].iloc[0] == "topic 3"  # rose after the shift
