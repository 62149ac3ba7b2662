"""Model: which interest model produces the vectors, how it was trained, how it compares.

Widgets -> the store's checkpoint registry and score runs (`store.checkpoints()`,
`store.score_runs()`) -> tables. Analysts can train a new checkpoint here (`interestgeo.model.train_model`,
with a progress bar per epoch; one run at a time per server, since it holds the database open
for writing); the CLI commands for training, scoring and the full evaluation are on the page too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from interestgeo.config import Config
from interestgeo.metrics import METRICS
from interestgeo.vectors import source_words
from pages import _ui as ui

# What the stored metric keys mean, in words (anything else is shown with its underscores as spaces).
VARIANT_LABELS = {"time_given": "with the time of the next event", "no_time": "without the time of the next event"}
TASK_LABELS = {"next_venue": "next venue", "next_category": "next category"}


def page() -> None:
    config = ui.app_config()
    st.title("Model")
    ui.require_database(config)
    if ui.TRAINING.locked():
        st.info("A training run is in progress (started from this page); it takes minutes. Reload when it is done.")
        return
    path, key = ui.db_path(config), ui.config_key(config)
    runs = ui.score_runs(path, key)
    if runs.empty:
        st.info(f"Nothing is scored yet: {ui.SCORE_HINT}.")
    else:
        last = runs.iloc[0]
        tiles = st.columns([2, 1, 1, 1])  # the source id is the longest value
        tiles[0].metric("Vectors from", source_words(str(last["source"])),
                        help=f"Source id `{last['source']}`. Recency: decayed mean of past text embeddings (no "
                             "training); otherwise the trained Transformer checkpoint (or the one adapted to a "
                             "dataset), blended with the person's recent history by a weight chosen per dataset "
                             "on its own most recent events (next-event MRR).")
        tiles[1].metric("Events scored", f"{int(last['events']):,}")
        tiles[2].metric("People", f"{int(last['users']):,}")
        tiles[3].metric("Scoring speed", f"{float(last['events_per_s']):,.0f}/s", help="Events scored per second.")
        _quality(path, key)
    st.subheader("Checkpoints")
    table = ui.checkpoints(path, key)
    if table.empty:
        st.info("No trained model yet. Train one with `interestgeo train` (CPU, minutes on the demo data), then "
                "`interestgeo score` to use it; until then the vectors come from the recency baseline.")
    else:
        # the file name says which checkpoint; the server's directory means nothing to a reader (it is in the CSV)
        files = [Path(str(p)).name for p in table["path"]]
        st.dataframe(table[["id", "name", "created_at", "path"]].assign(path=files), hide_index=True, width="stretch",
                     column_config={"path": st.column_config.TextColumn("file", help="The full path is in the CSV.")})
        ui.csv_download(table[["id", "name", "created_at", "path", "metrics"]], "checkpoints")
        newest = table.iloc[0]
        metrics = json.loads(newest["metrics"]) if isinstance(newest["metrics"], str) else {}
        results = _test_results(metrics)
        if results.empty:
            st.caption("The newest checkpoint stored no test metrics.")
        else:
            st.markdown(f"**Test metrics of checkpoint {int(newest['id'])} ({ui.md(newest['name'])})**")
            st.dataframe(results, hide_index=True, width="stretch",
                         column_config={m: st.column_config.NumberColumn(m, format="%.3f") for m in METRICS})
            ui.csv_download(results, f"checkpoint-{int(newest['id'])}-metrics")
        if "val_mrr" in metrics:
            st.caption(f"Best epoch {metrics.get('best_epoch')} · validation MRR {float(metrics['val_mrr']):.3f} · "
                       f"trained in {float(metrics.get('train_seconds', 0)):,.0f} s.")
    _train(config)
    st.subheader("Against the baselines")
    st.markdown(
        "`interestgeo evaluate` scores the model, its ablations and every baseline (popularity, "
        "nearest-popular, Markov, blend) on the same test samples and prints the table. "
        "`interestgeo train` trains a new checkpoint; `interestgeo score` rescoring makes it the source."
    )


def _train(config: Config) -> None:
    """Train a new checkpoint from the page (analysts only, one run at a time)."""
    st.subheader("Train a new model")
    st.markdown("From a terminal: `interestgeo train`, then `interestgeo score` to make the new checkpoint the "
                "source of the interest vectors.")
    if ui.role(config) != "analyst":
        st.caption("Training from the page is for the analyst role.")
        return
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    epochs = left.number_input("Epochs", min_value=1, max_value=config.model.epochs, value=config.model.epochs,
                               key="train_epochs", help="Fewer epochs: quicker, usually a weaker model "
                                                        "(training stops early when validation stops improving).")
    right.caption("CPU minutes on the demo data; every page waits while it runs (the database is open for "
                  "writing).")
    if not st.button("Train now", key="train_go", type="primary", icon=":material/model_training:"):
        return
    if not ui.TRAINING.acquire(blocking=False):
        st.info("Another training run started a moment ago; reload when it is done.")
        return
    from interestgeo.store import Store
    from interestgeo.model import train_model

    bar = st.progress(0.0, text="Preparing the training data (text embeddings, split)...")

    def log(message: str) -> None:
        if message.startswith("epoch "):
            done = int(message.split()[1].rstrip(":"))
            bar.progress(min(done / int(epochs), 1.0), text=message)

    try:
        ui.release_store()
        with Store.open(Path(config.store.path), config=config) as store:
            checkpoint = train_model(store, config, epochs=int(epochs), log=log)
    finally:
        ui.TRAINING.release()
        ui.release_store()
    bar.progress(1.0, text="Done.")
    st.success(f"Checkpoint {checkpoint} is trained and registered. Run `interestgeo score` to make it the source "
               "of the interest vectors.")
    st.button("Show it in the table", key="train_refresh")


def _quality(path: str, key: str) -> None:
    """Per dataset: how well its stored vectors anticipate people's next events (calibration.py)."""
    from interestgeo.calibration import stored_calibrations

    quality = stored_calibrations(ui.calibrations(path, key))
    if not quality:
        return
    st.subheader("How good are the interest vectors, per dataset")
    for name, calibration in quality:
        sentence = calibration.sentence(name)
        if calibration.measured and calibration.gain < -0.005:
            st.warning(sentence, icon=":material/warning:")
        else:
            st.markdown(f"- {ui.md(sentence)}")
    st.caption("Measured at scoring on each dataset's most recent tenth of events, which the model's counts never "
               "saw: the vector after an event should rank the person's next event's text first among the "
               "dataset's texts (MRR), against a decayed mean of their recent events (\"recent history\").")


def _test_results(metrics: dict[str, object]) -> pd.DataFrame:
    """Rows: variant x task; columns: the rank metrics."""
    rows = []
    for variant, tasks in metrics.items():
        if not variant.startswith("test_") or not isinstance(tasks, dict):
            continue
        for task, values in tasks.items():
            if isinstance(values, dict):
                name = variant.removeprefix("test_")
                rows.append({"variant": VARIANT_LABELS.get(name, name.replace("_", " ")),
                             "task": TASK_LABELS.get(task, task.replace("_", " ")),
                             **{m: values.get(m) for m in METRICS}})
    return pd.DataFrame(rows)


ui.run_page(page)
