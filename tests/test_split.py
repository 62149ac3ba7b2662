"""The issue-3 split: time cut, 24 h trajectories, sample choice and filtering, no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interestgeo.split import SplitProtocol, history_rows, make_split, previous_rows
from tests._data.eval import START, make_events, random_events

# 21 events; with 80/10/10, val starts at the 17th event in time order (50 h), test at the 19th (60 h).
# u1: a train trajectory (0-2 h), then after 30 h a trajectory straddling train/val ending in val.
# u2: train only, then one test trajectory. u3: only in val/test (never in training).
ROWS = [
    ("u1", 0.0, "A", 40.70, -74.00),
    ("u1", 1.0, "B", 40.71, -74.00),
    ("u1", 2.0, "A", 40.70, -74.00),
    ("u1", 32.0, "B", 40.71, -74.00),  # gap 30 h > 24 h: new trajectory
    ("u1", 33.0, "C", 40.72, -74.00),
    ("u1", 52.0, "A", 40.70, -74.00),  # gap 19 h: same trajectory (ends in val)
    ("u2", 0.5, "C", 40.72, -74.00),
    ("u2", 1.5, "A", 40.70, -74.00),
    ("u2", 3.0, "C", 40.72, -74.00),
    ("u2", 4.0, "B", 40.71, -74.00),
    ("u2", 5.0, "A", 40.70, -74.00),
    ("u2", 6.0, "C", 40.72, -74.00),
    ("u2", 7.0, "B", 40.71, -74.00),
    ("u2", 8.0, "A", 40.70, -74.00),
    ("u2", 9.0, "C", 40.72, -74.00),
    ("u2", 10.0, "B", 40.71, -74.00),
    ("u2", 11.0, "A", 40.70, -74.00),
    ("u3", 50.0, "A", 40.70, -74.00),  # val, user unseen in training
    ("u2", 60.0, "B", 40.71, -74.00),  # test trajectory, predicted from u2's train history
    ("u2", 61.0, "D", 40.73, -74.00),  # test target at a venue never seen in training: dropped
    ("u2", 61.0, "A", 40.70, -74.00),  # same instant as D
]


@pytest.fixture
def split():
    return make_split(make_events(ROWS))


def test_periods_are_cut_at_the_timestamps_of_the_80_and_90_percent_events(split):
    ev = split.events
    assert split.val_start == START + pd.Timedelta(hours=50)
    assert split.test_start == START + pd.Timedelta(hours=60)
    assert (ev.loc[ev["part"] == "train", "ts"] < split.val_start).all()
    assert ((ev["part"] == "val") == ((ev["ts"] >= split.val_start) & (ev["ts"] < split.test_start))).all()
    assert (ev.loc[ev["part"] == "test", "ts"] >= split.test_start).all()
    assert ev["part"].value_counts().to_dict() == {"train": 16, "val": 2, "test": 3}


def test_trajectories_are_cut_at_gaps_over_24_hours(split):
    u1 = split.events[split.events["user_id"] == "u1"]
    assert u1["traj_id"].diff().fillna(0).tolist() == [0, 0, 0, 1, 0, 0]
    u2 = split.events[split.events["user_id"] == "u2"]
    assert u2["traj_id"].nunique() == 2  # 11 h -> 60 h is a 49 h gap


def test_samples_are_last_events_of_trajectories_with_known_user_and_venue(split):
    ev = split.events
    # val: u1's straddling trajectory ends in val at A (52 h); u3 is unseen in training -> dropped.
    assert ev.loc[split.val.row, ["user_id", "item_id"]].values.tolist() == [["u1", "A"]]
    # test: u2's last event in time order is A at 61 h (event order breaks the tie with D);
    # D would be dropped anyway (never seen in training).
    assert ev.loc[split.test.row, ["user_id", "item_id"]].values.tolist() == [["u2", "A"]]
    assert split.venues["item_id"].tolist() == ["A", "B", "C"]
    assert split.test.venue.tolist() == [0]
    assert list(split.test.user_key) == ["1:u2"]
    assert split.categories == ["A", "B", "C"]
    assert (ev.loc[ev["item_id"] == "D", "venue_idx"] == -1).all()


def test_history_is_every_earlier_event_of_the_user_and_excludes_the_same_instant(split):
    ev = split.events
    sample_index, rows = history_rows(split.test)
    history = ev.loc[rows]
    assert (history["user_id"] == "u2").all()
    # u2's 11 training events and B at 60 h; D shares the target's instant, so it is not history.
    assert len(history) == 12
    assert (history["ts"] < ev.loc[split.test.row[0], "ts"]).all()
    assert ev.loc[previous_rows(split.test), "item_id"].tolist() == ["B"]
    # u1's val sample sees its train trajectory and the straddling trajectory's train part.
    assert split.val.history_end[0] - split.val.history_start[0] == 5


def test_no_validation_or_test_event_is_training_input():
    split = make_split(random_events(seed=3))
    ev = split.events
    train = split.train_mask
    targets = np.concatenate([split.val.row, split.test.row])
    assert len(split.val) > 20 and len(split.test) > 20
    assert not train[targets].any()
    assert ev.loc[train, "ts"].max() < ev.loc[targets, "ts"].min()
    assert (ev.loc[split.val.row, "part"] == "val").all() and (ev.loc[split.test.row, "part"] == "test").all()
    # Venue and category vocabularies come from training events only.
    train_items = set(ev.loc[train, "item_id"])
    assert set(split.venues["item_id"]) == train_items
    assert split.venues["count"].sum() == train.sum()


def test_every_kept_trajectory_ending_in_a_part_gives_one_sample():
    split = make_split(random_events(seed=5))
    ev = split.events
    last = ev.groupby("traj_id").tail(1)
    trained_users = set(ev.loc[split.train_mask, "user_id"])
    for part, samples in (("val", split.val), ("test", split.test)):
        expected = last[(last["part"] == part) & (last["venue_idx"] >= 0) & last["user_id"].isin(trained_users)]
        assert samples.row.tolist() == expected.index.tolist()
        assert (samples.category == split.venues["category_idx"].to_numpy()[samples.venue]).all()


def test_split_does_not_depend_on_input_row_order():
    events = random_events(seed=1)
    shuffled = events.sample(frac=1.0, random_state=0)
    a, b = make_split(events), make_split(shuffled)
    assert np.array_equal(a.test.row, b.test.row) and a.events["event_id"].equals(b.events["event_id"])


def test_protocol_shares_move_the_cut():
    events = random_events(seed=2)
    later = make_split(events, protocol=SplitProtocol(train_share=0.85, train_val_share=0.95))
    default = make_split(events)
    assert later.val_start > default.val_start and later.test_start > default.test_start


def test_empty_input_is_a_clear_error():
    with pytest.raises(ValueError, match="no events"):
        make_split(make_events([]))
