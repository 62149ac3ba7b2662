"""Browser plumbing for the dashboard's browser tests and page benchmark: server, chromium, waits, pixels.

A real browser against a real server: Debian's chromium, driven by Playwright, on the dashboard as
`make run` starts it (pages/_ui/serve.py: `streamlit run app.py` with the pages' imports done first).

Chromium is the system package (`apt-get install chromium`; `make test` installs it), launched
by path: no `playwright install`, no download. Without it the browser tests skip loudly, except
in CI (the `CI` variable set), where a missing browser is a failure.

The server runs on a free local port against a test database built by the real ingest of a
small real CSV (see tests/_data/app.py), with k lowered so hexagons show. Everything offline:
maps have no basemap, so nothing leaves the machine.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",  # deck.gl still gets WebGL through SwiftShader, the software renderer
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
SHOTS = ROOT / "artifacts" / "screenshots"
SERVER_START_S = 60
# A page is rendered when the script stopped running; slow first renders (model load) get this long.
RENDER_TIMEOUT_MS = 60_000


def chromium_or_skip() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    message = (f"!!! chromium not found at {CHROMIUM}: the browser tests cannot run. "
               "Install it with `apt-get install chromium` (`make test` does).")
    if os.environ.get("CI"):
        pytest.fail(message + " In CI this is a failure.", pytrace=False)
    sys.stderr.write("\n" + message + "\n")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    db: Path
    config: Path
    log: Path


def start_server(db: Path, config: Path, log: Path, script: Path = ROOT / "app.py") -> tuple[subprocess.Popen[bytes], str]:
    """The dashboard as `make run` starts it (`python -m pages._ui.serve`: `streamlit run app.py` with
    the pages' imports done first), or `streamlit run` of another script, on a free port; returns
    once its health check answers."""
    port = free_port()
    env = {**os.environ, "INTERESTGEO_DB": str(db), "INTERESTGEO_CONFIG": str(config)}
    start = ["-m", "pages._ui.serve"] if script == ROOT / "app.py" else ["-m", "streamlit", "run", str(script)]
    cmd = [sys.executable, *start, "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false"]
    out = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"streamlit did not answer within {SERVER_START_S} s; see {log}")




@contextmanager
def running_server(db: Path, config: Path, log: Path) -> Iterator[str]:
    """`start_server` for the `with` block: yields its URL, stops the server after."""
    proc, url = start_server(db, config, log)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def built_server(folder: Path, config_text: str, build: Callable[[Path, Path], None]) -> Iterator[str]:
    """A server over a database `build(db, config_file)` makes in `folder`, with `config_text` as its config."""
    config_file = folder / "interestgeo.toml"
    config_file.write_text(config_text, encoding="utf-8")
    db = folder / "test.duckdb"
    build(db, config_file)
    with running_server(db, config_file, folder / "streamlit.log") as url:
        yield url


def wait_rendered(tab: object, *, started: bool = False, timeout_ms: int = RENDER_TIMEOUT_MS) -> None:
    """Wait until Streamlit finished running the script (after an action that triggers a rerun)."""
    app = '[data-testid="stApp"]'
    if not started:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            tab.wait_for_selector(f'{app}[data-test-script-state="running"]', timeout=1500)  # type: ignore[attr-defined]
        except PlaywrightTimeout:
            pass  # a fast rerun may finish before we look
    tab.wait_for_selector(f'{app}[data-test-script-state="notRunning"]', timeout=timeout_ms)  # type: ignore[attr-defined]
    tab.wait_for_load_state("networkidle")  # type: ignore[attr-defined]


def open_app(tab: object, url: str, query: str = "") -> None:
    tab.goto(f"{url}/{query}")  # type: ignore[attr-defined]
    tab.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',  # type: ignore[attr-defined]
                          timeout=RENDER_TIMEOUT_MS)
    tab.wait_for_selector("h1", timeout=RENDER_TIMEOUT_MS)  # type: ignore[attr-defined]


def go_to(tab: object, title: str) -> None:
    """Click a page in the sidebar navigation, as a user does, and wait for it to render."""
    tab.locator('[data-testid="stSidebarNavLink"]', has_text=title).first.click()  # type: ignore[attr-defined]
    tab.wait_for_selector(f'h1:has-text("{title}")', timeout=RENDER_TIMEOUT_MS)  # type: ignore[attr-defined]
    wait_rendered(tab, started=True)


# Drawn: the script finished, and the browser has drawn what it sent. Streamlit shows a skeleton in
# place of an element whose component it is still loading (plotly.js: 4.7 MB, deck.gl: 3 MB,
# Vega-Lite: 1 MB, each loaded on its first chart), and the charts draw after their element
# arrives: a page whose script ended could still be blank for a second.
_DRAWN_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    if (document.querySelector('[data-testid="stSkeleton"]')) return false;
    const drawn = (selector, inner) => [...document.querySelectorAll(selector)].every(e => e.querySelector(inner));
    return drawn('[data-testid="stPlotlyChart"]', '.main-svg') && drawn('[data-testid="stVegaLiteChart"]', 'svg, canvas')
        && drawn('[data-testid="stDeckGlJsonChart"]', 'canvas');
}"""


def wait_drawn(tab: object, timeout_ms: int = RENDER_TIMEOUT_MS) -> None:
    """Wait until the page is drawn (see _DRAWN_JS): its charts and maps are on screen, and the
    frame after that painted (deck.gl's first frame, shaders and all, follows its canvas)."""
    tab.wait_for_function(_DRAWN_JS, timeout=timeout_ms, polling=20)  # type: ignore[attr-defined]
    tab.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # type: ignore[attr-defined]


def full_page_screenshot(tab: object, name: str) -> Path:
    """Streamlit scrolls inside stMain: grow the viewport to its scroll height, shoot, restore."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = tab.evaluate(  # type: ignore[attr-defined]
        "() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    tab.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height))})  # type: ignore[attr-defined]
    tab.wait_for_timeout(1000)  # type: ignore[attr-defined]  # deck.gl redraws after a resize
    path = SHOTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    tab.set_viewport_size(VIEWPORT)  # type: ignore[attr-defined]
    return path


# Decodes the base64 PNG in `data` in the page and leaves its canvas `c` and RGBA bytes `px`.
_DECODE_PNG_JS = """
            const img = new Image();
            img.src = 'data:image/png;base64,' + data;
            await img.decode();
            const c = document.createElement('canvas');
            c.width = img.width; c.height = img.height;
            const g = c.getContext('2d');
            g.drawImage(img, 0, 0);
            const px = g.getImageData(0, 0, c.width, c.height).data;
"""


def coloured_pixels(tab: object, png: bytes) -> tuple[int, int]:
    """(saturated pixels, all pixels) of a PNG, decoded by the browser itself (no imaging library)."""
    data = base64.b64encode(png).decode("ascii")
    return tuple(tab.evaluate(  # type: ignore[attr-defined]
        "async (data) => {" + _DECODE_PNG_JS + """
            let n = 0;
            for (let i = 0; i < px.length; i += 4) {
                const hi = Math.max(px[i], px[i + 1], px[i + 2]), lo = Math.min(px[i], px[i + 1], px[i + 2]);
                if (hi - lo > 40) n++;
            }
            return [n, c.width * c.height];
        }""",
        data,
    ))


def coloured_point(tab: object, png: bytes) -> tuple[int, int] | None:
    """(x, y) of the saturated pixel nearest the image centre (a hexagon to click), or None."""
    data = base64.b64encode(png).decode("ascii")
    point = tab.evaluate(  # type: ignore[attr-defined]
        "async (data) => {" + _DECODE_PNG_JS + """
            let best = null, bestD = Infinity;
            for (let y = 4; y < c.height - 4; y += 3) for (let x = 4; x < c.width - 4; x += 3) {
                const i = 4 * (y * c.width + x);
                const hi = Math.max(px[i], px[i + 1], px[i + 2]), lo = Math.min(px[i], px[i + 1], px[i + 2]);
                const d = (x - c.width / 2) ** 2 + (y - c.height / 2) ** 2;
                if (hi - lo > 60 && d < bestD) { best = [x, y]; bestD = d; }
            }
            return best;
        }""",
        data,
    )
    return None if point is None else (int(point[0]), int(point[1]))


def inked_pixels(tab: object, png: bytes) -> int:
    """Pixels of a PNG that differ from its corner (the background): text drawn on it, decoded by the browser."""
    data = base64.b64encode(png).decode("ascii")
    return int(tab.evaluate(  # type: ignore[attr-defined]
        "async (data) => {" + _DECODE_PNG_JS + """
            let n = 0;
            for (let i = 0; i < px.length; i += 4) {
                if (Math.abs(px[i] - px[0]) + Math.abs(px[i + 1] - px[1]) + Math.abs(px[i + 2] - px[2]) > 90) n++;
            }
            return n;
        }""",
        data,
    ))
