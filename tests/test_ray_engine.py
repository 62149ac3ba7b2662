"""The Ray engine (ray_engine.py) on a real local Ray cluster gives the local engine's results.

Two copies of one tiny trained store with two datasets: one scored by vectors.score_store, the
other by ray_engine.score_store_ray (two scoring actors, buckets of a few users, so users of one
cell and week are scored by different actors and merged per partition). Everything the store
then holds must agree: vectors (max |diff| <= 1e-4, the issue's bound), topics, similarities,
user and cell windows, calibrations. Also the partitioned Parquet layout both engines read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from interestgeo.cli import main
from interestgeo.config import Config
from interestgeo.store import Store
from tests._data.analytics import ingest, trained_store, write_checkins

ray = pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra (make setup installs it)")


def stored(path: Path, config: Config) -> dict[str, object]:
    with Store.open(path, read_only=True, config=config) as store:
        events, vectors = store.scored_events()
        _, sims = store.scored_event_sims()
        cells, cell_vectors, _ = store.window_vectors("cell_window_vectors", "week", k=0)
        users, user_vectors, _ = store.window_vectors("user_window_vectors", "week")
        calibrations = store.calibrations()[["dataset_id", "history_weight", "sharpness", "pairs", "stored_mrr"]]
        topics = store.analytics_topics().labels
    order = lambda frame, keys: frame.sort_values(keys).index.to_numpy()  # noqa: E731
    c, u = order(cells, ["dataset_id", "resolution", "window_start", "cell"]), order(users, ["dataset_id", "user_id", "window_start"])
    return {
        "events": events[["dataset_id", "event_id", "topic"]], "vectors": vectors, "sims": sims,
        "cells": cells.iloc[c].drop(columns=["coherence"]).reset_index(drop=True), "coherence": cells["coherence"].to_numpy()[c],
        "cell_vectors": cell_vectors[c], "users": users.iloc[u].reset_index(drop=True), "user_vectors": user_vectors[u],
        "calibrations": calibrations.sort_values("dataset_id").reset_index(drop=True), "topics": list(topics),
    }


@pytest.mark.slow
def test_the_ray_engine_on_a_local_cluster_stores_what_the_local_engine_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from interestgeo.vectors import score_store

    db, config = trained_store(tmp_path)
    write_checkins(tmp_path / "may.csv.gz", ["n1", "n2", "n3", "n4"], "2012-04-20", days=20, per_user=15, seed=2)
    with Store.open(db, config=config) as store:
        ingest(store, tmp_path / "may.csv.gz", config, "may")
    ray_db = tmp_path / "ray.duckdb"
    shutil.copy(db, ray_db)
    ray_config = config.with_db(ray_db)
    toml = tmp_path / "tiny.toml"  # the settings of tiny_model_config that scoring reads
    toml.write_text("[privacy]\nk_min_users = 2\n[analytics]\nstored_resolutions = [8, 9]\n")

    with Store.open(db, config=config) as store:
        local = score_store(store, config)
    # two scoring actors on a local cluster, the users hashed into two buckets
    assert main(["score", "--db", str(ray_db), "--config", str(toml), "--engine", "ray", "--ray-workers", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not ray.is_initialized()  # the engine started a local cluster and shut it down

    assert (report["events"], report["users"], report["source"]) == (local.events, local.users, local.source)
    assert (local.events, local.users) == (540, 16)
    a, b = stored(db, config), stored(ray_db, ray_config)
    assert np.abs(a["vectors"] - b["vectors"]).max() <= 1e-4
    for key in ("sims", "coherence", "cell_vectors", "user_vectors"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=key)
    for key in ("events", "cells", "users", "calibrations"):
        pd.testing.assert_frame_equal(a[key], b[key], obj=key)
    assert a["topics"] == b["topics"]
    assert len(a["cells"]) > 0 and a["cells"]["users"].max() > 1  # some cells merge users of several buckets


def test_events_export_as_parquet_folders_by_dataset_week_and_parent_and_read_back_as_events(
    tmp_path: Path, sample_store: Store
) -> None:
    from interestgeo.cells import cell_to_parent

    rows = sample_store.export_parquet(tmp_path / "events")
    events = sample_store.events()
    assert rows == len(events) == 300
    files = sorted((tmp_path / "events").rglob("*.parquet"))
    weeks = events["local_ts"].dt.to_period("W-SUN").dt.start_time.dt.date.astype(str)
    parents = cell_to_parent(events["cell"].to_numpy(), Store.PARQUET_PARENT_RESOLUTION)
    expected = {f"dataset_id=1/week={w}/parent={p}" for w, p in zip(weeks, parents)}
    assert {str(f.parent.relative_to(tmp_path / "events")) for f in files} == expected
    back = Store.events_from_arrow(pq.read_table(tmp_path / "events", partitioning=None))
    back = back.sort_values(["dataset_id", "user_id", "ts", "event_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, events)
    for f in files:  # every file is complete on its own: its keys are columns too, one value per folder
        keys = pq.read_table(f, columns=["dataset_id", "week", "parent"], partitioning=None).to_pandas()
        assert f.parent.name == f"parent={keys['parent'].iloc[0]}" and keys.nunique().max() == 1


def test_a_ray_update_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "--db", str(tmp_path / "s.duckdb"), "--engine", "ray", "--since", "new"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--engine local" in err and "Traceback" not in err
