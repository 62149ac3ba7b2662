"""Named areas (the NYC boroughs and neighbourhoods shipped in `data/`) as regions the core can use.

Why a core module: a forecast "for each named area" must assign every event to its areas in one
pass, without Streamlit, and name them exactly as the dashboard's region picker does (a borough
by its name, a neighbourhood as "Name (Borough)"), so a region chosen on a page finds its forecast.
Assigning 113k events by 200 polygon filters one at a time would read and test the polygons 200
times; one spatial index query over the distinct coordinates does it at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AREAS_FILE", "named_area_geometries", "points_to_areas"]

# NYC Open Data neighbourhood tabulation areas with their borough (see data/).
AREAS_FILE = Path(__file__).resolve().parent.parent / "data" / "nyc_neighborhoods.geojson"


def named_area_geometries(path: Path | str = AREAS_FILE) -> dict[str, Any]:
    """Area label -> shapely geometry: each borough (the union of its neighbourhoods), then each
    neighbourhood, in the dashboard's order and labels. Empty when the file is missing."""
    import shapely
    from shapely.geometry import shape

    source = Path(path)
    if not source.exists():
        return {}
    features = json.loads(source.read_text(encoding="utf-8"))["features"]
    boroughs: dict[str, list[Any]] = {}
    neighbourhoods: list[tuple[str, Any]] = []
    for feature in features:
        props = feature.get("properties") or {}
        geometry = shape(feature["geometry"])
        borough = str(props.get("borough", ""))
        if borough:
            boroughs.setdefault(borough, []).append(geometry)
        neighbourhoods.append((f"{props.get('neighborhood', '?')} ({borough})", geometry))
    areas: dict[str, Any] = {name: shapely.union_all(parts) for name, parts in sorted(boroughs.items())}
    for label, geometry in sorted(neighbourhoods, key=lambda item: item[0]):
        areas[label] = geometry
    return areas


def points_to_areas(lat: np.ndarray, lon: np.ndarray, areas: dict[str, Any]) -> list[np.ndarray]:
    """For each area (in `areas` order), the positions of the points that lie inside it.

    One STRtree query over the distinct coordinates (events repeat their venue's), then each
    point takes its coordinate's areas.
    """
    import shapely

    if not areas or len(lat) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in areas]
    coords = np.column_stack([np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)])
    unique, inverse = np.unique(coords, axis=0, return_inverse=True)
    tree = shapely.STRtree(list(areas.values()))
    point_idx, area_idx = tree.query(shapely.points(unique), predicate="within")
    # coordinate -> areas, then point -> areas: sort the points by coordinate once
    order = np.argsort(inverse.reshape(-1), kind="stable")
    starts = np.searchsorted(inverse.reshape(-1)[order], np.arange(len(unique) + 1))
    out: list[np.ndarray] = []
    by_area = np.argsort(area_idx, kind="stable")
    bounds = np.searchsorted(area_idx[by_area], np.arange(len(areas) + 1))
    for a in range(len(areas)):
        coords_in = point_idx[by_area[bounds[a]:bounds[a + 1]]]
        if len(coords_in) == 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        parts = [order[starts[c]:starts[c + 1]] for c in coords_in]
        out.append(np.sort(np.concatenate(parts)).astype(np.int64))
    return out
