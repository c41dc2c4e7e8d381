"""Read-only views of the directory for the admin commands (plain dicts, ready for --json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from rolekeeper.clock import as_utc
from rolekeeper.config import Settings
from rolekeeper.domain import OPEN_TRANSITION_STATUSES, HolderKind, JobStatus, Segment
from rolekeeper.store.models import (
    Client,
    Contact,
    DueJob,
    Person,
    Role,
    RoleHolder,
    ScanCursor,
    Transition,
)


def _iso(value: Any) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def list_roles(session: Session) -> list[dict[str, Any]]:
    holder = aliased(RoleHolder)
    clients = (
        select(Client.role_id, func.count(Client.id).label("n")).group_by(Client.role_id).subquery()
    )
    rows = session.execute(
        select(Role, Person, holder.started_at, clients.c.n)
        .outerjoin(
            holder,
            (holder.role_id == Role.id)
            & holder.ended_at.is_(None)
            & (holder.kind == HolderKind.HOLDER),
        )
        .outerjoin(Person, Person.id == holder.person_id)
        .outerjoin(clients, clients.c.role_id == Role.id)
        .order_by(Role.key)
    ).all()
    return [
        {
            "role": role.key,
            "name": role.name,
            "address": role.address,
            "number": role.number,
            "holder": person.named_address if person else None,
            "holder_name": person.name if person else None,
            "since": _iso(since),
            "clients": count or 0,
        }
        for role, person, since, count in rows
    ]


def list_people(session: Session) -> list[dict[str, Any]]:
    supervisor = aliased(Person)
    held: dict[int, list[str]] = {}
    for person_id, key in session.execute(
        select(RoleHolder.person_id, Role.key)
        .join(Role, Role.id == RoleHolder.role_id)
        .where(RoleHolder.ended_at.is_(None))
        .order_by(Role.key)
    ):
        held.setdefault(person_id, []).append(key)
    rows = session.execute(
        select(Person, supervisor.named_address)
        .outerjoin(supervisor, supervisor.id == Person.supervisor_id)
        .order_by(Person.name)
    ).all()
    return [
        {
            "name": person.name,
            "address": person.named_address,
            "work_phone": person.work_phone,
            "supervisor": sup,
            "roles": held.get(person.id, []),
            "active": person.active,
        }
        for person, sup in rows
    ]


def list_clients(
    session: Session, role: str | None = None, segment: str | None = None
) -> list[dict[str, Any]]:
    contacts = (
        select(Contact.client_id, func.count(Contact.id).label("n"))
        .where(Contact.removed_at.is_(None))
        .group_by(Contact.client_id)
        .subquery()
    )
    query = (
        select(Client, Role.key, contacts.c.n)
        .outerjoin(Role, Role.id == Client.role_id)
        .outerjoin(contacts, contacts.c.client_id == Client.id)
        .order_by(Client.name, Client.crm_id)
    )
    if role is not None:
        query = query.where(Role.key == role)
    if segment is not None:
        query = query.where(Client.segment == segment)
    return [
        {
            "client_id": client.crm_id,
            "name": client.name,
            "segment": client.segment,
            "role": key,
            "contacts": n or 0,
        }
        for client, key, n in session.execute(query).all()
    ]


def segment_counts(session: Session) -> dict[str, int]:
    counts = dict(
        session.execute(select(Client.segment, func.count()).group_by(Client.segment)).all()
    )
    return {s.value: int(counts.get(s.value, 0)) for s in Segment}


def mail_sources(session: Session, settings: Settings) -> list[dict[str, Any]]:
    cursors: Sequence[ScanCursor] = session.scalars(
        select(ScanCursor).order_by(ScanCursor.source, ScanCursor.folder)
    ).all()
    sources: list[dict[str, Any]] = []
    configured = [
        ("imap", settings.imap.host if settings.imap else None),
        ("exchange", settings.exchange.service_endpoint if settings.exchange else None),
    ]
    for kind, where in configured:
        if where is None:
            continue
        seen = [c for c in cursors if c.source.startswith(f"{kind}:")]
        last = max((as_utc(c.scanned_at) for c in seen), default=None)
        sources.append(
            {
                "backend": kind,
                "server": where,
                "folders": len(seen),
                "last_scan": last.isoformat() if last else None,
            }
        )
    return sources


def open_transitions(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Transition, Person.named_address)
        .outerjoin(Person, Person.id == Transition.person_id)
        .where(Transition.status.in_(OPEN_TRANSITION_STATUSES))
        .order_by(Transition.effective_at)
    ).all()
    return [
        {
            "id": t.id,
            "kind": t.kind,
            "person": address,
            "effective_at": _iso(t.effective_at),
            "status": t.status,
        }
        for t, address in rows
    ]


def job_counts(session: Session) -> dict[str, int]:
    counts = dict(
        session.execute(
            select(DueJob.status, func.count())
            .where(DueJob.status != JobStatus.DONE)
            .group_by(DueJob.status)
        ).all()
    )
    return {s.value: int(counts.get(s.value, 0)) for s in JobStatus if s != JobStatus.DONE}


def status(session: Session, settings: Settings) -> dict[str, Any]:
    contacts = session.scalar(select(func.count(Contact.id)).where(Contact.removed_at.is_(None)))
    return {
        "organisation": settings.organisation.name,
        "roles": list_roles(session),
        "clients_per_segment": segment_counts(session),
        "contacts": int(contacts or 0),
        "people": int(session.scalar(select(func.count(Person.id))) or 0),
        "mail_sources": mail_sources(session, settings),
        "open_transitions": open_transitions(session),
        "jobs": job_counts(session),
    }


def current_holder(session: Session, role_id: int) -> Person | None:
    """Who holds the role now (the holder before a co-holder)."""
    return session.scalars(
        select(Person)
        .join(RoleHolder, RoleHolder.person_id == Person.id)
        .where(RoleHolder.role_id == role_id, RoleHolder.ended_at.is_(None))
        .order_by(RoleHolder.kind.desc())
    ).first()


def role_context(session: Session, role: Role, settings: Settings) -> dict[str, Any]:
    """What client-facing texts say of a role: its contacts and who holds it now (with any
    co-holders beside the holder, pair mode)."""
    from rolekeeper.domain import pretty_number

    holder = current_holder(session, role.id)
    coholders = session.scalars(
        select(Person.name)
        .join(RoleHolder, RoleHolder.person_id == Person.id)
        .where(
            RoleHolder.role_id == role.id,
            RoleHolder.kind == HolderKind.COHOLDER,
            RoleHolder.ended_at.is_(None),
        )
        .order_by(Person.name)
    )
    return {
        "organisation": settings.organisation.name,
        "role_name": role.name,
        "role_address": role.address,
        "role_number": pretty_number(role.number) if role.number else None,
        "successor_name": holder.name if holder else role.name,
        "coholder_names": ", ".join(coholders),
    }
