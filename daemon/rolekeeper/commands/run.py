"""`rolekeeper run`: the service in the foreground (systemd runs this)."""

from __future__ import annotations

import argparse
from typing import Any

from rolekeeper.commands.common import settings_of
from rolekeeper.service import Service


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="run the service in the foreground (under systemd)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return Service(args.config, settings_of(args)).run()
