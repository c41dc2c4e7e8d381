"""`rolekeeper check [--connect]`: validate the config, optionally reach every backend."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rolekeeper.backends.probe import probes_for
from rolekeeper.commands.common import add_json_flag, print_json, settings_of


def register(sub: Any) -> None:
    parser = sub.add_parser("check", help="validate the configuration (and reach each backend)")
    parser.add_argument(
        "--connect", action="store_true", help="also connect and log in to each backend"
    )
    add_json_flag(parser)
    parser.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    files = [str(f) for f in settings.source_files]
    warnings = _warnings(settings)
    results = [probe() for probe in probes_for(settings)] if args.connect else []
    failed = [r for r in results if not r.ok]
    if args.json:
        print_json(
            {
                "config": "ok",
                "files": files,
                "warnings": warnings,
                "backends": [r.as_dict() for r in results],
            }
        )
    else:
        print(f"config ok: {', '.join(files)}")
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for r in results:
            print(f"{'ok  ' if r.ok else 'FAIL'}  {r.backend:<9} {r.target}: {r.detail}")
    return 1 if failed else 0


def _warnings(settings: Any) -> list[str]:
    found = []
    for name in ("imap", "smtp", "exchange", "twilio"):
        section = getattr(settings, name)
        if section is not None and not section.verify_tls:
            found.append(f"{name}.verify_tls = false: the server's certificate is not checked")
    imap = settings.imap
    if imap is not None and imap.master_user_separator:
        for key in ("credentials_dir", "credentials_credential"):
            if getattr(imap, key) is not None:
                found.append(
                    f"imap.{key} is not used: mailboxes are opened with the master user "
                    '(per-mailbox passwords need master_user_separator = "")'
                )
    return found
