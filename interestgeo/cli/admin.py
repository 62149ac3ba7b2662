"""The CLI's administration commands: `interestgeo users ...` (dashboard accounts) and
`interestgeo datasets [delete NAME]` (what is loaded, and removing it with everything derived) and
`interestgeo audit` (who logged in and who looked at whom).

Why a module of its own: these commands manage who may see the data rather than analyse it. They
register in `cli.SUBCOMMANDS` like every other command; their text is built in cli/render.py (the
core modules they call never print).

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
from interestgeo.cli.render import accounts_text, audit_text, datasets_text
from interestgeo.cli.options import EXIT_OK, Subparsers, add_command, add_common, db_path
from interestgeo.config import load_config

__all__ = ["add_audit_parser", "add_datasets_parser", "add_users_parser", "read_password"]


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


def add_users_parser(subparsers: Subparsers) -> None:
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
    remove = actions.add_parser("remove", help="delete an account (its sessions end at their next click)")
    remove.add_argument("name")
    passwd = actions.add_parser("passwd", help="set an account's password (from stdin or the terminal)")
    passwd.add_argument("name")
    for sub in (add, listing, remove, passwd):
        add_common(sub, json_help="" if sub is listing else None)
        sub.set_defaults(handler=_run_users)


def _run_users(args: argparse.Namespace) -> int:
    """Errors are AccountsError (a ValueError): `cli.main` prints them as one line, exit 2."""
    path = accounts_path(db_path(args))
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
        print(json.dumps({"accounts": accounts}) if args.json else accounts_text(accounts))
    return EXIT_OK


def add_datasets_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "datasets", _run_datasets, json_help="",
        help="list the loaded datasets, or delete one with everything derived from it",
        description="`interestgeo datasets` lists the loaded datasets; `interestgeo datasets delete NAME` removes "
        "one dataset in one transaction: its events, rejected rows, cell aggregates, interest and window vectors, "
        "calibration, the cached embeddings of texts no other dataset has and the checkpoints adapted to it. Other "
        "checkpoints that trained while it was loaded are kept (their meta.json names it): retrain to forget it there "
        "too.",
    )
    parser.add_argument("action", nargs="?", default="list", choices=("list", "delete"), help="default: list")
    parser.add_argument("name", nargs="?", default=None, help="the dataset to delete")


def _run_datasets(args: argparse.Namespace) -> int:
    from interestgeo import audit
    from interestgeo.store import Store

    config = load_config(args.config)
    db = Path(args.db) if args.db else Path(config.store.path)
    if not db.exists():
        raise FileNotFoundError(f"no database at {db}")
    if args.action == "list":
        if args.name is not None:
            raise ValueError("`datasets` lists all datasets; to delete one: `interestgeo datasets delete NAME`")
        with Store.open(db, read_only=True, config=config.with_db(db)) as store:
            frame = store.datasets()
        rows = [{"dataset_id": int(r.dataset_id), "name": str(r.name), "rows_stored": int(r.rows_stored),
                 "rows_rejected": int(r.rows_rejected), "ts_min": str(r.ts_min), "ts_max": str(r.ts_max),
                 "loaded_at": str(r.loaded_at)} for r in frame.itertuples()]
        print(json.dumps({"datasets": rows}, ensure_ascii=False) if args.json else datasets_text(rows))
        return EXIT_OK
    if args.name is None:
        raise ValueError("name the dataset to delete: `interestgeo datasets delete NAME`")
    with Store.open(db, config=config.with_db(db)) as store:
        dataset_id = store.dataset_id(args.name)
        if dataset_id is None:
            raise ValueError(f"no dataset named {args.name!r}")
        row = store.datasets().set_index("dataset_id").loc[dataset_id]
        store.delete_dataset(dataset_id)
    audit.record(audit.audit_path(db), "dataset_deleted", None, dataset=args.name, via="cli")
    result = {"deleted": args.name, "dataset_id": dataset_id, "events": int(row["rows_stored"]),
              "rejects": int(row["rows_rejected"])}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"deleted dataset {args.name!r}: {result['events']:,} events, {result['rejects']:,} rejected rows and "
              "everything derived from them, its adapted checkpoints included (other checkpoints are kept: retrain to "
              "forget it there too)")
    return EXIT_OK


def add_audit_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "audit", _run_audit, json_help="",
        help="the audit log: logins, failed logins, persons viewed, datasets deleted",
        description="Print <database>.audit.jsonl: one line per login, failed or refused login, logout, person "
        "viewed on the User page and dataset deleted, with the account and the UTC time.",
    )
    parser.add_argument("--last", type=int, default=50, metavar="N", help="the last N entries (default 50; 0: all)")


def _run_audit(args: argparse.Namespace) -> int:
    from interestgeo.audit import audit_path, read_audit

    entries = read_audit(audit_path(db_path(args)), last=max(args.last, 0) or None)
    print(json.dumps({"entries": entries}, ensure_ascii=False) if args.json else audit_text(entries))
    return EXIT_OK
