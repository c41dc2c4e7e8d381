"""`rolekeeper clients candidates` and `clients confirm`: correspondents that may be clients.

The CRM import stays the authority: a candidate gets no notice until an admin confirms it,
which adds it as a contact of an existing client or of a new one (its domain with it)."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import func, select

from rolekeeper.clock import as_utc, utcnow
from rolekeeper.commands.common import actor, add_json_flag, emit_rows, store_of
from rolekeeper.domain import Segment
from rolekeeper.errors import NotFoundError, RolekeeperError
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Candidate, Client, ClientDomain, Contact, Person, Role


def register(clients: Any) -> None:
    p = clients.add_parser(
        "candidates", help="correspondents of role and named mailboxes not in the CRM"
    )
    add_json_flag(p)
    p.set_defaults(func=_list)
    p = clients.add_parser("confirm", help="adopt a candidate as a client contact")
    p.add_argument("address", help="the candidate's address")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--client", help="add to this existing client (CRM id)")
    target.add_argument("--new-client", metavar="NAME", help="create a client of this name")
    p.add_argument("--segment", choices=[s.value for s in Segment], default="regular")
    p.add_argument("--role", help="the role serving a new client (default: the mailbox's role)")
    p.add_argument("--language", default="en")
    p.set_defaults(func=_confirm)


def _list(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        rows = [
            {
                "address": c.address,
                "domain": c.domain,
                "messages": c.messages,
                "role": role,
                "person": person,
                "first_seen": as_utc(c.first_seen).isoformat(),
                "last_seen": as_utc(c.last_seen).isoformat(),
                "status": c.status,
            }
            for c, role, person in session.execute(
                select(Candidate, Role.key, Person.named_address)
                .outerjoin(Role, Role.id == Candidate.role_id)
                .outerjoin(Person, Person.id == Candidate.person_id)
                .where(Candidate.status == "new")
                .order_by(Candidate.domain, func.lower(Candidate.address))
            ).all()
        ]
    return emit_rows(
        args,
        rows,
        [
            ("domain", "DOMAIN"),
            ("address", "ADDRESS"),
            ("messages", "MESSAGES"),
            ("role", "ROLE"),
            ("person", "PERSON"),
            ("last_seen", "LAST SEEN"),
        ],
    )


def _confirm(args: argparse.Namespace) -> int:
    address = args.address.strip().lower()
    with store_of(args) as store, transaction(store.sessions) as session:
        candidate = session.scalars(
            select(Candidate).where(Candidate.address == address)
        ).one_or_none()
        if candidate is None:
            raise NotFoundError(f"{address} is not a candidate")
        if args.client:
            client = session.scalars(
                select(Client).where(Client.crm_id == args.client)
            ).one_or_none()
            if client is None:
                raise NotFoundError(f"client {args.client} does not exist")
        else:
            role_id = candidate.role_id
            if args.role:
                role_id = session.scalar(select(Role.id).where(Role.key == args.role))
                if role_id is None:
                    raise NotFoundError(f"role {args.role} does not exist")
            crm_id = f"learned:{candidate.domain}"
            if session.scalar(select(Client.id).where(Client.crm_id == crm_id)) is not None:
                raise RolekeeperError(f"client {crm_id} exists: confirm with --client {crm_id}")
            client = Client(
                crm_id=crm_id, name=args.new_client, segment=args.segment, role_id=role_id
            )
            session.add(client)
            session.flush()
            session.add(ClientDomain(client_id=client.id, domain=candidate.domain))
        session.add(
            Contact(client_id=client.id, name=address, email=address, language=args.language)
        )
        candidate.status = "confirmed"
        candidate.last_seen = utcnow()
        record_audit(session, actor(), "candidate.confirm", address, {"client": client.crm_id})
        crm = client.crm_id
    print(f"{address} is now a contact of client {crm}")
    return 0
