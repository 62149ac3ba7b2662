"""Benchmark of the topic-share forecasts (a benchmark, not a test).

Targets (issue 15): on the NYC demo, the forecast's backtest MAE below every baseline's and its
F1 for rising topics above persistence's; the forecast for all regions of the demo <= 2 s. Every
figure is printed beside the baselines measured in the same run, with the machine's load
(`uptime`) before and after, and an ablation: the same forecast without the people's interest
vectors (what the interest model adds to the shares' own history).

It only reads the database (default data/interestgeo.duckdb, as `make run` leaves it; it must be
scored). Several databases can be given (e.g. a scored copy of a stranger dataset such as Gowalla NYC).

    .venv/bin/python benchmarks/bench_forecast.py [--db PATH ...] [--repeats 5] [--windows week day] [--ets]

`--ets` also fits statsmodels' damped-trend ETS per region, topic and origin (when statsmodels is
installed; the product does not need it) and scores it on the same backtest rows.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interestgeo import forecast as fc  # noqa: E402
from interestgeo.analytics import load_scored  # noqa: E402
from interestgeo.config import load_config  # noqa: E402
from interestgeo.store import Store  # noqa: E402


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def seconds(fn, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(first call, median of the next `repeats`) in seconds: the first pays the lazy imports."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def ets_mae(result: fc.Forecast) -> tuple[float, float, int] | None:
    """statsmodels' damped-trend Holt-Winters ETS, one maximum-likelihood fit per region, topic and
    origin on the region's observed shares up to the origin, scored on the backtest's own rows:
    (its MAE, the forecast's MAE on the same rows, rows). None without statsmodels (not a dependency:
    the product does not use it, see forecast.py's docstring)."""
    try:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing
    except ImportError:
        return None
    import warnings

    histories = {r.label: r.history for r in result.regions}
    rows = result.backtest.forecasts
    rows = rows[rows["region"].isin(histories)]
    predictions = np.full(len(rows), np.nan)
    position = {key: i for i, key in enumerate(zip(rows["region"], rows["topic"], rows["origin"], rows["horizon"]))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for (region, topic, origin), _ in rows.groupby(["region", "topic", "origin"], sort=False):
            history = histories[region]
            y = history[(history["topic"] == topic) & (history["window_start"] <= origin)]["share"].to_numpy()
            model = ExponentialSmoothing(y, trend="add", damped_trend=True).fit()
            # gaps are left out of the fitted series, so h steps ahead is h observed windows ahead
            for h, value in enumerate(model.forecast(result.horizon), start=1):
                i = position.get((region, topic, origin, h))
                if i is not None:
                    predictions[i] = value
    ok = ~np.isnan(predictions)
    actual = rows["actual"].to_numpy()[ok]
    return (float(np.mean(np.abs(predictions[ok] - actual))), float(np.mean(np.abs(rows["model"].to_numpy()[ok] - actual))),
            int(ok.sum()))


def table(result: fc.Forecast, ablation: fc.Forecast | None) -> list[str]:
    rows = [f"  {'method':<22}{'MAE (pts)':>10}{'precision':>11}{'recall':>8}{'F1':>7}{'AUC':>7}{'coverage':>10}"]
    scores = dict(result.backtest.scores)
    if ablation is not None and ablation.backtest is not None:
        scores["model without people"] = ablation.backtest.scores["model"]
    for name, s in scores.items():
        auc = "-" if s.auc_rising is None else f"{s.auc_rising:.3f}"
        coverage = "" if s.coverage is None else f"{s.coverage:.2f}"
        rows.append(f"  {name:<22}{100 * s.mae:>10.2f}{s.precision_rising:>11.3f}{s.recall_rising:>8.3f}"
                    f"{s.f1_rising:>7.3f}{auc:>7}{coverage:>10}")
    return rows


def bench(db: Path, windows: list[str], repeats: int, ets: bool) -> bool:
    config = load_config().with_db(db)
    with Store.open(db, config=config, read_only=True) as store:
        start = time.perf_counter()
        scored = load_scored(store, config, vector_loader=store.event_vectors)
        load_s = time.perf_counter() - start
        runs = store.score_runs()
        source = str(runs["source"].iloc[0]) if len(runs) else "?"
    print(f"\n{db}: {len(scored):,} scored events, {len(scored.user_keys):,} people, vectors from {source!r}, "
          f"{len(scored.topics)} topics, k = {scored.k}; loading the shares took {load_s:.2f} s")
    ok = True
    specs_first, specs_s = seconds(lambda: fc.region_specs(scored), repeats)
    specs = fc.region_specs(scored)
    scope = np.arange(len(scored))
    print(f"regions: {len(specs)} candidates (everywhere, {sum(s.kind == 'area' for s in specs)} named areas, "
          f"{sum(s.kind == 'cell' for s in specs)} cells at res {config.forecast.cell_resolution}); "
          f"assigning events to them: first {specs_first:.2f} s, then median {specs_s:.2f} s")
    for window in windows:
        first, median = seconds(lambda w=window: fc.forecast_all(scored, window=w, horizon=None), repeats)
        only_first, only = seconds(
            lambda w=window: fc.forecast_regions(scored, specs, scope, w, backtest=False), repeats)
        result = fc.forecast_all(scored, window=window)
        ablation = fc.forecast_regions(scored, specs, scope, window,
                                       features=tuple(f for f in fc.FEATURES if f != "people"))
        print(f"\n[{window}] {len(result.regions)} regions forecast, {len(result.skipped)} skipped (too few windows "
              f"or people), {result.hidden_regions} cells hidden (< k people in every window); horizon "
              f"{result.horizon}, after the {window} of {result.origin.date()}")
        print(f"  time, all regions: forecast alone {only:.2f} s (first call {only_first:.2f} s); with the "
              f"backtest and region assignment {median:.2f} s (first call {first:.2f} s); median of {repeats}")
        if result.backtest is None:
            print("  no backtest: no region has enough history")
            ok = False
            continue
        bt = result.backtest
        print(f"  backtest: {len(bt.origins)} rolling origins from {bt.origins[0].date()}, {bt.regions} regions, "
              f"{bt.scores['model'].forecasts:,} share forecasts; a rise is +{100 * bt.rise_threshold:.0f} pts or more")
        print("\n".join(table(result, ablation)))
        print("  weights at the last origin:\n" + result.weights.round(3).to_string(index=False))
        if ets and window == "week":
            start = time.perf_counter()
            ets = ets_mae(result)
            if ets is None:
                print("  statsmodels ETS: not installed, skipped")
            else:
                print(f"  statsmodels ETS (damped Holt, one fit per region x topic x origin, "
                      f"{time.perf_counter() - start:.1f} s): MAE {100 * ets[0]:.2f} pts vs the forecast's "
                      f"{100 * ets[1]:.2f} on the same {ets[2]:,} rows")
        model = bt.scores["model"]
        beats = bt.beats_baselines
        f1_ok = model.f1_rising > bt.scores["persistence"].f1_rising
        fast = only <= 2.0
        print(f"  targets: MAE below every baseline {'yes' if beats else 'NO'}; F1 above persistence "
              f"{'yes' if f1_ok else 'NO'}; all regions <= 2 s {'yes' if fast else 'NO'} ({only:.2f} s)")
        ok = ok and beats and f1_ok and fast
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, action="append", default=None, help="scored database (repeatable)")
    parser.add_argument("--windows", nargs="+", default=["week", "day"], choices=list(fc.FORECAST_WINDOWS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ets", action="store_true",
                        help="also score statsmodels' ETS per series on the weekly backtest (minutes: thousands of fits)")
    args = parser.parse_args()
    databases = args.db or [ROOT / "data" / "interestgeo.duckdb"]
    missing = [str(db) for db in databases if not db.exists()]
    if missing:
        print(f"no database at {', '.join(missing)}: run `make run` (or `interestgeo demo`) first, or pass --db",
              file=sys.stderr)
        return 2
    print(f"load before: {uptime()}")
    ok = all([bench(db, args.windows, args.repeats, args.ets) for db in databases])
    print(f"\nload after: {uptime()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
