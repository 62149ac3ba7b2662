"""Map: where people's interests are, as H3 hexagons, over time.

Widgets -> one core call -> `charts`:
- dominant topic: `analytics.region_map` (k threshold applied) -> `charts.topic_map` + legend;
- free-text query: `analytics.query_interest` -> `charts.score_map` + ranked cells + hour x day;
- expected next: `forecast.forecast_cells` (the next week's or day's leading topic per cell, with
  its backtest) -> `charts.topic_map` + legend;
- event counts (before the events are scored): `store.cell_aggregates`, or
  `store.time_filtered_cell_counts` with hours or days set -> `charts.count_map`;
- for analysts, the interest vectors of the datasets in view as Parquet (`export.vectors_parquet`, when asked).
Time playback steps through windows; cells picked on the map, or a polygon drawn around them
(a lasso on a plotly chart of the cells: pydeck has no drawing tool), become the region filter.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from interestgeo import charts, export
from interestgeo.cells import str_to_cells
from interestgeo.config import Config
from interestgeo.forecast import FORECAST_WINDOWS
from pages import _ui as ui
from pages._ui import forecast as fcui

MODES = ("Dominant topic", "Free-text query", "Expected next")
WINDOWS = ("whole period", "month", "week", "day")
AUTO = "auto"
# Tall enough to read a city, short enough to sit beside its controls in a 1280 x 800 window.
MAP_HEIGHT = 460
# Seconds per frame of the time playback: long enough to read the map.
FRAME_S = 0.8
# Playback stops after this many frames so a long daily series cannot hold the server.
MAX_FRAMES = 60


def page() -> None:
    started = ui.start_page("Map")
    if started is None:
        return
    config, filters = started
    resolutions = tuple(sorted(config.store.map_resolutions))
    if not ui.is_scored(config):
        st.info(f"Topics and free-text queries appear once the events are scored: {ui.SCORE_HINT}. "
                "Meanwhile: where the events are.")
        _count_map(config, filters, resolutions)
        return
    controls = st.columns([1.3, 1, 1])
    mode = controls[0].segmented_control("Colour by", MODES, default=MODES[0], key="map_mode",
                                         bind="query-params") or MODES[0]
    res_choice = controls[1].selectbox("Cell size (H3 resolution)", (AUTO, *resolutions), key="map_res",
                                       bind="query-params",
                                       help="Auto fits the region; coarser cells pool more people, so fewer are hidden.")
    resolution = _auto_resolution(filters, resolutions) if res_choice == AUTO else int(res_choice)
    if mode == MODES[1]:
        _query_map(config, filters, resolution, controls[2])
    elif mode == MODES[2]:
        window = controls[2].selectbox("Forecast window", FORECAST_WINDOWS, key="map_forecast_window",
                                       bind="query-params", help="The next week's or day's expected leading topic.")
        _forecast_map(config, filters, resolution, str(window))
    else:
        window = controls[2].selectbox("Time window", WINDOWS, key="map_window", bind="query-params")
        _topic_map(config, filters, resolution, None if window == WINDOWS[0] else str(window))
    if ui.role(config) == "analyst":  # the file holds user ids
        _vectors_download(config, filters)


def _vectors_download(config: Config, filters: ui.FilterState) -> None:
    """The datasets in view, every scored event with its interest vector, as Parquet (the file of
    `interestgeo export vectors`), built when clicked: Streamlit's deferred download."""
    every = ui.datasets(ui.db_path(config), ui.config_key(config))["dataset_id"]
    ids = filters.dataset_ids or tuple(int(d) for d in every)
    names = ", ".join(ui.md(n) for n in filters.dataset_names) or "every dataset"
    st.download_button("Download interest vectors (Parquet)", lambda: _vectors_parquet(config, ids),
                       file_name=f"interest-vectors-{'-'.join(map(str, ids))}.parquet",
                       mime="application/vnd.apache.parquet", key="map_vectors", icon=":material/download:",
                       help=f"Every scored event of {names} with its interest vector and its text's own embedding, "
                            "for pandas, kepler.gl or lonboard (the dates, hours, region and topic filters do not "
                            "apply). Holds user ids: for analysts only.")


def _vectors_parquet(config: Config, dataset_ids: tuple[int, ...]) -> bytes:
    with ui.store_for(config) as store:
        return export.vectors_parquet(store, config, dataset_ids, encoder=ui.text_encoder(ui.config_key(config)))


def _auto_resolution(filters: ui.FilterState, resolutions: tuple[int, ...]) -> int:
    """Fit the cell size to the region: the whole city, or the picked cells' extent."""
    extent_km = 40.0
    if filters.cells:
        view = charts.view_for_cells(filters.cells)
        extent_km = max(1.0, 40000 / 2 ** view.zoom * 4)
    elif filters.areas and len(filters.areas) == 1 and "(" in filters.areas[0]:
        extent_km = 4.0  # one neighbourhood
    return charts.resolution_for_extent(extent_km, resolutions)


def _hidden_note(hidden: int, k: int, window: str | None = None) -> str:
    """The same words for hidden cells in every mode of the map."""
    what = "cells" if window is None else f"cell × {window} groups"
    return f"{hidden:,} {what} hidden: fewer than k={k} people."


def _topic_map(config: object, filters: ui.FilterState, resolution: int, window: str | None) -> None:
    path, key = ui.db_path(config), ui.config_key(config)  # type: ignore[arg-type]
    result = ui.region_map(path, key, filters.to_filters(), resolution, window)
    k = config.privacy.k_min_users  # type: ignore[attr-defined]
    if result.cells.empty:
        st.info(f"No cell has at least {k} people for these filters ({result.hidden:,} hidden). "
                "Try larger cells, a longer time window or wider filters.")
        return
    frames = _frames(result.cells, window)
    chosen = frames[-1][0] if frames else None
    if window is not None and len(frames) > 1:
        labels = [label for label, _ in frames]
        busiest = labels[int(np.argmax([result.cells.loc[idx, "events"].sum() for _, idx in frames]))]
        slider, play = st.columns([5, 1], vertical_alignment="bottom")
        chosen = slider.select_slider("Window", options=labels, value=busiest, key="map_at",
                                      help="Starts at the busiest window.")
        playing = play.button("Play", icon=":material/play_arrow:", key="map_play",
                              help="Step through the windows on the map.")
    else:
        playing = False
    rows = _rows_for(frames, chosen)
    cells = result.cells.loc[rows].reset_index(drop=True)
    shares = result.shares.loc[rows].reset_index(drop=True)
    colors = ui.topic_colors(config)  # type: ignore[arg-type]
    view = _stable_view(config, filters, resolution)
    map_col, legend_col = st.columns([2.3, 1])
    drawing = legend_col.toggle("Draw a region", key="map_draw",
                                help="Lasso (or box) cells on a plain chart of the map to use as the region.")
    if drawing:
        with map_col:
            _draw_region(config, filters, resolution, colors)
        with legend_col:
            st.markdown("**Dominant topic**")
            _legend(cells, colors)
        return
    with map_col:
        outlines = ui.area_outlines(str(ui.AREAS_FILE))
        if playing:
            _play(frames, result, colors, config.app.map_style, view, outlines)  # type: ignore[attr-defined]
        deck = charts.topic_map(_with_tooltips(cells, shares, chosen), colors, view=view, outlines=outlines,
                                map_style=config.app.map_style)  # type: ignore[attr-defined]
        # Straight into the column, never through an st.empty: the empty's placeholder delta replaced
        # the map for a moment on every rerun, so the browser now and then unmounted it and built a
        # new deck.gl WebGL context (shaders and all): +0.2-0.3 s on a filter change.
        selection = st.pydeck_chart(deck, height=MAP_HEIGHT, on_select="rerun", selection_mode="multi-object",
                                    key=f"map_pick_{resolution}")
    with legend_col:
        st.markdown("**Dominant topic**")
        _legend(cells, colors)
        _pick_region(selection, resolution)
    period = chosen or "the selected period"
    st.caption(f"{len(cells):,} cells at resolution {resolution} in {period} · "
               f"{_hidden_note(result.hidden, k, window)}")
    ui.csv_download(lambda: ui.with_hex(pd.concat([cells.drop(columns=["topic_id"], errors="ignore"),
                                                   shares.add_prefix("share: ")], axis=1)),
                    f"map-topics-r{resolution}")


def _forecast_map(config: object, filters: ui.FilterState, resolution: int, window: str) -> None:
    """Each cell coloured by the topic expected to lead it in the next window after the data's last."""
    path, key = ui.db_path(config), ui.config_key(config)  # type: ignore[arg-type]
    result = fcui.cell_forecast(path, key, filters.to_filters(), resolution, window)
    k = config.privacy.k_min_users  # type: ignore[attr-defined]
    left_out = (f"{len(result.skipped):,} cells have too few {window}s with at least {k} people to forecast; "
                f"{result.hidden_regions:,} never reach {k} people (hidden).")
    if not result.regions:
        st.info(f"No cell can be forecast for these filters: {left_out} Try larger cells or wider filters.")
        return
    rows = []
    for region in result.regions:
        nxt = region.forecast[region.forecast["horizon"] == 1].sort_values("share", ascending=False)
        lead = nxt.iloc[0]
        tip = "\n".join(f"{t}: {100 * s:.0f}% ({100 * lo:.0f}-{100 * hi:.0f})" for t, s, lo, hi in
                        zip(nxt["topic"].head(3), nxt["share"].head(3), nxt["low"].head(3), nxt["high"].head(3),
                            strict=True))
        rows.append((int(str_to_cells([region.label])[0]), lead["topic"], float(lead["share"]),
                     f"expected next {window} ({lead['window_start']:%d %b %Y}):\n{tip}"))
    cells = pd.DataFrame(rows, columns=["cell", "topic", "share", "tooltip"])
    colors = ui.topic_colors(config)  # type: ignore[arg-type]
    map_col, legend_col = st.columns([2.3, 1])
    with map_col:
        deck = charts.topic_map(cells, colors, view=_stable_view(config, filters, resolution),
                                outlines=ui.area_outlines(str(ui.AREAS_FILE)),
                                map_style=config.app.map_style)  # type: ignore[attr-defined]
        st.pydeck_chart(deck, height=MAP_HEIGHT, key=f"map_forecast_{resolution}")
    with legend_col:
        st.markdown(f"**Expected to lead next {window}**")
        _legend(cells, colors)
    st.caption(f"{len(cells):,} cells at resolution {resolution} forecast after the {window} of "
               f"{result.origin:%d %b %Y}. {left_out}")
    st.caption(fcui.backtest_summary(result, window))
    ui.csv_download(lambda: ui.with_hex(cells.drop(columns=["tooltip"])), f"map-forecast-r{resolution}")


def _stable_view(config: object, filters: ui.FilterState, resolution: int) -> object:
    """The view that fits the region's cells over the whole period (`ui.whole_period`)."""
    path, key = ui.db_path(config), ui.config_key(config)  # type: ignore[arg-type]
    everywhen = ui.region_map(path, key, ui.whole_period(filters, config).to_filters(), resolution, None)  # type: ignore[arg-type]
    # The map column is ~640 px wide at 1280 px: fit the view to that, not to the full width.
    return charts.view_for_cells(everywhen.cells["cell"].unique().tolist(), width_px=640, height_px=MAP_HEIGHT)


def _play(frames: list[tuple[str, np.ndarray]], result: object, colors: dict[str, tuple[int, int, int]],
          map_style: str | None, view: object, outlines: list[list[list[float]]]) -> None:
    """The time playback: each window's map in turn, in one placeholder above the final map."""
    spot = st.empty()
    for label, idx in frames[-MAX_FRAMES:]:
        deck = charts.topic_map(_with_tooltips(result.cells.loc[idx], result.shares.loc[idx], label),  # type: ignore[attr-defined]
                                colors, map_style=map_style, view=view,  # type: ignore[arg-type]
                                outlines=outlines)
        spot.pydeck_chart(deck, height=MAP_HEIGHT)
        time.sleep(FRAME_S)
    spot.empty()


def _legend(cells: pd.DataFrame, colors: dict[str, tuple[int, int, int]]) -> None:
    """The topics leading somewhere on the map: a colour swatch, the topic (plain text), its share of cells."""
    legend = cells.groupby("topic").size().rename("cells").reset_index()
    legend["cells"] = 100 * legend["cells"] / legend["cells"].sum()
    legend = legend.sort_values("cells", ascending=False).reset_index(drop=True)
    legend.insert(0, " ", "")
    swatches = [f"background-color: {charts.rgb_hex(colors.get(str(t), charts.OTHER_COLOR))}" for t in legend["topic"]]
    styled = legend.style.apply(lambda _: swatches, subset=[" "])
    # Every row shown (at most one per topic) and the topic column takes the rest of the width: a
    # fixed height hid the last topics behind a scroll bar, a fixed width cut the longer names.
    st.dataframe(styled, hide_index=True, width="stretch", height="content",
                 column_config={" ": st.column_config.TextColumn(width=8),
                                "cells": st.column_config.NumberColumn("cells", format="%.0f%%", width=50)})
    st.caption("Colour: the topic that leads in the cell. Paler: it leads by less (a smaller share of the "
               "cell's interest).")


@ui.guarded_fragment
def _draw_region(config: object, filters: ui.FilterState, resolution: int,
                 colors: dict[str, tuple[int, int, int]]) -> None:
    """Every cell (whatever the region filter) on lon/lat axes; the lasso drawn becomes the region.

    A fragment: drawing reruns only this part; using the polygon reruns the whole app.
    """
    path, key = ui.db_path(config), ui.config_key(config)  # type: ignore[arg-type]
    everywhere = ui.region_map(path, key, filters.to_filters(region=False), resolution, None)
    event = st.plotly_chart(charts.draw_region_figure(everywhere.cells, colors, height=MAP_HEIGHT), width="stretch",
                            on_select="rerun", selection_mode=("lasso", "box"), key="map_draw_chart")
    corners = ui.polygon_from_selection(event.selection if event else None)
    if not corners:
        st.caption("Drag a lasso around the cells you want (the box tool is in the chart's toolbar).")
        return
    if st.button(f"Use the drawn polygon ({len(corners)} corners) as the region", key="use_polygon",
                 type="primary"):
        ui.set_drawn_polygon(corners)
        st.rerun()


def _frames(cells: pd.DataFrame, window: str | None) -> list[tuple[str, np.ndarray]]:
    """(label, row positions) per time window, oldest first; one frame without windows."""
    if window is None or "window_start" not in cells:
        return [("the selected period", cells.index.to_numpy())]
    out = []
    for start, part in cells.groupby("window_start", sort=True):
        stamp = pd.Timestamp(start)
        label = {"month": f"{stamp:%b %Y}", "week": f"week of {stamp:%d %b %Y}"}.get(window, f"{stamp:%a %d %b %Y}")
        out.append((label, part.index.to_numpy()))
    return out


def _rows_for(frames: list[tuple[str, np.ndarray]], chosen: str | None) -> np.ndarray:
    for label, idx in frames:
        if label == chosen:
            return idx
    return frames[-1][1]


def _with_tooltips(cells: pd.DataFrame, shares: pd.DataFrame, period: str | None) -> pd.DataFrame:
    """Cells plus plain tooltip text: counts and the top three topics with their shares."""
    values = shares.to_numpy()
    labels = np.asarray(shares.columns, dtype=object)
    top = np.argsort(-values, axis=1)[:, :3]
    tips = []
    for i, (events, users) in enumerate(zip(cells["events"], cells["users"], strict=True)):
        lines = [f"{int(events):,} events · {int(users):,} people"]
        lines += [f"{labels[j]}: {values[i, j]:.0%}" for j in top[i]]
        if period:
            lines.append(period)
        tips.append("\n".join(lines))
    return cells.assign(tooltip=tips).reset_index(drop=True)


def _pick_region(selection: object, resolution: int) -> None:
    """Offer the hexagons clicked on the map as the region filter."""
    objects = (getattr(selection, "selection", None) or {}).get("objects", {}) if selection else {}
    hexes = [o.get("hex") for o in objects.get("cells", []) if isinstance(o, dict) and o.get("hex")]
    if not hexes:
        st.caption("Click hexagons (Shift+click for several) to use them as the region.")
        return
    if st.button(f"Use {len(hexes)} selected cells as the region", key="use_cells", type="primary"):
        ui.set_picked_cells(tuple(int(c) for c in str_to_cells(hexes)))
        st.rerun()


def _query_map(config: object, filters: ui.FilterState, resolution: int, slot: object) -> None:
    # beside the other controls, not on a row of its own: at 1280x800 that row pushed the map's
    # lower half and its key below the fold
    phrase = slot.text_input("Where and when are people into…", key="q", bind="query-params",  # type: ignore[attr-defined]
                             placeholder="e.g. late-night food, jazz", max_chars=200).strip()
    if not phrase:
        st.info("Type a phrase: the map colours each cell by how much the people there care about it.")
        return
    path, key = ui.db_path(config), ui.config_key(config)  # type: ignore[arg-type]
    result = ui.query_interest(path, key, phrase, filters.to_filters(), resolution)
    k = config.privacy.k_min_users  # type: ignore[attr-defined]
    if result.cells.empty:
        st.info(f"No cell has at least {k} people for these filters ({result.hidden:,} hidden). "
                "Try larger cells or wider filters.")
        return
    tips = [
        f"“{phrase}” score {s:.3f} (rank {r})\n{int(e):,} events · {int(u):,} people\n{int(n):,} strongly interested"
        for s, r, e, u, n in zip(result.cells["score"], result.cells["rank"], result.cells["events"],
                                 result.cells["users"], result.cells["strong_users"], strict=True)
    ]
    st.caption(f"Dark = the people there care most about “{ui.md(phrase)}” (user-weighted mean affinity). "
               f"{_hidden_note(result.hidden, k)}")
    st.pydeck_chart(charts.score_map(result.cells.assign(tooltip=tips), outlines=ui.area_outlines(str(ui.AREAS_FILE)),
                                     map_style=config.app.map_style),  # type: ignore[attr-defined]
                    height=MAP_HEIGHT, key="query_map")
    left, right = st.columns([1, 1])
    with left:
        st.markdown("**Top cells**")
        top = ui.with_hex(result.cells.head(20))[["rank", "cell", "score", "events", "users", "strong_users"]]
        st.dataframe(top, hide_index=True, width="stretch", height=300,
                     column_config={"score": st.column_config.NumberColumn(format="%.3f")})
        ui.csv_download(lambda: ui.with_hex(result.cells), "query-cells")
    with right:
        st.markdown("**When** (local hour × day of week)")
        if result.time_profile.empty:
            st.info("No hour of the week has enough people to show.")
        else:
            profile = result.time_profile.rename(columns={"score": "value"})
            st.plotly_chart(charts.hour_dow_figure(profile), width="stretch", key="query_when")
            ui.csv_download(result.time_profile, "query-when")


def _count_map(config: object, filters: ui.FilterState, resolutions: tuple[int, ...]) -> None:
    """Event counts per cell and window straight from the store (no scoring needed)."""
    controls = st.columns([1, 1, 3])
    window = controls[0].selectbox("Window", ("week", "day", "hour"), key="count_window", bind="query-params")
    resolution = controls[1].selectbox("Cell size (H3 resolution)", resolutions,
                                       index=resolutions.index(charts.resolution_for_extent(40.0, resolutions)),
                                       key="count_res", bind="query-params")
    path, key = ui.db_path(config), ui.config_key(config)  # type: ignore[arg-type]
    wanted = filters.to_filters()
    if wanted.hours or wanted.days_of_week:  # the precomputed counts hold every hour and day
        frame, hidden = ui.time_filtered_cell_counts(path, key, int(resolution), str(window), filters.dataset_ids,
                                                     wanted.hours, wanted.days_of_week)
    else:
        frame, hidden = ui.cell_aggregates(path, key, int(resolution), str(window), filters.dataset_ids)
    k = config.privacy.k_min_users  # type: ignore[attr-defined]
    stamps = pd.Series(pd.to_datetime(frame["window_start"]).unique()).sort_values()
    stamps = stamps[(stamps.dt.date >= filters.start) & (stamps.dt.date <= filters.end)].tolist()
    if not stamps:
        st.info(f"No cell has at least {k} people in any {window} of the selected dates. "
                "Try larger cells, a longer window or wider dates.")
        return
    fmt = {"hour": "%Y-%m-%d %H:00", "day": "%a %d %b %Y", "week": "week of %d %b %Y"}[str(window)]
    labels = [f"{s:{fmt}}" for s in stamps]
    per_window = frame.groupby(pd.to_datetime(frame["window_start"]))["events"].sum()
    busiest = labels[int(np.argmax([per_window.get(s, 0) for s in stamps]))]
    with controls[2]:
        if len(labels) > 1:
            chosen = st.select_slider("Window", options=labels, value=busiest, key="count_at",
                                      help="Starts at the busiest window.")
        else:
            chosen = labels[0]
            st.markdown(f"**Window**  \n{chosen}")
    current = frame[pd.to_datetime(frame["window_start"]) == stamps[labels.index(chosen)]].reset_index(drop=True)
    view = charts.view_for_cells(frame["cell"].unique().tolist())
    st.pydeck_chart(charts.count_map(current, map_style=config.app.map_style, view=view,  # type: ignore[attr-defined]
                                     outlines=ui.area_outlines(str(ui.AREAS_FILE))),
                    height=MAP_HEIGHT, key="count_map")
    st.caption(f"{len(current):,} cells · {int(current['events'].sum()):,} events in this {window}. "
               f"{_hidden_note(hidden, k, str(window))} Light = few events, dark = many (log scale).")
    ignored = [name for name, on in (("region", filters.describe_region() != "Everywhere"),
                                     ("topic", filters.topic is not None)) if on]
    if ignored:
        st.warning(f"These counts ignore the {' and '.join(ignored)} filter: it applies once the events are scored.",
                   icon=":material/filter_alt_off:")
    ui.csv_download(lambda: ui.with_hex(current), f"map-counts-{window}")


ui.run_page(page)
