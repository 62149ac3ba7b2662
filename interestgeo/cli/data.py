"""Commands that move data in and out: `ingest`, `demo` (load, register the shipped model, score)
and `export vectors`.

Why together: they are the ones that read or write files beside the store; the analysis commands
(cli/analysis.py) only read the store.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from interestgeo.cli.render import export_text, ingest_json, ingest_text
from interestgeo.cli.options import (
    EXIT_FAILED, EXIT_OK, CliError, Subparsers, add_command, add_common, config_from, open_store,
)
from interestgeo.config import Config
from interestgeo.ingest import IngestError, IngestReport, detect_columns, ingest_file
from interestgeo.store import Store

__all__ = ["DEMO_DATASET", "DEMO_FILE", "add_demo_parser", "add_export_parser", "add_ingest_parser", "load_demo"]

DEMO_DATASET = "nyc-demo"
# The packaged demo data (see data/TSMC2014_readme.txt for its citation).
DEMO_FILE = Path(__file__).resolve().parents[2] / "data" / "nyc_checkins.csv.gz"


# ---------------------------------------------------------------------------- ingest


def add_ingest_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "ingest", _run_ingest, json_help="", help="load CSV files of events",
        description="Load CSV files of events into the store.",
        interrupted="nothing from the unfinished file was kept (files loaded before it are)",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="CSV files (plain or .gz)")
    parser.add_argument("--dataset", default=None, help="dataset name (default: the file name)")
    parser.add_argument(
        "--map", action="append", default=[], metavar="FIELD=COLUMN",
        help="column mapping override, e.g. text=venue_name+venue_category (repeatable)",
    )
    parser.add_argument(
        "--pseudonymise", action="store_true",
        help="store each user id as a keyed hash (key in <database>.pseudonym.key, created once, never printed)",
    )


def _run_ingest(args: argparse.Namespace) -> int:
    """Each file loads on its own (atomically); one unusable file does not stop the others.

    With one file a failure is the usual one line + exit 2. With several, every file gets its
    summary (or its one-line error on stderr; in --json an {"source", "error"} entry) and the
    exit code is 2 if any file could not be used.
    """
    if args.dataset and len(args.files) > 1:
        raise CliError("--dataset names one file's dataset; give one file per --dataset")
    config = config_from(args)
    results: list[IngestReport | tuple[Path, str]] = []
    with open_store(config) as store:
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
        print(ingest_json(results))
    else:
        for result in results:
            if isinstance(result, IngestReport):
                print(ingest_text(result))
    for _path, message in failed:
        print(f"interestgeo ingest: {message}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# ---------------------------------------------------------------------------- demo


def add_demo_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "demo", _run_demo,
        help="prepare the NYC demo: load, register the shipped model and score what is missing",
        description=f"Load {DEMO_FILE.name} (Foursquare NYC check-ins, TSMC2014) as dataset {DEMO_DATASET!r}, "
        "register the pretrained model shipped in data/model/<text encoder> when the store has no usable checkpoint "
        "(train one when it is missing), and score events that have no interest vectors yet. Each step is skipped when "
        "already done, so `make run` is fast after the first time.",
        interrupted="the steps finished before are kept; the unfinished load, training or scoring left nothing "
        "in the store (run `interestgeo demo` again to go on)",
    )
    parser.add_argument("--load-only", action="store_true", help="only load the demo data (e.g. to train a model on it)")


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
    from interestgeo.cli.analysis import score_and_report
    from interestgeo.cli.model import train_and_report
    from interestgeo.model import has_usable_checkpoint, register_checkpoint, shipped_model_dir
    from interestgeo.text import text_model_id
    from interestgeo.vectors import fill_missing_similarities

    config = config_from(args)
    model_id = text_model_id(config.text)
    folder = shipped_model_dir(model_id)
    with open_store(config) as store:
        report = load_demo(store, config)
        trained = has_usable_checkpoint(store, text_model_id=model_id)
        shipped = None
        if not trained and not args.load_only and (folder / "model.safetensors").exists():
            shipped = register_checkpoint(store, folder)
    if report is None:
        print(f"demo data already loaded (dataset {DEMO_DATASET!r} in {config.store.path})")
    else:
        print(ingest_text(report))
    if args.load_only:
        return EXIT_OK
    if shipped is not None:
        print(f"registered the pretrained model shipped in {folder} as checkpoint #{shipped}")
    elif not trained:
        # Only without the shipped model: the full training run (early stopping), ~10-15 min on 2 cores.
        print("training the interest model on the demo data (once; about 10-15 minutes on 2 CPU cores)", flush=True)
        train_and_report(config)
    with open_store(config) as store:
        unscored_users = len(store.unscored_events())
    if shipped is not None:  # every vector from the newly registered model (older ones came from another)
        print("scoring every event with the pretrained model", flush=True)
        with open_store(config) as store:
            _payload, text = score_and_report(store, config)
        print(text)
    elif unscored_users:
        print(f"scoring the events of {unscored_users:,} users with the trained model", flush=True)
        with open_store(config) as store:
            _payload, text = score_and_report(store, config, since="new" if trained else None)
        print(text)
    else:
        print("every event already has its interest vector")
    with open_store(config) as store:
        filled = fill_missing_similarities(store)
    if filled:
        print(f"stored the topic similarities of {filled:,} events scored by an older version")
    return EXIT_OK


# ---------------------------------------------------------------------------- export


def add_export_parser(subparsers: Subparsers) -> None:
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
    add_common(vectors, json_help="")
    vectors.add_argument("--dataset", required=True, metavar="NAME", help="the dataset to export")
    vectors.add_argument("--out", required=True, type=Path, metavar="FILE.parquet", help="the file to write")
    vectors.set_defaults(handler=_run_export_vectors,
                         interrupted="no file was written (an existing one at --out is as it was)")


def _run_export_vectors(args: argparse.Namespace) -> int:
    """Read-only, so it runs beside the dashboard (texts missing from the embedding cache are
    embedded but not cached then); a missing database is an error, not a new empty file."""
    from interestgeo.export import ExportError, export_vectors
    from interestgeo.text import TextModelError

    config = config_from(args)
    try:
        with Store.open(config.store.path, read_only=True, config=config) as store:
            result = export_vectors(store, config, args.dataset, args.out)
    except (ExportError, TextModelError) as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else export_text(result))
    return EXIT_OK

