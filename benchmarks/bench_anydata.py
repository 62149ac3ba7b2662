"""Any-data interest model: zero-shot on strangers, per-dataset calibration, adaptation, the demo.

What it measures, side by side in one run (each figure beside its reference):

1. **Strangers, zero-shot** (`gowalla_nyc`, `tokyo` in the stranger-data folder, see `--strangers`;
   skipped loudly when absent):
   a fresh store, the shipped model registered (no training), `score`; then each person's next
   event's text is ranked among the dataset's distinct texts by dot product with the stored vector
   of the event before it (MRR), on the dataset's most recent tenth (the held-out pairs whose
   counts the model's world never saw, less the pairs the calibration chose the blend on), against a decayed average of the person's past text
   embeddings (weight 0.9 per event) and the last event's own text. Printed as ratios, with a
   90 % interval that resamples people (`metrics.grouped_bootstrap_ratio`), and again pooled over
   the same measurement as if the data had ended earlier (`rolling_figures`: more held-out pairs).
2. **`evaluate --dataset`** on gowalla: the shipped model zero-shot beside every baseline fitted on
   gowalla's own training period.
3. **Adaptation**: `train --dataset gowalla --from model --minutes M`, then evaluate and re-score.
4. **The demo**: `evaluate` on the NYC demo with the shipped model (no regression; the
   README's table) and `interestgeo demo` on an existing venv (fresh database).

Usage: .venv/bin/python benchmarks/bench_anydata.py [--strangers DIR] [--minutes 5] [--work DIR]
       [--skip-adapt] [--skip-nyc]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interestgeo.calibration import calibration_cutoff, next_event_pairs  # noqa: E402
from interestgeo.config import Config  # noqa: E402
from interestgeo.eval.run import run_evaluation  # noqa: E402
from interestgeo.ingest import ingest_file  # noqa: E402
from interestgeo.metrics import grouped_bootstrap_ratio, next_text_reciprocal_ranks  # noqa: E402
from interestgeo.model import adapted_name, register_checkpoint, shipped_model_dir, train_model  # noqa: E402
from interestgeo.schema import user_keys  # noqa: E402
from interestgeo.store import Store  # noqa: E402
from interestgeo.text import TextEncoder, embed_texts, encoder_for, text_model_id  # noqa: E402
from interestgeo.vectors import interest_vectors, score_store  # noqa: E402

STRANGERS = {
    "gowalla": "gowalla_nyc/gowalla_nyc_checkins.csv.gz",
    "tokyo": "tokyo/tky_checkins_sample.csv.gz",
}


def load() -> str:
    return os.getloadavg().__repr__()


STRANGERS_ENV = "INTERESTGEO_STRANGERS"


def add_strangers_option(parser: argparse.ArgumentParser) -> None:
    """--strangers: the folder of datasets the product was not built on (never shipped in data/)."""
    default = os.environ.get(STRANGERS_ENV)
    parser.add_argument("--strangers", type=Path, default=Path(default) if default else None,
                        help=f"folder holding gowalla_nyc/, tokyo/, weibo_hefei/ (default: ${STRANGERS_ENV})")


def stranger_file(folder: Path | None, relative: str, what: str) -> Path | None:
    """The stranger dataset's file, or None after saying loudly that `what` is skipped."""
    csv = None if folder is None else folder / relative
    if csv is None or not csv.exists():
        where = f"{csv} not found" if csv is not None else f"no --strangers folder (or ${STRANGERS_ENV})"
        print(f"!!! {where}: {what} is SKIPPED")
        return None
    return csv


def finish(work: Path, results: dict) -> int:
    """The end of a benchmark run: the load now, and every figure as JSON in the work folder."""
    print(f"load average at end: {load()}")
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"figures in {work / 'results.json'}")
    return 0


def decayed_average(events: pd.DataFrame, text: np.ndarray, decay: float = 0.9) -> np.ndarray:
    """(N, D) sum_{j <= i} decay^(i - j) text_j over the same person's events (unit rows)."""
    users = (events["dataset_id"].astype(str) + ":" + events["user_id"].astype(str)).to_numpy()
    out = np.empty_like(text)
    state = np.zeros(text.shape[1])
    for i in range(len(events)):
        state = text[i] + (decay * state if i and users[i] == users[i - 1] else 0.0)
        out[i] = state
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def next_event_figures(store: Store, encoder: TextEncoder, dataset_id: int) -> dict[str, float]:
    """Next-event MRR of the stored vectors and the two trivial baselines on the held-out pairs,
    with a person-level bootstrap 90 % interval of the ratio to the best of the baselines."""
    events, stored = store.scored_events([dataset_id])
    text_of = lambda texts: embed_texts(store, encoder, texts, warn=None)  # noqa: E731
    codes, uniq = pd.factorize(events["text"].astype(str))
    text = text_of(list(uniq))[codes]
    cutoff = calibration_cutoff(events["ts"])
    pairs, targets, distinct = next_event_pairs(events, cutoff, limit=1_000_000)
    # leave out the pairs the calibration chose the dataset's blend on (its sample's even half)
    choosing = next_event_pairs(events, cutoff)[0][::2]
    keep = ~np.isin(pairs, choosing)
    pairs, targets = pairs[keep], targets[keep]
    candidates = text_of(distinct)
    rr = {
        "stored": next_text_reciprocal_ranks(stored[pairs], targets, candidates),
        "decayed_avg_0.9": next_text_reciprocal_ranks(decayed_average(events, text)[pairs], targets, candidates),
        "last_text": next_text_reciprocal_ranks(text[pairs], targets, candidates),
    }
    return ratio_figures(rr, user_keys(events).to_numpy()[pairs])


def ratio_figures(rr: dict[str, np.ndarray], people: np.ndarray) -> dict[str, float]:
    """MRR of each of `rr` (stored, decayed_avg_0.9, last_text: reciprocal ranks per pair), the stored
    vectors' ratio to the best baseline and its 90 % interval resampling `people` (one per pair)."""
    figures: dict[str, float] = {"pairs": len(people), "people": len(np.unique(people))}
    figures.update({k: float(v.mean()) for k, v in rr.items()})
    best = max(figures["decayed_avg_0.9"], figures["last_text"])
    figures["ratio_vs_best_trivial"] = figures["stored"] / best
    low, high = grouped_bootstrap_ratio(rr["stored"], [rr["decayed_avg_0.9"], rr["last_text"]], people)
    figures["ratio_ci90_low"], figures["ratio_ci90_high"] = low, high
    return figures


# The earlier ends a rolling evaluation re-runs the product's calibration at (see rolling_figures).
ROLLING_WINDOWS = 4


def rolling_figures(store: Store, config: Config, encoder: TextEncoder, dataset_id: int,
                    windows: int = ROLLING_WINDOWS) -> dict:
    """The held-out figures as if the dataset had ended earlier, `windows` times, pooled.

    Why: one dataset's reporting half can be a few hundred pairs, whose MRR moves by a fifth from
    one half to the other. Here the product's own calibration (refresh.calibrate_source: the model's
    world counted up to the cutoff, the blend and sharpness chosen on the even half of the pairs)
    runs on the events before each earlier end, the first end being the data's own: window k's
    events end where window k - 1's held-out tenth starts, so each window's held-out pairs are
    new, and its odd half reports with the vectors the product would have stored then (and the
    trivial baselines on the same pairs). Pooled over windows, with the person-level interval.
    """
    from interestgeo.vectors.refresh import calibrate_source
    from interestgeo.vectors.sources import load_source

    events = store.events([dataset_id])
    text_of = lambda texts: embed_texts(store, encoder, texts, warn=None)  # noqa: E731
    codes, uniq = pd.factorize(events["text"].astype(str))
    text = text_of(list(uniq))[codes]
    decayed = decayed_average(events, text)  # prefix-only: the same whatever comes later
    people = user_keys(events).to_numpy()
    pooled: dict[str, list[np.ndarray]] = {"stored": [], "decayed_avg_0.9": [], "last_text": []}
    owners, rows_all, out = [], [], {"windows": []}
    end = None
    for _ in range(windows):
        part = events if end is None else events[(events["ts"] < end).to_numpy()]
        source = load_source(store, config, encoder=encoder)  # a fresh world and blend per window
        calibration = calibrate_source(source, part.reset_index(drop=True), dataset_id, text_of, config)
        pairs, targets, distinct = next_event_pairs(part.reset_index(drop=True), calibration.cutoff)
        pairs, targets = pairs[1::2], targets[1::2]  # the reporting half
        mine = np.isin(people[part.index], people[part.index[pairs]])  # the reporting pairs' people
        users = part[mine].reset_index(drop=True)
        needed = np.zeros(len(users), dtype=bool)
        needed[np.searchsorted(np.flatnonzero(mine), pairs)] = True
        stored = interest_vectors(source, users, needed=needed)[needed]
        candidates = text_of(distinct)
        at = part.index[pairs]  # the pairs' rows in `events`
        rr = {"stored": next_text_reciprocal_ranks(stored, targets, candidates),
              "decayed_avg_0.9": next_text_reciprocal_ranks(decayed[at], targets, candidates),
              "last_text": next_text_reciprocal_ranks(text[at], targets, candidates)}
        window = ratio_figures(rr, people[at])
        window.update(cutoff=calibration.cutoff.isoformat(), history_weight=calibration.weight,
                      sharpness=calibration.sharpness, calibration_stored_mrr=calibration.stored_mrr)
        out["windows"].append(window)
        for k, v in rr.items():
            pooled[k].append(v)
        rows_all.append(at)
        end = calibration.cutoff
    out["pooled"] = ratio_figures({k: np.concatenate(v) for k, v in pooled.items()}, people[np.concatenate(rows_all)])
    return out


def rolling_line(name: str, rolling: dict) -> str:
    p = rolling["pooled"]
    weights = ", ".join(f"{w['history_weight']:g}/{w['sharpness']:g}" for w in rolling["windows"])
    return (f"  {name} rolling (its own end and {len(rolling['windows']) - 1} earlier ones, history weight/sharpness "
            f"chosen {weights}): next-event MRR on {p['pairs']:,} pairs of {p['people']:,} people: stored {p['stored']:.4f} | decayed "
            f"avg {p['decayed_avg_0.9']:.4f} | last text {p['last_text']:.4f} -> {p['ratio_vs_best_trivial']:.2f}x "
            f"(90 % CI {p['ratio_ci90_low']:.2f}-{p['ratio_ci90_high']:.2f})")


def show_eval(title: str, run) -> dict[str, dict[str, float]]:
    venue = run.results["next_venue"]
    print(f"  {title}: {run.n_samples} samples among {run.n_venues} venues")
    for name, m in sorted(venue.items(), key=lambda kv: -kv[1]["mrr"]):
        print(f"    {name:<34} acc@1 {m['acc@1']:.4f}  mrr {m['mrr']:.4f}")
    for note in run.notes:
        print(f"    note: {note}")
    return {k: {"acc@1": v["acc@1"], "mrr": v["mrr"]} for k, v in venue.items()}


def stranger(
    name: str, csv: Path, work: Path, encoder: TextEncoder, minutes: float, adapt: bool, checkpoint: Path
) -> dict:
    db = work / f"{name}.duckdb"
    config = Config().with_db(db)
    out: dict = {}
    with Store.open(db, config=config) as store:
        t = time.perf_counter()
        report = ingest_file(store, csv, config=config, dataset=name)
        out["ingest_s"] = time.perf_counter() - t
        out["events"] = report.rows_stored
        register_checkpoint(store, checkpoint)
        t = time.perf_counter()
        scored = score_store(store, config, encoder=encoder)
        out["score_s"] = time.perf_counter() - t
        out["quality"] = {k: v.to_dict() for k, v in scored.calibrations.items()}
        for line in scored.quality_lines():
            print(f"  quality figure: {line}")
        dataset_id = store.dataset_id(name)
        out["zero_shot"] = next_event_figures(store, encoder, dataset_id)
        z = out["zero_shot"]
        print(f"  {name} zero-shot ({out['events']:,} events, scored in {out['score_s']:.0f} s), next-event MRR on "
              f"{z['pairs']:,} held-out pairs: stored {z['stored']:.4f} | decayed avg {z['decayed_avg_0.9']:.4f} | "
              f"last text {z['last_text']:.4f} -> {z['ratio_vs_best_trivial']:.2f}x the best trivial baseline "
              f"(90 % CI {z['ratio_ci90_low']:.2f}-{z['ratio_ci90_high']:.2f})")
        out["rolling"] = rolling_figures(store, config, encoder, dataset_id)
        print(rolling_line(name, out["rolling"]))
        if name != "gowalla":
            return out
        t = time.perf_counter()
        out["evaluate_zero_shot"] = show_eval("evaluate --dataset (zero-shot)", run_evaluation(store, config, dataset=name))
        out["evaluate_s"] = time.perf_counter() - t
        if not adapt:
            return out
        t = time.perf_counter()
        train_model(store, config, name=adapted_name(name), dataset=name, init_from="model", minutes=minutes)
        out["adapt_s"] = time.perf_counter() - t
        out["evaluate_adapted"] = show_eval(f"after train --minutes {minutes:g}", run_evaluation(store, config, dataset=name))
        blend = out["evaluate_adapted"]["blend"]["mrr"]
        adapted = out["evaluate_adapted"].get("model adapted", {}).get("mrr", float("nan"))
        print(f"  adapted model MRR {adapted:.4f} vs blend {blend:.4f} -> {adapted / blend:.2f}x")
        scored = score_store(store, config, encoder=encoder)
        out["adapted_quality"] = {k: v.to_dict() for k, v in scored.calibrations.items()}
        out["adapted"] = next_event_figures(store, encoder, dataset_id)
        print(f"  re-scored with the adapted model: stored {out['adapted']['stored']:.4f} -> "
              f"{out['adapted']['ratio_vs_best_trivial']:.2f}x the best trivial baseline")
    return out


def nyc(work: Path, encoder: TextEncoder) -> dict:
    """The demo: `interestgeo demo` into a fresh database (timed), then evaluate."""
    db = work / "nyc.duckdb"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "interestgeo.cli", "demo", "--db", str(db)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    out: dict = {"demo_command_s": time.perf_counter() - t}
    print(f"  `interestgeo demo` (fresh database, shipped model): {out['demo_command_s']:.0f} s (target <= 60 s)")
    config = Config().with_db(db)
    with Store.open(db, config=config) as store:
        out["quality"] = {k: v.to_dict() for k, v in score_store(store, config, encoder=encoder).calibrations.items()}
        out["next_event"] = next_event_figures(store, encoder, store.dataset_id("nyc-demo"))
        out["evaluate"] = show_eval("evaluate (NYC demo, test split)", run_evaluation(store, config))
    m, b = out["evaluate"]["model"], out["evaluate"]["blend"]
    nt = out["evaluate"]["model (next time not given)"]
    print(f"  model with next time {m['acc@1']:.4f} / {m['mrr']:.4f} (target >= 0.33 / 0.456); without "
          f"{nt['acc@1']:.4f} / {nt['mrr']:.4f} vs blend {b['acc@1']:.4f} / {b['mrr']:.4f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_strangers_option(parser)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--skip-adapt", action="store_true")
    parser.add_argument("--skip-nyc", action="store_true")
    parser.add_argument("--only", choices=sorted(STRANGERS), default=None)
    parser.add_argument("--checkpoint", type=Path, default=shipped_model_dir(text_model_id(Config().text)),
                        help="checkpoint folder (default: the shipped one for the default encoder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_anydata-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {load()} (2 shared cores); work folder {work}; checkpoint {args.checkpoint}")
    encoder = encoder_for(Config().text)
    results: dict = {}
    for name, rel in STRANGERS.items():
        if args.only and name != args.only:
            continue
        csv = stranger_file(args.strangers, rel, f"the {name} stranger")
        if csv is None:
            continue
        print(f"{name}:")
        results[name] = stranger(name, csv, work, encoder, args.minutes, not args.skip_adapt, args.checkpoint)
    if not args.skip_nyc and not args.only:
        print("nyc-demo:")
        results["nyc"] = nyc(work, encoder)
    return finish(work, results)


if __name__ == "__main__":
    raise SystemExit(main())
