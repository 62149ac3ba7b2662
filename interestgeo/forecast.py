"""Forecasts of topic shares per region and per person, backtested against simple baselines.

**What is forecast.** The topic shares the Drift page draws: per window (week or day), the
user-weighted mean of the events' topic distributions (analytics' module docstring), for every
region (everywhere, each named area, each coarse H3 cell) and for one person. Windows with fewer
than `privacy.k_min_users` people are hidden, as everywhere, and are gaps in the series.

**How.** Each forecast of window t+h made at window t is the last observed share plus a weighted
sum of what several forecasters expect on top of it:

* `level`: the shares' exponentially weighted mean (pandas `ewm`, half-life
  `forecast.halflife_windows`, gaps skipped): the history's own smoothing;
* `trend`: a straight line through the last `forecast.trend_windows` observed shares, extended to
  the target window (a moving least-squares fit, from pandas rolling sums: no lag on a trend);
* `people`: the shares implied by the **latest interest vector of each person active in the region**
  in window t. The stored per-event vector is the interest model's prediction of what the person
  does next (vectors/), so this is the model's view of where the region's people are going,
  which the shares' history alone does not know;
* `mean`: the region's long-run share so far;
* `seasonal` (day windows): the same weekday's exponentially weighted share (the weekly cycle).

The weights are non-negative least squares (scipy's `nnls`) fitted per horizon on every
(region, topic, window) pair *before* the forecast's origin, pooled across regions: a global
model, so a thin neighbourhood borrows its weights from the whole city. Why not one statsmodels
ETS per series: 10 topics x ~40 regions x 8 backtest origins are thousands of maximum-likelihood
fits (3-10 ms each on an idle core; the demo's 3,000 took 278 s on 2 busy ones) where the target
is 2 s for every region; most regions' series are too short and gappy to fit alone (statsmodels'
Holt-Winters refuses gaps); a per-series ETS cannot use the people's interest vectors; and on the
demo's weekly backtest a damped-trend ETS per series scored worse (MAE 2.74 points against 2.66;
`benchmarks/bench_forecast.py --ets`). The smoothing itself is pandas', not hand-written.
Intervals are empirical: the pooled fit's residuals, scaled by each series' window-to-window
noise, give the quantile for `forecast.interval` coverage.

**Backtest** (`Forecast.backtest`): rolling origin over the last `forecast.backtest_origins`
windows; at each origin the weights are refitted on the windows up to it only, and every feature
is causal (`ewm`, `expanding`, forward fill), so nothing after the origin is seen (tested by
changing the data after an origin). Scored beside persistence (last window), a moving average and,
for day windows, seasonal naive (same weekday last week): MAE of the shares and, for "rises by at
least `forecast.rise_threshold`", precision, recall, F1 and AUC (scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interestgeo.analytics import Filters, ScoredEvents, analyst_only, filter_mask, user_event_positions
from interestgeo.analytics._groups import _group
from interestgeo.areas import AREAS_FILE, named_area_geometries, points_to_areas
from interestgeo.cells import cells_to_str
from interestgeo.windows import weekday, window_starts

__all__ = [
    "FORECAST_WINDOWS",
    "METHODS",
    "FEATURES",
    "RegionSpec",
    "RegionForecast",
    "Skipped",
    "MethodScore",
    "Backtest",
    "Forecast",
    "region_specs",
    "forecast_regions",
    "forecast_all",
    "forecast_region",
    "forecast_cells",
    "user_forecast",
    "forecast_to_json",
]

FORECAST_WINDOWS = ("week", "day")
_STEP_DAYS = {"week": 7, "day": 1}
METHODS = ("model", "persistence", "moving_average", "seasonal_naive")
FEATURES = ("level", "trend", "people", "mean", "seasonal")
MAX_HORIZON = 52


@dataclass(frozen=True, eq=False)
class RegionSpec:
    """A region to forecast: a label, its kind and the positions of its events in ScoredEvents."""

    label: str
    kind: str  # everywhere | area | cell | selection | user
    positions: np.ndarray


@dataclass
class RegionForecast:
    """One region's forecast: the next windows' shares with an interval, and what rises or falls."""

    label: str
    kind: str
    windows: int  # windows with at least k people (the series' observations)
    hidden: int  # windows with 1..k-1 people, hidden
    last_window: pd.Timestamp  # start of the last observed window (the shares the forecast starts from)
    forecast: pd.DataFrame  # window_start, horizon, topic, share, low, high
    changes: pd.DataFrame  # topic, last, next, change: next window vs the last observed, largest first
    backtest_mae: dict[str, float]  # method -> MAE of this region's backtest forecasts (NaN: none scored)
    rise_threshold: float
    history: pd.DataFrame  # window_start, topic, share: the observed windows (>= k people) the forecast follows

    @property
    def rising(self) -> pd.DataFrame:
        return self.changes[self.changes["change"] >= self.rise_threshold].reset_index(drop=True)

    @property
    def falling(self) -> pd.DataFrame:
        falling = self.changes[self.changes["change"] <= -self.rise_threshold]
        return falling.sort_values("change", kind="stable").reset_index(drop=True)

    @property
    def leading_next(self) -> str:
        """The topic expected to lead the next window."""
        first = self.forecast[self.forecast["horizon"] == 1]
        return str(first["topic"].iloc[int(np.argmax(first["share"].to_numpy()))])


@dataclass
class Skipped:
    """A region that was not forecast, and why (too few windows or people)."""

    label: str
    kind: str
    reason: str


@dataclass
class MethodScore:
    """Backtest scores of one forecaster over every scored (region, origin, horizon, topic)."""

    mae: float
    precision_rising: float
    recall_rising: float
    f1_rising: float
    auc_rising: float | None  # None when the backtest saw only rises or only non-rises
    forecasts: int  # share forecasts scored
    coverage: float | None = None  # share of actuals inside the interval (the model only)


@dataclass
class Backtest:
    scores: dict[str, MethodScore]  # method -> scores; "model" first
    origins: list[pd.Timestamp]  # window starts the forecasts were made at
    rise_threshold: float
    regions: int  # regions with at least one scored forecast
    # one row per scored forecast: origin, horizon, region, topic, actual, last (the share at the
    # origin), then each method's forecast, and the model's interval (low, high)
    forecasts: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def beats_baselines(self) -> bool:
        """The model's MAE is below every baseline's."""
        model = self.scores["model"].mae
        return all(model < s.mae for m, s in self.scores.items() if m != "model")


@dataclass
class Forecast:
    window: str
    horizon: int
    origin: pd.Timestamp | None  # start of the last window of the data: forecasts are for the windows after it
    regions: list[RegionForecast]
    skipped: list[Skipped]
    hidden_regions: int  # cells never reaching k people in any window (not named, for privacy)
    backtest: Backtest | None  # None when no region had enough history
    weights: pd.DataFrame  # horizon, then one column per feature: the weights at the last origin
    k: int
    rise_threshold: float

    def region(self, label: str) -> RegionForecast | None:
        return next((r for r in self.regions if r.label == label), None)


# --------------------------------------------------------------------------------------------
# Regions


def region_specs(
    scored: ScoredEvents,
    filters: Filters | None = None,
    cell_resolution: int | None = None,
    areas_path: Path | str | None = AREAS_FILE,
) -> list[RegionSpec]:
    """Everywhere, each named area (when `areas_path` exists) and each H3 cell at `cell_resolution`
    (default `forecast.cell_resolution`), over the events passing `filters`."""
    idx = np.flatnonzero(filter_mask(scored, filters))
    specs = [RegionSpec("everywhere", "everywhere", idx)]
    if areas_path is not None and len(idx):
        areas = named_area_geometries(areas_path)
        lat = scored.events["lat"].to_numpy(np.float64)[idx]
        lon = scored.events["lon"].to_numpy(np.float64)[idx]
        for label, inside in zip(areas, points_to_areas(lat, lon, areas), strict=True):
            specs.append(RegionSpec(label, "area", idx[inside]))
    resolution = scored.config.forecast.cell_resolution if cell_resolution is None else cell_resolution
    cells = scored.parents(resolution)[idx]
    order = np.argsort(cells, kind="stable")
    values, starts = np.unique(cells[order], return_index=True)
    for label, part in zip(cells_to_str(values), np.split(order, starts[1:]), strict=True):
        specs.append(RegionSpec(label, "cell", idx[np.sort(part)]))
    return specs


# --------------------------------------------------------------------------------------------
# Series: shares per region x window on one grid of consecutive windows


@dataclass
class _Series:
    shares: np.ndarray  # (R, W, T) NaN where the window has fewer than k people
    people: np.ndarray  # (R, W, T) shares of each person's latest interest vector in the window; NaN likewise
    users: np.ndarray  # (R, W) distinct people (0: none)
    starts: np.ndarray  # (W,) datetime64[ns] window starts
    dow: np.ndarray  # (W,) weekday of each window start (0 = Monday)
    k: int

    @property
    def observed(self) -> np.ndarray:
        """(R, W) bool: the windows with at least k people."""
        return ~np.isnan(self.shares[:, :, 0])


def _grid(scored: ScoredEvents, idx: np.ndarray, window: str) -> tuple[int, int]:
    """(first window key, number of windows) spanning the events at `idx`."""
    keys = scored.window_keys(window)[idx]
    first, last = int(keys.min()), int(keys.max())
    return first, (last - first) // _STEP_DAYS[window] + 1


def _series(
    scored: ScoredEvents, specs: list[RegionSpec], window: str, grid: tuple[int, int], k: int, min_windows: int
) -> tuple[_Series, np.ndarray, np.ndarray]:
    """(the series of the candidate regions, people per region x window for every region (R, W),
    the candidates' positions in `specs`). Candidates have at least `min_windows` windows of k
    people: no other region can be forecast at any origin, so only theirs are kept (the Map's
    finest cells by day would otherwise hold a share array per cell x day x topic)."""
    first, n_windows = grid
    n_regions, n_topics = len(specs), len(scored.topics)
    positions = np.concatenate([s.positions for s in specs]).astype(np.int64)
    region = np.repeat(np.arange(n_regions, dtype=np.int64), [len(s.positions) for s in specs])
    w = (scored.window_keys(window)[positions] - first) // _STEP_DAYS[window]
    inside = (w >= 0) & (w < n_windows)
    positions, region, w = positions[inside], region[inside], w[inside]
    users_all = np.zeros((n_regions, n_windows), dtype=np.int64)
    candidates = np.zeros(0, dtype=np.int64)
    shares = np.full((0, n_windows, n_topics), np.nan)
    people = shares.copy()
    if len(positions):
        groups = _group(scored, positions, region * n_windows + w)
        probs = scored.topic_probs[positions]
        group_shares = groups.mean(probs)  # (G, T)
        # each person's latest event in the group: its interest vector is the model's view of what they do next
        order = np.lexsort((scored.local_ns[positions].astype(np.int64), groups.pair))
        pair_sorted = groups.pair[order]
        last = order[np.r_[pair_sorted[1:] != pair_sorted[:-1], True]]  # (P,) in pair order
        pair_of_last = groups.pair[last]
        group_people = np.stack(
            [np.bincount(groups.pair_group[pair_of_last], weights=probs[last, t], minlength=groups.size)
             for t in range(n_topics)], axis=1,
        ) / groups.users[:, None]
        g_region, g_window = groups.keys // n_windows, groups.keys % n_windows
        users_all[g_region, g_window] = groups.users
        visible = groups.users >= k
        candidates = np.flatnonzero(np.bincount(g_region[visible], minlength=n_regions) >= min_windows)
        slot = np.full(n_regions, -1)
        slot[candidates] = np.arange(len(candidates))
        keep = visible & (slot[g_region] >= 0)
        shares = np.full((len(candidates), n_windows, n_topics), np.nan)
        people = shares.copy()
        shares[slot[g_region[keep]], g_window[keep]] = group_shares[keep]
        people[slot[g_region[keep]], g_window[keep]] = group_people[keep]
    keys = first + _STEP_DAYS[window] * np.arange(n_windows, dtype=np.int64)
    series = _Series(shares, people, users_all[candidates], window_starts(keys, window), weekday(keys), k)
    return series, users_all, candidates


# --------------------------------------------------------------------------------------------
# Features (all causal: the value at window s uses windows <= s only)


def _frame(x: np.ndarray) -> pd.DataFrame:
    """(R, W, T) -> a (W, R*T) frame: pandas smooths each column (one region-topic series) along W."""
    r, w, t = x.shape
    return pd.DataFrame(x.transpose(1, 0, 2).reshape(w, r * t))


def _unframe(frame: pd.DataFrame, shape: tuple[int, int, int]) -> np.ndarray:
    r, w, t = shape
    return frame.to_numpy(np.float64).reshape(w, r, t).transpose(1, 0, 2)


@dataclass
class _Features:
    anchor: np.ndarray  # (R, W, T) last observed share at or before each window (persistence)
    level: np.ndarray
    intercept: np.ndarray  # (R, W, T) the local line's value at window s ...
    slope: np.ndarray  # ... and its slope per window (0 where fewer than 3 points)
    people: np.ndarray
    mean: np.ndarray
    noise: np.ndarray  # (R, W, T) window-to-window noise scale so far
    moving_average: np.ndarray
    seasonal: np.ndarray | None  # (7, R, W, T) weekday d's smoothed share as of each window (day windows)
    seasonal_naive: np.ndarray | None  # (7, R, W, T) weekday d's last observed share as of each window


def _local_line(y: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Least-squares line through each column's observed values among the last n windows:
    (its value at the current window, its slope per window); slope 0 with fewer than 3 points."""
    t = pd.Series(np.arange(len(y), dtype=np.float64), index=y.index)
    seen = y.notna().astype(np.float64)
    tt = seen.mul(t, axis=0)
    sums = {name: frame.rolling(n, min_periods=1).sum() for name, frame in
            {"n": seen, "t": tt, "y": y.fillna(0.0), "ty": y.fillna(0.0).mul(t, axis=0), "tt": tt.mul(t, axis=0)}.items()}
    count = sums["n"]
    denominator = count * sums["tt"] - sums["t"] ** 2
    slope = (count * sums["ty"] - sums["t"] * sums["y"]) / denominator.where(denominator > 1e-9)
    slope = slope.where(count >= 3, 0.0).fillna(0.0)
    mean_t, mean_y = sums["t"] / count, sums["y"] / count
    value = mean_y + slope * (-mean_t).add(t, axis=0)
    return value, slope


def _features(series: _Series, window: str, halflife: float, ma_windows: int, trend_windows: int) -> _Features:
    shape = series.shares.shape
    y = _frame(series.shares)
    anchor = y.ffill()
    level = y.ewm(halflife=halflife, ignore_na=True).mean()
    intercept, slope = _local_line(y, trend_windows)
    # noise: the robust spread of observed-minus-previous-observation so far (a thin week's jump
    # would dominate a root mean square); the step of two noisy values is sqrt(2) times one's noise
    step = (y - anchor.shift(1)).abs()
    noise = step.expanding().median() * (1.4826 / np.sqrt(2.0))
    seasonal = seasonal_naive = None
    if window == "day":
        seasonal = np.full((7, *shape), np.nan)
        seasonal_naive = np.full((7, *shape), np.nan)
        for d in range(7):
            on_day = series.dow == d
            smooth = pd.DataFrame(np.nan, index=y.index, columns=y.columns)
            smooth.loc[on_day] = y.loc[on_day].ewm(halflife=halflife, ignore_na=True).mean().to_numpy()
            seasonal[d] = _unframe(smooth.ffill(), shape)
            raw = pd.DataFrame(np.nan, index=y.index, columns=y.columns)
            raw.loc[on_day] = y.loc[on_day].to_numpy()
            seasonal_naive[d] = _unframe(raw.ffill(), shape)
    return _Features(
        anchor=_unframe(anchor, shape),
        level=_unframe(level, shape),
        intercept=_unframe(intercept, shape),
        slope=_unframe(slope, shape),
        people=_unframe(_frame(series.people).ffill(), shape),
        mean=_unframe(y.expanding().mean(), shape),
        noise=_unframe(noise, shape),
        moving_average=_unframe(y.rolling(ma_windows, min_periods=1).mean().ffill(), shape),
        seasonal=seasonal,
        seasonal_naive=seasonal_naive,
    )


def _feature_stack(f: _Features, h: int, dow: np.ndarray) -> np.ndarray:
    """(K, R, W, T): each feature's forecast of window s+h made at s, minus the anchor (0 where undefined)."""
    target_dow = (dow + h) % 7
    columns = [f.level, f.intercept + h * f.slope, f.people, f.mean]
    if f.seasonal is not None:
        # weekday of each target window's smoothed share as of s: (W, R, T) -> (R, W, T)
        columns.append(f.seasonal[target_dow, :, np.arange(len(dow)), :].transpose(1, 0, 2))
    else:
        columns.append(f.anchor)
    stack = np.stack(columns) - f.anchor[None]
    return np.nan_to_num(stack, nan=0.0)


def _baselines(f: _Features, h: int, dow: np.ndarray) -> dict[str, np.ndarray]:
    """(R, W, T) forecasts of s+h made at s by each baseline."""
    out = {"persistence": f.anchor, "moving_average": np.where(np.isnan(f.moving_average), f.anchor, f.moving_average)}
    if f.seasonal_naive is not None:
        target_dow = (dow + h) % 7
        naive = f.seasonal_naive[target_dow, :, np.arange(len(dow)), :].transpose(1, 0, 2)
        out["seasonal_naive"] = np.where(np.isnan(naive), f.anchor, naive)
    return out


# --------------------------------------------------------------------------------------------
# Fit and predict


def _fit(stack: np.ndarray, target: np.ndarray, anchor: np.ndarray, noise: np.ndarray, h: int, upto: int,
         coverage: float, regions: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights (K,) of the features for horizon h, fitted on the `regions` (R,) bool
    (those forecast at this origin) over windows s with s+h <= upto, and the scaled-residual
    quantile for the interval. Weights of zero (persistence) when there are too few rows."""
    from scipy.optimize import nnls

    n_windows = target.shape[1]
    s_max = min(upto - h, n_windows - 1 - h)
    k = stack.shape[0]
    if s_max < 0:
        return np.zeros(k), 1.0
    y = target[:, h:s_max + h + 1] - anchor[:, :s_max + 1]  # (R, S, T)
    ok = ~np.isnan(y) & regions[:, None, None]
    if ok.sum() < 5 * k:
        return np.zeros(k), 1.0
    x = stack[:, :, :s_max + 1][:, ok]  # (K, n)
    yv = y[ok]
    gram = x @ x.T + 1e-9 * np.eye(k)
    upper = np.linalg.cholesky(gram).T  # min |Xw - y|^2 = |Uw - U^-T X y|^2 + const
    weights, _ = nnls(upper, np.linalg.solve(upper.T, x @ yv))
    scale = noise[:, :s_max + 1][ok]
    resid = np.abs(yv - weights @ x) / np.fmax(scale, 1e-4)
    return weights, float(np.quantile(resid, coverage))


def _predict(stack: np.ndarray, anchor: np.ndarray, weights: np.ndarray, s: int) -> np.ndarray:
    """(R, T) shares forecast at window s: anchor + weighted features, clipped at 0, rows summing to one."""
    raw = anchor[:, s] + np.tensordot(weights, stack[:, :, s], axes=1)
    raw = np.clip(raw, 0.0, None)
    total = raw.sum(axis=1, keepdims=True)
    return np.where(total > 0, raw / np.where(total > 0, total, 1.0), anchor[:, s])


def _eligible(
    observed: np.ndarray, starts: np.ndarray, k: int, upto: int, min_windows: int, max_stale: int
) -> tuple[np.ndarray, list[str | None]]:
    """(R,) bool: regions (observed: (R, W) windows with k people) with enough observed windows up
    to `upto`, recent enough; and each one's reason if not."""
    observed = observed[:, :upto + 1]
    counts = observed.sum(axis=1)
    last = np.where(observed.any(axis=1), upto - np.argmax(observed[:, ::-1], axis=1), -1)
    reasons: list[str | None] = []
    for n, at in zip(counts, last, strict=True):
        if n == 0:
            reasons.append(f"no window has at least {k} people")
        elif n < min_windows:
            reasons.append(f"only {n} window(s) with at least {k} people; a forecast needs {min_windows}")
        elif at < upto - max_stale + 1:
            reasons.append(f"no window with at least {k} people in the last {max_stale}; "
                           f"the last was {pd.Timestamp(starts[at]).date()}")
        else:
            reasons.append(None)
    return np.array([r is None for r in reasons], dtype=bool), reasons


# --------------------------------------------------------------------------------------------
# Backtest


def _scores(pred: np.ndarray, actual: np.ndarray, anchor: np.ndarray, threshold: float,
            low: np.ndarray | None = None, high: np.ndarray | None = None) -> MethodScore:
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    rises = actual - anchor >= threshold - 1e-12
    change = pred - anchor
    predicted = change >= threshold - 1e-12
    precision, recall, f1, _ = precision_recall_fscore_support(
        rises, predicted, average="binary", zero_division=0.0
    )
    auc = float(roc_auc_score(rises, change)) if 0 < rises.sum() < len(rises) else None
    coverage = float(np.mean((actual >= low) & (actual <= high))) if low is not None and high is not None else None
    return MethodScore(float(np.mean(np.abs(pred - actual))), float(precision), float(recall), float(f1), auc,
                       int(len(actual)), coverage)


def _backtest(
    series: _Series,
    feats: _Features,
    stacks: dict[int, np.ndarray],
    baselines: dict[int, dict[str, np.ndarray]],
    origins: list[int],
    horizon: int,
    specs: list[RegionSpec],
    labels: list[str],
    cfg: Any,
) -> tuple[Backtest | None, dict[str, np.ndarray]]:
    """Rolling origin: at each origin t, refit on windows <= t and forecast t+1..t+horizon for the
    regions eligible at t; score against the observed shares. Returns the backtest (None when
    nothing could be scored) and each method's MAE per region (NaN where none was scored)."""
    last = series.shares.shape[1] - 1
    n_regions = len(specs)
    parts: list[dict[str, np.ndarray]] = []
    for t in origins:
        ok_regions, _ = _eligible(series.observed, series.starts, series.k, t, cfg.min_windows,
                                  cfg.max_stale_windows)
        for h in range(1, min(horizon, last - t) + 1):
            weights, q = _fit(stacks[h], series.shares, feats.anchor, feats.noise, h, t, cfg.interval, ok_regions)
            pred = _predict(stacks[h], feats.anchor, weights, t)  # (R, T)
            actual = series.shares[:, t + h]
            mask = ok_regions[:, None] & ~np.isnan(actual) & ~np.isnan(feats.anchor[:, t])
            if not mask.any():
                continue
            spread = q * np.fmax(feats.noise[:, t], 1e-4)
            region, topic = np.nonzero(mask)
            part = {"origin": np.full(len(region), t), "horizon": np.full(len(region), h), "region": region,
                    "topic": topic, "actual": actual[mask], "last": feats.anchor[:, t][mask], "model": pred[mask],
                    "low": (pred - spread)[mask], "high": (pred + spread)[mask]}
            part.update({name: values[:, t][mask] for name, values in baselines[h].items()})
            parts.append(part)
    if not parts:
        return None, {}
    rows = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    methods = [m for m in METHODS if m in rows]
    scores = {
        m: _scores(rows[m], rows["actual"], rows["last"], cfg.rise_threshold,
                   *((rows["low"], rows["high"]) if m == "model" else (None, None)))
        for m in methods
    }
    counts = np.bincount(rows["region"], minlength=n_regions)
    region_mae = {
        m: np.bincount(rows["region"], weights=np.abs(rows[m] - rows["actual"]), minlength=n_regions)
        / np.where(counts > 0, counts, np.nan)
        for m in methods
    }
    frame = pd.DataFrame({
        "origin": series.starts[rows["origin"]],
        "horizon": rows["horizon"],
        "region": np.asarray([s.label for s in specs], dtype=object)[rows["region"]],
        "topic": np.asarray(labels, dtype=object)[rows["topic"]],
        **{name: rows[name] for name in ("actual", "last", *methods, "low", "high")},
    })
    backtest = Backtest(scores, [pd.Timestamp(series.starts[t]) for t in origins], cfg.rise_threshold,
                        int((counts > 0).sum()), frame)
    return backtest, region_mae


# --------------------------------------------------------------------------------------------
# The engine


def forecast_regions(
    scored: ScoredEvents,
    specs: list[RegionSpec],
    scope: np.ndarray,
    window: str = "week",
    horizon: int | None = None,
    k: int | None = None,
    backtest: bool = True,
    features: tuple[str, ...] = FEATURES,
) -> Forecast:
    """Forecast every region in `specs` for the `horizon` windows after the last window of the
    events at positions `scope` (which sets the window grid), with the rolling-origin backtest.

    k: the privacy threshold (default `privacy.k_min_users`; 1 for one person's own series).
    features: the forecasters the model may weigh (fewer: an ablation, e.g. without "people").
    """
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown forecast features: {', '.join(sorted(unknown))}")
    cfg = scored.config.forecast
    if window not in FORECAST_WINDOWS:
        raise ValueError(f"forecasts are per {' or '.join(FORECAST_WINDOWS)}, not {window!r}")
    horizon = cfg.horizon if horizon is None else int(horizon)
    if not 1 <= horizon <= MAX_HORIZON:
        raise ValueError(f"the horizon must be 1..{MAX_HORIZON} windows, not {horizon}")
    k = scored.k if k is None else k
    labels = list(scored.topics.labels)
    if len(scope) == 0:
        return Forecast(window, horizon, None, [], [Skipped(s.label, s.kind, "no events") for s in specs
                                                    if s.kind != "cell"],
                        sum(s.kind == "cell" for s in specs), None, pd.DataFrame(), k, cfg.rise_threshold)
    grid = _grid(scored, scope, window)
    series, users, candidates = _series(scored, specs, window, grid, k, cfg.min_windows)
    last = grid[1] - 1
    origin = pd.Timestamp(series.starts[last])
    observed = users >= k  # (R, W) for every region
    eligible, reasons = _eligible(observed, series.starts, k, last, cfg.min_windows, cfg.max_stale_windows)
    skipped = [Skipped(spec.label, spec.kind, str(reasons[r])) for r, spec in enumerate(specs)
               if not eligible[r] and (spec.kind != "cell" or observed[r].any())]
    hidden_regions = sum(1 for r, spec in enumerate(specs) if spec.kind == "cell" and not observed[r].any())
    if len(candidates) == 0:
        return Forecast(window, horizon, origin, [], skipped, hidden_regions, None, pd.DataFrame(), k,
                        cfg.rise_threshold)
    specs = [specs[r] for r in candidates]  # from here on, the candidates only
    ma = cfg.moving_average_weeks if window == "week" else cfg.moving_average_days
    feats = _features(series, window, cfg.halflife_windows, ma, cfg.trend_windows)
    stacks = {h: _feature_stack(feats, h, series.dow) for h in range(1, horizon + 1)}
    for h, stack in stacks.items():  # a left-out feature forecasts the anchor: it cannot move the forecast
        stack[[i for i, name in enumerate(FEATURES) if name not in features]] = 0.0
    baselines = {h: _baselines(feats, h, series.dow) for h in range(1, horizon + 1)}

    # --- backtest: forecasts made at each origin t of the windows t+h, scored where t+h is observed
    bt: Backtest | None = None
    region_mae: dict[str, np.ndarray] = {}
    if backtest:
        origins = list(range(max(0, last - cfg.backtest_origins), last))
        bt, region_mae = _backtest(series, feats, stacks, baselines, origins, horizon, specs, labels, cfg)

    # --- the forecast from the last window
    ok_regions = eligible[candidates]
    step = pd.Timedelta(days=_STEP_DAYS[window])
    per_h: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    weight_rows = []
    for h in range(1, horizon + 1):
        weights, q = _fit(stacks[h], series.shares, feats.anchor, feats.noise, h, last, cfg.interval, ok_regions)
        named = dict(zip(FEATURES, weights.tolist(), strict=True))
        if window != "day":
            del named["seasonal"]  # its column is the anchor itself: no information, weight 0
        weight_rows.append({"horizon": h, **named})
        per_h[h] = (_predict(stacks[h], feats.anchor, weights, last), q * np.fmax(feats.noise[:, last], 1e-4))
    regions: list[RegionForecast] = []
    observed = observed[candidates]
    for r, spec in enumerate(specs):
        if not ok_regions[r]:
            continue  # listed in `skipped` with its reason
        rows = []
        for h, (pred, spread) in per_h.items():
            for j, topic in enumerate(labels):
                share = float(pred[r, j])
                rows.append((origin + h * step, h, topic, share, max(share - spread[r, j], 0.0),
                             min(share + spread[r, j], 1.0)))
        frame = pd.DataFrame(rows, columns=["window_start", "horizon", "topic", "share", "low", "high"])
        anchor_r = feats.anchor[r, last]
        changes = pd.DataFrame({"topic": labels, "last": anchor_r, "next": per_h[1][0][r]})
        changes["change"] = changes["next"] - changes["last"]
        changes = changes.sort_values("change", ascending=False, kind="stable").reset_index(drop=True)
        last_seen = int(np.flatnonzero(observed[r])[-1])
        mae = {name: float(values[r]) for name, values in region_mae.items()}
        hidden = int(((series.users[r] > 0) & (series.users[r] < k)).sum())
        seen = np.flatnonzero(observed[r])
        history = pd.DataFrame({
            "window_start": np.repeat(series.starts[seen], len(labels)),
            "topic": np.tile(np.asarray(labels, dtype=object), len(seen)),
            "share": series.shares[r, seen].reshape(-1),
        })
        regions.append(RegionForecast(spec.label, spec.kind, int(observed[r].sum()), hidden,
                                      pd.Timestamp(series.starts[last_seen]), frame, changes, mae,
                                      cfg.rise_threshold, history))
    return Forecast(window, horizon, origin, regions, skipped, hidden_regions, bt, pd.DataFrame(weight_rows), k,
                    cfg.rise_threshold)


# --------------------------------------------------------------------------------------------
# Entry points


def _scope(scored: ScoredEvents, filters: Filters | None) -> np.ndarray:
    """The events that set the window grid: the filters without their region (cells, polygons, topic)."""
    if filters is None:
        return np.arange(len(scored))
    return np.flatnonzero(filter_mask(scored, filters.replace(cells=None, geojson=None, topic=None)))


def forecast_all(
    scored: ScoredEvents,
    filters: Filters | None = None,
    window: str = "week",
    horizon: int | None = None,
    areas_path: Path | str | None = AREAS_FILE,
) -> Forecast:
    """Every region: everywhere, each named area and each coarse cell (see `region_specs`)."""
    specs = region_specs(scored, filters, areas_path=areas_path)
    return forecast_regions(scored, specs, _scope(scored, filters), window, horizon)


def forecast_region(
    scored: ScoredEvents,
    filters: Filters | None = None,
    window: str = "week",
    horizon: int | None = None,
    label: str = "the selected region",
) -> Forecast:
    """One region: the events passing `filters` (the Drift page's region), fitted on its own series."""
    spec = RegionSpec(label, "selection", np.flatnonzero(filter_mask(scored, filters)))
    return forecast_regions(scored, [spec], _scope(scored, filters), window, horizon)


def forecast_cells(
    scored: ScoredEvents,
    filters: Filters | None = None,
    resolution: int = 8,
    window: str = "week",
    horizon: int | None = None,
) -> Forecast:
    """Each H3 cell at `resolution` as a region (the Map's cells), fitted together; k applied."""
    specs = [s for s in region_specs(scored, filters, resolution, areas_path=None) if s.kind == "cell"]
    return forecast_regions(scored, specs, _scope(scored, filters), window, horizon)


@analyst_only
def user_forecast(
    scored: ScoredEvents, dataset_id: int, user_id: str, window: str = "week", horizon: int | None = None
) -> RegionForecast | Skipped:
    """One person's topic mix over the next windows (no k threshold: one identified person).

    Fitted on the person's own windows (their topics pooled): pooling every person of the data set
    took 4-5 s on the demo for one page view. The windows forecast are those after the person's
    own last active one (`last_window`): many people stop coming long before a data set ends,
    and their next weeks are the ones after they were last seen. `backtest_mae` is their own.
    """
    own = user_event_positions(scored, dataset_id, user_id)
    result = forecast_regions(scored, [RegionSpec(str(user_id), "user", own)], own, window, horizon, k=1)
    if result.regions:
        return result.regions[0]
    reason = result.skipped[0].reason.replace("at least 1 people", "events")
    return Skipped(str(user_id), "user", reason)


# --------------------------------------------------------------------------------------------
# JSON


def _number(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def forecast_to_json(fc: Forecast) -> dict[str, Any]:
    """{"forecast": {...}, "backtest": {method: {mae, precision_rising, recall_rising, f1_rising, auc_rising}}}."""
    regions = []
    for r in fc.regions:
        regions.append({
            "region": r.label,
            "kind": r.kind,
            "windows": r.windows,
            "hidden_windows": r.hidden,
            "last_window": r.last_window.date().isoformat(),
            "leading_next": r.leading_next,
            "shares": [
                {"window_start": row.window_start.date().isoformat(), "horizon": int(row.horizon), "topic": row.topic,
                 "share": _number(row.share), "low": _number(row.low), "high": _number(row.high)}
                for row in r.forecast.itertuples()
            ],
            "rising": [{"topic": t, "change": _number(c)} for t, c in zip(r.rising["topic"], r.rising["change"],
                                                                            strict=True)],
            "falling": [{"topic": t, "change": _number(c)} for t, c in zip(r.falling["topic"], r.falling["change"],
                                                                             strict=True)],
            "backtest_mae": {m: _number(v) for m, v in r.backtest_mae.items()},
        })
    backtest: dict[str, Any] = {}
    if fc.backtest is not None:
        for name, s in fc.backtest.scores.items():
            backtest[name] = {
                "mae": _number(s.mae), "precision_rising": _number(s.precision_rising),
                "recall_rising": _number(s.recall_rising), "f1_rising": _number(s.f1_rising),
                "auc_rising": _number(s.auc_rising), "forecasts": s.forecasts,
                **({"coverage": _number(s.coverage)} if s.coverage is not None else {}),
            }
    return {
        "forecast": {
            "window": fc.window,
            "horizon": fc.horizon,
            "origin": None if fc.origin is None else fc.origin.date().isoformat(),
            "k_min_users": fc.k,
            "regions": regions,
            "skipped": [{"region": s.label, "kind": s.kind, "reason": s.reason} for s in fc.skipped],
            "hidden_regions": fc.hidden_regions,
            "weights": [{k: (int(v) if k == "horizon" else _number(v)) for k, v in row.items()}
                        for row in fc.weights.to_dict("records")],
            "backtest_origins": [] if fc.backtest is None else [t.date().isoformat() for t in fc.backtest.origins],
            "rise_threshold": fc.rise_threshold,
        },
        "backtest": backtest,
    }
