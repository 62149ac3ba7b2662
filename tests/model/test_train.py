"""Training end to end on a small real store: checkpoints, determinism, the scorer and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from interestgeo.config import Config
from interestgeo.eval.run import evaluate_scorers
from interestgeo.eval.run import model_scorers
from interestgeo.model import (
    ABLATIONS,
    CheckpointError,
    InterestScorer,
    load_checkpoint,
    train_ablations,
    train_model,
)
from interestgeo.model.data import _MAX_BATCH_POSITIONS, cover_windows, length_batches, user_starts
from interestgeo.split import make_split
from interestgeo.store import Store
from interestgeo.text import encoder_for
from tests._data.model import small_store


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Config, int]]:
    store, config = small_store(tmp_path_factory.mktemp("train"))
    checkpoint_id = train_model(store, config)
    yield store, config, checkpoint_id
    store.close()


def test_checkpoint_is_safetensors_and_json_registered_in_the_store(trained: tuple[Store, Config, int]) -> None:
    store, config, checkpoint_id = trained
    row = store.checkpoint(checkpoint_id)
    assert row is not None and row["name"] == "model"
    folder = Path(row["path"])
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "meta.json", "metrics.json", "model.safetensors"]
    assert folder.parent == config.store.path.resolve().parent / "models"
    assert Config.from_dict(json.loads((folder / "config.json").read_text())) == config
    metrics = json.loads(row["metrics"])
    assert set(metrics["test_time_given"]["next_venue"]) == {"acc@1", "acc@5", "acc@10", "mrr", "ndcg@10"}
    assert metrics["best_epoch"] >= 1 and len(metrics["history"]) >= 1


def test_checkpoint_round_trip_gives_identical_weights_and_scores(trained: tuple[Store, Config, int]) -> None:
    store, config, checkpoint_id = trained
    loaded = load_checkpoint(store, checkpoint_id)
    saved = load_file(str(Path(store.checkpoint(checkpoint_id)["path"]) / "model.safetensors"))
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    split = make_split(store.events(), config)
    first = InterestScorer.from_checkpoint(store, checkpoint_id).score(split, split.test)
    again = InterestScorer.from_checkpoint(store).score(split, split.test)
    assert first[0].shape == (len(split.test), len(split.venues))
    assert first[1].shape == (len(split.test), len(split.categories))
    np.testing.assert_array_equal(first[0], again[0])


@pytest.mark.slow  # trains a second time
def test_same_seed_same_metrics(trained: tuple[Store, Config, int]) -> None:
    store, config, checkpoint_id = trained
    again = train_model(store, config, name="model-again")
    a = json.loads(store.checkpoint(checkpoint_id)["metrics"])
    b = json.loads(store.checkpoint(again)["metrics"])
    assert a["test_time_given"] == b["test_time_given"] and a["val_mrr"] == b["val_mrr"]


def test_interest_vectors_are_causal_unit_vectors_in_text_space(trained: tuple[Store, Config, int]) -> None:
    store, config, _ = trained
    scorer = InterestScorer.from_checkpoint(store)
    events = store.events()
    user = events[events["user_id"] == events["user_id"].iloc[0]].reset_index(drop=True)
    n = len(user)
    assert n > config.model.max_len  # so windows beyond the first are exercised too
    full = scorer.interest_vectors(user)
    assert full.shape == (n, encoder_for(config.text).dim)  # the configured encoder's text space
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    cut = config.model.max_len + 5
    prefix = scorer.interest_vectors(user.iloc[:cut])
    np.testing.assert_allclose(prefix, full[:cut], atol=1e-5)
    neutral = scorer.interest_vectors(user.iloc[:cut], neutralise_spacetime=True)
    assert neutral.shape == prefix.shape and not np.allclose(neutral, prefix)
    rollup = scorer.attention_rollup(user)
    assert rollup.shape == (n,) and abs(rollup.sum() - 1) < 1e-6
    assert (rollup[: n - config.model.max_len] == 0).all() and (rollup >= 0).all()


def test_expected_venue_vectors_of_needed_rows_equal_the_full_run(trained: tuple[Store, Config, int]) -> None:
    # a dynamic update: the last events of each user are new, their long histories are context
    store, config, _ = trained
    events = store.events()
    position = events.groupby("user_id").cumcount().to_numpy()
    size = events.groupby("user_id")["user_id"].transform("size").to_numpy()
    needed = position >= size - 4
    assert (size > 4 * config.model.max_len).all()  # most rows are outside every window that runs
    fresh = InterestScorer.from_checkpoint(store)
    part = fresh.expected_venue_vectors(events, needed=needed)
    # the few query rows were answered without the dense venue x venue tables ...
    assert fresh.model._markov_dense is None and needed.sum() <= fresh.model.n_venues
    full = InterestScorer.from_checkpoint(store).expected_venue_vectors(events)
    np.testing.assert_allclose(part[needed], full[needed], atol=1e-5)  # ... and agree with them
    assert not part[~needed].any()
    # the needed rows alone, in order (calibration's variants), at several sharpness values at once
    alone = fresh.expected_venue_vectors(events, needed=needed, sharpness=(1.0, 2.0), needed_only=True)
    both = fresh.expected_venue_vectors(events, needed=needed, sharpness=(1.0, 2.0))
    assert alone.shape == (2, int(needed.sum()), full.shape[1])
    np.testing.assert_array_equal(alone, both[:, needed])


def test_a_table_of_some_rows_has_the_inputs_of_the_full_table_there(trained: tuple[Store, Config, int]) -> None:
    store, config, _ = trained
    scorer = InterestScorer.from_checkpoint(store)
    events = store.events()
    jobs = scorer._cover_jobs(user_starts(events), needed=np.arange(len(events)) % 97 == 0)
    part = scorer._jobs_table(events, jobs)
    full = scorer.table(events)
    rows = np.zeros(len(events), dtype=bool)
    for s, e, _ in jobs:
        rows[s:e] = True
    assert 0 < rows.sum() < len(events)
    np.testing.assert_array_equal(part.venue, full.venue)  # counts before a window read every row
    np.testing.assert_array_equal(part.user_start, full.user_start)
    for field in ("category", "cells", "lat", "lon", "cont", "next_time"):
        np.testing.assert_array_equal(getattr(part, field)[rows], getattr(full, field)[rows], err_msg=field)
    np.testing.assert_array_equal(part.text[part.text_row[rows]], full.text[full.text_row[rows]])
    assert not part.text[part.text_row[~rows]].any() and not part.cont[~rows].any()


@pytest.mark.parametrize("context", [None, 4, 1])
def test_cover_windows_own_every_row_once_with_the_context_asked(context: int | None) -> None:
    """Scoring's windows (model.score_context): every row of a user owned by one window, seeing at
    least `context` rows before it there (max_len / 2 by default) or all its history; the grid
    starts at the user's first row, so rows appended later change no earlier window."""
    max_len, start, end = 16, 5, 76
    windows = cover_windows(start, end, max_len, context)
    least = max_len // 2 if context is None else context
    owned = [o for _, _, o in windows]
    owned_end = owned[1:] + [end]  # window k owns rows [owned[k], owned[k + 1])
    assert owned[0] == start and all(a < b for a, b in zip(owned, owned_end))
    for (s, e, o), o_end in zip(windows, owned_end):
        assert e - s <= max_len and o_end <= e and (o == start or o - s >= least)
    shorter = cover_windows(start, end - 9, max_len, context)
    assert [w for w in shorter if w[1] < end - 9] == [w for w in windows if w[1] < end - 9]
    if context is not None:  # less context: fewer windows
        assert len(windows) < len(cover_windows(start, end, max_len))
    assert cover_windows(start, end, max_len, max_len) == cover_windows(start, end, max_len)  # at most half


def test_user_starts_begin_a_user_where_the_dataset_or_the_user_id_changes() -> None:
    events = pd.DataFrame(
        {"dataset_id": np.array([1, 1, 1, 2, 2, 3, 3], dtype=np.int32), "user_id": ["a", "a", "b", "b", "b", "b", "c"]}
    )
    np.testing.assert_array_equal(user_starts(events), [0, 0, 2, 3, 3, 5, 6])
    assert user_starts(events.iloc[:0]).shape == (0,) and user_starts(events.iloc[:1]).tolist() == [0]


def test_length_batches_cut_where_padding_would_waste_positions() -> None:
    lengths = [3] * 1000 + [128] * 20
    batches = length_batches(lengths, max_windows=256)
    assert batches[0][0] == 0 and batches[-1][1] == len(lengths)
    assert all(a < b and b == c for (a, b), (c, _) in zip(batches, batches[1:]))  # in order, no gaps
    assert all(b - a <= 256 and ((b - a) * lengths[b - 1] <= _MAX_BATCH_POSITIONS or b - a == 1) for a, b in batches)
    # no batch mixes the short windows with the long ones (1,000 x 128 padded positions for 3,000 real)
    assert all(len({lengths[a], lengths[b - 1]}) == 1 for a, b in batches)
    assert length_batches([5, 6, 7], max_windows=256) == [(0, 3)]  # small batches are not cut
    assert length_batches([], max_windows=4) == []


@pytest.mark.slow  # trains two ablations
def test_ablations_are_registered_and_scored_beside_the_model(trained: tuple[Store, Config, int]) -> None:
    store, config, _ = trained
    ids = train_ablations(store, config, epochs=1, names=["sasrec-id-only", "no-copy"])
    assert set(ids) == {"sasrec-id-only", "no-copy"}
    sasrec = load_checkpoint(store, ids["sasrec-id-only"]).config.model
    assert not sasrec.use_text and not sasrec.use_spacetime and not sasrec.use_copy
    names = [s.name for s in model_scorers(store)]
    assert names[:2] == ["model", "model (next time not given)"]
    assert {"ablation: sasrec-id-only", "ablation: no-copy"} <= set(names)
    split = make_split(store.events(), config)
    results = evaluate_scorers(split, model_scorers(store), "test")
    assert set(results["next_venue"]) == set(names)
    assert set(ABLATIONS) >= {"sasrec-id-only", "no-text", "no-spacetime", "no-copy"}


def test_missing_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    with Store.open(tmp_path / "empty.duckdb") as store:
        with pytest.raises(CheckpointError, match="interestgeo train"):
            InterestScorer.from_checkpoint(store)


@pytest.mark.slow  # trains again in a CLI process
def test_cli_train_prints_progress_and_registers_a_checkpoint(trained: tuple[Store, Config, int], tmp_path: Path) -> None:
    store, config, _ = trained
    store.close()  # the CLI process needs the database file (last test of the module using it)
    toml = tmp_path / "c.toml"
    toml.write_text("[model]\nn_embd = 16\nn_head = 2\nn_layer = 1\nmax_len = 32\n")
    run = subprocess.run(
        [sys.executable, "-m", "interestgeo.cli", "train", "--db", str(config.store.path), "--config", str(toml),
         "--epochs", "1", "--seed", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "epoch 1" in run.stdout + run.stderr and "val mrr" in run.stdout + run.stderr
    with Store.open(config.store.path) as again:
        row = again.checkpoint()
        assert row is not None and json.loads(row["config"])["model"]["seed"] == 3
    bad = subprocess.run(
        [sys.executable, "-m", "interestgeo.cli", "train", "--db", str(tmp_path / "none.duckdb")],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
