"""Scale benchmark (issue 14): the NYC demo replicated N times, through the CLI as a user runs it.

Why whole processes: the targets are what a person waits for and what the machine must hold
(`interestgeo score` events/s and peak RSS, `interestgeo query` wall time), so each step runs as
its own process under GNU time (wall seconds, peak RSS), beside the same steps on the demo alone
(1x) in the same run as the reference. Replication: copy k gets user ids "<id>-r<k>" and its
times shifted by k weeks, so users, histories and windows grow with N and the venues stay the
demo's. The machine load (os.getloadavg) is printed with the figures. Then the dashboard on the
scored store: a real browser (Debian's chromium, `make browser`) opens the Overview and goes to
Map and Drift, each timed until drawn (its script ended, its charts and map on screen), with the
server's peak RSS (`--no-dashboard` skips; `--dashboard-runs N` opens it N times, each on a fresh server).

    .venv/bin/python benchmarks/bench_scale.py --copies 45 --work /tmp/scale-bench   # 5.1M events
    .venv/bin/python benchmarks/bench_scale.py --copies 1 --no-reference --no-dashboard --ray-copies 9 18 36
        # the Ray engine (1 and 2 scoring actors) beside the local one at ~1M, 2M and 4M events
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests package (its browser helpers)
CLI = str(ROOT / ".venv" / "bin" / "interestgeo")
DEMO = ROOT / "data" / "nyc_checkins.csv.gz"
MAPPING = ["user_id=user_id", "ts=utc_time", "lat=latitude", "lon=longitude", "text=venue_name+venue_category",
           "item_id=venue_id", "category=venue_category", "category_path=category_path", "tz_offset_min=tz_offset_min"]


def replicate(copies: int, out: Path) -> int:
    """Write the demo file `copies` times (new user ids, shifted weeks) to `out`; returns its rows."""
    import duckdb

    con = duckdb.connect()
    parts = " UNION ALL ".join(
        f"""SELECT user_id || '-r{k}' AS user_id, venue_id, venue_name, venue_category, category_path, latitude,
                   longitude, strftime(utc_time::TIMESTAMP + INTERVAL {7 * k} DAY, '%Y-%m-%dT%H:%M:%SZ') AS utc_time,
                   tz_offset_min FROM demo"""
        for k in range(copies)
    )
    source = str(DEMO).replace("'", "''")  # a path of ours; DuckDB cannot prepare a view's parameters
    con.execute(f"CREATE VIEW demo AS SELECT * FROM read_csv('{source}', all_varchar = true)")
    con.execute(f"COPY ({parts}) TO '{out}' (HEADER, COMPRESSION gzip)")
    return int(con.execute(f"SELECT count(*) FROM read_csv('{out}')").fetchone()[0])


def timed(args: list[str]) -> dict[str, object]:
    """Run a command under GNU time: wall seconds, peak RSS (GB), its last output line."""
    result = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *args], capture_output=True, text=True)
    match = re.search(r"TIME ([\d.]+) (\d+)", result.stderr)
    if result.returncode != 0 or match is None:
        raise SystemExit(f"{' '.join(args[:3])} failed: {result.stderr.strip()[-400:]}")
    lines = [line for line in result.stdout.strip().splitlines() if line.strip()]
    return {"wall_s": float(match.group(1)), "peak_gb": int(match.group(2)) / 1e6, "out": lines[-1] if lines else ""}


def register_model(db: Path, config: str | None) -> None:
    """The shipped pretrained model for the configured encoder, registered in `db` (no scoring)."""
    code = (
        "import sys; from interestgeo.config import load_config; from interestgeo.store import Store; "
        "from interestgeo.model import checkpoint as train; from interestgeo.text import encoder_for; "
        "c = load_config(sys.argv[2] or None); "
        "d = train.shipped_model_dir(encoder_for(c.text).model_id) if hasattr(train, 'shipped_model_dir') "
        "else train.SHIPPED_MODEL_DIR; s = Store.open(sys.argv[1], config=c); train.register_checkpoint(s, d); s.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(db), config or ""], check=True)


def run_size(
    copies: int, work: Path, config: str | None, phrase: str, with_dashboard: bool = True, reuse: bool = False,
    with_query: bool = True, dashboard_runs: int = 1,
) -> dict[str, object]:
    """ingest, score and query the demo replicated `copies` times in a fresh store, then open the dashboard on it.
    With `reuse` and a store of that size already in `work` (a run before): only the readers (query, dashboard)."""
    csv = work / f"nyc-x{copies}.csv.gz"
    db = work / f"scale-x{copies}.duckdb"
    common = ["--db", str(db)] + (["--config", config] if config else [])
    rows = None
    nan = float("nan")
    if reuse and db.exists():
        ingest = score = {"wall_s": nan, "peak_gb": nan}
        listed = json.loads(timed([CLI, "datasets", "--json", *common])["out"])["datasets"]
        report = {"events": sum(d["rows_stored"] for d in listed), "events_per_s": float("nan"), "calibrations": {}}
    else:
        for path in (db, Path(f"{db}.wal")):
            path.unlink(missing_ok=True)
        rows = replicate(copies, csv) if not csv.exists() else None
        ingest = timed([CLI, "ingest", str(csv), "--dataset", f"nyc-x{copies}", *[a for m in MAPPING for a in ("--map", m)],
                        "--json", *common])
        register_model(db, config)
        score = timed([CLI, "score", "--json", *common])
        report = json.loads(score["out"])
    query = timed([CLI, "query", phrase, "--json", *common]) if with_query else {"wall_s": nan, "peak_gb": nan}
    events = int(report["events"])
    boards = [dashboard(db, work, config) for _ in range(dashboard_runs if with_dashboard else 0)]
    return {
        "dashboard_pages_s": [b["pages_s"] for b in boards], "dashboard_load": [b["load"] for b in boards],
        "dashboard_peak_gb": max((b["server_peak_gb"] for b in boards), default=nan),
        "copies": copies, "events": events, "rows_written": rows,
        "ingest_s": ingest["wall_s"], "ingest_peak_gb": ingest["peak_gb"],
        "score_s": score["wall_s"], "score_events_per_s": events / score["wall_s"], "score_peak_gb": score["peak_gb"],
        "score_model_events_per_s": report["events_per_s"],
        "query_s": query["wall_s"], "query_peak_gb": query["peak_gb"],
        "calibration": {k: v.get("sentence") for k, v in report.get("calibrations", {}).items()},
    }


def dashboard(db: Path, work: Path, config: str | None) -> dict[str, object]:
    """The dashboard on `db` as a visitor meets it: `streamlit run app.py`, then a real browser opens
    the first page (Overview) and goes to Map and Drift, then a second visitor opens the Overview;
    seconds from the click (or the address) to the page drawn (its script finished and its charts
    and map on screen: `wait_drawn`), and the server's peak RSS (its VmHWM) over all of it."""
    from playwright.sync_api import sync_playwright

    from tests.browser.browser_helpers import (
        CHROMIUM,
        CHROMIUM_ARGS,
        VIEWPORT,
        go_to,
        open_app,
        start_server,
        wait_drawn,
    )

    config_file = work / "dashboard.toml"
    text = Path(config).read_text(encoding="utf-8") if config else ""
    config_file.write_text(text, encoding="utf-8")  # the defaults, warm-up included, as `make run` serves
    load = os.getloadavg()[0]
    proc, url = start_server(db, config_file, work / "dashboard.log")
    seconds: dict[str, float] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            tab = browser.new_page(viewport=VIEWPORT)
            started = time.perf_counter()
            open_app(tab, url)
            wait_drawn(tab)
            seconds["Overview"] = time.perf_counter() - started
            for page in ("Map", "Drift"):
                started = time.perf_counter()
                go_to(tab, page)
                wait_drawn(tab)
                seconds[page] = time.perf_counter() - started
            # a second visitor: a new session on the now running server (its imports done)
            second = browser.new_page(viewport=VIEWPORT)
            started = time.perf_counter()
            open_app(second, url)
            wait_drawn(second)
            seconds["Overview, 2nd visitor"] = time.perf_counter() - started
            browser.close()
        peak = _peak_rss_gb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"pages_s": seconds, "server_peak_gb": peak, "load": load}


def _peak_rss_gb(pid: int) -> float:
    """A running process's peak resident set (VmHWM), GB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def ray_curve(args: argparse.Namespace, work: Path) -> list[dict[str, object]]:
    """The Ray engine's scaling curve beside the local engine, from one run: for each size in
    `--ray-copies` (copies of the demo: 9 ~ 1M events), a fresh store scored with `score --engine
    local`, then `--engine ray --ray-workers W` for W in `--ray-workers` (a local Ray cluster on
    this machine), each a whole process under GNU time."""
    rows: list[dict[str, object]] = []
    for copies in args.ray_copies:
        csv, db = work / f"nyc-x{copies}.csv.gz", work / f"ray-x{copies}.duckdb"
        for path in (db, Path(f"{db}.wal")):
            path.unlink(missing_ok=True)
        if not csv.exists():
            replicate(copies, csv)
        common = ["--db", str(db)] + (["--config", args.config] if args.config else [])
        timed([CLI, "ingest", str(csv), "--dataset", f"nyc-x{copies}", *[a for m in MAPPING for a in ("--map", m)],
               "--json", *common])
        register_model(db, args.config)
        for engine, workers in [("local", None), *(("ray", w) for w in args.ray_workers)]:
            extra = ["--engine", engine] + (["--ray-workers", str(workers)] if workers else [])
            run = timed([CLI, "score", "--json", *extra, *common])
            events = int(json.loads(run["out"])["events"])
            rows.append({"copies": copies, "events": events, "engine": engine, "workers": workers,
                         "score_s": run["wall_s"], "events_per_s": events / run["wall_s"], "peak_gb": run["peak_gb"]})
            print(f"  ray curve: {events:>10,} events, {engine} {workers or ''}: {run['wall_s']:.0f} s = "
                  f"{events / run['wall_s']:,.0f} events/s, peak {run['peak_gb']:.2f} GB (load {os.getloadavg()[0]:.1f})",
                  flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=45, help="replicas of the demo (45: 5.1M events)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/interestgeo-scale"))
    parser.add_argument("--config", default=None, help="TOML config (e.g. the text encoder of the shipped model)")
    parser.add_argument("--phrase", default="jazz club")
    parser.add_argument("--no-reference", action="store_true", help="skip the 1x reference run")
    parser.add_argument("--no-dashboard", action="store_true", help="skip opening the dashboard in a browser")
    parser.add_argument("--no-query", action="store_true", help="skip `interestgeo query`")
    parser.add_argument("--dashboard-runs", type=int, default=1,
                        help="times to open the dashboard, each on a fresh server and browser (a first render varies)")
    parser.add_argument("--reuse", action="store_true",
                        help="where a scored store of a size is already in --work, measure its readers only (query, dashboard)")
    parser.add_argument("--ray-copies", type=int, nargs="*", default=[],
                        help="sizes (copies of the demo) for the Ray scaling curve, e.g. 9 18 36 (1M, 2M, 4M events)")
    parser.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2], help="Ray scoring actors to try")
    args = parser.parse_args()
    if not DEMO.exists():
        print(f"SKIPPED: the demo file {DEMO} is missing", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()} at start")
    sizes = ([] if args.no_reference or args.copies == 1 else [1]) + [args.copies]
    results = [run_size(n, args.work, args.config, args.phrase, not args.no_dashboard, args.reuse, not args.no_query,
                        args.dashboard_runs) for n in sizes]
    curve = ray_curve(args, args.work)
    for r in results:
        print(
            f"x{r['copies']:<3} {r['events']:>10,} events | ingest {r['ingest_s']:.1f} s | score {r['score_s']:.1f} s = "
            f"{r['score_events_per_s']:,.0f} events/s, peak {r['score_peak_gb']:.2f} GB | query {r['query_s']:.2f} s, "
            f"peak {r['query_peak_gb']:.2f} GB"
        )
        for run, (seconds, load) in enumerate(zip(r["dashboard_pages_s"], r["dashboard_load"], strict=True), 1):
            pages = ", ".join(f"{name} {t:.2f} s" for name, t in seconds.items())
            print(f"     dashboard run {run} (load {load:.1f}): {pages}")
        if r["dashboard_pages_s"]:
            print(f"     dashboard server peak {r['dashboard_peak_gb']:.2f} GB")
        for sentence in r["calibration"].values():
            print("     ", sentence)
    print(f"load {os.getloadavg()} at the end; {time.perf_counter() - started:.0f} s in all")
    print(json.dumps({"sizes": results, "ray_curve": curve}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
