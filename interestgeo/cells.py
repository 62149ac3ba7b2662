"""H3 cells as integers: the one spatial key of interestgeo.

Inside the core a cell is a Python int / numpy int64 / DuckDB BIGINT (h3-py's "int" API), because
integers compare, sort, join and group far faster than 15-character hex strings and take half the
space. Hex strings exist only at the edges (pydeck wants them): `cells_to_str` / `str_to_cells`.

Parents are computed with bit arithmetic rather than a library call so that the very same formula
runs in numpy here and in SQL in store.py (DuckDB has no H3 extension offline): an H3 index keeps its
resolution in bits 52-55 and one 3-bit digit per resolution 1..15 below bit 45, digit r at bits
3*(15-r) .. 3*(15-r)+2; digits finer than the cell's resolution are all ones (7). The parent at
resolution r therefore sets the resolution bits to r and every digit below r to 7 (`parent_masks`).
tests/test_cells.py checks this against `h3.cell_to_parent`.
"""

from __future__ import annotations

from collections.abc import Iterable

import h3
import numpy as np
from h3ronpy.vector import coordinates_to_cells

__all__ = [
    "MAX_RESOLUTION",
    "WHOLE_DATASET",
    "latlng_to_cell",
    "cell_to_parent",
    "parent_masks",
    "resolution_of",
    "cells_to_str",
    "str_to_cells",
]

MAX_RESOLUTION = 15
# Not an H3 resolution: stored aggregates at this "resolution" treat a whole dataset as one region
# (cell 0), so an answer about everywhere reads one row per window instead of every event.
WHOLE_DATASET = -1
_RES_SHIFT = 52
_INT64_MAX = (1 << 63) - 1


def parent_masks(resolution: int) -> tuple[int, int]:
    """(and_mask, or_mask) with `parent = (cell & and_mask) | or_mask` for any finer cell.

    Both masks are non-negative int64 values (bit 63 of an H3 cell is always 0), so they can be
    bound as BIGINT parameters in SQL.
    """
    if not 0 <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"H3 resolution must be 0..15, got {resolution}")
    digit_bits = 3 * (MAX_RESOLUTION - resolution)
    and_mask = _INT64_MAX & ~(0xF << _RES_SHIFT)
    or_mask = (resolution << _RES_SHIFT) | ((1 << digit_bits) - 1)
    return and_mask, or_mask


def latlng_to_cell(lat: np.ndarray | Iterable[float], lon: np.ndarray | Iterable[float], resolution: int) -> np.ndarray:
    """Vectorised `h3.latlng_to_cell` returning int64 cells (h3ronpy's Rust loop, ~2M points/s).

    Coordinates must already be valid WGS84 degrees (ingest validates them first).
    """
    lat_arr = np.ascontiguousarray(lat, dtype=np.float64)
    lon_arr = np.ascontiguousarray(lon, dtype=np.float64)
    if lat_arr.size == 0:
        return np.empty(0, dtype=np.int64)
    cells = np.asarray(coordinates_to_cells(lat_arr, lon_arr, resolution))
    return cells.astype(np.int64)


def cell_to_parent(cells: np.ndarray | Iterable[int], resolution: int) -> np.ndarray:
    """Vectorised parent at `resolution` (must not be finer than the cells); same formula as the SQL."""
    arr = np.asarray(cells, dtype=np.int64)
    and_mask, or_mask = parent_masks(resolution)
    return (arr & np.int64(and_mask)) | np.int64(or_mask)


def resolution_of(cells: np.ndarray | Iterable[int]) -> np.ndarray:
    """(N,) int64 H3 resolution of each int cell (bits 52-55 of the index)."""
    return (np.asarray(cells, dtype=np.int64) >> _RES_SHIFT) & 0xF


def cells_to_str(cells: np.ndarray | Iterable[int]) -> list[str]:
    """Hex strings for the edges (pydeck H3HexagonLayer, URLs)."""
    return [h3.int_to_str(int(c)) for c in np.asarray(cells, dtype=np.int64)]


def str_to_cells(cells: Iterable[str]) -> np.ndarray:
    """Inverse of `cells_to_str`."""
    return np.array([h3.str_to_int(c) for c in cells], dtype=np.int64)
