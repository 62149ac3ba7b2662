"""Scoring a real (tiny) store: stored vectors and aggregates, dynamic update == full re-score (chunks and
engines: test_chunks.py; the CLI's score, query and drift: tests/cli/test_analysis.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interestgeo import analytics as an
from interestgeo.config import Config, PrivacyConfig
from interestgeo.store import Store
from interestgeo.text import TextEncoder, embed_texts
from interestgeo.vectors import (
    RecencySource,
    fill_missing_similarities,
    last_run_source,
    load_source,
    score_store,
    source_words,
)
from tests._data.analytics import ingest, trained_store, write_checkins
from tests._data.vectors import assert_same, forget_vectors_since, snapshot

USERS_A = [f"u{i}" for i in range(12)]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("checkins")
    first, second = folder / "april.csv.gz", folder / "may.csv.gz"
    write_checkins(first, USERS_A, "2012-04-02", days=28, per_user=25, seed=1)
    write_checkins(second, ["n1", "n2", "n3"], "2012-04-20", days=20, per_user=15, seed=2)
    return first, second


def config_for(db: Path, k: int = 2) -> Config:
    config = Config(privacy=PrivacyConfig(k_min_users=k)).with_db(db)
    return dataclasses.replace(config, analytics=dataclasses.replace(config.analytics, stored_resolutions=(8, 9)))


def recency(store: Store, encoder: TextEncoder) -> RecencySource:
    return RecencySource(lambda texts: embed_texts(store, encoder, texts, warn=None))


def test_full_score_stores_unit_vectors_topics_and_the_same_aggregates_analytics_computes(
    tmp_path: Path, files: tuple[Path, Path], encoder: TextEncoder
) -> None:
    config = config_for(tmp_path / "s.duckdb")
    with Store.open(config.store.path, config=config) as store:
        ingest(store, files[0], config, "april")
        report = score_store(store, config, source=recency(store, encoder), encoder=encoder)
        n_events = len(store.events())
        assert report.events == n_events and report.mode == "full" and report.events_per_s > 0
        scored = an.load_scored(store, config)
        assert len(scored) == n_events and scored.unscored == 0
        np.testing.assert_allclose(np.linalg.norm(scored.vectors, axis=1), 1.0, atol=1e-5)
        assert set(scored.topics.labels) == {
            "Arts and Entertainment", "Dining and Drinking", "Landmarks and Outdoors",
            "Travel and Transportation", "Sports and Recreation",
        }
        jazz = scored.events["text"] == "Blue Note, Jazz Club"
        assert (scored.events.loc[jazz, "topic"] == scored.topics.index("Arts and Entertainment")).all()
        snapshot(store)  # (checks the stored topic similarities)
        # loaded without the vectors (what the dashboard does first): the same shares and maps
        loaded: list[int] = []
        lazy = an.load_scored(store, config, vector_loader=lambda ids: loaded.append(len(ids)) or store.event_vectors(ids))
        assert not lazy.vectors_loaded and loaded == []
        np.testing.assert_allclose(lazy.topic_probs, scored.topic_probs, atol=1e-6)
        pd.testing.assert_frame_equal(lazy.events, scored.events)
        for filters in (an.Filters(), an.Filters(hours=(18, 23))):
            pd.testing.assert_frame_equal(an.region_map(lazy, filters, 8).cells, an.region_map(scored, filters, 8).cells)
            pd.testing.assert_frame_equal(an.interest_profile(lazy, filters).shares, an.interest_profile(scored, filters).shares,
                                          atol=1e-6)
        assert not lazy.vectors_loaded and loaded == []
        np.testing.assert_array_equal(lazy.vectors, scored.vectors)  # the first use loads them, once
        np.testing.assert_array_equal(lazy.vectors, scored.vectors)
        assert lazy.vectors_loaded and loaded == [n_events]
        # events whose similarities are not stored (topics replaced since) get them from their vectors
        store.con.execute("UPDATE event_vectors SET topic_sims = NULL WHERE event_id % 3 = 0")
        partial = an.load_scored(store, config, vector_loader=store.event_vectors)
        assert not partial.vectors_loaded
        np.testing.assert_allclose(partial.topic_probs, scored.topic_probs, rtol=1e-4, atol=1e-5)  # float32 sums: ulps / temperature
        store.con.execute("UPDATE event_vectors SET topic_sims = NULL")  # none stored (an older file): all at once
        assert an.load_scored(store, config, vector_loader=store.event_vectors).vectors_loaded
        assert fill_missing_similarities(store) == n_events  # what `interestgeo demo` does for such a file
        snapshot(store)  # (checks them)
        assert not an.load_scored(store, config, vector_loader=store.event_vectors).vectors_loaded
        for resolution in (8, 9):
            stored, vectors, hidden = store.window_vectors("cell_window_vectors", "week", resolution=resolution)
            fresh = an.region_vectors(scored, an.Filters(), resolution, window="week")
            assert hidden == fresh.hidden and (stored["users"] >= config.privacy.k_min_users).all()
            expected = fresh.cells.sort_values(["window_start", "cell"]).index
            np.testing.assert_array_equal(stored["cell"].to_numpy(), fresh.cells.loc[expected, "cell"].to_numpy())
            np.testing.assert_allclose(vectors, fresh.vectors[expected], atol=1e-5)


def test_dynamic_update_equals_a_full_rescore(
    tmp_path: Path, files: tuple[Path, Path], encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_for(tmp_path / "d.duckdb")
    reads: list[object] = []  # what an update reads of the stored vectors: not every event's
    scored_events = Store.scored_events
    monkeypatch.setattr(Store, "scored_events", lambda self, *a: reads.append(a) or scored_events(self, *a))
    with Store.open(config.store.path, config=config) as store:
        source = recency(store, encoder)
        ingest(store, files[0], config, "april")
        assert store.latest_score_source() is None
        score_store(store, config, source=source, encoder=encoder)
        assert store.latest_score_source() == "recency"
        ingest(store, files[1], config, "may")  # new events: a new dataset's users
        other = recency(store, encoder)
        other.name = "other"
        with pytest.raises(LookupError, match="stored vectors come from 'recency', not 'other'"):
            score_store(store, config, source=other, encoder=encoder, update=True)
        update = score_store(store, config, source=source, encoder=encoder, update=True)
        assert update.mode == "update" and update.events == len(store.events([2]))
        after_update = snapshot(store)
        # events from a time on are re-scored too (e.g. after a correction), still the same result
        reads.clear()
        again = score_store(store, config, source=source, encoder=encoder, since="2012-04-25T00:00:00Z")
        assert 0 < again.events < len(store.events())
        assert reads and all(len(a) == 2 and a[1] is not None for a in reads)  # from the earliest week touched on
        assert_same(after_update, snapshot(store))
        score_store(store, config, source=source, encoder=encoder)  # full re-score, same topics
        assert_same(after_update, snapshot(store))


@contextmanager
def scored_store(db: Path, files: list[Path], encoder: TextEncoder) -> Iterator[tuple[Config, Store, RecencySource, dict]]:
    """A store with these files (datasets "f0", "f1", ...) scored by the recency source: (config,
    store, source, its snapshot)."""
    config = config_for(db)
    with Store.open(config.store.path, config=config) as store:
        source = recency(store, encoder)
        for i, path in enumerate(files):
            ingest(store, path, config, f"f{i}")
        score_store(store, config, source=source, encoder=encoder)
        yield config, store, source, snapshot(store)


def test_update_of_known_users_with_and_without_unscored_events_equals_a_full_rescore(
    tmp_path: Path, files: tuple[Path, Path], encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """People only re-scored are re-weighed by their re-scored rows (only those stored vectors are
    read); people with unscored events are taken out and put back whole: together, a full re-score."""
    from interestgeo.vectors.refresh import _write_aggregates

    with scored_store(tmp_path / "k.duckdb", list(files), encoder) as (config, store, source, full):
        events = store.events()
        since = events.loc[events["dataset_id"] == 1, "ts"].quantile(0.9)
        assert set(events.loc[events["ts"] >= since, "dataset_id"]) == {1, 2}  # people of both datasets re-scored
        forget_vectors_since(store, config, since)  # what the update re-scores is stored as zeros
        # ... and the last eight events of u0-u3 lose theirs (and the aggregates are stored as a
        # full score of what is left would store them): an upload of new events of known people
        last = events[events["user_id"].isin(USERS_A[:4])].groupby("user_id").tail(8)
        assert (last["ts"] < since).any()  # some of them before `since`: only the unscored rows bring them in
        store.con.execute(f"DELETE FROM event_vectors WHERE event_id IN ({','.join(map(str, last['event_id']))})")
        left, vectors = store.scored_events()
        _write_aggregates(store, config, an.ScoredEvents(left, vectors, store.analytics_topics(), config), [1], None)
        read: list[int] = []
        event_vectors = Store.event_vectors
        monkeypatch.setattr(Store, "event_vectors", lambda self, ids: read.append(len(ids)) or event_vectors(self, ids))
        update = score_store(store, config, source=source, encoder=encoder, since=since.isoformat())
        assert update.users > 4
        grown = events["user_id"].isin(USERS_A[:4])
        # read: the stored vectors of u0-u3 (whole histories) and of the others' re-scored rows only
        assert read == [grown.sum() - len(last) + ((events["ts"] >= since) & ~grown).sum()]
        assert read[0] < update.history_events
        assert_same(full, snapshot(store))


def test_update_of_a_file_without_stored_shares_recomputes_the_whole_span_rows(
    tmp_path: Path, files: tuple[Path, Path], encoder: TextEncoder
) -> None:
    """Span rows without topic shares (a file scored before they were stored) cannot be re-weighed:
    the update recomputes them from every event, still a full re-score's rows."""
    with scored_store(tmp_path / "o.duckdb", [files[0]], encoder) as (config, store, source, full):
        since = store.events()["ts"].quantile(0.9)
        forget_vectors_since(store, config, since)
        assert store.has_cell_window_shares("all", 8, 1)
        store.con.execute("UPDATE cell_window_vectors SET shares = NULL WHERE window_size = 'all' AND resolution = 8")
        assert not store.has_cell_window_shares("all", 8, 1) and store.cell_window_shares("all", 8) is None
        score_store(store, config, source=source, encoder=encoder, since=since.isoformat())
        assert store.cell_window_shares("all", 8) is not None
        assert_same(full, snapshot(store))


def test_user_histories_are_the_users_rows_of_events_exactly(tmp_path: Path, files: tuple[Path, Path]) -> None:
    # the update reads histories through Arrow; events() through DuckDB's pandas conversion
    config = config_for(tmp_path / "h.duckdb")
    with Store.open(config.store.path, config=config) as store:
        ingest(store, files[0], config, "april")
        ingest(store, files[1], config, "may")
        events = store.events()
        users = pd.DataFrame({"dataset_id": [2, 1, 1], "user_id": ["n2", "u3", "u7"]})
        histories = store.user_histories(users)
        wanted = events[events["user_id"].isin(["n2", "u3", "u7"])].reset_index(drop=True)
        assert len(wanted) == 25 * 2 + 15 and wanted["event_type"].isna().all()
        pd.testing.assert_frame_equal(histories, wanted)


def test_model_update_of_known_users_equals_a_full_rescore(tmp_path: Path, encoder: TextEncoder) -> None:
    # known users' latest events re-scored with the TRAINED model: their earlier history is context
    # (rows before the model's windows count only through visit and transition counts)
    db, config = trained_store(tmp_path)
    config = dataclasses.replace(config, analytics=dataclasses.replace(config.analytics, history_weight=0.5))
    with Store.open(db, config=config) as store:
        model = load_source(store, config, encoder=encoder)
        assert model.model.scorer._encoder is encoder  # the model's text lookups share it (no second load)
        score_store(store, config, source=model, encoder=encoder)
        full = snapshot(store)
        events = store.events()
        since = events["ts"].quantile(0.85)
        before = events[events["ts"] < since].groupby("user_id").size()
        assert (before > model.max_len).any()  # some users' new events have history beyond the window
        new = forget_vectors_since(store, config, since)  # only the update can bring them back
        assert not np.allclose(store.window_vectors("cell_window_vectors", "all", k=0)[1], full["cell_vectors all"], atol=1e-3)
        update = score_store(store, config, source=model, encoder=encoder, since=since.isoformat())
        assert update.events == new.sum() and update.history_events > update.events
        assert_same(full, snapshot(store))


def test_new_events_are_scored_with_the_source_of_the_last_run(tmp_path: Path, files: tuple[Path, Path],
                                                                encoder: TextEncoder) -> None:
    """What the Upload page scores a new dataset with (no retraining): None before any run, the
    recency baseline after a recency run, the trained model after a model run (none here: refused)."""
    config = config_for(tmp_path / "s.duckdb")
    store = Store.open(config.store.path, config=config)
    with store:
        ingest(store, files[0], config, "april")
        assert last_run_source(store, config, encoder) is None
        score_store(store, config, source=recency(store, encoder), encoder=encoder)
        source = last_run_source(store, config, encoder)
        assert isinstance(source, RecencySource) and source.half_life_days == recency(store, encoder).half_life_days
        np.testing.assert_allclose(source.interest_vectors(store.events()), recency(store, encoder).interest_vectors(
            store.events()), atol=1e-6)
        store.record_score_run("checkpoint 7+history0.5", None, 0, 0, 0.0)
        with pytest.raises(LookupError, match="no trained model"):
            last_run_source(store, config, encoder)


@pytest.mark.parametrize(("label", "words"), [
    ("recency", "recency"),
    ("model#1+history0", "checkpoint 1"),
    ("model#12+history0.3", "checkpoint 12 + 0.3 history"),
    ("model#3+adapted:tokyo#4+history0.5", "checkpoint 3 + adapted + 0.5 history"),
    ("model#2+calibrated", "checkpoint 2"),
    ("model#2+history?", "checkpoint 2"),
    ("something else entirely", "something else entirely"),
])
def test_a_source_id_reads_as_words(label: str, words: str) -> None:
    assert source_words(label) == words


def test_calibration_in_groups_of_pair_owners_equals_one_group(
    tmp_path: Path, encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model runs over the pair owners' histories a group at a time (bounded memory at any size)."""
    import interestgeo.vectors.refresh as refresh

    db, config = trained_store(tmp_path)
    results = []
    for group_events in (10**9, 60):  # one group, then many
        monkeypatch.setattr(refresh, "_CALIBRATION_EVENTS", group_events)
        with Store.open(db, config=config) as store:
            report = score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
            results.append((report.calibrations, snapshot(store)))
    (one, stored_one), (many, stored_many) = results
    assert one.keys() == many.keys() and all(c.pairs > 20 for c in one.values())
    for name in one:
        assert (one[name].weight, one[name].sharpness) == (many[name].weight, many[name].sharpness)
        assert one[name].stored_mrr == pytest.approx(many[name].stored_mrr, abs=1e-9)
    assert_same(stored_one, stored_many)
