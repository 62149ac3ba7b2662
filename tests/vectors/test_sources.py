"""vectors/sources.py: the recency source against its formula, row by row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interestgeo.vectors.sources import RecencySource


def test_recency_vectors_are_each_users_decayed_sum_of_past_texts() -> None:
    # three users of different lengths (one of a single event), two datasets, repeated texts, two
    # events at the same instant, and a user key shared across datasets (a different person there)
    rows = [
        (1, "a", "2024-01-01 10:00", "jazz"), (1, "a", "2024-01-02 10:00", "sushi"), (1, "a", "2024-01-02 10:00", "jazz"),
        (1, "a", "2024-01-20 08:00", "park"), (1, "b", "2024-01-05 12:00", "park"),
        (2, "a", "2024-01-01 09:00", "sushi"), (2, "a", "2024-01-08 09:00", "sushi"),
        (2, "c", "2024-02-01 00:00", "jazz"), (2, "c", "2024-02-01 06:00", "park"), (2, "c", "2024-02-03 06:00", "jazz"),
    ]
    events = pd.DataFrame(rows, columns=["dataset_id", "user_id", "ts", "text"])
    events["ts"] = pd.to_datetime(events["ts"], utc=True)
    rng = np.random.default_rng(3)
    table = {t: rng.standard_normal(5).astype(np.float32) for t in ("jazz", "sushi", "park")}
    source = RecencySource(lambda texts: np.array([table[t] for t in texts], dtype=np.float32).reshape(len(texts), 5), half_life_days=7.0)

    got = source.interest_vectors(events)

    rate = np.log(2.0) / (7.0 * 86400.0)
    for i, row in events.iterrows():
        past = events.iloc[: i + 1]
        past = past[(past["dataset_id"] == row["dataset_id"]) & (past["user_id"] == row["user_id"])]
        age = (row["ts"] - past["ts"]).dt.total_seconds().to_numpy()
        expected = sum(np.exp(-rate * a) * table[t] for a, t in zip(age, past["text"]))
        np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=1e-6)
    assert source.interest_vectors(events.iloc[:0]).shape == (0, 5)
