"""Build the rules' in-memory Directory from the store (a few queries, no per-message I/O)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from rolekeeper.config import Settings
from rolekeeper.detect.directory import ClientRef, Directory, Employee
from rolekeeper.detect.freemail import BUILTIN_FREEMAIL
from rolekeeper.domain import HolderKind
from rolekeeper.store.models import (
    Client,
    ClientDomain,
    Contact,
    LearnedNumber,
    MainLine,
    Person,
    PersonalAddress,
    PersonalPhone,
    Role,
    RoleHolder,
)


def load_directory(
    session: Session, settings: Settings, as_of: datetime | None = None
) -> Directory:
    """The directory now, or with the role holders of `as_of` (for replays of past mail)."""
    detect = settings.detect
    exempt = set(detect.exempt_people)
    employees = {
        p.id: Employee(p.id, p.name, p.named_address, p.named_address in exempt)
        for p in session.scalars(select(Person))
    }
    personal = {
        address: employees[pid]
        for pid, address in session.execute(
            select(PersonalAddress.person_id, PersonalAddress.address)
        ).all()
    }
    personal_numbers = {
        number: employees[pid]
        for pid, number in session.execute(select(PersonalPhone.person_id, PersonalPhone.number))
    }
    held = select(RoleHolder.role_id, RoleHolder.person_id).where(
        RoleHolder.kind == HolderKind.HOLDER
    )
    if as_of is None:
        held = held.where(RoleHolder.ended_at.is_(None))
    else:
        held = held.where(
            RoleHolder.started_at <= as_of,
            or_(RoleHolder.ended_at.is_(None), RoleHolder.ended_at > as_of),
        )
    holders = dict(session.execute(held).all())
    roles: dict[str, Employee | None] = {}
    role_numbers: set[str] = set()
    for role in session.scalars(select(Role)):
        holder = holders.get(role.id)
        roles[role.address] = employees[holder] if holder is not None else None
        if role.number:
            role_numbers.add(role.number)
    clients = {
        c.id: ClientRef(c.id, c.crm_id, c.name, c.segment) for c in session.scalars(select(Client))
    }
    contacts: dict[str, ClientRef] = {}
    numbers: dict[int, set[str]] = {}
    for cid, email, phone in session.execute(
        select(Contact.client_id, Contact.email, Contact.phone).where(Contact.removed_at.is_(None))
    ):
        if email:
            contacts[email] = clients[cid]
        if phone:
            numbers.setdefault(cid, set()).add(phone)
    for cid, number in session.execute(select(LearnedNumber.client_id, LearnedNumber.number)):
        numbers.setdefault(cid, set()).add(number)
    domains = {
        domain: clients[cid]
        for cid, domain in session.execute(select(ClientDomain.client_id, ClientDomain.domain))
    }
    main_lines = set(session.scalars(select(MainLine.number)))
    org = settings.organisation
    return Directory(
        firm_domains=frozenset(org.domains),
        freemail=frozenset(BUILTIN_FREEMAIL | set(detect.freemail_domains)),
        employees={e.address: e for e in employees.values()},
        personal=personal,
        roles=roles,
        contacts=contacts,
        client_domains=domains,
        corporate_numbers=frozenset(role_numbers | main_lines | set(org.corporate_numbers)),
        client_numbers={cid: frozenset(n) for cid, n in numbers.items()},
        personal_numbers=personal_numbers,
        region=org.default_region,
    )
