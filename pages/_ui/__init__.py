"""Streamlit plumbing shared by every page: store access, cached core calls, the filter bar, the page frame.

Why this package exists: the core (`interestgeo/`) never imports streamlit, so caching, session
state and widgets live here, in the UI layer, and the pages stay thin (widgets -> one core call
-> a chart). A subfolder of pages/, so Streamlit's page scan does not list it.

    format    md, with_hex, DAY_NAMES, kpi_delta (no streamlit)
    state     FilterState (-> analytics.Filters, describe) and the URL codecs of a map region (no streamlit)
    session   the config, db_path, store_for, the TRAINING lock, require_database, the viewer's role
    encoder   the lazily loaded text encoder
    cached    every cached core call, keyed by `config_key` (config + data version)
    warmup    the background warm-up, and release_store
    filters   the sidebar's filter bar (URL-bound), picked cells, a drawn polygon, named areas
    login     accounts: the login gate, logout, the audit of person views
    widgets   start_page, run_page, guarded_fragment, csv_download, deep links
    forecast  the cached forecasts (imported by the pages that draw them)
    serve     `python -m pages._ui.serve`: the server started with the pages' imports done (make run)

Pages write `from pages import _ui as ui` and call `ui.X`: the names below are the pages' view of
the package (one import line a page, call sites as they were).
"""

from pages._ui.cached import (
    calibrations,
    cell_aggregates,
    checkpoints,
    config_key,
    datasets,
    explain_user,
    interest_model,
    interest_profile,
    is_large,
    is_scored,
    list_users,
    next_interests,
    query_interest,
    region_drift,
    region_map,
    require_scored,
    score_runs,
    scored_events,
    time_filtered_cell_counts,
    topic_colors,
    topic_labels,
    user_profile,
    venues,
    window_counts,
)
from pages._ui.encoder import text_encoder
from pages._ui.filters import (
    AREAS_FILE,
    area_outlines,
    areas_geojson,
    current_filters,
    drawn_polygon,
    filter_bar,
    named_areas,
    picked_cells,
    set_drawn_polygon,
    set_picked_cells,
    whole_period,
)
from pages._ui.format import DAY_NAMES, kpi_delta, md, with_hex
from pages._ui.login import audit_person_view, login_gate, logout
from pages._ui.session import (
    ACCOUNT_KEY,
    SCORE_HINT,
    TRAINING,
    TRAINING_NOTE,
    app_config,
    db_path,
    log,
    require_analyst,
    require_database,
    role,
    store_for,
)
from pages._ui.state import FilterState, polygon_from_selection
from pages._ui.warmup import page_running, release_store, warm_up
from pages._ui.widgets import csv_download, guarded_fragment, resume_deep_link, run_guarded, run_page, start_page

__all__ = [
    "ACCOUNT_KEY", "AREAS_FILE", "DAY_NAMES", "SCORE_HINT", "TRAINING", "TRAINING_NOTE", "FilterState",
    "app_config", "area_outlines", "areas_geojson", "audit_person_view", "calibrations", "cell_aggregates",
    "checkpoints", "config_key", "csv_download", "current_filters", "datasets", "db_path", "drawn_polygon",
    "explain_user", "filter_bar", "guarded_fragment", "interest_model", "interest_profile", "is_large", "is_scored",
    "kpi_delta", "list_users", "log", "login_gate", "logout", "md", "named_areas", "next_interests",
    "page_running", "picked_cells", "polygon_from_selection", "query_interest", "region_drift", "region_map",
    "release_store", "require_analyst", "require_database", "require_scored", "resume_deep_link", "role", "run_guarded",
    "run_page", "score_runs", "scored_events", "set_drawn_polygon", "set_picked_cells", "start_page",
    "store_for", "text_encoder", "time_filtered_cell_counts", "topic_colors", "topic_labels", "user_profile",
    "venues", "warm_up", "whole_period", "window_counts", "with_hex",
]
