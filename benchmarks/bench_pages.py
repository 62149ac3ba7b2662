"""Page speed in a real browser: each page's first render and a filter change, on the demo data.

Starts `streamlit run app.py` on a free port against the demo database and drives Debian's
chromium with Playwright (the browser tests' plumbing, tests/browser/browser_helpers.py). Each
round is a fresh browser session that opens the app on its last page (`app load`: the URL to
a rendered page, the app's own start included in round 1), then, for every page in order:

    first render   click the page in the sidebar -> the script finished (the time the app's
                   `data-test-script-state` turns `notRunning`, seen by a MutationObserver in the
                   page, so Playwright's own polling does not count);
    filter change  click "Sun" in the days-of-week pills (a mouse click on a button: a keyboard
                   step on the hours slider was seen not to register now and then) -> the
                   script finished;
    filter back    click it again: the query results are then cached.

Every step has its own timeout and never hangs the run: an action that starts no script run
within START_S is retried (RETRIES times, each said on the output) unless the pill shows it took
effect (then the run is only late, and waited for), and a step that still fails is reported as
`failed` in the table while the other steps go on.

Round 1 runs on cold caches (the server just started); later rounds show warm figures.
Targets on the demo data: first render < 2 s, filter change < 0.5 s.

The reference: the same measurements, in the same run, on a trivial two-page Streamlit app with
the same sidebar slider and pills (`REFERENCE_APP`). It is the floor this machine and browser set for any
Streamlit rerun (0.2-0.3 s on the shared 2 cores); each page's ratio to it says how much of a
figure is the dashboard's own work, whatever the load on the machine was.

The database: `--db`, else data/interestgeo.duckdb when it holds scored events, else one built
once under artifacts/bench/ (the NYC demo ingested and scored with the recency source).
The config: `--config`, else the defaults (the warm-up on, as `make run` serves); `--config` with
`[app] warm_up = false` shows what the background warm-up costs the pages it runs beside.
Usage: python benchmarks/bench_pages.py [--db PATH] [--config TOML] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests package (its browser helpers)

from tests.browser.browser_helpers import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, start_server  # noqa: E402


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
    st.pills("Days of week", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], selection_mode="multi",
             default=["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], key="days")
navigation.run()
"""
TARGET_FIRST_S = 2.0
TARGET_FILTER_S = 0.5
# Per step: a first render may load the model on a loaded machine; a filter change is lighter.
FIRST_TIMEOUT_MS = 60_000
FILTER_TIMEOUT_MS = 30_000
# An action that starts no script run within this long did not register: it is retried.
START_S = 4.0
RETRIES = 2
# A click that took effect in the page but started no run is waited for this long, then failed.
LATE_START_S = 15.0
# Quiet time that ends a step: a rerun that syncs the URL may follow the first run.
SETTLE_MS = 400
# Records each time a script run starts and finishes, with the page's own clock: a MutationObserver
# on the app element (attached by a 5 ms poll, since the element does not exist when the init
# script runs). Starts come from the attribute's old value, so even a run that starts and ends
# between two callbacks is seen.
OBSERVER = """
window.__ig = {starts: [], done: [], observed: null};
const record = (app, mutations) => {
  const now = performance.now();
  for (const m of mutations) if (m.oldValue === 'notRunning') window.__ig.starts.push(now);
  if (app.getAttribute('data-test-script-state') === 'notRunning') window.__ig.done.push(now);
};
setInterval(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app === window.__ig.observed) return;
  window.__ig.observed = app;
  record(app, []);
  new MutationObserver((mutations) => record(app, mutations)).observe(app, {
    attributes: true, attributeOldValue: true, attributeFilter: ['data-test-script-state']});
}, 5);
"""


class StepFailed(Exception):
    """One measurement could not be taken (the reason in words); the run goes on."""


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
    from interestgeo.text import embed_texts, encoder_for
    from interestgeo.vectors import RecencySource, score_store

    print(f"building {built} (the NYC demo, scored with the recency source; minutes, once)", flush=True)
    built.parent.mkdir(parents=True, exist_ok=True)
    config = Config().with_db(built)
    with Store.open(built, config=config) as store:
        ingest_file(store, ROOT / "data" / "nyc_checkins.csv.gz", config=config, dataset="nyc-demo")
        encoder = encoder_for(config.text)
        source = RecencySource(lambda texts: embed_texts(store, encoder, texts, warn=None))
        score_store(store, config, source=source, encoder=encoder)
    return built


def settle(tab: object, timeout_ms: int) -> None:
    """Wait until no script runs and none started or finished for SETTLE_MS."""
    tab.wait_for_function(  # type: ignore[attr-defined]
        """q => {
            const app = document.querySelector('[data-testid="stApp"]');
            const last = Math.max(0, ...window.__ig.starts, ...window.__ig.done);
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && performance.now() - last > q;
        }""", arg=SETTLE_MS, timeout=timeout_ms, polling=50)


def timed(tab: object, what: str, action: object, timeout_ms: int, ready: str | None = None,
          registered: object = None) -> float:
    """Seconds from `action()` to the end of the script run(s) it causes (and `ready` visible).

    An action that starts no run within START_S is retried, unless `registered()` says it took
    effect (a toggle clicked twice would undo itself): then its run is only late (a busy server),
    and waited for. Raises StepFailed instead of hanging.
    """
    from playwright.sync_api import Error as PlaywrightError

    try:
        settle(tab, timeout_ms)
        for attempt in range(RETRIES + 1):
            t0 = tab.evaluate("performance.now()")  # type: ignore[attr-defined]
            action()  # type: ignore[operator]
            try:
                tab.wait_for_function("t0 => window.__ig.starts.concat(window.__ig.done).some(t => t > t0)",  # type: ignore[attr-defined]
                                      arg=t0, timeout=START_S * 1000, polling=20)
                break
            except PlaywrightError:
                if registered is not None and registered():  # type: ignore[operator]
                    print(f"    {what}: registered, but no script run started within {START_S:.0f} s; waiting",
                          flush=True)
                    try:
                        tab.wait_for_function("t0 => window.__ig.starts.concat(window.__ig.done).some(t => t > t0)",  # type: ignore[attr-defined]
                                              arg=t0, timeout=LATE_START_S * 1000, polling=20)
                    except PlaywrightError:
                        # seen once in a few hundred clicks: the pill toggled but the server never ran
                        raise StepFailed(f"{what}: the click showed in the page but started no script run "
                                         f"within {LATE_START_S:.0f} s") from None
                    break
                if attempt == RETRIES:
                    raise StepFailed(f"{what}: no script run started after {RETRIES + 1} tries") from None
                print(f"    {what}: no script run started within {START_S:.0f} s; retrying", flush=True)
        if ready:
            tab.wait_for_selector(ready, timeout=timeout_ms)  # type: ignore[attr-defined]
        settle(tab, timeout_ms)
        done = tab.evaluate("t0 => window.__ig.done.filter(t => t > t0)", t0)  # type: ignore[attr-defined]
    except PlaywrightError as exc:
        raise StepFailed(f"{what}: {str(exc).splitlines()[0]}") from None
    return (max(done) - t0) / 1000.0


def run_round(browser: object, url: str, pages: tuple[str, ...] = PAGES) -> dict[str, dict[str, float]]:
    """One browser session over `pages`. It opens on the last page, so that clicking the first one
    starts a run to time (clicking the page shown starts none)."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    context.set_default_timeout(FIRST_TIMEOUT_MS)
    context.add_init_script(OBSERVER)
    tab = context.new_page()
    out: dict[str, dict[str, float]] = {}
    nan = float("nan")
    try:
        start = time.perf_counter()
        tab.goto(f"{url}/{pages[-1].lower()}" if len(pages) > 1 else url)
        tab.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=FIRST_TIMEOUT_MS)
        tab.wait_for_selector("h1", timeout=FIRST_TIMEOUT_MS)
        out["(app load)"] = {"first": time.perf_counter() - start}
        for title in pages:
            link = tab.locator('[data-testid="stSidebarNavLink"]', has_text=title).first
            sunday = tab.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sun", exact=True)

            def pressed(value: str, pill: object = sunday) -> object:
                return lambda: pill.get_attribute("aria-pressed") == value  # type: ignore[attr-defined]

            row = {}
            # Re-clicking a page link is harmless (the page shown starts no run): retried blindly.
            for step, action, timeout, ready, registered in (
                ("first", link.click, FIRST_TIMEOUT_MS, f'h1:has-text("{title}")', None),
                ("filter", sunday.click, FILTER_TIMEOUT_MS, None, pressed("false")),
                ("back", sunday.click, FILTER_TIMEOUT_MS, None, pressed("true")),
            ):
                try:
                    row[step] = timed(tab, f"{title} {step}", action, timeout, ready, registered)
                except StepFailed as exc:
                    print(f"    failed: {exc}", flush=True)
                    row.update({s: row.get(s, nan) for s in ("first", "filter", "back")}, **{step: nan})
                    # Start the next page from a clean state: the page as its URL says, rendered.
                    tab.reload()
                    tab.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                                          timeout=FIRST_TIMEOUT_MS)
                    break
            out[title] = row
            print(f"  {title}: first {row['first']:.2f} s, filter {row['filter']:.2f} s, back {row['back']:.2f} s",
                  flush=True)
    except Exception as exc:  # the browser or server went away: report what was measured
        from playwright.sync_api import Error as PlaywrightError

        if not isinstance(exc, PlaywrightError):
            raise
        print(f"    round stopped: {str(exc).splitlines()[0]}", flush=True)
    finally:
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
    parser.add_argument("--config", type=Path, help="interestgeo TOML config to serve with (default: the defaults)")
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
        # the defaults (k = 10), as `make run` serves, unless --config names another
        config.write_text(args.config.read_text(encoding="utf-8") if args.config else "", encoding="utf-8")
        reference_app = Path(tmp) / "reference.py"
        reference_app.write_text(REFERENCE_APP, encoding="utf-8")
        load_before = os.getloadavg()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                print("reference (trivial app):", flush=True)
                reference = measure(browser, db, config, Path(tmp) / "reference.log", reference_app,
                                    REFERENCE_PAGES, args.rounds)
                print("dashboard:", flush=True)
                rounds = measure(browser, db, config, Path(tmp) / "streamlit.log", ROOT / "app.py", PAGES,
                                 args.rounds)
            finally:
                browser.close()
    ref = summarise(reference, REFERENCE_PAGES[0])
    report = {name: summarise(rounds, name) for name in ("(app load)", *PAGES)}
    print(f"\ndatabase {db}; config {args.config or '(the defaults)'}; {args.rounds} rounds; round 1 = cold caches "
          "(fresh server). Seconds.")
    print("load average (1, 5, 15 min): before " + " ".join(f"{x:.2f}" for x in load_before)
          + ", after " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    header = "".join(f"{c:>14}" for c in COLUMNS)
    print(f"{'page':<12}{header}")
    for name, row in [*report.items(), ("reference", ref)]:
        # the app load is one figure (opening the URL), not a page with a filter change
        shown = [c for c in COLUMNS if name != "(app load)" or c == "first_cold"]
        print(f"{name:<12}" + "".join(f"{_fmt(row[c]) if c in shown else '':>14}" for c in COLUMNS))
    print("\nratio to the trivial app's same figure (1.0 = as fast as any Streamlit rerun here):")
    print(f"{'page':<12}{header}")
    ratios = {name: {c: row[c] / ref[c] if ref[c] > 0 else float("nan") for c in COLUMNS}
              for name, row in report.items() if name in PAGES}
    for name, row in ratios.items():
        print(f"{name:<12}" + "".join(f"{_fmt(row[c], 'x'):>14}" for c in COLUMNS))
    pages = [report[p] for p in PAGES]
    failed = sum(1 for p in pages for c in COLUMNS if math.isnan(p[c]))
    print(f"\ntargets: first render < {TARGET_FIRST_S} s (worst cold {_worst(pages, 'first_cold'):.2f} s, warm "
          f"{_worst(pages, 'first_warm'):.2f} s); filter change < {TARGET_FILTER_S} s (worst cold "
          f"{_worst(pages, 'filter_cold'):.2f} s, warm {_worst(pages, 'filter_warm'):.2f} s, cached "
          f"{_worst(pages, 'filter_back'):.2f} s)" + (f"; {failed} figure(s) failed" if failed else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"database": str(db), "config": str(args.config or ""), "rounds": args.rounds,
                                         "pages": report,
                                         "reference": ref, "ratios": ratios,
                                         "load_before": load_before}, indent=2))
    return 1 if failed else 0


COLUMNS = ("first_cold", "first_warm", "filter_cold", "filter_warm", "filter_back")


def summarise(rounds: list[dict[str, dict[str, float]]], name: str) -> dict[str, float]:
    """Cold = round 1; warm = the median of later rounds; back (cached results) = the median of all."""
    nan = float("nan")

    def median(values: list[float]) -> float:
        kept = [v for v in values if not math.isnan(v)]
        return statistics.median(kept) if kept else nan

    rows = [r.get(name, {}) for r in rounds]
    cold, warm = (rows[0] if rows else {}), rows[1:] or rows
    return {
        "first_cold": cold.get("first", nan),
        "first_warm": median([w.get("first", nan) for w in warm]),
        "filter_cold": cold.get("filter", nan),
        "filter_warm": median([w.get("filter", nan) for w in warm]),
        "filter_back": median([r.get("back", nan) for r in rows]),
    }


def _fmt(value: float, unit: str = "") -> str:
    return "failed" if math.isnan(value) else f"{value:.2f}{unit}" if not unit else f"{value:.1f}{unit}"


def _worst(rows: list[dict[str, float]], column: str) -> float:
    values = [r[column] for r in rows if not math.isnan(r[column])]
    return max(values) if values else float("nan")


if __name__ == "__main__":
    sys.exit(main())
