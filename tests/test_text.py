"""The text encoder against a direct transformers call, its store cache, and the unknown-token warning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from interestgeo.config import TextConfig
from interestgeo.store import Store
from interestgeo.text import TextEncoder, embed_texts, text_model_id, unreadable_warning

TEXTS = ["Pearl Art & Craft Supply, Arts & Crafts Store", "Coffee Shop", "Verrazano-Narrows Bridge, Bridge"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(TextConfig(batch_size=2))


def test_encode_equals_direct_transformers_mean_pooling(encoder: TextEncoder) -> None:
    tok = AutoTokenizer.from_pretrained(str(encoder.path), local_files_only=True)
    model = AutoModel.from_pretrained(str(encoder.path), local_files_only=True).eval()
    with torch.no_grad():
        for text, got in zip(TEXTS, encoder.encode(TEXTS)):
            batch = tok([text], return_tensors="pt")
            hidden = model(**batch).last_hidden_state[0]  # (L, D): no padding, so a plain mean
            want = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
            np.testing.assert_allclose(got, want, atol=1e-5)
    assert encoder.dim == 384
    assert np.allclose(np.linalg.norm(encoder.encode(TEXTS), axis=1), 1.0, atol=1e-5)


def test_batching_and_order_do_not_change_vectors(encoder: TextEncoder) -> None:
    one_by_one = np.stack([encoder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(encoder.encode(TEXTS), one_by_one, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


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
        np.testing.assert_array_equal(second[:3], first[:3][::-1])
        assert store.embedding_count(encoder.model_id) == len(TEXTS) + 1


def test_unknown_token_warning_names_unreadable_text(encoder: TextEncoder, tmp_path: Path) -> None:
    texts = ["星巴克咖啡", "Coffee Shop"]
    shares = encoder.unknown_share(texts)
    assert shares[0] > 0.5 and shares[1] == 0.0
    message = unreadable_warning(encoder, texts)
    assert message is not None and "1 of 2" in message and "星巴克" in message
    assert unreadable_warning(encoder, ["Coffee Shop"]) is None
    warnings: list[str] = []
    with Store.open(tmp_path / "t.duckdb") as store:
        embed_texts(store, encoder, texts, warn=warnings.append)
    assert len(warnings) == 1 and "unknown" in warnings[0]


def test_missing_model_folder_is_one_clear_error(tmp_path: Path) -> None:
    from interestgeo.text import TextModelError

    with pytest.raises(TextModelError, match="not found"):
        TextEncoder(TextConfig(model_path=tmp_path / "nope"))


def test_model_id_is_known_without_loading_the_model(encoder: TextEncoder, tmp_path: Path) -> None:
    # Pages read cached embeddings by this id before (or without) loading the language model.
    assert text_model_id(encoder.config) == encoder.model_id == "all-MiniLM-L6-v2"
    assert text_model_id(dataclasses.replace(encoder.config, model_path=tmp_path / "my-model")) == "my-model"
