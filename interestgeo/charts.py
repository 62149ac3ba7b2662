"""Chart builders for the dashboard: pydeck Decks for H3 maps, plotly figures for timelines.

Pure functions from data frames to chart objects, kept out of the pages so they can be unit-tested
without a browser or Streamlit (this module never imports streamlit). Two rules every builder here
keeps:

- Maps render offline. `pdk.Deck(map_provider=None)` leaves the basemap out (Streamlit otherwise
  fetches Carto tiles from the internet); a basemap appears only when the config names a style.
- User text is never HTML. Tooltips use deck.gl's `text` mode (set with `innerText`) over one
  prebuilt string per object, and strings that deck.gl's JSON converter would treat as code
  (a leading `@@`) are defused before they reach the chart's data. Plotly reads a subset of
  HTML in labels (`<b>`, `<a href>`), so labels from data are entity-escaped (`plot_label`),
  which plotly shows back as the literal characters.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence

import h3
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pydeck as pdk
from pydeck.bindings.json_tools import default_serialize

__all__ = [
    "TOPIC_PALETTE",
    "inert_text",
    "plot_label",
    "cells_to_hex",
    "view_for_cells",
    "resolution_for_extent",
    "ramp_colors",
    "topic_colors",
    "hex_map",
    "count_map",
    "topic_map",
    "score_map",
    "points_map",
    "draw_region_figure",
    "trend_figure",
    "share_bar_figure",
    "share_timeline_figure",
    "drift_figure",
    "weights_figure",
    "hour_dow_figure",
    "user_timeline_figure",
    "rgb_hex",
    "CompactDeck",
]

# Qualitative colours for topics, distinguishable on a white background (plotly's Bold + Safe).
TOPIC_PALETTE: tuple[tuple[int, int, int], ...] = (
    (57, 105, 172), (242, 183, 1), (17, 165, 121), (231, 63, 116), (127, 60, 141),
    (230, 131, 16), (0, 134, 149), (128, 186, 90), (207, 28, 144), (249, 123, 114),
    (136, 204, 238), (153, 153, 51), (68, 170, 153), (170, 68, 153), (221, 204, 119),
)
# Colour of "other" topics beyond the palette and of cells with no topic.
OTHER_COLOR: tuple[int, int, int] = (165, 170, 153)
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


def cells_to_hex(cells: Iterable[int]) -> list[str]:
    """H3 cells (int64 inside the core) as the hex strings deck.gl's H3HexagonLayer wants."""
    return [h3.int_to_str(int(c)) for c in cells]


def view_for_cells(cells: Sequence[int], *, width_px: int = 1000, height_px: int = 500) -> pdk.ViewState:
    """A view centred on the cells that fits them all (New York when there are none)."""
    if len(cells) == 0:
        return pdk.ViewState(latitude=40.73, longitude=-73.94, zoom=10, pitch=0)
    latlng = np.array([h3.cell_to_latlng(h3.int_to_str(int(c))) for c in cells])
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


def hex_map(
    cells: Sequence[int],
    colors: np.ndarray | Sequence[Sequence[int]],
    tooltips: Sequence[str],
    *,
    map_style: str | None = None,
    height: int = 520,
    view: pdk.ViewState | None = None,
    layer_id: str = "cells",
) -> pdk.Deck:
    """An H3HexagonLayer map: one hexagon per cell with its RGBA colour and tooltip text."""
    if not (len(cells) == len(colors) == len(tooltips)):
        raise ValueError("cells, colors and tooltips must have the same length")
    data = [
        {"hex": h, "fill": [int(c) for c in color], "tooltip": inert_text(tip)}
        for h, color, tip in zip(cells_to_hex(cells), colors, tooltips, strict=True)
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
    return _deck([layer], view or view_for_cells(cells), map_style=map_style, height=height)


def count_map(aggregates: pd.DataFrame, *, map_style: str | None = None, view: pdk.ViewState | None = None) -> pdk.Deck:
    """Cells coloured by event count (log ramp); `aggregates` has columns cell, events, users."""
    tips = [f"{int(e):,} events\n{int(u):,} users" for e, u in zip(aggregates["events"], aggregates["users"], strict=True)]
    return hex_map(
        aggregates["cell"].tolist(), ramp_colors(aggregates["events"].to_numpy()), tips, map_style=map_style, view=view
    )


def topic_map(
    cells: pd.DataFrame,
    colors: dict[str, tuple[int, int, int]],
    *,
    map_style: str | None = None,
    view: pdk.ViewState | None = None,
) -> pdk.Deck:
    """Cells coloured by their dominant topic.

    `cells` has columns cell, topic (the dominant one), share (its share, 0-1) and tooltip (the
    plain text to show: counts and top topics); the share sets the opacity so a weak majority
    looks weaker than a clear one.
    """
    rgba = [
        (*colors.get(str(t), OTHER_COLOR), int(90 + 165 * float(np.clip(s, 0, 1))))
        for t, s in zip(cells["topic"], cells["share"], strict=True)
    ]
    return hex_map(cells["cell"].tolist(), rgba, cells["tooltip"].tolist(), map_style=map_style, view=view)


def score_map(cells: pd.DataFrame, *, map_style: str | None = None, view: pdk.ViewState | None = None) -> pdk.Deck:
    """Cells coloured by a query score (linear ramp); columns cell, score, tooltip."""
    return hex_map(
        cells["cell"].tolist(),
        ramp_colors(cells["score"].to_numpy(), log=False),
        cells["tooltip"].tolist(),
        map_style=map_style,
        view=view,
    )


def points_map(events: pd.DataFrame, *, map_style: str | None = None, height: int = 360,
               width_px: int = 600) -> pdk.Deck:
    """Dots in row order, earlier ones lighter (one person's places, least recently visited first);
    columns lat, lon, tooltip."""
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
    return _deck([layer], view, map_style=map_style, height=height)


def draw_region_figure(
    cells: pd.DataFrame, colors: dict[str, tuple[int, int, int]], *, height: int = 460
) -> go.Figure:
    """The cells as hexagon markers on lon/lat axes, ready for a lasso or box: a region to draw.

    pydeck has no drawing tool, and plotly's map traces report no lasso path, so this is a plain
    scatter: x = longitude, y = latitude, the y axis stretched by 1 / cos(latitude) so the city
    keeps its shape. The lasso's path comes back in data coordinates, i.e. lon/lat. `cells` has
    columns cell, topic, share (as `topic_map`).
    """
    latlng = np.array([h3.cell_to_latlng(h) for h in cells_to_hex(cells["cell"])]).reshape(-1, 2)
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
    """A daily trend line; `comparison` (shifted onto the current dates by the caller) dashed."""
    fig = go.Figure()
    mode = "lines+markers" if len(current) < 40 else "lines"  # a few days: show the points themselves
    fig.add_trace(go.Scatter(x=current["date"], y=current[y], name="selected period", mode=mode,
                             line={"color": rgb_hex(TOPIC_PALETTE[0]), "width": 2}))
    if comparison is not None and len(comparison):
        fig.add_trace(go.Scatter(x=comparison["date"], y=comparison[y], name="comparison period", mode=mode,
                                 line={"color": rgb_hex(OTHER_COLOR), "width": 2, "dash": "dash"}))
    fig.update_yaxes(title=y, rangemode="tozero")
    return _layout(fig, height=height)


def share_bar_figure(shares: pd.DataFrame, colors: dict[str, tuple[int, int, int]], *, height: int = 320) -> go.Figure:
    """Horizontal bars of topic shares (columns topic, share, optional index); doubles as the map legend."""
    ordered = shares.sort_values("share")
    text = [
        f"{s:.0%}" + (f" · index {i:.0f}" if "index" in ordered and pd.notna(i) else "")
        for s, i in zip(ordered["share"], ordered["index"] if "index" in ordered else [None] * len(ordered), strict=True)
    ]
    fig = go.Figure(go.Bar(
        x=ordered["share"], y=[plot_label(t) for t in ordered["topic"]], orientation="h",
        marker={"color": [rgb_hex(colors.get(str(t), OTHER_COLOR)) for t in ordered["topic"]]},
        text=text, textposition="auto", hovertemplate="%{y}: %{x:.1%}<extra></extra>",
    ))
    fig.update_xaxes(tickformat=".0%", rangemode="tozero")
    fig.update_layout(hovermode="closest")
    return _layout(fig, height=height)


def share_timeline_figure(
    shares: pd.DataFrame, colors: dict[str, tuple[int, int, int]], *, height: int = 340
) -> go.Figure:
    """Stacked area of topic shares over windows; columns window_start, topic, share."""
    fig = go.Figure()
    for topic, part in shares.groupby("topic", sort=False):
        fig.add_trace(go.Scatter(
            x=part["window_start"], y=part["share"], name=plot_label(topic), stackgroup="one", mode="lines",
            line={"width": 0.5, "color": rgb_hex(colors.get(str(topic), OTHER_COLOR))},
        ))
    fig.update_yaxes(tickformat=".0%", range=[0, 1])
    return _layout(fig, height=height)


def drift_figure(drift: pd.DataFrame, *, height: int = 280) -> go.Figure:
    """Drift magnitude per window with change points marked; columns window_start, distance, change_point."""
    fig = go.Figure(go.Scatter(x=drift["window_start"], y=drift["distance"], mode="lines+markers", name="drift",
                               line={"color": rgb_hex(TOPIC_PALETTE[0])}))
    if "change_point" in drift:
        cp = drift[drift["change_point"].astype(bool)]
        fig.add_trace(go.Scatter(x=cp["window_start"], y=cp["distance"], mode="markers", name="change point",
                                 marker={"color": rgb_hex(TOPIC_PALETTE[3]), "size": 12, "symbol": "diamond"}))
    fig.update_yaxes(title="1 − cosine to previous", rangemode="tozero")
    return _layout(fig, height=height)


def weights_figure(weights: pd.DataFrame, *, height: int = 320) -> go.Figure:
    """Side-by-side bars of event weights (shares, 0-1); columns label plus one numeric column per method."""
    methods = [c for c in weights.columns if c != "label"]
    fig = go.Figure()
    for i, m in enumerate(methods):
        fig.add_trace(go.Bar(y=[plot_label(v) for v in weights["label"]], x=weights[m], name=m, orientation="h",
                             marker={"color": rgb_hex(TOPIC_PALETTE[i % len(TOPIC_PALETTE)])}))
    fig.update_layout(barmode="group", hovermode="closest")
    fig.update_xaxes(tickformat=".0%")
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, height=height)


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
