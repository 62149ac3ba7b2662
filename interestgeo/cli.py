"""The `interestgeo` command line (argparse; the console script calls `main`).

Subcommands register themselves in `SUBCOMMANDS`, a list of `(name, add_parser)` pairs: an
`add_parser(subparsers)` function adds its parser and sets `handler` (a function of the parsed
args returning the exit code) with `set_defaults`. Adding a subcommand is one function plus one
list entry, so several people can extend the CLI without touching each other's code.

Users never see a traceback: expected failures (IngestError, bad arguments, a locked or missing
database, a write that waited too long for another) become one line on stderr and exit code 2; an
unexpected error (a bug) is one line too, exit code 1, with its traceback only when
INTERESTGEO_TRACEBACK is set.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from interestgeo.access import AccessDenied, declare_viewer
from interestgeo.cli_admin import add_audit_parser, add_datasets_parser, add_users_parser
from interestgeo.config import Config, load_config
from interestgeo.ingest import IngestError, IngestReport, detect_columns, ingest_file
from interestgeo.store import Store
from interestgeo.store_access import StoreBusy

__all__ = ["main", "SUBCOMMANDS", "CliError", "DEMO_DATASET", "DEMO_FILE"]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_FAILED = 2

DEMO_DATASET = "nyc-demo"
# The packaged demo data (see data/TSMC2014_readme.txt for its citation).
DEMO_FILE = Path(__file__).resolve().parent.parent / "data" / "nyc_checkins.csv.gz"


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


# ---------------------------------------------------------------------------- shared options


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None, help="DuckDB file (default: config store.path)")
    parser.add_argument("--config", type=Path, default=None, help="TOML config file")


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    # The viewer: `[app] role` when set, else analyst (whoever runs the CLI holds the database).
    # A marketer config makes the per-person commands (explain, drift --user) refuse.
    declare_viewer(config.app.role or "analyst")
    return config.with_db(args.db) if args.db else config


def _open_store(config: Config) -> Store:
    """The store for writing. Another write (a load, scoring, training, an upload) makes it wait,
    up to `store.write_wait_s`, and say so once on stderr; a dashboard that is open never does
    for longer than its current query (see store_access.py)."""
    return Store.open(config.store.path, config=config, on_wait=_say_waiting(config))


def _say_waiting(config: Config) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"interestgeo: {message} (waiting up to {config.store.write_wait_s:.0f} s)...", file=sys.stderr,
              flush=True)

    return say


# ---------------------------------------------------------------------------- ingest


def _add_ingest_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest", help="load CSV files of events", description="Load CSV files of events into the store."
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="CSV files (plain or .gz)")
    _add_common(parser)
    parser.add_argument("--dataset", default=None, help="dataset name (default: the file name)")
    parser.add_argument(
        "--map", action="append", default=[], metavar="FIELD=COLUMN",
        help="column mapping override, e.g. text=venue_name+venue_category (repeatable)",
    )
    parser.add_argument(
        "--pseudonymise", action="store_true",
        help="store each user id as a keyed hash (key in <database>.pseudonym.key, created once, never printed)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_ingest)


def _run_ingest(args: argparse.Namespace) -> int:
    """Each file loads on its own (atomically); one unusable file does not stop the others.

    With one file a failure is the usual one line + exit 2. With several, every file gets its
    summary (or its one-line error on stderr; in --json an {"source", "error"} entry) and the
    exit code is 2 if any file could not be used.
    """
    if args.dataset and len(args.files) > 1:
        raise CliError("--dataset names one file's dataset; give one file per --dataset")
    config = _config(args)
    results: list[IngestReport | tuple[Path, str]] = []
    with _open_store(config) as store:
        key = None
        if args.pseudonymise:
            from interestgeo.pseudonym import key_path, load_or_create_key

            key = load_or_create_key(key_path(config.store.path))
        for path in args.files:
            try:
                mapping = detect_columns(path).with_overrides(args.map) if args.map else None
                results.append(ingest_file(store, path, config=config, mapping=mapping, dataset=args.dataset,
                                           pseudonym_key=key))
            except (IngestError, ValueError) as exc:
                if len(args.files) == 1:
                    raise
                results.append((path, str(exc)))
    failed = [r for r in results if isinstance(r, tuple)]
    if args.json:
        entries = [r.to_dict() if isinstance(r, IngestReport) else {"source": str(r[0]), "error": r[1]}
                   for r in results]
        print(json.dumps(entries[0] if len(entries) == 1 else {"files": entries}, ensure_ascii=False, default=str))
    else:
        for result in results:
            if isinstance(result, IngestReport):
                print(format_report(result))
    for path, message in failed:
        print(f"interestgeo ingest: {message}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def format_report(report: IngestReport) -> str:
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


# ---------------------------------------------------------------------------- demo


def _add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="prepare the NYC demo: load, register the shipped model and score what is missing",
        description=f"Load {DEMO_FILE.name} (Foursquare NYC check-ins, TSMC2014) as dataset {DEMO_DATASET!r}, "
        "register the pretrained model shipped in data/model/<text encoder> when the store has no usable checkpoint (train one "
        "when it is missing), and score events that have no interest vectors yet. Each step is skipped when "
        "already done, so `make run` is fast after the first time.",
    )
    _add_common(parser)
    parser.add_argument("--load-only", action="store_true", help="only load the demo data (e.g. to train a model on it)")
    parser.set_defaults(handler=_run_demo)


def load_demo(store: Store, config: Config) -> IngestReport | None:
    """Ingest the demo file as `nyc-demo` unless present; None when it already was."""
    if store.dataset_id(DEMO_DATASET) is not None:
        return None
    # Auto-detection maps this file as the contract wants: text = venue_name + venue_category
    # (joined, the category alone when the name is empty), item_id = venue_id, category =
    # venue_category, category_path kept, ts = utc_time, tz_offset_min. Stated explicitly so a
    # change to the alias table cannot silently change the demo.
    mapping = detect_columns(DEMO_FILE).with_overrides(
        {"user_id": "user_id", "ts": "utc_time", "lat": "latitude", "lon": "longitude",
         "text": "venue_name+venue_category", "item_id": "venue_id", "category": "venue_category",
         "category_path": "category_path", "tz_offset_min": "tz_offset_min"}
    )
    return ingest_file(store, DEMO_FILE, config=config, mapping=mapping, dataset=DEMO_DATASET)


def _run_demo(args: argparse.Namespace) -> int:
    from interestgeo.score import fill_missing_similarities, score_command
    from interestgeo.text import text_model_id
    from interestgeo.train import has_usable_checkpoint, register_checkpoint, run_train_command, shipped_model_dir

    config = _config(args)
    model_id = text_model_id(config.text)
    folder = shipped_model_dir(model_id)
    with _open_store(config) as store:
        report = load_demo(store, config)
        trained = has_usable_checkpoint(store, text_model_id=model_id)
        shipped = None
        if not trained and not args.load_only and (folder / "model.safetensors").exists():
            shipped = register_checkpoint(store, folder)
    if report is None:
        print(f"demo data already loaded (dataset {DEMO_DATASET!r} in {config.store.path})")
    else:
        print(format_report(report))
    if args.load_only:
        return EXIT_OK
    if shipped is not None:
        print(f"registered the pretrained model shipped in {folder} as checkpoint #{shipped}")
    elif not trained:
        # Only without the shipped model: the full training run (early stopping), ~10-15 min on 2 cores.
        print("training the interest model on the demo data (once; about 10-15 minutes on 2 CPU cores)", flush=True)
        run_train_command(config, epochs=None, seed=None, ablations=False, error=CliError)
    with _open_store(config) as store:
        unscored_users = len(store.unscored_events())
    if shipped is not None:  # every vector from the newly registered model (older ones came from another)
        print("scoring every event with the pretrained model", flush=True)
        with _open_store(config) as store:
            _payload, text = score_command(store, config)
        print(text)
    elif unscored_users:
        print(f"scoring the events of {unscored_users:,} users with the trained model", flush=True)
        with _open_store(config) as store:
            _payload, text = score_command(store, config, since="new" if trained else None)
        print(text)
    else:
        print("every event already has its interest vector")
    with _open_store(config) as store:
        filled = fill_missing_similarities(store)
    if filled:
        print(f"stored the topic similarities of {filled:,} events scored by an older version")
    return EXIT_OK


# ---------------------------------------------------------------------------- analytics


def _analytics_run(args: argparse.Namespace, command: Callable[[Store, Config], tuple[dict, str]]) -> int:
    """Open the store, run an analytics command, print JSON or text; expected failures -> CliError."""
    from interestgeo.text import TextModelError

    config = _config(args)
    try:
        with _open_store(config) as store:
            payload, text = command(store, config)
    except (LookupError, TextModelError) as exc:
        raise CliError(str(exc).strip("'\"")) from None
    print(json.dumps(payload, ensure_ascii=False, default=str) if args.json else text)
    return EXIT_OK


def _add_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", action="append", default=None, metavar="NAME", help="dataset (repeatable; default all)")
    parser.add_argument("--from", dest="date_from", default=None, metavar="DATE", help="first local date (YYYY-MM-DD)")
    parser.add_argument("--to", dest="date_to", default=None, metavar="DATE", help="last local date, inclusive")
    parser.add_argument("--hours", default=None, help="local hours, e.g. 18-23 or 22-2,12")
    parser.add_argument("--days", default=None, help="days of week, 0=Monday, e.g. 0-4 or 5,6")
    parser.add_argument("--region", default=None, help="a GeoJSON file of polygons, or H3 cells (hex, comma-separated)")
    parser.add_argument("--topic", default=None, help="only events of this topic")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _filters(args: argparse.Namespace, store: Store) -> Any:
    from interestgeo.analytics import filters_from_options

    return filters_from_options(
        store, datasets=args.dataset, date_from=args.date_from, date_to=args.date_to,
        hours=args.hours, days=args.days, region=args.region, topic=args.topic,
    )


def _add_score_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="compute interest vectors with the trained model",
        description="Run the trained model over every user's history; store per-event, user x window and "
        "cell x window interest vectors and the interest topics.",
    )
    _add_common(parser)
    parser.add_argument("--dataset", action="append", default=None, metavar="NAME", help="only this dataset (repeatable)")
    parser.add_argument(
        "--since", default=None, metavar="TIME|new",
        help="dynamic update without retraining: only users with unscored events (new) or events at/after TIME (UTC)",
    )
    parser.add_argument("--refresh-topics", action="store_true", help="re-derive the interest topics")
    parser.add_argument(
        "--source", choices=("model", "recency"), default="model",
        help="model: the trained checkpoint (default); recency: decayed mean of text embeddings, no training needed",
    )
    parser.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this process (default); ray: Ray Data stages on a Ray cluster (pip install 'interestgeo[ray]')",
    )
    parser.add_argument(
        "--ray-address", default=None, metavar="ADDRESS",
        help="with --engine ray: the cluster to join (auto, or ray://HOST:10001); default a local cluster on this machine",
    )
    parser.add_argument("--ray-workers", type=int, default=2, metavar="N", help="with --engine ray: scoring actors (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from interestgeo.score import score_command

    from interestgeo.ray_engine import RayEngineError, RayOptions, score_store_ray  # Ray itself loads only when run

    engine = None
    if args.engine == "ray":
        if args.since is not None:
            raise CliError("--engine ray runs full scores: run an update (--since) with --engine local")
        if args.ray_workers < 1:
            raise CliError("--ray-workers must be at least 1")
        engine = functools.partial(score_store_ray, options=RayOptions(address=args.ray_address, workers=args.ray_workers))
    try:
        return _analytics_run(
            args,
            lambda store, config: score_command(
                store, config, datasets=args.dataset, since=args.since, refresh_topics=args.refresh_topics,
                source_name=args.source, show_progress=not args.json, engine=engine,
            ),
        )
    except RayEngineError as exc:
        raise CliError(str(exc)) from None


def _add_query_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query", help="where and when people are interested in a phrase",
        description="Rank H3 cells and hours of the week by interest in a free-text phrase (k threshold applied).",
    )
    parser.add_argument("phrase", help='e.g. "late-night food" or "jazz"')
    _add_common(parser)
    _add_filter_options(parser)
    parser.add_argument("--resolution", type=int, default=8, help="H3 resolution of the ranked cells (default 8)")
    parser.add_argument("--top", type=int, default=10, help="cells to show (default 10)")
    parser.set_defaults(handler=_run_query)


def _run_query(args: argparse.Namespace) -> int:
    from interestgeo.analytics import query_command
    from interestgeo.text import encoder_for

    return _analytics_run(
        args,
        lambda store, config: query_command(
            store, config, encoder_for(config.text), args.phrase, _filters(args, store), args.resolution, args.top
        ),
    )


def _add_explain_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain", help="why the model sees a user's interests as it does (analyst-only)",
        description="Attention roll-up and leave-one-out occlusion of a user's past events, and the effect of time and place.",
    )
    parser.add_argument("user", help="user id")
    _add_common(parser)
    parser.add_argument("--dataset", default=None, metavar="NAME", help="the user's dataset (needed when ambiguous)")
    parser.add_argument("--at", default=None, metavar="TIME", help="explain the interest at this time (UTC; default: latest)")
    parser.add_argument("--top", type=int, default=10, help="past events to show (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    from interestgeo.explain import explain_command

    return _analytics_run(
        args,
        lambda store, config: explain_command(store, config, args.user, dataset=args.dataset, at=args.at, top=args.top),
    )


def _add_drift_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "drift", help="how interests changed over time in a region or for a user",
        description="Distance between consecutive windows' interest vectors, change points, rising and falling topics.",
    )
    _add_common(parser)
    _add_filter_options(parser)
    parser.add_argument("--user", default=None, help="one user's drift instead of a region's (analyst-only)")
    parser.add_argument("--window", choices=("day", "week", "month"), default="week", help="window size (default week)")
    parser.set_defaults(handler=_run_drift)


def _run_drift(args: argparse.Namespace) -> int:
    from interestgeo.analytics import drift_command

    def command(store: Store, config: Config) -> tuple[dict, str]:
        filters = _filters(args, store)
        user = None
        if args.user is not None:
            user = (filters.datasets[0] if filters.datasets else _only_dataset(store), args.user)
        return drift_command(store, config, filters, args.window, user)

    return _analytics_run(args, command)


def _only_dataset(store: Store) -> int:
    ids = store.datasets()["dataset_id"].tolist()
    if len(ids) != 1:
        raise CliError(f"the store holds {len(ids)} datasets: name the user's with --dataset")
    return int(ids[0])


# ---------------------------------------------------------------------------- forecast


def _add_forecast_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "forecast", help="forecast topic shares per region, backtested against simple baselines",
        description="For everywhere, each named area and each coarse H3 cell with enough windows of at least k "
        "people: the topic shares of the next windows with an interval, the topics expected to rise or fall, and "
        "a rolling-origin backtest of the forecast beside persistence, a moving average and (days) seasonal naive.",
    )
    _add_common(parser)
    parser.add_argument("--dataset", action="append", default=None, metavar="NAME", help="dataset (repeatable; default all)")
    parser.add_argument(
        "--region", default=None,
        help="one region instead of all: a named area (e.g. 'Brooklyn'), a GeoJSON file or H3 cells (hex, comma-separated)",
    )
    parser.add_argument("--window", choices=("week", "day"), default="week", help="window size (default week)")
    parser.add_argument("--horizon", type=int, default=None, help="windows ahead (default config forecast.horizon)")
    parser.add_argument("--json", action="store_true", help='print one JSON object {"forecast": ..., "backtest": ...}')
    parser.set_defaults(handler=_run_forecast)


def _run_forecast(args: argparse.Namespace) -> int:
    import shapely

    from interestgeo.analytics import filters_from_options, load_scored
    from interestgeo.areas import named_area_geometries
    from interestgeo.forecast import forecast_all, forecast_region, forecast_to_json

    def command(store: Store, config: Config) -> tuple[dict, str]:
        filters = filters_from_options(store, datasets=args.dataset)
        scored = load_scored(store, config, vector_loader=store.event_vectors)  # shares only: no vectors read
        if args.region is None:
            fc = forecast_all(scored, filters, args.window, args.horizon)
        else:
            areas = named_area_geometries()
            if args.region in areas:
                region = filters.replace(geojson=shapely.to_geojson(areas[args.region]))
            else:
                try:
                    region = filters_from_options(store, datasets=args.dataset, region=args.region)
                except ValueError as exc:
                    raise CliError(f"{exc}, nor a named area (e.g. 'Brooklyn' or 'Clinton (Manhattan)')") from None
            fc = forecast_region(scored, region, args.window, args.horizon, label=args.region)
        return forecast_to_json(fc), _forecast_text(fc)

    return _analytics_run(args, command)


def _forecast_text(fc: Any) -> str:
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


# ---------------------------------------------------------------------------- evaluate


def _add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="next-venue / next-category metrics of the model, its ablations and the baselines",
        description="Split the stored events (issue 3 protocol: 24 h trajectories, 80/10/10 by time), then "
        "rank every training venue for each test trajectory's last check-in with the trained model, each "
        "ablation and each baseline; prints Acc@1/5/10, MRR and NDCG@10.",
    )
    _add_common(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object {task: {scorer: metrics}}")
    parser.add_argument("--checkpoint", type=int, default=None, metavar="ID", help="model checkpoint (default: newest)")
    parser.add_argument("--part", choices=("test", "val"), default="test", help="samples to evaluate (default: test)")
    parser.add_argument(
        "--dataset", default=None, metavar="NAME",
        help="that dataset alone, on its own split: the model zero-shot (or adapted) beside baselines fitted on it",
    )
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from interestgeo.evaluate import EvaluationError, results_to_json, run_evaluation

    config = _config(args)
    try:
        with _open_store(config) as store:
            run = run_evaluation(store, config, checkpoint_id=args.checkpoint, part=args.part, dataset=args.dataset)
    except EvaluationError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(results_to_json(run.results))
        for note in run.notes:
            print(f"note: {note}", file=sys.stderr)
    else:
        print(run.to_text(), end="")
    return EXIT_OK


# ---------------------------------------------------------------------------- train


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train the interest model on the stored events and save a checkpoint",
        description="Split the stored events (chronological 80/10/10, see README), train the Transformer on the training "
        "period with early stopping on validation MRR, and register a safetensors checkpoint in the store.",
    )
    _add_common(parser)
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: config model.epochs)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: config model.seed)")
    parser.add_argument(
        "--ablations", action="store_true",
        help="instead, train the ablations (ID-only SASRec, no text, no space-time, no copy) for `evaluate`",
    )
    parser.add_argument("--dataset", default=None, metavar="NAME", help="train on this dataset's events only")
    parser.add_argument(
        "--from", dest="init_from", default=None, metavar="CHECKPOINT",
        help="adapt: warm-start from this checkpoint (id or name, e.g. 'model') and fine-tune on --dataset; "
        "registered as 'adapted:NAME' and used when scoring that dataset",
    )
    parser.add_argument("--minutes", type=float, default=None, help="time budget (stops after the batch that passes it)")
    parser.add_argument("--out", type=Path, default=None, metavar="FOLDER", help="write the checkpoint to this new folder")
    parser.add_argument("--half", action="store_true", help="store float weights as float16 (the shipped model)")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from interestgeo.train import run_train_command

    if args.init_from is not None and args.dataset is None:
        raise CliError("--from adapts a model to one dataset: name it with --dataset")
    return run_train_command(
        _config(args), epochs=args.epochs, seed=args.seed, ablations=args.ablations, error=CliError,
        dataset=args.dataset, init_from=args.init_from, minutes=args.minutes, folder=args.out, half=args.half,
    )


# ---------------------------------------------------------------------------- export


def _add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write stored results to files (interest vectors as Parquet)",
        description="Write stored results to files for other tools.",
    )
    kinds = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    vectors = kinds.add_parser(
        "vectors", help="one dataset's events with their interest vectors and text vectors (Parquet)",
        description="Write one row per scored event of a dataset: dataset, user_id, ts (UTC), lat, lon, text, "
        "vector (the stored interest vector) and text_vector (the text's embedding), as Parquet for kepler.gl, "
        "lonboard or pandas. The file holds user ids: it is personal data.",
    )
    _add_common(vectors)
    vectors.add_argument("--dataset", required=True, metavar="NAME", help="the dataset to export")
    vectors.add_argument("--out", required=True, type=Path, metavar="FILE.parquet", help="the file to write")
    vectors.add_argument("--json", action="store_true", help="print one JSON object")
    vectors.set_defaults(handler=_run_export_vectors)


def _run_export_vectors(args: argparse.Namespace) -> int:
    """Read-only, so it runs beside the dashboard (texts missing from the embedding cache are
    embedded but not cached then); a missing database is an error, not a new empty file."""
    from interestgeo.export import ExportError, export_vectors
    from interestgeo.text import TextModelError

    config = _config(args)
    try:
        with Store.open(config.store.path, read_only=True, config=config) as store:
            result = export_vectors(store, config, args.dataset, args.out)
    except (ExportError, TextModelError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return EXIT_OK
    print(f"wrote {result.rows:,} events of dataset {result.dataset!r} to {result.path}: {result.dim}-dim interest "
          f"vectors and text vectors, {result.bytes / 1e6:,.1f} MB in {result.seconds:.1f} s")
    if result.unscored:
        print(f"  {result.unscored:,} events without interest vectors left out: run `interestgeo score --since new`")
    return EXIT_OK


# ---------------------------------------------------------------------------- registry

SUBCOMMANDS: list[tuple[str, Callable[[argparse._SubParsersAction], None]]] = [
    ("ingest", _add_ingest_parser),
    ("demo", _add_demo_parser),
    ("score", _add_score_parser),
    ("query", _add_query_parser),
    ("explain", _add_explain_parser),
    ("drift", _add_drift_parser),
    ("forecast", _add_forecast_parser),
    ("evaluate", _add_evaluate_parser),
    ("train", _add_train_parser),
    ("export", _add_export_parser),
]
# Administration: who may see the data (interestgeo/cli_admin.py).
SUBCOMMANDS += [("users", add_users_parser), ("datasets", add_datasets_parser), ("audit", add_audit_parser)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interestgeo", description="How people's interests move through space and time."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for _name, add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (argparse usage errors exit 2 as well)."""
    args = build_parser().parse_args(argv)
    try:
        # in a copy of the context: the viewer a command declares (see _config) ends with it
        return int(contextvars.copy_context().run(args.handler, args))
    except (CliError, IngestError, ValueError, FileNotFoundError, AccessDenied, StoreBusy) as exc:
        print(f"interestgeo {args.command}: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, duckdb.InterruptException):
        print(f"interestgeo {args.command}: interrupted; nothing from the unfinished file was kept", file=sys.stderr)
    except duckdb.Error as exc:
        print(f"interestgeo {args.command}: database error: {_one_line(exc)}", file=sys.stderr)
    except Exception as exc:  # a bug: still one line for the user, the traceback on request
        if os.environ.get("INTERESTGEO_TRACEBACK"):
            raise
        print(f"interestgeo {args.command}: internal error ({type(exc).__name__}: {_one_line(exc)}); "
              "run with INTERESTGEO_TRACEBACK=1 for details", file=sys.stderr)
        return EXIT_BUG
    return EXIT_FAILED


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
