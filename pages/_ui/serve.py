"""Start the dashboard's server with the pages' imports already done: `python -m pages._ui.serve [streamlit options]`.

Why: `streamlit run app.py` imports nothing of the app until the first visitor's session runs the
script, so that visitor's first page waited for about a second of imports (pandas, pyarrow, DuckDB,
plotly and pydeck and the app's own modules: 1.2-1.4 s of the first page's script against 0.6 s
once they are loaded). Here they are imported before the server listens; Streamlit then runs app.py
in this same process, where they are already loaded. `make run` and the browser tests start the
server this way; `streamlit run app.py` still works, with a slower first page.

What else a first page paid once per process was found by sampling a fresh server's first page
(py-spy, 5.1M events): DuckDB and the store (imported on the first query, not by the UI package),
the accounts module (the login gate) and Streamlit's emoji catalogue (the favicon's check compiles
a regex of every emoji) were a third of that page's script; the named areas' file (the filter
bar's choices) and Streamlit's REPL check (below) another fifth. The change-point solver (ruptures
with scipy.stats) is otherwise the idle warm-up's first step: imported there, it held the GIL for
about a second just when the first visitor clicked on to the next page. All of it together adds
about 2 s to the server's start, before it listens.
"""

from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app.py"


def preload() -> None:
    """Do what the first pages' scripts would do once per process: import the UI package (the core,
    pandas, pyarrow), DuckDB and the store, the accounts, the charts (plotly), the map layers
    (pydeck), Streamlit's emoji catalogue and the change-point solver; read the named areas."""
    import pydeck  # noqa: F401
    import streamlit.emojis  # noqa: F401

    import interestgeo.accounts  # noqa: F401
    import interestgeo.charts  # noqa: F401
    import interestgeo.store  # noqa: F401
    import pages._ui  # noqa: F401
    from pages._ui.filters import AREAS_FILE, area_outlines, named_areas
    from pages._ui.warmup import import_change_points

    named_areas(str(AREAS_FILE))
    area_outlines(str(AREAS_FILE))
    import_change_points()
    _skip_repl_check()


def _skip_repl_check() -> None:
    """Streamlit's first element in a process asks whether it runs in a Python REPL (to print a
    warning) by reading the source of every frame of the stack: 0.1 s of the first visitor's first
    page. This process is the dashboard's server, never a REPL; the flag is Streamlit's own
    "already checked" (tests/test_app.py checks that it still exists)."""
    from streamlit import delta_generator

    delta_generator._use_warning_has_been_displayed = True


def main(argv: list[str]) -> int:
    preload()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *argv]
    return cli.main()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
