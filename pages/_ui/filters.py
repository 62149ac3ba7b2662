"""The global filter bar in the sidebar, bound to the URL, and the map region it carries.

The filter bar's widgets are bound to the URL (`bind="query-params"`), so any view is a link;
cells picked on the map travel in the `cells` parameter, a drawn polygon in `poly` (their
codecs are in `state`). The named areas (NYC neighbourhoods) are the region filter's choices.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import streamlit as st

from interestgeo.config import Config
from pages._ui.cached import config_key, datasets, topic_labels
from pages._ui.format import DAY_NAMES, md
from pages._ui.session import TRAINING, TRAINING_NOTE, db_path
from pages._ui.state import (
    COMPARE_CHOICES,
    FilterState,
    as_range,
    date_bounds,
    format_cells,
    joined_geojson,
    parse_cells,
    parse_polygon,
    format_polygon,
    polygon_geojson,
)

# Named areas for the demo city's region filter (NYC Neighborhood Tabulation Areas), shipped in data/.
AREAS_FILE = Path(__file__).resolve().parents[2] / "data" / "nyc_neighborhoods.geojson"


# --- named areas ------------------------------------------------------------------------------


# The named areas are a shipped file, read once per process (the launcher reads them before the
# server listens, pages/_ui/serve.py): an lru_cache, not st.cache_data, whose every hit unpickled a
# copy of the 600 kB catalogue and whose first call (80 ms) fell in the first visitor's page. What
# they return is shared by every session: read it, never change it.


@functools.lru_cache(maxsize=4)
def named_areas(path: str) -> Mapping[str, str]:
    """Area label -> GeoJSON text of its polygons: each borough, then each neighbourhood (read-only)."""
    source = Path(path)
    if not source.exists():
        return MappingProxyType({})
    features = json.loads(source.read_text(encoding="utf-8"))["features"]
    boroughs: dict[str, list[dict[str, Any]]] = {}
    areas: dict[str, str] = {}
    for feature in features:
        props = feature.get("properties") or {}
        boroughs.setdefault(str(props.get("borough", "")), []).append(feature)
    for borough, members in sorted(boroughs.items()):
        if borough:
            areas[borough] = json.dumps({"type": "FeatureCollection", "features": members})
    for feature in sorted(features, key=lambda f: str((f.get("properties") or {}).get("neighborhood", ""))):
        props = feature.get("properties") or {}
        label = f"{props.get('neighborhood', '?')} ({props.get('borough', '')})"
        areas[label] = json.dumps({"type": "FeatureCollection", "features": [feature]})
    return MappingProxyType(areas)


@functools.lru_cache(maxsize=4)
def area_outlines(path: str) -> list[list[list[float]]]:
    """The named areas' borough outlines, drawn with the maps in place of a basemap (none when
    the file is missing or unreadable: the maps still draw). Shared: never change it."""
    from interestgeo import charts

    try:
        return charts.area_outlines(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return []


def areas_geojson(labels: tuple[str, ...]) -> str | None:
    """One FeatureCollection with the polygons of the chosen named areas (None when none chosen)."""
    if not labels:
        return None
    catalogue = named_areas(str(AREAS_FILE))
    features = [f for label in labels if label in catalogue for f in json.loads(catalogue[label])["features"]]
    return json.dumps({"type": "FeatureCollection", "features": features}) if features else None


def whole_period(filters: FilterState, config: Config) -> FilterState:
    """The same datasets and region over every date, hour and day, any topic.

    What the Map fits its view to: the view then stays put while the time filters change (the
    analyst keeps their place, and deck.gl redraws once instead of three times: a moved view
    state costs two more frames). With no time filter set it is `filters` itself, so the
    region map behind the view is the page's own, cached.
    """
    lo, hi = date_bounds(datasets(db_path(config), config_key(config)))
    return replace(filters, start=lo, end=hi, compare="none", hours=(0, 23), days=tuple(range(7)), topic=None)


def picked_cells() -> tuple[int, ...]:
    """Cells picked on the map (session state, mirrored in the URL's `cells` parameter)."""
    if "region_cells" not in st.session_state:
        st.session_state["region_cells"] = parse_cells(str(st.query_params.get("cells", "")))
    return tuple(st.session_state["region_cells"])


def set_picked_cells(cells: tuple[int, ...]) -> None:
    st.session_state["region_cells"] = tuple(int(c) for c in cells)
    if cells:
        st.query_params["cells"] = format_cells(cells)
    elif "cells" in st.query_params:
        del st.query_params["cells"]


def drawn_polygon() -> tuple[tuple[float, float], ...]:
    """The polygon drawn on the map (session state, mirrored in the URL's `poly` parameter)."""
    if "region_polygon" not in st.session_state:
        st.session_state["region_polygon"] = parse_polygon(str(st.query_params.get("poly", "")))
    return tuple(st.session_state["region_polygon"])


def set_drawn_polygon(corners: tuple[tuple[float, float], ...]) -> None:
    st.session_state["region_polygon"] = tuple(corners)
    if corners:
        st.query_params["poly"] = format_polygon(corners)
    elif "poly" in st.query_params:
        del st.query_params["poly"]


def filter_bar(config: Config) -> FilterState | None:
    """The global filter bar in the sidebar; None when there is no data to filter yet."""
    if not Path(config.store.path).exists():
        return None
    if TRAINING.locked():
        st.sidebar.info(f"Filters: {TRAINING_NOTE}.")
        return None
    from interestgeo.store import StoreBusy

    try:
        frame = datasets(db_path(config), config_key(config))
        labels = topic_labels(db_path(config), config_key(config)) if not frame.empty else ()
    except StoreBusy as busy:  # a writer is committing: the page says so too (page_frame)
        st.sidebar.info(f"Filters: {md(str(busy))}.", icon=":material/hourglass_top:")
        return None
    if frame.empty:
        return None
    names = frame["name"].astype(str).tolist()
    lo, hi = date_bounds(frame)
    with st.sidebar:
        st.subheader("Filters")
        chosen = st.multiselect(
            "Datasets", names, key="ds", bind="query-params", placeholder="All datasets",
            help="Analyse uploads alone or together; empty means all.",
        )
        picked = st.date_input(
            "Dates", value=(lo, hi), min_value=lo, max_value=hi, key="dates", bind="query-params",
            help="Local calendar dates of the events.",
        )
        start, end = as_range(picked, lo, hi)
        compare = st.selectbox(
            "Compare with", COMPARE_CHOICES, key="cmp", bind="query-params",
            help="KPI changes against the equally long period just before the selected one.",
        )
        hours = st.slider("Hours of day (local)", 0, 23, (0, 23), key="hours", bind="query-params")
        days = st.pills(
            "Days of week", list(range(7)), selection_mode="multi", default=list(range(7)),
            format_func=lambda d: DAY_NAMES[d], key="days", bind="query-params",
        )
        areas = tuple(st.multiselect(
            "Region: named areas", list(named_areas(str(AREAS_FILE))), key="area", bind="query-params",
            placeholder="Everywhere", help="New York boroughs and neighbourhoods (NYC Open Data).",
        ))
        cells = picked_cells()
        if cells:
            _map_region_note(f"Region: {len(cells)} cells picked on the map.", "Clear picked cells", "clear_cells",
                             lambda: set_picked_cells(()))
        polygon = drawn_polygon()
        if polygon:
            _map_region_note(f"Region: a polygon drawn on the map ({len(polygon)} corners).", "Clear drawn polygon",
                             "clear_polygon", lambda: set_drawn_polygon(()))
        topic = None
        if labels:
            topic = st.selectbox("Topic", list(labels), index=None, key="topic",
                                 bind="query-params", placeholder="All topics",
                                 help="Only events about this topic.")
        # folded: the uploader is the tallest control and the least used; at 1280x800 it pushed
        # the topic filter below the fold
        with st.expander("Region from a GeoJSON file", expanded=st.session_state.get("region_file") is not None):
            upload = st.file_uploader("Region: GeoJSON polygon", type=["geojson", "json"], key="region_file",
                                      help="A FeatureCollection, Feature or polygon in WGS84.")
    geojson = areas_geojson(areas)
    uploaded = upload is not None and (joined := _uploaded_geojson(upload.getvalue(), geojson)) != geojson
    if uploaded:
        geojson = joined
    if polygon:
        geojson = joined_geojson(geojson, polygon_geojson(polygon))
    ids = tuple(int(i) for i, n in zip(frame["dataset_id"], names, strict=True) if n in set(chosen))
    return FilterState(
        dataset_ids=ids,
        dataset_names=tuple(chosen),
        start=start,
        end=end,
        compare=str(compare),
        hours=(int(hours[0]), int(hours[1])),
        days=tuple(sorted(int(d) for d in days or ())) or tuple(range(7)),
        areas=areas,
        cells=cells,
        geojson=geojson,
        topic=topic,
        polygon=polygon,
        uploaded=uploaded,
        span=(lo, hi),
    )


def _map_region_note(note: str, label: str, key: str, clear: Callable[[], None]) -> None:
    """A region set on the map: what it is, and a button that clears it."""
    st.caption(note)
    if st.button(label, key=key):
        clear()
        st.rerun()  # from the top: the note above is already drawn


def _uploaded_geojson(raw: bytes, areas: str | None) -> str | None:
    """The uploaded polygon (joined with any named areas), or the areas alone with a warning."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        st.sidebar.warning("The region file is not valid GeoJSON; it is ignored.")
        return areas
    features = data.get("features") if isinstance(data, dict) and data.get("type") == "FeatureCollection" else None
    if features is None:
        feature = data if isinstance(data, dict) and data.get("type") == "Feature" else {
            "type": "Feature", "geometry": data, "properties": {}}
        features = [feature]
    return joined_geojson(areas, json.dumps({"type": "FeatureCollection", "features": features}))


def current_filters() -> FilterState | None:
    return st.session_state.get("_filters")
