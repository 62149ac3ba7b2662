"""interestgeo: how people's interests move through space and time.

The core package. Data flows one way: read CSV -> validate -> store (DuckDB, H3 cells, time windows)
-> embed texts -> train / score the interest model -> store -> analytics. The dashboard (app.py,
pages/) only reads what the core wrote; nothing in this package imports streamlit.
"""

from __future__ import annotations

from interestgeo.config import Config, load_config

__all__ = ["Config", "load_config"]
__version__ = "0.1.0"
