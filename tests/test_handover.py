"""A departure end to end against the lab Dovecot and SMTP relay: roles reassigned, the
named mailbox redirected and answering once, exactly one notice per contact in its own
mailbox and language, the report with the supervisor."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from imapclient.exceptions import IMAPClientError
from sievelib.managesieve import Client as SieveClient
from sqlalchemy import select

from rolekeeper.backends.sieve import SieveManager
from rolekeeper.cli import main
from rolekeeper.config import Settings
from rolekeeper.lab.dovecot import DovecotServer
from rolekeeper.lab.relay import LmtpRelay
from rolekeeper.lab.smtp import SubmissionServer
from rolekeeper.store.models import Notice, Person, Role, RoleHolder, Transition, TransitionStep
from rolekeeper.store.open import Store, open_store
from tests.handover_org import (
    LEAVER,
    ROLES,
    SUCCESSOR,
    SUPERVISOR,
    build_org,
    handover_settings,
)
from tests.servers.prism import TwilioProxy
from tests.twilio_support import ACCOUNT, MESSAGING_SERVICE, PUBLIC, TOKEN


def inbox(server: DovecotServer, user: str, folder: str = "INBOX") -> list[email.message.Message]:
    with server.imap(*server.master_login(user)) as client:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    return [
        email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)
        for data in fetched.values()
    ]


def can_read(server: DovecotServer, login: str, password: str, role: str) -> bool:
    """Select the role's INBOX through the shared namespace, logged in as `login` itself."""
    with server.imap(login, password) as client:
        try:
            client.select_folder(f"shared/{role}/INBOX", readonly=True)
        except IMAPClientError:
            return False
        return True


def run_cli(settings: Settings, *args: str) -> int:
    return main(["--config", str(settings.source_files[0]), *args])


def test_a_departure_end_to_end(
    tmp_path: Path,
    dovecot_server: DovecotServer,
    relay: LmtpRelay,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sender_map = tmp_path / "sender_login_maps"
    settings = handover_settings(
        tmp_path,
        dovecot_server,
        f'[provisioning]\nsend_as = "map"\nsender_map_path = "{sender_map}"\n'
        "postmap_command = []\n",
        delegate=True,
    )
    store: Store = open_store(settings)
    try:
        contacts, staff = build_org(tmp_path, settings, store, dovecot_server, "e2e", 300)
        # Before: the leaver reads and sends as both role mailboxes.
        assert run_cli(settings, "reconcile", "--once") == 0
        assert all(can_read(dovecot_server, LEAVER, staff[LEAVER], role) for role in ROLES)
        assert not can_read(dovecot_server, SUCCESSOR, staff[SUCCESSOR], ROLES[0])
        assert run_cli(settings, "depart", LEAVER, "--successor", SUCCESSOR) == 0
        assert run_cli(settings, "transitions", "run") == 0
        relay.drain()
        with store.sessions() as session:
            transition = session.scalars(select(Transition)).one()
            steps = {
                s.name: s.status
                for s in session.scalars(
                    select(TransitionStep).where(TransitionStep.transition_id == transition.id)
                )
            }
            assert transition.status == "done", steps
            statuses = list(session.scalars(select(Notice.status)))
            holders = {
                role: session.scalars(
                    select(Person.named_address)
                    .join(RoleHolder, RoleHolder.person_id == Person.id)
                    .join(Role, Role.id == RoleHolder.role_id)
                    .where(Role.address == role, RoleHolder.ended_at.is_(None))
                ).all()
                for role in ROLES
            }
        assert statuses == ["sent"] * len(contacts)
        assert holders == {role: [SUCCESSOR] for role in ROLES}
        # After: the successor reads both role mailboxes with their own login; the leaver not.
        for role in ROLES:
            assert can_read(dovecot_server, SUCCESSOR, staff[SUCCESSOR], role)
            assert not can_read(dovecot_server, LEAVER, staff[LEAVER], role)
        # Send-as: the successor's submission as the role is accepted, the leaver's refused.
        rows = [line.split() for line in sender_map.read_text().splitlines() if "@" in line]
        assert {r[0]: r[1].split(",") for r in rows if r[0] in ROLES} == {
            role: [SUCCESSOR] for role in ROLES
        }
        note = f"From: {ROLES[0]}\r\nSubject: hello\r\n\r\nHi\r\n".encode()
        with SubmissionServer(staff, sender_map) as submission:
            with smtplib.SMTP(submission.host, submission.port, timeout=10) as smtp:
                smtp.login(SUCCESSOR, staff[SUCCESSOR])
                assert smtp.sendmail(ROLES[0], ["x@client.example"], note) == {}
            with smtplib.SMTP(submission.host, submission.port, timeout=10) as smtp:
                smtp.login(LEAVER, staff[LEAVER])
                with pytest.raises(smtplib.SMTPSenderRefused):
                    smtp.sendmail(ROLES[0], ["x@client.example"], note)

        # Every contact: exactly one notice, in its own language.
        for address, language in contacts:
            got = [m for m in inbox(dovecot_server, address) if "rk-notice-" in m["Message-ID"]]
            assert len(got) == 1, address
            subject = str(got[0]["Subject"])
            assert ("с вами работает" in subject) == (language == "ru"), subject
            assert got[0]["From"].addresses[0].addr_spec in ROLES
            assert got[0].get_body(("html",)) is not None
        # Copies in the roles' Sent folders, one per notice.
        ours = {address for address, _ in contacts}
        filed = Counter(
            m["To"].addresses[0].addr_spec
            for role in ROLES
            for m in inbox(dovecot_server, role, "Sent")
            if m["To"].addresses[0].addr_spec in ours
        )
        assert filed == Counter(ours)
        # The supervisor's report lists every client.
        nonce = transition.plan["nonce"]
        reports = [
            m
            for m in inbox(dovecot_server, SUPERVISOR)
            if f"rk-report-1.{nonce}@" in m["Message-ID"]
        ]
        assert len(reports) == 1
        text = reports[0].get_body(("plain",)).get_content()
        assert "Client 0 e2e" in text and "Client 299 e2e" in text

        # A client still writing to the leaver: the mail reaches the role, one auto-reply.
        client, _ = contacts[1]  # manager1's client (n % 3 != 0)
        for n in range(2):
            dovecot_server.deliver(
                LEAVER,
                f"From: <{client}>\r\nTo: <{LEAVER}>\r\nSubject: order {n}\r\n"
                f"Message-ID: <late-{n}@client>\r\n\r\nHello Ivan\r\n".encode(),
                mail_from=client,
            )
        relay.drain()
        time.sleep(0.5)
        relay.drain()
        at_role = [m for m in inbox(dovecot_server, ROLES[0]) if "late-" in m["Message-ID"]]
        assert len(at_role) == 2
        replies = [m for m in inbox(dovecot_server, client) if "rk-notice-" not in m["Message-ID"]]
        assert len(replies) == 1, [str(m["Subject"]) for m in replies]
        assert ROLES[0] in replies[0].get_body(("plain",)).get_content()

        # Delegation (configured): the successor reads the leaver's named mailbox.
        assert can_read(dovecot_server, SUCCESSOR, staff[SUCCESSOR], LEAVER)
        # The reconciler puts back the named mailbox's filtering if someone switches it off.
        sieve = SieveClient("127.0.0.1", dovecot_server.sieve_port)
        assert sieve.connect(*dovecot_server.master_login(LEAVER), authmech="PLAIN")
        assert sieve.setactive("")
        sieve.logout()
        assert SieveManager(settings.imap).active_scripts(LEAVER)[0] is None
        assert run_cli(settings, "reconcile", "--once") == 0
        assert SieveManager(settings.imap).active_scripts(LEAVER)[0] == "rolekeeper-main"
        # Running again changes nothing and sends nothing.
        before = len(dovecot_server.smtp.messages)
        assert run_cli(settings, "transitions", "run") == 0
        assert len(dovecot_server.smtp.messages) == before
        assert run_cli(settings, "transitions", "show", str(transition.id)) == 0
        assert "done" in capsys.readouterr().out
    finally:
        store.close()


def test_a_rotation_by_plan_file(
    tmp_path: Path, dovecot_server: DovecotServer, relay: LmtpRelay
) -> None:
    """manager1 passes from Ivan to Maria and manager3 from Maria to Ivan: access follows,
    the clients of both roles are told in their language, the supervisor gets the report."""
    settings = handover_settings(tmp_path, dovecot_server)
    store = open_store(settings)
    try:
        contacts, staff = build_org(tmp_path, settings, store, dovecot_server, "rot", 9)
        plan = tmp_path / "rotation.csv"
        plan.write_text(f"role,holder\nmanager1,{SUCCESSOR}\nmanager3,{LEAVER}\n")
        bad = tmp_path / "bad.csv"
        bad.write_text("role,holder\nmanager1,\n")
        assert run_cli(settings, "rotate", "--plan", str(bad)) == 3
        assert run_cli(settings, "rotate", "--plan", str(plan)) == 0
        assert run_cli(settings, "transitions", "run") == 0
        relay.drain()
        with store.sessions() as session:
            transition = session.scalars(select(Transition)).one()
            assert transition.kind == "rotation" and transition.status == "done"
            notices = list(session.scalars(select(Notice)))
            leaver = session.scalars(select(Person).where(Person.named_address == LEAVER)).one()
            assert leaver.active  # a rotation is not a departure
        # Clients of manager1 (n % 3 != 0 in the generated org) got a notice each.
        ours = {a for n, (a, _) in enumerate(contacts) if n % 3}
        assert {n.recipient for n in notices} >= ours
        assert {n.status for n in notices} == {"sent"}
        mail = [m for m in inbox(dovecot_server, contacts[1][0]) if "rk-notice-" in m["Message-ID"]]
        assert len(mail) == 1 and "rotation" in mail[0].get_body(("plain",)).get_content()
        assert can_read(dovecot_server, SUCCESSOR, staff[SUCCESSOR], ROLES[0])
        assert not can_read(dovecot_server, LEAVER, staff[LEAVER], ROLES[0])
        nonce = transition.plan["nonce"]
        reports = [m for m in inbox(dovecot_server, SUPERVISOR) if f".{nonce}@" in m["Message-ID"]]
        assert len(reports) == 1
    finally:
        store.close()


def test_pair_mode_until_a_date(tmp_path: Path, dovecot_server: DovecotServer) -> None:
    """A co-holder reads the role mailbox beside its holder until the pairing ends."""
    settings = handover_settings(tmp_path, dovecot_server)
    store = open_store(settings)
    try:
        _, staff = build_org(tmp_path, settings, store, dovecot_server, "pair", 3)
        assert run_cli(settings, "reconcile", "--once") == 0
        assert not can_read(dovecot_server, SUCCESSOR, staff[SUCCESSOR], ROLES[0])
        until = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        assert run_cli(settings, "pair", "manager1", SUCCESSOR, "--until", until) == 0
        assert can_read(dovecot_server, SUCCESSOR, staff[SUCCESSOR], ROLES[0])
        assert can_read(dovecot_server, LEAVER, staff[LEAVER], ROLES[0])  # the holder stays
        assert run_cli(settings, "pair", "manager1", SUCCESSOR) == 3  # already paired
        assert run_cli(settings, "transitions", "run") == 0  # not due yet
        assert can_read(dovecot_server, SUCCESSOR, staff[SUCCESSOR], ROLES[0])
        time.sleep(2.5)
        assert run_cli(settings, "transitions", "run") == 0
        assert not can_read(dovecot_server, SUCCESSOR, staff[SUCCESSOR], ROLES[0])
        assert can_read(dovecot_server, LEAVER, staff[LEAVER], ROLES[0])
    finally:
        store.close()


def test_a_mobile_only_contact_gets_the_notice_by_sms(
    tmp_path: Path, dovecot_server: DovecotServer, relay: LmtpRelay, twilio_proxy: TwilioProxy
) -> None:
    """Through Twilio's contract (Prism): from the role number via the Messaging Service."""
    token = tmp_path / "twilio-token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    settings = handover_settings(
        tmp_path,
        dovecot_server,
        f'[twilio]\naccount_sid = "{ACCOUNT}"\nauth_token_file = "{token}"\n'
        f'api_base = "{twilio_proxy.url}"\nmessaging_service_sid = "{MESSAGING_SERVICE}"\n'
        f'timeout_seconds = 2\nretry_seconds = 8\npublic_url = "{PUBLIC}"\n'
        f'[twilio.fallback]\ndirectory = "{tmp_path / "fallback"}"\n',
        # Prism answers every fetch with the spec's example, status "sent" (and an
        # error_code, which Twilio sets only for failed or undelivered): no grace here.
        handover="sms_sent_grace_minutes = 0\n",
    )
    store = open_store(settings)
    try:
        build_org(tmp_path, settings, store, dovecot_server, "sms", 3)
        mobile = tmp_path / "mobile.csv"
        mobile.write_text(
            "ID клиента;Компания;Домены;Сегмент;Роль;Контакт;E-mail;Телефон;Мобильный;Язык\n"
            "CRM-SMS;Mobile Only LLC;mobile-only.example;VIP;manager1;Oleg;;+7 916 123-45-67;да;ru\n",
            encoding="utf-8",
        )
        assert run_cli(settings, "import", "clients", str(mobile)) == 0
        assert run_cli(settings, "depart", LEAVER, "--successor", SUCCESSOR) == 0
        assert run_cli(settings, "transitions", "run") == 0
        with store.sessions() as session:
            rows = {n.channel: n for n in session.scalars(select(Notice))}
            assert session.scalars(select(Transition.status)).one() == "done"
        assert rows["sms"].status == "sent" and rows["sms"].recipient == "+79161234567"
        assert rows["sms"].sms_sid == "SM" + "a" * 32  # the spec's example
        (fetch,) = twilio_proxy.calls("GET", rf"/Messages/{rows['sms'].sms_sid}\.json$")
        assert fetch.passed
        (post,) = twilio_proxy.calls("POST", rf"/2010-04-01/Accounts/{ACCOUNT}/Messages\.json$")
        assert post.form["To"] == ["+79161234567"]
        assert post.form["From"] == ["+74951204501"]  # manager1's role number
        assert post.form["MessagingServiceSid"] == [MESSAGING_SERVICE]
        assert "Мария Кузнецова" in post.form["Body"][0]
        twilio_proxy.assert_all_valid()
    finally:
        store.close()


def test_notices_name_a_co_holder_beside_the_successor() -> None:
    from rolekeeper.notices.render import Templates

    context = {
        "contact_name": "Oleg",
        "client_name": "Mobile Only LLC",
        "organisation": "Acme",
        "role_name": "Manager 1",
        "role_address": "manager1@acme.example",
        "role_number": None,
        "successor_name": "Maria Kuznetsova",
        "coholder_names": "Anna Volkova",
        "leaver_name": "Ivan Petrov",
        "effective_date": "2026-12-01",
        "kind": "departure",
    }
    templates = Templates()
    for name in ("transition", "rotation"):
        for language, word in (("en", "together with Anna Volkova"), ("ru", "вместе с Anna")):
            _, body = templates.render(name, language, **context)
            assert word in " ".join(body.split()), (name, language)
            html = templates.render_html(name, language, **context) or ""
            assert word in " ".join(html.split()), (name, language)
