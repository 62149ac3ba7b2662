"""Commands about the model itself: `train` (a checkpoint, or the ablations) and `evaluate`
(next-venue / next-category metrics of the model, its ablations and the baselines).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from interestgeo.cli.options import (
    EXIT_OK, CliError, Subparsers, add_command, add_dataset_option, config_from, open_store,
)
from interestgeo.cli.progress import Bars
from interestgeo.cli.render import evaluation_text, results_json
from interestgeo.config import Config

__all__ = ["add_evaluate_parser", "add_train_parser", "train_and_report"]


# ---------------------------------------------------------------------------- evaluate


def add_evaluate_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "evaluate", _run_evaluate, json_help="print one JSON object {task: {scorer: metrics}}",
        help="next-venue / next-category metrics of the model, its ablations and the baselines",
        description="Split the stored events (issue 3 protocol: 24 h trajectories, 80/10/10 by time), then "
        "rank every training venue for each test trajectory's last check-in with the trained model, each "
        "ablation and each baseline; prints Acc@1/5/10, MRR and NDCG@10.",
    )
    parser.add_argument("--checkpoint", type=int, default=None, metavar="ID", help="model checkpoint (default: newest)")
    parser.add_argument("--part", choices=("test", "val"), default="test", help="samples to evaluate (default: test)")
    add_dataset_option(
        parser, "that dataset alone, on its own split: the model zero-shot (or adapted) beside baselines fitted on it",
        repeatable=False,
    )


def _run_evaluate(args: argparse.Namespace) -> int:
    from interestgeo.eval.run import EvaluationError, run_evaluation

    config = config_from(args)
    try:
        with open_store(config) as store:
            run = run_evaluation(store, config, checkpoint_id=args.checkpoint, part=args.part, dataset=args.dataset)
    except EvaluationError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(results_json(run.results))
        for note in run.notes:
            print(f"note: {note}", file=sys.stderr)
    else:
        print(evaluation_text(run), end="")
    return EXIT_OK


# ---------------------------------------------------------------------------- train


def add_train_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "train", _run_train,
        help="train the interest model on the stored events and save a checkpoint",
        description="Split the stored events (chronological 80/10/10, see README), train the Transformer on the training "
        "period with early stopping on validation MRR, and register a safetensors checkpoint in the store.",
        interrupted="the unfinished training run registered no checkpoint (ablations finished before it did)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: config model.epochs)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: config model.seed)")
    parser.add_argument(
        "--ablations", action="store_true",
        help="instead, train the ablations (ID-only SASRec, no text, no space-time, no copy) for `evaluate`",
    )
    add_dataset_option(parser, "train on this dataset's events only", repeatable=False)
    parser.add_argument(
        "--from", dest="init_from", default=None, metavar="CHECKPOINT",
        help="adapt: warm-start from this checkpoint (id or name, e.g. 'model') and fine-tune on --dataset; "
        "registered as 'adapted:NAME' and used when scoring that dataset",
    )
    parser.add_argument("--minutes", type=float, default=None, help="time budget (stops after the batch that passes it)")
    parser.add_argument("--out", type=Path, default=None, metavar="FOLDER", help="write the checkpoint to this new folder")
    parser.add_argument("--half", action="store_true", help="store float weights as float16 (the shipped model)")


def _run_train(args: argparse.Namespace) -> int:
    if args.init_from is not None and args.dataset is None:
        raise CliError("--from adapts a model to one dataset: name it with --dataset")
    return train_and_report(
        config_from(args), epochs=args.epochs, seed=args.seed, ablations=args.ablations,
        dataset=args.dataset, init_from=args.init_from, minutes=args.minutes, folder=args.out, half=args.half,
    )


def train_and_report(
    config: Config, *, epochs: int | None = None, seed: int | None = None, ablations: bool = False,
    dataset: str | None = None, init_from: str | None = None, minutes: float | None = None,
    folder: Path | None = None, half: bool = False,
) -> int:
    """Train (progress bars on stderr, one summary line per epoch) and print a final line naming
    the checkpoint; expected failures are CliError (one line). `demo` calls it too."""
    from interestgeo.store import Store
    from interestgeo.text import TextModelError
    from interestgeo.model import CheckpointError, adapted_name, train_ablations, train_model

    def log(message: str) -> None:
        print(message, flush=True)

    def warn(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if not Path(config.store.path).exists():
        raise CliError(f"no database at {config.store.path}: run `interestgeo demo` or `interestgeo ingest` first")
    try:
        with Store.open(config.store.path, config=config) as store, Bars(unit="batch") as bars:
            if ablations:
                ids = train_ablations(store, config, epochs=epochs, seed=seed, progress=bars, log=log, warn=warn)
                log("ablation checkpoints: " + ", ".join(f"{k} #{v}" for k, v in ids.items()))
                return EXIT_OK
            name = adapted_name(dataset) if init_from is not None and dataset is not None else "model"
            checkpoint_id = train_model(
                store, config, epochs=epochs, seed=seed, progress=bars, log=log, warn=warn, name=name,
                dataset=dataset, init_from=init_from, minutes=minutes, folder=folder, half=half,
            )
            row = store.checkpoint(checkpoint_id)
    except (CheckpointError, TextModelError) as exc:
        raise CliError(str(exc)) from None
    metrics = json.loads(row["metrics"])
    test = metrics.get("test_time_given") or metrics.get("test_no_time") or {}
    venue = test.get("next_venue", {})
    log(
        f"checkpoint #{checkpoint_id} saved to {row['path']} (best epoch {metrics['best_epoch']}, "
        f"{metrics['train_seconds']:.0f} s); test acc@1 {venue.get('acc@1', float('nan')):.4f}, "
        f"mrr {venue.get('mrr', float('nan')):.4f}"
    )
    return EXIT_OK
