"""Alerts, digests and nudges exactly once across a crash: a real `rolekeeper run` is
SIGKILLed between the SMTP server accepting the mail and the store recording it, then
started again. With a journal the copy there tells it went out (not resent); without one
nothing can tell, so it is marked unknown (not resent, visible); a refusal is retried."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select, update

from rolekeeper.backends.imap import ImapSource
from rolekeeper.cli import main
from rolekeeper.clock import utcnow
from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import Settings, load_settings
from rolekeeper.duework import DueWorkRunner
from rolekeeper.jobkinds import job_kinds
from rolekeeper.lab.dovecot import DovecotServer
from rolekeeper.lab.relay import LmtpRelay
from rolekeeper.lab.smtp import SmtpSink
from rolekeeper.store.db import transaction
from rolekeeper.store.models import ActionMail, AuditEntry, DueJob, Incident
from rolekeeper.store.open import Store, open_store
from rolekeeper.watch import Scanner
from tests.conftest import import_sample_org
from tests.daemon_support import Daemon

PAVEL = "pavel.novikov@acme.example"  # holds keyaccounts; supervisor igor.smirnov
IVAN = "ivan.petrov@acme.example"  # holds manager1; supervisor igor.smirnov
SUPERVISOR = "igor.smirnov@acme.example"
VIP_CLIENT = "s.egorov@nevsky-passage.example"  # VIP: an alert at once
REGULAR_CLIENT = "m.stepanov@severstal-snab.example"  # regular: the digest, and a nudge
MANAGER1 = "manager1@acme.example"
KEYACCOUNTS = "keyaccounts@acme.example"
DAEMON = (
    "[scheduler]\npoll_seconds = 0.3\n"
    "[handover]\njournal_grace_minutes = 0\n"
    # No Sieve redirects: they would outlive the test on the session's Dovecot.
    '[actions.rules.client-to-named]\nnudge = ["vip", "key", "regular", "minor"]\n'
    '[watch]\nidle_folders = 0\npoll_seconds = 3600\nparse_workers = 0\nfolders = ["INBOX"]\n'
)


class RefusingSink(SmtpSink):
    """The SMTP sink, answering 451 to the next `refusals[marker]` messages that contain
    `marker` (nothing of them is accepted or recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals: dict[bytes, int] = {}

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        for marker, left in self.refusals.items():
            if left and marker in content:
                self.refusals[marker] = left - 1
                return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)

    def count(self, marker: bytes) -> int:
        return sum(marker in mail.content for mail in self.messages)


@dataclass
class Org:
    settings: Settings
    store: Store
    sink: RefusingSink
    server: DovecotServer
    journal: str | None

    def live_mail(self, client: str, employee: str) -> None:
        """A client writes to an employee's named address while rolekeeper watches."""
        assert self.settings.imap is not None
        source = ImapSource(self.settings.imap)
        try:
            scanner = Scanner(self.store.sessions, self.settings, source)
            scanner.scan_all()  # the backfill: past mail is never acted on
            message = (
                f"From: <{client}>\r\nTo: {employee}\r\nSubject: personal offer\r\n"
                f"Message-ID: <{uuid.uuid4().hex}@client.example>\r\n\r\nLet's talk directly.\r\n"
            ).encode()
            self.server.deliver(employee, message)
            scanner.scan_all()
            scanner.close()
        finally:
            source.close()

    def run_jobs(self) -> None:
        """What is due, in this process."""
        runner = DueWorkRunner(self.store.sessions, self.settings, job_kinds())
        runner.seed_recurring()
        runner.run_due()

    def make_due(self, kind: str) -> None:
        with transaction(self.store.sessions) as session:
            session.execute(
                update(DueJob)
                .where(DueJob.kind == kind, DueJob.status == "pending")
                .values(due_at=utcnow())
            )

    def mails(self, kind: str) -> list[ActionMail]:
        with self.store.sessions() as session:
            return list(session.scalars(select(ActionMail).where(ActionMail.kind == kind)))

    def audit(self, prefix: str) -> list[str]:
        with self.store.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEntry.action).where(AuditEntry.action.startswith(prefix))
                )
            )

    def crash_then_restart(self, point: str, settled: Callable[[], bool]) -> str:
        """Run the daemon until it kills itself at `point`; run it again until `settled`.
        Returns the second run's log."""
        log = self.settings.source_files[0].parent / "daemon.log"
        assert Daemon(self.settings, log, ROLEKEEPER_CRASH_AT=point).crashed(), log.read_text()
        log.write_text("")
        daemon = Daemon(self.settings, log)
        try:
            deadline = time.monotonic() + 60
            while not settled():
                assert daemon.proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        finally:
            daemon.stop()
        return log.read_text()


@pytest.fixture(params=["journal", "no journal"])
def org(
    request: pytest.FixtureRequest, tmp_path: Path, dovecot_server: DovecotServer
) -> Iterator[Org]:
    journal = f"journal-{uuid.uuid4().hex[:8]}@acme.example" if request.param == "journal" else None
    with RefusingSink() as sink:
        if journal is not None:  # the relay delivers what the sink takes and copies it there
            dovecot_server.add_users({journal: "pw"})
            sink.relay = LmtpRelay("127.0.0.1", dovecot_server.lmtp_port, journal)
        config = tmp_path / "rolekeeper.toml"
        config.write_text(
            DEMO_CONFIG.format(db=tmp_path / "rk.db")
            + dovecot_server.config_sections(tmp_path / "master.pw")
            + f'[smtp]\nhost = "{sink.host}"\nport = {sink.port}\nsecurity = "plain"\n'
            + DAEMON
            + (f'journal_mailbox = "{journal}"\n' if journal else ""),
            encoding="utf-8",
        )
        settings = load_settings(config)
        store = open_store(settings)
        try:
            import_sample_org(settings, store)
            _add_lab_users(settings, store, dovecot_server)
            _empty_sent(dovecot_server)
            yield Org(settings, store, sink, dovecot_server, journal)
        finally:
            if isinstance(sink.relay, LmtpRelay):
                sink.relay.drain()
            store.close()


_USERS: set[str] = set()


def _add_lab_users(settings: Settings, store: Store, server: DovecotServer) -> None:
    assert settings.imap is not None
    source = ImapSource(settings.imap)
    try:
        new = {m: "pw" for m in Scanner(store.sessions, settings, source).mailboxes()}
    finally:
        source.close()
    if new.keys() - _USERS:
        server.add_users({m: p for m, p in new.items() if m not in _USERS})
        _USERS.update(new)


def _empty_sent(server: DovecotServer) -> None:
    """Action mails of an earlier test with the same Message-IDs (same store ids) must not
    count as this test's copies."""
    for role in (MANAGER1, KEYACCOUNTS):
        with server.imap(*server.master_login(role)) as client:
            if client.folder_exists("Sent"):
                client.delete_folder("Sent")


def settled(org: Org, kind: str) -> Callable[[], bool]:
    def done() -> bool:
        mails = org.mails(kind)
        return bool(mails) and all(m.status in ("sent", "unknown", "failed") for m in mails)

    return done


def incidents_json(org: Org, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    config = str(org.settings.source_files[0])
    assert main(["--config", config, "incidents", "list", "--json"]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def test_alert_crash_after_smtp_accepted_is_not_resent(
    org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    org.live_mail(VIP_CLIENT, PAVEL)
    log = org.crash_then_restart("alert.accepted.uncommitted", settled(org, "alert"))

    assert org.sink.count(b"Message-ID: <alert-") == 1  # the supervisor got it once
    [alert] = org.mails("alert")
    assert alert.recipient == SUPERVISOR and alert.attempts == 1
    assert alert.content is None  # the bytes are not kept once settled
    [row] = [r for r in incidents_json(org, capsys) if r["live"]]
    if org.journal is not None:  # the journal's copy tells it went out
        assert alert.status == "sent"
        assert org.audit("alert.") == ["alert.sent"]
        assert "alert sent" in str(row["actions"])
    else:  # nothing can tell: not resent, and the admin sees it
        assert alert.status == "unknown"
        assert org.audit("alert.") == ["alert.unknown"]
        assert "alert unknown" in str(row["actions"])
        assert "action mail outcome unknown; not resent" in log


def test_refused_alert_is_sent_on_retry_exactly_once(org: Org) -> None:
    org.sink.refusals[b"Message-ID: <alert-"] = 1
    org.live_mail(VIP_CLIENT, PAVEL)
    org.run_jobs()
    [alert] = org.mails("alert")
    assert (alert.status, alert.attempts) == ("queued", 1)
    assert alert.last_error is not None and "451" in alert.last_error
    assert org.sink.count(b"Message-ID: <alert-") == 0  # nothing was accepted
    with org.store.sessions() as session:
        job = session.scalars(select(DueJob).where(DueJob.kind == "action.alert")).one()
    assert job.status == "pending" and "451" in (job.last_error or "")

    org.make_due("action.alert")
    org.run_jobs()
    assert org.sink.count(b"Message-ID: <alert-") == 1
    [alert] = org.mails("alert")
    assert (alert.status, alert.attempts) == ("sent", 2)
    assert org.audit("alert.") == ["alert.sent"]
    org.run_jobs()  # nothing left to do: no second alert
    assert org.sink.count(b"Message-ID: <alert-") == 1


@pytest.mark.parametrize("org", ["journal"], indirect=True)
def test_digest_crash_after_smtp_accepted_is_not_resent(org: Org) -> None:
    org.live_mail(REGULAR_CLIENT, IVAN)
    org.run_jobs()  # plans the incident (a regular client: no alert, the digest lists it)
    org.make_due("action.digest")
    org.crash_then_restart("digest.accepted.uncommitted", settled(org, "digest"))

    assert org.sink.count(b"Message-ID: <digest-") == 1
    [digest] = org.mails("digest")
    assert (digest.status, digest.recipient) == ("sent", SUPERVISOR)
    assert org.audit("digest.") == ["digest.sent"]
    with org.store.sessions() as session:
        incident = session.scalars(select(Incident).where(Incident.live)).one()
    assert incident.digested_at is not None and digest.incidents == [incident.id]


@pytest.mark.parametrize("org", ["journal"], indirect=True)
@pytest.mark.parametrize("point", ["nudge.accepted.uncommitted", "nudge.filed.uncommitted"])
def test_nudge_crash_is_not_resent_and_filed_in_sent_once(org: Org, point: str) -> None:
    org.live_mail(REGULAR_CLIENT, IVAN)
    org.crash_then_restart(point, settled(org, "nudge"))

    assert org.sink.count(b"Message-ID: <nudge-") == 1  # the client got it once
    [nudge] = org.mails("nudge")
    assert (nudge.status, nudge.recipient, nudge.sent_mailbox) == (
        "sent",
        REGULAR_CLIENT,
        MANAGER1,
    )
    assert org.audit("nudge.") == ["nudge.sent"]
    with org.server.imap(*org.server.master_login(MANAGER1)) as client:
        client.select_folder("Sent")
        assert len(client.search(["HEADER", "Message-ID", nudge.message_id])) == 1
