"""Benchmark of the interest analytics on the NYC demo data (a benchmark, not a test).

Targets (issue 4): region map for a filter median < 100 ms; free-text query including its
embedding median < 300 ms; one user's explanation < 1 s; dynamic update < 1 s per 1,000 new
events; and the scoring throughput (events/s through the model, and the whole `score` run).

It works on a copy of the database (default data/interestgeo.duckdb, as `make run` leaves it), so
the dashboard's file is never changed. When that copy has no interest vectors yet it scores it
first with the trained model (the latest checkpoint), or with the recency baseline when no model
is trained, and says which.

    .venv/bin/python benchmarks/bench_analytics.py [--db PATH] [--repeats 15] [--skip-full-score]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interestgeo import analytics as an  # noqa: E402
from interestgeo.cli import load_demo  # noqa: E402
from interestgeo.config import load_config  # noqa: E402
from interestgeo.score import RecencySource, VectorSource, load_source, score_store  # noqa: E402
from interestgeo.store import Store  # noqa: E402
from interestgeo.text import TextEncoder, embed_texts  # noqa: E402


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (first call parses the GeoJSON, builds parents, ...)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def manhattan_geojson() -> str:
    """The Manhattan neighbourhoods of the shipped NTA file, as one GeoJSON FeatureCollection."""
    data = json.loads((ROOT / "data" / "nyc_neighborhoods.geojson").read_text(encoding="utf-8"))
    data["features"] = [f for f in data["features"] if f["properties"].get("borough") == "Manhattan"]
    return json.dumps(data)


def pick_source(store: Store, config: Any, encoder: TextEncoder) -> VectorSource:
    try:
        return load_source(store, config, encoder=encoder)
    except (LookupError, FileNotFoundError, ImportError, AttributeError) as exc:
        print(f"no trained model ({exc}); using the recency baseline as the vector source")
        return RecencySource(lambda texts: embed_texts(store, encoder, texts, warn=None))


def new_events_csv(events: pd.DataFrame, path: Path, n: int, seed: int = 0) -> None:
    """n events of the demo's last weeks replayed by new users (a new ingest of n events)."""
    rng = np.random.default_rng(seed)
    tail = events.sort_values("ts").tail(20 * n)
    sample = tail.iloc[np.sort(rng.choice(len(tail), size=n, replace=False))]
    name, _, category = sample["text"].str.rpartition(", ").T.values
    pd.DataFrame(
        {
            "user_id": "new-" + sample["user_id"].astype(str),
            "venue_id": sample["item_id"],
            "venue_name": name,
            "venue_category": category,
            "category_path": sample["category_path"],
            "latitude": sample["lat"],
            "longitude": sample["lon"],
            "utc_time": sample["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tz_offset_min": sample["tz_offset_min"].astype("Int64"),
        }
    ).to_csv(path, index=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip-full-score", action="store_true", help="do not time a full re-score")
    args = parser.parse_args()
    config = load_config()
    source_db = args.db or config.store.path
    work = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
    db = work / "bench.duckdb"
    if Path(source_db).exists():
        shutil.copy(source_db, db)
    config = config.with_db(db)
    results: dict[str, Any] = {}
    try:
        with Store.open(db, config=config) as store:
            if load_demo(store, config) is not None:
                print("loaded the demo data into the benchmark copy")
            encoder = TextEncoder(config.text)
            source = pick_source(store, config, encoder)
            results["source"] = source.name
            if store.score_runs().empty or not args.skip_full_score:
                report = score_store(store, config, source=source, encoder=encoder)
                results["full_score_s"] = report.elapsed_s
                results["full_score_events_per_s"] = report.events / report.elapsed_s
                print(f"full score: {report.events:,} events in {report.elapsed_s:.1f} s "
                      f"({report.events / report.elapsed_s:,.0f} events/s for the whole run), vectors {report.source}")
                if report.history_calibration:
                    results["history_weight_mrr"] = report.history_calibration
                    print("next-event MRR by history weight:", report.history_calibration)
            events = store.events()
            sample = events.iloc[: min(len(events), 20_000)]
            sample = sample[sample["user_id"].isin(sample["user_id"].unique()[:-1])]  # whole users only
            start = time.perf_counter()
            source.interest_vectors(sample)
            results["model_events_per_s"] = len(sample) / (time.perf_counter() - start)
            print(f"vector source alone: {results['model_events_per_s']:,.0f} events/s")

            start = time.perf_counter()
            scored = an.load_scored(store, config, encoder=encoder)
            results["load_scored_s"] = time.perf_counter() - start
            print(f"load_scored (once per dashboard session): {results['load_scored_s']:.2f} s, {len(scored):,} events")

            evening = an.Filters(hours=tuple(range(18, 24)), days_of_week=(4, 5))
            manhattan = an.Filters(geojson=manhattan_geojson())
            spring = an.Filters(date_from="2012-05-01", date_to="2012-05-31")
            for name, flt, res in [
                ("region_map_all_res8", an.Filters(), 8),
                ("region_map_evenings_res8", evening, 8),
                ("region_map_may_res9", spring, 9),
                ("region_map_manhattan_res9", manhattan, 9),
            ]:
                results[name + "_ms"] = median_ms(lambda: an.region_map(scored, flt, res), args.repeats)
            phrases = ["late-night food", "jazz", "kids' activities", "coffee", "airport"]
            counter = iter(range(10**9))
            results["query_with_embedding_ms"] = median_ms(
                lambda: an.query_interest(
                    scored, "q", an.embed_phrase(encoder, phrases[next(counter) % len(phrases)]), an.Filters(), 8
                ),
                args.repeats,
            )
            results["region_drift_week_ms"] = median_ms(lambda: an.region_drift(scored, an.Filters(), "week"), 5)
            results["interest_profile_ms"] = median_ms(lambda: an.interest_profile(scored, evening), args.repeats)

            top_user = an.list_users(scored).iloc[0]
            if hasattr(source, "attention_rollup"):
                from interestgeo.explain import explain_scored_user

                results["explain_user_ms"] = median_ms(
                    lambda: explain_scored_user(source, scored, int(top_user.dataset_id), str(top_user.user_id)), 3  # type: ignore[arg-type]
                )
            else:
                print("explanations need the trained model: skipped")

            csv = work / "new_events.csv"
            new_events_csv(events, csv, 1000)
            from interestgeo.ingest import ingest_file

            ingest_file(store, csv, config=config, dataset="bench-new-1000")
            update = score_store(store, config, source=source, encoder=encoder, update=True)
            results["update_new_users_s_per_1000"] = update.seconds_per_1000
            since = events["ts"].sort_values().iloc[-1000]
            update = score_store(store, config, source=source, encoder=encoder, since=since)
            results["update_since_events"] = update.events
            results["update_since_history_events"] = update.history_events
            results["update_since_s_per_1000"] = update.seconds_per_1000
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    targets = {
        "region_map_evenings_res8_ms": 100, "query_with_embedding_ms": 300, "explain_user_ms": 1000,
    }
    for key, limit in targets.items():
        if key in results:
            print(f"{key}: {results[key]:.0f} (target < {limit}) {'ok' if results[key] < limit else 'MISSED'}")
    per_1000 = results["update_new_users_s_per_1000"]
    print(f"dynamic update: {per_1000:.2f} s per 1,000 new events (target < 1 s) {'ok' if per_1000 < 1 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
