"""Mail read from history (a first backfill over months, a resync after a UIDVALIDITY change,
an --as-of replay) is recorded and reported but sends, nudges and redirects nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from rolekeeper.backends.imap import ImapSource
from rolekeeper.backends.sieve import WRAPPER, SieveManager
from rolekeeper.config import Settings
from rolekeeper.lab.dovecot import DovecotServer
from rolekeeper.store.models import Incident
from rolekeeper.store.open import Store
from rolekeeper.watch import Scanner
from tests.servers.dovecot import clear_sieve
from tests.test_actions import PAVEL, VIP_CLIENT, client_mail, org, run_jobs

__all__ = ["org"]  # the fixture, used by name


def test_months_of_history_send_nothing_and_live_mail_does(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    watch = settings.watch.model_copy(update={"backfill_days": 120, "folders": ("INBOX", "Old")})
    settings = settings.model_copy(update={"watch": watch})
    assert settings.imap is not None
    with dovecot_server.imap(*dovecot_server.master_login(PAVEL)) as client:
        for folder in ("Old", "Old-before"):
            if client.folder_exists(folder):
                client.delete_folder(folder)
    clear_sieve(dovecot_server, PAVEL)  # earlier tests of the session may have left some
    now = datetime.now(UTC)
    for days in range(5, 115, 10):  # a VIP client writing to Pavel's own address for months
        when = now - timedelta(days=days)
        dovecot_server.append(PAVEL, "INBOX", client_mail(VIP_CLIENT, PAVEL), when=when)
        dovecot_server.append(PAVEL, "Old", client_mail(VIP_CLIENT, PAVEL), when=when)
    scanner = Scanner(store.sessions, settings, ImapSource(settings.imap))
    sink = dovecot_server.smtp
    sink.clear()

    modes = {r.folder: r.mode for r in scanner.scan_all() if r.mailbox == PAVEL}
    assert modes == {"INBOX": "backfill", "Old": "backfill"}
    # The admin rebuilds a folder (new UIDVALIDITY): read again, as history.
    with dovecot_server.imap(*dovecot_server.master_login(PAVEL)) as client:
        client.rename_folder("Old", "Old-before")
        client.create_folder("Old")
    dovecot_server.append(PAVEL, "Old", client_mail(VIP_CLIENT, PAVEL), when=now)
    modes = {r.folder: r.mode for r in scanner.scan_all() if r.mailbox == PAVEL}
    assert modes["Old"] == "resync"
    scanner.scan_all(as_of=now - timedelta(days=30))
    run_jobs(settings, store)
    with store.sessions() as session:
        recorded = session.scalar(select(func.count()).select_from(Incident)) or 0
        live = session.scalar(select(func.count()).select_from(Incident).where(Incident.live))
    assert recorded >= 23 and live == 0
    assert sink.messages == []
    assert SieveManager(settings.imap).active_scripts(PAVEL)[0] != WRAPPER

    # The same breach arriving now is acted on: the supervisor's alert and the nudge.
    dovecot_server.deliver(PAVEL, client_mail(VIP_CLIENT, PAVEL))
    scanner.scan_all()
    run_jobs(settings, store)
    assert len(sink.wait_for(2, timeout=10)) == 2
    assert SieveManager(settings.imap).active_scripts(PAVEL)[0] == WRAPPER
    scanner.source.close()
    with dovecot_server.imap(*dovecot_server.master_login(PAVEL)) as client:
        for folder in ("Old", "Old-before"):
            client.delete_folder(folder)
