"""The `interestgeo` command line (argparse; the console script calls `main`).

Subcommands register themselves in `SUBCOMMANDS`, a list of `(name, add_parser)` pairs: an
`add_parser(subparsers)` function adds its parser and sets `handler` (a function of the parsed
args returning the exit code) with `set_defaults`. Adding a subcommand is one function plus one
list entry, so several people can extend the CLI without touching each other's code.

Users never see a traceback: expected failures (IngestError, bad arguments, a locked or missing
database) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from interestgeo.config import Config, load_config
from interestgeo.ingest import IngestError, IngestReport, detect_columns, ingest_file
from interestgeo.store import Store

__all__ = ["main", "SUBCOMMANDS", "CliError", "DEMO_DATASET", "DEMO_FILE"]

EXIT_OK = 0
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
    return config.with_db(args.db) if args.db else config


def _open_store(config: Config) -> Store:
    return Store.open(config.store.path, config=config)


# ---------------------------------------------------------------------------- ingest (owner: ingest)


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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_ingest)


def _run_ingest(args: argparse.Namespace) -> int:
    if args.dataset and len(args.files) > 1:
        raise CliError("--dataset names one file's dataset; give one file per --dataset")
    config = _config(args)
    reports: list[IngestReport] = []
    with _open_store(config) as store:
        for path in args.files:
            mapping = None
            if args.map:
                try:
                    mapping = detect_columns(path).with_overrides(args.map)
                except ValueError as exc:
                    raise CliError(str(exc)) from exc
            reports.append(ingest_file(store, path, config=config, mapping=mapping, dataset=args.dataset))
    if args.json:
        payload = reports[0].to_dict() if len(reports) == 1 else {"files": [r.to_dict() for r in reports]}
        print(json.dumps(payload, ensure_ascii=False, default=str))
    else:
        for report in reports:
            print(format_report(report))
    return EXIT_OK


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


# ---------------------------------------------------------------------------- demo (owner: ingest; lead extends)


def _add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="load the NYC demo data when missing",
        description=f"Load {DEMO_FILE.name} (Foursquare NYC check-ins, TSMC2014) as dataset {DEMO_DATASET!r}.",
    )
    _add_common(parser)
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
    config = _config(args)
    with _open_store(config) as store:
        report = load_demo(store, config)
    if report is None:
        print(f"demo data already loaded (dataset {DEMO_DATASET!r} in {config.store.path})")
    else:
        print(format_report(report))
    return EXIT_OK


# ---------------------------------------------------------------------------- registry

SUBCOMMANDS: list[tuple[str, Callable[[argparse._SubParsersAction], None]]] = [
    ("ingest", _add_ingest_parser),
    ("demo", _add_demo_parser),
]


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
        return int(args.handler(args))
    except (CliError, IngestError, ValueError, FileNotFoundError) as exc:
        print(f"interestgeo {args.command}: {exc}", file=sys.stderr)
    except duckdb.Error as exc:
        print(f"interestgeo {args.command}: database error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"interestgeo {args.command}: interrupted; nothing from the unfinished file was kept", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
