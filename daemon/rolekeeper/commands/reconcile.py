"""`rolekeeper reconcile --once [--dry-run] [--role R …]`: role mailbox access and send-as."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rolekeeper.commands.common import actor, add_json_flag, print_json, settings_of, store_of
from rolekeeper.log import configure_logging
from rolekeeper.namedbox import KeptFilters
from rolekeeper.reconcile import Change, ReconcileError, keep_sieve, run_once


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "reconcile", help="make role mailbox access (IMAP ACL) and send-as match the store"
    )
    parser.add_argument(
        "--once", action="store_true", required=True, help="one pass now (the daemon repeats it)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument(
        "--role", action="append", metavar="ROLE", help="only this role (key or address)"
    )
    add_json_flag(parser)
    parser.set_defaults(func=_reconcile)


def _reconcile(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    # Results go to stdout (text or --json); the log, to stderr.
    configure_logging(settings.logging, sys.stderr)
    failures: list[tuple[Change, str]] = []
    with store_of(args) as store:
        try:
            changes = run_once(
                store.sessions, settings, roles=args.role, dry_run=args.dry_run, actor=actor()
            )
        except ReconcileError as exc:
            changes, failures = exc.applied, exc.failures
        # Named mailboxes' Sieve wrapper: redirects in force and departed people's auto-reply.
        sieve = KeptFilters()
        if not args.dry_run and not args.role and settings.imap is not None:
            sieve = keep_sieve(store.sessions, settings)
    if args.json:
        print_json(
            {
                "dry_run": args.dry_run,
                "changes": [c.as_dict() for c in changes],
                "failed": [{**c.as_dict(), "error": why} for c, why in failures],
                "sieve": sieve.changed,
                "sieve_failed": sieve.failed,
            }
        )
    else:
        verb = "would" if args.dry_run else "done:"
        for change in changes:
            print(f"{verb} {change.describe()}")
        for mailbox, done in sieve.changed.items():
            print(f"done: Sieve on {mailbox}: {'; '.join(done)}")
        if not changes and not failures and not sieve.changed and not sieve.failed:
            print("nothing to change")
        for change, why in failures:
            print(f"FAILED {change.describe()}: {why}", file=sys.stderr)
        for mailbox, why in sieve.failed.items():
            print(f"FAILED Sieve on {mailbox}: {why}", file=sys.stderr)
    return 1 if failures or sieve.failed else 0
