"""Region answers without the per-event vectors in memory equal the per-event computation: from the
stored aggregates (analytics/stored.py) and from vectors kept in the store (StoredVectors)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests._data.analytics import ingest, write_checkins
from interestgeo import analytics as an
from interestgeo.analytics.stored import (
    stored_drift, stored_profile, stored_query, stored_region_map, stored_window_counts,
)
from interestgeo.config import Config, PrivacyConfig
from interestgeo.store import Store
from interestgeo.text import TextEncoder, embed_texts, encoder_for
from interestgeo.vectors import RecencySource, score_store

PHRASES = ["coffee and a pastry", "a flight from the airport", "lifting weights at the gym"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return encoder_for(Config().text)


def config_for(db: Path, k: int = 5, memory_mb: int = 1024) -> Config:
    config = Config(privacy=PrivacyConfig(k_min_users=k)).with_db(db)
    return dataclasses.replace(
        config, analytics=dataclasses.replace(config.analytics, stored_resolutions=(8, 9), max_vector_memory_mb=memory_mb)
    )


@pytest.fixture(scope="module")
def scored_store(tmp_path_factory: pytest.TempPathFactory, encoder: TextEncoder) -> Iterator[tuple[Store, Config, list[int]]]:
    folder = tmp_path_factory.mktemp("stored")
    first, second, rare = folder / "a.csv.gz", folder / "b.csv.gz", folder / "rare.csv"
    write_checkins(first, [f"a{i}" for i in range(24)], "2012-04-02", days=35, per_user=60, seed=3)
    write_checkins(second, [f"b{i}" for i in range(9)], "2012-04-16", days=21, per_user=30, seed=4)
    # two people at a place nobody else visits: a cell below k
    rare.write_text("user_id,venue_id,venue_name,venue_category,category_path,latitude,longitude,utc_time,tz_offset_min\n"
                    + "".join(f"a{u},v9,Ferry Point,Pier,Travel > Pier,40.6437,-74.0736,2012-04-{10 + u}T15:00:00Z,-240\n"
                              for u in range(2)))
    config = config_for(folder / "s.duckdb")
    with Store.open(config.store.path, config=config) as store:
        ids = [ingest(store, first, config, "a"), ingest(store, second, config, "b")]
        ingest(store, rare, config, "rare")
        source = RecencySource(lambda texts: embed_texts(store, encoder, texts, warn=None))
        score_store(store, config, source=source, encoder=encoder)
        yield store, config, ids


def _phrase(store: Store, encoder: TextEncoder, phrase: str) -> np.ndarray:
    return an.embed_phrase(encoder, phrase, store)


def _streamed(store: Store, config: Config) -> an.ScoredEvents:
    tight = dataclasses.replace(config, analytics=dataclasses.replace(config.analytics, max_vector_memory_mb=0))
    scored = an.load_scored(store, tight, open_store=lambda: contextlib.nullcontext(store))
    assert scored.reader is not None and not scored.vectors_loaded
    return scored


def _assert_same_query(a: an.QueryResult, b: an.QueryResult) -> None:
    assert (a.hidden, a.hidden_times, a.resolution) == (b.hidden, b.hidden_times, b.resolution)
    assert a.threshold == pytest.approx(b.threshold, abs=1e-5)
    for name in ("cells", "time_profile"):
        left, right = getattr(a, name), getattr(b, name)
        keys = ["cell"] if name == "cells" else ["dow", "hour"]
        left, right = left.sort_values(keys).reset_index(drop=True), right.sort_values(keys).reset_index(drop=True)
        assert len(left) > 0, name
        pd.testing.assert_frame_equal(left.drop(columns=["score", "rank"], errors="ignore"),
                                      right.drop(columns=["score", "rank"], errors="ignore"), check_dtype=False, obj=name)
        np.testing.assert_allclose(left["score"], right["score"], atol=1e-5, err_msg=name)


@pytest.mark.parametrize("phrase", PHRASES)
@pytest.mark.parametrize("which", ["all", "a"])
def test_a_query_from_the_stored_aggregates_equals_the_per_event_one(
    scored_store: tuple[Store, Config, list[int]], encoder: TextEncoder, phrase: str, which: str
) -> None:
    store, config, ids = scored_store
    filters = an.Filters() if which == "all" else an.Filters(datasets=(ids[0],))
    q = _phrase(store, encoder, phrase)
    per_event = an.query_interest(an.load_scored(store, config), phrase, q, filters, 8)
    stored = stored_query(store, config, phrase, q, filters, 8)
    assert stored is not None
    _assert_same_query(stored, per_event)
    assert (per_event.cells["strong_users"] > 0).any() and per_event.hidden_times > 0  # both rules are exercised
    assert per_event.hidden == (1 if which == "all" else 0)  # the rare cell


def test_the_stored_aggregates_decline_what_they_cannot_answer(
    scored_store: tuple[Store, Config, list[int]], encoder: TextEncoder
) -> None:
    store, config, _ = scored_store
    q = _phrase(store, encoder, PHRASES[0])
    assert stored_query(store, config, "x", q, an.Filters(hours=(8, 9)), 8) is None
    assert stored_query(store, config, "x", q, an.Filters(date_from="2012-04-10"), 8) is None
    assert stored_query(store, config, "x", q, an.Filters(), 7) is None  # resolution 7 is not stored here


def test_vectors_kept_in_the_store_answer_like_vectors_in_memory(
    scored_store: tuple[Store, Config, list[int]], encoder: TextEncoder
) -> None:
    store, config, ids = scored_store
    held, streamed = an.load_scored(store, config), _streamed(store, config)
    q = _phrase(store, encoder, PHRASES[1])
    np.testing.assert_allclose(streamed.affinity(q), held.vectors @ q, atol=1e-5)
    busy_hours = an.Filters(hours=tuple(range(8, 20)))
    some_cells = an.Filters(cells=tuple(int(c) for c in held.parents(8)[:200:40]))
    for filters in (busy_hours, some_cells):
        _assert_same_query(an.query_interest(streamed, "p", q, filters, 8), an.query_interest(held, "p", q, filters, 8))
        pd.testing.assert_frame_equal(an.interested_users(streamed, q, filters), an.interested_users(held, q, filters))
    for filters in (an.Filters(), an.Filters(datasets=(ids[1],)), some_cells):
        a, b = an.region_drift(streamed, filters), an.region_drift(held, filters)
        assert len(a.timeline) >= 3
        pd.testing.assert_frame_equal(a.timeline.drop(columns=["distance"]), b.timeline.drop(columns=["distance"]))
        np.testing.assert_allclose(a.timeline["distance"], b.timeline["distance"], atol=1e-5)
    with pytest.raises(RuntimeError, match="stay in the store"):
        streamed.vectors  # noqa: B018


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


@pytest.mark.parametrize("which", ["all", "b"])
def test_maps_shares_drift_and_counts_from_the_stored_aggregates_equal_the_per_event_ones(
    scored_store: tuple[Store, Config, list[int]], which: str
) -> None:
    store, config, ids = scored_store
    filters = an.Filters() if which == "all" else an.Filters(datasets=(ids[1],))
    scored = an.load_scored(store, config)

    for window in (None, "week"):
        a, b = stored_region_map(store, config, filters, 9, window), an.region_map(scored, filters, 9, window)
        assert a is not None and len(b.cells) > 0 and a.hidden == b.hidden
        keys = ["cell"] if window is None else ["cell", "window_start"]
        pd.testing.assert_frame_equal(_sorted(a.cells, keys).drop(columns=["share"]), _sorted(b.cells, keys).drop(columns=["share"]))
        np.testing.assert_allclose(_sorted(a.cells, keys)["share"], _sorted(b.cells, keys)["share"], atol=1e-5)
        order_a, order_b = a.cells.sort_values(keys).index, b.cells.sort_values(keys).index
        np.testing.assert_allclose(a.shares.loc[order_a].to_numpy(), b.shares.loc[order_b].to_numpy(), atol=1e-5)
    assert (which == "all") == (an.region_map(scored, filters, 9).hidden > 0)  # the rare cell is hidden

    a, b = stored_profile(store, config, filters), an.interest_profile(scored, filters)
    assert a is not None and not b.hidden and (a.events, a.users, a.hidden) == (b.events, b.users, b.hidden)
    pd.testing.assert_frame_equal(_sorted(a.shares, ["topic"]), _sorted(b.shares, ["topic"]), atol=1e-5)

    a, b = stored_drift(store, config, filters, "week"), an.region_drift(scored, filters, "week")
    assert a is not None and len(b.timeline) >= 3 and a.hidden == b.hidden
    pd.testing.assert_frame_equal(a.timeline, b.timeline, atol=1e-5)
    pd.testing.assert_frame_equal(a.shares, b.shares, atol=1e-5)
    pd.testing.assert_frame_equal(a.topics, b.topics, atol=1e-5)

    for window in ("day", "week"):
        a, b = stored_window_counts(store, config, filters, window), an.window_counts(scored, filters, window)
        assert a is not None and len(b[0]) > 0 and a[1] == b[1]
        pd.testing.assert_frame_equal(a[0], b[0])


def test_the_stored_answers_decline_filters_they_cannot_answer(scored_store: tuple[Store, Config, list[int]]) -> None:
    store, config, _ = scored_store
    for filters in (an.Filters(hours=(9,)), an.Filters(topic=0), an.Filters(date_to="2012-04-20")):
        assert stored_region_map(store, config, filters, 9) is None
        assert stored_profile(store, config, filters) is None
        assert stored_drift(store, config, filters) is None
        assert stored_window_counts(store, config, filters) is None
    assert stored_region_map(store, config, an.Filters(), 7) is None  # not a stored resolution
    assert stored_drift(store, config, an.Filters(), "day") is None  # not a stored window


def test_the_trend_counts_come_from_the_stored_day_rows_and_from_the_events_when_rows_are_missing(
    scored_store: tuple[Store, Config, list[int]], tmp_path: Path
) -> None:
    from interestgeo.analytics.stored import _stored_cells
    from interestgeo.cells import WHOLE_DATASET

    store, config, ids = scored_store
    scored = an.load_scored(store, config)
    expected = an.window_counts(scored, an.Filters(), "day")
    # score stored one row per dataset and day holding every scored event: the rows answer alone
    rows = _stored_cells(store, "day", WHOLE_DATASET, None)
    assert rows is not None and int(rows.frame["events"].sum()) == store.event_vector_count() == len(scored.events)
    pd.testing.assert_frame_equal(stored_window_counts(store, config, an.Filters(), "day")[0], expected[0])
    # a copy whose second dataset lost its day rows (as a dataset scored by an older version): counted from the events
    copy = tmp_path / "copy.duckdb"
    store.con.execute("CHECKPOINT")
    copy.write_bytes(Path(config.store.path).read_bytes())
    with Store.open(copy, config=config.with_db(copy)) as other:
        with other.transaction():
            other.replace_window_vectors("cell_window_vectors", "day", {}, np.zeros((0, 0)), datasets=[ids[1]],
                                         resolution=[WHOLE_DATASET])
        partial = _stored_cells(other, "day", WHOLE_DATASET, None)
        assert partial is not None and int(partial.frame["events"].sum()) < other.event_vector_count()
        got = stored_window_counts(other, config, an.Filters(), "day")
        assert got is not None and got[1] == expected[1]
        pd.testing.assert_frame_equal(got[0], expected[0])
