"""Drift: how the interests of a region moved over time, and which topics rose and fell.

Widgets -> `analytics.region_drift` (per region; k threshold applied) -> plotly timelines of
topic shares and of drift magnitude with change points, and a rose/fell table. A second region
(a named area) can be set beside the sidebar's for comparison.
"""

from __future__ import annotations

import streamlit as st

from interestgeo import charts
from pages import _common as ui

WINDOWS = ("week", "day", "month")
SIDEBAR_REGION = "the sidebar's region"


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
    order = drift.shares.groupby("topic")["share"].mean().sort_values(ascending=False).index.tolist()
    colors = ui.topic_colors(config)  # type: ignore[arg-type]
    top = drift.shares[drift.shares["topic"].isin(order[:8])]
    st.markdown(f"**Topic shares per {window}** (top 8 topics)")
    st.plotly_chart(charts.share_timeline_figure(top, colors), width="stretch", key=f"shares_{slot}")
    st.markdown("**Drift**: distance of each window's interests from the previous one")
    st.plotly_chart(charts.drift_figure(drift.timeline), width="stretch", key=f"drift_{slot}")
    points = int(drift.timeline["change_point"].sum())
    st.caption(f"{points} change point(s) marked. {drift.hidden} {window}s hidden: fewer than {k} people.")
    downloads = [(drift.timeline, "timeline", "Download drift CSV"), (drift.shares, "shares", "Download shares CSV")]
    if not drift.topics.empty:
        downloads.insert(0, (drift.topics, "topics", "Download rose/fell CSV"))
        st.markdown("**Rose and fell** (after vs before the last change point, or the two halves)")
        rows = drift.topics
        both = rows.head(5).merge(rows.tail(5), how="outer") if len(rows) > 10 else rows
        st.dataframe(both.sort_values("change", ascending=False), hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="percent")
                                    for c in ("before", "after", "change")})
    for column, (frame, name, label) in zip(st.columns(len(downloads)), downloads, strict=True):
        with column:
            ui.csv_download(frame, f"drift-{slot}-{name}", label=label)


ui.run_page(page)
