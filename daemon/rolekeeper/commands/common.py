"""Helpers every command uses: settings, store, output as text or --json."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rolekeeper.config import Settings, load_settings
from rolekeeper.store.open import Store, open_store

Handler = Callable[[argparse.Namespace], int]


def parse_when(value: str) -> datetime:
    """An ISO 8601 date or time from the command line; UTC when no zone is given."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date") from None
    # In UTC: the store keeps UTC, and SQLite would keep another zone's wall time as is.
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def settings_of(args: argparse.Namespace) -> Settings:
    cached: Settings | None = getattr(args, "_settings", None)
    if cached is None:
        cached = load_settings(args.config)
        args._settings = cached
    return cached


@contextmanager
def store_of(args: argparse.Namespace) -> Iterator[Store]:
    store = open_store(settings_of(args))
    try:
        yield store
    finally:
        store.close()


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


def emit_rows(
    args: argparse.Namespace, rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]
) -> int:
    """Print `rows` as JSON with --json, else as a table of `columns` (key, heading)."""
    if args.json:
        print_json(rows)
    else:
        print(table(rows, columns))
    return 0


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain aligned table; `columns` is (key, heading)."""
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    headings = [heading for _, heading in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headings)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
