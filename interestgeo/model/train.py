"""Training: AdamW with early stopping on validation MRR, the ablations, and the checkpoint it writes.

Data flow: split (split.py) -> text vectors (text.py, cached in the store) -> `data.prepare`
(EventTable, world, cell vocabulary) -> training windows of each user's training-period events ->
AdamW with early stopping on validation MRR (metrics.rank_metrics, scorer.score_rows) ->
checkpoint (checkpoint.save_checkpoint), registered in the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from interestgeo.config import Config, ModelConfig
from interestgeo.metrics import rank_metrics
from interestgeo.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from interestgeo.model.data import Prepared, prepare, training_windows
from interestgeo.model.network import InterestModel
from interestgeo.model.scorer import score_rows

if TYPE_CHECKING:
    from interestgeo.store import Store
    from interestgeo.text import Progress

__all__ = ["ABLATIONS", "TrainResult", "seed_everything", "train_ablations", "train_model", "train_on_split"]


# Ablations of the full model: same code, switches in ModelConfig (see the table).
ABLATIONS: dict[str, dict[str, Any]] = {
    "sasrec-id-only": dict(use_text=False, use_spacetime=False, use_copy=False, use_item_id=True),
    "no-text": dict(use_text=False),
    "no-spacetime": dict(use_spacetime=False),
    "no-copy": dict(use_copy=False),
}


@dataclass
class TrainResult:
    model: InterestModel
    prep: Prepared
    metrics: dict[str, Any]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train_on_split(
    split: Any,
    config: ModelConfig,
    text_of: Callable[[list[str]], np.ndarray],
    *,
    prep: Prepared | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    time_budget_s: float | None = None,
) -> TrainResult:
    """Train on the split's training events, early-stopping on validation MRR; returns the best model.

    `init_state`: warm-start from these weights (fine-tuning); their own validation MRR is the
    score to beat, so a fine-tune that does not help returns them unchanged. `time_budget_s`: stop
    after the batch that passes it (the epoch is validated, the best state kept). `progress`
    hears of each batch ("epoch N", batches done, batches, "loss=…"); `log` gets one line per epoch.
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    prep = prep or prepare(split, config, text_of)
    model = InterestModel(config, prep.data)
    if init_state is not None:
        model.load_state_dict(init_state, strict=True)
    windows, tv, tc = training_windows(prep, config.max_len)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n and not n.startswith(("id_", "spacetime.cells"))]
    other = [p for n, p in model.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    rng = np.random.default_rng(config.seed)
    best: dict[str, Any] = {"mrr": -1.0, "epoch": 0, "state": None}
    if init_state is not None:
        v, _ = score_rows(model, prep.table, split.val, config.use_target_time, config.eval_batch_size)
        start = rank_metrics(v, split.val.venue)
        best = {"mrr": start["mrr"], "epoch": 0, "state": {k: x.detach().clone() for k, x in model.state_dict().items()}}
        if log:
            log(f"warm start: val acc@1 {start['acc@1']:.4f}  val mrr {start['mrr']:.4f}")
    history = []
    t0 = time.perf_counter()
    bad = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(windows))
        losses = []
        starts = range(0, len(order), config.batch_size)
        for done, i in enumerate(starts, 1):
            idx = order[i : i + config.batch_size]
            given = rng.random(len(idx)) >= config.target_time_dropout
            batch = prep.table.batch([windows[j] for j in idx], config.max_len, given)
            T = batch.venue.shape[1]
            _, loss = model(batch, torch.from_numpy(tv[idx, :T]), torch.from_numpy(tc[idx, :T]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            if progress is not None:
                progress(f"epoch {epoch}", done, len(starts), f"loss={np.mean(losses[-20:]):.3f}")
            if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
                break
        out_of_time = time_budget_s is not None and time.perf_counter() - t0 > time_budget_s
        v, _ = score_rows(model, prep.table, split.val, config.use_target_time, config.eval_batch_size)
        val = rank_metrics(v, split.val.venue)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **{f"val_{k}": x for k, x in val.items()}})
        msg = f"epoch {epoch}: loss {np.mean(losses):.4f}  val acc@1 {val['acc@1']:.4f}  val mrr {val['mrr']:.4f}  ({time.perf_counter() - t0:.0f}s)"
        if log:
            log(msg)
        if val["mrr"] > best["mrr"]:
            best = {"mrr": val["mrr"], "epoch": epoch, "state": {k: x.detach().clone() for k, x in model.state_dict().items()}}
            bad = 0
        else:
            bad += 1
            if bad >= config.patience:
                break
        if out_of_time:
            if log:
                log(f"time budget of {time_budget_s / 60:g} min reached")
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    metrics = {
        "best_epoch": best["epoch"],
        "val_mrr": best["mrr"],
        "train_seconds": time.perf_counter() - t0,
        "history": history,
        "train_windows": len(windows),
    }
    return TrainResult(model, prep, metrics)


def _split_and_text(
    store: Store, config: Config, progress: Progress | None, datasets: list[int] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[Any, Callable[[list[str]], np.ndarray], str]:
    from interestgeo.split import make_split
    from interestgeo.text import embed_texts, encoder_for

    events = store.events(datasets)
    if events.empty:
        raise CheckpointError("the store has no events: run `interestgeo demo` or `interestgeo ingest` first")
    split = make_split(events, config)
    if len(split.val) == 0:
        raise CheckpointError("no validation samples: the data is too small or too short to train on")
    encoder = encoder_for(config.text)
    return split, (lambda texts: embed_texts(store, encoder, texts, progress=progress, warn=warn)), encoder.model_id


def _test_metrics(model: InterestModel, prep: Prepared, split: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    variants = [("time_given", True), ("no_time", False)] if model.config.use_target_time and model.config.use_spacetime else [("no_time", False)]
    for label, given in variants:
        v, c = score_rows(model, prep.table, split.test, given, model.config.eval_batch_size)
        out[f"test_{label}"] = {"next_venue": rank_metrics(v, split.test.venue), "next_category": rank_metrics(c, split.test.category)}
    return out


def train_model(
    store: Store,
    config: Config,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    name: str = "model",
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    dataset: str | None = None,
    init_from: int | str | None = None,
    minutes: float | None = None,
    folder: Path | None = None,
    half: bool = False,
) -> int:
    """Train on the store's events (split.py protocol), save and register a checkpoint; returns its id.

    `dataset`: that dataset's events only. `init_from` (a checkpoint id or name): warm-start from
    it and fine-tune (its architecture, `model.finetune_learning_rate`); `minutes`: a time budget.
    `folder`/`half`: where and how the checkpoint is written (the shipped model: float16 in data/).
    `warn` hears that some texts are mostly unknown to the text model (text.embed_texts).
    """
    config = _with_overrides(config, epochs=epochs, seed=seed)
    try:
        dataset_ids = None if dataset is None else [store.require_dataset_id(dataset)]
    except LookupError as exc:
        raise CheckpointError(str(exc)) from None
    init = None
    if init_from is not None:
        by_id = isinstance(init_from, int) or str(init_from).isdigit()
        init = load_checkpoint(store, int(init_from) if by_id else None, None if by_id else str(init_from))
        if init.model.tied_venues is not None or init.vocab.resolutions:
            raise CheckpointError(f"checkpoint {init.id} has learned venue ids or cells: only an inductive model can be adapted")
        model_config = replace(
            init.config.model, epochs=config.model.epochs, seed=config.model.seed,
            learning_rate=config.model.finetune_learning_rate, threads=config.model.threads,
        )
        config = replace(config, model=model_config)
    split, text_of, model_id = _split_and_text(store, config, progress, dataset_ids, warn)
    if init is not None and init.text_model_id != model_id:
        raise CheckpointError(
            f"checkpoint {init.id} reads text vectors of {init.text_model_id!r}, this store's text model is {model_id!r}"
        )
    result = train_on_split(
        split, config.model, text_of, progress=progress, log=log,
        init_state=None if init is None else init.model.state_dict(),
        time_budget_s=None if minutes is None else 60.0 * minutes,
    )
    metrics = {
        **result.metrics, **_test_metrics(result.model, result.prep, split), "text_model_id": model_id,
        "warm_start": None if init is None else init.id,
    }
    trained_on = _trained_on(store, split) + ([] if init is None else init.trained_on)
    return save_checkpoint(store, config, name, result.model, result.prep, metrics, folder=folder, half=half, trained_on=trained_on)


def _trained_on(store: Store, split: Any) -> list[dict[str, Any]]:
    """The datasets a split trains on, each with its content hash and the end of the training period."""
    datasets = store.datasets().set_index("dataset_id")
    until = split.val_start.isoformat()
    return [
        {"dataset": str(datasets.loc[d, "name"]), "content_hash": str(datasets.loc[d, "content_hash"]), "train_until": until}
        for d in sorted(split.events["dataset_id"].unique().tolist())
    ]


def train_ablations(
    store: Store,
    config: Config,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    names: list[str] | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Train each ablation (ABLATIONS, same code with switches off) and register it as
    "ablation:<name>"; returns {name: checkpoint id}. The split and text vectors are shared."""
    config = _with_overrides(config, epochs=epochs, seed=seed)
    split, text_of, model_id = _split_and_text(store, config, progress, warn=warn)
    prep = prepare(split, config.model, text_of)
    ids = {}
    for ablation in names or list(ABLATIONS):
        cfg = replace(config, model=replace(config.model, **ABLATIONS[ablation]))
        if log:
            log(f"ablation {ablation}")
        result = train_on_split(split, cfg.model, text_of, prep=prep, progress=progress, log=log)
        metrics = {**result.metrics, **_test_metrics(result.model, prep, split), "text_model_id": model_id}
        ids[ablation] = save_checkpoint(store, cfg, f"ablation:{ablation}", result.model, prep, metrics)
    return ids


def _with_overrides(config: Config, *, epochs: int | None, seed: int | None) -> Config:
    model = config.model
    if epochs is not None:
        model = replace(model, epochs=int(epochs))
    if seed is not None:
        model = replace(model, seed=int(seed))
    return replace(config, model=model)
