"""`rolekeeper roles list`, `people list`, `clients list`."""

from __future__ import annotations

import argparse
from typing import Any

from rolekeeper.commands.common import add_json_flag, print_json, store_of, table
from rolekeeper.directory import queries
from rolekeeper.domain import Segment


def register(sub: Any) -> None:
    roles = sub.add_parser("roles", help="roles and their holders").add_subparsers(
        dest="action", required=True
    )
    add_json_flag(p := roles.add_parser("list", help="list roles with their current holder"))
    p.set_defaults(func=_roles)

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


def _roles(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        rows = queries.list_roles(session)
    if args.json:
        print_json(rows)
    else:
        print(
            table(
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
        )
    return 0


def _people(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        rows = queries.list_people(session)
    if args.json:
        print_json(rows)
    else:
        print(
            table(
                rows,
                [
                    ("name", "NAME"),
                    ("address", "ADDRESS"),
                    ("supervisor", "SUPERVISOR"),
                    ("roles", "ROLES"),
                ],
            )
        )
    return 0


def _clients(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        rows = queries.list_clients(session, role=args.role, segment=args.segment)
    if args.json:
        print_json(rows)
    else:
        print(
            table(
                rows,
                [
                    ("client_id", "ID"),
                    ("name", "CLIENT"),
                    ("segment", "SEGMENT"),
                    ("role", "ROLE"),
                    ("contacts", "CONTACTS"),
                ],
            )
        )
    return 0
