"""The private Dovecot fixture works for real: logins, LMTP, ACLs, ManageSieve and Sieve."""

from __future__ import annotations

import email
import email.policy
import smtplib
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from sievelib.managesieve import Client as SieveClient

from rolekeeper.lab.dovecot import DovecotError, DovecotServer
from rolekeeper.lab.smtp import SmtpSink

DOMAIN = "acme.example"


# Every account the tests below use, added in one batch: each passwd-file change costs a wait
# for Dovecot's next once-a-second re-read (see DovecotServer.add_users).
ACCOUNTS = (
    "anna",
    "archive",
    "owner",
    "deputy",
    "boss",
    "assistant",
    "caps",
    "junked",
    "away",
    "included",
)


def unique_address(name: str) -> str:
    """The server is shared by the whole session: never reuse an address."""
    return f"{name}.{uuid.uuid4().hex[:8]}@{DOMAIN}"


@pytest.fixture(scope="module")
def accounts(dovecot_server: DovecotServer) -> dict[str, tuple[str, str]]:
    made = {name: (unique_address(name), f"pw-{uuid.uuid4().hex[:12]}") for name in ACCOUNTS}
    dovecot_server.add_users(dict(made.values()))
    return made


def message(to: str, subject: str, sender: str = "client@outside.example") -> bytes:
    return (
        f"From: Client <{sender}>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@outside.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Здравствуйте, это проверка.\r\n"
    ).encode()


def subjects(client: IMAPClient, folder: str) -> list[str]:
    client.select_folder(folder, readonly=True)
    uids = client.search("ALL")
    if not uids:
        return []
    fetched = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    found = []
    for data in fetched.values():
        header = email.message_from_bytes(data[b"BODY[HEADER.FIELDS (SUBJECT)]"])
        found.append(str(header["Subject"]))
    return found


@contextmanager
def sieve(server: DovecotServer, login: str, password: str) -> Iterator[SieveClient]:
    client = SieveClient(server.host, server.sieve_port)
    with warnings.catch_warnings():
        # sievelib warns about plaintext credentials; this is loopback on purpose.
        warnings.simplefilter("ignore", UserWarning)
        connected = client.connect(login, password, starttls=False, authmech="PLAIN")
    assert connected, client.errmsg
    try:
        yield client
    finally:
        client.logout()


def install_script(client: SieveClient, name: str, text: str, *, active: bool = True) -> None:
    assert client.putscript(name, text), client.errmsg
    if active:
        assert client.setactive(name), client.errmsg


def test_user_and_master_logins(dovecot_server: DovecotServer) -> None:
    # add_user while Dovecot runs: the changed passwd-file is re-read on a later lookup.
    user, password = unique_address("ivan.petrov"), f"pw-{uuid.uuid4().hex[:12]}"
    dovecot_server.add_user(user, password)
    with dovecot_server.imap(user, password) as client:
        assert b"ACL" in client.capabilities()
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    login, master_password = dovecot_server.master_login(user)
    assert login == f"{user}*rkadmin"
    with dovecot_server.imap(login, master_password) as client:
        client.select_folder("INBOX")
    with pytest.raises(LoginError):
        dovecot_server.imap(user, "wrong")
    with pytest.raises(LoginError):
        dovecot_server.imap(login, "wrong")


def test_lmtp_delivery_lands_in_inbox(
    dovecot_server: DovecotServer, accounts: dict[str, tuple[str, str]]
) -> None:
    user, password = accounts["anna"]
    dovecot_server.deliver(user, message(user, "Счёт 42"))
    with dovecot_server.imap(user, password) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["SUBJECT", "Счёт 42"], charset="UTF-8")
        assert len(uids) == 1
        body = client.fetch(uids, ["BODY.PEEK[TEXT]"])[uids[0]][b"BODY[TEXT]"]
        assert "проверка" in body.decode()


def test_master_user_append_and_read(
    dovecot_server: DovecotServer, accounts: dict[str, tuple[str, str]]
) -> None:
    user, _ = accounts["archive"]
    uid = dovecot_server.append(user, "Archive/2024", message(user, "archived"))
    assert uid == 1
    with dovecot_server.imap(*dovecot_server.master_login(user)) as client:
        assert subjects(client, "Archive/2024") == ["archived"]


def test_lmtp_refuses_unknown_user(dovecot_server: DovecotServer) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        dovecot_server.deliver(f"nobody-{uuid.uuid4().hex[:6]}@{DOMAIN}", b"Subject: x\r\n\r\n")


def test_setacl_shares_inbox(
    dovecot_server: DovecotServer, accounts: dict[str, tuple[str, str]]
) -> None:
    (owner, owner_pw), (grantee, grantee_pw) = accounts["owner"], accounts["deputy"]
    dovecot_server.deliver(owner, message(owner, "for the role"))
    with dovecot_server.imap(owner, owner_pw) as client:
        client.setacl("INBOX", grantee, "lrs")
        assert dict(client.getacl("INBOX")) == {
            owner.encode(): b"lrwstipekxacd",
            grantee.encode(): b"lrs",
        }
    with dovecot_server.imap(grantee, grantee_pw) as client:
        # Dovecot LISTs another user's Maildir INBOX as the namespace root, "shared/<owner>";
        # "shared/<owner>/INBOX" names the same mailbox for SELECT, GETACL and the rest.
        names = [name for _, _, name in client.list_folders("shared/", "*")]
        assert f"shared/{owner}" in names
        assert subjects(client, f"shared/{owner}/INBOX") == ["for the role"]
        assert subjects(client, f"shared/{owner}") == ["for the role"]


def test_master_user_grants_on_behalf_of_owner(
    dovecot_server: DovecotServer, accounts: dict[str, tuple[str, str]]
) -> None:
    (owner, _), (grantee, grantee_pw) = accounts["boss"], accounts["assistant"]
    dovecot_server.append(owner, "Clients", message(owner, "client file"))
    # acl_user = %u: a master login holds the owner's rights, including "a" (administer).
    with dovecot_server.imap(*dovecot_server.master_login(owner)) as client:
        client.setacl("Clients", grantee, "lr")
        assert dict(client.getacl("Clients"))[grantee.encode()] == b"lr"
    with dovecot_server.imap(grantee, grantee_pw) as client:
        names = [name for _, _, name in client.list_folders("shared/", "*")]
        assert f"shared/{owner}/Clients" in names
        assert subjects(client, f"shared/{owner}/Clients") == ["client file"]


def test_sieve_capabilities(
    dovecot_server: DovecotServer, accounts: dict[str, tuple[str, str]]
) -> None:
    user, password = accounts["caps"]
    with sieve(dovecot_server, user, password) as client:
        extensions = set(client.get_sieve_capabilities())
    assert {"fileinto", "include", "vacation", "copy"} <= extensions


def test_managesieve_fileinto_junk(
    dovecot_server: DovecotServer, accounts: dict[str, tuple[str, str]]
) -> None:
    user, password = accounts["junked"]
    with dovecot_server.imap(user, password) as client:
        client.create_folder("Junk")
    with sieve(dovecot_server, user, password) as client:
        install_script(client, "spam", 'require ["fileinto"];\r\nfileinto "Junk";\r\n')
        assert client.listscripts() == ("spam", [])
    dovecot_server.deliver(user, message(user, "cheap pills"))
    with dovecot_server.imap(user, password) as client:
        assert subjects(client, "Junk") == ["cheap pills"]
        assert subjects(client, "INBOX") == []


def test_vacation_reply_reaches_smtp_sink(
    dovecot_server: DovecotServer, accounts: dict[str, tuple[str, str]]
) -> None:
    user, password = accounts["away"]
    # The admin sets the out-of-office through the master user, as the daemon would.
    with sieve(dovecot_server, *dovecot_server.master_login(user)) as client:
        install_script(
            client,
            "vacation",
            'require ["vacation"];\r\n'
            'vacation :days 1 :subject "Out of office" "I am away; ask the role mailbox.";\r\n',
        )
    sender = f"client-{uuid.uuid4().hex[:8]}@outside.example"
    before = len(dovecot_server.smtp.messages)
    dovecot_server.deliver(user, message(user, "are you there?", sender), mail_from=sender)
    replies = [m for m in dovecot_server.smtp.wait_for(before + 1) if sender in m.rcpt_tos]
    assert len(replies) == 1
    reply = replies[0]
    assert reply.mail_from == "<>"
    parsed = email.message_from_bytes(reply.content, policy=email.policy.default)
    assert parsed["Auto-Submitted"].startswith("auto-replied")
    assert parsed["Subject"] == "Out of office"
    assert user in str(parsed["From"])
    with dovecot_server.imap(user, password) as imap:
        assert subjects(imap, "INBOX") == ["are you there?"]


def test_include_personal_script(
    dovecot_server: DovecotServer, accounts: dict[str, tuple[str, str]]
) -> None:
    user, password = accounts["included"]
    with dovecot_server.imap(user, password) as client:
        client.create_folder("Filed")
    with sieve(dovecot_server, user, password) as client:
        install_script(
            client, "other", 'require ["fileinto"];\r\nfileinto "Filed";\r\n', active=False
        )
        install_script(client, "main", 'require ["include"];\r\ninclude :personal "other";\r\n')
    dovecot_server.deliver(user, message(user, "via include"))
    with dovecot_server.imap(user, password) as client:
        assert subjects(client, "Filed") == ["via include"]
        assert subjects(client, "INBOX") == []


def test_bad_config_raises_with_dovecots_message(dovecot_server: DovecotServer) -> None:
    server = DovecotServer(SmtpSink(), extra_config="no_such_setting = 1")
    with pytest.raises(DovecotError, match="Unknown setting: no_such_setting"):
        server.start()
    assert server.directory is None
