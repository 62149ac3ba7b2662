"""Text for the page: markdown escaping, H3 cells as hex, day names, KPI changes.

Streamlit-free and import-light: `state` (also streamlit-free) and every page use it.
"""

from __future__ import annotations

import re

import pandas as pd

from interestgeo.cells import cells_to_str

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def md(text: object) -> str:
    """Text from data or users, escaped for Streamlit markdown (captions, alerts, headers).

    Without it a dataset called `![x](http://host/pixel)` would make every viewer's browser
    fetch that image, and `:red[...]` or `**...**` would restyle the page.
    """
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def with_hex(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with the int64 `cell` column as H3 hex strings (for CSV export and tables)."""
    if "cell" not in frame:
        return frame
    return frame.assign(cell=cells_to_str(frame["cell"]))


def kpi_delta(current: float, previous: float | None) -> str | None:
    """`+12.5%` style change for st.metric; None when there is nothing to compare with."""
    if previous is None or previous == 0:
        return None
    return f"{(current - previous) / previous:+.1%}"
