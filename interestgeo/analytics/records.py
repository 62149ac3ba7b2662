"""JSON-ready rows (`to_records`): H3 cells as hex, timestamps as ISO text.

Why apart: the CLI's JSON and explain's payload share it; it needs nothing of the analytics.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from interestgeo.cells import cells_to_str

__all__ = [
    "to_records",
]


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: H3 cells as hex strings, timestamps as ISO text, numpy scalars as Python."""
    out = frame.copy()
    if "cell" in out:
        out["cell"] = cells_to_str(out["cell"])
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].map(lambda t: None if pd.isna(t) else t.isoformat())
    return json.loads(out.to_json(orient="records", date_format="iso"))
