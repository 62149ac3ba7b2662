"""A full run's staging: cell x window sums merged in pieces equal one sum over every row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interestgeo.vectors.staging import _CellWindowSums, merge_cell_sums, read_staged


def _rows(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """n cell x window rows over a few keys (so keys repeat across pieces) and their sums (D=3, T=2)."""
    frame = pd.DataFrame({
        "dataset_id": rng.integers(1, 3, n).astype(np.int32),
        "resolution": rng.choice(np.array([8, 9], dtype=np.int8), n),
        "window_size": rng.choice(np.array(["week", "all"], dtype=object), n),
        "window_start": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 3, n) * 7, unit="D"),
        "cell": rng.integers(0, 4, n).astype(np.int64),
        "events": rng.integers(1, 9, n).astype(np.int32),
        "users": rng.integers(1, 4, n).astype(np.int32),
    })
    return frame, rng.normal(size=(n, 5)).astype(np.float32)


def test_sums_reduced_many_times_equal_one_groupby_of_every_row() -> None:
    rng = np.random.default_rng(3)
    pieces = [_rows(rng, int(n)) for n in rng.integers(5, 40, 12)]
    sums = _CellWindowSums(topics=2, reduce_rows=10)  # reduces after nearly every piece
    for frame, values in pieces:
        sums.add(frame, values)
    got, vectors, shares = sums.result()

    keys = _CellWindowSums._KEYS
    every = pd.concat([f for f, _ in pieces], ignore_index=True)
    totals = pd.DataFrame(np.concatenate([v for _, v in pieces]).astype(np.float64)).add_prefix("s")
    expected = pd.concat([every, totals], axis=1).groupby(keys, sort=True).sum().reset_index()
    got = got.assign(row=np.arange(len(got))).sort_values(keys).reset_index(drop=True)
    assert len(got) == len(expected) == len(every.drop_duplicates(keys))
    assert got[keys].equals(expected[keys].astype(got[keys].dtypes.to_dict()))
    assert got["events"].tolist() == expected["events"].tolist() and got["users"].tolist() == expected["users"].tolist()
    means = expected[[f"s{i}" for i in range(5)]].to_numpy() / expected["users"].to_numpy()[:, None]
    norms = np.linalg.norm(means[:, :3], axis=1)
    np.testing.assert_allclose(vectors[got["row"]], means[:, :3] / norms[:, None], atol=1e-5)
    np.testing.assert_allclose(shares[got["row"]], means[:, 3:], atol=1e-5)
    np.testing.assert_allclose(got["coherence"], norms, atol=1e-5)


def test_merge_reads_arrow_and_parquet_pieces_alike(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a local run stages Arrow IPC, the Ray engine Parquet: the same rows merge to the same cells
    from interestgeo.vectors.staging import CELL_COLUMNS, _arrow_with_vectors, _columns, _write_parquet, _write_staged

    rng = np.random.default_rng(4)
    pieces = [_rows(rng, 30) for _ in range(3)]
    out = {}
    for kind, write in (("arrow", _write_staged), ("parquet", _write_parquet)):
        paths = []
        for i, (frame, values) in enumerate(pieces):
            path = tmp_path / f"{kind}-{i}.{kind}"
            write(_arrow_with_vectors(_columns(frame, CELL_COLUMNS), sum=values), path)
            paths.append(str(path))
        out[kind] = read_staged(merge_cell_sums(paths, 2, tmp_path / f"merged.{kind}")).to_pandas()
    assert len(out["arrow"]) > 0
    pd.testing.assert_frame_equal(out["arrow"], out["parquet"])
