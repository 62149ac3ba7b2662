"""Page speed in a real browser: each page's first render and a filter change, on the demo data.

Starts `streamlit run app.py` on a free port against the demo database and drives Debian's
chromium with Playwright (the browser tests' plumbing, tests/browser/browser_helpers.py). For
every page, in page order, in a fresh browser session:

    first render   click the page in the sidebar -> the script finished (the time the app's
                   `data-test-script-state` turns `notRunning`, seen by a MutationObserver in the
                   page, so Playwright's own polling does not count);
    filter change  move the hours-of-day slider one step (keyboard) -> the script finished;
    filter back    move it back: the query results are then cached.

Round 1 runs on cold caches (the server just started); later rounds show warm figures.
Targets on the demo data: first render < 2 s, filter change < 0.5 s.

The reference: the same measurements, in the same run, on a trivial two-page Streamlit app with
the same sidebar slider (`REFERENCE_APP`). It is the floor this machine and browser set for any
Streamlit rerun (0.2-0.3 s on the shared 2 cores); each page's ratio to it says how much of a
figure is the dashboard's own work, whatever the load on the machine was.

The database: `--db`, else data/interestgeo.duckdb when it holds scored events, else one built
once under artifacts/bench/ (the NYC demo ingested and scored with the recency source).
Usage: python benchmarks/bench_pages.py [--db PATH] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, start_server  # noqa: E402

PAGES = ("Overview", "Map", "Drift", "User", "Upload", "Model")
# Only Beta: clicking the page already shown (the default, Alpha) starts no run to time.
REFERENCE_PAGES = ("Beta",)
REFERENCE_APP = """
import streamlit as st

def alpha() -> None:
    st.title("Alpha")
    st.write("A trivial page: the round-trip reference.")

def beta() -> None:
    st.title("Beta")
    st.write("Another trivial page.")

navigation = st.navigation([st.Page(alpha, title="Alpha", default=True), st.Page(beta, title="Beta")])
with st.sidebar:
    st.slider("Hours of day (local)", 0, 23, (0, 23), key="hours")
navigation.run()
"""
TARGET_FIRST_S = 2.0
TARGET_FILTER_S = 0.5
TIMEOUT_MS = 120_000
# Records each time the script finishes, with the page's own clock: a MutationObserver on the app
# element (attached by a 5 ms poll, since the element does not exist when the init script runs), so
# even a run shorter than the poll is seen.
OBSERVER = """
window.__ig = {done: [], observed: null};
const record = (app) => {
  if (app.getAttribute('data-test-script-state') === 'notRunning') window.__ig.done.push(performance.now());
};
setInterval(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app === window.__ig.observed) return;
  window.__ig.observed = app;
  record(app);
  new MutationObserver(() => record(app)).observe(app, {attributes: true,
                                                        attributeFilter: ['data-test-script-state']});
}, 5);
"""


def demo_database() -> Path:
    """A scored demo database: the user's if it has vectors, else one built once for benchmarks."""
    from interestgeo.config import Config
    from interestgeo.store import Store

    default = ROOT / "data" / "interestgeo.duckdb"
    if default.exists():
        with Store.open(default, read_only=True) as store:
            if not store.score_runs().empty:
                return default
    built = ROOT / "artifacts" / "bench" / "demo.duckdb"
    if built.exists():
        return built
    from interestgeo.ingest import ingest_file
    from interestgeo.score import RecencySource, score_store
    from interestgeo.text import TextEncoder, embed_texts

    print(f"building {built} (the NYC demo, scored with the recency source; minutes, once)", flush=True)
    built.parent.mkdir(parents=True, exist_ok=True)
    config = Config().with_db(built)
    with Store.open(built, config=config) as store:
        ingest_file(store, ROOT / "data" / "nyc_checkins.csv.gz", config=config, dataset="nyc-demo")
        encoder = TextEncoder(config.text)
        source = RecencySource(lambda texts: embed_texts(store, encoder, texts, warn=None))
        score_store(store, config, source=source, encoder=encoder)
    return built


def timed(tab: object, action: object, ready: str | None = None) -> float:
    """Seconds from `action()` to the end of the script run it causes (and `ready` visible)."""
    t0 = tab.evaluate("performance.now()")  # type: ignore[attr-defined]
    action()  # type: ignore[operator]
    if ready:
        tab.wait_for_selector(ready, timeout=TIMEOUT_MS)  # type: ignore[attr-defined]
    tab.wait_for_function("t0 => window.__ig.done.some(t => t > t0)", arg=t0, timeout=TIMEOUT_MS)  # type: ignore[attr-defined]
    # Settle: a rerun that syncs the URL may follow the first; take the last finish.
    tab.wait_for_timeout(400)  # type: ignore[attr-defined]
    done = tab.evaluate("t0 => window.__ig.done.filter(t => t > t0)", t0)  # type: ignore[attr-defined]
    return (max(done) - t0) / 1000.0


def run_round(browser: object, url: str, pages: tuple[str, ...] = PAGES) -> dict[str, dict[str, float]]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    context.add_init_script(OBSERVER)
    tab = context.new_page()
    out: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    tab.goto(url)
    tab.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=TIMEOUT_MS)
    tab.wait_for_selector("h1", timeout=TIMEOUT_MS)
    out["(app load)"] = {"first": time.perf_counter() - start}
    for title in pages:
        link = tab.locator('[data-testid="stSidebarNavLink"]', has_text=title).first
        first = timed(tab, link.click, f'h1:has-text("{title}")')
        thumb = tab.locator('[data-testid="stSidebar"] [data-testid="stSlider"] input').first
        thumb.focus()
        change = timed(tab, lambda: thumb.press("ArrowRight"))
        back = timed(tab, lambda: thumb.press("ArrowLeft"))
        out[title] = {"first": first, "filter": change, "back": back}
        print(f"  {title}: first {first:.2f} s, filter {change:.2f} s, back {back:.2f} s", flush=True)
    context.close()
    return out


def measure(browser: object, db: Path, config: Path, log: Path, script: Path, pages: tuple[str, ...],
            rounds: int) -> list[dict[str, dict[str, float]]]:
    """`rounds` rounds over `pages` of `script` served fresh (round 1 on cold caches)."""
    proc, url = start_server(db, config, log, script)
    try:
        return [run_round(browser, url, pages) for _ in range(rounds)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="database to serve (default: the demo, see above)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"chromium not found at {CHROMIUM}: install it (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    db = (args.db or demo_database()).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "interestgeo.toml"
        config.write_text("", encoding="utf-8")  # the defaults (k = 10), as `make run` serves
        reference_app = Path(tmp) / "reference.py"
        reference_app.write_text(REFERENCE_APP, encoding="utf-8")
        load_before = os.getloadavg()[0]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            rounds = measure(browser, db, config, Path(tmp) / "streamlit.log", ROOT / "app.py", PAGES, args.rounds)
            print("reference (trivial app):", flush=True)
            reference = measure(browser, db, config, Path(tmp) / "reference.log", reference_app, REFERENCE_PAGES,
                                args.rounds)
            browser.close()
    ref_first = statistics.median(r[p]["first"] for r in reference[1:] or reference for p in REFERENCE_PAGES)
    ref_filter = statistics.median(r[p][k] for r in reference for p in REFERENCE_PAGES for k in ("filter", "back"))
    print(f"database {db}; {args.rounds} rounds; round 1 = cold caches. Seconds. "
          f"Load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after.")
    print(f"{'page':<12} {'first (cold)':>12} {'first (warm)':>12} {'filter (cold)':>13} {'filter (warm)':>13}"
          f" {'filter back':>11} {'x ref first':>11} {'x ref filter':>12}")
    report: dict[str, dict[str, float]] = {}
    for name in rounds[0]:
        cold = rounds[0][name]
        warm = [r[name] for r in rounds[1:]] or [cold]
        row = {
            "first_cold": cold["first"],
            "first_warm": statistics.median(w["first"] for w in warm),
            "filter_cold": cold.get("filter", float("nan")),
            "filter_warm": statistics.median(w.get("filter", float("nan")) for w in warm),
            "filter_back": statistics.median(r[name].get("back", float("nan")) for r in rounds),
        }
        row["ratio_first"] = row["first_warm"] / ref_first
        row["ratio_filter"] = row["filter_back"] / ref_filter
        report[name] = row
        print(f"{name:<12} {row['first_cold']:>12.2f} {row['first_warm']:>12.2f} {row['filter_cold']:>13.2f}"
              f" {row['filter_warm']:>13.2f} {row['filter_back']:>11.2f} {row['ratio_first']:>11.1f}"
              f" {row['ratio_filter']:>12.1f}")
    print(f"{'reference':<12} {'':>12} {ref_first:>12.2f} {'':>13} {'':>13} {ref_filter:>11.2f} {1:>11.1f} {1:>12.1f}")
    pages = [report[p] for p in PAGES]
    worst_first = max(p["first_warm"] for p in pages)
    worst_filter = max(p["filter_back"] for p in pages)
    print(f"targets: first render < {TARGET_FIRST_S} s (worst warm {worst_first:.2f} s), "
          f"filter change < {TARGET_FILTER_S} s (worst cached {worst_filter:.2f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"database": str(db), "rounds": args.rounds, "pages": report,
                                         "reference": {"first": ref_first, "filter": ref_filter}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
