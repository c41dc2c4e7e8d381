"""The `rolekeeper` command line. Each command group lives in rolekeeper.commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sqlalchemy.exc import OperationalError

from rolekeeper import __version__
from rolekeeper.commands import (
    check,
    demo,
    explain,
    handover,
    importing,
    jobs,
    listing,
    reconcile,
    run,
    scan,
    status,
    telephony,
)
from rolekeeper.errors import ConfigError, RolekeeperError

COMMAND_GROUPS = (
    run,
    check,
    importing,
    listing,
    status,
    scan,
    explain,
    jobs,
    handover,
    telephony,
    reconcile,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rolekeeper",
        description="Keeps client-facing mail and phone channels bound to roles, not people.",
    )
    parser.add_argument(
        "--config",
        help="main config file (default: $ROLEKEEPER_CONFIG or /etc/rolekeeper/rolekeeper.toml)",
    )
    parser.add_argument("--version", action="version", version=f"rolekeeper {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return exc.exit_code
    except RolekeeperError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OperationalError as exc:
        print(f"error: database: {exc.orig}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `rolekeeper … | head` closed the pipe: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
