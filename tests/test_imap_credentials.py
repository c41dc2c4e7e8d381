"""Sites without a Dovecot master user: every mailbox logs in as itself with its own password,
read from a file per mailbox (`imap.credentials_dir`), for IMAP scanning, ACLs and Sieve."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from rolekeeper.backends.acl import ImapAcl
from rolekeeper.backends.imap import ImapSource, mailbox_login
from rolekeeper.backends.sieve import OWN_SCRIPT, WRAPPER, Redirect, SieveManager
from rolekeeper.cli import main
from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import Settings, load_settings
from rolekeeper.errors import MailboxAccessError
from rolekeeper.lab.dovecot import HOST, DovecotServer
from rolekeeper.store.models import Incident
from rolekeeper.store.open import Store, open_store
from rolekeeper.watch import Scanner
from tests.conftest import import_sample_org
from tests.servers.dovecot import clear_sieve

IVAN = "ivan.petrov@acme.example"
MANAGER1 = "manager1@acme.example"
NO_FILE = "maria.kuznetsova@acme.example"  # a mailbox the admin gave no password file
WRONG = "elena.sokolova@acme.example"  # its file holds a password the server refuses
PASSWORD = "pw"  # the sample organisation's users in the tests' Dovecot
SAMPLE = Path(__file__).parent / "samples" / "r1_client_to_named.eml"


def per_mailbox_section(server: DovecotServer, credentials: Path) -> str:
    return (
        f'[imap]\nhost = "{HOST}"\nport = {server.imap_port}\nsieve_port = {server.sieve_port}\n'
        f'security = "plain"\nusername = "{IVAN}"\nmaster_user_separator = ""\n'
        f'credentials_dir = "{credentials}"\n'
    )


@pytest.fixture
def org(tmp_path: Path, dovecot_server: DovecotServer) -> Iterator[tuple[Settings, Store]]:
    credentials = tmp_path / "imap-passwords"
    credentials.mkdir(mode=0o700)
    config = tmp_path / "rolekeeper.toml"
    config.write_text(
        DEMO_CONFIG.format(db=tmp_path / "rk.db")
        + per_mailbox_section(dovecot_server, credentials)
        + '[watch]\nfolders = ["INBOX"]\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    store = open_store(settings)
    import_sample_org(settings, store)
    assert settings.imap is not None
    mailboxes = Scanner(store.sessions, settings, ImapSource(settings.imap)).mailboxes()
    dovecot_server.add_users({m: PASSWORD for m in mailboxes})
    for mailbox in mailboxes:
        if mailbox != NO_FILE:
            secret = "not-the-password" if mailbox == WRONG else PASSWORD
            (credentials / mailbox).write_text(secret + "\n", encoding="utf-8")
    yield settings, store
    store.close()


def test_scan_logs_in_per_mailbox_and_skips_a_mailbox_it_cannot_open(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    assert settings.imap is not None
    # No master user here: the login is the mailbox itself, its password from its file.
    assert mailbox_login(settings.imap, IVAN) == (IVAN, PASSWORD)
    with pytest.raises(MailboxAccessError, match=f"{NO_FILE}: no IMAP password: .*does not exist"):
        mailbox_login(settings.imap, NO_FILE)

    message_id = f"{uuid.uuid4().hex}@client.example"
    raw = re.sub(
        rb"Message-ID: <[^>]*>", f"Message-ID: <{message_id}>".encode(), SAMPLE.read_bytes()
    )
    dovecot_server.append(IVAN, "INBOX", raw)
    source = ImapSource(settings.imap)
    scanner = Scanner(store.sessions, settings, source)
    try:
        reports = {r.mailbox: r for r in scanner.scan_all()}
    finally:
        scanner.close()
        source.close()

    failed = {m: r.error for m, r in reports.items() if r.mode == "failed"}
    assert set(failed) == {NO_FILE, WRONG}
    assert f"{settings.imap.credentials_dir}/{NO_FILE} does not exist" in failed[NO_FILE]
    assert "IMAP login refused" in failed[WRONG]
    assert not any("not-the-password" in why for why in failed.values())  # secrets unlogged
    # Every other mailbox was read, Ivan's mail among them.
    read = {m for m, r in reports.items() if r.mode != "failed"}
    assert {IVAN, MANAGER1} <= read and len(read) == len(reports) - 2
    assert reports[IVAN].messages >= 1
    with store.sessions() as session:
        keys = set(session.scalars(select(Incident.message_key)))
    assert f"<{message_id}>" in keys

    # The command says which mailbox was skipped and exits 1; the others were still read.
    assert main(["--config", str(settings.source_files[0]), "scan", "--once"]) == 1


def test_sieve_acls_and_check_use_the_mailboxs_own_login(
    org: tuple[Settings, Store], dovecot_server: DovecotServer, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _ = org
    assert settings.imap is not None
    sieve = SieveManager(settings.imap)
    redirect = Redirect(MANAGER1, addresses=(f"buyer-{uuid.uuid4().hex[:6]}@client.example",))
    clear_sieve(dovecot_server, IVAN)  # earlier tests of the session may have filtered Ivan's mail
    try:
        changes = sieve.ensure(IVAN, [redirect], keep_copy=True)
        assert changes[-1] == f"activated {WRAPPER}"
        assert sieve.ensure(IVAN, [redirect], keep_copy=True) == []
        active, scripts = sieve.active_scripts(IVAN)
        assert active == WRAPPER and OWN_SCRIPT in scripts
        with pytest.raises(MailboxAccessError, match=NO_FILE):
            sieve.ensure(NO_FILE, [redirect], keep_copy=True)
    finally:
        clear_sieve(dovecot_server, IVAN)

    acls = ImapAcl(settings.imap).read(MANAGER1)
    assert "INBOX" in acls and MANAGER1 in acls["INBOX"]  # the owner's own entry

    # `check --connect` logs in to IMAP and ManageSieve as `username`, a mailbox here.
    assert main(["--config", str(settings.source_files[0]), "check", "--connect"]) == 0
    out = capsys.readouterr().out
    assert f"imap      {HOST}:{dovecot_server.imap_port} (plain): logged in as {IVAN}" in out
    assert "ok    sieve" in out
