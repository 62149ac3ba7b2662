"""Chart builders: offline maps, inert user text, colours that mean something, sensible views."""

from __future__ import annotations

import json
from pathlib import Path

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
    profile = pd.DataFrame({"dow": [0, 6], "hour": [0, 23], "value": [1.0, 2.0]})
    assert charts.hour_dow_figure(profile).data[0].z.shape == (7, 24)


def _two_topics_forecast() -> tuple[pd.DatetimeIndex, pd.DataFrame, pd.DataFrame]:
    """Four observed weeks of topics A and B, then two forecast weeks with their bands."""
    weeks = pd.date_range("2012-04-02", periods=6, freq="7D")
    history = pd.DataFrame({"window_start": list(weeks[:4]) * 2, "topic": ["A"] * 4 + ["B"] * 4,
                            "share": [0.6, 0.62, 0.6, 0.64, 0.4, 0.38, 0.4, 0.36]})
    ahead = pd.DataFrame({"window_start": list(weeks[4:]) * 2, "topic": ["A"] * 2 + ["B"] * 2,
                          "share": [0.63, 0.62, 0.37, 0.38], "low": [0.58, 0.56, 0.32, 0.31],
                          "high": [0.68, 0.69, 0.42, 0.45]})
    return weeks, history, ahead


def test_forecast_figure_continues_each_line_dashed_inside_its_band() -> None:
    weeks, history, ahead = _two_topics_forecast()
    fig = charts.forecast_figure(history, ahead, charts.topic_colors(["A", "B"]), ["A"])
    band, past, dashed = fig.data  # one topic asked for: its band, its history, its forecast
    assert band.fill == "toself" and list(band.y) == [0.68, 0.69, 0.56, 0.58]
    assert list(past.y) == [0.6, 0.62, 0.6, 0.64]
    assert dashed.line.dash == "dash" and list(dashed.y) == [0.64, 0.63, 0.62]  # from the last observed week
    assert pd.Timestamp(dashed.x[0]) == weeks[3]


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


def test_trend_line_breaks_where_days_are_missing() -> None:
    # data until 5 Aug, nothing (or hidden) until 3 Oct: the line must not bridge the gap
    days = list(pd.date_range("2012-07-20", "2012-08-05", freq="D")) + list(pd.date_range("2012-10-03", periods=30))
    frame = pd.DataFrame({"date": days, "events": np.arange(1, len(days) + 1)})
    (trace,) = charts.trend_figure(frame).data
    x = pd.to_datetime(pd.Series(trace.x))
    y = np.array(trace.y, dtype=float)
    gap = (x > "2012-08-05") & (x < "2012-10-03")
    assert gap.sum() == 58 and np.isnan(y[gap.to_numpy()]).all()
    assert not np.isnan(y[~gap.to_numpy()]).any() and trace.connectgaps is False
    assert y[~gap.to_numpy()].tolist() == frame["events"].tolist()  # the data themselves unchanged


def test_a_lone_day_between_gaps_still_shows_as_a_point() -> None:
    days = list(pd.date_range("2012-04-01", periods=50)) + [pd.Timestamp("2012-06-01")] \
        + list(pd.date_range("2012-06-10", periods=5))
    (trace,) = charts.trend_figure(pd.DataFrame({"date": days, "events": 1})).data
    sizes = dict(zip(pd.to_datetime(pd.Series(trace.x)), trace.marker.size, strict=True))
    assert sizes[pd.Timestamp("2012-06-01")] > 0 and sizes[pd.Timestamp("2012-04-10")] == 0


def test_index_is_written_on_the_bars_only_when_it_differs_from_all_the_data() -> None:
    colors = charts.topic_colors(["A", "B"])
    everything = pd.DataFrame({"topic": ["A", "B"], "share": [0.6, 0.4], "index": [100.0, 100.2]})
    narrowed = everything.assign(index=[150.0, 67.0])
    assert not charts.index_matters(everything) and charts.index_matters(narrowed)
    assert all("index" not in t for t in charts.share_bar_figure(everything, colors).data[0].text)
    assert "60% · index 150" in charts.share_bar_figure(narrowed, colors).data[0].text


def test_the_share_bar_spec_draws_the_largest_share_on_top_with_the_figures_labels() -> None:
    colors = charts.topic_colors(["A", "B"])
    frame = pd.DataFrame({"topic": ["B", "A", "<b>C</b>"], "share": [0.3, 0.6, 0.1], "index": [150.0, 67.0, 100.0]})
    rows = charts.share_bar_spec(frame, colors)["data"]["values"]
    assert [r["topic"] for r in rows] == ["A", "B", "<b>C</b>"]  # Vega-Lite draws text as text: unescaped
    assert [r["label"] for r in rows] == ["60% · index 67", "30% · index 150", "10% · index 100"]
    assert rows[0]["color"] == charts.rgb_hex(colors["A"]) and rows[2]["color"] == charts.rgb_hex(charts.OTHER_COLOR)
    plain = charts.share_bar_spec(frame.assign(index=100.0), colors)["data"]["values"]
    assert [r["label"] for r in plain] == ["60%", "30%", "10%"]  # an index of 100 everywhere says nothing
    json.dumps(charts.share_bar_spec(frame, colors))  # what Streamlit sends: plain JSON


def test_the_trend_spec_breaks_its_line_at_missing_days_and_dashes_the_comparison() -> None:
    days = list(pd.date_range("2012-04-01", periods=50)) + [pd.Timestamp("2012-06-01")] \
        + list(pd.date_range("2012-06-10", periods=5))
    current = pd.DataFrame({"date": days, "events": np.arange(1, len(days) + 1)})
    spec = charts.trend_spec(current, current.assign(events=1))
    mine = {r["date"]: r for r in spec["data"]["values"] if r["series"] == "selected period"}
    # every day from the first to the last, null where there is no data: the gap is not bridged
    assert len(mine) == (days[-1] - days[0]).days + 1
    assert mine["2012-05-25"]["value"] is None and mine["2012-06-01"]["value"] == 51
    assert [r["value"] for r in mine.values() if r["value"] is not None] == current["events"].tolist()
    assert mine["2012-06-01"]["point"] and not mine["2012-04-10"]["point"]  # a lone day is a point
    assert spec["layer"][0]["mark"]["invalid"] == "break-paths-filter-domains"  # nulls break the line
    dash = spec["encoding"]["strokeDash"]["scale"]
    assert dash["domain"] == ["selected period", "comparison period"] and dash["range"][1] != [1, 0]
    alone = charts.trend_spec(current)
    assert set(pd.DataFrame(alone["data"]["values"])["series"]) == {"selected period"}
    assert alone["encoding"]["color"]["legend"] is None  # one line: no legend
    json.dumps(spec)


def test_topic_share_stack_reaches_100_percent_with_an_other_band() -> None:
    weeks = pd.date_range("2012-04-02", periods=3, freq="W-MON")
    rng = np.random.default_rng(0)
    raw = rng.random((3, 10))
    shares = pd.DataFrame({"window_start": np.repeat(weeks, 10), "topic": [f"t{i}" for i in range(10)] * 3,
                           "share": (raw / raw.sum(axis=1, keepdims=True)).ravel()})
    top = charts.top_topic_shares(shares, 8)
    assert top["topic"].nunique() == 9 and charts.OTHER_TOPICS in set(top["topic"])
    assert np.allclose(top.groupby("window_start")["share"].sum(), 1.0)
    spec = charts.share_timeline_spec(top, charts.topic_colors([f"t{i}" for i in range(10)]))
    rows = pd.DataFrame(spec["data"]["values"])
    assert np.allclose(rows.groupby("window")["share"].sum(), 1.0)
    assert spec["encoding"]["y"]["stack"] == "zero" and spec["encoding"]["order"]["field"] == "rank"
    scale = spec["encoding"]["color"]["scale"]
    assert scale["domain"][-1] == charts.OTHER_TOPICS and scale["range"][-1] == charts.rgb_hex(charts.OTHER_COLOR)
    # the largest topic at the bottom of the stack, the grey band on top
    assert rows.groupby("topic")["rank"].first().sort_values().index.tolist() == scale["domain"]
    json.dumps(spec)
    assert charts.top_topic_shares(shares, 10)["topic"].nunique() == 10  # nothing left over: no band


def test_stacked_timelines_share_their_x_range_and_y_axis_width() -> None:
    weeks = pd.date_range("2012-04-02", periods=4, freq="W-MON")
    shares = pd.DataFrame({"window_start": weeks, "topic": "A", "share": 1.0})
    drift = pd.DataFrame({"window_start": weeks[1:], "distance": [0.01, 0.02, 0.005], "change_point": False})
    span = (weeks[0], weeks[-1])
    top = charts.share_timeline_spec(shares, charts.topic_colors(["A"]), x_range=span)
    bottom = charts.drift_spec(drift, x_range=span)
    assert top["encoding"]["x"]["scale"] == bottom["encoding"]["x"]["scale"]
    first, last = top["encoding"]["x"]["scale"]["domain"]
    assert (first["month"], first["date"], last["date"], first["utc"]) == (4, 2, 23, True)
    assert top["data"]["values"][0]["window"] == 1333324800000.0  # 2 Apr 2012 00:00 UTC, on a UTC scale
    assert top["encoding"]["x"]["scale"]["type"] == "utc"  # the day the data says, in any time zone
    # one fixed width for the y axes (labels "100%" and "0.02" differ), so both plot areas start at one x
    axes = [spec["encoding"]["y"]["axis"] for spec in (top, bottom)]
    assert all(a["minExtent"] == a["maxExtent"] == axes[0]["minExtent"] for a in axes)
    assert all(isinstance(spec["encoding"]["y"]["title"], str) for spec in (top, bottom))  # one line each


def _no_integers(spec: dict) -> bool:
    """Streamlit sends a spec's rows as Arrow, whose int64 reaches Vega as BigInt (not drawn)."""
    return not any(isinstance(v, int) for row in spec["data"]["values"] for v in row.values())


def test_the_share_timeline_spec_fills_a_topics_missing_window_with_zero() -> None:
    weeks = pd.date_range("2012-04-02", periods=3, freq="W-MON")
    shares = pd.DataFrame({"window_start": [*weeks, weeks[0], weeks[2]], "topic": ["美食"] * 3 + ["<b>B</b>"] * 2,
                           "share": [1.0, 1.0, 0.5, 0.0, 0.5]})
    spec = charts.share_timeline_spec(shares, charts.topic_colors(["美食"]))
    assert _no_integers(spec)
    rows = pd.DataFrame(spec["data"]["values"])
    assert len(rows) == 6 and rows.set_index(["day", "topic"]).loc[("2012-04-09", "<b>B</b>"), "share"] == 0.0
    assert set(rows["topic"]) == {"美食", "<b>B</b>"}  # Vega-Lite draws text as text: as it is


def test_the_drift_spec_marks_change_points_and_leaves_their_layer_out_when_there_are_none() -> None:
    days = pd.date_range("2012-04-03", periods=5, freq="D")
    drift = pd.DataFrame({"window_start": days, "distance": [0, 0.1, 0.5, 0.1, 0.1],
                          "change_point": [False, False, True, False, False]})
    spec = charts.drift_spec(drift)
    rows = pd.DataFrame(spec["data"]["values"])
    assert (rows["kind"] == "drift").sum() == 5
    assert rows[rows["kind"] == "change point"][["day", "distance"]].values.tolist() == [["2012-04-05", 0.5]]
    line, marks = spec["layer"]
    assert line["mark"]["type"] == "line" and marks["mark"]["shape"] == "diamond"
    assert spec["encoding"]["color"]["scale"]["domain"] == ["drift", "change point"]  # both in the legend
    assert _no_integers(spec)
    calm = charts.drift_spec(drift.assign(change_point=False))
    assert len(calm["layer"]) == 1 and calm["encoding"]["color"]["scale"]["domain"] == ["drift"]
    json.dumps(spec)


def test_the_forecast_spec_continues_each_line_dashed_inside_its_band_after_the_last_window() -> None:
    _, history, ahead = _two_topics_forecast()
    spec = charts.forecast_spec(history, ahead, charts.topic_colors(["A", "B"]), ["A", "missing"])
    rows = pd.DataFrame(spec["data"]["values"])
    assert set(rows["topic"]) == {"A"}  # one topic asked for that has data
    assert rows[rows["part"] == "observed"]["share"].tolist() == [0.6, 0.62, 0.6, 0.64]
    dashed = rows[rows["part"] == "forecast"]
    assert dashed["share"].tolist() == [0.64, 0.63, 0.62] and dashed["day"].iloc[0] == "2012-04-23"
    assert dashed["high"].tolist()[1:] == [0.68, 0.69] and dashed["low"].tolist()[1:] == [0.58, 0.56]
    band, line = spec["layer"][:2]
    assert band["mark"]["type"] == "area" and band["encoding"]["y2"] == {"field": "high"}
    assert band["transform"] == [{"filter": "datum.part === 'forecast'"}]  # the band only after the last window
    assert line["encoding"]["strokeDash"]["scale"]["range"][1] != [1, 0] and _no_integers(spec)
    json.dumps(spec)


def test_the_first_ten_topic_colours_are_far_apart() -> None:
    rgb = np.array(charts.TOPIC_PALETTE[:10] + (charts.OTHER_COLOR,), dtype=float)
    gaps = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(len(rgb), 1)]
    assert gaps.min() > 60  # the former palette had colours 45 apart (pinks about 50)


def _square(lon: float, lat: float, size: float = 0.05) -> dict:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_area_outlines_merge_areas_by_group_into_rings() -> None:
    # two touching squares in one borough merge into one outline; a third borough stays apart
    areas = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"borough": "A"}, "geometry": _square(-74.0, 40.7)},
        {"type": "Feature", "properties": {"borough": "A"}, "geometry": _square(-73.95, 40.7)},
        {"type": "Feature", "properties": {"borough": "B"}, "geometry": _square(-73.8, 40.6)},
    ]}
    rings = charts.area_outlines(areas)
    assert len(rings) == 2
    lons = sorted(min(p[0] for p in r) for r in rings)
    assert lons == pytest.approx([-74.0, -73.8])
    assert charts.area_outlines({"type": "FeatureCollection", "features": []}) == []


def test_outlines_are_drawn_with_the_hexagons_only_where_the_map_is() -> None:
    rings = [_square(-74.05, 40.65, 0.4)["coordinates"][0]]
    frame = pd.DataFrame({"cell": _cells(), "events": [1, 2, 3], "users": [1, 2, 3]})
    layers = _spec(charts.count_map(frame, outlines=rings))["layers"]
    assert [layer["@@type"] for layer in layers] == ["H3HexagonLayer", "PathLayer"]
    assert layers[1]["pickable"] is False and layers[1]["data"] == [{"path": rings[0]}]
    berlin = [h3.str_to_int(h3.latlng_to_cell(52.52, 13.40, 8))]
    elsewhere = charts.count_map(pd.DataFrame({"cell": berlin, "events": [1], "users": [1]}), outlines=rings)
    assert [layer["@@type"] for layer in _spec(elsewhere)["layers"]] == ["H3HexagonLayer"]
    places = pd.DataFrame({"lat": [40.70, 40.75], "lon": [-74.0, -73.95], "tooltip": ["a", "b"]})
    assert [layer["@@type"] for layer in _spec(charts.points_map(places, outlines=rings))["layers"]] == [
        "ScatterplotLayer", "PathLayer"]


def test_the_shipped_areas_make_small_outlines_around_new_york() -> None:
    path = Path(__file__).resolve().parents[1] / "data" / "nyc_neighborhoods.geojson"
    rings = charts.area_outlines(json.loads(path.read_text(encoding="utf-8")))
    points = np.concatenate([np.asarray(r) for r in rings])
    assert 5 <= len(rings) and points[:, 0].min() > -74.3 and points[:, 1].max() < 41.0
    assert len(json.dumps(rings, separators=(",", ":"))) < 60_000  # sent with every map


def test_weight_bars_carry_their_values_so_small_ones_still_read() -> None:
    weights = pd.DataFrame({"label": ["a", "b", "c"], "attention": [0.9, 0.098, 0.002], "occlusion": [0.5, 0.5, 0.0]})
    fig = charts.weights_figure(weights)
    assert list(fig.data[0].text) == ["90%", "10%", "<1%"] and list(fig.data[1].text) == ["50%", "50%", "0%"]
    assert fig.layout.xaxis.range[1] > 0.9  # room for the longest bar's label
