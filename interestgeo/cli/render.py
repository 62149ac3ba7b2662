"""The text (and JSON) a person reads from each command, built from the core's typed results.

Why here: the core returns dataclasses and frames and never prints; how a result reads on a
terminal is the CLI's business, and keeping every renderer in one module keeps the wording of
the whole CLI in one place. Functions here are pure (result in, string out): the command modules
print what they return.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from interestgeo.analytics import to_records
from interestgeo.cells import cells_to_str
from interestgeo.ingest import IngestReport

__all__ = [
    "accounts_text", "audit_text", "datasets_text", "evaluation_text", "explain_text", "export_text", "forecast_text",
    "ingest_json", "ingest_text", "results_json", "results_table", "score_text", "query_json", "query_text",
    "drift_json", "drift_text",
]

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # 0 = Monday, as analytics' `dow`


# ---------------------------------------------------------------------------- ingest


def ingest_text(report: IngestReport) -> str:
    """A few human lines summarising one file's load."""
    if report.already_loaded:
        return f"{report.source}: already loaded as dataset {report.dataset!r} (id {report.dataset_id}); nothing added"
    lines = [
        f"{report.source} -> dataset {report.dataset!r} (id {report.dataset_id})",
        f"  rows read {report.rows_read:,}, stored {report.rows_stored:,}, rejected {report.rows_rejected:,}, "
        f"duplicates skipped {report.duplicates_skipped:,}",
        f"  {report.elapsed_s:.2f} s, {report.events_per_s:,.0f} events/s",
    ]
    for reject in report.rejects[:5]:
        lines.append(f"  line {reject.line}: {reject.reason}")
    if report.rows_rejected > 5:
        lines.append(f"  ... {report.rows_rejected - 5:,} more rejects (see the store's rejects table)")
    return "\n".join(lines)


def ingest_json(results: list[IngestReport | tuple[Path, str]]) -> str:
    """One file: its report; several: {"files": [report or {"source", "error"}, ...]}."""
    entries = [r.to_dict() if isinstance(r, IngestReport) else {"source": str(r[0]), "error": r[1]} for r in results]
    return json.dumps(entries[0] if len(entries) == 1 else {"files": entries}, ensure_ascii=False, default=str)


# ---------------------------------------------------------------------------- forecast


def forecast_text(fc: Any) -> str:
    """A `forecast.Forecast`: the backtest table, then each region's next window and movers."""
    if fc.origin is None:
        return "nothing to forecast: no scored events pass the filters"
    lines = [f"topic shares per {fc.window}: forecast for the {fc.horizon} {fc.window}(s) after the one starting "
             f"{fc.origin.date()} (k = {fc.k} people per window)"]
    if fc.backtest is not None:
        lines.append(f"backtest ({len(fc.backtest.origins)} rolling origins, {fc.backtest.regions} region(s); "
                     f"a rise is +{100 * fc.rise_threshold:.0f} points or more):")
        lines.append(f"  {'method':<16}{'MAE (pts)':>10}{'precision':>11}{'recall':>8}{'F1':>7}{'AUC':>7}")
        for name, s in fc.backtest.scores.items():
            auc = "-" if s.auc_rising is None else f"{s.auc_rising:.3f}"
            lines.append(f"  {name:<16}{100 * s.mae:>10.2f}{s.precision_rising:>11.3f}{s.recall_rising:>8.3f}"
                         f"{s.f1_rising:>7.3f}{auc:>7}")
    for r in fc.regions:
        nxt = r.forecast[r.forecast["horizon"] == 1].sort_values("share", ascending=False).head(3)
        top = ", ".join(f"{t} {100 * s:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})"
                        for t, s, lo, hi in zip(nxt["topic"], nxt["share"], nxt["low"], nxt["high"], strict=True))
        rising = ", ".join(f"{t} {100 * c:+.1f}" for t, c in zip(r.rising["topic"], r.rising["change"], strict=True))
        falling = ", ".join(f"{t} {100 * c:+.1f}" for t, c in zip(r.falling["topic"], r.falling["change"], strict=True))
        lines.append(f"{r.label} [{r.kind}, {r.windows} {fc.window}s, {r.hidden} hidden]: next {top}")
        lines.append(f"    rising: {rising or 'none'} · falling: {falling or 'none'}")
    if fc.skipped:
        shown = "; ".join(f"{s.label}: {s.reason}" for s in fc.skipped[:5])
        more = f" (and {len(fc.skipped) - 5} more; --json lists them)" if len(fc.skipped) > 5 else ""
        lines.append(f"not forecast: {shown}{more}")
    if fc.hidden_regions:
        lines.append(f"{fc.hidden_regions} cell(s) hidden: no {fc.window} with at least {fc.k} people")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- export


def export_text(result: Any) -> str:
    """An `export.ExportResult`: what was written, and what was left out."""
    text = (f"wrote {result.rows:,} events of dataset {result.dataset!r} to {result.path}: {result.dim}-dim interest "
            f"vectors and text vectors, {result.bytes / 1e6:,.1f} MB in {result.seconds:.1f} s")
    if result.unscored:
        text += f"\n  {result.unscored:,} events without interest vectors left out: run `interestgeo score --since new`"
    return text


# ---------------------------------------------------------------------------- administration


def accounts_text(accounts: list[dict[str, Any]]) -> str:
    """`users list`: one line per account (`Account.describe()` rows)."""
    if not accounts:
        return "no accounts: the dashboard runs in local single-user mode ([app] role)"
    return "\n".join(f"{a['name']:<24} {a['role']:<9} created {a['created_at']}" for a in accounts)


def datasets_text(rows: list[dict[str, Any]]) -> str:
    """`datasets`: one line per loaded dataset."""
    if not rows:
        return "no datasets loaded"
    return "\n".join(
        f"{r['dataset_id']:>4}  {r['name']:<32} {r['rows_stored']:>10,} events  {r['rows_rejected']:>8,} "
        f"rejected  {r['ts_min'][:10]} – {r['ts_max'][:10]}  loaded {r['loaded_at'][:19]}"
        for r in rows
    )


def audit_text(entries: list[dict[str, Any]]) -> str:
    """`audit`: one line per entry (time, event, account, the rest as key=value)."""
    if not entries:
        return "the audit log is empty"
    lines = []
    for e in entries:
        detail = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("at", "event", "account"))
        lines.append(f"{e['at']}  {e['event']:<15} {e.get('account') or '-':<20} {detail}".rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------------------- explain


def explain_text(explanation: Any, top: int) -> str:
    """An `explain.Explanation`: top interests, the space-time effect, the `top` past events that
    mattered most by occlusion."""
    by_occlusion = explanation.events.sort_values("occlusion", ascending=False).head(top)
    return "\n".join([
        f"user {explanation.user_id!r} (dataset {explanation.dataset_id}) right after {explanation.at.isoformat()}:",
        "top interests: " + ", ".join(f"{r.topic} {r.share:.0%}" for r in explanation.topics.head(3).itertuples()),
        f"time and place effect: {explanation.spacetime_effect:.3f} (1 - cosine to the vector without them); "
        f"attention vs occlusion rank agreement: {explanation.agreement:.2f}",
        "past events that mattered most (occlusion = how far removing it moves the interest vector):",
        by_occlusion[["ts", "text", "occlusion", "occlusion_rank", "attention", "attention_rank"]].to_string(
            index=False, float_format=lambda x: f"{x:.4f}"
        ),
    ])


# ---------------------------------------------------------------------------- evaluate

Results = dict[str, dict[str, dict[str, float]]]  # {task: {scorer: {metric: value}}}


def results_table(results: Results, title: str = "") -> str:
    """A fixed-width text table: one block per task, one row per scorer."""
    from interestgeo.metrics import METRICS

    lines = [title] if title else []
    width = max([len(name) for task in results.values() for name in task] + [5])
    for task, by_name in results.items():
        lines.append(f"{task:<{width}}  " + "  ".join(f"{m:>7}" for m in METRICS))
        for name, metrics in by_name.items():
            lines.append(f"{name:<{width}}  " + "  ".join(f"{metrics[m]:>7.4f}" for m in METRICS))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def results_json(results: Results) -> str:
    """The results as one JSON object (metrics rounded to 6 digits so reruns compare equal)."""
    rounded = {
        task: {name: {m: round(v, 6) for m, v in metrics.items()} for name, metrics in by_name.items()}
        for task, by_name in results.items()
    }
    return json.dumps(rounded, indent=2)


def evaluation_text(run: Any) -> str:
    """An `eval.run.EvaluationRun`: what was ranked, the table, then its notes."""
    title = (
        f"{run.part} split: {run.n_samples:,} samples, ranked among {run.n_venues:,} venues "
        f"and {run.n_categories:,} categories (ties count against the target)"
    )
    return results_table(run.results, title=title + "\n") + "".join(f"note: {n}\n" for n in run.notes)


# ---------------------------------------------------------------------------- score, query, drift


def score_text(report: Any, warnings: Sequence[str] = ()) -> str:
    """A `vectors.ScoreReport`: what was scored, how fast, the topics, one quality line per dataset,
    then the `warnings` (e.g. texts the encoder cannot read)."""
    text = (
        f"scored {report.events:,} events of {report.users:,} users with {report.source!r} ({report.mode}): "
        f"{report.elapsed_s:.1f} s, {report.events_per_s:,.0f} events/s through the model, "
        f"{report.seconds_per_1000:.3f} s per 1,000 events; {report.topics} topics from {report.topics_source}"
    )
    return "\n".join([text, *report.quality_lines(), *warnings])


def _table(frame: pd.DataFrame, columns: list[str], rows: int) -> str:
    shown = frame[columns].head(rows).copy()
    if "cell" in shown:
        shown["cell"] = cells_to_str(shown["cell"])
    return shown.to_string(index=False, float_format=lambda x: f"{x:.3f}") if len(shown) else "  (nothing to show)"


def query_json(result: Any, filters: Any, resolution: int, top: int) -> dict[str, Any]:
    """An `analytics.QueryResult` as `query --json` prints it (the `top` cells)."""
    return {
        "phrase": result.phrase,
        "resolution": resolution,
        "filters": filters.to_dict(),
        "cells": to_records(result.cells.head(top)),
        "cells_total": len(result.cells),
        "hidden_cells": result.hidden,
        "time_profile": to_records(result.time_profile),
        "hidden_times": result.hidden_times,
        "strong_interest_threshold": result.threshold,
    }


def query_text(result: Any, resolution: int, top: int, k: int) -> str:
    """An `analytics.QueryResult`: the `top` cells, then the best hours of the week."""
    best_times = result.time_profile.sort_values("score", ascending=False).head(5)
    return "\n".join([
        f"where people are into {result.phrase!r} (H3 resolution {resolution}; "
        f"{result.hidden} cells hidden: fewer than {k} users)",
        _table(result.cells, ["rank", "cell", "score", "strong_users", "users", "events"], top),
        "when (best hours of the week): "
        + ", ".join(f"{DAY_NAMES[int(r.dow)]} {int(r.hour):02d}h ({r.score:.3f})" for r in best_times.itertuples()),
    ])


def drift_json(drift: Any, filters: Any, window: str, user: bool) -> dict[str, Any]:
    """An `analytics.Drift` as `drift --json` prints it."""
    return {
        "subject": "user" if user else "region",
        "window": window,
        "filters": filters.to_dict(),
        "timeline": to_records(drift.timeline),
        "topics": to_records(drift.topics),
        "hidden_windows": drift.hidden,
    }


def drift_text(drift: Any, window: str, user_id: str | None, k: int) -> str:
    """An `analytics.Drift`: the windows, the change points, the topics rising and falling most."""
    subject = f"user {user_id!r}" if user_id is not None else "the selected region"
    changes = drift.timeline[drift.timeline["change_point"]]
    return "\n".join([
        f"interest drift of {subject} per {window} ({len(drift.timeline)} windows, {drift.hidden} hidden: "
        f"fewer than {k} users)",
        _table(drift.timeline, ["window_start", "users", "events", "distance", "change_point"], 200),
        "change points: " + (", ".join(str(t.date()) for t in changes["window_start"]) or "none"),
        "rising: " + ", ".join(f"{r.topic} ({r.change:+.3f})" for r in drift.topics.head(3).itertuples()),
        "falling: " + ", ".join(f"{r.topic} ({r.change:+.3f})" for r in drift.topics.tail(3)[::-1].itertuples()),
    ])
