"""The `interestgeo` command line (argparse; the console script calls `main`).

Why a package: the core returns typed results and never prints; everything a person reads from a
command (its text, its JSON, progress bars, "waiting" lines) is made here. The commands live by
area (data.py: ingest, demo, export; analysis.py: score, query, explain, drift, forecast;
model.py: train, evaluate; admin.py: users, datasets, audit), their shared options in options.py
and the text of their results in render.py.

Subcommands register themselves in `SUBCOMMANDS`, a list of `(name, add_parser)` pairs: an
`add_parser(subparsers)` function adds its parser and sets `handler` (a function of the parsed
args returning the exit code) with `set_defaults`. Adding a subcommand is one function plus one
list entry, so several people can extend the CLI without touching each other's code.

Users never see a traceback: expected failures (IngestError, bad arguments, a locked or missing
database, a write that waited too long for another) become one line on stderr and exit code 2; an
unexpected error (a bug) is one line too, exit code 1, with its traceback only when
INTERESTGEO_TRACEBACK is set. Ctrl-C (a KeyboardInterrupt, or DuckDB's "Query interrupted" when it
lands in a query) is one line saying what the command left behind (its `interrupted` default, see
options.add_command), exit code 130.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import sys
from collections.abc import Callable, Sequence

import duckdb

from interestgeo.access import AccessDenied
from interestgeo.cli.admin import add_audit_parser, add_datasets_parser, add_users_parser
from interestgeo.cli.analysis import (
    add_drift_parser, add_explain_parser, add_forecast_parser, add_query_parser, add_score_parser,
)
from interestgeo.cli.data import add_demo_parser, add_export_parser, add_ingest_parser
from interestgeo.cli.model import add_evaluate_parser, add_train_parser
from interestgeo.cli.options import EXIT_BUG, EXIT_FAILED, EXIT_INTERRUPTED, CliError, Subparsers
from interestgeo.ingest import IngestError
from interestgeo.store import StoreBusy

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

SUBCOMMANDS: list[tuple[str, Callable[[Subparsers], None]]] = [
    ("ingest", add_ingest_parser),
    ("demo", add_demo_parser),
    ("score", add_score_parser),
    ("query", add_query_parser),
    ("explain", add_explain_parser),
    ("drift", add_drift_parser),
    ("forecast", add_forecast_parser),
    ("evaluate", add_evaluate_parser),
    ("train", add_train_parser),
    ("export", add_export_parser),
    # administration: who may see the data (admin.py)
    ("users", add_users_parser),
    ("datasets", add_datasets_parser),
    ("audit", add_audit_parser),
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
        # in a copy of the context: the viewer a command declares (see options.config_from) ends with it
        return int(contextvars.copy_context().run(args.handler, args))
    except (CliError, IngestError, ValueError, FileNotFoundError, AccessDenied, StoreBusy) as exc:
        print(f"interestgeo {args.command}: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, duckdb.InterruptException):
        return _interrupted(args)
    except duckdb.Error as exc:
        print(f"interestgeo {args.command}: database error: {_one_line(exc)}", file=sys.stderr)
    except Exception as exc:  # a bug: still one line for the user, the traceback on request
        if isinstance(exc, RuntimeError) and str(exc).startswith(DUCKDB_INTERRUPTED):
            return _interrupted(args)
        if os.environ.get("INTERESTGEO_TRACEBACK"):
            raise
        print(f"interestgeo {args.command}: internal error ({type(exc).__name__}: {_one_line(exc)}); "
              "run with INTERESTGEO_TRACEBACK=1 for details", file=sys.stderr)
        return EXIT_BUG
    return EXIT_FAILED


# What DuckDB's Python client raises (a plain RuntimeError) when Ctrl-C lands while a query runs:
# it takes the KeyboardInterrupt itself to stop the query. Elsewhere Ctrl-C is a KeyboardInterrupt.
DUCKDB_INTERRUPTED = "Query interrupted"


def _interrupted(args: argparse.Namespace) -> int:
    left = getattr(args, "interrupted", None)
    print(f"interestgeo {args.command}: interrupted" + (f"; {left}" if left else ""), file=sys.stderr)
    return EXIT_INTERRUPTED


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
