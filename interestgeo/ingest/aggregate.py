"""The cell x window counts behind every map, computed from one file's events (pure numpy, no SQL).

The ingest counts events and distinct users per (resolution, window size, window start, H3 cell)
once, while DuckDB writes the events, and the store keeps the result in `cell_windows`: a map of
any dataset selection is then a cheap SUM. Users are (dataset, user) pairs, so distinct users of
several datasets are the sum of the per-dataset counts. Hand-written (not a DataFrame groupby):
one packed-key sort per window size serves every resolution (see `cell_window_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from interestgeo.cells import cell_to_parent
from interestgeo.windows import MONDAY_OFFSET_H, WINDOW_HOURS

__all__ = ["cell_window_counts"]

# Groups are counted with bincount while there are at most this many possible (window, cell)
# groups per row; sparser ones are sorted (first-touching big bincount arrays cost more).
_BINCOUNT_DENSITY = 1.0


def cell_window_counts(
    users: np.ndarray,
    cells: np.ndarray,
    hours: np.ndarray,
    resolutions: Sequence[int],
    *,
    hour_resolutions: Sequence[int] | None = None,
    ranked: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Events and distinct users per (resolution, window size, window start, cell). Pure numpy.

    users: dense int user numbers; cells: H3 cells at a resolution >= max(resolutions);
    hours: local hours since 1970-01-01 00:00 (naive local time); hour_resolutions: the subset
    of `resolutions` counted for hour windows (None: all); ranked: optionally (sorted unique
    cells, each event's index into them) when the caller has them already.
    Returns columns resolution, window_size, window_start (datetime64[us]), cell, events,
    users, ordered by (window_size, resolution, window_start, cell).

    Why one sort per window size and nothing more: H3 parents preserve integer order (the digits
    run from coarse to fine), so after sorting by (window, user, cell) the parents at every coarser
    resolution are sorted inside each (window, user) run, and a user's first event in a
    (window, parent) group is simply where the parent changes within that run. Events and distinct
    users per group are then counts and flag counts per dense (window, parent) number: bincounts,
    no second sort, unless the groups are too many (then a sort of the group numbers). The sort
    sorts packed int64 keys (values, not an argsort and gathers: about half the time).
    """
    unique_cells, cell_rank = ranked if ranked is not None else np.unique(cells, return_inverse=True)
    cell_rank = np.asarray(cell_rank, dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    hours = np.asarray(hours, dtype=np.int64)
    n = len(cell_rank)
    parents: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for resolution in resolutions:
        parent_of_unique = cell_to_parent(unique_cells, resolution)  # sorted, as unique_cells is
        changed = np.concatenate([[False], parent_of_unique[1:] != parent_of_unique[:-1]])
        run_starts = changed.copy()
        run_starts[:1] = True
        # (parent rank of each unique cell, the distinct parents in rank order)
        parents[resolution] = (np.cumsum(changed, dtype=np.int32), parent_of_unique[run_starts])
    parts = []
    for window, width in WINDOW_HOURS.items():
        offset = MONDAY_OFFSET_H if window == "week" else 0
        counted = [r for r in resolutions if window != "hour" or hour_resolutions is None or r in hour_resolutions]
        if not counted:
            continue
        index = (hours - offset) // width
        first = int(index.min()) if n else 0
        w_user, u_user, c_user = _sorted_rows(index - first, users, cell_rank)
        same_run = (w_user[1:] == w_user[:-1]) & (u_user[1:] == u_user[:-1])
        n_windows = int(w_user[-1]) + 1 if n else 0
        for resolution in counted:
            parent_rank, parent_cells = parents[resolution]
            p_user = parent_rank[c_user]
            first_visit = np.ones(n, dtype=bool)
            first_visit[1:] = ~(same_run & (p_user[1:] == p_user[:-1]))
            # Dense (window, parent) group numbers, in (window start, cell) order.
            group = w_user * len(parent_cells) + p_user
            keys, events, visitors = _group_counts(group, first_visit, n_windows * len(parent_cells))
            parts.append((
                np.full(len(keys), resolution, dtype=np.int8),
                np.full(len(keys), list(WINDOW_HOURS).index(window), dtype=np.int8),
                ((keys // len(parent_cells) + first) * width + offset).astype("datetime64[h]").astype("datetime64[us]"),
                parent_cells[keys % len(parent_cells)],
                events.astype(np.int32),
                visitors.astype(np.int32),
            ))
    # One concatenation per column (pandas' frame concat costs as much as all the counting).
    columns = [np.concatenate(column) for column in zip(*parts, strict=True)] if parts else [
        np.empty(0, dtype) for dtype in (np.int8, np.int8, "datetime64[us]", np.int64, np.int32, np.int32)]
    return pd.DataFrame({
        "resolution": columns[0],
        "window_size": pd.Categorical.from_codes(columns[1], categories=list(WINDOW_HOURS)),
        "window_start": columns[2],
        "cell": columns[3],
        "events": columns[4],
        "users": columns[5],
    })


def _group_counts(group: np.ndarray, flag: np.ndarray, n_groups: int) -> tuple[np.ndarray, ...]:
    """(non-empty group numbers ascending, rows per group, flagged rows per group).

    Counted with bincount when the group numbers are dense enough (one pass, no sort: week and
    coarse windows), else by sorting them.
    """
    if n_groups <= _BINCOUNT_DENSITY * len(group):
        rows = np.bincount(group, minlength=n_groups)
        keys = np.flatnonzero(rows)
        return keys, rows[keys], np.bincount(group[flag], minlength=n_groups)[keys]
    ordered, flags = _sorted_rows(group, flag.astype(np.int64))
    boundary = np.ones(len(ordered), dtype=bool)
    boundary[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(boundary)
    ends = np.append(starts[1:], len(ordered))
    flagged = np.concatenate([[0], np.cumsum(flags)])
    return ordered[starts], ends - starts, flagged[ends] - flagged[starts]


def _sorted_rows(*keys: np.ndarray) -> tuple[np.ndarray, ...]:
    """The rows (key columns, non-negative ints) sorted by the keys, first = primary.

    When the keys' bits fit one int64, they are packed, sorted as values and unpacked (a value
    sort is about twice as fast as an argsort plus gathers); otherwise a lexsort and gathers.
    """
    widths = [max(int(k.max()), 1).bit_length() if len(k) else 1 for k in keys]
    if sum(widths) > 63:
        order = np.lexsort(keys[::-1])
        return tuple(k[order] for k in keys)
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    for key, width in zip(keys, widths, strict=True):
        packed = (packed << width) | key
    packed.sort()
    out = []
    shift = 0
    for key, width in zip(keys[::-1], widths[::-1], strict=True):
        out.append((packed >> shift) & ((1 << width) - 1))
        shift += width
    return tuple(out[::-1])
