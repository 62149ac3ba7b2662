"""Per-event interest vectors in compact form: int8 codes with one float32 scale per row.

Why: at millions of events the per-event vectors were most of the store (5.1M x 512 float32 is
~10 GB of a 26 GB file) and most of a full score's final write. One byte per component keeps a
vector's direction to ~1e-4 in cosine (DuckDB has no float16, so int8 with a scale it is).

Exactness is kept by quantising at the source: the scorer replaces each vector by its
`dequantised` value before anything is computed from it (topic similarities, every stored
aggregate), so what the store returns is what the aggregates were computed from, bit for bit.
Every reader dequantises with `dequantise_vectors` (or, from Arrow, `dequantise_arrow`: the same
float32 product), so there is one formula.

The scale keeps each row's L2 norm (`scale = |x| / |q|`, codes `q = rint(127 x / max|x|)`): unit
vectors stay unit vectors, so cosines, coherences and shares mean what they meant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from interestgeo.store._db import vectors_from_arrow

__all__ = ["CompactVectors", "dequantise_arrow", "dequantise_vectors", "quantise_vectors"]

_LEVELS = 127  # codes lie in [-127, 127] (-128 unused: symmetric around zero)


@dataclass(frozen=True)
class CompactVectors:
    """(N, D) vectors as int8 codes and (N,) float32 scales: row i is codes[i] * scales[i]."""

    codes: np.ndarray  # (N, D) int8
    scales: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.scales)

    def dequantised(self) -> np.ndarray:
        """(N, D) float32: the vectors as every reader of the store gets them."""
        return dequantise_vectors(self.codes, self.scales)

    @staticmethod
    def concatenate(parts: list[CompactVectors], dim: int) -> CompactVectors:
        """The rows of `parts` in order ((0, dim) codes when there are none)."""
        if not parts:
            return CompactVectors(np.zeros((0, dim), np.int8), np.zeros(0, np.float32))
        return CompactVectors(np.concatenate([p.codes for p in parts]), np.concatenate([p.scales for p in parts]))


def quantise_vectors(vectors: np.ndarray) -> CompactVectors:
    """(N, D) float vectors -> their compact form. A zero row gets zero codes and scale 0.

    Error bound, per row x: |dequantised - x| <= sqrt(D) * max|x| / 127 (rounding moves each
    component by at most half a step, rescaling to |x| at most as much again), and
    |dequantised| == |x| up to float32 rounding."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (N, D), not {x.shape}")
    if x.shape[1] == 0:
        return CompactVectors(np.zeros(x.shape, np.int8), np.zeros(len(x), np.float32))
    # (a scorer quantises every chunk: two reductions and einsum norms instead of temporaries
    # of abs() and of the codes as floats cost 0.025 s per 20k x 512 chunk instead of 0.058 s)
    peak = np.maximum(x.max(axis=1), -x.min(axis=1))  # (N,) max |x|
    step = np.divide(np.float32(_LEVELS), peak, out=np.zeros_like(peak), where=peak > 0)  # (N,)
    rounded = x * step[:, None]  # (N, D)
    np.rint(rounded, out=rounded)  # the codes, as floats: |codes| <= 127
    code_norms = np.sqrt(np.einsum("ij,ij->i", rounded, rounded))  # (N,)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    scales = np.divide(norms, code_norms, out=np.zeros_like(norms), where=code_norms > 0)
    return CompactVectors(rounded.astype(np.int8), scales.astype(np.float32, copy=False))


def dequantise_vectors(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(N, D) float32 codes[i] * scales[i] (int8 -> float32 is exact; one float32 product each)."""
    return _scaled(np.array(codes, dtype=np.float32), scales)


def dequantise_arrow(codes: Any, scales: Any, n: int, rows: np.ndarray | None = None) -> np.ndarray:
    """`dequantise_vectors` of an Arrow list<int8> column and its float32 scale column (n rows);
    with `rows`, the (len(rows), D) array of those rows in that order (as `vectors_from_arrow`)."""
    scale = np.asarray(scales.to_numpy(), dtype=np.float32) if n else np.zeros(0, np.float32)
    values = vectors_from_arrow(codes, n, rows)  # (n or len(rows), D) float32 holding the codes
    return _scaled(values, scale if rows is None else scale[rows])


def _scaled(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """`values` (float32 codes, modified) times their row's scale: the one dequantising product."""
    values *= np.asarray(scales, dtype=np.float32)[:, None]
    return values
