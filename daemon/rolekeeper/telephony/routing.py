"""What the store says about a phone number: whose role it is, who holds it, which client calls.

Read live on every webhook, so a holder change committed by the handover is followed by the
very next call.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select
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
    # Work phones of co-holders (pair mode): they ring beside the holder.
    coholder_phones: tuple[str, ...] = ()


@dataclass(frozen=True)
class Caller:
    """A directory client's contact, known by the number it calls from."""

    client_name: str
    contact_name: str
    role_id: int | None


# Built once: composing a statement costs more than running it on a webhook's hot path.
_ROUTE = (
    select(Role.id, Role.key, Role.name, Role.address, Role.number, Person.name, Person.work_phone)
    .outerjoin(
        RoleHolder,
        (RoleHolder.role_id == Role.id)
        & RoleHolder.ended_at.is_(None)
        & (RoleHolder.kind == HolderKind.HOLDER),
    )
    .outerjoin(Person, (Person.id == RoleHolder.person_id) & Person.active)
)
_COHOLDER_PHONES = (
    select(Person.work_phone)
    .join(RoleHolder, RoleHolder.person_id == Person.id)
    .where(
        RoleHolder.role_id == bindparam("role"),
        RoleHolder.ended_at.is_(None),
        RoleHolder.kind == HolderKind.COHOLDER,
        Person.active,
        Person.work_phone.is_not(None),
    )
    .order_by(RoleHolder.id)
)
_ROUTE_BY_NUMBER = _ROUTE.where(Role.number == bindparam("value")).limit(1)
_ROUTE_BY_KEY = _ROUTE.where(Role.key == bindparam("value")).limit(1)
_CALLER = (
    select(Client.name, Contact.name, Client.role_id)
    .join(Contact, Contact.client_id == Client.id)
    .where(Contact.phone == bindparam("number"), Contact.removed_at.is_(None))
    .order_by(Client.id)
    .limit(1)
)


def role_route(
    session: Session, *, number: str | None = None, key: str | None = None
) -> RoleRoute | None:
    """The role owning `number` (or named `key`) with its current holder, if any."""
    if number is not None:
        row = session.execute(_ROUTE_BY_NUMBER, {"value": number}).first()
    elif key is not None:
        row = session.execute(_ROUTE_BY_KEY, {"value": key}).first()
    else:
        raise ValueError("give number or key")
    if row is None:
        return None
    role_id, role_key, name, address, role_number, holder_name, holder_phone = row
    if role_number is None:
        return None
    others = tuple(
        phone
        for phone in session.scalars(_COHOLDER_PHONES, {"role": role_id})
        if phone and phone != holder_phone
    )
    return RoleRoute(
        role_id, role_key, name, address, role_number, holder_name, holder_phone, others
    )


def all_role_routes(session: Session) -> list[RoleRoute]:
    keys = session.scalars(select(Role.key).where(Role.number.is_not(None)).order_by(Role.key))
    return [route for key in keys.all() if (route := role_route(session, key=key)) is not None]


def caller(session: Session, number: str) -> Caller | None:
    """The directory contact calling from `number` (contacts still in the CRM only)."""
    row = session.execute(_CALLER, {"number": number}).first()
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
