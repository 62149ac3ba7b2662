"""A real dashboard server stays usable while the CLI loads into its database, and shows the load after a reload.

The dashboard used to hold a read-only connection for the server's life, and `interestgeo ingest` into
the same file failed with DuckDB's "Conflicting lock is held". Here: a real `streamlit run app.py`, a
real Chromium, the real CLI in a third process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._data.app import shared_database
from tests.browser.browser_helpers import ROOT, VIEWPORT, full_page_screenshot, go_to, open_app, running_server, wait_rendered
from tests._data.concurrency import LOAD_AND_HOLD, LOCK_WORDS

DEMO = ROOT / "data" / "nyc_checkins.csv.gz"
WAIT = 180


def _datasets_shown(tab: object) -> str:
    metric = tab.locator('[data-testid="stMetric"]', has_text="Datasets").first  # type: ignore[attr-defined]
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _reload(tab: object) -> str:
    tab.reload()  # type: ignore[attr-defined]
    tab.wait_for_selector('h1:has-text("Overview")', timeout=60_000)  # type: ignore[attr-defined]
    wait_rendered(tab)
    text = tab.locator('[data-testid="stApp"]').inner_text()  # type: ignore[attr-defined]
    assert not any(word in text for word in (*LOCK_WORDS, "could not be built")), text
    assert tab.locator('[data-testid="stException"]').count() == 0  # type: ignore[attr-defined]
    return text


def test_a_cli_load_runs_while_the_dashboard_is_open_and_a_reload_shows_it(
    browser: object, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, fixtures_dir: Path
) -> None:
    built, config = shared_database(tmp_path_factory, scored=False)
    db = Path(shutil.copy(built, tmp_path / "open.duckdb"))
    with running_server(db, config, tmp_path / "streamlit.log") as url:
        context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
        try:
            tab = context.new_page()
            open_app(tab, url)
            assert _datasets_shown(tab) == "1"
            # the CLI while the page is open: it used to fail on the server's lock
            load = subprocess.run([sys.executable, "-m", "interestgeo.cli", "ingest", str(DEMO), "--db", str(db),
                                   "--dataset", "arrived-while-open"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=WAIT, env={**os.environ, "INTERESTGEO_CONFIG": str(config)})
            assert load.returncode == 0, load.stderr
            _reload(tab)
            assert _datasets_shown(tab) == "2"
            full_page_screenshot(tab, "concurrency-after-cli-load")

            # Another process's load holding the file: a reload still shows the page (what is
            # committed, from the cache), no lock error; after it, the third dataset.
            holder = subprocess.Popen([sys.executable, "-c", LOAD_AND_HOLD, str(db),
                                       str(fixtures_dir / "mixed_language.csv"), "third"], cwd=ROOT,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert holder.stdout is not None and holder.stdin is not None
            try:
                assert holder.stdout.readline().strip() == "ready"
                _reload(tab)
                assert _datasets_shown(tab) == "2"
                full_page_screenshot(tab, "concurrency-during-a-load")
                # a page nothing cached yet: one plain sentence after a short wait, no error
                go_to(tab, "Map")
                text = tab.locator('[data-testid="stApp"]').inner_text()
                assert "reload in a moment" in text and not any(word in text for word in LOCK_WORDS), text
                assert tab.locator('[data-testid="stException"]').count() == 0
                full_page_screenshot(tab, "concurrency-map-during-a-load")
            finally:
                holder.stdin.write("go\n")
                holder.stdin.close()
                holder.wait(WAIT)
            assert holder.returncode == 0
            go_to(tab, "Overview")
            _reload(tab)
            assert _datasets_shown(tab) == "3"
        finally:
            context.close()
