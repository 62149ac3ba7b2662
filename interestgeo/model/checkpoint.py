"""Checkpoints: the weights (safetensors) beside the config, metrics and meta JSON, registered in
the store's `checkpoints` table; and the shipped pretrained models (data/model/<text encoder>/).

Why apart from training: reading and writing a checkpoint is I/O that scoring, the CLI's demo and
the evaluation need without the optimisation loop (as nanoGPT keeps its config beside the weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from interestgeo.config import Config
from interestgeo.model.data import Prepared, placeholder_world
from interestgeo.model.network import InterestModel
from interestgeo.model.spacetime import CellVocab

if TYPE_CHECKING:
    from interestgeo.store import Store

__all__ = [
    "CheckpointError",
    "LoadedCheckpoint",
    "SHIPPED_MODELS_DIR",
    "adapted_name",
    "checkpoint_dir",
    "has_usable_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "register_checkpoint",
    "save_checkpoint",
    "shipped_model_dir",
]


def checkpoint_dir(config: Config) -> Path:
    """Where checkpoints go: config.model.checkpoint_dir, else `models/` beside the database."""
    if config.model.checkpoint_dir is not None:
        return Path(config.model.checkpoint_dir)
    return Path(config.store.path).resolve().parent / "models"


def save_checkpoint(
    store: Store, config: Config, name: str, model: InterestModel, prep: Prepared, metrics: dict[str, Any],
    *, folder: Path | None = None, half: bool = False, trained_on: list[dict[str, Any]] | None = None,
) -> int:
    """Write weights (safetensors) + config/metrics/meta JSON to a new folder and register it.

    `folder`: write there (default: a new folder under checkpoint_dir); `half`: float tensors as
    float16 (the shipped model: half the size, the same rankings); `trained_on`: the datasets and
    periods the weights saw (`evaluate --dataset` refuses a checkpoint that saw its test period).
    """
    if folder is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = checkpoint_dir(config) / f"{name.replace(':', '-').replace('/', '-')}-{stamp}"
    folder.mkdir(parents=True, exist_ok=False)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    for res, cells in zip(prep.vocab.resolutions, prep.vocab.cells):
        tensors[f"vocab.cells.{res}"] = torch.from_numpy(np.ascontiguousarray(cells))
    save_file(tensors, str(folder / "model.safetensors"))
    config_json = json.dumps(config.to_dict(), indent=2)
    metrics_json = json.dumps(metrics, indent=2)
    meta = {
        "name": name,
        "cell_resolutions": list(prep.vocab.resolutions),
        "text_model_id": metrics.get("text_model_id"),
        "text_dim": model.text_dim,
        "tied_venues": model.tied_venues,
        "tied_categories": model.tied_categories,
        "trained_on": trained_on or [],
    }
    (folder / "config.json").write_text(config_json)
    (folder / "metrics.json").write_text(metrics_json)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return store.add_checkpoint(name, str(folder), config_json, metrics_json)


@dataclass
class LoadedCheckpoint:
    id: int
    name: str
    config: Config
    model: InterestModel  # weights only: its world is set by whoever scores (InterestScorer)
    vocab: CellVocab
    metrics: dict[str, Any]
    meta: dict[str, Any]

    @property
    def text_model_id(self) -> str | None:
        return self.meta.get("text_model_id") or self.metrics.get("text_model_id")

    @property
    def trained_on(self) -> list[dict[str, Any]]:
        return list(self.meta.get("trained_on") or [])


class CheckpointError(Exception):
    """No usable checkpoint (one-line message for users)."""


def load_checkpoint(store: Store, checkpoint_id: int | str | None = None, name: str | None = None) -> LoadedCheckpoint:
    """Load a registered checkpoint: by id, else the newest with `name`, else the newest "model"."""
    if checkpoint_id is not None:
        row = store.checkpoint(int(checkpoint_id))
    else:
        row = store.checkpoint(name=name or "model")
    if row is None:
        what = f"checkpoint {checkpoint_id}" if checkpoint_id is not None else f"checkpoint named {name or 'model'!r}"
        raise CheckpointError(f"no {what} in the store: run `interestgeo train` first")
    return read_checkpoint(Path(row["path"]), int(row["id"]), str(row["name"]))


def read_checkpoint(folder: Path, checkpoint_id: int = 0, name: str | None = None) -> LoadedCheckpoint:
    """The checkpoint in `folder` (safetensors + JSON), float32 on the CPU."""
    if not (folder / "model.safetensors").exists():
        raise CheckpointError(f"checkpoint {checkpoint_id} files are missing at {folder}")
    config = Config.from_dict(json.loads((folder / "config.json").read_text()))
    meta = json.loads((folder / "meta.json").read_text())
    if "text_dim" not in meta:
        raise CheckpointError(
            f"checkpoint {checkpoint_id} at {folder} was made by an older version whose model knew only its "
            "training venues: train again (`interestgeo train`) or use the shipped model (`interestgeo demo`)"
        )
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(folder / "model.safetensors")).items()}
    resolutions = tuple(meta["cell_resolutions"])
    vocab = CellVocab(resolutions, [tensors.pop(f"vocab.cells.{r}").numpy() for r in resolutions])
    model = InterestModel(config.model, placeholder_world(meta["text_dim"], meta.get("tied_venues"), meta.get("tied_categories"), vocab))
    model.load_state_dict(tensors, strict=True)
    model.eval()
    metrics = json.loads((folder / "metrics.json").read_text())
    return LoadedCheckpoint(checkpoint_id, name or str(meta.get("name", "model")), config, model, vocab, metrics, meta)


# The pretrained models that ship with the product, one folder per packaged text encoder (a model reads
# one encoder's vectors): float16 safetensors + JSON; `make model` rebuilds them.
SHIPPED_MODELS_DIR = Path(__file__).resolve().parents[2] / "data" / "model"


def shipped_model_dir(text_model_id: str) -> Path:
    """The shipped pretrained model for text vectors of `text_model_id` (the folder may not exist)."""
    return SHIPPED_MODELS_DIR / text_model_id


def register_checkpoint(store: Store, folder: Path, name: str = "model") -> int:
    """Register a checkpoint folder written elsewhere (the shipped model) in this store; returns its id."""
    checkpoint = read_checkpoint(folder, name=name)  # refuses a folder that does not load
    return store.add_checkpoint(
        name, str(Path(folder).resolve()), json.dumps(checkpoint.config.to_dict(), indent=2),
        json.dumps(checkpoint.metrics, indent=2),
    )


def has_usable_checkpoint(store: Store, name: str = "model", text_model_id: str | None = None) -> bool:
    """Whether the newest `name` checkpoint loads (False for none, missing files, or an older format)
    and, when `text_model_id` is given, reads that encoder's vectors."""
    try:
        checkpoint = load_checkpoint(store, name=name)
    except CheckpointError:
        return False
    return text_model_id is None or checkpoint.text_model_id == text_model_id


def adapted_name(dataset: str) -> str:
    """The checkpoint name of a model adapted to one dataset (scoring that dataset prefers it)."""
    from interestgeo.store import adapted_checkpoint_name

    return adapted_checkpoint_name(dataset)
