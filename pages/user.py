"""User (analysts only): one person's events, current interests, predicted next interests and why.

Widgets -> `analytics.list_users` (pick) -> `analytics.user_profile`, `analytics.next_interests`,
`explain.explain_scored_user` (on demand) -> a small map, a timeline, charts and tables, and the
person's interest vectors as Parquet (`export.vectors_parquet`, when asked). Marketers see
aggregates only: the page refuses them before reading any per-user data.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from interestgeo import charts, export
from interestgeo.config import Config
from interestgeo.forecast import Skipped
from pages import _ui as ui
from pages._ui import forecast as fcui

# The picker lists the most active users first; more would make the select box unusable.
MAX_USERS = 500


def page() -> None:
    if ui.role(ui.app_config()) != "analyst":
        st.title("User")
        st.warning("Per-user views are for analysts only. Your role sees aggregates: the Overview, Map and Drift "
                   "pages.", icon=":material/lock:")
        return
    started = ui.start_page("User", needs_scores="Per-user interests come from the interest model, and nothing "
                                                 "is scored yet")
    if started is None:
        return
    config, filters = started
    path, key = ui.db_path(config), ui.config_key(config)
    users = ui.list_users(path, key, filters.to_filters())
    if users.empty:
        st.info("No user has events matching these filters. Widen the filters in the sidebar.")
        return
    shown = users.head(MAX_USERS)
    labels = [f"{u} · dataset {d} · {n:,} events" for d, u, n in zip(shown["dataset_id"], shown["user_id"],
                                                                       shown["events"], strict=True)]
    pick = st.selectbox(f"User ({len(users):,} match the filters; the {len(shown):,} most active listed)",
                        range(len(labels)), format_func=lambda i: labels[i], key="user_pick")
    dataset_id, user_id = int(shown["dataset_id"].iloc[pick]), str(shown["user_id"].iloc[pick])
    profile = ui.user_profile(path, key, dataset_id, user_id)
    colors = ui.topic_colors(config)
    events = profile.events
    st.caption(f"{len(events):,} events, interests as of {profile.at:%d %b %Y %H:%M} UTC.")
    left, right = st.columns([1, 1])
    with left:
        st.markdown("**Where**")
        # the left half of the main column at 1280 px: ~390 px wide
        st.pydeck_chart(charts.points_map(_places(events), map_style=config.app.map_style, width_px=390,
                                          outlines=ui.area_outlines(str(ui.AREAS_FILE))),
                        height=360, key="user_map")
    with right:
        st.markdown("**Current interests**")
        st.plotly_chart(charts.share_bar_figure(profile.shares.head(8), colors, height=360), width="stretch",
                        key="user_shares")
    st.markdown("**When**: the events over local time, by topic")
    st.plotly_chart(charts.user_timeline_figure(events, colors), width="stretch", key="user_timeline")
    ui.csv_download(lambda: ui.with_hex(events), f"user-{dataset_id}-{user_id}-events", label="Download events CSV")
    # built when clicked (Streamlit's deferred download), from the store: this person's rows only
    st.download_button("Download interest vectors (Parquet)", lambda: _vectors_parquet(config, dataset_id, user_id),
                       file_name=f"user-{dataset_id}-{user_id}-vectors.parquet", mime="application/vnd.apache.parquet",
                       key="user_vectors", icon=":material/download:",
                       help="This person's events with their interest vectors and the texts' own embeddings "
                            "(`interestgeo export vectors`), for pandas, kepler.gl or lonboard.")
    _next(path, key, dataset_id, user_id)
    _forecast(config, path, key, dataset_id, user_id)
    _explain(path, key, dataset_id, user_id)


def _vectors_parquet(config: Config, dataset_id: int, user_id: str) -> bytes:
    with ui.store_for(config) as store:
        return export.vectors_parquet(store, config, [dataset_id], user_id=user_id,
                                      encoder=ui.text_encoder(ui.config_key(config)))


def _places(events: pd.DataFrame) -> pd.DataFrame:
    """One dot per place the person went to (lat, lon, tooltip), least recently visited first.

    One dot per event sent the browser the same venue hundreds of times: the most active person's
    2,466 events made a 0.4 MB map for ~100 places. The tooltip says how often and when last.
    """
    ordered = events.sort_values("local_ts", kind="stable")
    places = ordered.groupby(["lat", "lon"], sort=False).agg(
        visits=("local_ts", "size"), last=("local_ts", "last"), text=("text", "last"), topic=("topic", "last"))
    places = places.sort_values("last", kind="stable").reset_index()
    tips = [f"{text}\n{visits:,} visit{'s' if visits != 1 else ''}, last {last:%a %d %b %Y %H:%M} (local)\n{topic}"
            for text, visits, last, topic in zip(places["text"], places["visits"], places["last"], places["topic"],
                                                 strict=True)]
    return places.assign(tooltip=tips)


def _next(path: str, key: str, dataset_id: int, user_id: str) -> None:
    st.subheader("Predicted next interests")
    try:
        nxt = ui.next_interests(path, key, dataset_id, user_id)
    except LookupError as exc:
        st.info(f"Next interests are not available: {ui.md(exc)}.")
        return
    left, right = st.columns([2, 3])
    with left:
        # the topic column takes what the score bar leaves (long topic names were cut at a fixed width)
        # scores as percentages with one decimal ("percent" wrote 27.93% beside 4%)
        st.dataframe(nxt.topics.assign(score=100 * nxt.topics["score"]), hide_index=True, width="stretch",
                     column_config={"score": st.column_config.ProgressColumn(format="%.1f%%", min_value=0,
                                                                             max_value=100, width=100)})
    with right:
        # the venue text already ends with its category (name, category): no category column; the venue
        # column gets what the narrow number columns leave of the ~480 px column at 1280 px (310 px), so
        # long names are cut less
        venues = nxt.venues[[c for c in ("text", "branches", "distance_km", "visits", "score", "probability")
                             if c in nxt.venues]]
        # the model's columns (km, chance) take 100 px of the venue's 310
        venue_width = 310
        if "probability" in venues:
            venues = venues.assign(probability=100 * venues["probability"])
            venue_width = 210
        st.dataframe(venues, hide_index=True, width="stretch",
                     column_config={"text": st.column_config.TextColumn("venue", width=venue_width, help="Name, category."),
                                    "branches": st.column_config.NumberColumn(
                                        width=62, help="Places this row stands for: ids with this name in one "
                                                       "~100 m cell, their chances added (ranked by text alone, without "
                                                       "a trained model: a chain's branches, which score alike)."),
                                    "distance_km": st.column_config.NumberColumn(
                                        "km", format="%.1f", width=50,
                                        help="How far it is from the person's latest place."),
                                    "visits": st.column_config.NumberColumn(
                                        width=50, help="Check-ins at this place by everyone in the data."),
                                    "score": st.column_config.NumberColumn(
                                        format="%.3f", width=55, help="How well the venue matches this person's "
                                                                       "current interests (higher = more likely)."),
                                    "probability": st.column_config.NumberColumn(
                                        "chance", format="%.1f%%", width=62,
                                        help="The model's probability that this is the person's next place: "
                                             "their own habits (returns, routines), everyone's transitions, "
                                             "distance and their interests together.")})
        ui.csv_download(nxt.venues, f"user-{dataset_id}-{user_id}-next", label="Download predictions CSV")


def _forecast(config: object, path: str, key: str, dataset_id: int, user_id: str) -> None:
    """This person's topic mix over the next weeks (`forecast.user_forecast`), beside the next interests."""
    result = fcui.user_forecast(path, key, dataset_id, user_id, "week")
    if isinstance(result, Skipped):
        st.info(f"No forecast of this person's topic mix: {ui.md(result.reason)}.")
        return
    st.markdown(f"**Over the next weeks**: their topic mix after their last active week ({result.last_window:%d %b %Y}), "
                f"dashed, with an {config.forecast.interval:.0%} band")  # type: ignore[attr-defined]
    nxt = result.forecast[result.forecast["horizon"] == 1]
    topics = nxt.nlargest(4, "share")["topic"].tolist()
    colors = ui.topic_colors(config)  # type: ignore[arg-type]
    st.plotly_chart(charts.forecast_figure(result.history, result.forecast, colors, topics, height=280),
                    width="stretch", key="user_forecast")
    rising = ", ".join(f"{ui.md(t)} ({100 * c:+.1f})" for t, c in zip(result.rising["topic"], result.rising["change"],
                                                                         strict=True))
    model, last = result.backtest_mae.get("model"), result.backtest_mae.get("persistence")
    scored = (f" In their own backtest the forecast was off by {100 * model:.1f} points on average (their last week "
              f"as the forecast: {100 * last:.1f})." if pd.notna(model) and pd.notna(last) else "")
    st.caption(f"Expected to rise by {100 * result.rise_threshold:.0f} points or more: {rising or 'nothing'}.{scored}")


@ui.guarded_fragment
def _explain(path: str, key: str, dataset_id: int, user_id: str) -> None:
    """On demand, in a fragment: the explanation loads the model and re-runs it once per past event
    (seconds the first time), so the rest of the page shows without waiting for it, and turning it
    on reruns only this part."""
    st.subheader("Why: the past events behind these interests")
    if not st.toggle("Explain these interests", key="user_explain",
                     help="Reads the model's attention and re-runs it without each past event (occlusion): "
                          "a few seconds the first time."):
        st.caption("Turn on to see which past events drive these interests, and the effect of time and place.")
        return
    explanation = ui.explain_user(path, key, dataset_id, user_id)
    if explanation is None:
        st.info("Explanations read the trained model's attention and re-run it without each event: train one with "
                "`interestgeo train`, then `interestgeo score`.")
        return
    events = explanation.events
    tiles = st.columns(3)
    tiles[0].metric("Events explained", f"{len(events):,}")
    tiles[1].metric("Effect of time and place", f"{explanation.spacetime_effect:.3f}",
                    help="1 − cosine between the interest vector and the same with the space-time inputs "
                         "neutralised: 0 = where and when did not matter.")
    agreement = "n/a" if explanation.agreement != explanation.agreement else f"{explanation.agreement:+.2f}"
    tiles[2].metric("Attention vs occlusion agreement", agreement, help="Spearman rank correlation.")
    # The two methods have different units (attention mass vs 1 - cosine): show each as a share of
    # its total over the explained events so the bars compare.
    shares = events.assign(attention=events["attention"] / max(float(events["attention"].sum()), 1e-12),
                           occlusion=events["occlusion"] / max(float(events["occlusion"].sum()), 1e-12))
    top = shares.sort_values("occlusion", ascending=False).head(12)
    weights = pd.DataFrame({
        "label": [f"{t:%d %b %H:%M} · {text}" for t, text in zip(top["local_ts"], top["text"], strict=True)],
        "attention": top["attention"].to_numpy(),
        "occlusion": top["occlusion"].to_numpy(),
    })
    # ~36 px per event: room for its two bars and their value labels
    st.plotly_chart(charts.weights_figure(weights, height=max(260, 60 + 36 * len(weights))), width="stretch",
                    key="user_weights")
    st.caption("Share of each method's total weight, top 12 events by occlusion. Attention: the model's internal "
               "routing to each event. Occlusion: how far the interest vector moves when the event is removed. "
               "Where they disagree is informative.")
    st.markdown("**Topic shares with and without time and place**")
    # percentages and the change in percentage points, one decimal throughout (as on the Drift page)
    columns = ("share", "share_without_spacetime", "change")
    shown = explanation.topics.head(8)
    shown = shown.assign(**{c: (100 * shown[c]).round(1) + 0.0 for c in columns if c in shown})
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"share": st.column_config.NumberColumn("share", format="%.1f%%"),
                                "share_without_spacetime": st.column_config.NumberColumn(
                                    "without time and place", format="%.1f%%"),
                                "change": st.column_config.NumberColumn(
                                    "change", format="%+.1f pp", help="Share minus the share without time and "
                                                                      "place, in percentage points.")})
    ui.csv_download(events, f"user-{dataset_id}-{user_id}-explanation", label="Download explanation CSV")


ui.run_page(page)
