"""The dashboard's cached forecasts (Drift, Map, User), apart from `cached` so they live in one place.

Each wrapper takes every input as an argument (path, config as JSON, filters, window), as the other
caches do; the work is `interestgeo.forecast`. One person's forecast checks the analyst role
before its cache, so an analyst's cached result never reaches a marketer.
"""

from __future__ import annotations

import streamlit as st

from interestgeo import analytics, forecast
from pages._ui.cached import require_scored
from pages._ui.session import require_analyst


@st.cache_data(show_spinner="Forecasting...", max_entries=64)
def region_forecast(path: str, config_json: str, filters: analytics.Filters, window: str) -> forecast.Forecast:
    """The sidebar's region (the filtered events) as one region, with its backtest."""
    return forecast.forecast_region(require_scored(path, config_json), filters, window)


@st.cache_data(show_spinner="Forecasting every cell...", max_entries=16)
def cell_forecast(path: str, config_json: str, filters: analytics.Filters, resolution: int,
                  window: str) -> forecast.Forecast:
    """Every cell of the map at `resolution` for the next window, with the backtest."""
    return forecast.forecast_cells(require_scored(path, config_json), filters, resolution, window, horizon=1)


def user_forecast(path: str, config_json: str, dataset_id: int, user_id: str,
                  window: str) -> forecast.RegionForecast | forecast.Skipped:
    require_analyst()  # before the cache: one person's data
    return _user_forecast(path, config_json, dataset_id, user_id, window)


@st.cache_data(show_spinner="Forecasting...", max_entries=64)
def _user_forecast(path: str, config_json: str, dataset_id: int, user_id: str,
                   window: str) -> forecast.RegionForecast | forecast.Skipped:
    return forecast.user_forecast(require_scored(path, config_json), dataset_id, user_id, window)


def backtest_summary(result: forecast.Forecast, window: str) -> str:
    """One line: how the forecast scored in its backtest, beside the baselines (markdown-safe)."""
    bt = result.backtest
    if bt is None:
        return "Not backtested: too little history before the last windows."
    scores = bt.scores
    names = {"persistence": "last " + window, "moving_average": "moving average", "seasonal_naive": "same weekday"}
    baselines = ", ".join(f"{names[m]} {100 * s.mae:.1f}" for m, s in scores.items() if m != "model")
    model = scores["model"]
    return (f"Backtest ({len(bt.origins)} {window}s, forecasts made at each and compared with what came): mean error "
            f"{100 * model.mae:.1f} points against {baselines}; for rises of {100 * bt.rise_threshold:.0f} points "
            f"or more, F1 {model.f1_rising:.2f} (last {window}: {scores['persistence'].f1_rising:.2f}).")
