"""Overview: the first screen — how much is happening and what people are into, at a glance.

Widgets (the sidebar filters) -> `analytics.interest_profile` (KPIs, top interests with share and
index), `analytics.region_map` (active cells), `analytics.window_counts` (daily trend) -> tiles,
a bar chart and a line (Vega-Lite, not plotly: the first page a browser opens should not wait for
plotly.js to load, see `charts`). Before the events are scored it shows what the store alone knows.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from interestgeo import analytics, charts
from interestgeo.config import Config
from pages import _ui as ui

# Cells are counted at this resolution (~0.7 km2, a few blocks): fine enough to mean "places".
KPI_RESOLUTION = 8


def page() -> None:
    started = ui.start_page("Overview")
    if started is None:
        return
    config, filters = started
    path, key = ui.db_path(config), ui.config_key(config)
    if not ui.is_scored(config):
        _store_only(config, filters)
        return
    current = filters.to_filters()
    profile = ui.interest_profile(path, key, current)
    if profile.events == 0:
        st.info("No events match these filters. Widen the dates, hours, days or region in the sidebar.")
        return
    # Laid out tiles first, then the charts, but the top-interests chart is sent first: the
    # browser loads its chart library on a page's first chart (Vega-Lite here, see charts), and
    # that load then overlaps the rest of this script instead of following it.
    tiles = st.columns(4)
    note = st.container() if filters.comparison is not None else None
    left, right = st.columns([1, 1])
    with left:
        _top_interests(config, profile)
    cells = ui.region_map(path, key, current, KPI_RESOLUTION, None)
    before = profile_before = cells_before = None
    if filters.comparison is not None:
        before = filters.to_filters(period=filters.comparison)
        profile_before = ui.interest_profile(path, key, before)
        cells_before = ui.region_map(path, key, before, KPI_RESOLUTION, None)
    k = config.privacy.k_min_users
    if profile_before is not None and profile_before.hidden:
        profile_before = None  # no change against a count the threshold hides: it would give it away
    if profile.hidden:
        # the counts of fewer than k people are themselves about those people
        tiles[0].metric("Events", "hidden", help=f"Fewer than {k} people match: the privacy threshold hides counts.")
        tiles[1].metric("People", f"fewer than {k}", help="The privacy threshold hides the exact number.")
    else:
        tiles[0].metric("Events", f"{profile.events:,}",
                        ui.kpi_delta(profile.events, profile_before.events if profile_before else None))
        tiles[1].metric("People", f"{profile.users:,}",
                        ui.kpi_delta(profile.users, profile_before.users if profile_before else None))
    tiles[2].metric("Active cells", f"{len(cells.cells):,}",
                    ui.kpi_delta(len(cells.cells), len(cells_before.cells) if cells_before else None),
                    help=f"H3 resolution {KPI_RESOLUTION} cells with at least {k} people; "
                         f"{cells.hidden:,} more are hidden by the privacy threshold.")
    tiles[3].metric("Events per person", "–" if profile.hidden else f"{profile.events / max(profile.users, 1):.1f}")
    if note is not None and filters.comparison is not None:
        c0, c1 = filters.comparison
        note.caption(f"Changes against {c0:%d %b %Y} – {c1:%d %b %Y}.")
    with right:
        st.subheader("Trend")
        trend = _daily(ui.window_counts(path, key, current, "day")[0])
        comparison = None
        if before is not None:
            comparison = _daily(ui.window_counts(path, key, before, "day")[0])
            comparison["date"] = comparison["date"] + (pd.Timestamp(filters.start) - pd.Timestamp(filters.comparison[0]))
        if trend.empty:
            st.info("No day has enough people to show under the privacy threshold.")
        else:
            st.vega_lite_chart(charts.trend_spec(trend, comparison), width="stretch", key="trend")
            st.caption("Events per local day. Gaps: days with no data, or with fewer than "
                       f"{k} people (hidden).")
            ui.csv_download(trend, "trend")


def _top_interests(config: Config, profile: analytics.InterestProfile) -> None:
    """The top interests' bar chart with its caption and download (or why it is hidden)."""
    st.subheader("Top interests")
    if profile.hidden:
        st.info(f"Fewer than {config.privacy.k_min_users} people match: interest shares are hidden.")
        return
    top = profile.shares.head(10)
    st.vega_lite_chart(charts.share_bar_spec(top, ui.topic_colors(config)), width="stretch", key="top_interests")
    if charts.index_matters(top):
        st.caption("Share of interest; index against all the events: 100 = as common as in all the data, "
                   "200 = twice as common.")
    else:
        st.caption("Share of interest among all the events (narrow the filters to see an index against "
                   "all the data).")
    ui.csv_download(profile.shares, "top-interests")


def _daily(timeline: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"date": pd.to_datetime(timeline["window_start"]), "events": timeline["events"],
                         "users": timeline["users"]})


def _store_only(config: object, filters: ui.FilterState) -> None:
    """What the store alone can say: the loaded datasets."""
    frame = ui.datasets(ui.db_path(config), ui.config_key(config))  # type: ignore[arg-type]
    chosen = frame[frame["dataset_id"].isin(filters.dataset_ids)] if filters.dataset_ids else frame
    tiles = st.columns(3)
    tiles[0].metric("Events stored", f"{int(chosen['rows_stored'].sum()):,}")
    tiles[1].metric("Datasets", f"{len(chosen):,}")
    tiles[2].metric("Rows rejected at load", f"{int(chosen['rows_rejected'].sum()):,}")
    st.info(f"Interest analytics (top interests, trends, topics) appear once the events are scored: {ui.SCORE_HINT}. "
            "The **Map** already shows where the events are.")
    st.subheader("Datasets")
    shown = chosen[["dataset_id", "name", "rows_stored", "rows_rejected", "duplicates_skipped", "ts_min", "ts_max",
                    "loaded_at"]]
    st.dataframe(shown, hide_index=True, width="stretch")
    ui.csv_download(shown, "datasets")


ui.run_page(page)
