"""What a question is asked of: `Filters` (datasets, dates, hours, days, a region, a topic), and
their text forms from the CLI and URLs (`parse_ranges`, `region_from_text`, `filters_from_options`).

Why apart: filters are plain values with no numpy work, shared by every analytics call and page.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from interestgeo.cells import str_to_cells

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = [
    "Filters", "filters_from_options", "parse_ranges", "region_from_text",
]


def _as_tuple(value: Any) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return (value,)
    if isinstance(value, Iterable):
        out = tuple(int(v) if isinstance(v, np.integer) else v for v in value)
        return out or None
    return (value,)


@dataclass(frozen=True)
class Filters:
    """The filters every analytics function takes; None (or empty) means "no restriction".

    Frozen and hashable (tuples, GeoJSON as text) so the dashboard can key its caches on it.

    datasets      dataset ids
    date_from/to  local calendar dates, both inclusive
    hours         local hours of day 0-23
    days_of_week  0 = Monday .. 6 = Sunday
    cells         H3 cells (ints) at any resolution up to the base one: an event matches when its
                  cell lies inside any of them
    geojson       polygons as GeoJSON text (a FeatureCollection, Feature or bare geometry, WGS84;
                  read through geopandas): an event matches when its point lies inside
    topic         a topic label or index: events whose own topic (topics.assign_event_topics) it is
    All given filters combine with AND.
    """

    datasets: tuple[int, ...] | None = None
    date_from: date | None = None
    date_to: date | None = None
    hours: tuple[int, ...] | None = None
    days_of_week: tuple[int, ...] | None = None
    cells: tuple[int, ...] | None = None
    geojson: str | None = None
    topic: int | str | None = None

    def __post_init__(self) -> None:
        for name in ("datasets", "hours", "days_of_week", "cells"):
            value = _as_tuple(getattr(self, name))
            object.__setattr__(self, name, None if value is None else tuple(int(v) for v in value))
        if isinstance(self.geojson, dict):
            object.__setattr__(self, "geojson", json.dumps(self.geojson))
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if isinstance(value, datetime):
                object.__setattr__(self, name, value.date())
            elif isinstance(value, str):
                object.__setattr__(self, name, date.fromisoformat(value))

    @property
    def only_datasets(self) -> bool:
        """True when no filter but `datasets` is given: every event of those datasets counts, so
        the whole-span aggregates stored at score time answer exactly (analytics/stored.py)."""
        return all(
            getattr(self, name) in (None, ())
            for name in ("date_from", "date_to", "hours", "days_of_week", "cells", "geojson", "topic")
        )

    def replace(self, **changes: Any) -> Filters:
        """A copy with some filters changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (dates as ISO strings); the dashboard mirrors it in the URL."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.isoformat() if isinstance(value, date) else (list(value) if isinstance(value, tuple) else value)
        return out


def _geojson_geometry(text: str) -> Any:
    """The union of the polygons in a GeoJSON text, in WGS84, prepared for fast point tests."""
    import geopandas as gpd
    import shapely

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"region is not valid GeoJSON: {exc.msg}") from None
    if isinstance(data, dict) and data.get("type") not in ("FeatureCollection", "Feature"):
        data = {"type": "Feature", "geometry": data, "properties": {}}
    try:
        frame = gpd.read_file(io.BytesIO(json.dumps(data).encode("utf-8")))
    except Exception as exc:  # pyogrio raises its own DataSourceError family for malformed input
        raise ValueError(f"region GeoJSON cannot be read: {exc}") from None
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    polygons = frame.geometry[frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if polygons.empty:
        raise ValueError("region GeoJSON has no polygons")
    geometry = shapely.union_all(polygons.values)
    shapely.prepare(geometry)
    return geometry


def parse_ranges(text: str, low: int, high: int) -> tuple[int, ...]:
    """'18-23,0-2' -> (0, 1, 2, 18, ..., 23); a range may wrap ('22-2' = 22, 23, 0, 1, 2)."""
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, _, b = part.partition("-")
            start, end = int(a), int(b) if b else int(a)
        except ValueError:
            raise ValueError(f"not a number or range: {part!r} (use e.g. 18-23,0-2)") from None
        if not (low <= start <= high and low <= end <= high):
            raise ValueError(f"{part!r} is outside {low}..{high}")
        span = range(start, end + 1) if start <= end else [*range(start, high + 1), *range(low, end + 1)]
        values.update(span)
    return tuple(sorted(values))


def region_from_text(text: str) -> dict[str, Any]:
    """A region argument as Filters fields: a GeoJSON file path, or comma-separated H3 cells (hex)."""
    import h3

    from pathlib import Path

    path = Path(text)
    if path.suffix.lower() in (".geojson", ".json") or path.exists():
        if not path.exists():
            raise ValueError(f"no GeoJSON file at {path}")
        return {"geojson": path.read_text(encoding="utf-8")}
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if not h3.is_valid_cell(item):
            raise ValueError(f"not an H3 cell or a GeoJSON file: {item!r}")
    return {"cells": tuple(int(c) for c in str_to_cells(items))}




def filters_from_options(
    store: Store,
    *,
    datasets: list[str] | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    hours: str | None = None,
    days: str | None = None,
    region: str | None = None,
    topic: str | None = None,
) -> Filters:
    """Filters from text options (CLI): dataset names, ISO dates, '18-23' hours, '0-4' days, region, topic."""
    ids = None
    if datasets:
        ids = []
        for name in datasets:
            dataset_id = store.dataset_id(name)
            if dataset_id is None:
                known = ", ".join(store.datasets()["name"].tolist()) or "none"
                raise ValueError(f"no dataset named {name!r} (datasets: {known})")
            ids.append(dataset_id)
    return Filters(
        datasets=ids,
        date_from=date_from,
        date_to=date_to,
        hours=parse_ranges(hours, 0, 23) if hours else None,
        days_of_week=parse_ranges(days, 0, 6) if days else None,
        topic=topic,
        **(region_from_text(region) if region else {}),
    )
