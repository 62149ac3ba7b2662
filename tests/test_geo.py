"""The one haversine against h3's great-circle distance, elementwise and pairwise alike."""

from __future__ import annotations

import h3
import numpy as np
import pytest

from interestgeo.geo import haversine_km, pairwise_haversine_km

TIMES_SQUARE, LIBERTY, LONDON = (40.7580, -73.9855), (40.6892, -74.0445), (51.5072, -0.1276)


@pytest.mark.parametrize("a, b", [(TIMES_SQUARE, LIBERTY), (TIMES_SQUARE, LONDON), (LIBERTY, LIBERTY)])
def test_distance_matches_h3_great_circle(a, b) -> None:
    want = h3.great_circle_distance(a, b, unit="km")  # h3's Earth radius differs by 1.6 m
    assert haversine_km(*a, *b) == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_pairwise_is_the_elementwise_distance_of_every_pair() -> None:
    rng = np.random.default_rng(0)
    lat1, lon1 = rng.uniform(-60, 60, 5), rng.uniform(-180, 180, 5)
    lat2, lon2 = rng.uniform(-60, 60, 7), rng.uniform(-180, 180, 7)
    pairwise = pairwise_haversine_km(lat1, lon1, lat2, lon2)
    assert pairwise.shape == (5, 7)
    np.testing.assert_allclose(pairwise, haversine_km(lat1[:, None], lon1[:, None], lat2[None], lon2[None]), atol=1e-6)
