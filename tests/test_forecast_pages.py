"""The forecast on the dashboard: the Drift page's band and rising topics, the Map's colouring by
next window's leading topic, the User page's per-person forecast (Streamlit's AppTest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests._data.app import use_copy
from tests._data.forecast import recency_store

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return recency_store(tmp_path_factory.mktemp("forecast-pages"))


@pytest.fixture
def env(built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_copy(built, tmp_path, monkeypatch)
    return tmp_path / "app.duckdb"


def page_with(page: str, params: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info])


def test_drift_page_draws_the_forecast_band_lists_what_rises_and_its_backtest(env: Path) -> None:
    at = page_with("pages/drift.py", {"drift_window": "week"})
    assert len(at.get("vega_lite_chart")) == 3 and not at.get("plotly_chart")  # shares, forecast, drift
    shown = texts(at)
    assert "**Forecast** of the leading topics for the next 4 weeks" in shown
    assert "**Expected to rise** next week" in shown
    assert "Backtest (8 weeks" in shown and "last week" in shown
    assert any(d.label == "Download forecast CSV" for d in at.download_button)


def test_drift_page_says_forecasts_are_per_week_or_day(env: Path) -> None:
    at = page_with("pages/drift.py", {"drift_window": "month"})
    assert "Forecasts are per week or day" in texts(at)
    assert len(at.get("vega_lite_chart")) == 2


def test_user_page_shows_the_persons_topic_mix_over_the_next_weeks(env: Path) -> None:
    at = page_with("pages/user.py", {})
    shown = texts(at)
    assert "**Over the next weeks**: their topic mix after their last active week" in shown
    assert "Expected to rise by 2 points or more" in shown and "In their own backtest" in shown
    assert any(chart.proto.id and "user_forecast" in chart.proto.id for chart in at.get("plotly_chart"))


def test_map_colours_each_cell_by_its_expected_leading_topic_and_says_how_it_scored(env: Path) -> None:
    at = page_with("pages/map.py", {"map_mode": "Expected next", "map_res": "8", "map_forecast_window": "week"})
    decks = [json.loads(chart.proto.json) for chart in at.get("deck_gl_json_chart")]
    (spec,) = [d for d in decks if any(layer.get("@@type") == "H3HexagonLayer" for layer in d["layers"])]
    cells = spec["layers"][0]["data"]
    assert cells and all("expected next week" in c["tooltip"] for c in cells)
    shown = texts(at)
    assert "**Expected to lead next week**" in shown and "Backtest (8 weeks" in shown


def test_on_a_large_store_the_drift_forecast_runs_when_asked(env: Path) -> None:
    config = env.parent / "interestgeo.toml"
    text = config.read_text(encoding="utf-8")
    # every store is "large" at 0 events: the forecast (it reads every event) waits for the toggle
    config.write_text(text.replace("[app]", "[app]\nlarge_store_events = 0") if "[app]" in text
                      else text + "\n[app]\nlarge_store_events = 0\n", encoding="utf-8")
    at = page_with("pages/drift.py", {"drift_window": "week"})
    assert len(at.get("vega_lite_chart")) == 2 and "switch it on above" in texts(at)
    at.toggle(key="forecast_on_0").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("vega_lite_chart")) == 3 and "**Forecast** of the leading topics" in texts(at)
