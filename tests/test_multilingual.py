"""Languages end to end on a small mixed-language fixture, with the default (multilingual) encoder.

tests/fixtures/mixed_language.csv: synthetic check-ins at four places in Shanghai (one H3 res-8 cell each), 12 regulars each
(plus a few visits elsewhere). The coffee place's texts are English, the hot-pot restaurant's and the
subway station's Chinese, the library's Japanese; no categories, so topics come from clusters.
Scored with the shipped pretrained model (trained on the English demo only).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import h3
import pytest

from interestgeo.analytics import Filters, embed_phrase, load_scored, query_interest
from interestgeo.cells import cells_to_str
from interestgeo.cli import main
from interestgeo.config import Config
from interestgeo.ingest import ingest_file
from interestgeo.model import register_checkpoint, shipped_model_dir
from interestgeo.store import Store
from interestgeo.text import PACKAGED_MODEL_NAME, encoder_for, text_model_id
from interestgeo.vectors import load_source, score_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mixed_language.csv"
CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
# each place's events lie within ~35 m of its res-8 cell's centre
PLACES = {"coffee": (31.23368, 121.47264), "hotpot": (31.23973, 121.48677), "subway": (31.22149, 121.46173),
          "library": (31.20908, 121.48553)}


def cell(place: str) -> str:
    return h3.latlng_to_cell(*PLACES[place], 8)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Config:
    config = Config().with_db(tmp_path_factory.mktemp("mixed") / "mixed.duckdb")
    with Store.open(config.store.path, config=config) as store:
        ingest_file(store, FIXTURE, config=config, dataset="shanghai")
        register_checkpoint(store, shipped_model_dir(text_model_id(config.text)))
        score_store(store, config, encoder=encoder_for(config.text))
    return config


def top_cell(config: Config, phrase: str) -> str:
    with Store.open(config.store.path, config=config) as store:
        phrase_vector = embed_phrase(encoder_for(config.text), phrase, store)
        result = query_interest(load_scored(store, config), phrase, phrase_vector, Filters(), 8)
    return cells_to_str(result.cells["cell"].head(1))[0]


@pytest.mark.parametrize(
    ("phrase", "place"),
    [("咖啡", "coffee"),  # Chinese phrase -> the place whose texts are English
     ("hot pot restaurant", "hotpot"),  # English phrase -> Chinese texts
     ("地铁", "subway"),  # Chinese -> Chinese
     ("library", "library")],  # English -> Japanese texts
)
def test_a_phrase_finds_the_places_written_in_another_language(mixed: Config, phrase: str, place: str) -> None:
    assert top_cell(mixed, phrase) == cell(place)


def test_cli_query_takes_a_chinese_phrase(mixed: Config, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "咖啡店", "--db", str(mixed.store.path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["phrase"] == "咖啡店" and payload["cells"][0]["cell"] == cell("coffee")


def test_topics_without_categories_are_named_in_the_datas_own_language(mixed: Config) -> None:
    with Store.open(mixed.store.path, read_only=True, config=mixed) as store:
        labels = store.analytics_topics().labels
    assert any(CJK.search(label) for label in labels), labels  # the Chinese and Japanese places' own texts
    assert any("Coffee" in label for label in labels), labels


def test_a_checkpoint_for_the_other_encoder_is_refused_by_name(mixed: Config, tmp_path: Path) -> None:
    config = mixed.with_db(tmp_path / "other.duckdb")
    with Store.open(config.store.path, config=config) as store:
        ingest_file(store, FIXTURE, config=config, dataset="shanghai")
        register_checkpoint(store, shipped_model_dir(PACKAGED_MODEL_NAME))  # reads MiniLM's 384-d vectors
        with pytest.raises(LookupError, match=f"'{PACKAGED_MODEL_NAME}'.*{text_model_id(config.text)}"):
            load_source(store, config, encoder=encoder_for(config.text))


def test_the_maps_phrase_box_takes_chinese(mixed: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests._data.app import assert_clean, deck_specs, open_with_params

    config_file = tmp_path / "interestgeo.toml"
    config_file.write_text('[app]\nrole = "analyst"\nwarm_up = false\n', encoding="utf-8")
    monkeypatch.setenv("INTERESTGEO_DB", str(mixed.store.path))
    monkeypatch.setenv("INTERESTGEO_CONFIG", str(config_file))
    at = open_with_params("pages/map.py", {"map_mode": "Free-text query", "q": "火锅", "map_res": "8"})
    assert_clean(at)
    top = at.dataframe[0].value
    assert top.iloc[0]["cell"] == cell("hotpot")  # the Chinese phrase's best cell, as the core ranks it
    tooltips = [d["tooltip"] for d in deck_specs(at)[0]["layers"][0]["data"]]
    assert all(t.startswith("“火锅” score") for t in tooltips)  # the phrase as plain text, not boxes or escapes


def test_score_warns_about_text_its_encoder_cannot_read_and_names_the_one_that_can(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "minilm.toml"
    toml.write_text(f'[text]\nencoder = "{PACKAGED_MODEL_NAME}"\n', encoding="utf-8")
    db = tmp_path / "minilm.duckdb"
    for encoder_id in (PACKAGED_MODEL_NAME, text_model_id(Config().text)):
        config = Config().with_db(db.with_stem(encoder_id))
        args = ["--db", str(config.store.path)] + (["--config", str(toml)] if encoder_id == PACKAGED_MODEL_NAME else [])
        with Store.open(config.store.path, config=config) as store:
            ingest_file(store, FIXTURE, config=config, dataset="shanghai")
            register_checkpoint(store, shipped_model_dir(encoder_id))
        assert main(["score", *args, "--json"]) == 0
        warnings = json.loads(capsys.readouterr().out)["warnings"]
        if encoder_id == PACKAGED_MODEL_NAME:  # English-only: the five Chinese texts are unreadable to it
            (warning,) = warnings
            assert "5 of 10 texts are mostly unknown to the text model all-MiniLM-L6-v2" in warning
            assert f'text.encoder = "{text_model_id(Config().text)}"' in warning
        else:
            assert warnings == []


def test_a_query_in_another_encoders_space_says_how_to_re_embed(mixed: Config) -> None:
    minilm = encoder_for(dataclasses.replace(mixed.text, encoder=PACKAGED_MODEL_NAME))
    with Store.open(mixed.store.path, read_only=True, config=mixed) as store:
        scored = load_scored(store, mixed)
    with pytest.raises(ValueError, match=r"\(512-d\) come from another text encoder .*\(384-d\).*interestgeo score"):
        query_interest(scored, "coffee", embed_phrase(minilm, "coffee"), Filters(), 8)
