"""Import CRM/HR CSV exports into the store: all rows or none, idempotent upserts.

Each import reads and checks the whole file first, then writes it in one transaction; any
problem (a bad cell, a duplicate key, an unknown reference) is collected with its line
number and the transaction is rolled back, so a file is never half imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from rolekeeper.clock import utcnow
from rolekeeper.config import (
    CLIENT_FIELDS,
    PEOPLE_FIELDS,
    ROLE_FIELDS,
    Settings,
)
from rolekeeper.directory import records as rec
from rolekeeper.directory.csvfile import Row, read_rows
from rolekeeper.directory.phones import PendingPhones, PhoneError
from rolekeeper.domain import ChannelKind, HolderKind
from rolekeeper.errors import ImportFileError
from rolekeeper.store.audit import record_audit
from rolekeeper.store.bulk import bulk_insert
from rolekeeper.store.db import table_of
from rolekeeper.store.models import (
    Channel,
    Client,
    ClientDomain,
    Contact,
    Person,
    PersonalAddress,
    PersonalPhone,
    Role,
    RoleHolder,
)

MAX_LISTED_PROBLEMS = 50
R = TypeVar("R")


@dataclass
class ImportReport:
    kind: str
    path: str
    rows: int = 0
    records: int = 0  # people, roles or clients the rows describe
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    warnings: list[str] = field(default_factory=list)
    # Roles whose holder the file set or changed: their phone routing follows.
    holders_changed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "path": self.path,
            "rows": self.rows,
            "records": self.records,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "warnings": self.warnings,
            "holders_changed": self.holders_changed,
        }


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.items.append((line, f"line {line}: {message}"))

    def raise_if_any(self) -> None:
        if self.items:
            shown = [text for _, text in sorted(self.items, key=lambda item: item[0])]
            shown = shown[:MAX_LISTED_PROBLEMS]
            if len(self.items) > len(shown):
                shown.append(f"... and {len(self.items) - len(shown)} more problems")
            shown.append("nothing from this file was imported")
            raise ImportFileError(str(self.path), shown)


def _parse(rows: Iterable[Row], parse: Callable[[Row], R], problems: _Problems) -> list[R]:
    parsed = []
    for row in rows:
        try:
            parsed.append(parse(row))
        except rec.RowError as exc:
            problems.add(row.line, str(exc))
    return parsed


def _unique(
    items: Sequence[R],
    key: Callable[[R], str],
    line: Callable[[R], int],
    what: str,
    problems: _Problems,
) -> None:
    seen: dict[str, int] = {}
    for item in items:
        k = key(item)
        if k in seen:
            problems.add(line(item), f"duplicate {what} {k!r} (first on line {seen[k]})")
        else:
            seen[k] = line(item)


# --- people -----------------------------------------------------------------------------


def import_people(session: Session, path: Path, settings: Settings, actor: str) -> ImportReport:
    region = settings.organisation.default_region
    problems = _Problems(path)
    rows = read_rows(path, PEOPLE_FIELDS, ("name", "email"), settings.import_.people.columns)
    people = _parse(rows, lambda r: rec.person_record(r, region), problems)
    _unique(people, lambda p: p.email, lambda p: p.line, "email", problems)
    report = ImportReport("people", str(path), rows=len(people), records=len(people))

    existing = {p.named_address: p for p in session.scalars(select(Person))}
    role_addresses = set(session.scalars(select(Role.address)))
    in_file = {p.email for p in people}
    for person in people:
        if person.email in role_addresses:
            problems.add(person.line, f"{person.email} is a role address, not a person's")
        if person.supervisor and person.supervisor not in in_file | existing.keys():
            problems.add(person.line, f"supervisor {person.supervisor} is not a known person")
    problems.raise_if_any()

    addresses = _grouped(
        session.execute(select(PersonalAddress.person_id, PersonalAddress.address))
    )
    phones = _grouped(session.execute(select(PersonalPhone.person_id, PersonalPhone.number)))
    new_ids: set[int] = set()
    for person in people:
        if person.email not in existing:
            row = Person(name=person.name, named_address=person.email)
            session.add(row)
            session.flush()
            existing[person.email] = row
            new_ids.add(row.id)
            _add_channel(session, ChannelKind.NAMED_MAILBOX, person.email, settings, person=row)
    for person in people:
        row = existing[person.email]
        supervisor_id = existing[person.supervisor].id if person.supervisor else None
        wanted = (person.name, person.work_phone, supervisor_id)
        changed = (row.name, row.work_phone, row.supervisor_id) != wanted
        row.name, row.work_phone, row.supervisor_id = wanted
        changed |= _replace_set(
            session,
            PersonalAddress,
            "address",
            row.id,
            addresses.get(row.id, set()),
            set(person.personal_emails),
        )
        changed |= _replace_set(
            session,
            PersonalPhone,
            "number",
            row.id,
            phones.get(row.id, set()),
            set(person.personal_phones),
        )
        if row.id in new_ids:
            report.created += 1
        elif changed:
            report.updated += 1
        else:
            report.unchanged += 1
    record_audit(session, actor, "import.people", str(path), report.as_dict())
    return report


# --- roles ------------------------------------------------------------------------------


def import_roles(
    session: Session, path: Path, settings: Settings, actor: str, *, reassign: bool = False
) -> ImportReport:
    """Create or update roles. A change of holder is a handover: refused unless `reassign`."""
    region = settings.organisation.default_region
    problems = _Problems(path)
    rows = read_rows(path, ROLE_FIELDS, ("role", "address"), settings.import_.roles.columns)
    roles = _parse(rows, lambda r: rec.role_record(r, region), problems)
    _unique(roles, lambda r: r.key, lambda r: r.line, "role", problems)
    _unique(roles, lambda r: r.address, lambda r: r.line, "address", problems)
    _unique(
        [r for r in roles if r.number],
        lambda r: r.number or "",
        lambda r: r.line,
        "number",
        problems,
    )
    report = ImportReport("roles", str(path), rows=len(roles), records=len(roles))

    people = {p.named_address: p.id for p in session.scalars(select(Person))}
    existing = {r.key: r for r in session.scalars(select(Role))}
    holders = {
        h.role_id: h
        for h in session.scalars(
            select(RoleHolder).where(
                RoleHolder.ended_at.is_(None), RoleHolder.kind == HolderKind.HOLDER
            )
        )
    }
    by_address = {r.address: r.key for r in existing.values()}
    by_number = {r.number: r.key for r in existing.values() if r.number}
    id_to_address = {v: k for k, v in people.items()}
    for role in roles:
        if role.address in people:
            problems.add(role.line, f"{role.address} is a person's named address, not a role's")
        if by_address.get(role.address, role.key) != role.key:
            problems.add(role.line, f"{role.address} belongs to role {by_address[role.address]}")
        if role.number and by_number.get(role.number, role.key) != role.key:
            problems.add(role.line, f"{role.number} belongs to role {by_number[role.number]}")
        if role.holder and role.holder not in people:
            problems.add(role.line, f"holder {role.holder} is not a known person")
            continue
        current = existing.get(role.key)
        held = holders.get(current.id) if current else None
        if role.holder and held and people[role.holder] != held.person_id and not reassign:
            problems.add(
                role.line,
                f"{role.key} is held by {id_to_address.get(held.person_id)}; a change of "
                "holder is a handover (rolekeeper depart/rotate), or pass --reassign to "
                "rebind without notices",
            )
    problems.raise_if_any()

    now = utcnow()
    for role in roles:
        row = existing.get(role.key)
        if row is None:
            row = Role(key=role.key, name=role.name, address=role.address, number=role.number)
            session.add(row)
            session.flush()
            _add_role_channels(session, row, settings)
            report.created += 1
            changed = True
        else:
            wanted = (role.name, role.address, role.number)
            changed = (row.name, row.address, row.number) != wanted
            if changed:
                report.updated += 1
                row.name, row.address, row.number = wanted
        held = holders.get(row.id)
        wanted_holder = people[role.holder] if role.holder else None
        if wanted_holder is not None and (held is None or held.person_id != wanted_holder):
            if held is not None:
                held.ended_at = now
                session.flush()
                report.warnings.append(
                    f"{role.key}: holder changed from {id_to_address.get(held.person_id)} to "
                    f"{role.holder} by import; no notices were sent"
                )
            session.add(RoleHolder(role_id=row.id, person_id=wanted_holder, started_at=now))
            report.holders_changed.append(role.key)
            record_audit(
                session, actor, "role.holder", role.key, {"holder": role.holder, "by": "import"}
            )
            if not changed:
                report.updated += 1
                changed = True
        if not changed:
            report.unchanged += 1
    record_audit(session, actor, "import.roles", str(path), report.as_dict())
    return report


def _add_role_channels(session: Session, role: Role, settings: Settings) -> None:
    _add_channel(session, ChannelKind.ROLE_MAILBOX, role.address, settings, role=role)
    if role.number:
        _add_channel(session, ChannelKind.ROLE_NUMBER, role.number, settings, role=role)


def _add_channel(
    session: Session,
    kind: ChannelKind,
    address: str,
    settings: Settings,
    *,
    role: Role | None = None,
    person: Person | None = None,
) -> None:
    backend = "twilio" if kind == ChannelKind.ROLE_NUMBER else _mail_backend(settings)
    session.add(
        Channel(
            kind=kind,
            address=address,
            backend=backend,
            role_id=role.id if role else None,
            person_id=person.id if person else None,
        )
    )


def _mail_backend(settings: Settings) -> str:
    if settings.exchange is not None and settings.imap is None:
        return "exchange"
    return "imap"


# --- clients ----------------------------------------------------------------------------


def import_clients(session: Session, path: Path, settings: Settings, actor: str) -> ImportReport:
    """One row per contact; client columns repeat on each of its rows and must agree."""
    cfg = settings.import_.clients
    region = settings.organisation.default_region
    problems = _Problems(path)
    required = ("client_id", "client", "segment")
    rows = list(read_rows(path, CLIENT_FIELDS, required, cfg.columns))
    raw_phones = (row.cells.get("phone", "") for row in rows)
    with PendingPhones((p for p in raw_phones if p), region) as pending:
        parser = rec.ClientRowParser(region, cfg.segment_values, cfg.default_language)
        parsed = _parse(rows, parser, problems)
        _resolve_phones(parsed, pending.result(), problems)
    clients = _group_clients(parsed, problems)
    contacts = sum(len(c.contacts) for c in clients.values())
    report = ImportReport("clients", str(path), rows=len(parsed), records=len(clients))

    roles = dict(session.execute(select(Role.key, Role.id)).all())
    for client in clients.values():
        if client.role and client.role not in roles:
            problems.add(client.line, f"role {client.role!r} is not a known role")
    problems.raise_if_any()

    existing = {
        crm: (cid, name, segment, role_id)
        for cid, crm, name, segment, role_id in session.execute(
            select(Client.id, Client.crm_id, Client.name, Client.segment, Client.role_id)
        )
    }
    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    changed_rows: list[dict[str, Any]] = []
    for client in clients.values():
        role_id = roles[client.role] if client.role else None
        wanted = (client.name, client.segment.value, role_id)
        known = existing.get(client.crm_id)
        if known is None:
            new_rows.append(
                {
                    "created_at": now,
                    "updated_at": now,
                    "crm_id": client.crm_id,
                    "name": client.name,
                    "segment": client.segment.value,
                    "role_id": role_id,
                }
            )
        elif known[1:] != wanted:
            changed_rows.append(
                {
                    "id": known[0],
                    "name": client.name,
                    "segment": client.segment.value,
                    "role_id": role_id,
                }
            )
    if new_rows:
        bulk_insert(session, table_of(Client), new_rows)
    if changed_rows:
        session.execute(update(Client), changed_rows)
    ids = dict(session.execute(select(Client.crm_id, Client.id)).all())

    touched: set[int] = {row["id"] for row in changed_rows}
    touched |= _sync_domains(session, clients.values(), ids)
    touched |= _sync_contacts(session, clients.values(), ids, report)
    report.created = len(new_rows)
    report.updated = len(touched - {ids[r["crm_id"]] for r in new_rows})
    report.unchanged = len(clients) - report.created - report.updated
    detail = report.as_dict() | {"clients": len(clients), "contacts": contacts}
    record_audit(session, actor, "import.clients", str(path), detail)
    return report


def _resolve_phones(
    rows: Iterable[rec.ClientRow], phones: dict[str, str | PhoneError], problems: _Problems
) -> None:
    for line, _, contact in rows:
        if contact is None or contact.phone is None:
            continue
        normalised = phones[contact.phone]
        if isinstance(normalised, PhoneError):
            problems.add(line, f"phone: {normalised}")
        contact.phone = str(normalised)


def _group_clients(
    rows: Sequence[rec.ClientRow], problems: _Problems
) -> dict[str, rec.ClientRecord]:
    clients: dict[str, rec.ClientRecord] = {}
    heads: dict[str, rec.ClientHead] = {}
    seen_contacts: dict[tuple[str, str], int] = {}
    for line, head, contact in rows:
        crm_id = head.crm_id
        client = clients.get(crm_id)
        if client is None:
            client = clients[crm_id] = rec.ClientRecord(
                line, crm_id, head.name, head.segment, head.role, head.domains
            )
            heads[crm_id] = head
        elif head is not heads[crm_id]:  # same values share one head object
            _check_same_client(line, head, client, problems)
        if contact is None:
            continue
        key = (crm_id, contact.identity)
        first = seen_contacts.get(key)
        if first is not None:
            problems.add(
                line,
                f"duplicate contact {contact.identity} of client {crm_id} (first on line {first})",
            )
            continue
        seen_contacts[key] = line
        client.contacts.append(contact)
    return clients


def _check_same_client(
    line: int, head: rec.ClientHead, client: rec.ClientRecord, problems: _Problems
) -> None:
    for what, mine, theirs in (
        ("client", head.name, client.name),
        ("segment", head.segment.value, client.segment.value),
        ("role", head.role, client.role),
    ):
        if mine != theirs:
            problems.add(
                line,
                f"{what} {mine!r} differs from {theirs!r} given for client "
                f"{client.crm_id} on line {client.line}",
            )
    if head.domains and head.domains != client.domains:
        if client.domains:
            problems.add(line, f"domains differ from those on line {client.line}")
        else:
            client.domains = head.domains


def _sync_domains(
    session: Session, clients: Iterable[rec.ClientRecord], ids: dict[str, int]
) -> set[int]:
    current = _grouped(session.execute(select(ClientDomain.client_id, ClientDomain.domain)))
    touched = set()
    add: list[dict[str, Any]] = []
    for client in clients:
        cid = ids[client.crm_id]
        have, want = current.get(cid, set()), set(client.domains)
        if have == want:
            continue
        touched.add(cid)
        add.extend({"client_id": cid, "domain": d} for d in want - have)
        gone = have - want
        if gone:
            session.execute(
                delete(ClientDomain).where(
                    ClientDomain.client_id == cid, ClientDomain.domain.in_(gone)
                )
            )
    if add:
        bulk_insert(session, table_of(ClientDomain), add)
    return touched


def _sync_contacts(
    session: Session,
    clients: Iterable[rec.ClientRecord],
    ids: dict[str, int],
    report: ImportReport,
) -> set[int]:
    current: dict[int, dict[str, tuple[int, tuple[object, ...]]]] = {}
    for cid, row_id, name, email, phone, mobile, language, removed in session.execute(
        select(
            Contact.client_id,
            Contact.id,
            Contact.name,
            Contact.email,
            Contact.phone,
            Contact.is_mobile,
            Contact.language,
            Contact.removed_at,
        )
    ):
        identity = email or f"tel:{phone}"
        current.setdefault(cid, {})[identity] = (
            row_id,
            (name, email, phone, mobile, language, removed is None),
        )
    now = utcnow()
    touched: set[int] = set()
    add: list[dict[str, Any]] = []
    change: list[dict[str, Any]] = []
    remove: list[dict[str, Any]] = []
    for client in clients:
        cid = ids[client.crm_id]
        have = current.get(cid, {})
        for contact in client.contacts:
            wanted = (
                contact.name,
                contact.email,
                contact.phone,
                contact.is_mobile,
                contact.language,
                True,
            )
            values = {
                "name": contact.name,
                "email": contact.email,
                "phone": contact.phone,
                "is_mobile": contact.is_mobile,
                "language": contact.language,
            }
            known = have.pop(contact.identity, None)
            if known is None:
                add.append({"client_id": cid, **values})
                touched.add(cid)
            elif known[1] != wanted:
                change.append({"id": known[0], "removed_at": None, **values})
                touched.add(cid)
        for row_id, state in have.values():
            if state[-1]:  # still active: the export no longer lists it
                remove.append({"id": row_id, "removed_at": now})
                touched.add(cid)
    if add:
        bulk_insert(session, table_of(Contact), add)
    if change:
        session.execute(update(Contact), change)
    if remove:
        session.execute(update(Contact), remove)
    report.removed = len(remove)
    return touched


# --- helpers ----------------------------------------------------------------------------


def _grouped(rows: Iterable[tuple[int, str]]) -> dict[int, set[str]]:
    grouped: dict[int, set[str]] = {}
    for owner, value in rows:
        grouped.setdefault(owner, set()).add(value)
    return grouped


def _replace_set(
    session: Session,
    model: type[PersonalAddress] | type[PersonalPhone],
    column: str,
    person_id: int,
    have: set[str],
    want: set[str],
) -> bool:
    if have == want:
        return False
    gone = have - want
    if gone:
        session.execute(
            delete(model).where(model.person_id == person_id, getattr(model, column).in_(gone))
        )
    for value in sorted(want - have):
        session.execute(insert(model).values({"person_id": person_id, column: value}))
    return True
