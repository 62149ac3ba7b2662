"""Marketers never reach a person: the analyst-only core functions refuse a marketer viewer, the
CLI's per-person commands refuse a marketer config, and in the dashboard the User page is not in a
marketer's page list, a /user link leads nowhere, and the Overview hides counts under k.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from interestgeo import access, analytics
from interestgeo.config import load_config
from interestgeo.store import Store
from tests._data.app import APP, TIMEOUT, assert_clean
from tests._data.privacy import recency_database, use_database

# What must be guarded: every function that returns user ids or one person's data. Not here:
# analytics.aggregate_user_windows, the scorer's writer of the user x window vectors, which runs
# after a marketer's upload too; its rows reach a viewer only as counts of people (analytics/stored.py).
PER_PERSON = {
    "interestgeo.analytics.list_users", "interestgeo.analytics.interested_users",
    "interestgeo.analytics.user_event_positions", "interestgeo.analytics.user_profile",
    "interestgeo.analytics.user_drift", "interestgeo.analytics.next_interests",
    "interestgeo.analytics.explain.explain_user", "interestgeo.analytics.explain.explain_scored_user",
    "interestgeo.analytics.explain.explain_stored_user", "interestgeo.export.export_vectors",
}


@pytest.fixture
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recency_database(tmp_path_factory)


def scored(db: Path) -> analytics.ScoredEvents:
    config = load_config(db.parent / "interestgeo.toml").with_db(db)
    with Store.open(db, read_only=True, config=config) as store:
        return analytics.load_scored(store, config)


def test_every_per_person_function_is_guarded() -> None:
    for name in PER_PERSON:
        module, _, function = name.rpartition(".")
        assert getattr(importlib.import_module(module), function).analyst_only
    assert {name.rpartition(".")[2] for name in PER_PERSON} <= access.ANALYST_ONLY


@pytest.mark.parametrize("name", sorted(PER_PERSON))
def test_a_marketer_viewer_is_refused_before_the_function_runs(name: str) -> None:
    module, _, function = name.rpartition(".")
    fn = getattr(importlib.import_module(module), function)
    with access.viewer("marketer"), pytest.raises(access.AccessDenied, match="analysts only"):
        fn(None, None, None, None)  # refused before any argument is looked at


def test_an_analyst_viewer_gets_the_data(database: Path) -> None:
    events = scored(database)
    with access.viewer("analyst"):
        users = analytics.list_users(events)
        dataset_id, user_id = int(users["dataset_id"].iloc[0]), str(users["user_id"].iloc[0])
        assert not analytics.user_profile(events, dataset_id, user_id).events.empty
    with access.viewer("marketer"), pytest.raises(access.AccessDenied):
        analytics.user_profile(events, dataset_id, user_id)
    assert access.current_viewer() is None  # the block ended: back to the undeclared caller


def test_an_unknown_role_cannot_be_declared() -> None:
    with pytest.raises(ValueError, match="unknown role"), access.viewer("admin"):
        pass


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interestgeo.cli", *args], capture_output=True, text=True, timeout=120)


def test_the_cli_refuses_per_person_commands_under_a_marketer_config(database: Path, tmp_path: Path) -> None:
    config = tmp_path / "marketer.toml"
    config.write_text('[privacy]\nk_min_users = 2\n\n[app]\nrole = "marketer"\n', encoding="utf-8")
    user = str(scored(database).events["user_id"].iloc[0])
    out = tmp_path / "vectors.parquet"
    for args in (["drift", "--user", user], ["explain", user],
                 ["export", "vectors", "--dataset", "nyc-sample", "--out", str(out)]):
        done = cli(*args, "--db", str(database), "--config", str(config))
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "analysts only" in done.stderr and user not in done.stdout
    assert not out.exists()


# --- the dashboard ---------------------------------------------------------------------------


@pytest.fixture
def marketer_env(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_database(recency_database(tmp_path_factory), tmp_path, monkeypatch, role="marketer")
    return tmp_path / "interestgeo.toml"


def test_a_marketer_has_no_user_page_and_a_user_link_shows_no_person(marketer_env: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert_clean(at)
    with pytest.raises(Exception, match="(?i)could not find a navigation page"):
        at.switch_page("pages/user.py").run()
    deep = AppTest.from_file(str(Path(APP).parent / "pages" / "user.py"), default_timeout=TIMEOUT).run()
    assert not deep.dataframe and "user_pick" not in [s.key for s in deep.selectbox]


def test_the_per_person_calls_refuse_a_marketer_session_even_when_cached(marketer_env: Path) -> None:
    """The role comes from the secrets here, so both sessions share one config and one cache key:
    the analyst's run fills the cache, and the marketer's is still refused."""
    script = (
        "import streamlit as st\n"
        "from pages import _ui as ui\n"
        "config = ui.app_config()\n"
        "try:\n"
        "    st.write(f'{len(ui.list_users(ui.db_path(config), ui.config_key(config), None))} people')\n"
        "except Exception as exc:\n"
        "    st.write(type(exc).__name__)\n"
    )
    results = []
    for role in ("analyst", "marketer"):
        at = AppTest.from_string(script, default_timeout=TIMEOUT)
        at.secrets["role"] = role
        results.append([m.value for m in at.run().markdown])
    assert results[0][0].endswith(" people") and results[0][0] != "0 people"
    assert results[1] == ["AccessDenied"]


def test_overview_hides_counts_of_fewer_than_k_people(marketer_env: Path) -> None:
    marketer_env.write_text('[privacy]\nk_min_users = 100000\n\n[app]\nrole = "marketer"\nwarm_up = false\n',
                            encoding="utf-8")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["People"] == "fewer than 100000" and metrics["Events"] == "hidden"
    assert metrics["Events per person"] == "–"


def test_a_marketer_sees_why_rows_were_rejected_but_not_the_lines(marketer_env: Path, tmp_path: Path) -> None:
    from tests._data.app import write_sample_csv

    csv = write_sample_csv(tmp_path / "extra.csv", rows=40, skip=600)
    data = csv.read_bytes() + b"secret-user,v1,Cafe X,Cafe,Food > Cafe,91.5,-73.9,2012-04-03T18:00:09Z,-240\n"
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/upload.py").run()
    at.file_uploader(key="upload_file").set_value(("extra.csv", data, "text/csv")).run()
    at.button(key="upload_go").click().run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Rows rejected"] == "1"
    shown = " ".join(df.value.to_csv() for df in at.dataframe)
    assert "secret-user" not in shown and not any("rejected" in d.label for d in at.download_button)
