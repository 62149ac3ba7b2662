"""interestgeo's dashboard: `streamlit run app.py`.

The entry point only lays out the frame every page shares: the page list (explicit, with
`st.navigation`, so the order and titles are ours rather than file names), the global filter bar
in the sidebar (bound to the URL so a view can be shared as a link) and the data citation. Each
page then reads the filters and makes one core call.
"""

from __future__ import annotations

import streamlit as st

from interestgeo.access import declare_viewer
from pages._ui import (
    app_config,
    md,
    filter_bar,
    page_running,
    login_gate,
    logout,
    resume_deep_link,
    role,
    run_guarded,
    warm_up,
)

# An emoji favicon is inline SVG. Without page_icon, Streamlit uses the page's Material icon as the
# favicon and fetches it from fonts.gstatic.com, which fails offline (a console error).
st.set_page_config(page_title="interestgeo", page_icon="🧭", layout="wide")

config = app_config()
# with accounts, nothing below runs until someone has logged in (the login form is all there is)
account = login_gate(config)
viewer = role(config)
# Every analyst-only core call in this run checks it (interestgeo/access.py).
declare_viewer(viewer)

overview = st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True)


def _no_person_pages() -> None:
    """A marketer's /user address (an analyst's shared link): the Overview, not Streamlit's
    page-not-found dialog; nothing of the person is read."""
    st.switch_page(overview)


pages = [
    overview,
    st.Page("pages/map.py", title="Map", icon=":material/map:"),
    st.Page("pages/drift.py", title="Drift", icon=":material/timeline:"),
    # not in a marketer's page list at all: no link, no /user address (the page refuses them too)
    st.Page("pages/user.py", title="User", icon=":material/person:") if viewer == "analyst" else
    st.Page(_no_person_pages, title="User", url_path="user", visibility="hidden"),
    st.Page("pages/upload.py", title="Upload", icon=":material/upload_file:"),
    st.Page("pages/model.py", title="Model", icon=":material/model_training:"),
]
navigation = st.navigation(pages)
resume_deep_link()


def _frame() -> None:
    st.session_state["_filters"] = filter_bar(config)
    with st.sidebar:
        who = (f"Account **{md(account)}**, role **{viewer}**" if account is not None else
               f"Role: **{viewer}** (local single-user mode: no accounts; `interestgeo users add` creates one)")
        st.caption(
            f"{who} · data: `{config.store.path}`  \n"
            "Demo data: Foursquare NYC check-ins (TSMC2014; Yang et al., IEEE Trans. SMC: Systems 45(1), 2015)."
        )
        if account is not None and st.button("Log out", key="logout", icon=":material/logout:"):
            logout(config)
            st.rerun()


try:
    with page_running():  # the warm-up waits while any page runs
        run_guarded(_frame)
        navigation.run()
finally:
    # After the page, not before, and its steps only while no page runs (pages/_ui/warmup.py).
    if st.session_state.get("_filters") is not None:
        warm_up(config, analyst=viewer == "analyst")
