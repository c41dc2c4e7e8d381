"""What the store says about a phone number: whose role it is, who holds it, which client calls.

Read live on every webhook, so a holder change committed by the handover is followed by the
very next call.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from rolekeeper.domain import HolderKind
from rolekeeper.store.models import Client, Contact, Person, Role, RoleHolder


@dataclass(frozen=True)
class RoleRoute:
    """A role number and where its calls go now."""

    role_id: int
    key: str
    name: str
    address: str
    number: str
    holder_name: str | None
    holder_phone: str | None


@dataclass(frozen=True)
class Caller:
    """A directory client's contact, known by the number it calls from."""

    client_name: str
    contact_name: str
    role_id: int | None


def role_route(
    session: Session, *, number: str | None = None, key: str | None = None
) -> RoleRoute | None:
    """The role owning `number` (or named `key`) with its current holder, if any."""
    query = (
        select(Role, Person)
        .outerjoin(
            RoleHolder,
            (RoleHolder.role_id == Role.id)
            & RoleHolder.ended_at.is_(None)
            & (RoleHolder.kind == HolderKind.HOLDER),
        )
        .outerjoin(Person, (Person.id == RoleHolder.person_id) & Person.active)
    )
    if number is not None:
        query = query.where(Role.number == number)
    elif key is not None:
        query = query.where(Role.key == key)
    else:
        raise ValueError("give number or key")
    row = session.execute(query.limit(1)).first()
    if row is None:
        return None
    role, person = row
    if role.number is None:
        return None
    return RoleRoute(
        role_id=role.id,
        key=role.key,
        name=role.name,
        address=role.address,
        number=role.number,
        holder_name=person.name if person else None,
        holder_phone=person.work_phone if person else None,
    )


def all_role_routes(session: Session) -> list[RoleRoute]:
    keys = session.scalars(select(Role.key).where(Role.number.is_not(None)).order_by(Role.key))
    return [route for key in keys.all() if (route := role_route(session, key=key)) is not None]


def caller(session: Session, number: str) -> Caller | None:
    """The directory contact calling from `number` (contacts still in the CRM only)."""
    row = session.execute(
        select(Client.name, Contact.name, Client.role_id)
        .join(Contact, Contact.client_id == Client.id)
        .where(Contact.phone == number, Contact.removed_at.is_(None))
        .order_by(Client.id)
        .limit(1)
    ).first()
    return Caller(row[0], row[1], row[2]) if row else None


def roles_held_by_phone(session: Session, number: str) -> list[RoleRoute]:
    """Roles (with numbers) held now, as holder or co-holder, by the person with this work
    phone: who is calling the access number."""
    keys = session.scalars(
        select(Role.key)
        .join(RoleHolder, (RoleHolder.role_id == Role.id) & RoleHolder.ended_at.is_(None))
        .join(Person, Person.id == RoleHolder.person_id)
        .where(Person.work_phone == number, Person.active, Role.number.is_not(None))
        .order_by(Role.key)
    ).all()
    return [route for key in keys if (route := role_route(session, key=key)) is not None]
