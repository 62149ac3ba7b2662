"""Interest analytics: what people in an area are interested in, when, how it changes, and where X is.

Everything here is computed on the fly, with numpy, from the per-event interest vectors that
`interestgeo score` stored (`ScoredEvents`, loaded once and cached by the caller), except what
the stored aggregates answer exactly (stored.py: questions of everyone, at any size). Why on the fly
rather than from precomputed cell x window tables: every question comes with arbitrary filters
(hours of day, days of week, a drawn polygon, a topic, a date range), and no precomputed table can
answer all their combinations. One pass over ~100k events in numpy takes milliseconds, because the
expensive parts are linear: a free-text query is one matrix-vector product (N x 384), topic shares
are a precomputed (N, T) matrix, and everything after that is grouped sums (`np.bincount`).

**The regional vector** of a group of events (a cell x window, a region, an hour of the week) is
the *user-weighted* mean of their interest vectors: each distinct user's events are averaged
first, then users are averaged, so one heavy user with 300 check-ins counts as much as a visitor
with one (otherwise the map shows the heaviest user's taste). Equivalently, event e of user u in
group g gets weight 1 / (events of u in g * users in g); the weights of a group sum to one.
`region_vectors` returns it L2-normalised (a direction, for similarity) plus its norm as
`coherence` (1 = everyone there wants the same thing, near 0 = scattered interests).

**Free-text query score** of a group = the regional mean vector (not normalised) dotted with the
phrase's embedding = the user-weighted mean affinity of the people there to the phrase. Keeping it
linear makes it exact at every resolution from one per-event score, and it reads as "how much does
the average person here care about X". A user is *strongly interested* when their mean affinity
over the filtered events is in the top `analytics.strong_interest_quantile` of all users' (a
relative bar: absolute cosine levels depend on the model).

**Topic shares** average each event's softmax distribution over topics with the same weights, so
they sum to one for every group.

**Privacy.** Every region-level result drops the groups (cells, windows, hour-of-week buckets)
with fewer than `privacy.k_min_users` distinct users and says how many it dropped (`hidden`).
Functions that return user ids or one user's data are marked `@analyst_only` (`access.py`):
they raise `AccessDenied` when the declared viewer is a marketer.

Time windows are in local time (what "Friday evening" means to people), weeks start on Monday.

**Layout.** filters.py (what a question is asked of, and its CLI/URL text forms), scored.py (the
loaded `ScoredEvents`: its vectors held, or kept in the store when too many), stored.py (answers
from the aggregates stored at score time), _groups.py (the user-weighted group kernel), regions.py (maps, profiles,
periods, drift), query.py (free-text queries), users.py (analyst-only, per person), explain.py
(why the model sees a user so; import it from `interestgeo.analytics.explain`), records.py
(JSON-ready rows). This package re-exports the public names, so `from interestgeo import
analytics` then `analytics.X` works for each of them.
"""

from __future__ import annotations

from interestgeo.access import ANALYST_ONLY, analyst_only
from interestgeo.analytics.filters import (
    Filters, filters_from_options, parse_ranges, region_from_text,
)
from interestgeo.analytics.query import (
    QueryResult, embed_phrase, query_interest,
)
from interestgeo.analytics.records import (
    to_records,
)
from interestgeo.analytics.regions import (
    Drift, InterestProfile, RegionMap, RegionVectors, aggregate_cell_windows, aggregate_user_windows,
    compare_periods, drift_series, interest_profile, region_drift, region_map, region_vectors,
    window_counts,
)
from interestgeo.analytics.scored import (
    ScoredEvents, StoredVectors, Venues, build_venues, filter_mask, load_scored,
)
from interestgeo.analytics.stored import (
    stored_drift, stored_profile, stored_query, stored_region_map, stored_window_counts,
)
from interestgeo.analytics.users import (
    NextInterests, UserProfile, interested_users, list_users, next_interests, to_utc, user_drift,
    user_event_positions, user_profile,
)

__all__ = [
    "ANALYST_ONLY", "Drift", "Filters", "InterestProfile", "NextInterests", "QueryResult", "RegionMap",
    "RegionVectors", "ScoredEvents", "StoredVectors", "UserProfile", "Venues", "aggregate_cell_windows", "aggregate_user_windows",
    "analyst_only", "build_venues", "compare_periods", "drift_series", "embed_phrase", "filter_mask",
    "filters_from_options", "interest_profile", "interested_users", "list_users", "load_scored", "next_interests",
    "parse_ranges", "query_interest", "region_drift", "region_from_text", "region_map", "region_vectors",
    "stored_drift", "stored_profile", "stored_query", "stored_region_map", "stored_window_counts", "to_records", "to_utc", "user_drift", "user_event_positions", "user_profile", "window_counts",
]
