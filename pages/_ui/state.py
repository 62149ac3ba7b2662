"""The filter bar's selection as a value, and the URL forms of a map region (no streamlit).

Why apart from the widgets: what a link can carry (picked cells, a drawn polygon) is hostile
input, and what the selection means for the core (`FilterState.to_filters`) and in words
(`describe`) are plain functions: kept free of streamlit, they get plain unit tests
(tests/pages/test_state.py) instead of a running app.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import h3
import pandas as pd

from interestgeo import analytics
from interestgeo.cells import cells_to_str, str_to_cells
from pages._ui.format import DAY_NAMES, md

COMPARE_CHOICES = ("none", "previous period")


@dataclass(frozen=True)
class FilterState:
    """What the sidebar selected; hashable so it can key cached queries."""

    dataset_ids: tuple[int, ...]
    dataset_names: tuple[str, ...]
    start: dt.date
    end: dt.date
    compare: str = "none"
    hours: tuple[int, int] = (0, 23)
    days: tuple[int, ...] = tuple(range(7))
    areas: tuple[str, ...] = ()
    cells: tuple[int, ...] = ()
    geojson: str | None = None
    topic: str | None = None
    polygon: tuple[tuple[float, float], ...] = ()  # drawn on the map, (lon, lat) corners
    uploaded: bool = False  # a GeoJSON file is part of `geojson`
    span: tuple[dt.date, dt.date] | None = None  # the data's whole date range (the date widget's bounds)

    @property
    def comparison(self) -> tuple[dt.date, dt.date] | None:
        """The equally long period just before the selected one, when comparing."""
        if self.compare != "previous period":
            return None
        length = self.end - self.start + dt.timedelta(days=1)
        return self.start - length, self.start - dt.timedelta(days=1)

    @property
    def has_region(self) -> bool:
        return bool(self.cells) or self.geojson is not None

    def to_filters(self, *, period: tuple[dt.date, dt.date] | None = None, region: bool = True) -> analytics.Filters:
        """The analytics' Filters for this selection (another period or no region when asked)."""
        start, end = period or (self.start, self.end)
        everything = self.span is not None and start <= self.span[0] and end >= self.span[1]
        return analytics.Filters(
            datasets=self.dataset_ids or None,
            # the whole range selects every event: no date filter (so the stored aggregates answer)
            date_from=None if everything else start,
            date_to=None if everything else end,
            hours=None if self.hours == (0, 23) else tuple(range(self.hours[0], self.hours[1] + 1)),
            days_of_week=None if len(self.days) == 7 else self.days,
            cells=(self.cells or None) if region else None,
            geojson=self.geojson if region else None,
            topic=self.topic,
        )

    def describe_region(self) -> str:
        """The region in words (markdown-escaped), for headings."""
        parts = [md(a) for a in self.areas]
        if self.cells:
            parts.append(f"{len(self.cells)} picked cells")
        if self.polygon:
            parts.append("drawn polygon")
        if self.uploaded:
            parts.append("uploaded region")
        return ", ".join(parts) or "Everywhere"

    def describe(self) -> str:
        """One line for captions: what the numbers on the page are about."""
        parts = [", ".join(md(n) for n in self.dataset_names) or "all datasets",
                 f"{self.start:%d %b %Y} – {self.end:%d %b %Y}"]
        if self.hours != (0, 23):
            parts.append(f"{self.hours[0]:02d}:00–{self.hours[1]:02d}:59")
        if len(self.days) != 7:
            parts.append(" ".join(DAY_NAMES[d] for d in self.days))
        region = self.describe_region()
        if region != "Everywhere":
            parts.append(region)
        if self.topic:
            parts.append(f"topic: {md(self.topic)}")
        return " · ".join(parts)


def date_bounds(frame: pd.DataFrame) -> tuple[dt.date, dt.date]:
    lo = pd.to_datetime(frame["ts_min"], utc=True).min()
    hi = pd.to_datetime(frame["ts_max"], utc=True).max()
    # Local dates can run a day either side of the UTC range.
    return (lo - pd.Timedelta(days=1)).date(), (hi + pd.Timedelta(days=1)).date()


# Cells a link may carry: more than a map click session picks, few enough to bound the work.
MAX_LINK_CELLS = 5000


def parse_cells(text: str) -> tuple[int, ...]:
    """The valid H3 cells in a `cells` URL parameter (hex, comma-separated); anything else is dropped.

    A link is hostile input: h3 raises OverflowError on a number past 64 bits (it was a traceback
    on every page), so each token is checked as 1-16 hex digits before h3 sees it.
    """
    tokens = (token.strip() for token in text.split(",")[:MAX_LINK_CELLS])
    valid = [token for token in tokens if _HEX_CELL.fullmatch(token) and h3.is_valid_cell(token)]
    return tuple(dict.fromkeys(int(c) for c in str_to_cells(valid)))


def format_cells(cells: tuple[int, ...]) -> str:
    """The `cells` URL parameter for picked cells: hex, comma-separated (what `parse_cells` reads)."""
    return ",".join(cells_to_str(cells))


_HEX_CELL = re.compile(r"[0-9a-fA-F]{1,16}")


# A drawn polygon travels in the URL: enough corners for a hand-drawn outline, few enough for a link.
MAX_POLYGON_CORNERS = 64


def format_polygon(corners: tuple[tuple[float, float], ...]) -> str:
    """`lon,lat;lon,lat;...` at 5 decimals (about a metre): the URL form of a drawn polygon."""
    return ";".join(f"{lon:.5f},{lat:.5f}" for lon, lat in corners)


def parse_polygon(text: str) -> tuple[tuple[float, float], ...]:
    """The corners in a `poly` URL parameter; () when it is not a usable polygon (a bad link)."""
    pairs = text.split(";")
    if len(pairs) > MAX_POLYGON_CORNERS:  # more than a drawn polygon ever has: not ours
        return ()
    corners = []
    for pair in pairs:
        lon_text, _, lat_text = pair.partition(",")
        try:
            lon, lat = float(lon_text), float(lat_text)
        except ValueError:
            return ()
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            return ()
        corners.append((lon, lat))
    return tuple(corners) if len(corners) >= 3 else ()


def polygon_from_selection(selection: Any) -> tuple[tuple[float, float], ...]:
    """The corners of the last lasso (or box) drawn on a plotly chart with lon/lat axes; () if none.

    A hand-drawn lasso has hundreds of points: it is simplified (shapely, to ~10 m, then coarser
    if needed) to at most MAX_POLYGON_CORNERS so it fits in a link.
    """
    import shapely

    shapes = []
    for kind in ("lasso", "box"):
        for shape in (selection or {}).get(kind, []) or []:
            xs, ys = list(shape.get("x", [])), list(shape.get("y", []))
            if kind == "box" and len(xs) == 2 and len(ys) == 2:
                xs, ys = [xs[0], xs[1], xs[1], xs[0]], [ys[0], ys[0], ys[1], ys[1]]
            if len(xs) >= 3 and len(xs) == len(ys):
                shapes.append(list(zip(xs, ys, strict=True)))
    if not shapes:
        return ()
    polygon = shapely.Polygon(shapes[-1])
    if not polygon.is_valid:
        polygon = polygon.buffer(0)  # a lasso that crosses itself: its outline
    tolerance = 1e-4
    while True:
        simple = polygon.simplify(tolerance)
        if isinstance(simple, shapely.MultiPolygon):
            simple = max(simple.geoms, key=lambda g: g.area)
        corners = list(simple.exterior.coords)[:-1] if isinstance(simple, shapely.Polygon) else []
        if len(corners) <= MAX_POLYGON_CORNERS or tolerance > 1:
            break
        tolerance *= 2
    corners = [(round(float(x), 5), round(float(y), 5)) for x, y in corners]
    return tuple(corners) if len(corners) >= 3 else ()


def polygon_geojson(corners: tuple[tuple[float, float], ...]) -> str:
    """A drawn polygon as a GeoJSON FeatureCollection (the region filter's input)."""
    ring = [list(c) for c in corners] + [list(corners[0])]
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "drawn"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]})


def joined_geojson(first: str | None, second: str) -> str:
    """Two FeatureCollections as one (the region is their union); `first` may be None."""
    if first is None:
        return second
    features = [*json.loads(first)["features"], *json.loads(second)["features"]]
    return json.dumps({"type": "FeatureCollection", "features": features})


def as_range(picked: object, lo: dt.date, hi: dt.date) -> tuple[dt.date, dt.date]:
    """A (start, end) pair from the date widget, which yields one date while a range is half picked."""
    values = [v for v in (picked if isinstance(picked, (tuple, list)) else [picked]) if v is not None]
    if not values:
        return lo, hi
    return min(values), max(values)
