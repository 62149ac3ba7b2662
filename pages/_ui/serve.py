"""Start the dashboard's server with the pages' imports already done: `python -m pages._ui.serve [streamlit options]`.

Why: `streamlit run app.py` imports nothing of the app until the first visitor's session runs the
script, so that visitor's first page waited for about a second of imports (pandas, pyarrow, DuckDB,
plotly, pydeck and the app's own modules: 1.2-1.4 s of the first page's script against 0.6 s once
they are loaded). Here they are imported before the server listens; Streamlit then runs app.py in
this same process, where they are already loaded. `make run` and the browser tests start the
server this way; `streamlit run app.py` still works, with a slower first page.
"""

from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app.py"


def preload() -> None:
    """Import what the first page's script would import: the UI package (the core, pandas, pyarrow,
    DuckDB), the charts (plotly) and the map layers (pydeck)."""
    import pydeck  # noqa: F401

    import interestgeo.charts  # noqa: F401
    import pages._ui  # noqa: F401


def main(argv: list[str]) -> int:
    preload()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *argv]
    return cli.main()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
