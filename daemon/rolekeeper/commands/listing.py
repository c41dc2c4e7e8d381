"""`rolekeeper roles list`, `people list`, `clients list`."""

from __future__ import annotations

import argparse
from typing import Any

from rolekeeper.commands import candidates, telephony
from rolekeeper.commands.common import add_json_flag, emit_rows, store_of
from rolekeeper.directory import queries
from rolekeeper.domain import Segment


def register(sub: Any) -> None:
    roles = sub.add_parser("roles", help="roles and their holders").add_subparsers(
        dest="action", required=True
    )
    add_json_flag(p := roles.add_parser("list", help="list roles with their current holder"))
    p.set_defaults(func=_roles)
    telephony.register_roles(roles)

    people = sub.add_parser("people", help="employees").add_subparsers(dest="action", required=True)
    add_json_flag(p := people.add_parser("list", help="list people and the roles they hold"))
    p.set_defaults(func=_people)

    clients = sub.add_parser("clients", help="client companies").add_subparsers(
        dest="action", required=True
    )
    p = clients.add_parser("list", help="list clients")
    p.add_argument("--role", help="only clients served by this role")
    p.add_argument("--segment", choices=[s.value for s in Segment])
    add_json_flag(p)
    p.set_defaults(func=_clients)
    candidates.register(clients)


def _roles(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        rows = queries.list_roles(session)
    return emit_rows(
        args,
        rows,
        [
            ("role", "ROLE"),
            ("address", "ADDRESS"),
            ("number", "NUMBER"),
            ("holder_name", "HOLDER"),
            ("holder", "HOLDER ADDRESS"),
            ("clients", "CLIENTS"),
        ],
    )


def _people(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        rows = queries.list_people(session)
    return emit_rows(
        args,
        rows,
        [
            ("name", "NAME"),
            ("address", "ADDRESS"),
            ("supervisor", "SUPERVISOR"),
            ("roles", "ROLES"),
        ],
    )


def _clients(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        rows = queries.list_clients(session, role=args.role, segment=args.segment)
    return emit_rows(
        args,
        rows,
        [
            ("client_id", "ID"),
            ("name", "CLIENT"),
            ("segment", "SEGMENT"),
            ("role", "ROLE"),
            ("contacts", "CONTACTS"),
        ],
    )
