"""Model: which interest model is in use, how it scores against the baselines, how to train it.

Widgets -> the checkpoint registry in the store -> a table. Training is a CLI command (it takes
minutes on CPU); the page says which.
"""

from __future__ import annotations

import streamlit as st

from pages._common import app_config, require_database, run_guarded


def page() -> None:
    config = app_config()
    st.title("Model")
    require_database(config)
    st.info(
        "No trained model is registered in this database yet. Train one with "
        "`interestgeo train` (CPU, a few minutes on the demo data), then reload this page."
    )


run_guarded(page)
