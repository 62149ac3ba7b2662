"""Per-dataset calibration: the blend is chosen on the dataset's own recent next events, and said."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from interestgeo.calibration import MIN_PAIRS, calibrate, calibration_cutoff, next_event_pairs

D = 8


def city(n_users: int = 30, per_user: int = 40, seed: int = 0) -> pd.DataFrame:
    """Events of users who walk through 12 places in turn (text = place), hours apart."""
    rng = np.random.default_rng(seed)
    texts = [f"place {i}" for i in range(12)]
    rows = []
    for u in range(n_users):
        t = pd.Timestamp("2020-01-01", tz="UTC") + pd.Timedelta(hours=int(rng.integers(0, 48)))
        for k in range(per_user):
            rows.append((1, f"u{u:02d}", t, texts[(u + k) % 12]))
            t += pd.Timedelta(hours=int(rng.integers(1, 30)))
    events = pd.DataFrame(rows, columns=["dataset_id", "user_id", "ts", "text"])
    return events.sort_values(["dataset_id", "user_id", "ts"]).reset_index(drop=True)


def text_vectors_for(events: pd.DataFrame) -> tuple[dict[str, np.ndarray], Callable[[list[str]], np.ndarray]]:
    rng = np.random.default_rng(1)
    distinct = sorted(events["text"].unique())
    table = {t: v / np.linalg.norm(v) for t, v in zip(distinct, rng.normal(size=(len(distinct), D)))}
    return table, lambda texts: np.stack([table[t] for t in texts]).astype(np.float32)


def next_text_vectors(events: pd.DataFrame, table: dict[str, np.ndarray]) -> np.ndarray:
    """A perfect predictor: each row points at the same user's next event's text."""
    nxt = events["text"].shift(-1).where(events["user_id"].shift(-1) == events["user_id"], events["text"])
    return np.stack([table[t] for t in nxt]).astype(np.float32)


def noise(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_calibration_picks_history_when_the_model_is_worse_and_says_so() -> None:
    events = city()
    table, text_of = text_vectors_for(events)
    cutoff = calibration_cutoff(events["ts"])
    good = next_text_vectors(events, table)
    result = calibrate(1, events, model=noise(len(events), 2), history=good, text_vectors=text_of, cutoff=cutoff)
    # mostly history (0.75 ranks as perfectly as 1.0 here; ties go to the lower weight)
    assert result.weight >= 0.75 and result.measured
    assert result.stored_mrr == result.history_mrr == 1.0 > result.model_mrr
    assert "as well as recent history" in result.sentence("upload")


def test_calibration_picks_the_model_when_it_anticipates_next_events_and_reports_the_gain() -> None:
    events = city()
    table, text_of = text_vectors_for(events)
    cutoff = calibration_cutoff(events["ts"])
    good = next_text_vectors(events, table)
    result = calibrate(1, events, model=good, history=noise(len(events), 3), text_vectors=text_of, cutoff=cutoff)
    assert result.weight == 0.0 and result.gain > 1.0
    assert "better than recent history" in result.sentence("upload")
    worse = calibrate(1, events, model=good, history=noise(len(events), 3), text_vectors=text_of, cutoff=cutoff,
                      fixed_weight=1.0)
    assert worse.weight == 1.0 and worse.fixed and worse.gain == 0.0  # a fixed weight is measured, not chosen


def test_pairs_end_at_or_after_the_cutoff_and_the_halves_do_not_overlap() -> None:
    events = city()
    cutoff = calibration_cutoff(events["ts"])
    pairs, targets, distinct = next_event_pairs(events, cutoff)
    assert (events["ts"].to_numpy()[pairs + 1] >= cutoff).all()
    assert (events["user_id"].to_numpy()[pairs + 1] == events["user_id"].to_numpy()[pairs]).all()
    assert [distinct[t] for t in targets] == events["text"].to_numpy()[pairs + 1].tolist()
    share = (events["ts"] >= cutoff).mean()
    assert 0.09 <= share <= 0.12  # the latest tenth


def test_a_dataset_too_short_to_calibrate_gets_a_sentence_not_a_nan() -> None:
    events = city(n_users=3, per_user=20)
    table, text_of = text_vectors_for(events)
    result = calibrate(1, events, noise(len(events), 1), noise(len(events), 2), text_of, calibration_cutoff(events["ts"]))
    assert not result.measured and result.pairs < MIN_PAIRS and result.weight == 0.5
    assert f"needs at least {MIN_PAIRS}" in result.sentence("tiny")
    assert result.to_dict()["stored_mrr"] is None


def test_calibration_chooses_the_sharpness_with_the_weight_from_one_set_of_rows() -> None:
    events = city()
    table, text_of = text_vectors_for(events)
    cutoff = calibration_cutoff(events["ts"])
    pairs, _, _ = next_event_pairs(events, cutoff)
    rows = np.flatnonzero(np.isin(np.arange(len(events)), pairs))  # only the measured rows were computed
    good = next_text_vectors(events, table)[rows]
    variants = np.stack([noise(len(rows), 4), good])  # sharpness 1 blurred, 2 right
    result = calibrate(1, events, variants, noise(len(rows), 5), text_of, cutoff, sharpness=(1.0, 2.0), rows=rows)
    assert result.sharpness == 2.0 and result.weight == 0.0 and result.model_mrr == 1.0
    assert "sharpness 2" in result.sentence("upload")


def test_distinct_texts_and_their_codes_are_numpys_unique() -> None:
    # next_event_pairs hashes before sorting; its distinct texts and codes are np.unique's exactly
    from interestgeo.calibration import _sorted_distinct

    texts = np.array(["b", "a", "é", "b", "", "a", "B", "é", "zz", "a"], dtype=object)
    distinct, codes = _sorted_distinct(texts)
    expected, inverse = np.unique(texts, return_inverse=True)
    assert distinct.tolist() == expected.tolist() and codes.tolist() == inverse.tolist()
