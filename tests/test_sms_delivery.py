"""SMS notices follow their delivery: Twilio's acceptance is not delivery, so each accepted
notice is asked after (GET Messages/{Sid}, through Prism and the recording proxy) until its
status is final, and the supervisor's report waits for that and names what failed."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from rolekeeper.backends.twilio import TwilioApi
from rolekeeper.cli import main
from rolekeeper.config import Settings
from rolekeeper.lab.dovecot import DovecotServer
from rolekeeper.lab.relay import LmtpRelay
from rolekeeper.notices import outbox
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Contact, Notice, Role, Transition, TransitionStep
from rolekeeper.store.open import Store, open_store
from tests.handover_org import LEAVER, SUCCESSOR, SUPERVISOR, build_org, handover_settings
from tests.servers.prism import Recorded, TwilioProxy
from tests.twilio_support import (
    ACCOUNT,
    MESSAGING_SERVICE,
    PUBLIC,
    TOKEN,
    FakeNumbers,
    make_org,
    twilio_settings,
)

MESSAGES = rf"/2010-04-01/Accounts/{ACCOUNT}/Messages\.json$"
ONE_MESSAGE = rf"/2010-04-01/Accounts/{ACCOUNT}/Messages/SM\w+\.json$"

# Mobile-only contacts of manager1's clients, and what Twilio says of each one's SMS.
BLOCKED = "+79161110001"  # undelivered, 30034: the sender is not registered (A2P 10DLC)
DELIVERED = "+79161110002"  # delivered
QUIET = "+79161110003"  # stays "sent": the carrier returns no delivery receipt
STUCK = "+79161110004"  # stays "queued"
OPTED_OUT = "+79161110005"  # the POST itself is refused: 21610, the contact replied STOP
CLIENTS = (
    ("CRM-B", "Blocked LLC", "VIP", BLOCKED),
    ("CRM-D", "Delivered LLC", "Ключевой", DELIVERED),
    ("CRM-Q", "Quiet LLC", "Обычный", QUIET),
    ("CRM-S", "Stuck LLC", "Обычный", STUCK),
    ("CRM-O", "Opted Out LLC", "Мелкий", OPTED_OUT),
)


def run_cli(settings: Settings, *args: str) -> int:
    return main(["--config", str(settings.source_files[0]), *args])


def reports(server: DovecotServer, store: Store) -> list[str]:
    """The supervisor's reports of this store's transition (the lab Dovecot is shared by
    the whole session: other tests' reports are there too)."""
    with store.sessions() as session:
        transition = session.scalars(select(Transition)).one()
    mark = f"rk-report-{transition.id}.{transition.plan['nonce']}@"
    with server.imap(*server.master_login(SUPERVISOR)) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    found = []
    for data in fetched.values():
        message = email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)
        if mark in str(message["Message-ID"]):
            found.append(message.get_body(("plain",)).get_content())
    return found


def notices_by_recipient(store: Store) -> dict[str, Notice]:
    with store.sessions() as session:
        return {
            n.recipient or "": n
            for n in session.scalars(select(Notice).where(Notice.channel == "sms"))
        }


def sms_settings(tmp_path: Path, server: DovecotServer, proxy: TwilioProxy) -> Settings:
    token = tmp_path / "twilio-token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    return handover_settings(
        tmp_path,
        server,
        f'[twilio]\naccount_sid = "{ACCOUNT}"\nauth_token_file = "{token}"\n'
        f'api_base = "{proxy.url}"\nmessaging_service_sid = "{MESSAGING_SERVICE}"\n'
        f'timeout_seconds = 2\nretry_seconds = 8\npublic_url = "{PUBLIC}"\n'
        f'[twilio.fallback]\ndirectory = "{tmp_path / "fallback"}"\n',
        handover="sms_sent_grace_minutes = 10\nsms_delivery_timeout_minutes = 60\n",
    )


def test_sms_notices_are_settled_by_their_delivery_status_and_reported(
    tmp_path: Path,
    dovecot_server: DovecotServer,
    relay: LmtpRelay,
    twilio_proxy: TwilioProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeNumbers()
    fake.install(twilio_proxy)
    fake.delivery = {
        BLOCKED: ("undelivered", 30034),
        DELIVERED: ("delivered", None),
        QUIET: ("sent", None),
        STUCK: ("queued", None),
    }

    def refuse_opted_out(rec: Recorded) -> tuple[int, Any]:
        if rec.one("To") == OPTED_OUT:
            return 400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient"}
        return fake._send(rec)

    twilio_proxy.answer("POST", MESSAGES, refuse_opted_out)
    settings = sms_settings(tmp_path, dovecot_server, twilio_proxy)
    store = open_store(settings)
    try:
        build_org(tmp_path, settings, store, dovecot_server, "dlr", 3)
        mobile = tmp_path / "mobile.csv"
        mobile.write_text(
            "ID клиента;Компания;Домены;Сегмент;Роль;Контакт;E-mail;Телефон;Мобильный;Язык\n"
            + "".join(
                f"{crm};{name};;{segment};manager1;Contact {crm};;{phone};да;en\n"
                for crm, name, segment, phone in CLIENTS
            ),
            encoding="utf-8",
        )
        assert run_cli(settings, "import", "clients", str(mobile)) == 0
        assert run_cli(settings, "depart", LEAVER, "--successor", SUCCESSOR) == 0

        # First pass: every SMS goes once; the final statuses settle at once, "sent" and
        # "queued" wait; so does the report.
        assert run_cli(settings, "transitions", "run") == 0
        relay.drain()
        rows = notices_by_recipient(store)
        assert {phone: rows[phone].status for _, _, _, phone in CLIENTS} == {
            BLOCKED: "failed",
            DELIVERED: "sent",
            QUIET: "accepted",
            STUCK: "accepted",
            OPTED_OUT: "failed",
        }
        assert rows[BLOCKED].last_error == (
            "Twilio error 30034: the sender is not registered for US A2P 10DLC "
            "(see README: A2P registration)"
        )
        assert rows[OPTED_OUT].last_error == (
            "Twilio error 21610: the recipient opted out of messages from this number "
            "(replied STOP)"
        )
        assert rows[QUIET].sms_sid is not None and rows[QUIET].accepted_at is not None
        with store.sessions() as session:
            transition = session.scalars(select(Transition)).one()
            step = session.scalars(
                select(TransitionStep).where(TransitionStep.name == "send_notices")
            ).one()
        assert transition.status == "running"
        assert (step.status, step.attempts) == ("pending", 0)
        assert "2 SMS notice(s) await a final delivery status" in (step.last_error or "")
        assert reports(dovecot_server, store) == []

        capsys.readouterr()
        assert run_cli(settings, "transitions", "show", str(transition.id)) == 0
        shown = capsys.readouterr().out
        assert (
            f"(sms) to {BLOCKED}: failed — Twilio error 30034: the sender is not registered "
            "for US A2P 10DLC"
        ) in shown
        assert f"(sms) to {OPTED_OUT}: failed — Twilio error 21610" in shown
        assert f"(sms) to {QUIET}: awaiting delivery status" in shown

        # A second pass soon after: only the two still open are asked after again.
        assert run_cli(settings, "transitions", "run") == 0
        fetched = [r.path.rsplit("/", 1)[1] for r in twilio_proxy.calls("GET", ONE_MESSAGE)]
        assert sorted(fetched.count(f"{rows[p].sms_sid}.json") for p in (BLOCKED, DELIVERED)) == [
            1,
            1,
        ]
        assert fetched.count(f"{rows[QUIET].sms_sid}.json") == 2
        assert reports(dovecot_server, store) == []

        # An hour later: "sent" counts as delivered (grace 10 min), "queued" is unknown
        # (timeout 60 min); the handover finishes and the report goes out.
        earlier = datetime.now(UTC) - timedelta(minutes=61)
        with transaction(store.sessions) as session:
            session.execute(
                update(Notice).where(Notice.status == "accepted").values(accepted_at=earlier)
            )
        assert run_cli(settings, "transitions", "run") == 0
        relay.drain()
        rows = notices_by_recipient(store)
        assert (rows[QUIET].status, rows[STUCK].status) == ("sent", "unknown")
        assert rows[STUCK].last_error == (
            "no final delivery status after 60 minutes (Twilio's last status: queued)"
        )
        with store.sessions() as session:
            assert session.get_one(Transition, transition.id).status == "done"
        (text,) = reports(dovecot_server, store)
        assert "Notices that did not reach the client: please contact them another way." in text
        assert (
            f"[vip] Blocked LLC (CRM-B), Contact CRM-B: SMS to {BLOCKED} not delivered: "
            "Twilio error 30034: the sender is not registered for US A2P 10DLC"
        ) in text
        assert f"[minor] Opted Out LLC (CRM-O), Contact CRM-O: SMS to {OPTED_OUT} not " in text
        assert (
            f"[regular] Stuck LLC (CRM-S), Contact CRM-S: SMS to {STUCK} status unknown: "
            "no final delivery status after 60 minutes"
        ) in text
        not_reached = text.split("Notices that did not reach the client")[1]
        assert "Delivered LLC" not in not_reached and "Quiet LLC" not in not_reached
        assert "[vip] Blocked LLC (CRM-B), manager1: 0/1 sent; 1 failed" in text

        # Nothing was sent twice, and running again asks Twilio nothing more.
        posts = twilio_proxy.calls("POST", MESSAGES)
        assert sorted(p.one("To") for p in posts) == sorted(phone for *_, phone in CLIENTS)
        asked = len(twilio_proxy.calls("GET", ONE_MESSAGE))
        assert run_cli(settings, "transitions", "run") == 0
        assert len(twilio_proxy.calls("POST", MESSAGES)) == len(CLIENTS)
        assert len(twilio_proxy.calls("GET", ONE_MESSAGE)) == asked
        assert len(reports(dovecot_server, store)) == 1
        twilio_proxy.assert_all_valid()
    finally:
        store.close()


def test_a_crash_after_twilio_accepted_sends_nothing_twice(
    tmp_path: Path, dovecot_server: DovecotServer, relay: LmtpRelay, twilio_proxy: TwilioProxy
) -> None:
    """SIGKILL between Twilio's answer and the commit of "accepted": the notice is left
    "sending"; the next pass finds the message on Twilio and follows it, sends no other."""
    fake = FakeNumbers()
    fake.install(twilio_proxy)
    fake.delivery = {DELIVERED: ("delivered", None)}
    settings = sms_settings(tmp_path, dovecot_server, twilio_proxy)
    store = open_store(settings)
    try:
        build_org(tmp_path, settings, store, dovecot_server, "crash", 1)
        mobile = tmp_path / "mobile.csv"
        mobile.write_text(
            "ID клиента;Компания;Домены;Сегмент;Роль;Контакт;E-mail;Телефон;Мобильный;Язык\n"
            f"CRM-D;Delivered LLC;;VIP;manager1;Oleg;;{DELIVERED};да;en\n",
            encoding="utf-8",
        )
        assert run_cli(settings, "import", "clients", str(mobile)) == 0
        assert run_cli(settings, "depart", LEAVER, "--successor", SUCCESSOR) == 0
        config = str(settings.source_files[0])
        crashed = subprocess.run(
            [sys.executable, "-m", "rolekeeper", "--config", config, "transitions", "run"],
            env={
                **os.environ,
                "ROLEKEEPER_TEST_HOOKS": "1",
                "ROLEKEEPER_CRASH_AT": "sms.accepted.uncommitted",
            },
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        assert notices_by_recipient(store)[DELIVERED].status == "sending"
        relay.drain()
        assert run_cli(settings, "transitions", "run") == 0
        relay.drain()
        notice = notices_by_recipient(store)[DELIVERED]
        assert (notice.status, notice.sms_sid) == ("sent", fake.messages[0]["sid"])
        assert len(twilio_proxy.calls("POST", MESSAGES)) == 1
        (listed,) = twilio_proxy.calls("GET", MESSAGES)  # looked for before sending again
        assert listed.one("To") == DELIVERED
        assert len(reports(dovecot_server, store)) == 1
    finally:
        store.close()


# --- settle_sms on its own --------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path, twilio_proxy: TwilioProxy) -> Iterator[tuple[Settings, Store]]:
    settings = twilio_settings(tmp_path, api_base=twilio_proxy.url, retry_seconds=0.2)
    store = open_store(settings)
    make_org(store)
    yield settings, store
    store.close()


def accepted_notice(store: Store, sid: str, at: datetime) -> int:
    """A transition with one SMS notice that Twilio accepted at `at`."""
    with transaction(store.sessions) as session:
        role = session.scalars(select(Role).where(Role.key == "sales2")).one()
        contact = session.scalars(select(Contact)).first()
        assert contact is not None
        transition = Transition(
            kind="rotation", effective_at=at, status="running", plan={}, created_by="test"
        )
        session.add(transition)
        session.flush()
        session.add(
            Notice(
                transition_id=transition.id,
                contact_id=contact.id,
                channel="sms",
                message_id=f"<rk-notice-{transition.id}@acme.example>",
                status="accepted",
                role_id=role.id,
                recipient=contact.phone,
                sms_sid=sid,
                accepted_at=at,
            )
        )
        return transition.id


def test_twilio_unreachable_waits_then_times_out_as_unknown(
    small: tuple[Settings, Store], twilio_proxy: TwilioProxy
) -> None:
    settings, store = small
    assert settings.twilio is not None
    api = TwilioApi(settings.twilio)
    at = datetime.now(UTC)
    tid = accepted_notice(store, "SM" + "7" * 32, at)
    twilio_proxy.inject("GET", ONE_MESSAGE, "500", 1000)
    first = outbox.settle_sms(store.sessions, settings, api, tid, at + timedelta(minutes=5))
    assert (first.waiting, first.unknown) == (1, 0)
    later = outbox.settle_sms(store.sessions, settings, api, tid, at + timedelta(minutes=60))
    assert (later.waiting, later.unknown) == (0, 1)
    with store.sessions() as session:
        notice = session.scalars(select(Notice)).one()
    assert notice.status == "unknown"
    assert notice.last_error == (
        "no final delivery status after 60 minutes (no answer from Twilio)"
    )
    assert not twilio_proxy.calls("POST", MESSAGES)


def test_sent_within_the_grace_waits_and_after_it_counts(
    small: tuple[Settings, Store], twilio_proxy: TwilioProxy
) -> None:
    """Prism's own example for GET Messages/{Sid}: status "sent" (with an error_code,
    which Twilio sets only for failed or undelivered messages, so it is not read)."""
    settings, store = small
    assert settings.twilio is not None
    api = TwilioApi(settings.twilio)
    at = datetime.now(UTC)
    tid = accepted_notice(store, "SM" + "8" * 32, at)
    soon = outbox.settle_sms(store.sessions, settings, api, tid, at + timedelta(minutes=9))
    assert (soon.waiting, soon.sent) == (1, 0)
    later = outbox.settle_sms(store.sessions, settings, api, tid, at + timedelta(minutes=10))
    assert (later.waiting, later.sent, later.failed) == (0, 1, 0)
    with store.sessions() as session:
        notice = session.scalars(select(Notice)).one()
    assert (notice.status, notice.last_error) == ("sent", None)
    (fetch, _) = twilio_proxy.calls("GET", ONE_MESSAGE)
    assert fetch.prism_body["status"] == "sent" and fetch.prism_body["error_code"] == 30007
    twilio_proxy.assert_all_valid()


def test_grace_longer_than_the_timeout_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "rolekeeper.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "rk.db"}"\n'
        "[handover]\nsms_sent_grace_minutes = 30\nsms_delivery_timeout_minutes = 20\n",
        encoding="utf-8",
    )
    assert main(["--config", str(config), "check"]) == 2


@pytest.mark.parametrize(
    ("language", "line"),
    [
        ("en", "  [vip] A (C-1), Oleg: SMS to +79161110001 not delivered: Twilio error 30034: x"),
        ("ru", "  [vip] A (C-1), Oleg: SMS на +79161110001 не доставлено: Twilio error 30034: x"),
    ],
)
def test_the_report_names_each_notice_that_did_not_arrive(language: str, line: str) -> None:
    from rolekeeper.notices.render import Templates

    context: dict[str, Any] = {
        "transition_id": 1,
        "leaver_name": "Ivan Petrov",
        "effective_date": "2026-12-01",
        "roles": [],
        "at_risk": [],
        "at_risk_days": 90,
        "clients": [],
        "not_reached": [
            {
                "segment": "vip",
                "name": "A",
                "crm_id": "C-1",
                "contact": "Oleg",
                "channel": "SMS",
                "recipient": "+79161110001",
                "status": "failed",
                "error": "Twilio error 30034: x",
            }
        ],
    }
    _, body = Templates().render("handover_report", language, **context)
    assert f"\n\n{line}\n\n" in body
    _, quiet = Templates().render("handover_report", language, **{**context, "not_reached": []})
    assert "30034" not in quiet and "Oleg" not in quiet
