"""Export the interest vectors: one dataset's scored events with their vectors, as a Parquet file.

Why a file: the interest vectors are the product's output, and analysts take them elsewhere
(kepler.gl, lonboard, pandas). With each event's own text embedding beside its interest vector,
anyone can also check the product's quality figure outside it (the next event's text ranked by a
dot product with the interest vector, README "Interest analytics").

One row per scored event, in event-id order (the order of the loaded file):

    dataset      string                 the dataset's name
    user_id      string
    ts           timestamp[us, UTC]
    lat, lon     float64
    text         string
    vector       list<float32>, length D    the stored interest vector (`interestgeo score`; the store
                                            keeps int8 codes and a scale, store/compact.py: this is
                                            their float32 value, as every reader of the store gets it)
    text_vector  list<float32>              the text's embedding by the configured text model

The text vectors come from the store's embedding cache (keyed by model id and text hash, as
`text.embed_texts` writes it); only texts the cache lacks load the model, through `embed_texts`,
which caches them when the store is writable. The file's metadata (key `interestgeo`) names the
text model and the vectors' source (the latest score run).

Memory stays bounded: the events are read and written in parts of `PART_EVENTS`
(`Store.scored_event_parts` / `scored_event_rows`), one Parquet row group each, so a dataset's
vectors are never all in memory (for the NYC demo: 113k events x 2 x 384 floats, ~350 MB). A file
is written beside its target and renamed into place at the end, so a failed or interrupted export
leaves no half file, and it is readable by its owner only: user ids make it personal data (the
dashboard offers it to analysts only).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from interestgeo.access import analyst_only
from interestgeo.config import Config
from interestgeo.text import embed_texts, text_hashes, text_model_id

if TYPE_CHECKING:
    from interestgeo.store import Store
    from interestgeo.text import TextEncoder

__all__ = ["ExportError", "VectorExport", "VECTOR_SCHEMA", "PART_EVENTS", "export_vectors", "vectors_parquet"]

# Events per part (one Parquet row group): about 30 MB of vectors and text vectors at D = 384.
PART_EVENTS = 10_000

VECTOR_SCHEMA = pa.schema([
    ("dataset", pa.string()),
    ("user_id", pa.string()),
    ("ts", pa.timestamp("us", tz="UTC")),
    ("lat", pa.float64()),
    ("lon", pa.float64()),
    ("text", pa.string()),
    ("vector", pa.list_(pa.float32())),
    ("text_vector", pa.list_(pa.float32())),
])
# Dictionary encoding only where values repeat (names, users, venue texts); floats do not.
_DICTIONARY_COLUMNS = ["dataset", "user_id", "text"]


class ExportError(Exception):
    """The export cannot be made (unknown or unscored dataset, unwritable path): one line for users."""


@dataclass(frozen=True)
class VectorExport:
    """What `export_vectors` wrote."""

    dataset: str
    path: Path
    rows: int  # events written: the dataset's scored events
    unscored: int  # events of the dataset without an interest vector (not in the file)
    dim: int  # D, the length of every `vector`
    bytes: int
    seconds: float
    text_model: str
    vector_source: str | None  # the latest score run's source, e.g. "model#1+history0.25"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


@analyst_only  # the file holds user ids: a marketer config ([app] role) is refused
def export_vectors(
    store: Store, config: Config, dataset: str, out: Path | str, *, encoder: TextEncoder | None = None
) -> VectorExport:
    """Write the scored events of `dataset` with their vectors to the Parquet file `out`.

    `encoder` (default: the configured model, loaded only if a text is missing from the cache)
    embeds texts the cache lacks. Raises ExportError for an unknown or unscored dataset or a
    path that cannot be written; an existing file at `out` is replaced only by a complete one.
    """
    started = time.perf_counter()
    dataset_id = store.dataset_id(dataset)
    if dataset_id is None:
        known = ", ".join(repr(name) for name in store.datasets()["name"]) or "none"
        raise ExportError(f"unknown dataset {dataset!r} (datasets: {known})")
    parts = _parts(store, [dataset_id], None)
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out} is a folder: give a file name, e.g. {out / (dataset + '.parquet')}")
    if not out.parent.is_dir():
        raise ExportError(f"cannot write {out}: no folder {out.parent}")
    try:
        handle = tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".part", delete=False)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    handle.close()
    partial = Path(handle.name)
    try:
        rows, dim, meta = _write(store, config, parts, str(partial), None, encoder)
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    stored = store.datasets().set_index("dataset_id")["rows_stored"]
    return VectorExport(
        dataset=dataset, path=out, rows=rows, unscored=max(int(stored.get(dataset_id, rows)) - rows, 0), dim=dim,
        bytes=out.stat().st_size, seconds=time.perf_counter() - started, text_model=meta["text_model"],
        vector_source=meta["vector_source"],
    )


def vectors_parquet(
    store: Store,
    config: Config,
    dataset_ids: Sequence[int],
    *,
    user_id: str | None = None,
    encoder: TextEncoder | None = None,
) -> bytes:
    """The export's Parquet file in memory, for a download: the scored events of these datasets
    (datasets with none add no rows), or of one user of them. Raises ExportError when none is scored."""
    sink = pa.BufferOutputStream()
    _write(store, config, _parts(store, dataset_ids, user_id), sink, user_id, encoder)
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------------------- writing

_Parts = list[tuple[int, str, list[tuple[int, int, int]]]]  # (dataset id, name, scored_event_parts)


def _parts(store: Store, dataset_ids: Sequence[int], user_id: str | None) -> _Parts:
    """What to read, part by part; ExportError when nothing of it is scored (checked before any file is opened)."""
    datasets = store.datasets()
    names = dict(zip(datasets["dataset_id"].astype(int), datasets["name"], strict=True))
    plan = [(int(d), str(names.get(int(d), d)), store.scored_event_parts(int(d), PART_EVENTS, user_id))
            for d in dataset_ids]
    if not any(parts for _, _, parts in plan):
        what = ", ".join(repr(name) for _, name, _ in plan) or "no dataset"
        whose = "" if user_id is None else f" for user {user_id!r}"
        raise ExportError(f"no interest vectors in {what}{whose} yet: run `interestgeo score` first")
    return plan


def _write(
    store: Store, config: Config, plan: _Parts, sink: Any, user_id: str | None, encoder: TextEncoder | None
) -> tuple[int, int, dict[str, Any]]:
    """Write every part of `plan` to `sink` (a path or an Arrow output stream), one row group
    each; returns (rows, D, the file's interestgeo metadata)."""
    texts = _TextVectors(store, config, encoder)
    meta = {"text_model": texts.model_id, "vector_source": store.latest_score_source()}
    schema = VECTOR_SCHEMA.with_metadata({"interestgeo": json.dumps(meta)})
    rows, dim = 0, None
    with pq.ParquetWriter(sink, schema, compression="zstd", use_dictionary=_DICTIONARY_COLUMNS) as writer:
        for dataset_id, name, parts in plan:
            for first, last, _ in parts:
                part = store.scored_event_rows(dataset_id, first, last, user_id)
                dim = _check_dim(part.column("vector"), dim)
                writer.write_table(_export_table(name, part, texts(part.column("text").to_pylist()), schema))
                rows += part.num_rows
    return rows, int(dim or 0), meta


def _export_table(name: str, part: pa.Table, text_vectors: np.ndarray, schema: pa.Schema) -> pa.Table:
    """One part in VECTOR_SCHEMA: the store's columns cast to the file's types, the text vectors added."""
    n, d = text_vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.table({
        "dataset": pa.array([name] * n, pa.string()),
        "user_id": part.column("user_id"),
        "ts": part.column("ts"),
        "lat": part.column("lat"),
        "lon": part.column("lon"),
        "text": part.column("text"),
        "vector": part.column("vector"),
        "text_vector": pa.ListArray.from_arrays(offsets, pa.array(text_vectors.reshape(-1))),
    }).cast(schema)


def _check_dim(vectors: pa.ChunkedArray, dim: int | None) -> int | None:
    """D of these stored vectors, which must all have the length of the earlier parts' (`dim`)."""
    if len(vectors) == 0:
        return dim
    lengths = pc.min_max(pc.list_value_length(vectors))
    low, high = lengths["min"].as_py(), lengths["max"].as_py()
    if low != high or (dim is not None and low != dim):
        raise ExportError(f"the stored interest vectors have different lengths ({low}..{high}, earlier {dim}): "
                          "run a full `interestgeo score`")
    return int(low)


class _TextVectors:
    """Texts -> their (N, D) embeddings by the configured text model (or `encoder`'s).

    Read from the store's cache by model id and text hash (`Store.cached_embeddings`, the keys
    `embed_texts` writes); the texts it lacks go through `embed_texts`, which encodes and caches
    them. The model loads only then: a scored store has every event text cached already.
    """

    def __init__(self, store: Store, config: Config, encoder: TextEncoder | None) -> None:
        self.store = store
        self.config = config
        self.encoder = encoder
        self.model_id = encoder.model_id if encoder is not None else text_model_id(config.text)

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        codes, unique = pd.factorize(pd.Series(texts, dtype=object))
        unique = [str(t) for t in unique]
        hashes = text_hashes(unique)
        found = self.store.cached_embeddings(self.model_id, hashes)  # {hash: (D,)}
        missing = [t for t, h in zip(unique, hashes, strict=True) if h not in found]
        if missing:
            if self.encoder is None:
                from interestgeo.text import encoder_for  # torch and transformers: seconds, only when needed

                self.encoder = encoder_for(self.config.text)
            found.update(zip(text_hashes(missing), embed_texts(self.store, self.encoder, missing, warn=None),
                             strict=True))
        by_unique = np.stack([found[h] for h in hashes]).astype(np.float32, copy=False)  # (U, D)
        return np.ascontiguousarray(by_unique[codes])  # (N, D)
