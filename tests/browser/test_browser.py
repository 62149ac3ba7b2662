"""The dashboard in a real browser: every page renders cleanly, hexagons are drawn, uploads work."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest

from tests.browser.browser_helpers import (
    RENDER_TIMEOUT_MS,
    VIEWPORT,
    Server,
    coloured_pixels,
    coloured_point,
    full_page_screenshot,
    go_to,
    open_app,
    running_server,
    wait_drawn,
    wait_rendered,
)

pytestmark = pytest.mark.browser

PAGES = ["Overview", "Map", "Drift", "User", "Upload", "Model"]


def test_every_page_renders_without_browser_errors(page: object, server: Server) -> None:
    open_app(page, server.url)
    # exactly the six pages: pages/_ui/ (the helpers) is a subfolder, which no page scan lists
    links = page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()  # type: ignore[attr-defined]
    assert [link.strip().splitlines()[-1] for link in links] == PAGES  # (each after its icon's name)
    for title in PAGES:
        go_to(page, title)
        assert page.locator('[data-testid="stException"]').count() == 0, title  # type: ignore[attr-defined]
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0, title  # type: ignore[attr-defined]
        full_page_screenshot(page, title.lower())


def test_the_overview_draws_its_charts_without_loading_plotly(page: object, server: Server) -> None:
    """The first page a browser opens draws in Vega-Lite (1 MB): loading plotly.js (4.7 MB) was the
    longest part of a fresh browser's first render."""
    open_app(page, server.url)
    wait_drawn(page)
    charts = page.locator('[data-testid="stVegaLiteChart"]')  # type: ignore[attr-defined]
    assert charts.count() == 2 and all(charts.nth(i).locator("svg, canvas").count() for i in range(2))
    fetched = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")  # type: ignore[attr-defined]
    assert any("VegaLiteChart" in name for name in fetched) and not any("PlotlyChart" in name for name in fetched)


def test_drift_draws_its_charts_in_vega_lite_without_warnings_or_plotly(page: object, server: Server) -> None:
    """Drift draws without loading plotly.js (4.7 MB: a fresh browser's first plotly chart waits
    ~1.2 s for it). Vega-Lite warns (in the console, not as an error) about a spec it draws wrongly,
    such as a layer with no rows or axes it cannot merge."""
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)  # type: ignore[attr-defined]
    open_app(page, server.url)
    go_to(page, "Drift")
    # the demo's few days: day windows (the default, week, has fewer than two)
    page.locator('[data-testid="stSelectbox"]', has_text="Window").click()  # type: ignore[attr-defined]
    page.get_by_role("option", name="day", exact=True).click()  # type: ignore[attr-defined]
    wait_rendered(page, started=True)
    wait_drawn(page)
    charts = page.locator('[data-testid="stVegaLiteChart"]')  # type: ignore[attr-defined]
    assert charts.count() == 2 and all(charts.nth(i).locator("svg, canvas").count() for i in range(2))  # shares, drift
    fetched = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")  # type: ignore[attr-defined]
    assert not any("PlotlyChart" in name for name in fetched)
    # (but "Infinite extent", which Vega logs once per data-driven scale: Streamlit makes the view
    # before it inserts the chart's rows, the Overview's charts too)
    assert not [w for w in warnings if "Infinite extent" not in w], sorted(set(warnings))
    full_page_screenshot(page, "drift-vega-lite")


def test_map_really_draws_hexagons(page: object, server: Server) -> None:
    open_app(page, server.url)
    go_to(page, "Map")
    deck = page.locator('[data-testid="stDeckGlJsonChart"]').first  # type: ignore[attr-defined]
    deck.wait_for(state="visible")
    page.wait_for_timeout(1500)  # type: ignore[attr-defined]  # let deck.gl draw its first frame
    coloured, total = coloured_pixels(page, deck.screenshot())
    # The hexagons are the only saturated colour in the chart (no basemap): at least 5% of it.
    assert coloured > 0.05 * total, f"only {coloured} of {total} pixels coloured: hexagons not drawn"


def test_the_maps_csv_is_written_when_downloaded(page: object, server: Server, tmp_path: Path) -> None:
    """Downloads are deferred (the CSV is built on the click, not on every rerun): the file still comes."""
    open_app(page, server.url)
    go_to(page, "Map")
    with page.expect_download(timeout=30_000) as download:  # type: ignore[attr-defined]
        page.locator('[data-testid="stMain"]').get_by_role("button", name="Download CSV").first.click()  # type: ignore[attr-defined]
    saved = tmp_path / "map.csv"
    download.value.save_as(saved)
    lines = saved.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("cell,") and "share: " in lines[0] and len(lines) > 1


def test_a_hexagon_clicked_on_the_map_becomes_the_region(page: object, server: Server) -> None:
    open_app(page, server.url)
    go_to(page, "Map")
    deck = page.locator('[data-testid="stDeckGlJsonChart"]').first  # type: ignore[attr-defined]
    deck.wait_for(state="visible")
    page.wait_for_timeout(1500)  # type: ignore[attr-defined]
    point = coloured_point(page, deck.screenshot())
    assert point is not None, "no hexagon to click"
    box = deck.bounding_box()
    page.mouse.click(box["x"] + point[0], box["y"] + point[1])  # type: ignore[attr-defined]
    use = page.get_by_role("button", name="Use 1 selected cells as the region")  # type: ignore[attr-defined]
    use.wait_for(timeout=30_000)
    use.click()
    page.get_by_text("Region: 1 cells picked on the map.").wait_for(timeout=30_000)  # type: ignore[attr-defined]
    wait_rendered(page)
    assert "cells=" in page.url  # type: ignore[attr-defined]  # shareable as a link
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()  # type: ignore[attr-defined]
    assert "1 picked cells" in caption


def test_a_lasso_drawn_on_the_map_becomes_the_region(page: object, server: Server) -> None:
    open_app(page, server.url)
    go_to(page, "Map")
    page.get_by_text("Draw a region").click()  # type: ignore[attr-defined]
    wait_rendered(page)
    canvas = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first  # type: ignore[attr-defined]
    canvas.wait_for(state="visible")
    box = canvas.bounding_box()
    cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, 0.3 * min(box["width"], box["height"])
    page.mouse.move(cx + r, cy)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    for step in range(1, 25):  # a hand-drawn loop around the middle of the city
        angle = 2 * math.pi * step / 24
        page.mouse.move(cx + r * math.cos(angle), cy + r * math.sin(angle), steps=2)  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]
    use = page.get_by_role("button", name=re.compile("Use the drawn polygon"))  # type: ignore[attr-defined]
    use.wait_for(timeout=30_000)
    use.click()
    page.get_by_text(re.compile("Region: a polygon drawn on the map")).wait_for(timeout=30_000)  # type: ignore[attr-defined]
    wait_rendered(page)
    assert "poly=" in page.url  # type: ignore[attr-defined]  # shareable as a link
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()  # type: ignore[attr-defined]
    assert "drawn polygon" in caption
    full_page_screenshot(page, "map-drawn-region")
    page.get_by_role("button", name="Clear drawn polygon").click()  # type: ignore[attr-defined]
    page.get_by_text(re.compile("Region: a polygon drawn")).wait_for(state="detached", timeout=30_000)  # type: ignore[attr-defined]
    wait_rendered(page)
    assert "poly=" not in page.url  # type: ignore[attr-defined]


def test_filters_from_a_link_reach_the_page(page: object, server: Server) -> None:
    open_app(page, server.url, "?hours=6&hours=20&days=Mon&days=Tue")
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()  # type: ignore[attr-defined]
    assert "06:00–20:59" in caption and "Mon Tue" in caption


def test_a_link_as_a_fresh_servers_first_request_opens_its_page_and_filters(
    browser: object, server: Server, tmp_path: Path
) -> None:
    """A deep link is the first request after the server started: Streamlit serves the page file
    before app.py's page list exists, and the app must still land on that page with the link's
    filters (it used to fall back to the Overview and drop them)."""
    db = Path(shutil.copy(server.db, tmp_path / "fresh.duckdb"))
    with running_server(db, server.config, tmp_path / "streamlit.log") as url:
        context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
        try:
            tab = context.new_page()
            tab.goto(f"{url}/drift?hours=6&hours=20")
            tab.wait_for_selector('h1:has-text("Drift")', timeout=RENDER_TIMEOUT_MS)
            wait_rendered(tab, started=True)
            caption = tab.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
            assert "06:00–20:59" in caption
        finally:
            context.close()


def test_uploaded_csv_shows_up_in_the_dataset_filter(page: object, server: Server, tmp_path) -> None:
    from tests._data.app import SAMPLE_ROWS, write_sample_csv

    csv = write_sample_csv(tmp_path / "browser-upload.csv", rows=300, skip=SAMPLE_ROWS)
    open_app(page, server.url)
    go_to(page, "Upload")
    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(csv))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Load into the database").click(timeout=60_000)  # type: ignore[attr-defined]
    page.get_by_text("Validation report").wait_for(timeout=60_000)  # type: ignore[attr-defined]
    wait_rendered(page)
    full_page_screenshot(page, "upload-done")
    page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').first.click()  # type: ignore[attr-defined]
    option = page.get_by_role("option", name="browser-upload")  # type: ignore[attr-defined]
    option.wait_for(timeout=10_000)
    assert option.count() == 1


def test_an_upload_adapts_the_model_with_progress_and_says_how_good_it_is(
    page: object, server: Server, tmp_path: Path
) -> None:
    from tests._data.app import histories_csv

    csv = tmp_path / "regulars-browser.csv"
    csv.write_bytes(histories_csv(n_users=5))
    open_app(page, server.url)
    go_to(page, "Upload")
    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(csv))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Load into the database").click(timeout=60_000)  # type: ignore[attr-defined]
    page.get_by_text("Adapt the model to this data").first.wait_for(timeout=120_000)  # type: ignore[attr-defined]
    minutes = page.get_by_role("spinbutton", name="Minutes")  # type: ignore[attr-defined]
    minutes.fill("1")
    minutes.press("Enter")
    wait_rendered(page)
    page.get_by_role("button", name="Adapt the model to this data").click(timeout=60_000)  # type: ignore[attr-defined]
    page.get_by_test_id("stProgress").first.wait_for(timeout=60_000)  # type: ignore[attr-defined]  # progress while it trains
    done = page.get_by_text(re.compile(r"is adapted to regulars-browser"))  # type: ignore[attr-defined]
    done.wait_for(timeout=300_000)
    wait_rendered(page)
    full_page_screenshot(page, "upload-adapted")
    assert "recent history" in done.inner_text()


def test_a_marketer_opening_a_user_link_lands_on_the_overview_without_a_dialog(
    browser: object, server: Server, tmp_path: Path
) -> None:
    db = Path(shutil.copy(server.db, tmp_path / "marketer.duckdb"))
    config = tmp_path / "marketer.toml"
    config.write_text('[privacy]\nk_min_users = 2\n\n[app]\nrole = "marketer"\nwarm_up = false\n', encoding="utf-8")
    with running_server(db, config, tmp_path / "streamlit.log") as url:
        context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
        try:
            tab = context.new_page()
            tab.goto(f"{url}/user?user=1:123")
            tab.wait_for_selector('h1:has-text("Overview")', timeout=RENDER_TIMEOUT_MS)
            wait_rendered(tab)
            assert tab.get_by_role("dialog").count() == 0  # not Streamlit's page-not-found box
            assert tab.locator('[data-testid="stSidebarNavLink"]', has_text="User").count() == 0
        finally:
            context.close()
