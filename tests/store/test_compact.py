"""store/compact.py: int8 codes with a per-row scale, the stored form of the per-event vectors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from interestgeo.store._db import list_column
from interestgeo.store.compact import CompactVectors, dequantise_arrow, dequantise_vectors, quantise_vectors


def _unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_round_trip_keeps_each_norm_and_stays_within_the_error_bound() -> None:
    x = _unit(500, 512) * np.linspace(0.1, 3.0, 500, dtype=np.float32)[:, None]  # unit and not
    compact = quantise_vectors(x)
    assert compact.codes.dtype == np.int8 and compact.scales.dtype == np.float32
    assert np.abs(compact.codes).max(axis=1).tolist() == [127] * 500  # each row uses the full range
    back = compact.dequantised()
    assert back.dtype == np.float32 and back.shape == x.shape
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), np.linalg.norm(x, axis=1), rtol=1e-6)
    bound = np.sqrt(512) * np.abs(x).max(axis=1) / 127  # the documented bound, per row
    error = np.linalg.norm(back - x, axis=1)
    assert (error <= bound).all()
    cosine = (back * x).sum(axis=1) / np.linalg.norm(x, axis=1) ** 2
    assert cosine.min() > 0.9999  # what it means for unit interest vectors: direction kept to 1e-4


def test_zero_and_empty_rows() -> None:
    x = np.zeros((3, 4), np.float32)
    x[1] = [0.0, -2.0, 0.5, 0.0]
    compact = quantise_vectors(x)
    assert compact.codes.tolist() == [[0, 0, 0, 0], [0, -127, 32, 0], [0, 0, 0, 0]]
    assert compact.scales[0] == 0 and compact.scales[2] == 0
    np.testing.assert_array_equal(compact.dequantised()[[0, 2]], 0.0)
    assert quantise_vectors(np.zeros((0, 4), np.float32)).dequantised().shape == (0, 4)
    assert CompactVectors.concatenate([], 4).dequantised().shape == (0, 4)


def test_quantising_dequantised_vectors_gives_the_same_codes() -> None:
    # what a writer given the float values a scorer computed from would store: the same codes
    compact = quantise_vectors(_unit(200, 64, seed=1))
    again = quantise_vectors(compact.dequantised())
    np.testing.assert_array_equal(again.codes, compact.codes)
    np.testing.assert_allclose(again.scales, compact.scales, rtol=1e-6)


def test_dequantising_from_arrow_is_the_same_product_as_from_numpy() -> None:
    compact = quantise_vectors(_unit(9, 8, seed=2))
    codes = pa.chunked_array([list_column(compact.codes[:4]), list_column(compact.codes[4:4]),
                              list_column(compact.codes[4:])])
    scales = pa.chunked_array([pa.array(compact.scales[:6]), pa.array(compact.scales[6:])])
    assert codes.type == pa.list_(pa.int8())
    whole = dequantise_vectors(compact.codes, compact.scales)
    np.testing.assert_array_equal(dequantise_arrow(codes, scales, 9), whole)  # bit for bit
    rows = np.array([8, 0, 5, 3])
    np.testing.assert_array_equal(dequantise_arrow(codes, scales, 9, rows), whole[rows])
    parts = [quantise_vectors(_unit(3, 8, seed=s)) for s in (3, 4)]
    joined = CompactVectors.concatenate(parts, 8)
    np.testing.assert_array_equal(joined.dequantised(), np.concatenate([p.dequantised() for p in parts]))
