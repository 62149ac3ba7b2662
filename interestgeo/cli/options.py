"""What every subcommand shares: the exit codes, `CliError`, the common options (`--db`,
`--config`, `--json`, `--dataset`, the analytics filters) and how a command opens its store.

Why one module: the options were written out again in each command module (and the admin
commands carried a copy of `--db/--config` to avoid an import cycle); now each is added by one
helper here, which imports nothing from the command modules.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from interestgeo.access import declare_viewer
from interestgeo.config import Config, load_config
from interestgeo.store import Store

__all__ = [
    "EXIT_BUG", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "CliError", "Subparsers", "add_command", "add_common",
    "add_dataset_option", "add_filter_options", "config_from", "db_path", "filters_from_args", "open_store",
    "run_on_store", "say_waiting",
]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_FAILED = 2
EXIT_INTERRUPTED = 130  # Ctrl-C: the shell's own code for a command ended by SIGINT (128 + 2)

Subparsers = argparse._SubParsersAction

JSON_HELP = "print one JSON object"


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


def add_common(parser: argparse.ArgumentParser, *, json_help: str | None = None) -> None:
    """`--db` and `--config`; `--json` too when `json_help` is given (or "" for the usual help)."""
    parser.add_argument("--db", type=Path, default=None, help="DuckDB file (default: config store.path)")
    parser.add_argument("--config", type=Path, default=None, help="TOML config file")
    if json_help is not None:
        parser.add_argument("--json", action="store_true", help=json_help or JSON_HELP)


def add_command(
    subparsers: Subparsers, name: str, handler: Callable[[argparse.Namespace], int], *, help: str,
    description: str, common: bool = True, json_help: str | None = None, interrupted: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand's parser, run by `handler`: with `add_common`'s options unless `common` is False.

    `interrupted`: what a Ctrl-C part way leaves behind, said after "interrupted; " (commands that
    write say it; one that only reads needs nothing: `cli.main` says "interrupted").
    """
    parser = subparsers.add_parser(name, help=help, description=description)
    if common:
        add_common(parser, json_help=json_help)
    parser.set_defaults(handler=handler, interrupted=interrupted)
    return parser


def add_dataset_option(parser: argparse.ArgumentParser, help: str, *, repeatable: bool = True) -> None:
    """`--dataset NAME`, repeatable (a list, default None) or one name."""
    if repeatable:
        parser.add_argument("--dataset", action="append", default=None, metavar="NAME", help=help)
    else:
        parser.add_argument("--dataset", default=None, metavar="NAME", help=help)


def config_from(args: argparse.Namespace) -> Config:
    """The config of `--config` with `--db`, and the viewer it declares."""
    config = load_config(args.config)
    # The viewer: `[app] role` when set, else analyst (whoever runs the CLI holds the database).
    # A marketer config makes the per-person commands (explain, drift --user) refuse.
    declare_viewer(config.app.role or "analyst")
    return config.with_db(args.db) if args.db else config


def db_path(args: argparse.Namespace) -> Path:
    """The database file of `--db`, else the config's (no viewer declared: admin commands)."""
    return Path(args.db) if args.db else Path(load_config(args.config).store.path)


def open_store(config: Config) -> Store:
    """The store for writing. Another write (a load, scoring, training, an upload) makes it wait,
    up to `store.write_wait_s`, and say so once on stderr; a dashboard that is open never does
    for longer than its current query (see store/file_access.py)."""
    return Store.open(config.store.path, config=config, on_wait=say_waiting(config))


def say_waiting(config: Config) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"interestgeo: {message} (waiting up to {config.store.write_wait_s:.0f} s)...", file=sys.stderr,
              flush=True)

    return say


def run_on_store(args: argparse.Namespace, command: Callable[[Store, Config], tuple[dict, str]]) -> int:
    """Open the store, run a command returning (JSON-ready payload, text), print one of them;
    expected failures (a missing name, an unusable text model) -> CliError."""
    from interestgeo.text import TextModelError

    config = config_from(args)
    try:
        with open_store(config) as store:
            payload, text = command(store, config)
    except (LookupError, TextModelError) as exc:
        raise CliError(str(exc).strip("'\"")) from None
    print(json.dumps(payload, ensure_ascii=False, default=str) if args.json else text)
    return EXIT_OK


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    add_dataset_option(parser, "dataset (repeatable; default all)")
    parser.add_argument("--from", dest="date_from", default=None, metavar="DATE", help="first local date (YYYY-MM-DD)")
    parser.add_argument("--to", dest="date_to", default=None, metavar="DATE", help="last local date, inclusive")
    parser.add_argument("--hours", default=None, help="local hours, e.g. 18-23 or 22-2,12")
    parser.add_argument("--days", default=None, help="days of week, 0=Monday, e.g. 0-4 or 5,6")
    parser.add_argument("--region", default=None, help="a GeoJSON file of polygons, or H3 cells (hex, comma-separated)")
    parser.add_argument("--topic", default=None, help="only events of this topic")
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def filters_from_args(args: argparse.Namespace, store: Store) -> Any:
    from interestgeo.analytics import filters_from_options

    return filters_from_options(
        store, datasets=args.dataset, date_from=args.date_from, date_to=args.date_to,
        hours=args.hours, days=args.days, region=args.region, topic=args.topic,
    )
