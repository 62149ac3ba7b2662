"""H3 helpers checked against the reference library (h3-py)."""

from __future__ import annotations

import h3
import numpy as np
import pytest

from interestgeo.cells import cell_to_parent, cells_to_str, latlng_to_cell, parent_masks, resolution_of, str_to_cells


@pytest.fixture(scope="module")
def points() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    # Worldwide, including near the poles and the antimeridian, plus NYC.
    lat = np.concatenate([rng.uniform(-89.9, 89.9, 400), rng.normal(40.73, 0.05, 100)])
    lon = np.concatenate([rng.uniform(-179.99, 179.99, 400), rng.normal(-73.95, 0.05, 100)])
    return lat, lon


def test_latlng_to_cell_matches_h3(points: tuple[np.ndarray, np.ndarray]) -> None:
    lat, lon = points
    for res in (0, 7, 10, 15):
        ours = latlng_to_cell(lat, lon, res)
        assert ours.dtype == np.int64
        expected = [h3.str_to_int(h3.latlng_to_cell(a, b, res)) for a, b in zip(lat, lon, strict=True)]
        assert ours.tolist() == expected


def test_bit_arithmetic_parent_matches_h3_at_every_coarser_resolution(points: tuple[np.ndarray, np.ndarray]) -> None:
    lat, lon = points
    for base in (10, 15):
        cells = latlng_to_cell(lat, lon, base)
        for res in range(0, base + 1):
            expected = [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), res)) for c in cells]
            assert cell_to_parent(cells, res).tolist() == expected, (base, res)


def test_parent_preserves_integer_order(points: tuple[np.ndarray, np.ndarray]) -> None:
    # ingest.aggregate.cell_window_counts relies on this: parents of sorted cells are sorted.
    cells = np.sort(latlng_to_cell(*points, 10))
    for res in range(0, 10):
        parents = cell_to_parent(cells, res)
        assert (np.diff(parents) >= 0).all()


def test_parent_masks_are_bigint_safe_and_checked() -> None:
    for res in range(16):
        and_mask, or_mask = parent_masks(res)
        assert 0 <= and_mask < 2**63 and 0 <= or_mask < 2**63
    with pytest.raises(ValueError):
        parent_masks(16)


def test_hex_strings_only_at_the_edges_round_trip(points: tuple[np.ndarray, np.ndarray]) -> None:
    cells = latlng_to_cell(*points, 10)
    strings = cells_to_str(cells)
    assert all(h3.is_valid_cell(s) for s in strings)
    assert str_to_cells(strings).tolist() == cells.tolist()


def test_empty_input() -> None:
    assert latlng_to_cell([], [], 10).shape == (0,)
    assert cell_to_parent([], 5).shape == (0,)


def test_resolution_of_reads_the_resolution_h3_reports():
    cells = [h3.str_to_int(h3.latlng_to_cell(40.7, -74.0, res)) for res in (0, 5, 9, 15)]
    assert resolution_of(cells).tolist() == [h3.get_resolution(h3.int_to_str(c)) for c in cells] == [0, 5, 9, 15]
