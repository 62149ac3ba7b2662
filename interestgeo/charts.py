"""Chart builders for the dashboard: pydeck Decks for H3 maps, plotly figures, and Vega-Lite specs
for the charts of the Overview and the Drift page.

Pure functions from data frames to chart objects, kept out of the pages so they can be unit-tested
without a browser or Streamlit (this module never imports streamlit). Two rules every builder here
keeps:

- Maps render offline. `pdk.Deck(map_provider=None)` leaves the basemap out (Streamlit otherwise
  fetches Carto tiles from the internet); a basemap appears only when the config names a style.
  In its place, faint outlines of the shipped named areas (`area_outlines`) say where things are.
- User text is never HTML. Tooltips use deck.gl's `text` mode (set with `innerText`) over one
  prebuilt string per object, and strings that deck.gl's JSON converter would treat as code
  (a leading `@@`) are defused before they reach the chart's data. Plotly reads a subset of
  HTML in labels (`<b>`, `<a href>`), so labels from data are entity-escaped (`plot_label`),
  which plotly shows back as the literal characters. Vega-Lite draws text as text (its
  tooltips escape HTML), so its specs carry labels as they are.

Why the Overview and Drift are Vega-Lite: a browser loads a chart library on its first chart, and
plotly.js is 4.7 MB, Streamlit's Vega-Lite about 1 MB. A fresh browser spent 0.7 s (1.5 s under
load) evaluating plotly.js before the first page showed anything of it, the longest part of that
page's first render; drawn in plotly, Drift was then the page that paid it. The other pages load
plotly when they first need it.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

import h3
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pydeck as pdk
from pydeck.bindings.json_tools import default_serialize

from interestgeo.cells import cells_to_str

__all__ = [
    "TOPIC_PALETTE",
    "OTHER_COLOR",
    "OTHER_TOPICS",
    "inert_text",
    "plot_label",
    "view_for_cells",
    "resolution_for_extent",
    "ramp_colors",
    "topic_colors",
    "area_outlines",
    "hex_map",
    "count_map",
    "topic_map",
    "score_map",
    "points_map",
    "draw_region_figure",
    "trend_figure",
    "daily_with_gaps",
    "index_matters",
    "share_bar_figure",
    "share_bar_spec",
    "trend_spec",
    "top_topic_shares",
    "share_timeline_spec",
    "drift_spec",
    "forecast_spec",
    "weights_figure",
    "hour_dow_figure",
    "user_timeline_figure",
    "rgb_hex",
    "CompactDeck",
    "forecast_figure",
]

# Qualitative colours for topics: Tableau's classic 10 (d3's category10), whose hues stay apart on
# white even when a cell is drawn pale, with its grey swapped for a dark ink so that no topic looks
# like "other"; then lighter partners for an 11th-15th topic. (The former Bold + Safe mix had three
# pinks and salmons that merged once translucent.)
TOPIC_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (55, 55, 55),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (197, 176, 213), (219, 219, 141),
)
# Colour of "other" topics beyond the palette, of the "Other topics" band and of cells with no topic.
OTHER_COLOR: tuple[int, int, int] = (199, 199, 199)
OTHER_TOPICS = "Other topics"
# Sequential ramp (light yellow -> dark red) for counts and query scores.
_RAMP = np.array([(255, 237, 160), (254, 178, 76), (240, 59, 32), (128, 0, 38)], dtype=float)
# Opacity of hexagons: opaque enough to read, translucent enough to see a basemap under them.
_ALPHA = 200


def inert_text(value: object) -> str:
    """`value` as plain text that deck.gl's JSON converter leaves alone.

    The converter turns strings starting with `@@=` into expressions and `@@#` into constants,
    wherever they appear in the spec, data included. A zero-width joiner after the first `@`
    keeps the text readable and inert.
    """
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return "@\u200d" + text[1:] if text.startswith("@@") else text


def plot_label(value: object) -> str:
    """`value` as a plotly label: `<`, `>` and `&` escaped so plotly shows them instead of parsing tags."""
    return html.escape("" if value is None else str(value), quote=False)


def view_for_cells(cells: Sequence[int], *, width_px: int = 1000, height_px: int = 500) -> pdk.ViewState:
    """A view centred on the cells that fits them all (New York when there are none)."""
    if len(cells) == 0:
        return pdk.ViewState(latitude=40.73, longitude=-73.94, zoom=10, pitch=0)
    latlng = np.array([h3.cell_to_latlng(h) for h in cells_to_str(cells)])
    return _fit_view(latlng[:, 0], latlng[:, 1], width_px, height_px)


def _fit_view(lat: np.ndarray, lon: np.ndarray, width_px: int, height_px: int) -> pdk.ViewState:
    """The view centred on the points' extent that fits it in width_px x height_px."""
    lat_min, lat_max, lon_min, lon_max = float(lat.min()), float(lat.max()), float(lon.min()), float(lon.max())
    # deck.gl's Web Mercator: at zoom z the world is 512 * 2**z px wide; pad the extent a little.
    lon_span = max(lon_max - lon_min, 0.005) * 1.15
    lat_span = max(lat_max - lat_min, 0.005) * 1.15
    lat_scale = math.cos(math.radians((lat_min + lat_max) / 2))
    zoom_x = math.log2(width_px * 360 / (512 * lon_span))
    zoom_y = math.log2(height_px * 360 * lat_scale / (512 * lat_span))
    zoom = float(np.clip(min(zoom_x, zoom_y), 2, 15))
    return pdk.ViewState(latitude=(lat_min + lat_max) / 2, longitude=(lon_min + lon_max) / 2, zoom=round(zoom, 2))


def resolution_for_extent(extent_km: float, resolutions: Sequence[int]) -> int:
    """The finest available resolution that keeps an area of `extent_km` across to ~40 cells.

    40 hexagons across a 1000 px map are ~25 px each: large enough to hover, small enough to
    show structure. A city (~40 km) gets resolution 7-8, a neighbourhood (~3 km) 9.
    """
    if not resolutions:
        raise ValueError("no map resolutions configured")
    best = min(resolutions)
    for res in sorted(resolutions):
        cell_km = h3.average_hexagon_edge_length(res, unit="km") * math.sqrt(3)
        if extent_km / cell_km <= 40:
            best = res
    return best


def ramp_colors(values: Sequence[float], *, log: bool = True) -> np.ndarray:
    """(N, 4) uint8 RGBA along the sequential ramp; `log` for counts spanning orders of magnitude."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return np.zeros((0, 4), dtype=np.uint8)
    if log:
        v = np.log1p(np.clip(v, 0, None))
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    t = np.zeros_like(v) if hi <= lo else (v - lo) / (hi - lo)
    t = np.nan_to_num(t) * (len(_RAMP) - 1)
    i = np.clip(np.floor(t).astype(int), 0, len(_RAMP) - 2)
    frac = (t - i)[:, None]
    rgb = _RAMP[i] * (1 - frac) + _RAMP[i + 1] * frac  # (N, 3)
    alpha = np.full((len(v), 1), _ALPHA, dtype=float)
    return np.hstack([rgb, alpha]).round().astype(np.uint8)


def topic_colors(topics: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """A stable colour per topic, in the order given (most important first)."""
    return {t: TOPIC_PALETTE[i] if i < len(TOPIC_PALETTE) else OTHER_COLOR for i, t in enumerate(topics)}


def rgb_hex(rgb: Sequence[int]) -> str:
    """`#rrggbb` for plotly from an RGB triple."""
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[:3]))


def area_outlines(geojson: dict, *, group_by: str = "borough", tolerance: float = 0.0008) -> list[list[list[float]]]:
    """The outer rings of the areas in a GeoJSON FeatureCollection, merged by `group_by` property,
    simplified (`tolerance` in degrees; 0.0008 is ~70 m) and rounded to 4 decimals (~10 m).

    They stand in for a basemap, which needs the internet: faint coastlines and borough borders
    tell a reader where the hexagons are. Merged and simplified, New York's 195 neighbourhoods
    (600 kB of GeoJSON) become ~30 kB of rings, sent with every map. Islets are dropped.
    """
    import shapely  # lazily: only maps with outlines need it

    features = [f for f in geojson.get("features", []) if f.get("geometry")]
    if not features:
        return []
    geoms = shapely.make_valid(shapely.from_geojson([json.dumps(f["geometry"]) for f in features]))
    groups = np.array([str((f.get("properties") or {}).get(group_by, i)) for i, f in enumerate(features)])
    rings: list[list[list[float]]] = []
    for group in sorted(set(groups)):
        merged = shapely.simplify(shapely.union_all(geoms[groups == group], grid_size=1e-4), tolerance)
        parts = shapely.get_parts(merged)
        parts = parts[(shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 5e-6)]  # polygons, not islets
        rings += [np.round(shapely.get_coordinates(shapely.get_exterior_ring(part)), 4).tolist() for part in parts]
    return rings


def _outlines_in_view(outlines: Sequence[Sequence[Sequence[float]]] | None, view: pdk.ViewState) -> bool:
    """Whether the view's centre lies within the outlines' extent (padded): only then do they help.

    Another city's data leaves the shipped New York outlines out of its map.
    """
    if not outlines:
        return False
    points = np.concatenate([np.asarray(r, dtype=float).reshape(-1, 2) for r in outlines])  # (N, 2) lon, lat
    lon, lat = float(view.longitude), float(view.latitude)
    pad = 0.1
    return bool(points[:, 0].min() - pad <= lon <= points[:, 0].max() + pad
                and points[:, 1].min() - pad <= lat <= points[:, 1].max() + pad)


def _outline_layers(outlines: Sequence[Sequence[Sequence[float]]] | None, view: pdk.ViewState) -> list[pdk.Layer]:
    """The outline layer, drawn last (over the data), when there are outlines and the view is in them."""
    return [_outline_layer(outlines)] if _outlines_in_view(outlines, view) else []


def _outline_layer(outlines: Sequence[Sequence[Sequence[float]]]) -> pdk.Layer:
    """Faint grey outlines, thin and not pickable.

    A PathLayer of the rings, not a GeoJsonLayer of polygons: deck.gl tessellates polygons even
    unfilled, and with it a warm Map filter change took 1.4-1.7 s in one browser round of three,
    and the User page's first render 1.6-1.9 s instead of 0.6 s.
    """
    return pdk.Layer(
        "PathLayer",
        id="areas",
        data=[{"path": ring} for ring in outlines],
        get_path="path",
        get_color=[90, 90, 90, 110],
        width_min_pixels=1,
        pickable=False,
    )


def hex_map(
    cells: Sequence[int],
    colors: np.ndarray | Sequence[Sequence[int]],
    tooltips: Sequence[str],
    *,
    map_style: str | None = None,
    height: int = 520,
    view: pdk.ViewState | None = None,
    layer_id: str = "cells",
    outlines: Sequence[Sequence[Sequence[float]]] | None = None,
) -> pdk.Deck:
    """An H3HexagonLayer map: one hexagon per cell with its RGBA colour and tooltip text.

    `outlines` (rings of lon/lat, from `area_outlines`) are drawn faintly over the hexagons when
    the view is within them.
    """
    if not (len(cells) == len(colors) == len(tooltips)):
        raise ValueError("cells, colors and tooltips must have the same length")
    data = [
        {"hex": h, "fill": [int(c) for c in color], "tooltip": inert_text(tip)}
        for h, color, tip in zip(cells_to_str(cells), colors, tooltips, strict=True)
    ]
    layer = pdk.Layer(
        "H3HexagonLayer",
        id=layer_id,
        data=data,
        get_hexagon="hex",
        get_fill_color="fill",
        get_line_color=[255, 255, 255, 120],
        line_width_min_pixels=0.5,
        stroked=True,
        filled=True,
        extruded=False,
        pickable=True,
        auto_highlight=True,
    )
    view = view or view_for_cells(cells)
    # Drawn after (over) the hexagons, thin and faint: under them they would vanish wherever there is
    # data, and the hexagons stay the first layer, the one selections and readers of the spec expect.
    return _deck([layer, *_outline_layers(outlines, view)], view, map_style=map_style, height=height)


def count_map(aggregates: pd.DataFrame, *, map_style: str | None = None, view: pdk.ViewState | None = None,
              outlines: Sequence[Sequence[Sequence[float]]] | None = None) -> pdk.Deck:
    """Cells coloured by event count (log ramp); `aggregates` has columns cell, events, users."""
    tips = [f"{int(e):,} events\n{int(u):,} users" for e, u in zip(aggregates["events"], aggregates["users"], strict=True)]
    return hex_map(aggregates["cell"].tolist(), ramp_colors(aggregates["events"].to_numpy()), tips,
                   map_style=map_style, view=view, outlines=outlines)


def topic_map(
    cells: pd.DataFrame,
    colors: dict[str, tuple[int, int, int]],
    *,
    map_style: str | None = None,
    view: pdk.ViewState | None = None,
    outlines: Sequence[Sequence[Sequence[float]]] | None = None,
) -> pdk.Deck:
    """Cells coloured by their dominant topic.

    `cells` has columns cell, topic (the dominant one), share (its share, 0-1) and tooltip (the
    plain text to show: counts and top topics); the share sets the opacity so a weak majority
    looks weaker than a clear one.
    """
    rgba = [
        (*colors.get(str(t), OTHER_COLOR), int(120 + 135 * float(np.clip(s, 0, 1))))
        for t, s in zip(cells["topic"], cells["share"], strict=True)
    ]
    return hex_map(cells["cell"].tolist(), rgba, cells["tooltip"].tolist(), map_style=map_style, view=view,
                   outlines=outlines)


def score_map(cells: pd.DataFrame, *, map_style: str | None = None, view: pdk.ViewState | None = None,
              outlines: Sequence[Sequence[Sequence[float]]] | None = None) -> pdk.Deck:
    """Cells coloured by a query score (linear ramp); columns cell, score, tooltip."""
    return hex_map(
        cells["cell"].tolist(),
        ramp_colors(cells["score"].to_numpy(), log=False),
        cells["tooltip"].tolist(),
        map_style=map_style,
        view=view,
        outlines=outlines,
    )


def points_map(events: pd.DataFrame, *, map_style: str | None = None, height: int = 360,
               width_px: int = 600, outlines: Sequence[Sequence[Sequence[float]]] | None = None) -> pdk.Deck:
    """Dots in row order, earlier ones lighter (one person's places, least recently visited first);
    columns lat, lon, tooltip. `outlines` as in `hex_map`."""
    n = len(events)
    age = np.linspace(0.25, 1.0, n) if n else np.zeros(0)
    data = [
        {"position": [float(lon), float(lat)], "fill": [57, 105, 172, int(255 * a)], "tooltip": inert_text(tip)}
        for lat, lon, tip, a in zip(events["lat"], events["lon"], events["tooltip"], age, strict=True)
    ]
    layer = pdk.Layer(
        "ScatterplotLayer",
        id="events",
        data=data,
        get_position="position",
        get_fill_color="fill",
        get_radius=40,
        radius_min_pixels=4,
        radius_max_pixels=12,
        pickable=True,
    )
    # Every dot in view: a mean-centred view with a fixed zoom left a person's outlying places off the map.
    view = _fit_view(events["lat"].to_numpy(float), events["lon"].to_numpy(float), width_px, height) if n \
        else view_for_cells([])
    return _deck([layer, *_outline_layers(outlines, view)], view, map_style=map_style, height=height)


def draw_region_figure(
    cells: pd.DataFrame, colors: dict[str, tuple[int, int, int]], *, height: int = 460
) -> go.Figure:
    """The cells as hexagon markers on lon/lat axes, ready for a lasso or box: a region to draw.

    pydeck has no drawing tool, and plotly's map traces report no lasso path, so this is a plain
    scatter: x = longitude, y = latitude, the y axis stretched by 1 / cos(latitude) so the city
    keeps its shape. The lasso's path comes back in data coordinates, i.e. lon/lat. `cells` has
    columns cell, topic, share (as `topic_map`).
    """
    latlng = np.array([h3.cell_to_latlng(h) for h in cells_to_str(cells["cell"])]).reshape(-1, 2)
    lat0 = float(latlng[:, 0].mean()) if len(latlng) else 40.73
    hover = [f"{plot_label(t)}: {float(s):.0%}" for t, s in zip(cells["topic"], cells["share"], strict=True)]
    fig = go.Figure(go.Scatter(
        x=np.round(latlng[:, 1], 5), y=np.round(latlng[:, 0], 5), mode="markers",
        marker={"symbol": "hexagon", "size": 9, "line": {"width": 0},
                "color": [rgb_hex(colors.get(str(t), OTHER_COLOR)) for t in cells["topic"]]},
        hovertext=hover, hoverinfo="text", showlegend=False,
    ))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1 / math.cos(math.radians(lat0)))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 0, "b": 0}, dragmode="lasso",
                      plot_bgcolor="white", hovermode="closest")
    return fig


class CompactDeck(pdk.Deck):
    """A pydeck Deck whose JSON is compact.

    pydeck's `to_json` indents its output: the city's map (a few hundred cells with their tooltips)
    went to the browser as 61 kB, of which 29 kB were indentation, on every rerun that changes it.
    """

    def to_json(self) -> str:
        return json.dumps(self, sort_keys=True, default=default_serialize, separators=(",", ":"))


def _deck(layers: list[pdk.Layer], view: pdk.ViewState, *, map_style: str | None, height: int) -> pdk.Deck:
    """A Deck with a text-only tooltip; no basemap unless a style is configured."""
    tooltip = {"text": "{tooltip}"}
    if map_style:
        return CompactDeck(layers=layers, initial_view_state=view, map_provider="carto", map_style=map_style,
                           tooltip=tooltip, height=height)
    return CompactDeck(layers=layers, initial_view_state=view, map_provider=None, tooltip=tooltip, height=height)


def _layout(fig: go.Figure, *, height: int, title: str | None = None) -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        title={"text": title} if title else None,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
        hovermode="x unified",
    )
    return fig


def trend_figure(
    current: pd.DataFrame, comparison: pd.DataFrame | None = None, *, y: str = "events", height: int = 300
) -> go.Figure:
    """A daily trend line; `comparison` (shifted onto the current dates by the caller) dashed.

    Days missing from a frame (no data, or hidden by the privacy threshold) are gaps in its line,
    not straight segments drawn across them as if there were data.
    """
    fig = go.Figure()
    series = [(current, "selected period", {"color": rgb_hex(TOPIC_PALETTE[0]), "width": 2})]
    if comparison is not None and len(comparison):
        series.append((comparison, "comparison period", {"color": "#7f7f7f", "width": 2, "dash": "dash"}))
    for frame, name, line in series:
        daily = daily_with_gaps(frame, y)
        values = daily.to_numpy(dtype=float)
        fig.add_trace(go.Scatter(x=daily.index, y=values, name=name, mode="lines+markers", connectgaps=False,
                                 line=line, marker={"color": line["color"], "size": _point_sizes(values)}))
    fig.update_yaxes(title=y, rangemode="tozero")
    return _layout(fig, height=height)


def daily_with_gaps(frame: pd.DataFrame, y: str) -> pd.Series:
    """`frame[y]` by `frame["date"]` over every day from the first to the last, NaN on days not in it."""
    values = pd.Series(frame[y].to_numpy(dtype=float), index=pd.to_datetime(frame["date"]).dt.normalize())
    values = values.groupby(level=0).sum().sort_index()
    if values.empty:
        return values
    return values.reindex(pd.date_range(values.index[0], values.index[-1], freq="D"))


def _point_sizes(values: np.ndarray) -> list[int]:
    """Marker sizes: every point when there are few, else only the days with no neighbour to join
    (a line needs two points, so a lone day between gaps would otherwise not show at all)."""
    present = ~np.isnan(values)
    if present.sum() < 40:
        return [6] * len(values)
    before = np.r_[False, present[:-1]]
    after = np.r_[present[1:], False]
    return [4 if p and not (b or a) else 0 for p, b, a in zip(present, before, after, strict=True)]


def index_matters(shares: pd.DataFrame) -> bool:
    """Whether the `index` column (share against all the data, 100 = as common) says anything.

    With no filter narrowing the data every index is 100: shown on each bar it is noise.
    """
    return "index" in shares and bool((shares["index"].dropna().round() != 100).any())


def share_bar_figure(shares: pd.DataFrame, colors: dict[str, tuple[int, int, int]], *, height: int = 320) -> go.Figure:
    """Horizontal bars of topic shares (columns topic, share, optional index); doubles as the map legend.

    The index is written on the bars only when it differs from the whole data set (`index_matters`).
    """
    ordered = shares.sort_values("share")
    indices = ordered["index"] if index_matters(ordered) else [None] * len(ordered)
    text = [f"{s:.0%}" + (f" · index {i:.0f}" if pd.notna(i) else "")
            for s, i in zip(ordered["share"], indices, strict=True)]
    fig = go.Figure(go.Bar(
        x=ordered["share"], y=[plot_label(t) for t in ordered["topic"]], orientation="h",
        marker={"color": [rgb_hex(colors.get(str(t), OTHER_COLOR)) for t in ordered["topic"]]},
        text=text, textposition="auto", hovertemplate="%{y}: %{x:.1%}<extra></extra>",
    ))
    fig.update_xaxes(tickformat=".0%", rangemode="tozero")
    fig.update_layout(hovermode="closest")
    return _layout(fig, height=height)


def share_bar_spec(shares: pd.DataFrame, colors: dict[str, tuple[int, int, int]], *, height: int = 320) -> dict:
    """`share_bar_figure` as a Vega-Lite spec: the largest share on top, each bar its topic's colour,
    its share (and index, when it says something: `index_matters`) written after it."""
    ordered = shares.sort_values("share", ascending=False)
    indices = ordered["index"] if index_matters(ordered) else [None] * len(ordered)
    rows = [{"topic": str(t), "share": float(s), "color": rgb_hex(colors.get(str(t), OTHER_COLOR)),
             "label": f"{s:.0%}" + (f" · index {i:.0f}" if pd.notna(i) else "")}
            for t, s, i in zip(ordered["topic"], ordered["share"], indices, strict=True)]
    # room on the right of the longest bar for its label
    top = max((r["share"] for r in rows), default=0.0) * (2.0 if index_matters(ordered) else 1.25) or 1.0
    return {
        "height": height,
        "data": {"values": rows},
        "encoding": {
            "y": {"field": "topic", "type": "nominal", "sort": None, "title": None,
                  "axis": {"labelLimit": 180}},
            "x": {"field": "share", "type": "quantitative", "title": None,
                  "axis": {"format": ".0%"}, "scale": {"domain": [0, top], "nice": False}},
            "tooltip": [{"field": "topic", "title": "topic"},
                        {"field": "share", "type": "quantitative", "format": ".1%", "title": "share"}],
        },
        "layer": [
            {"mark": "bar", "encoding": {"color": {"field": "color", "type": "nominal", "scale": None,
                                                   "legend": None}}},
            {"mark": {"type": "text", "align": "left", "dx": 3}, "encoding": {"text": {"field": "label"}}},
        ],
    }


def trend_spec(current: pd.DataFrame, comparison: pd.DataFrame | None = None, *, y: str = "events",
               height: int = 300) -> dict:
    """`trend_figure` as a Vega-Lite spec: the daily line, `comparison` (shifted onto the current
    dates by the caller) dashed and grey. Days missing from a frame are nulls, which break its line
    (no segment drawn across a gap), and a day with no neighbour to join is drawn as a point."""
    series = [(current, "selected period", rgb_hex(TOPIC_PALETTE[0]))]
    if comparison is not None and len(comparison):
        series.append((comparison, "comparison period", "#7f7f7f"))
    rows = []
    for frame, name, _ in series:
        daily = daily_with_gaps(frame, y)
        values = daily.to_numpy(dtype=float)
        for day, value, size in zip(daily.index, values, _point_sizes(values), strict=True):
            rows.append({"date": day.strftime("%Y-%m-%d"), "value": None if math.isnan(value) else float(value),
                         "series": name, "point": size > 0})
    names = [name for _, name, _ in series]
    # one legend (colour and dash merged), only when there are two lines
    legend = {"orient": "top", "symbolType": "stroke"} if len(series) > 1 else None
    encoding = {
        "x": {"field": "date", "type": "temporal", "title": None},
        "y": {"field": "value", "type": "quantitative", "title": y},
        "color": {"field": "series", "type": "nominal", "title": None, "legend": legend,
                  "scale": {"domain": names, "range": [color for _, _, color in series]}},
        "strokeDash": {"field": "series", "type": "nominal", "title": None, "legend": legend,
                       "scale": {"domain": names, "range": [[1, 0], [6, 4]][:len(names)]}},
    }
    tooltip = [{"field": "date", "type": "temporal", "title": "day"},
               {"field": "value", "type": "quantitative", "title": y, "format": ","},
               {"field": "series", "title": "period"}]
    return {
        "height": height,
        "data": {"values": rows},
        "encoding": encoding,
        "layer": [
            # a null breaks the line there (where "filter" would join the days either side of a gap)
            {"mark": {"type": "line", "strokeWidth": 2, "invalid": "break-paths-filter-domains"}},
            # sized rather than filtered: a layer filtered down to no rows logs warnings in the browser
            {"mark": {"type": "point", "filled": True, "opacity": 1},
             "encoding": {"size": {"condition": {"test": "datum.point", "value": 30}, "value": 0}}},
            # every day hoverable, drawn as a point or not
            {"mark": {"type": "point", "size": 80, "opacity": 0}, "encoding": {"tooltip": tooltip}},
        ],
    }


def top_topic_shares(shares: pd.DataFrame, top: int) -> pd.DataFrame:
    """The `top` topics by mean share plus one "Other topics" row per window holding the rest.

    Columns window_start, topic, share in and out; the rows of a window keep summing to what they
    summed to (1 for shares of all topics), so a stack of them still reaches 100%.
    """
    order = shares.groupby("topic", sort=False)["share"].mean().sort_values(ascending=False, kind="stable")
    keep = order.index[:top]
    kept = shares[shares["topic"].isin(keep)]
    rest = shares[~shares["topic"].isin(keep)]
    if rest.empty:
        return kept.reset_index(drop=True)
    other = rest.groupby("window_start", sort=True)["share"].sum().rename("share").reset_index()
    other["topic"] = OTHER_TOPICS
    # keep's order first (largest at the bottom of the stack), the rest on top
    kept = kept.assign(_rank=kept["topic"].map({t: i for i, t in enumerate(keep)})).sort_values(
        ["_rank", "window_start"], kind="stable").drop(columns="_rank")
    return pd.concat([kept, other[["window_start", "topic", "share"]]], ignore_index=True)


# The timelines drawn one above the other (shares, drift) line up: the same x domain, and a y axis of
# one fixed width (ticks, labels and a one-line title) in each, so their plot areas start at one x.
_TIMELINE_AXIS = {"minExtent": 44, "maxExtent": 44}


def _ms(value: object) -> float:
    """A window's start as epoch milliseconds of its wall-clock time (drawn on a UTC scale, so a
    browser in any time zone shows the day the data says). A float: Streamlit sends a spec's rows as
    an Arrow table, whose 64-bit integers reach the browser as BigInts, which Vega cannot place."""
    ts = pd.Timestamp(value)
    return float((ts.tz_localize(None) if ts.tzinfo is not None else ts).value // 1_000_000)


def _utc_datetime(value: object) -> dict:
    """A window's start as a Vega-Lite DateTime on the UTC scale `_ms` places the rows on (a scale's
    domain of epoch milliseconds is not drawn in Streamlit: every row lands on the axis's start)."""
    ts = pd.Timestamp(value)
    return {"year": ts.year, "month": ts.month, "date": ts.day, "hours": ts.hour, "minutes": ts.minute, "utc": True}


def _window_x(x_range: tuple[object, object] | None) -> dict:
    """The x encoding of a timeline of windows: the `window` field (from `_ms`) on a UTC time scale,
    over `x_range` when given."""
    scale: dict = {"type": "utc"}
    if x_range is not None:
        scale["domain"] = [_utc_datetime(x_range[0]), _utc_datetime(x_range[1])]
    return {"field": "window", "type": "temporal", "title": None, "scale": scale}


def _topic_scale(topics: Sequence[str], colors: dict[str, tuple[int, int, int]]) -> dict:
    """Each topic its own colour (`OTHER_COLOR` past the known ones, and for `OTHER_TOPICS`)."""
    return {"domain": list(topics), "range": [rgb_hex(colors.get(t, OTHER_COLOR)) for t in topics]}


def share_timeline_spec(
    shares: pd.DataFrame, colors: dict[str, tuple[int, int, int]], *, height: int = 340,
    x_range: tuple[object, object] | None = None,
) -> dict:
    """Stacked areas of topic shares over windows as a Vega-Lite spec; columns window_start, topic,
    share (an `OTHER_TOPICS` band, from `top_topic_shares`, is drawn grey). The first topic is at
    the bottom of the stack and the top of the legend; a topic missing from a window is 0 there (a
    stack with a hole would draw the topics above it at the wrong height)."""
    topics = [str(t) for t in pd.unique(shares["topic"])]
    grid = (shares.assign(topic=shares["topic"].astype(str))
            .pivot_table(index="window_start", columns="topic", values="share", aggfunc="sum", fill_value=0.0)
            .reindex(columns=topics, fill_value=0.0).sort_index())
    rows = [{"window": _ms(start), "day": pd.Timestamp(start).strftime("%Y-%m-%d"), "topic": topic,
             "rank": float(rank), "share": float(share)}  # (a float: see _ms)
            for start, values in zip(grid.index, grid.to_numpy(dtype=float), strict=True)
            for rank, (topic, share) in enumerate(zip(topics, values, strict=True))]
    y = {"field": "share", "type": "quantitative", "stack": "zero", "title": "share of interest",
         "axis": {"format": ".0%", **_TIMELINE_AXIS}, "scale": {"domain": [0, 1], "nice": False}}
    return {
        "height": height,
        "data": {"values": rows},
        "encoding": {
            "x": _window_x(x_range),
            "y": y,
            "order": {"field": "rank", "type": "quantitative"},
            "color": {"field": "topic", "type": "nominal", "title": None, "scale": _topic_scale(topics, colors),
                      "legend": {"orient": "top", "columns": 3, "labelLimit": 200}},
        },
        "layer": [
            {"mark": {"type": "area", "line": {"strokeWidth": 0.5}}},
            # each window's share hoverable at its place in the stack
            {"mark": {"type": "point", "size": 60, "opacity": 0},
             "encoding": {"tooltip": [{"field": "topic", "title": "topic"}, {"field": "day", "title": "window"},
                                      {"field": "share", "type": "quantitative", "format": ".1%",
                                       "title": "share"}]}},
        ],
    }


def drift_spec(drift: pd.DataFrame, *, height: int = 280, x_range: tuple[object, object] | None = None) -> dict:
    """Drift magnitude per window with its change points marked (red diamonds), as a Vega-Lite spec;
    columns window_start, distance, change_point. The change points' layer is left out when there
    are none (a layer with no rows logs warnings in the browser)."""
    points = drift["change_point"].astype(bool) if "change_point" in drift else pd.Series(False, index=drift.index)
    rows = [{"window": _ms(start), "day": pd.Timestamp(start).strftime("%Y-%m-%d"), "distance": float(d),
             "kind": "drift"} for start, d in zip(drift["window_start"], drift["distance"], strict=True)]
    rows += [{**row, "kind": "change point"} for row, p in zip(list(rows), points, strict=True) if p]
    kinds = ["drift", "change point"] if points.any() else ["drift"]
    tooltip = [{"field": "day", "title": "window"},
               {"field": "distance", "type": "quantitative", "format": ".4f", "title": "drift"}]
    layers: list[dict] = [{"transform": [{"filter": "datum.kind === 'drift'"}],
                           "mark": {"type": "line", "point": True, "strokeWidth": 2},
                           "encoding": {"tooltip": tooltip}}]
    if points.any():
        layers.append({"transform": [{"filter": "datum.kind === 'change point'"}],
                       "mark": {"type": "point", "shape": "diamond", "filled": True, "size": 150, "opacity": 1},
                       "encoding": {"tooltip": [*tooltip, {"field": "kind", "title": "marked"}]}})
    return {
        "height": height,
        "data": {"values": rows},
        "encoding": {
            "x": _window_x(x_range),
            "y": {"field": "distance", "type": "quantitative", "title": "1 − cosine",
                  "axis": {**_TIMELINE_AXIS}},
            "color": {"field": "kind", "type": "nominal", "title": None,
                      "scale": {"domain": kinds, "range": [rgb_hex(TOPIC_PALETTE[0]), rgb_hex(TOPIC_PALETTE[3])][
                          :len(kinds)]},
                      "legend": {"orient": "top"}},
        },
        "layer": layers,
    }


def forecast_spec(
    history: pd.DataFrame, forecast: pd.DataFrame, colors: dict[str, tuple[int, int, int]], topics: Sequence[str],
    *, height: int = 300, x_range: tuple[object, object] | None = None,
) -> dict:
    """`forecast_figure` as a Vega-Lite spec: each topic's share over the windows, then dashed from
    its last window to its forecast, inside its band (low to high) after the last window."""
    rows: list[dict] = []
    drawn: list[str] = []
    for topic in topics:
        past = history[history["topic"] == topic].sort_values("window_start")
        ahead = forecast[forecast["topic"] == topic].sort_values("window_start")
        if past.empty or ahead.empty:
            continue
        drawn.append(str(topic))
        for start, share in zip(past["window_start"], past["share"], strict=True):
            rows.append({"window": _ms(start), "day": pd.Timestamp(start).strftime("%Y-%m-%d"), "topic": str(topic),
                         "share": float(share), "part": "observed"})
        # the dashes start at the last observed window, so they continue its line
        last = rows[-1]
        rows.append({**last, "part": "forecast", "low": last["share"], "high": last["share"]})
        for start, share, low, high in zip(ahead["window_start"], ahead["share"], ahead["low"], ahead["high"],
                                           strict=True):
            rows.append({"window": _ms(start), "day": pd.Timestamp(start).strftime("%Y-%m-%d"), "topic": str(topic),
                         "share": float(share), "low": float(low), "high": float(high), "part": "forecast"})
    tooltip = [{"field": "topic", "title": "topic"}, {"field": "day", "title": "window"},
               {"field": "share", "type": "quantitative", "format": ".1%", "title": "share"},
               {"field": "part", "title": "observed or forecast"}]
    forecast_only = [{"filter": "datum.part === 'forecast'"}]
    y = {"field": "share", "type": "quantitative", "title": "share of interest", "axis": {"format": ".0%"},
         "scale": {"zero": True}}
    return {
        "height": height,
        "data": {"values": rows},
        "encoding": {
            "x": _window_x(x_range),
            "color": {"field": "topic", "type": "nominal", "title": None, "scale": _topic_scale(drawn, colors),
                      # opaque symbols: the legend otherwise takes the band's faint colour
                      "legend": {"orient": "top", "labelLimit": 200, "symbolOpacity": 1}},
        },
        "layer": [
            {"transform": forecast_only, "mark": {"type": "area", "opacity": 0.15},
             "encoding": {"y": {**y, "field": "low"}, "y2": {"field": "high"}}},
            {"mark": {"type": "line", "strokeWidth": 1.5},
             "encoding": {"y": y, "strokeDash": {
                 "field": "part", "type": "nominal", "legend": None,
                 "scale": {"domain": ["observed", "forecast"], "range": [[1, 0], [6, 4]]}}}},
            {"transform": forecast_only, "mark": {"type": "point", "filled": True, "size": 20}, "encoding": {"y": y}},
            {"mark": {"type": "point", "size": 80, "opacity": 0}, "encoding": {"y": y, "tooltip": tooltip}},
        ],
    }


def forecast_figure(
    history: pd.DataFrame, forecast: pd.DataFrame, colors: dict[str, tuple[int, int, int]], topics: Sequence[str],
    *, height: int = 300,
) -> go.Figure:
    """Each topic's share over the windows (history: window_start, topic, share), then dashed to
    its forecast after the last window inside a band (forecast: window_start, topic, share, low, high)."""
    fig = go.Figure()
    for topic in topics:
        color = colors.get(str(topic), OTHER_COLOR)
        past = history[history["topic"] == topic].sort_values("window_start")
        ahead = forecast[forecast["topic"] == topic].sort_values("window_start")
        if past.empty or ahead.empty:
            continue
        x_band = [*ahead["window_start"], *ahead["window_start"][::-1]]
        fig.add_trace(go.Scatter(
            x=x_band, y=[*ahead["high"], *ahead["low"][::-1]], fill="toself", mode="lines", line={"width": 0},
            fillcolor="rgba({}, {}, {}, 0.15)".format(*color), hoverinfo="skip", showlegend=False,
            legendgroup=str(topic),
        ))
        fig.add_trace(go.Scatter(
            x=past["window_start"], y=past["share"], mode="lines", name=plot_label(topic), legendgroup=str(topic),
            line={"width": 1.5, "color": rgb_hex(color)}, hovertemplate="%{y:.1%}",
        ))
        fig.add_trace(go.Scatter(  # from the last observed window, so the dashes continue the line
            x=[past["window_start"].iloc[-1], *ahead["window_start"]], y=[past["share"].iloc[-1], *ahead["share"]],
            mode="lines+markers", showlegend=False, legendgroup=str(topic), hovertemplate="forecast %{y:.1%}",
            line={"width": 1.5, "color": rgb_hex(color), "dash": "dash"}, marker={"size": 4},
        ))
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", title="share of interest")
    return _layout(fig, height=height)


def weights_figure(weights: pd.DataFrame, *, height: int = 320) -> go.Figure:
    """Side-by-side bars of event weights (shares, 0-1) with their values written on them; columns
    label plus one numeric column per method."""
    methods = [c for c in weights.columns if c != "label"]
    fig = go.Figure()
    for i, m in enumerate(methods):
        fig.add_trace(go.Bar(y=[plot_label(v) for v in weights["label"]], x=weights[m], name=m, orientation="h",
                             marker={"color": rgb_hex(TOPIC_PALETTE[i % len(TOPIC_PALETTE)])},
                             text=[_share_text(v) for v in weights[m]], textposition="outside", cliponaxis=False,
                             textfont={"size": 10}))
    fig.update_layout(barmode="group", hovermode="closest", bargap=0.25)
    fig.update_xaxes(tickformat=".0%", range=[0, float(weights[methods].max().max()) * 1.12 + 0.03]
                     if methods and len(weights) else None)
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, height=height)


def _share_text(value: float) -> str:
    """A share as a bar label: whole percent, and "<1%" for a small share that is not nothing."""
    return "" if pd.isna(value) else ("<1%" if 0 < value < 0.005 else f"{value:.0%}")


def hour_dow_figure(profile: pd.DataFrame, *, height: int = 260) -> go.Figure:
    """Heatmap of a score by hour of day x day of week; columns dow (0=Mon), hour, value."""
    grid = profile.pivot_table(index="dow", columns="hour", values="value", aggfunc="sum").reindex(
        index=range(7), columns=range(24)
    )
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=list(range(24)), y=["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        colorscale="YlOrRd", hovertemplate="%{y} %{x}:00 — %{z:.3f}<extra></extra>",
    ))
    fig.update_xaxes(title="local hour", dtick=2)
    fig.update_layout(hovermode="closest")
    return _layout(fig, height=height)


def user_timeline_figure(
    events: pd.DataFrame, colors: dict[str, tuple[int, int, int]], *, height: int = 300
) -> go.Figure:
    """One user's events over (local) time, one row per topic; columns local_ts, topic, text."""
    fig = go.Figure()
    for topic, part in events.groupby("topic", sort=False):
        fig.add_trace(go.Scatter(
            x=part["local_ts"], y=[plot_label(topic)] * len(part), mode="markers", name=plot_label(topic),
            marker={"color": rgb_hex(colors.get(str(topic), OTHER_COLOR)), "size": 9},
            text=[plot_label(t) for t in part["text"]], hovertemplate="%{x}<br>%{text}<extra></extra>",
        ))
    fig.update_layout(showlegend=False, hovermode="closest")
    return _layout(fig, height=height)
