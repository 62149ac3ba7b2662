"""The CLI's administration commands: `interestgeo users ...` (dashboard accounts).

Why a module of its own: these commands manage who may see the data rather than analyse it, and
keeping them apart keeps `cli.py` about the analysis. They register in `cli.SUBCOMMANDS` like
every other command and render their own output (the core modules they call never print).

Passwords are read from the terminal without echo (asked twice), or as one line from stdin when
it is not a terminal (`printf '%s\\n' "$PW" | interestgeo users add ana --role analyst`); never from
an argument, which other users of the machine can read in the process list and shells keep in
their history.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from interestgeo.accounts import AccountsError, accounts_path, add_account, load_accounts, remove_account, set_password
from interestgeo.config import load_config

__all__ = ["add_users_parser", "read_password"]

EXIT_OK = 0


def _db_path(args: argparse.Namespace) -> Path:
    config = load_config(args.config)
    return Path(args.db) if args.db else Path(config.store.path)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None, help="DuckDB file (default: config store.path)")
    parser.add_argument("--config", type=Path, default=None, help="TOML config file")


def read_password(prompt: str = "Password: ") -> str:
    """A new password: twice without echo on a terminal, else one line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Again: ") != first:
            raise AccountsError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise AccountsError("no password on stdin (give it as one line)")
    return line.rstrip("\r\n")


def add_users_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "users", help="dashboard accounts: add, list, remove, passwd",
        description="Accounts for the dashboard. With at least one account the dashboard asks everyone to log in "
        "and each account's role decides what it shows; with none it runs in local single-user mode. Accounts "
        "live in <database>.accounts.json beside the database (Argon2id hashes, mode 0600).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create an account (password from stdin or the terminal)")
    add.add_argument("name", help="account name: letters, digits, '.', '_', '@', '-'")
    add.add_argument("--role", required=True, choices=("analyst", "marketer"),
                     help="analyst: per-person views too; marketer: aggregates over at least k people only")
    listing = actions.add_parser("list", help="the accounts and their roles")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    remove = actions.add_parser("remove", help="delete an account (its sessions end at their next click)")
    remove.add_argument("name")
    passwd = actions.add_parser("passwd", help="set an account's password (from stdin or the terminal)")
    passwd.add_argument("name")
    for sub in (add, listing, remove, passwd):
        _add_common(sub)
        sub.set_defaults(handler=_run_users)


def _run_users(args: argparse.Namespace) -> int:
    """Errors are AccountsError (a ValueError): `cli.main` prints them as one line, exit 2."""
    path = accounts_path(_db_path(args))
    if args.action == "add":
        account = add_account(path, args.name, args.role, read_password())
        print(f"added {account.role} account {account.name!r} ({path})")
    elif args.action == "passwd":
        set_password(path, args.name, read_password("New password: "))
        print(f"changed the password of {args.name!r}")
    elif args.action == "remove":
        remove_account(path, args.name)
        left = len(load_accounts(path))
        print(f"removed {args.name!r}; {left} account{'s' if left != 1 else ''} left"
              + ("" if left else " (the dashboard is back in local single-user mode)"))
    else:
        accounts = [a.describe() for a in load_accounts(path).values()]
        if args.json:
            print(json.dumps({"accounts": accounts}))
        elif not accounts:
            print("no accounts: the dashboard runs in local single-user mode ([app] role)")
        else:
            for a in accounts:
                print(f"{a['name']:<24} {a['role']:<9} created {a['created_at']}")
    return EXIT_OK
