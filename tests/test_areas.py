"""Named areas for the core: the dashboard's labels, and one spatial-index pass that agrees with
testing each polygon on its own (shapely)."""

from __future__ import annotations

import numpy as np
import shapely

from interestgeo.areas import AREAS_FILE, named_area_geometries, points_to_areas


def test_points_fall_in_the_areas_shapely_puts_them_in() -> None:
    areas = named_area_geometries()
    rng = np.random.default_rng(0)
    lat = rng.uniform(40.55, 40.9, 3000)
    lon = rng.uniform(-74.1, -73.75, 3000)
    lat[1000:1500], lon[1000:1500] = lat[:500], lon[:500]  # repeated coordinates, as events repeat venues
    inside = points_to_areas(lat, lon, areas)
    assert len(inside) == len(areas)
    for (label, geometry), positions in zip(areas.items(), inside, strict=True):
        expected = np.flatnonzero(shapely.contains_xy(geometry, lon, lat))
        np.testing.assert_array_equal(positions, expected, err_msg=label)
    assert sum(len(p) for p in inside) > 3000  # a point in a neighbourhood is in its borough too


def test_labels_are_the_dashboards() -> None:
    from pages._ui import named_areas

    assert list(named_area_geometries()) == list(named_areas(str(AREAS_FILE)))
    assert named_area_geometries(AREAS_FILE.with_name("missing.geojson")) == {}
    areas = named_area_geometries()
    empty = points_to_areas(np.zeros(0), np.zeros(0), areas)
    assert len(empty) == len(areas) and all(len(p) == 0 for p in empty)
