"""`rolekeeper status`: one screen for the admin."""

from __future__ import annotations

import argparse
from typing import Any

from rolekeeper.commands.common import add_json_flag, print_json, settings_of, store_of, table
from rolekeeper.directory import queries


def register(sub: Any) -> None:
    parser = sub.add_parser("status", help="roles, clients, mail sources, open transitions")
    add_json_flag(parser)
    parser.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    with store_of(args) as store, store.sessions() as session:
        data = queries.status(session, settings)
    if args.json:
        print_json(data)
    else:
        print(render_status(data))
    return 0


def _minutes(value: str | None) -> str | None:
    """ISO timestamps to the minute, for reading; --json keeps them whole."""
    return value[:16].replace("T", " ") if value else value


def render_status(data: dict[str, Any]) -> str:
    segments = data["clients_per_segment"]
    roles = [r | {"since": _minutes(r["since"])} for r in data["roles"]]
    parts = [
        f"{data['organisation']}: {len(data['roles'])} roles, {data['people']} people, "
        f"{sum(segments.values())} clients, {data['contacts']} contacts",
        "",
        "Roles",
        table(
            roles,
            [
                ("role", "ROLE"),
                ("address", "ADDRESS"),
                ("number", "NUMBER"),
                ("holder_name", "HOLDER"),
                ("since", "SINCE (UTC)"),
                ("clients", "CLIENTS"),
            ],
        ),
        "",
        "Clients per segment: " + ", ".join(f"{k} {v}" for k, v in segments.items()),
        "",
        "Mail sources",
        table(
            data["mail_sources"],
            [
                ("backend", "BACKEND"),
                ("server", "SERVER"),
                ("folders", "FOLDERS"),
                ("last_scan", "LAST SCAN"),
            ],
        )
        if data["mail_sources"]
        else "(none configured)",
        "",
        "Open transitions",
        table(
            data["open_transitions"],
            [
                ("id", "ID"),
                ("kind", "KIND"),
                ("person", "PERSON"),
                ("effective_at", "EFFECTIVE"),
                ("status", "STATUS"),
            ],
        ),
        "",
        "Jobs: " + ", ".join(f"{k} {v}" for k, v in data["jobs"].items()),
    ]
    return "\n".join(parts)
