"""Forecasts of topic shares: planted trends and cycles, no leakage, the k threshold, JSON (the CLI:
tests/cli/test_analysis.py).

Series are planted through real events: each event's interest vector is its topic's vector (plus
a little noise), so a window's share of a topic is the share of its people who chose it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from interestgeo import forecast as fc
from interestgeo.analytics import ANALYST_ONLY, Filters, ScoredEvents
from tests._data.analytics import DIM, make_events, make_topics, scored_from

MIDTOWN = (40.7580, -73.9855)
CROWN_HEIGHTS = (40.6694, -73.9422)
START = pd.Timestamp("2012-04-02 16:00", tz="UTC")  # a Monday, noon local time (UTC-4)


def planted(
    *,
    share: Callable[[int], float],
    windows: int,
    users: int,
    step_days: int = 7,
    seed: int = 0,
    place: tuple[float, float] = MIDTOWN,
    prefix: str = "u",
) -> list[tuple]:
    """Rows (make_events format): in window w every user has one event, of topic 0 with
    probability share(w), else of topic 1, 2 or 3 alike."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(windows):
        ts = START + pd.Timedelta(days=step_days * w + (2 if step_days == 7 else 0))
        p = share(w)
        for u in range(users):
            topic = 0 if rng.random() < p else int(rng.integers(1, 4))
            rows.append((1, f"{prefix}{u}", ts.isoformat(), place[0], place[1], f"text {topic}", topic))
    return rows


def scored_rows(rows: list[tuple], k: int = 3, seed: int = 0, **forecast: object) -> ScoredEvents:
    events = make_events(rows)
    topics = make_topics()
    noise = np.random.default_rng(seed).normal(scale=0.05, size=(len(events), DIM))
    scored = scored_from(events, topics.vectors[events["topic"].to_numpy()] + noise, k=k, topics=topics)
    config = scored.config
    scored.config = dataclasses.replace(config, forecast=dataclasses.replace(config.forecast, **forecast))
    return scored


def test_a_planted_trend_is_forecast_better_than_persistence_and_the_moving_average() -> None:
    rows = planted(windows=30, users=200, share=lambda w: 0.1 + 0.8 * w / 29)
    result = fc.forecast_region(scored_rows(rows, backtest_origins=12), Filters(), "week", horizon=2)
    scores = result.backtest.scores
    assert scores["model"].mae < scores["persistence"].mae
    assert scores["model"].mae < scores["moving_average"].mae
    # at every origin the rising topic is expected to keep rising, on average by about the planted slope
    rising = result.backtest.forecasts.query("topic == 'topic 0'")
    assert (rising["model"] - rising["last"]).mean() > 0.5 * 0.8 / 29


def test_a_planted_weekly_cycle_is_forecast_better_than_persistence() -> None:
    # topic 0 is what people do at weekends (the planted days start on a Monday)
    rows = planted(windows=70, users=25, step_days=1, share=lambda d: 0.8 if d % 7 >= 5 else 0.15)
    result = fc.forecast_region(scored_rows(rows), Filters(), "day", horizon=3)
    scores = result.backtest.scores
    assert scores["model"].mae < scores["persistence"].mae
    assert scores["model"].mae < scores["moving_average"].mae
    assert "seasonal_naive" in scores
    assert result.weights["seasonal"].iloc[0] > 0  # the weekly cycle is what the model leans on


def _backtest_rows(scored: ScoredEvents) -> pd.DataFrame:
    result = fc.forecast_region(scored, Filters(), "week", horizon=3)
    return result.backtest.forecasts.set_index(["origin", "horizon", "topic"]).sort_index()


def test_the_backtest_never_sees_the_future() -> None:
    rows = planted(windows=24, users=30, share=lambda w: 0.3 + 0.3 * np.sin(w / 3), seed=1)
    base = _backtest_rows(scored_rows(rows))
    origins = sorted(base.index.get_level_values("origin").unique())
    origin = origins[2]
    cut = pd.Timestamp(origin).tz_localize("UTC") + pd.Timedelta(days=7)  # the origin week's end (local ~ UTC here)
    # after the origin: different topics and two extra people in every later week
    later = [r for r in rows if pd.Timestamp(r[2]) >= cut]
    changed = [r for r in rows if pd.Timestamp(r[2]) < cut]
    changed += [(d, u, ts, lat, lon, "text 3", 3) for d, u, ts, lat, lon, _, _ in later]
    changed += [(1, f"x{i}", r[2], r[3], r[4], "text 2", 2) for i in range(2) for r in later[:1]]
    after = _backtest_rows(scored_rows(changed))
    at_origin = base.xs(origin, level="origin")
    pd.testing.assert_series_equal(at_origin["model"], after.xs(origin, level="origin")["model"])
    # the change is real: what happened after the origin and what was forecast later both moved
    assert not np.allclose(at_origin["actual"], after.xs(origin, level="origin")["actual"])
    assert not np.allclose(base.xs(origins[-1], level="origin")["model"],
                           after.xs(origins[-1], level="origin")["model"])


def test_changing_data_before_the_origin_changes_its_forecast() -> None:
    rows = planted(windows=24, users=30, share=lambda w: 0.3 + 0.3 * np.sin(w / 3), seed=1)
    base = _backtest_rows(scored_rows(rows))
    origin = sorted(base.index.get_level_values("origin").unique())[2]
    cut = pd.Timestamp(origin).tz_localize("UTC")
    changed = [(d, u, ts, lat, lon, "text 3", 3) if pd.Timestamp(ts) < cut and u < "u5" else (d, u, ts, lat, lon, x, t)
               for d, u, ts, lat, lon, x, t in rows]
    after = _backtest_rows(scored_rows(changed))
    assert not np.allclose(base.xs(origin, level="origin")["model"], after.xs(origin, level="origin")["model"])


def _two_places(k: int) -> fc.Forecast:
    """Midtown: 8 people every week; Crown Heights (Brooklyn): 3 people every week."""
    rows = planted(windows=14, users=8, share=lambda w: 0.5)
    rows += planted(windows=14, users=3, share=lambda w: 0.5, place=CROWN_HEIGHTS, prefix="b", seed=2)
    return fc.forecast_all(scored_rows(rows, k=k), Filters(), "week", horizon=2)


def test_the_k_threshold_applies_to_every_region() -> None:
    strict = _two_places(k=4)
    forecast = {r.label: r for r in strict.regions}
    assert {"everywhere", "Manhattan"} <= set(forecast)
    assert "Brooklyn" not in forecast
    assert {s.label: s.reason for s in strict.skipped}["Brooklyn"] == "no window has at least 4 people"
    # Brooklyn's cell is neither forecast nor named: only counted
    assert {r.kind for r in strict.regions} >= {"cell"} and sum(r.kind == "cell" for r in strict.regions) == 1
    assert all(s.kind != "cell" for s in strict.skipped) and strict.hidden_regions == 1
    assert forecast["everywhere"].windows == 14 and forecast["everywhere"].hidden == 0
    # with k = 3 the Brooklyn people count, and its regions are forecast
    loose = {r.label for r in _two_places(k=3).regions}
    assert "Brooklyn" in loose and sum(1 for label in loose if label.endswith("(Brooklyn)")) == 1


def test_a_region_with_too_few_windows_says_so_and_the_others_have_no_nan() -> None:
    rows = planted(windows=14, users=8, share=lambda w: 0.5)
    rows += planted(windows=3, users=8, share=lambda w: 0.5, place=CROWN_HEIGHTS, prefix="b", seed=2)
    result = fc.forecast_all(scored_rows(rows, k=4), Filters(), "week", horizon=2)
    reasons = {s.label: s.reason for s in result.skipped}
    assert reasons["Brooklyn"].startswith("only 3 window(s) with at least 4 people")
    assert "Brooklyn" not in {r.label for r in result.regions}
    for region in result.regions:
        assert not region.forecast[["share", "low", "high"]].isna().any().any()
        shares = region.forecast.groupby("horizon")["share"].sum()
        np.testing.assert_allclose(shares, 1.0)
        assert (region.forecast["low"] <= region.forecast["share"]).all()
        assert (region.forecast["share"] <= region.forecast["high"]).all()


def test_no_events_and_bad_arguments_are_reported_not_raised_as_nan() -> None:
    scored = scored_rows(planted(windows=10, users=5, share=lambda w: 0.5))
    empty = fc.forecast_region(scored, Filters(datasets=(9,)), "week")
    assert empty.regions == [] and empty.origin is None and empty.backtest is None
    with pytest.raises(ValueError, match="horizon"):
        fc.forecast_region(scored, Filters(), "week", horizon=0)
    with pytest.raises(ValueError, match="week or day"):
        fc.forecast_region(scored, Filters(), "month")


def test_json_has_the_forecast_and_every_methods_backtest() -> None:
    rows = planted(windows=20, users=12, share=lambda w: 0.2 + 0.02 * w)
    payload = fc.forecast_to_json(fc.forecast_all(scored_rows(rows, k=4), Filters(), "week", horizon=2))
    json.dumps(payload, allow_nan=False)  # strict JSON: no NaN anywhere
    assert set(payload) == {"forecast", "backtest"}
    assert set(payload["backtest"]) == {"model", "persistence", "moving_average"}
    for scores in payload["backtest"].values():
        assert {"mae", "precision_rising", "recall_rising", "f1_rising", "auc_rising"} <= set(scores)
    body = payload["forecast"]
    assert body["window"] == "week" and body["horizon"] == 2 and body["k_min_users"] == 4
    region = body["regions"][0]
    assert region["region"] == "everywhere" and region["hidden_windows"] == 0
    assert len(region["shares"]) == 2 * 4  # horizons x topics
    assert {"window_start", "horizon", "topic", "share", "low", "high"} == set(region["shares"][0])
    assert {"rising", "falling", "leading_next", "backtest_mae"} <= set(region)
    assert "hidden_regions" in body and "skipped" in body


def test_a_person_gets_their_own_forecast_and_it_is_analyst_only() -> None:
    rows = planted(windows=14, users=6, share=lambda w: 0.2 + 0.05 * w)
    rows += [(1, "newcomer", (START + pd.Timedelta(days=7 * 13)).isoformat(), *MIDTOWN, "text 1", 1)]
    scored = scored_rows(rows, k=4)
    mine = fc.user_forecast(scored, 1, "u0", "week", horizon=2)
    assert isinstance(mine, fc.RegionForecast) and mine.label == "u0" and mine.windows == 14
    assert set(mine.forecast["horizon"]) == {1, 2}
    newcomer = fc.user_forecast(scored, 1, "newcomer", "week")
    assert isinstance(newcomer, fc.Skipped) and newcomer.reason.startswith("only 1 window(s) with events")
    assert "user_forecast" in ANALYST_ONLY
