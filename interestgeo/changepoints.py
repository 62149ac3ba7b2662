"""Change points of a topic-share series: where a region's interests shifted to a new level.

Why this method: the earlier rule flagged a window whose drift from the previous one exceeded the
median by z robust standard deviations. It judged one step at a time, so a thin window (a week
of 16 people beside weeks of 300) was two "changes" (into it and out of it), and on the NYC demo
five flags clustered at its Aug-Oct 2012 data gap. A change point is a property of segments, not of
steps: PELT (ruptures; Killick et al. 2012) finds the segmentation of the whole series into
constant-mean pieces that minimises the squared error plus a penalty per change, exactly and in
linear time.

* **Gaps are gaps.** Windows with fewer people than `analytics.thin_window_share` of the median
  window are left out before segmenting (as are windows hidden by the k threshold, which never
  reach here), so a sampling-noise window cannot start a regime. A shift that happened across a
  gap is still found, at the first window after it.
* **Scale.** Each topic's shares are divided by their robust window-to-window noise (1.4826 x the
  median absolute step / sqrt 2), so a change means "large for this topic's noise", and the
  penalty is `analytics.change_point_penalty` x a BIC penalty: (topics + 1) x log(windows).
"""

from __future__ import annotations

import numpy as np

__all__ = ["change_points", "usable_windows"]

# Shares move in steps of at least this much before they count as noise (0.5 percentage points):
# without a floor, a topic that never moves would make any tiny wiggle look like a change.
_NOISE_FLOOR = 0.005


def usable_windows(users: np.ndarray, thin_share: float) -> np.ndarray:
    """(W,) bool: the windows with at least `thin_share` x the median window's people."""
    users = np.asarray(users, dtype=np.float64)
    if len(users) == 0:
        return np.zeros(0, dtype=bool)
    return users >= thin_share * float(np.median(users))


def change_points(
    shares: np.ndarray, users: np.ndarray, penalty: float = 2.0, thin_share: float = 0.25, min_size: int = 2
) -> np.ndarray:
    """(W,) bool: the windows where a new regime of topic shares starts.

    shares: (W, T) topic shares of consecutive windows (time order); users: (W,) people per window.
    Thin windows are never flagged and never split a segment (see the module docstring).
    """
    import ruptures as rpt

    shares = np.asarray(shares, dtype=np.float64)
    flags = np.zeros(len(shares), dtype=bool)
    keep = np.flatnonzero(usable_windows(users, thin_share) & np.isfinite(shares).all(axis=1))
    if len(keep) < 2 * min_size:
        return flags
    x = shares[keep]  # (n, T)
    noise = 1.4826 * np.median(np.abs(np.diff(x, axis=0)), axis=0) / np.sqrt(2.0)
    z = x / np.maximum(noise, _NOISE_FLOOR)
    n, topics = z.shape
    bic = (topics + 1) * np.log(n)
    ends = rpt.Pelt(model="l2", min_size=min_size, jump=1).fit(z).predict(pen=penalty * bic)
    for end in ends[:-1]:  # the last "end" is the series' length
        flags[keep[end]] = True
    return flags
