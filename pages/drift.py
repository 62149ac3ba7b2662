"""Drift: how the interests of a region moved over time, and which topics rose and fell.

Widgets -> `analytics.region_drift` (per region; k threshold applied) -> timelines of topic shares
and of drift magnitude with change points, and a rose/fell table; for week and day
windows `forecast.forecast_region` -> the next windows' shares with their band, what is expected to
rise, and how the forecast scored in its backtest. A second region (a named area) can be set
beside the sidebar's for comparison. The charts are Vega-Lite, not plotly: a fresh browser that
opens this page first should not wait for plotly.js to load (see `charts`).
"""

from __future__ import annotations

import streamlit as st

from interestgeo import charts
from interestgeo.forecast import FORECAST_WINDOWS
from pages import _ui as ui
from pages._ui import forecast as fcui

WINDOWS = ("week", "day", "month")
SIDEBAR_REGION = "the sidebar's region"
# Topics drawn one by one in the shares chart; more make a legend taller than the chart.
TOP_TOPICS = 8
# Topics drawn in the forecast chart: each is a line and a band, and more would overlap.
FORECAST_TOPICS = 5


def page() -> None:
    started = ui.start_page("Drift", needs_scores="Drift is measured on interest vectors, and none are stored yet")
    if started is None:
        return
    config, filters = started
    controls = st.columns([1, 2])
    window = controls[0].selectbox("Window", WINDOWS, key="drift_window", bind="query-params")
    other = controls[1].selectbox(
        "Compare with another region", list(ui.named_areas(str(ui.AREAS_FILE))), index=None, key="drift_vs",
        bind="query-params", placeholder="No comparison",
    )
    regions = [(filters.describe_region(), filters.to_filters())]
    if other:
        regions.append((ui.md(other), filters.to_filters(region=False).replace(geojson=ui.areas_geojson((other,)))))
    columns = st.columns(len(regions))
    for i, ((name, region), column) in enumerate(zip(regions, columns, strict=True)):
        with column:
            _region(config, name, region, str(window), i)


def _region(config: object, name: str, region: object, window: str, slot: int) -> None:
    drift = ui.region_drift(ui.db_path(config), ui.config_key(config), region, window)  # type: ignore[arg-type]
    st.subheader(name)
    k = config.privacy.k_min_users  # type: ignore[attr-defined]
    if len(drift.timeline) < 2:
        st.info(f"Fewer than two {window}s have at least {k} people here ({drift.hidden} hidden): "
                "nothing to compare. Try a shorter window, wider dates or a wider region.")
        return
    colors = ui.topic_colors(config)  # type: ignore[arg-type]
    top = charts.top_topic_shares(drift.shares, TOP_TOPICS)
    starts = drift.shares["window_start"]
    span = (starts.min(), starts.max())  # both charts on one x range, so the windows line up
    st.markdown(f"**Topic shares per {window}** (top {TOP_TOPICS} topics; the rest as “{charts.OTHER_TOPICS}”)")
    st.vega_lite_chart(charts.share_timeline_spec(top, colors, x_range=span), width="stretch", key=f"shares_{slot}")
    _forecast(config, region, window, drift.shares, colors, slot)
    st.markdown("**Drift**: how far each window's interests moved from the previous window's (1 − cosine)")
    st.vega_lite_chart(charts.drift_spec(drift.timeline, x_range=span), width="stretch", key=f"drift_{slot}")
    points = int(drift.timeline["change_point"].sum())
    st.caption(f"{points} change point(s) marked. {drift.hidden} {window}s hidden: fewer than {k} people.")
    downloads = [(drift.timeline, "timeline", "Download drift CSV"), (drift.shares, "shares", "Download shares CSV")]
    if not drift.topics.empty:
        downloads.insert(0, (drift.topics, "topics", "Download rose/fell CSV"))
        st.markdown("**Rose and fell** (after vs before the last change point, or the two halves)")
        rows = drift.topics
        both = rows.head(5).merge(rows.tail(5), how="outer") if len(rows) > 10 else rows
        # shares as percentages and the change in percentage points, one decimal throughout (rounded
        # here, so that a change of -0.02 pp reads "+0.0 pp", not "-0.0 pp")
        shown = both.sort_values("change", ascending=False).assign(
            **{c: (100 * both[c]).round(1) + 0.0 for c in ("before", "after", "change")})
        st.dataframe(shown, hide_index=True, width="stretch",
                     column_config={"before": st.column_config.NumberColumn(format="%.1f%%"),
                                    "after": st.column_config.NumberColumn(format="%.1f%%"),
                                    "change": st.column_config.NumberColumn(
                                        format="%+.1f pp", help="After minus before, in percentage points.")})
    for column, (frame, name, label) in zip(st.columns(len(downloads)), downloads, strict=True):
        with column:
            ui.csv_download(frame, f"drift-{slot}-{name}", label=label)


def _forecast(config: object, region: object, window: str, history: object, colors: dict, slot: int) -> None:
    """The next windows' shares of the leading topics after the last window, what rises, and the backtest."""
    if window not in FORECAST_WINDOWS:
        st.caption("Forecasts are per week or day: pick one of those windows to see where interests are going.")
        return
    # a forecast reads every event of the region: on a large store, only when asked
    if ui.is_large(config) and not st.toggle("Forecast", key=f"forecast_on_{slot}",  # type: ignore[arg-type]
                                             help="Reads every event of this region: seconds to minutes on this store."):
        st.caption("Forecast of the leading topics: switch it on above (it reads every event of the region).")
        return
    result = fcui.region_forecast(ui.db_path(config), ui.config_key(config), region, window)  # type: ignore[arg-type]
    if not result.regions:
        reason = result.skipped[0].reason if result.skipped else "no events"
        st.info(f"No forecast for this region: {ui.md(reason)}.")
        return
    forecast = result.regions[0]
    interval = config.forecast.interval  # type: ignore[attr-defined]
    st.markdown(f"**Forecast** of the leading topics for the next {result.horizon} {window}s (dashed; band: "
                f"{interval:.0%} interval)")
    nxt = forecast.forecast[forecast.forecast["horizon"] == 1]
    topics = nxt.nlargest(FORECAST_TOPICS, "share")["topic"].tolist()
    st.vega_lite_chart(charts.forecast_spec(history, forecast.forecast, colors, topics), width="stretch",
                       key=f"forecast_{slot}")
    points = f"{100 * forecast.rise_threshold:.0f} points"
    rising = ", ".join(f"{ui.md(t)} ({100 * c:+.1f})" for t, c in zip(forecast.rising["topic"],
                                                                         forecast.rising["change"], strict=True))
    falling = ", ".join(f"{ui.md(t)} ({100 * c:+.1f})" for t, c in zip(forecast.falling["topic"],
                                                                          forecast.falling["change"], strict=True))
    st.markdown(f"**Expected to rise** next {window} (by {points} or more): {rising or 'none'}  \n"
                f"**Expected to fall**: {falling or 'none'}")
    st.caption(fcui.backtest_summary(result, window))  # numbers only: no data text to escape
    ui.csv_download(forecast.forecast, f"drift-{slot}-forecast", label="Download forecast CSV")


ui.run_page(page)
