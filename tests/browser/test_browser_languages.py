"""Chinese and Japanese text in a real browser: glyphs, not boxes, in the charts and tables.

The store is the mixed-language fixture (tests/fixtures/mixed_language.csv: English, Chinese and
Japanese place names), loaded and scored with the default encoder's shipped model; its topics are
named by the data's own texts, so the Overview's topic chart carries CJK labels. Whether the page
renders those as glyphs depends on the fonts installed (`make test` installs fonts-noto-cjk): a font
without them draws every CJK character as the same "missing glyph" box.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from interestgeo.config import load_config
from interestgeo.ingest import ingest_file
from interestgeo.model import register_checkpoint, shipped_model_dir
from interestgeo.store import Store
from interestgeo.text import encoder_for, text_model_id
from interestgeo.vectors import score_store
from tests.browser.browser_helpers import VIEWPORT, built_server, full_page_screenshot, go_to, inked_pixels, open_app

pytestmark = pytest.mark.browser
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mixed_language.csv"
CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")

# Draws each character alone on a canvas in `font` and returns its alpha channel: two different CJK
# characters drawn alike (or drawn like a private-use code point, which no font has) are boxes.
_GLYPHS_JS = """
([font, chars]) => {
    const c = document.createElement('canvas');
    c.width = 48; c.height = 48;
    const g = c.getContext('2d');
    return chars.map((ch) => {
        g.clearRect(0, 0, 48, 48);
        g.font = font; g.fillStyle = '#000'; g.textBaseline = 'top';
        g.fillText(ch, 4, 4);
        return Array.from(g.getImageData(0, 0, 48, 48).data.filter((_, i) => i % 4 === 3)).join(',');
    });
}
"""

@pytest.fixture(scope="module")
def mixed_server(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    def build(db: Path, config_file: Path) -> None:
        config = load_config(config_file).with_db(db)
        with Store.open(db, config=config) as store:
            ingest_file(store, FIXTURE, config=config, dataset="shanghai")
            register_checkpoint(store, shipped_model_dir(text_model_id(config.text)))
            score_store(store, config, encoder=encoder_for(config.text))

    config_text = '[privacy]\nk_min_users = 2\n\n[app]\nrole = "analyst"\nwarm_up = false\n'
    with built_server(tmp_path_factory.mktemp("mixed-browser"), config_text, build) as url:
        yield url


def test_cjk_topic_names_render_as_glyphs(page: object, mixed_server: str) -> None:
    open_app(page, mixed_server)
    go_to(page, "Overview")
    labels = page.locator("svg text").filter(has_text=CJK)  # type: ignore[attr-defined]
    assert labels.count() > 0, "no CJK text in the Overview's charts"
    label = labels.first
    text = label.text_content() or ""
    font = label.evaluate("(el) => getComputedStyle(el).fontFamily")
    chars = [ch for ch in dict.fromkeys(text) if CJK.match(ch)][:2]
    assert len(chars) == 2, text
    first, second, missing = page.evaluate(_GLYPHS_JS, [f"32px {font}", [*chars, "\U000f0000"]])  # type: ignore[attr-defined]
    assert first != second, f"{chars} draw alike in {font}: missing-glyph boxes, not characters"
    assert first != missing and second != missing, f"{chars} draw as the missing glyph in {font}"
    shot = label.screenshot()
    ink = inked_pixels(page, shot)
    assert ink > 10 * len(text), f"the label {text!r} is blank on screen ({ink} inked pixels)"
    page.set_viewport_size(VIEWPORT)  # type: ignore[attr-defined]
    full_page_screenshot(page, "overview-cjk")
