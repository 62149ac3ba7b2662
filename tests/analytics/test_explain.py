"""Explanations and model-backed analytics on a TINY model trained through the real training API."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interestgeo import analytics as an
from interestgeo.analytics.explain import explain_scored_user, explain_user
from interestgeo.cells import cell_to_parent, latlng_to_cell
from interestgeo.cli import main
from interestgeo.store import Store
from interestgeo.text import encoder_for
from interestgeo.vectors import load_source, score_store
from tests._data.analytics import VENUES, ingest, trained_store, write_checkins


@pytest.fixture(scope="module")
def scored_store(tmp_path_factory: pytest.TempPathFactory):
    db, config = trained_store(tmp_path_factory.mktemp("explain"))
    # the model alone (no history blend): these tests are about what the model does
    config = dataclasses.replace(config, analytics=dataclasses.replace(config.analytics, history_weight=0.0))
    store = Store.open(db, config=config)
    encoder = encoder_for(config.text)
    model = load_source(store, config, encoder=encoder)
    score_store(store, config, source=model, encoder=encoder)
    yield store, config, model, an.load_scored(store, config, encoder=encoder), encoder
    store.close()


def last_vector(model, events: pd.DataFrame) -> np.ndarray:
    v = model.interest_vectors(events.reset_index(drop=True))[-1]
    return v / np.linalg.norm(v)


def test_removing_the_top_ranked_event_moves_the_vector_more_than_removing_the_lowest(scored_store) -> None:
    store, config, model, scored, _ = scored_store
    user = scored.events[scored.events["user_id"] == "u3"].reset_index(drop=True)
    explanation = explain_user(model, user, scored.topics, config, 1, "u3")
    shown = explanation.events
    assert len(shown) == min(config.analytics.explain_max_events, config.model.max_len, len(user))
    context = user.tail(config.model.max_len)
    full = last_vector(model, context)
    top = shown.loc[shown["occlusion_rank"].idxmin(), "event_id"]
    low = shown.loc[shown["occlusion_rank"].idxmax(), "event_id"]
    without_top = last_vector(model, context[context["event_id"] != top])  # re-scored directly, not by explain
    without_low = last_vector(model, context[context["event_id"] != low])
    assert 1 - full @ without_top > 1 - full @ without_low
    # the reported occlusion is what removing the event really does
    top = shown.loc[shown["occlusion"].idxmax()]
    context = user.tail(config.model.max_len)
    moved = 1 - full @ last_vector(model, context[context["event_id"] != top["event_id"]])
    assert top["occlusion"] == pytest.approx(moved, abs=1e-4)
    # attention is the model's roll-up over the same events (shown beside occlusion, not merged)
    rollup = model.attention_rollup(context)
    np.testing.assert_allclose(shown["attention"].to_numpy(), rollup[-len(shown):], atol=1e-9)
    # their agreement is the Spearman correlation of the two columns (every event of the context is shown)
    assert len(shown) == len(context)
    assert explanation.agreement == pytest.approx(shown["attention"].corr(shown["occlusion"], method="spearman"), abs=1e-9)


def test_time_and_place_effect_is_a_neutralised_rescore(scored_store) -> None:
    store, config, model, scored, _ = scored_store
    explanation = explain_scored_user(model, scored, 1, "u5", at="2012-04-20")
    assert explanation.at <= pd.Timestamp("2012-04-20", tz="UTC")
    user = scored.events[(scored.events["user_id"] == "u5") & (scored.events["ts"] <= explanation.at)]
    neutral = model.interest_vectors(user.tail(config.model.max_len).reset_index(drop=True), neutralise_spacetime=True)[-1]
    neutral = neutral / np.linalg.norm(neutral)
    assert explanation.spacetime_effect == pytest.approx(1 - float(explanation.vector @ neutral), abs=1e-4)
    assert 0 < explanation.spacetime_effect < 2
    assert explanation.topics["share"].sum() == pytest.approx(1.0, abs=1e-5)
    assert explanation.topics["share_without_spacetime"].sum() == pytest.approx(1.0, abs=1e-5)
    assert set(explanation.to_dict()) >= {"events", "topics", "spacetime_effect", "agreement"}


def test_query_for_a_venues_category_ranks_its_cell_near_the_top(scored_store) -> None:
    store, config, model, scored, encoder = scored_store
    ranks = []
    for venue_id, name, category, _path, lat, lon in VENUES:
        cell = int(cell_to_parent(latlng_to_cell([lat], [lon], 10), 9)[0])
        result = an.query_interest(scored, category, an.embed_phrase(encoder, category), an.Filters(), 9)
        assert len(result.cells) >= 4
        ranks.append(int(result.cells.loc[result.cells["cell"] == cell, "rank"].iloc[0]))
    # every venue's cell is in the top half for its own category, and most are first or second
    assert max(ranks) <= len(VENUES) // 2, ranks
    assert np.mean(np.array(ranks) <= 2) >= 0.5, ranks


def test_next_interests_rank_topics_and_venues_and_respect_the_place(scored_store) -> None:
    store, config, model, scored, _ = scored_store
    nxt = an.next_interests(scored, 1, "u2", k=3)
    assert len(nxt.topics) == 3 and nxt.topics["score"].is_monotonic_decreasing
    assert len(nxt.venues) == 3 and nxt.venues["score"].is_monotonic_decreasing
    blue_note = VENUES[0]
    near = an.next_interests(scored, 1, "u2", place=(blue_note[4], blue_note[5]), k=10)
    assert (near.venues["distance_km"] <= config.analytics.next_radius_km).all()
    assert "v1" in near.venues["item_id"].tolist() and "v4" not in near.venues["item_id"].tolist()


def test_next_interests_list_a_chain_once_at_its_nearest_branch(scored_store) -> None:
    store, config, model, scored, _ = scored_store
    venues = scored.venues
    # a second branch of the first venue: same text (so the same score), 300 m north
    branch = venues.frame.iloc[[0]].assign(item_id="v1-branch", lat=venues.frame["lat"].iloc[0] + 0.0027)
    chain = copy.copy(scored)  # (the fixture's stays as it is)
    chain.venues = an.Venues(
        pd.concat([venues.frame, branch], ignore_index=True), np.vstack([venues.vectors, venues.vectors[:1]]))
    text = branch["text"].iloc[0]
    nxt = an.next_interests(chain, 1, "u2", k=len(chain.venues.frame))
    assert nxt.venues["text"].is_unique
    assert nxt.venues.loc[nxt.venues["text"] == text, "branches"].tolist() == [2]
    near_branch = (branch["lat"].iloc[0] + 0.0005, branch["lon"].iloc[0])
    picked = an.next_interests(chain, 1, "u2", place=near_branch, k=len(chain.venues.frame)).venues
    assert picked.loc[picked["text"] == text, "item_id"].tolist() == ["v1-branch"]


def test_model_dynamic_update_equals_a_full_rescore(tmp_path: Path) -> None:
    from tests._data.vectors import assert_same, snapshot

    db, config = trained_store(tmp_path)
    # a full re-score re-chooses the history weight on the new data; equality holds for a fixed one
    config = dataclasses.replace(config, analytics=dataclasses.replace(config.analytics, history_weight=0.5))
    write_checkins(tmp_path / "may.csv.gz", ["n1", "n2", "n3"], "2012-04-20", days=20, per_user=15, seed=2)
    with Store.open(db, config=config) as store:
        encoder = encoder_for(config.text)
        model = load_source(store, config, encoder=encoder)
        score_store(store, config, source=model, encoder=encoder)
        ingest(store, tmp_path / "may.csv.gz", config, "may")
        update = score_store(store, config, source=model, encoder=encoder, update=True)
        assert update.events == 45 and update.source.endswith("+history0.5")
        after_update = snapshot(store)
        score_store(store, config, source=model, encoder=encoder)
        assert_same(after_update, snapshot(store))


def test_cli_explain_prints_both_views_as_json(scored_store, capsys: pytest.CaptureFixture[str]) -> None:
    store, config, model, scored, _ = scored_store
    assert main(["explain", "u3", "--db", str(config.store.path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["user_id"] == "u3" and len(out["events"]) == min(config.analytics.explain_max_events, model.max_len)
    assert {"attention", "occlusion", "attention_rank", "occlusion_rank"} <= set(out["events"][0])
    assert main(["explain", "nobody", "--db", str(config.store.path)]) == 2
    assert "no scored user" in capsys.readouterr().err


def test_full_score_calibrates_each_dataset_and_a_later_load_reuses_its_weight(tmp_path: Path) -> None:
    db, config = trained_store(tmp_path)
    assert config.analytics.history_weight is None
    with Store.open(db, config=config) as store:
        encoder = encoder_for(config.text)
        source = load_source(store, config, encoder=encoder)
        report = score_store(store, config, source=source, encoder=encoder)
        assert report.source.endswith("+calibrated")
        (name, calibration), = report.calibrations.items()
        stored = store.calibrations()
        assert list(stored["name"]) == [name] and stored["history_weight"].iloc[0] == calibration.weight
        assert source.weights == {calibration.dataset_id: calibration.weight}
        mrr = calibration.by_weight
        assert set(mrr) == {0.0, 0.25, 0.5, 0.75, 1.0} and calibration.weight == max(mrr, key=lambda w: (mrr[w], -w))
        assert calibration.measured and "recent history" in report.quality_lines()[0]
        assert json.loads(json.dumps(report.to_dict()))["calibrations"][name]["pairs"] == calibration.pairs > 0
        # a later load of the model reuses the weights the stored vectors were made with
        assert load_source(store, config, encoder=encoder).weights == source.weights


def test_next_venues_are_the_models_own_probabilities_not_text_ties(scored_store) -> None:
    store, config, model, scored, _ = scored_store
    nxt = an.next_interests(scored, 1, "u3", venue_model=model.next_venues)
    venues = nxt.venues
    assert len(venues) == min(10, len(set(scored.events["item_id"])))
    assert venues["probability"].is_monotonic_decreasing and venues["probability"].sum() <= 1 + 1e-6
    last = scored.events[scored.events["user_id"] == "u3"].iloc[-1]
    here = venues["text"] == last["text"]  # the latest place itself is 0 km away from it
    assert (venues.loc[here, "distance_km"] < 0.2).any() and (venues["distance_km"] >= 0).all()
    mine = scored.events[scored.events["user_id"] == "u3"].reset_index(drop=True)
    everything = model.next_venues(mine, k=10_000)
    assert everything["probability"].sum() == pytest.approx(1.0, abs=1e-4)  # a distribution over the world
    # returns dominate: the person's most visited venue is among the model's first three
    favourite = mine["item_id"].value_counts().index[0]
    assert favourite in venues["item_id"].head(3).tolist()
    near = an.next_interests(scored, 1, "u3", place=(40.7306, -73.9891), venue_model=model.next_venues)
    assert (near.venues["distance_km"] <= config.analytics.next_radius_km).all()
    assert near.venues["probability"].sum() == pytest.approx(1.0, abs=1e-4)  # renormalised near the place
