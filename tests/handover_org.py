"""An organisation for the handover tests: the sample's people and roles, and N generated
clients of the leaver's two roles (manager1, manager2), each with one contact whose mailbox
is a user of the lab Dovecot."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import select

from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import Settings, load_settings
from rolekeeper.directory.importer import import_clients, import_people, import_roles
from rolekeeper.lab.dovecot import DovecotServer
from rolekeeper.lab.relay import LmtpRelay
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Role
from rolekeeper.store.open import Store

LEAVER = "ivan.petrov@acme.example"
SUCCESSOR = "maria.kuznetsova@acme.example"
SUPERVISOR = "igor.smirnov@acme.example"
JOURNAL = "journal@acme.example"
ROLES = ("manager1@acme.example", "manager2@acme.example")
SEGMENTS = ("VIP", "Ключевой", "Обычный", "Мелкий")
HEADER = "ID клиента;Компания;Домены;Сегмент;Роль;Контакт;E-mail;Телефон;Мобильный;Язык"


def contact_address(tag: str, n: int) -> str:
    return f"buyer{n}@client{n}-{tag}.example"


def write_clients(path: Path, tag: str, count: int) -> list[tuple[str, str]]:
    """CSV of `count` clients; returns (address, language) of every contact."""
    lines, contacts = [HEADER], []
    for n in range(count):
        language = "ru" if n % 2 == 0 else "en"
        role = "manager1" if n % 3 else "manager2"
        address = contact_address(tag, n)
        name = f"Покупатель {n}" if language == "ru" else f"Buyer {n}"
        lines.append(
            f"CRM-{tag}-{n};Client {n} {tag};client{n}-{tag}.example;"
            f"{SEGMENTS[n % 4]};{role};{name};{address};;нет;{language}"
        )
        contacts.append((address, language))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return contacts


def handover_settings(
    tmp: Path,
    server: DovecotServer,
    extra: str = "",
    *,
    delegate: bool = False,
    handover: str = "",
) -> Settings:
    """The demo config with the lab servers; `handover` adds lines to [handover]."""
    config = tmp / "rolekeeper.toml"
    config.write_text(
        DEMO_CONFIG.format(db=tmp / "rk.db")
        + server.config_sections(tmp / "master.pw", smtp=True)
        + f'[watch]\njournal_mailbox = "{JOURNAL}"\n'
        + "[handover]\njournal_grace_minutes = 0\n"
        + ("delegate_named_mailbox = true\n" if delegate else "")
        + handover
        + extra,
        encoding="utf-8",
    )
    return load_settings(config)


def build_org(
    tmp: Path, settings: Settings, store: Store, server: DovecotServer, tag: str, count: int
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Import the org; make every mailbox a lab user. Returns contacts and staff passwords."""
    files = resources.files("rolekeeper.sample")
    with resources.as_file(files / "people.csv") as people, transaction(store.sessions) as s:
        import_people(s, people, settings, "test")
    with resources.as_file(files / "roles.csv") as roles, transaction(store.sessions) as s:
        import_roles(s, roles, settings, "test")
    clients_csv = tmp / "clients.csv"
    contacts = write_clients(clients_csv, tag, count)
    with transaction(store.sessions) as s:
        import_clients(s, clients_csv, settings, "test")
    staff = {a: secrets.token_urlsafe(9) for a in (LEAVER, SUCCESSOR, SUPERVISOR)}
    with store.sessions() as session:
        roles = list(session.scalars(select(Role.address)))
    users = {a: "pw" for a, _ in contacts} | {r: "pw" for r in roles} | {JOURNAL: "pw"}
    server.add_users(users | staff)
    return contacts, staff


@pytest.fixture
def relay(dovecot_server: DovecotServer) -> Iterator[LmtpRelay]:
    """The lab SMTP sink delivers to the lab mailboxes and copies to the journal."""
    relay = LmtpRelay("127.0.0.1", dovecot_server.lmtp_port, JOURNAL)
    dovecot_server.smtp.relay = relay
    yield relay
    relay.drain()
    dovecot_server.smtp.relay = None
