"""Analyst-only results about identifiable users (`@analyst_only`: a marketer viewer is refused).

Why apart: one file holds every function that returns user ids or one person's data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from interestgeo.access import analyst_only
from interestgeo.analytics._groups import _group
from interestgeo.analytics.filters import Filters
from interestgeo.analytics.regions import Drift, _drift
from interestgeo.analytics.scored import ScoredEvents, filter_mask
from interestgeo.cells import latlng_to_cell
from interestgeo.geo import haversine_km
from interestgeo.schema import user_key_columns

__all__ = [
    "NextInterests", "UserProfile", "interested_users", "list_users", "next_interests", "to_utc", "user_drift",
    "user_event_positions", "user_profile",
]


@analyst_only
def list_users(scored: ScoredEvents, filters: Filters | None = None) -> pd.DataFrame:
    """Users with events passing the filter: dataset_id, user_id, events, first, last (most active first)."""
    mask = filter_mask(scored, filters)
    ev = scored.events.loc[mask, ["dataset_id", "user_id", "ts"]]
    out = ev.groupby(["dataset_id", "user_id"], sort=True)["ts"].agg(["size", "min", "max"]).reset_index()
    out.columns = ["dataset_id", "user_id", "events", "first", "last"]
    return out.sort_values(["events", "dataset_id", "user_id"], ascending=[False, True, True], kind="stable").reset_index(drop=True)


@analyst_only
def interested_users(
    scored: ScoredEvents, phrase_vector: np.ndarray, filters: Filters | None = None, top: int = 50
) -> pd.DataFrame:
    """The users most interested in a phrase: dataset_id, user_id, events, affinity (best first)."""
    idx = np.flatnonzero(filter_mask(scored, filters))
    s = scored.affinity(phrase_vector)[idx]
    groups = _group(scored, idx, np.zeros(len(idx), dtype=np.int64))
    affinity = groups.pair_mean(s) if len(idx) else np.zeros(0)
    keys = pd.Series(np.asarray(scored.user_keys, dtype=object)[groups.pair_user])
    users = user_key_columns(keys)
    out = pd.DataFrame(
        {
            "dataset_id": users["dataset_id"],
            "user_id": users["user_id"],
            "events": np.bincount(groups.pair, minlength=len(affinity)),
            "affinity": affinity,
        }
    )
    return out.sort_values("affinity", ascending=False, kind="stable").head(top).reset_index(drop=True)


def to_utc(at: datetime | str | pd.Timestamp) -> pd.Timestamp:
    """A time as a UTC timestamp; naive times are taken as UTC."""
    stamp = pd.Timestamp(at)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@analyst_only
def user_event_positions(scored: ScoredEvents, dataset_id: int, user_id: str, at: datetime | None = None) -> np.ndarray:
    """Positions of one user's events (time order), up to `at` (UTC) when given; LookupError if none."""
    key = f"{int(dataset_id)}:{user_id}"
    code = scored.user_keys.get_indexer([key])[0]
    if code < 0:
        raise LookupError(f"no scored events for user {user_id!r} in dataset {dataset_id}")
    idx = np.flatnonzero(scored.user_codes == code)
    if at is not None:
        ts = scored.events["ts"].iloc[idx]
        idx = idx[(ts <= to_utc(at)).to_numpy()]
        if len(idx) == 0:
            raise LookupError(f"user {user_id!r} has no events before {at}")
    return idx


@dataclass
class UserProfile:
    """One user's current interests (at a time)."""

    dataset_id: int
    user_id: str
    at: pd.Timestamp  # time of the last event used (UTC)
    vector: np.ndarray  # (D,) interest vector right after that event
    shares: pd.DataFrame  # topic, share: best first
    events: pd.DataFrame  # the user's events up to then (ts, local_ts, lat, lon, text, cell, topic label)


@analyst_only
def user_profile(scored: ScoredEvents, dataset_id: int, user_id: str, at: datetime | None = None) -> UserProfile:
    """A user's interest vector and topic shares right after their last event at or before `at`."""
    idx = user_event_positions(scored, dataset_id, user_id, at)
    last = idx[-1]
    shares = pd.DataFrame({"topic": list(scored.topics.labels), "share": scored.topic_probs[last]})
    shares = shares.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)
    events = scored.events.loc[idx, ["event_id", "ts", "local_ts", "lat", "lon", "text", "cell"]].reset_index(drop=True)
    events["topic"] = np.asarray(scored.topics.labels, dtype=object)[scored.event_topic[idx]]
    vector = scored.vector_rows(np.array([last]))[0]
    return UserProfile(int(dataset_id), str(user_id), scored.events["ts"].iloc[last], vector, shares, events)


@analyst_only
def user_drift(scored: ScoredEvents, dataset_id: int, user_id: str, window: str = "week") -> Drift:
    """Drift of one user's interests across `window`s (no k threshold: one identified user)."""
    return _drift(scored, user_event_positions(scored, dataset_id, user_id), window, 1)


@dataclass
class NextInterests:
    """Predicted next interests of a user at a time."""

    topics: pd.DataFrame  # topic, score (share), best first
    venues: pd.DataFrame  # item_id, text, category, lat, lon, visits, score, distance_km (when a place is given)
    at: pd.Timestamp


def _same_place_once(venues: pd.DataFrame) -> pd.DataFrame:
    """Items with the same text in the same H3 cell (res 9, ~0.1 km2) as one row: a dataset often
    holds one place under several ids (several "Home (private)" at one address). Probabilities and
    visits add up; `branches` counts the ids; the likeliest id's place and item_id are kept."""
    cell = latlng_to_cell(venues["lat"].to_numpy(), venues["lon"].to_numpy(), 9)
    keyed = venues.assign(_cell=cell, branches=1)
    merged = keyed.groupby(["text", "_cell"], sort=False).agg(
        {**{c: "first" for c in venues.columns if c not in ("probability", "visits")},
         "probability": "sum", "visits": "sum", "branches": "sum"}
    )
    return merged.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)


@analyst_only
def next_interests(
    scored: ScoredEvents,
    dataset_id: int,
    user_id: str,
    at: datetime | None = None,
    place: tuple[float, float] | None = None,
    k: int = 10,
    venue_model: Callable[[pd.DataFrame, int], pd.DataFrame] | None = None,
) -> NextInterests:
    """Top-k next topics and venues for a user at a time, optionally near a place (lat, lon).

    With `venue_model(the user's events up to then, n) -> its top-n venues with a `probability``
    (the trained model's own next-venue distribution: InterestScorer.next_venues), venues are
    ranked by it: the model's pointer, counts, transitions and distances, not text alone, so a
    chain's branches do not tie. Near a place, the probabilities are those of the venues within
    the radius, renormalised to sum to 1 there. Without it (no trained model) venues are ranked
    by text similarity as follows.

    The user's interest vector right after their last event at or before `at` is dotted with
    each topic and each venue's text embedding (the model is trained so that this dot product
    ranks the next event). With a place, only venues within `analytics.next_radius_km` compete.
    Venues are scored by their text, so the branches of a chain ("Starbucks, Coffee Shop") tie:
    each text is listed once, at its nearest branch to `place` (else its most visited), with
    `branches` counting the candidates that share it. Needs `scored.venues` (load_scored with an
    encoder) for venues.
    """
    profile = user_profile(scored, dataset_id, user_id, at)
    topics = profile.shares.rename(columns={"share": "score"}).head(k)
    if venue_model is not None:
        ev = scored.events
        mine = ev[(ev["dataset_id"] == dataset_id) & (ev["user_id"].astype(str) == str(user_id))]
        mine = mine[mine["ts"] <= profile.at] if profile.at is not None else mine
        venues = _same_place_once(venue_model(mine.reset_index(drop=True), 3 * k if place is None else 50 * k))
        # how far each is (from the place, else from the person's latest event)
        origin = place if place is not None else (float(mine["lat"].iloc[-1]), float(mine["lon"].iloc[-1]))
        venues = venues.assign(distance_km=haversine_km(*origin, venues["lat"].to_numpy(), venues["lon"].to_numpy()))
        if place is not None:
            venues = venues[venues["distance_km"] <= scored.config.analytics.next_radius_km].head(k)
            venues = venues.assign(probability=venues["probability"] / max(venues["probability"].sum(), 1e-12))
        venues = venues.head(k)
        return NextInterests(topics.reset_index(drop=True), venues.reset_index(drop=True), profile.at)
    if scored.venues is None:
        raise LookupError("venues are not loaded: load the scored events with a text encoder")
    frame = scored.venues.frame.copy()
    frame["score"] = scored.venues.vectors @ profile.vector
    if place is not None:
        frame["distance_km"] = haversine_km(place[0], place[1], frame["lat"].to_numpy(), frame["lon"].to_numpy())
        frame = frame[frame["distance_km"] <= scored.config.analytics.next_radius_km]
    frame["branches"] = frame.groupby("text")["text"].transform("size")
    # equal texts can differ in the last float bits (BLAS blocking), so ties are judged at 1e-6
    frame["tie"] = frame["score"].round(6)
    tie_break = ("distance_km", True) if place is not None else ("visits", False)
    frame = frame.sort_values(["tie", tie_break[0]], ascending=[False, tie_break[1]], kind="stable")
    venues = frame.drop_duplicates("text").drop(columns="tie").head(k).reset_index(drop=True)
    return NextInterests(topics.reset_index(drop=True), venues, profile.at)
