"""The inductive model: one checkpoint scores a city it never saw, against that city's own world.

A tiny model is trained on one synthetic city through the real training API, then scores another
city (other coordinates, other venue ids and names) whose people follow the same planted routine:
each day home -> coffee -> office -> gym -> bar. Nothing of the second city is in the checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interestgeo.calibration import calibration_cutoff, next_event_pairs
from interestgeo.eval.run import EvaluationError, run_evaluation
from interestgeo.metrics import next_text_mrr
from interestgeo.model import InterestScorer, adapted_name, load_checkpoint, register_checkpoint, train_model
from interestgeo.model.world import world_from_events
from interestgeo.store import Store
from interestgeo.text import TextEncoder, embed_texts, encoder_for
from interestgeo.vectors import RecencySource, load_source, score_store, source_label
from tests._data.analytics import ingest, tiny_model_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROUTINE = [  # (category, hour of day): one day of every person in both cities
    ("Home (private)", 7), ("Coffee Shop", 8), ("Office", 10), ("Gym", 18), ("Bar", 21),
]
CITIES = {
    # name: (first day, centre, venue names per category); shelbyville's weeks follow springfield's
    "springfield": ("2013-03-04", (40.75, -73.98), {"Home (private)": "", "Coffee Shop": "Java Hut", "Office": "Acme Corp",
                                       "Gym": "Iron Works", "Bar": "Moe's Tavern"}),
    "shelbyville": ("2013-04-01", (35.68, 139.76), {"Home (private)": "", "Coffee Shop": "Bean There", "Office": "Globex",
                                       "Gym": "Muscle Beach", "Bar": "The Drunken Clam"}),
}


def write_city(path: Path, city: str, n_users: int, days: int, seed: int) -> None:
    """Each person: their own home, one of two branches of every other place, the routine every day
    (a few days skipped), a few minutes of jitter."""
    rng = np.random.default_rng(seed)
    start, (lat0, lon0), names = CITIES[city]
    t0 = pd.Timestamp(start, tz="UTC")
    with gzip.open(path, "wt", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "venue_id", "venue_name", "venue_category", "category_path", "latitude",
                         "longitude", "utc_time", "tz_offset_min"])
        for u in range(n_users):
            places = {}
            for category, _ in ROUTINE:
                branch = u if category == "Home (private)" else int(rng.integers(2))
                dlat, dlon = rng.normal(scale=0.02, size=2)
                places[category] = (f"{city[:3]}-{category[:4]}-{branch}", lat0 + dlat, lon0 + dlon)
            for day in range(days):
                if rng.random() < 0.15:
                    continue
                for category, hour in ROUTINE:
                    venue, lat, lon = places[category]
                    ts = t0 + pd.Timedelta(days=day, hours=hour, minutes=int(rng.integers(0, 40)))
                    writer.writerow([f"{city[:2]}{u}", venue, names[category], category, "", f"{lat:.5f}", f"{lon:.5f}",
                                     ts.strftime("%Y-%m-%dT%H:%M:%SZ"), 0])


@pytest.fixture(scope="module")
def two_cities(tmp_path_factory: pytest.TempPathFactory):
    """A store with both cities and a tiny model trained on springfield only."""
    folder = tmp_path_factory.mktemp("cities")
    for i, city in enumerate(CITIES):
        write_city(folder / f"{city}.csv.gz", city, n_users=14, days=24, seed=i)
    config = tiny_model_config(folder / "cities.duckdb", folder / "models")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, epochs=3))
    with Store.open(config.store.path, config=config) as store:
        for city in CITIES:
            ingest(store, folder / f"{city}.csv.gz", config, city)
        checkpoint = train_model(store, config, dataset="springfield", seed=0)
    return config, checkpoint


def private_copy(config, tmp_path: Path, name: str):
    """The module's store copied for one test (it writes), and its config pointed at the copy."""
    db = tmp_path / name
    db.write_bytes(Path(config.store.path).read_bytes())
    return config.with_db(db)


def next_event_mrr(store: Store, encoder: TextEncoder, events: pd.DataFrame, vectors: np.ndarray) -> float:
    pairs, targets, distinct = next_event_pairs(events, calibration_cutoff(events["ts"]))
    return next_text_mrr(vectors[pairs], targets, embed_texts(store, encoder, distinct, warn=None))


def test_a_model_trained_on_one_city_beats_history_in_a_city_it_never_saw(two_cities) -> None:
    config, checkpoint_id = two_cities
    encoder = encoder_for(config.text)
    with Store.open(config.store.path, config=config) as store:
        checkpoint = load_checkpoint(store, checkpoint_id)
        assert [t["dataset"] for t in checkpoint.trained_on] == ["springfield"]
        scorer = InterestScorer(store, checkpoint, encoder=encoder)
        events = store.events([store.dataset_id("shelbyville")])
        world = scorer.world(store.dataset_id("shelbyville"))
        assert set(world.keys.str.split("\x1f").str[1].str[:3]) == {"she"}  # its own venues, no springfield one
        model = scorer.expected_venue_vectors(events)
        history = RecencySource(lambda t: embed_texts(store, encoder, t, warn=None)).interest_vectors(events)
        model_mrr = next_event_mrr(store, encoder, events, model / np.linalg.norm(model, axis=1, keepdims=True))
        history_mrr = next_event_mrr(store, encoder, events, history)
    # the routine is in the order of events, which a mean of recent texts cannot say
    assert model_mrr > 1.3 * history_mrr and model_mrr > 0.6


def test_world_counts_stop_at_the_cutoff_and_later_items_are_not_candidates(two_cities) -> None:
    config, _ = two_cities
    encoder = encoder_for(config.text)
    with Store.open(config.store.path, config=config) as store:
        events = store.events([store.dataset_id("shelbyville")])
        late = events["item_id"] == events["item_id"].iloc[-1]
        events.loc[late, "item_id"] = "brand-new"  # an item first seen after the cutoff
        events.loc[late, "ts"] = events["ts"].max()
        cutoff = calibration_cutoff(events["ts"])
        world = world_from_events(events, cutoff, lambda t: embed_texts(store, encoder, t, warn=None))
    data = world.data
    before = (events["ts"] < cutoff).to_numpy()
    assert float(data.venue_count.sum()) == before.sum()  # popularity counted before the cutoff only
    new = world.keys.get_loc(f"{events['dataset_id'].iloc[0]}\x1fbrand-new")
    assert not bool(data.candidate[new]) and bool(data.candidate.sum() == len(world.keys) - 1)
    assert (world.venues_of(events) < len(world.keys)).all()


def test_scoring_a_stranger_calibrates_it_and_evaluate_dataset_says_zero_shot(two_cities, tmp_path: Path) -> None:
    config, _ = two_cities
    config = private_copy(config, tmp_path, "copy.duckdb")
    with Store.open(config.store.path, config=config) as store:
        encoder = encoder_for(config.text)
        report = score_store(store, config, source=load_source(store, config, encoder=encoder), encoder=encoder)
        assert set(report.calibrations) == {"springfield", "shelbyville"}
        assert report.calibrations["shelbyville"].measured
        run = run_evaluation(store, config, dataset="shelbyville")
        assert any("zero-shot" in note and "springfield" in note for note in run.notes)
        assert run.results["next_venue"]["model"]["mrr"] > run.results["next_venue"]["popularity"]["mrr"]
        assert "ablation" not in " ".join(run.results["next_venue"])


def test_evaluate_dataset_refuses_a_checkpoint_that_trained_on_its_validation_or_test_period(
    two_cities, tmp_path: Path
) -> None:
    config, _ = two_cities
    config = private_copy(config, tmp_path, "leak.duckdb")
    with Store.open(config.store.path, config=config) as store:
        # both cities in one split: trained up to the 80 % time cut of all events, which lies in
        # shelbyville's weeks, after springfield's whole period (its validation and test included)
        train_model(store, config, seed=0)
        assert sorted(t["dataset"] for t in load_checkpoint(store).trained_on) == ["shelbyville", "springfield"]
        with pytest.raises(EvaluationError, match="would leak"):
            run_evaluation(store, config, dataset="springfield")
        run = run_evaluation(store, config, dataset="shelbyville")  # trained before its validation start: fair
        assert not any("zero-shot" in note for note in run.notes)


def test_a_checkpoint_for_another_text_model_is_refused_by_name(two_cities, tmp_path: Path) -> None:
    config, checkpoint_id = two_cities
    config = private_copy(config, tmp_path, "other-text.duckdb")
    with Store.open(config.store.path, config=config) as store:
        folder = Path(store.checkpoint(checkpoint_id)["path"])
        copy = tmp_path / "copy"
        copy.mkdir()
        for f in folder.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        meta = json.loads((copy / "meta.json").read_text())
        meta["text_model_id"] = "some-multilingual-encoder"
        (copy / "meta.json").write_text(json.dumps(meta))
        register_checkpoint(store, copy)
        with pytest.raises(LookupError, match="'some-multilingual-encoder'.*" + encoder_for(config.text).model_id):
            load_source(store, config, encoder=encoder_for(config.text))


def test_an_adapted_model_scores_its_dataset_and_goes_with_it(two_cities, tmp_path: Path) -> None:
    config, base_id = two_cities
    config = private_copy(config, tmp_path, "adapt.duckdb")
    with Store.open(config.store.path, config=config) as store:
        adapted_id = train_model(store, config, name=adapted_name("shelbyville"), dataset="shelbyville",
                                 init_from=base_id, minutes=0.2)
        adapted = load_checkpoint(store, adapted_id)
        assert adapted.metrics["warm_start"] == base_id
        assert [t["dataset"] for t in adapted.trained_on] == ["shelbyville", "springfield"]
        source = load_source(store, config, encoder=encoder_for(config.text))
        assert set(source.model.scorer.adapted) == {store.dataset_id("shelbyville")}
        assert source_label(source).endswith(f"+{adapted_name('shelbyville')}#{adapted_id}+calibrated")
        folder = Path(store.checkpoint(adapted_id)["path"])
        assert store.delete_dataset(store.dataset_id("shelbyville"))
        assert store.checkpoint(adapted_id) is None and not folder.exists()
        assert store.checkpoint(base_id) is not None  # the shared model stays
