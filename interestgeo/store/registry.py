"""The text-embedding cache and the checkpoint registry.

Every distinct text is encoded once per model: vectors are keyed by (model_id, sha256 of the
text), so re-scoring or training again never re-encodes a text. Checkpoints live on disk
(safetensors + JSON); the `checkpoints` table only registers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from interestgeo.store._db import vectors_frame, vectors_from_arrow
from interestgeo.store._part import StorePart

__all__ = ["RegistryPart", "adapted_checkpoint_name"]


def adapted_checkpoint_name(dataset: str) -> str:
    """The registry name of a checkpoint adapted to one dataset (scoring that dataset prefers it;
    deleting the dataset deletes it)."""
    return f"adapted:{dataset}"


class RegistryPart(StorePart):
    """Cached text embeddings and registered checkpoints."""

    def cached_embeddings(self, model_id: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """{text_hash: vector} for the hashes already embedded by `model_id`."""
        if not text_hashes or not self._table_exists("text_embeddings"):
            return {}
        wanted = pa.table({"text_hash": pa.array(list(text_hashes), pa.string())})
        self.con.register("registry_wanted_hashes", wanted)
        try:
            table = self.con.sql(
                "SELECT e.text_hash, e.vector FROM text_embeddings e "
                "JOIN registry_wanted_hashes w USING (text_hash) WHERE e.model_id = ?",
                params=[model_id],
            ).to_arrow_table()
        finally:
            self.con.unregister("registry_wanted_hashes")
        vectors = vectors_from_arrow(table.column("vector"), table.num_rows)
        return dict(zip(table.column("text_hash").to_pylist(), vectors))

    def put_embeddings(
        self, model_id: str, text_hashes: Sequence[str], texts: Sequence[str], vectors: np.ndarray
    ) -> None:
        """Store new vectors (existing (model_id, text_hash) rows are kept as they are)."""
        if len(text_hashes) == 0 or self.read_only:
            return
        self._ensure_model_schema()
        frame = vectors_frame(
            {"model_id": [model_id] * len(text_hashes), "text_hash": list(text_hashes), "text": list(texts)},
            vectors,
        )
        self.con.register("registry_new_embeddings", frame)
        try:
            self.con.execute(
                "INSERT INTO text_embeddings SELECT model_id, text_hash, text, vector FROM registry_new_embeddings "
                "ON CONFLICT DO NOTHING"
            )
        finally:
            self.con.unregister("registry_new_embeddings")

    def embedding_count(self, model_id: str) -> int:
        """How many texts `model_id` has embedded in this store."""
        if not self._table_exists("text_embeddings"):
            return 0
        return int(self._first_row("SELECT count(*) FROM text_embeddings WHERE model_id = ?", [model_id])[0])

    def add_checkpoint(self, name: str, path: str, config_json: str, metrics_json: str) -> int:
        """Register a checkpoint folder; returns its id."""
        self._ensure_model_schema()
        new_id = int(self._first_row("SELECT coalesce(max(id), 0) + 1 FROM checkpoints")[0])
        self.con.execute(
            "INSERT INTO checkpoints VALUES (?, ?, now(), ?, ?, ?)", [new_id, name, path, config_json, metrics_json]
        )
        return new_id

    def checkpoints(self) -> pd.DataFrame:
        """Registered checkpoints [id, name, created_at, path, config, metrics], newest first."""
        if not self._table_exists("checkpoints"):
            return pd.DataFrame(columns=["id", "name", "created_at", "path", "config", "metrics"])
        return self.con.execute("SELECT * FROM checkpoints ORDER BY id DESC").df()

    def checkpoint(self, checkpoint_id: int | None = None, name: str | None = None) -> dict[str, Any] | None:
        """One checkpoint row as a dict: by id, else the newest with `name`, else the newest; None if none."""
        if not self._table_exists("checkpoints"):
            return None
        if checkpoint_id is not None:
            cur = self.con.execute("SELECT * FROM checkpoints WHERE id = ?", [int(checkpoint_id)])
        elif name is not None:
            cur = self.con.execute("SELECT * FROM checkpoints WHERE name = ? ORDER BY id DESC LIMIT 1", [name])
        else:
            cur = self.con.execute("SELECT * FROM checkpoints ORDER BY id DESC LIMIT 1")
        rows = cur.df()  # via pandas: fetchall() of the TIMESTAMPTZ column needs pytz, not a dependency
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in rows.iloc[0].items()} if len(rows) else None
