"""`rolekeeper scan --once [--as-of DATE]` and `rolekeeper incidents list`."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, aliased

from rolekeeper.backends.imap import ImapSource
from rolekeeper.clock import as_utc
from rolekeeper.commands.common import (
    actor,
    add_json_flag,
    emit_rows,
    parse_when,
    settings_of,
    store_of,
    table,
)
from rolekeeper.errors import RolekeeperError
from rolekeeper.notices.actionmail import actions_by_incident
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Client, Incident, Person
from rolekeeper.watch import Scanner


def register(sub: Any) -> None:
    parser = sub.add_parser("scan", help="read new mail from every watched mailbox now")
    parser.add_argument("--once", action="store_true", help="one pass, then exit (the default)")
    parser.add_argument(
        "--as-of",
        type=parse_when,
        help="replay the mail of the history window before this date with that date's role "
        "holders, then rule 6 as of it; record, never act",
    )
    add_json_flag(parser)
    parser.set_defaults(func=_scan)

    incidents = sub.add_parser("incidents", help="detected incidents").add_subparsers(
        dest="action", required=True
    )
    p = incidents.add_parser("list", help="list incidents, newest first")
    p.add_argument("--since", type=parse_when, help="only those detected since this date")
    p.add_argument("--rule", help="only this rule")
    p.add_argument("--person", help="only incidents of this person (named address)")
    add_json_flag(p)
    p.set_defaults(func=_incidents)


def _scan(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if settings.imap is None:
        raise RolekeeperError("no [imap] section in the config: nothing to scan")
    source = ImapSource(settings.imap)
    try:
        with store_of(args) as store:
            scanner = Scanner(store.sessions, settings, source)
            try:
                reports = scanner.scan_all(as_of=args.as_of)
            finally:
                scanner.close()
    finally:
        source.close()
    rows = [r.as_dict() for r in reports if r.mode != "missing"]
    status = emit_rows(
        args,
        rows,
        [
            ("mailbox", "MAILBOX"),
            ("folder", "FOLDER"),
            ("mode", "MODE"),
            ("messages", "MESSAGES"),
            ("bodies", "BODIES"),
            ("incidents", "NEW INCIDENTS"),
            ("unreadable", "UNREADABLE"),
            ("error", "ERROR"),
        ],
    )
    # The other mailboxes were read; a skipped one still makes the run a failure.
    return status or (1 if any(r.mode == "failed" for r in reports) else 0)


INCIDENT_COLUMNS = [
    ("id", "ID"),
    ("rule", "RULE"),
    ("person", "PERSON"),
    ("client", "CLIENT"),
    ("segment", "SEGMENT"),
    ("live", "LIVE"),
    ("actions", "ACTIONS"),
    ("evidence", "EVIDENCE"),
]


def render_incidents(session: Session) -> str:
    return table(incident_rows(session, select_incidents()), INCIDENT_COLUMNS)


def select_incidents() -> Select[Incident, str, str, str]:
    person = aliased(Person)
    return (
        select(Incident, person.named_address, Client.crm_id, Client.name)
        .outerjoin(person, person.id == Incident.person_id)
        .outerjoin(Client, Client.id == Incident.client_id)
        .order_by(Incident.detected_at.desc(), Incident.id.desc())
    )


def incident_rows(session: Session, query: Select[Incident, str, str, str]) -> list[dict[str, Any]]:
    found = session.execute(query).all()
    # An alert, digest or nudge whose outcome is "unknown" shows here for the admin to check.
    actions = actions_by_incident(session, [i.id for i, _, _, _ in found])
    return [
        {
            "id": i.id,
            "detected_at": as_utc(i.detected_at).isoformat(),
            "rule": i.rule,
            "person": address,
            "client": crm,
            "client_name": name,
            "segment": i.segment,
            "live": i.live,
            "actions": ", ".join(actions.get(i.id, [])),
            "message": i.message_key,
            "evidence": i.evidence,
            "source": i.source,
        }
        for i, address, crm, name in found
    ]


def _incidents(args: argparse.Namespace) -> int:
    query = select_incidents()
    if args.since is not None:
        query = query.where(Incident.detected_at >= args.since)
    if args.rule:
        query = query.where(Incident.rule == args.rule)
    if args.person:
        person_id = select(Person.id).where(Person.named_address == args.person.strip().lower())
        query = query.where(Incident.person_id.in_(person_id.scalar_subquery()))
    with store_of(args) as store:
        with store.sessions() as session:
            rows = incident_rows(session, query)
        # Evidence is a line of an employee's mail: every admin read of it is on record.
        with transaction(store.sessions) as session:
            filters = {"since": args.since, "rule": args.rule, "person": args.person}
            record_audit(
                session,
                actor(),
                "evidence.read",
                "incidents",
                {k: str(v) for k, v in filters.items() if v}
                | {"incidents": [r["id"] for r in rows]},
            )
    return emit_rows(args, rows, INCIDENT_COLUMNS)
