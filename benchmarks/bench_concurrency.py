"""What short-lived read connections cost the dashboard, and how long a load waits for it.

Since the dashboard stopped holding a connection (store/file_access.py), each uncached query opens a
read-only store and closes it. In one run, on the demo store (the shipped NYC file, 113k events):

    1. reference: `Store.datasets()` on a connection held open (the old dashboard);
    2. the same query on a fresh read-only store per call (open + query + close);
    3. the map query (`cell_aggregates`, res 8, week windows) held vs per call;
    4. a writer's wait to get the file while another process reads in a tight loop, the
       dashboard's pattern at its busiest (median of several opens).

Usage: python benchmarks/bench_concurrency.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from interestgeo.config import Config, StoreConfig
from interestgeo.ingest import ingest_file
from interestgeo.store import Store

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "nyc_checkins.csv.gz"

READ_LOOP = """
import sys, time
from interestgeo.config import Config, StoreConfig
from interestgeo.store import Store
from interestgeo.store import StoreBusy
db = sys.argv[1]
config = Config(store=StoreConfig(path=db, read_wait_s=0.5))
print("ready", flush=True)
while True:
    try:
        with Store.open(db, read_only=True, config=config) as store:
            store.datasets()
    except StoreBusy:
        pass
"""


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores)")
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "demo.duckdb"
        config = Config(store=StoreConfig(path=db))
        with Store.open(db, config=config) as store:
            ingest_file(store, DEMO, config=config, dataset="nyc-demo")

        def per_call(query: Callable[[Store], object]) -> Callable[[], object]:
            def run() -> object:
                with Store.open(db, read_only=True, config=config) as store:
                    return query(store)
            return run

        def map_query(store: Store) -> object:
            return store.cell_aggregates(8, "week", k=config.privacy.k_min_users)

        with Store.open(db, read_only=True, config=config) as held:
            held_datasets = median_ms(held.datasets, args.repeat)
            held_map = median_ms(lambda: map_query(held), args.repeat)
        fresh_datasets = median_ms(per_call(Store.datasets), args.repeat)
        fresh_map = median_ms(per_call(map_query), args.repeat)
        print(f"datasets(): held connection {held_datasets:.1f} ms (reference), per-call store {fresh_datasets:.1f} ms "
              f"(+{fresh_datasets - held_datasets:.1f} ms)")
        print(f"map query:  held connection {held_map:.1f} ms (reference), per-call store {fresh_map:.1f} ms "
              f"(+{fresh_map - held_map:.1f} ms)")

        reader = subprocess.Popen([sys.executable, "-c", READ_LOOP, str(db)], cwd=ROOT, stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            waits = []
            for _ in range(max(5, args.repeat // 3)):
                started = time.perf_counter()
                with Store.open(db, config=config):
                    waits.append((time.perf_counter() - started) * 1000)
                time.sleep(0.1)
        finally:
            reader.kill()
            reader.wait()
        with_nobody = median_ms(lambda: Store.open(db, config=config).close(), 5)
        print(f"writer open: alone {with_nobody:.1f} ms (reference), beside a reader process in a tight loop "
              f"median {statistics.median(waits):.1f} ms, max {max(waits):.1f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
