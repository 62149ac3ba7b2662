"""Chart builders: offline maps, inert user text, colours that mean something, sensible views."""

from __future__ import annotations

import json

import h3
import numpy as np
import pandas as pd
import pytest

from interestgeo import charts

# Three real places in New York: Times Square, Williamsburg, JFK airport.
PLACES = [(40.758, -73.9855), (40.7081, -73.9571), (40.6413, -73.7781)]


def _cells(res: int = 8) -> list[int]:
    return [h3.str_to_int(h3.latlng_to_cell(lat, lon, res)) for lat, lon in PLACES]


def _spec(deck) -> dict:
    return json.loads(deck.to_json())


def test_count_map_draws_one_hexagon_per_cell_with_counts_in_the_tooltip() -> None:
    frame = pd.DataFrame({"cell": _cells(), "events": [12, 340, 5], "users": [10, 41, 10]})
    deck = charts.count_map(frame)
    layer = _spec(deck)["layers"][0]
    assert layer["@@type"] == "H3HexagonLayer"
    assert [d["hex"] for d in layer["data"]] == [h3.int_to_str(c) for c in frame["cell"]]
    assert layer["data"][1]["tooltip"] == "340 events\n41 users"
    # Text mode: deck.gl sets the tooltip with innerText, never innerHTML.
    assert deck._tooltip == {"text": "{tooltip}"}


def test_maps_have_no_basemap_unless_a_style_is_configured() -> None:
    frame = pd.DataFrame({"cell": _cells(), "events": [1, 2, 3], "users": [1, 2, 3]})
    offline = _spec(charts.count_map(frame))
    # pydeck's sentinel: Streamlit drops it and draws no tiles (no network needed).
    assert offline["mapStyle"] == "__MAP_STYLE__" and "mapProvider" not in offline
    style = "https://tiles.example.org/style.json"
    online = _spec(charts.count_map(frame, map_style=style))
    assert online["mapStyle"] == style and online["mapProvider"] == "carto"


def test_map_json_is_pydecks_spec_without_the_indentation() -> None:
    frame = pd.DataFrame({"cell": _cells(), "events": [1, 2, 3], "users": [1, 2, 3]})
    deck = charts.count_map(frame)
    compact = deck.to_json()
    assert json.loads(compact) == json.loads(charts.pdk.Deck.to_json(deck))
    assert "\n" not in compact and ", " not in compact and len(compact) < 0.7 * len(charts.pdk.Deck.to_json(deck))


def test_user_text_reaches_the_map_as_inert_plain_text() -> None:
    tips = ['<img src=x onerror="alert(1)">', "@@=alert(1)", "Café 咖啡 🍜"]
    deck = charts.hex_map(_cells(), [[1, 2, 3, 200]] * 3, tips)
    data = _spec(deck)["layers"][0]["data"]
    assert data[0]["tooltip"] == tips[0]  # shown literally by innerText
    assert not data[1]["tooltip"].startswith("@@")  # deck.gl's JSON converter would evaluate it
    assert data[1]["tooltip"].replace("\u200d", "") == tips[1]
    assert data[2]["tooltip"] == tips[2]


def test_plot_labels_escape_markup_plotly_would_parse() -> None:
    assert charts.plot_label("<b>Bar</b> & Grill") == "&lt;b&gt;Bar&lt;/b&gt; &amp; Grill"
    fig = charts.share_bar_figure(pd.DataFrame({"topic": ["<a href='x'>x</a>", "Food"], "share": [0.3, 0.7]}),
                                  charts.topic_colors(["Food"]))
    assert all("<" not in label for label in fig.data[0].y)


def test_ramp_colors_darken_with_the_value() -> None:
    colors = charts.ramp_colors([1, 10, 100, 1000])
    brightness = colors[:, :3].astype(int).sum(axis=1)
    assert list(brightness) == sorted(brightness, reverse=True)
    assert colors.dtype == np.uint8 and colors.shape == (4, 4)
    assert charts.ramp_colors([]).shape == (0, 4)
    same = charts.ramp_colors([7, 7])
    assert (same[0] == same[1]).all()


def test_topic_colors_are_distinct_for_the_palette_and_stable() -> None:
    topics = [f"t{i}" for i in range(len(charts.TOPIC_PALETTE))]
    colors = charts.topic_colors(topics)
    assert len(set(colors.values())) == len(topics)
    assert charts.topic_colors(topics) == colors


def test_resolution_gets_finer_for_smaller_areas() -> None:
    resolutions = (6, 7, 8, 9)
    city = charts.resolution_for_extent(40.0, resolutions)
    block = charts.resolution_for_extent(2.0, resolutions)
    assert city < block
    assert charts.resolution_for_extent(5000.0, resolutions) == 6
    with pytest.raises(ValueError):
        charts.resolution_for_extent(1.0, ())


def test_view_is_centred_on_the_cells_and_zooms_in_on_a_small_area() -> None:
    wide = charts.view_for_cells(_cells())
    lats = [p[0] for p in PLACES]
    lons = [p[1] for p in PLACES]
    assert min(lats) < wide.latitude < max(lats) and min(lons) < wide.longitude < max(lons)
    near = charts.view_for_cells(_cells()[:2])
    assert near.zoom > wide.zoom
    assert charts.view_for_cells([]).zoom > 0


def test_points_map_fades_older_events() -> None:
    events = pd.DataFrame({"lat": [p[0] for p in PLACES], "lon": [p[1] for p in PLACES],
                           "tooltip": ["a", "b", "c"]})
    data = _spec(charts.points_map(events))["layers"][0]["data"]
    alphas = [d["fill"][3] for d in data]
    assert alphas == sorted(alphas) and alphas[0] < alphas[-1]


def test_figures_have_a_trace_per_series() -> None:
    days = pd.date_range("2012-04-03", periods=5, freq="D")
    trend = charts.trend_figure(pd.DataFrame({"date": days, "events": [1, 2, 3, 2, 1]}),
                                pd.DataFrame({"date": days, "events": [2, 2, 2, 2, 2]}))
    assert len(trend.data) == 2
    shares = pd.DataFrame({"window_start": list(days) * 2, "topic": ["A"] * 5 + ["B"] * 5,
                           "share": [0.5] * 10})
    assert len(charts.share_timeline_figure(shares, charts.topic_colors(["A", "B"])).data) == 2
    drift = pd.DataFrame({"window_start": days, "distance": [0, 0.1, 0.5, 0.1, 0.1],
                          "change_point": [False, False, True, False, False]})
    fig = charts.drift_figure(drift)
    assert len(fig.data) == 2 and len(fig.data[1].x) == 1
    profile = pd.DataFrame({"dow": [0, 6], "hour": [0, 23], "value": [1.0, 2.0]})
    assert charts.hour_dow_figure(profile).data[0].z.shape == (7, 24)


def test_draw_region_figure_places_cells_at_their_lon_lat_for_a_lasso() -> None:
    cells = pd.DataFrame({"cell": _cells(), "topic": ["Food", "<b>Nightlife</b>", "Travel"], "share": [0.5, 0.7, 0.9]})
    fig = charts.draw_region_figure(cells, charts.topic_colors(["Food", "Travel"]))
    (trace,) = fig.data
    # x = longitude, y = latitude: the lasso's path comes back in lon/lat
    assert np.allclose(trace.x, [lon for _, lon in PLACES], atol=0.01)
    assert np.allclose(trace.y, [lat for lat, _ in PLACES], atol=0.01)
    assert fig.layout.dragmode == "lasso"
    assert fig.layout.yaxis.scaleratio == pytest.approx(1 / np.cos(np.radians(np.mean(trace.y))), rel=1e-3)
    assert "&lt;b&gt;Nightlife" in trace.hovertext[1]  # plain text, not markup
    assert trace.marker.color[0] != trace.marker.color[1]  # coloured by topic
