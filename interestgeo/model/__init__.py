"""The interest model: a causal Transformer over each user's events that ranks the next place and
reads, after every event, an interest vector in the text-embedding space.

    network.py     the nn.Modules (InterestModel) and the pruned expectation
    spacetime.py   cell vocabulary and space-time features the network reads
    world.py       what the model knows about one dataset (its venues and counts)
    data.py        events -> EventTable -> padded windows: the inputs training and scoring share
    checkpoint.py  weights + JSON on disk, registered in the store; the shipped models
    scorer.py      InterestScorer: inference for the evaluation, scoring and explanations
    train.py       AdamW with early stopping, the ablations

Modules inside the package import each other by their own names (never this __init__), so this
public face can re-export them without an import cycle.
"""

from __future__ import annotations

from interestgeo.model.checkpoint import (
    SHIPPED_MODELS_DIR,
    CheckpointError,
    LoadedCheckpoint,
    adapted_name,
    has_usable_checkpoint,
    load_checkpoint,
    read_checkpoint,
    register_checkpoint,
    shipped_model_dir,
)
from interestgeo.model.network import Batch, InterestModel, ModelData
from interestgeo.model.scorer import InterestScorer
from interestgeo.model.train import ABLATIONS, train_ablations, train_model

__all__ = [
    "ABLATIONS",
    "Batch",
    "CheckpointError",
    "InterestModel",
    "InterestScorer",
    "LoadedCheckpoint",
    "ModelData",
    "SHIPPED_MODELS_DIR",
    "adapted_name",
    "has_usable_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "register_checkpoint",
    "shipped_model_dir",
    "train_ablations",
    "train_model",
]
