"""Redirects through ManageSieve on a real Dovecot, beside the person's own filters."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from sievelib.managesieve import Client

from rolekeeper.backends.sieve import (
    OWN_SCRIPT,
    WRAPPER,
    Redirect,
    SieveManager,
    quote,
    render_own_script,
    render_wrapper,
    their_script_in,
)
from rolekeeper.config import ImapSettings
from rolekeeper.lab.dovecot import MASTER_USER, DovecotServer

THEIRS = """require ["fileinto", "vacation", "mailbox"];
if header :contains "subject" "newsletter" { fileinto :create "News"; }
vacation :days 1 :subject "Away" "I am away until Monday.";
"""
REDIRECTS = [
    Redirect(
        "manager1@acme.example",
        addresses=("m.stepanov@severstal-snab.example",),
        domains=("uralchemplast.example",),
    )
]


@pytest.fixture
def mailbox(dovecot_server: DovecotServer) -> str:
    address = f"sieve-{uuid.uuid4().hex[:8]}@acme.example"
    dovecot_server.add_users({address: "pw"})
    client = Client("127.0.0.1", dovecot_server.sieve_port)
    assert client.connect(address, "pw", starttls=False, authmech="PLAIN")
    assert client.putscript("mine", THEIRS) and client.setactive("mine")
    client.logout()
    return address


@pytest.fixture
def manager(dovecot_server: DovecotServer, tmp_path: Path) -> SieveManager:
    (tmp_path / "pw").write_text(dovecot_server.master_password)
    settings = ImapSettings(
        host="127.0.0.1",
        port=dovecot_server.imap_port,
        sieve_port=dovecot_server.sieve_port,
        security="plain",
        username=MASTER_USER,
        password_file=tmp_path / "pw",
    )
    return SieveManager(settings)


def mail(sender: str, to: str, subject: str = "order") -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@x>\r\n\r\nHello\r\n"
    ).encode()


def test_scripts_render_and_quote() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    script = render_own_script(REDIRECTS, keep_copy=True)
    assert 'redirect :copy "manager1@acme.example";' in script
    assert 'anyof (address :is "from" ["m.stepanov@severstal-snab.example"], ' in script
    assert 'redirect "manager1@acme.example";' in render_own_script(REDIRECTS, keep_copy=False)
    assert their_script_in(render_wrapper('my "old" one')) == 'my "old" one'
    assert their_script_in(render_wrapper(None)) is None


def test_redirect_beside_their_filters_and_vacation(
    mailbox: str, manager: SieveManager, dovecot_server: DovecotServer
) -> None:
    changes = manager.ensure(mailbox, REDIRECTS, keep_copy=True)
    assert changes == [
        f"wrote {OWN_SCRIPT}",
        f"wrote {WRAPPER} (including mine)",
        f"activated {WRAPPER}",
    ]
    assert manager.ensure(mailbox, REDIRECTS, keep_copy=True) == []  # nothing to do twice
    active, scripts = manager.active_scripts(mailbox)
    assert active == WRAPPER and {"mine", OWN_SCRIPT} <= set(scripts)

    sink = dovecot_server.smtp
    sink.clear()
    client_sender = f"buyer{uuid.uuid4().hex[:6]}@uralchemplast.example"
    dovecot_server.deliver(mailbox, mail(client_sender, mailbox), mail_from=client_sender)
    got = sink.wait_for(2, timeout=10)  # the redirect and their vacation reply
    redirected = [m for m in got if m.rcpt_tos == ("manager1@acme.example",)]
    vacation = [m for m in got if m.rcpt_tos == (client_sender,)]
    assert len(redirected) == 1 and len(vacation) == 1
    assert b"Auto-Submitted: auto-replied" in vacation[0].content
    with dovecot_server.imap(*dovecot_server.master_login(mailbox)) as imap:
        imap.select_folder("INBOX")
        assert len(imap.search(["FROM", client_sender])) == 1  # :copy kept it

    sink.clear()
    other = f"friend{uuid.uuid4().hex[:6]}@elsewhere.example"
    dovecot_server.deliver(mailbox, mail(other, mailbox, "newsletter"), mail_from=other)
    time.sleep(0.5)
    redirected = [m for m in sink.messages if "manager1@acme.example" in m.rcpt_tos]
    assert redirected == []  # not a client: nothing redirected
    with dovecot_server.imap(*dovecot_server.master_login(mailbox)) as imap:
        assert imap.folder_exists("News")  # their own filter still runs


def test_their_newly_activated_script_is_wrapped_again(
    mailbox: str, manager: SieveManager, dovecot_server: DovecotServer
) -> None:
    manager.ensure(mailbox, REDIRECTS, keep_copy=True)
    client = Client("127.0.0.1", dovecot_server.sieve_port)
    assert client.connect(mailbox, "pw", starttls=False, authmech="PLAIN")
    assert client.putscript("summer", 'require ["vacation"];\nvacation "On holiday";\n')
    assert client.setactive("summer")  # the employee switches scripts by hand
    client.logout()
    changes = manager.ensure(mailbox, REDIRECTS, keep_copy=True)
    assert changes == [f"wrote {WRAPPER} (including summer)", f"activated {WRAPPER}"]
    assert manager.active_scripts(mailbox)[0] == WRAPPER


def test_filtering_switched_off_keeps_their_script_included(
    mailbox: str, manager: SieveManager, dovecot_server: DovecotServer
) -> None:
    manager.ensure(mailbox, REDIRECTS, keep_copy=True)
    client = Client("127.0.0.1", dovecot_server.sieve_port)
    assert client.connect(mailbox, "pw", starttls=False, authmech="PLAIN")
    assert client.setactive("")  # no script active at all: nothing of theirs was chosen
    client.logout()
    assert manager.ensure(mailbox, REDIRECTS, keep_copy=True) == [f"activated {WRAPPER}"]
    client = Client("127.0.0.1", dovecot_server.sieve_port)
    assert client.connect(mailbox, "pw", starttls=False, authmech="PLAIN")
    assert their_script_in(client.getscript(WRAPPER)) == "mine"  # their vacation stays
    assert client.setactive(OWN_SCRIPT)  # rolekeeper's own script alone, by mistake
    client.logout()
    assert manager.ensure(mailbox, REDIRECTS, keep_copy=True) == [f"activated {WRAPPER}"]
    assert manager.ensure(mailbox, REDIRECTS, keep_copy=True) == []
