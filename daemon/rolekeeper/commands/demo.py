"""`rolekeeper demo`: the main job on embedded defaults, on this machine, in one command.

Builds a private state directory (SQLite, a config for the sample organisation), imports
the sample people, roles and clients, starts a private Dovecot holding the organisation's
mailboxes, scans them (a backfill of past mail, then new mail as it arrives) and prints the
status and the incidents an admin would see.
"""

from __future__ import annotations

import argparse
import email
import email.message
import email.policy
import json
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from rolekeeper.backends.imap import ImapSource
from rolekeeper.clock import utcnow
from rolekeeper.commands.common import actor
from rolekeeper.commands.scan import render_incidents
from rolekeeper.commands.status import render_status
from rolekeeper.config import Settings, load_settings
from rolekeeper.directory import queries
from rolekeeper.duework import DueWorkRunner
from rolekeeper.jobkinds import job_kinds
from rolekeeper.lab import correspondence
from rolekeeper.log import configure_logging
from rolekeeper.sample import import_sample
from rolekeeper.store.db import transaction
from rolekeeper.store.models import AuditEntry, ScanCursor, TransitionStep
from rolekeeper.store.open import Store, open_store
from rolekeeper.watch import Scanner

if TYPE_CHECKING:
    from rolekeeper.lab.dovecot import DovecotServer

DEMO_CONFIG = """\
# Written by `rolekeeper demo`: the sample organisation on a private SQLite store.
[organisation]
name = "Acme (sample organisation)"
domains = ["acme.example"]
default_region = "RU"
timezone = "Europe/Moscow"
main_lines = ["+7 495 120-45-00"]

[database]
url = "sqlite:///{db}"

[logging]
level = "warning"

# The sample CRM export has Russian column headers, as a Russian CRM writes them.
[import.clients]
default_language = "ru"
[import.clients.columns]
client_id = "ID клиента"
client = "Компания"
domains = "Домены"
segment = "Сегмент"
role = "Роль"
contact = "Контакт"
email = "E-mail"
phone = "Телефон"
mobile = "Мобильный"
language = "Язык"
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo", help="run the main job on the sample organisation (SQLite, local state)"
    )
    parser.add_argument(
        "--dir", type=Path, default=Path("var/demo"), help="state directory (default var/demo)"
    )
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    state: Path = args.dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    for stale in state.glob("rolekeeper.db*"):  # every run starts from the same sample
        stale.unlink()
    config = state / "rolekeeper.toml"
    config.write_text(DEMO_CONFIG.format(db=state / "rolekeeper.db"), encoding="utf-8")
    settings = load_settings(config)
    configure_logging(settings.logging)
    store = open_store(settings)
    try:
        print(f"rolekeeper demo: state in {state} (config {config})\n")
        _import_sample(store, settings)
        with store.sessions() as session:
            print("\n" + render_status(queries.status(session, settings)))
    finally:
        store.close()
    _watch_mail(state, config)
    return 0


def _import_sample(store: Store, settings: Settings) -> None:
    for report in import_sample(store, settings, actor()):
        print(
            f"import {report.kind:<8} {report.rows:>4} rows, {report.records:>3} {report.kind}: "
            f"{report.created} new, {report.updated} changed, {report.unchanged} unchanged"
        )


def _watch_mail(state: Path, config: Path) -> None:
    """A private Dovecot with the organisation's mail; rolekeeper watches it."""
    from rolekeeper.lab.dovecot import SIEVE_PLUGIN, dovecot_binary, running_dovecot

    if dovecot_binary() is None or not SIEVE_PLUGIN.exists():
        print("\nDovecot is not installed: `scripts/demo` installs it and shows detection too.")
        return
    with running_dovecot() as server:
        config.write_text(
            config.read_text(encoding="utf-8")
            + "\n# The demo's private Dovecot and SMTP sink (new on every run).\n"
            + server.config_sections(state / "imap-master.pw", smtp=True),
            encoding="utf-8",
        )
        settings = load_settings(config)
        store = open_store(settings)
        assert settings.imap is not None
        source = ImapSource(settings.imap)
        scanner: Scanner | None = None
        try:
            with transaction(store.sessions) as session:
                # Cursors of the previous run's server mean nothing to this one.
                session.execute(delete(ScanCursor))
            scanner = Scanner(store.sessions, settings, source)
            server.add_users(
                {mailbox: secrets.token_urlsafe(12) for mailbox in scanner.mailboxes()}
            )
            for mailbox in scanner.mailboxes():  # every mailbox has its Sent folder
                with server.imap(*server.master_login(mailbox)) as client:
                    client.create_folder("Sent")
            for mail in correspondence.history():
                server.append(mail.mailbox, mail.folder, mail.message)
            first = scanner.scan_all()
            print(
                f"\nMail watch: {len(first)} folders of {len(scanner.mailboxes())} mailboxes; "
                f"the first pass read {sum(r.messages for r in first)} past messages "
                "(recorded, never acted on)."
            )
            for mail in correspondence.new_mail():
                server.append(mail.mailbox, mail.folder, mail.message)
            second = scanner.scan_all()
            print(f"New mail while watching: {sum(r.messages for r in second)} messages.\n")
            runner = DueWorkRunner(store.sessions, settings, job_kinds())
            runner.seed_recurring()
            runner.run_due()
            time.sleep(0.5)  # let the SMTP sink take in what the jobs sent
            print("What rolekeeper did about the live incidents:")
            for sent in server.smtp.messages:
                parsed = email.message_from_bytes(sent.content, policy=email.policy.default)
                print(f"  mail {sent.mail_from} -> {', '.join(sent.rcpt_tos)}: {parsed['Subject']}")
            with store.sessions() as session:
                for target, detail in session.execute(
                    select(AuditEntry.target, AuditEntry.detail).where(
                        AuditEntry.action == "sieve.redirects"
                    )
                ).all():
                    print(f"  sieve on {target}: client mail now also goes to {detail['roles']}")
            print()
            with store.sessions() as session:
                print("Incidents\n" + render_incidents(session))
            _departure(store, settings, server)
        finally:
            if scanner is not None:
                scanner.close()
            source.close()
            store.close()


LEAVER = "ivan.petrov@acme.example"
SUCCESSOR = "maria.kuznetsova@acme.example"


def _departure(store: Store, settings: Settings, server: DovecotServer) -> None:
    """Ivan Petrov leaves: his two roles pass to Maria Kuznetsova, every client is told."""
    from rolekeeper.workflows.departure import create_transition, plan_departure
    from rolekeeper.workflows.job import run_transitions_now

    print(f"\nHandover: {LEAVER} leaves today; {SUCCESSOR} takes his roles.")
    print(f"  rolekeeper depart {LEAVER} --successor {SUCCESSOR} --effective now")
    with transaction(store.sessions) as session:
        person, plans = plan_departure(session, LEAVER, SUCCESSOR, {})
        transition = create_transition(session, "departure", person, plans, utcnow(), "demo")
        session.flush()
        transition_id = transition.id
    server.smtp.clear()
    results = run_transitions_now(store.sessions, settings)
    time.sleep(0.5)  # let the SMTP sink take in the last messages
    with store.sessions() as session:
        print(f"  transition {transition_id}: {results.get(transition_id)}")
        for step in session.scalars(
            select(TransitionStep)
            .where(TransitionStep.transition_id == transition_id)
            .order_by(TransitionStep.seq)
        ):
            print(f"    {step.name:<14} {step.status:<6} {_brief(step.detail)}")
    mails = [
        email.message_from_bytes(m.content, policy=email.policy.default)
        for m in server.smtp.messages
    ]
    notices = [m for m in mails if "rk-notice-" in str(m["Message-ID"])]
    by_language = Counter("ru" if "с вами работает" in str(m["Subject"]) else "en" for m in notices)
    print(
        f"\n{len(notices)} notices sent from the role mailboxes "
        f"({', '.join(f'{n} in {lang}' for lang, n in sorted(by_language.items()))}), "
        "each filed in the role's Sent folder. One of them:"
    )
    if notices:
        _show(notices[0])
    for report in (m for m in mails if "rk-report-" in str(m["Message-ID"])):
        print("\nThe supervisor's report:")
        _show(report)


def _brief(detail: dict[str, Any] | None) -> str:
    text = json.dumps(detail or {}, ensure_ascii=False)
    return text if len(text) <= 90 else text[:87] + "..."


def _show(message: email.message.EmailMessage) -> None:
    print(f"  From: {message['From']}\n  To: {message['To']}\n  Subject: {message['Subject']}")
    body = message.get_body(("plain",))
    if body is not None:
        for line in body.get_content().splitlines():
            print(f"  | {line}")
