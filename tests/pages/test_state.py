"""The filter bar's selection and the URL codecs of a map region, without a running app.

pages/_ui/state.py and format.py import no streamlit, so what a link can carry (hostile input:
`cells`, `poly`) and what a selection means for the core are checked here as plain functions,
property-based where the input is anyone's.
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import h3
import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from interestgeo import analytics
from pages._ui.format import kpi_delta, md, with_hex
from pages._ui.state import (
    MAX_LINK_CELLS,
    MAX_POLYGON_CORNERS,
    FilterState,
    as_range,
    format_cells,
    format_polygon,
    parse_cells,
    parse_polygon,
    polygon_from_selection,
)

UI = Path(__file__).resolve().parents[2] / "pages" / "_ui"
CELL = "8a2a1072b59ffff"


def test_state_and_format_import_no_streamlit() -> None:
    for name in ("state.py", "format.py"):
        tree = ast.parse((UI / name).read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {m for m in imported if m.split(".")[0] == "streamlit"}, name
        assert {m for m in imported if m.startswith("pages")} <= {"pages._ui.format"}, name


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_cells_never_raises_and_keeps_only_valid_cells(text: str) -> None:
    cells = parse_cells(text)
    assert len(cells) <= MAX_LINK_CELLS
    assert all(h3.is_valid_cell(h3.int_to_str(c)) for c in cells)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str),
                          st.integers(min_value=0, max_value=2**64 - 1).map(lambda n: f"{n:x}"),
                          st.sampled_from([CELL, "0x8a", f" {CELL} ", "", "ＦＦ"])),
                max_size=8))
def test_parse_cells_reads_number_shaped_tokens(tokens: list[str]) -> None:
    cells = parse_cells(",".join(tokens))
    assert all(h3.is_valid_cell(h3.int_to_str(c)) for c in cells)
    if f" {CELL} " in tokens or CELL in tokens:
        assert h3.str_to_int(CELL) in cells


def test_parse_cells_round_trips_what_the_map_writes() -> None:
    cells = tuple(h3.str_to_int(c) for c in h3.grid_disk(CELL, 1))
    assert format_cells(cells) == ",".join(h3.int_to_str(c) for c in cells)
    assert parse_cells(format_cells(cells)) == cells
    assert parse_cells(f"{CELL},{CELL}") == (h3.str_to_int(CELL),)  # once each, in link order
    assert len(parse_cells(",".join([CELL] * 3 + ["zz"] * (MAX_LINK_CELLS + 5)))) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.,;-+eEinfa \u00a0", max_size=300))
def test_parse_polygon_never_raises_and_keeps_only_usable_polygons(text: str) -> None:
    corners = parse_polygon(text)
    assert corners == () or 3 <= len(corners) <= MAX_POLYGON_CORNERS
    assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in corners)


def test_a_lasso_becomes_a_short_polygon_that_round_trips_through_the_link() -> None:
    angles = np.linspace(0, 2 * np.pi, 500, endpoint=False)
    lasso = {"x": list(-73.98 + 0.02 * np.cos(angles)), "y": list(40.75 + 0.015 * np.sin(angles))}
    corners = polygon_from_selection({"points": [], "box": [], "lasso": [lasso]})
    assert 3 <= len(corners) <= MAX_POLYGON_CORNERS
    assert parse_polygon(format_polygon(corners)) == corners
    box = polygon_from_selection({"box": [{"x": [-74.0, -73.9], "y": [40.7, 40.8]}], "lasso": []})
    assert sorted(box) == [(-74.0, 40.7), (-74.0, 40.8), (-73.9, 40.7), (-73.9, 40.8)]
    assert polygon_from_selection({"points": [{"x": 1, "y": 2}], "box": [], "lasso": []}) == ()
    assert parse_polygon("1,2;3,4") == () and parse_polygon("200,1;1,1;2,2") == ()


def test_an_unfiltered_selection_asks_the_core_for_everything_in_its_period() -> None:
    state = FilterState(dataset_ids=(), dataset_names=(), start=dt.date(2012, 4, 1), end=dt.date(2012, 4, 30))
    assert state.to_filters() == analytics.Filters(datasets=None, date_from=dt.date(2012, 4, 1),
                                                   date_to=dt.date(2012, 4, 30), hours=None, days_of_week=None,
                                                   cells=None, geojson=None, topic=None)
    assert state.comparison is None and not state.has_region
    assert state.describe() == "all datasets · 01 Apr 2012 – 30 Apr 2012"
    assert state.describe_region() == "Everywhere"


def test_the_datas_whole_date_range_is_no_date_filter_and_anything_less_is_one() -> None:
    span = (dt.date(2012, 4, 1), dt.date(2012, 4, 30))
    whole = FilterState(dataset_ids=(1,), dataset_names=("a",), start=span[0], end=span[1], span=span)
    assert whole.to_filters() == analytics.Filters(datasets=(1,)) and whole.to_filters().only_datasets
    part = FilterState(dataset_ids=(1,), dataset_names=("a",), start=span[0], end=dt.date(2012, 4, 29), span=span)
    assert (part.to_filters().date_from, part.to_filters().date_to) == (span[0], dt.date(2012, 4, 29))
    assert not part.to_filters().only_datasets


def test_a_full_selection_becomes_the_cores_filters_and_one_caption() -> None:
    state = FilterState(dataset_ids=(2,), dataset_names=("tokyo*",), start=dt.date(2012, 4, 1),
                        end=dt.date(2012, 4, 10), compare="previous period", hours=(8, 10), days=(0, 4),
                        areas=("Midtown (Manhattan)",), cells=(h3.str_to_int(CELL),), geojson='{"x": 1}',
                        topic="Food", polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)), uploaded=True)
    filters = state.to_filters()
    assert filters.datasets == (2,) and filters.hours == (8, 9, 10) and filters.days_of_week == (0, 4)
    assert filters.cells == (h3.str_to_int(CELL),) and filters.geojson == '{"x": 1}' and filters.topic == "Food"
    assert state.comparison == (dt.date(2012, 3, 22), dt.date(2012, 3, 31))  # as long, just before
    before = state.to_filters(period=state.comparison, region=False)
    assert (before.date_from, before.date_to) == state.comparison and before.cells is None and before.geojson is None
    assert state.describe() == ("tokyo\\* · 01 Apr 2012 – 10 Apr 2012 · 08:00–10:59 · Mon Fri · "
                                "Midtown \\(Manhattan\\), 1 picked cells, drawn polygon, uploaded region · topic: Food")


def test_a_half_picked_date_range_is_one_day_and_an_empty_one_the_whole_span() -> None:
    lo, hi = dt.date(2012, 4, 1), dt.date(2012, 5, 1)
    assert as_range((dt.date(2012, 4, 9),), lo, hi) == (dt.date(2012, 4, 9), dt.date(2012, 4, 9))
    assert as_range((dt.date(2012, 4, 9), dt.date(2012, 4, 3)), lo, hi) == (dt.date(2012, 4, 3), dt.date(2012, 4, 9))
    assert as_range((), lo, hi) == (lo, hi) and as_range(None, lo, hi) == (lo, hi)


def test_text_from_data_cannot_restyle_the_page() -> None:
    assert md("![x](http://host/pixel)") == r"\!\[x\]\(http\://host/pixel\)"
    assert md(":red[**big**]") == "\\:red\\[\\*\\*big\\*\\*\\]"
    assert kpi_delta(110, 100) == "+10.0%" and kpi_delta(1, 0) is None and kpi_delta(1, None) is None
    frame = pd.DataFrame({"cell": [h3.str_to_int(CELL)], "n": [3]})
    assert with_hex(frame)["cell"].tolist() == [CELL] and frame["cell"].dtype == np.int64
    assert with_hex(pd.DataFrame({"n": [1]})).columns.tolist() == ["n"]
