"""Live incidents lead to supervisor alerts and Sieve redirects; backfilled ones lead to nothing."""

from __future__ import annotations

import contextlib
import email
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sievelib.managesieve import Client as SieveClient
from sqlalchemy import func, select

from rolekeeper.backends.imap import ImapSource
from rolekeeper.backends.sieve import WRAPPER, SieveManager, their_script_in
from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import Settings, load_settings
from rolekeeper.duework import DueWorkRunner
from rolekeeper.jobkinds import job_kinds
from rolekeeper.lab.dovecot import DovecotServer
from rolekeeper.reconcile import keep_sieve
from rolekeeper.store.models import AuditEntry, DueJob
from rolekeeper.store.open import Store, open_store
from rolekeeper.watch import Scanner
from tests.conftest import import_sample_org
from tests.servers.dovecot import clear_sieve

PAVEL = "pavel.novikov@acme.example"  # holds keyaccounts; supervisor igor.smirnov
IVAN = "ivan.petrov@acme.example"
VIP_CLIENT = "s.egorov@nevsky-passage.example"  # CRM-1018, VIP, served by keyaccounts


@pytest.fixture
def org(tmp_path: Path, dovecot_server: DovecotServer) -> Iterator[tuple[Settings, Store]]:
    config = tmp_path / "rolekeeper.toml"
    config.write_text(
        DEMO_CONFIG.format(db=tmp_path / "rk.db")
        + dovecot_server.config_sections(tmp_path / "master.pw", smtp=True)
        + '[watch]\nfolders = ["INBOX"]\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    store = open_store(settings)
    import_sample_org(settings, store)
    assert settings.imap is not None
    scanner = Scanner(store.sessions, settings, ImapSource(settings.imap))
    new = {m: "pw" for m in scanner.mailboxes() if m not in _USERS}
    if new:
        dovecot_server.add_users(new)
        _USERS.update(new)
    for mailbox in (PAVEL, IVAN):
        with dovecot_server.imap(*dovecot_server.master_login(mailbox)) as client:
            client.select_folder("INBOX")
            if uids := client.search(["ALL"]):
                client.delete_messages(uids)
                client.expunge()
    scanner.source.close()
    yield settings, store
    store.close()


_USERS: set[str] = set()


def client_mail(sender: str, to: str) -> bytes:
    return (
        f"From: Sergey Egorov <{sender}>\r\nTo: {to}\r\nSubject: personal offer\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@nevsky-passage.example>\r\n\r\nLet's talk directly.\r\n"
    ).encode()


def run_jobs(settings: Settings, store: Store) -> None:
    runner = DueWorkRunner(store.sessions, settings, job_kinds())
    runner.seed_recurring()
    runner.run_due()


def test_live_vip_incident_alerts_and_redirects(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    assert settings.imap is not None
    scanner = Scanner(store.sessions, settings, ImapSource(settings.imap))
    dovecot_server.append(PAVEL, "INBOX", client_mail(VIP_CLIENT, PAVEL))  # old mail
    scanner.scan_all()
    sink = dovecot_server.smtp
    sink.clear()
    run_jobs(settings, store)
    assert sink.messages == []  # a backfill acts on nothing
    assert SieveManager(settings.imap).active_scripts(PAVEL)[0] != WRAPPER

    dovecot_server.deliver(PAVEL, client_mail(VIP_CLIENT, PAVEL))  # live
    scanner.scan_all()
    run_jobs(settings, store)
    got = sink.wait_for(2, timeout=10)  # the supervisor's alert and the client's nudge
    [alert] = [m for m in got if m.rcpt_tos == ("igor.smirnov@acme.example",)]
    [nudge] = [m for m in got if m.rcpt_tos == (VIP_CLIENT,)]
    assert nudge.mail_from == "keyaccounts@acme.example"
    nudge_text = email.message_from_bytes(nudge.content).get_payload(decode=True).decode()
    assert "keyaccounts@acme.example" in nudge_text and "+7 495 120-45-06" in nudge_text
    parsed = email.message_from_bytes(alert.content)
    assert "Павел Новиков" in str(
        email.header.make_header(email.header.decode_header(parsed["Subject"]))
    )
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert "keyaccounts@acme.example" in parsed.get_payload(decode=True).decode()

    # Further mail of that client to Pavel's own address now reaches the role mailbox too.
    assert SieveManager(settings.imap).active_scripts(PAVEL)[0] == WRAPPER
    sink.clear()
    dovecot_server.deliver(PAVEL, client_mail(VIP_CLIENT, PAVEL), mail_from=VIP_CLIENT)
    [redirected] = sink.wait_for(1, timeout=10)
    assert redirected.rcpt_tos == ("keyaccounts@acme.example",)
    with store.sessions() as session:
        actions = list(
            session.scalars(
                select(AuditEntry.action).where(
                    AuditEntry.action.in_(("alert.sent", "sieve.redirects"))
                )
            )
        )
        failed = list(session.scalars(select(DueJob).where(DueJob.status == "parked")))
    assert sorted(actions) == ["alert.sent", "sieve.redirects"]
    assert failed == []
    scanner.source.close()


def test_regular_client_goes_to_no_alert_but_is_redirected(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    assert settings.imap is not None
    scanner = Scanner(store.sessions, settings, ImapSource(settings.imap))
    scanner.scan_all()
    sink = dovecot_server.smtp
    sink.clear()
    regular = "m.stepanov@severstal-snab.example"  # CRM-1001, regular, manager1 (Ivan)
    dovecot_server.deliver(IVAN, client_mail(regular, IVAN))
    scanner.scan_all()
    run_jobs(settings, store)
    [nudge] = sink.wait_for(1, timeout=10)  # regular: no alert (the digest), but a nudge
    assert (nudge.mail_from, nudge.rcpt_tos) == ("manager1@acme.example", (regular,))
    parsed = email.message_from_bytes(nudge.content)
    assert "пожалуйста, пишите на manager1@acme.example" in parsed.get_payload(decode=True).decode()
    sink.clear()
    dovecot_server.deliver(IVAN, client_mail(regular, IVAN))  # again, days later
    scanner.scan_all()
    run_jobs(settings, store)
    time.sleep(0.3)
    # The redirect set after the first incident now sends it to manager1; no second nudge.
    assert [m.rcpt_tos for m in sink.messages] == [("manager1@acme.example",)]
    sink.clear()
    dovecot_server.deliver(
        IVAN,
        client_mail("e.gromova@severstal-snab.example", IVAN),
        mail_from="e.gromova@severstal-snab.example",
    )
    [redirected] = sink.wait_for(1, timeout=10)
    assert redirected.rcpt_tos == ("manager1@acme.example",)  # the whole client follows
    scanner.source.close()


def test_daily_digest_lists_what_was_not_alerted_once(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    from sqlalchemy import update

    from rolekeeper.clock import utcnow
    from rolekeeper.store.db import transaction

    settings, store = org
    assert settings.imap is not None
    scanner = Scanner(store.sessions, settings, ImapSource(settings.imap))
    scanner.scan_all()
    dovecot_server.deliver(IVAN, client_mail("m.stepanov@severstal-snab.example", IVAN))
    scanner.scan_all()
    run_jobs(settings, store)  # plans; no alert for a regular client
    sink = dovecot_server.smtp
    sink.clear()

    def digest_now() -> None:
        with transaction(store.sessions) as session:
            session.execute(
                update(DueJob)
                .where(DueJob.kind == "action.digest", DueJob.status == "pending")
                .values(due_at=utcnow())
            )
        run_jobs(settings, store)

    digest_now()
    [digest] = sink.wait_for(1, timeout=10)
    assert digest.rcpt_tos == ("igor.smirnov@acme.example",)
    text = email.message_from_bytes(digest.content).get_payload(decode=True).decode()
    assert "Ivan Petrov: ООО «Северсталь-Снаб» (regular)" in text
    sink.clear()
    digest_now()  # nothing new since: no second digest
    time.sleep(0.3)
    assert sink.messages == []
    scanner.source.close()


def test_next_digest_time_is_local() -> None:
    from datetime import UTC, datetime

    from rolekeeper.actions import next_digest
    from rolekeeper.config import settings_from_mapping

    settings = settings_from_mapping(
        {"organisation": {"timezone": "Europe/Moscow"}, "actions": {"digest_time": "08:00"}}
    )
    before = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # 07:00 in Moscow
    assert next_digest(settings, before) == datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    after = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # exactly 08:00: the next day's
    assert next_digest(settings, after) == datetime(2026, 11, 24, 5, 0, tzinfo=UTC)


@contextlib.contextmanager
def own_sieve(server: DovecotServer, mailbox: str) -> Iterator[SieveClient]:
    """A ManageSieve session as the mailbox's owner (their own password), as they would use."""
    client = SieveClient(server.host, server.sieve_port)
    assert client.connect(mailbox, "pw", starttls=False, authmech="PLAIN")
    try:
        yield client
    finally:
        client.logout()


def test_reconciler_puts_the_wrapper_back_on_a_current_employees_mailbox(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    assert settings.imap is not None
    clear_sieve(dovecot_server, IVAN)
    scanner = Scanner(store.sessions, settings, ImapSource(settings.imap))
    scanner.scan_all()
    regular = "m.stepanov@severstal-snab.example"  # CRM-1001, regular, manager1 (Ivan)
    dovecot_server.deliver(IVAN, client_mail(regular, IVAN))  # live: a redirect is due
    scanner.scan_all()
    scanner.source.close()
    run_jobs(settings, store)
    assert SieveManager(settings.imap).active_scripts(IVAN)[0] == WRAPPER
    repairs = select(func.count()).where(
        AuditEntry.action == "sieve.repair", AuditEntry.target == IVAN
    )
    with store.sessions() as session:
        before = session.scalar(repairs)
    assert before == 0  # the reconcile job in that run left the mailbox to the redirect job
    try:
        # Ivan, still employed, activates a holiday script of his own by hand.
        with own_sieve(dovecot_server, IVAN) as client:
            assert client.putscript("summer", 'require ["vacation"];\nvacation "On holiday";\n')
            assert client.setactive("summer")

        kept = keep_sieve(store.sessions, settings)

        assert kept.failed == {}
        assert kept.changed == {
            IVAN: [f"wrote {WRAPPER} (including summer)", f"activated {WRAPPER}"]
        }
        with own_sieve(dovecot_server, IVAN) as client:
            active, _ = client.listscripts()
            assert active == WRAPPER
            assert their_script_in(client.getscript(WRAPPER)) == "summer"
        with store.sessions() as session:
            assert session.scalar(repairs) == before + 1

        # Both run for real: the client's mail goes to the role, and Ivan's vacation answers.
        sink = dovecot_server.smtp
        sink.clear()
        colleague = "e.gromova@severstal-snab.example"
        dovecot_server.deliver(IVAN, client_mail(colleague, IVAN), mail_from=colleague)
        got = sink.wait_for(2, timeout=10)
        assert sorted(m.rcpt_tos for m in got) == [(colleague,), ("manager1@acme.example",)]

        again = keep_sieve(store.sessions, settings)  # already right: nothing written
        assert (again.changed, again.failed) == ({}, {})
        with store.sessions() as session:
            assert session.scalar(repairs) == before + 1
    finally:
        clear_sieve(dovecot_server, IVAN)  # no holiday script left for the other tests
