"""Benchmark of the interest model on the NYC demo data (issue 3's "Quality and speed").

Prints the full training time, the ablations' training time, inference speed (interest vectors
per second over every stored event, and scored samples per second), and the evaluation table of
the model, its ablations and every baseline on the same test samples (interestgeo.eval.run).

    .venv/bin/python benchmarks/bench_model.py [--db PATH] [--epochs N] [--ablation-epochs N]
        [--skip-training] [--skip-ablations] [--json]

With --skip-training it evaluates the checkpoints already in the store. The database defaults to
a fresh file under artifacts/ so that a benchmark never overwrites the dashboard's checkpoints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from interestgeo.cli.data import load_demo
from interestgeo.cli.render import evaluation_text
from interestgeo.config import load_config
from interestgeo.eval.run import run_evaluation
from interestgeo.split import make_split
from interestgeo.store import Store
from interestgeo.model import InterestScorer, train_ablations, train_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("artifacts/bench_model.duckdb"))
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs of the model (default: config)")
    parser.add_argument("--ablation-epochs", type=int, default=4, help="maximum epochs of each ablation")
    parser.add_argument("--skip-training", action="store_true", help="evaluate the checkpoints already stored")
    parser.add_argument("--skip-ablations", action="store_true", help="train the model only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    config = load_config().with_db(args.db)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"threads": config.model.threads, "cpu_threads_available": torch.get_num_threads()}

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with Store.open(args.db, config=config) as store:
        load_demo(store, config)
        if not args.skip_training:
            t0 = time.perf_counter()
            checkpoint_id = train_model(store, config, epochs=args.epochs, log=log)
            report["train_seconds"] = time.perf_counter() - t0
            report["checkpoint"] = checkpoint_id
            report["train_metrics"] = {
                k: v for k, v in json.loads(store.checkpoint(checkpoint_id)["metrics"]).items() if k != "history"
            }
            if not args.skip_ablations:
                t0 = time.perf_counter()
                report["ablations"] = train_ablations(store, config, epochs=args.ablation_epochs, log=log)
                report["ablation_seconds"] = time.perf_counter() - t0

        scorer = InterestScorer.from_checkpoint(store)
        events = store.events()
        scorer.text_vectors(events["text"].fillna("").astype(str).unique().tolist())  # warm the text cache
        t0 = time.perf_counter()
        scorer.interest_vectors(events)
        seconds = time.perf_counter() - t0
        report["interest_vectors_events_per_s"] = len(events) / seconds
        split = make_split(events, config)
        scorer.score(split, split.val)  # builds the split's event table once
        t0 = time.perf_counter()
        scorer.score(split, split.test)
        report["scoring_samples_per_s"] = len(split.test) / (time.perf_counter() - t0)

        run = run_evaluation(store, config)
    report["evaluation"] = run.results
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    if "train_seconds" in report:
        print(f"model training: {report['train_seconds']:.0f} s (best epoch {report['train_metrics']['best_epoch']})")
    if "ablation_seconds" in report:
        print(f"ablations training: {report['ablation_seconds']:.0f} s (at most {args.ablation_epochs} epochs each)")
    print(f"interest vectors: {report['interest_vectors_events_per_s']:,.0f} events/s over {len(events):,} events")
    print(f"next-venue scoring: {report['scoring_samples_per_s']:,.0f} samples/s")
    print(evaluation_text(run), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
