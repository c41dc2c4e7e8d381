"""`rolekeeper webhooks` through the real HTTP server (uvicorn on loopback): signatures,
routing from the store, and TwiML checked against the verbs and attributes Twilio accepts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest
import requests
import uvicorn
from sqlalchemy import select, update
from twilio.request_validator import RequestValidator

from rolekeeper.config import Settings
from rolekeeper.duework import JobContext
from rolekeeper.lab.ports import free_port
from rolekeeper.lab.smtp import SmtpSink
from rolekeeper.store.db import transaction
from rolekeeper.store.models import DueJob, Person, Role, RoleHolder
from rolekeeper.store.open import Store, open_store
from rolekeeper.telephony.mailcopy import MAIL_JOB, send_role_mail
from rolekeeper.telephony.webhooks import WebhookApp
from tests.twilio_support import (
    ACCESS,
    ALICE_PHONE,
    BOB_PHONE,
    CLIENT_PHONE,
    PIN,
    PUBLIC,
    SALES2_NUMBER,
    TEAM,
    TOKEN,
    change_holder,
    make_org,
    set_number,
    twilio_settings,
)

SALES1 = "+15550101"

# TwiML as Twilio documents it: each verb or noun, the attributes it takes, where it may be.
VOICE = {
    "Response": (set(), {None}),
    "Dial": (
        {
            "action",
            "method",
            "timeout",
            "callerId",
            "hangupOnStar",
            "timeLimit",
            "record",
            "answerOnBridge",
            "ringTone",
            "recordingStatusCallback",
            "trim",
            "sequential",
        },
        {"Response"},
    ),
    "Number": (
        {
            "url",
            "method",
            "sendDigits",
            "statusCallback",
            "statusCallbackEvent",
            "statusCallbackMethod",
            "byoc",
        },
        {"Dial"},
    ),
    "Gather": (
        {
            "input",
            "action",
            "method",
            "timeout",
            "finishOnKey",
            "numDigits",
            "language",
            "speechTimeout",
            "hints",
            "actionOnEmptyResult",
            "partialResultCallback",
        },
        {"Response"},
    ),
    "Say": ({"voice", "language", "loop"}, {"Response", "Gather"}),
    "Record": (
        {
            "action",
            "method",
            "timeout",
            "finishOnKey",
            "maxLength",
            "playBeep",
            "trim",
            "transcribe",
            "transcribeCallback",
            "recordingStatusCallback",
            "recordingStatusCallbackMethod",
            "recordingStatusCallbackEvent",
        },
        {"Response"},
    ),
    "Hangup": (set(), {"Response"}),
}
MESSAGING = {
    "Response": (set(), {None}),
    "Message": ({"to", "from", "action", "method", "statusCallback"}, {"Response"}),
    "Body": (set(), {"Message"}),
    "Media": (set(), {"Message"}),
}


def check_twiml(
    text: str, grammar: dict[str, tuple[set[str], set[str | None]]]
) -> ElementTree.Element:
    root = ElementTree.fromstring(text)
    assert root.tag == "Response"

    def walk(element: ElementTree.Element, parent: str | None) -> None:
        assert element.tag in grammar, f"<{element.tag}> is not TwiML here"
        attributes, parents = grammar[element.tag]
        assert parent in parents, f"<{element.tag}> may not be inside <{parent}>"
        assert set(element.attrib) <= attributes, (element.tag, set(element.attrib) - attributes)
        for child in element:
            walk(child, element.tag)

    walk(root, None)
    return root


class Hooks:
    def __init__(self, base: str) -> None:
        self.base = base
        self.validator = RequestValidator(TOKEN)

    def post(
        self,
        path: str,
        params: dict[str, str],
        *,
        signature: str | None = None,
        signed_url: str | None = None,
        **query: str,
    ) -> requests.Response:
        tail = path + (f"?{urlencode(query)}" if query else "")
        if signature is None:
            signature = self.validator.compute_signature(signed_url or PUBLIC + tail, params)
        return requests.post(
            self.base + tail, data=params, headers={"X-Twilio-Signature": signature}, timeout=5
        )

    def twiml(
        self, path: str, params: dict[str, str], messaging: bool = False, **query: str
    ) -> ElementTree.Element:
        response = self.post(path, params, **query)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/xml")
        return check_twiml(response.text, MESSAGING if messaging else VOICE)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return twilio_settings(tmp_path)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings)
    make_org(store)
    set_number(store, "sales1", SALES1)
    yield store
    store.close()


@pytest.fixture
def hooks(settings: Settings, store: Store) -> Iterator[Hooks]:
    port = free_port()
    config = uvicorn.Config(
        WebhookApp(settings, store.sessions),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http="httptools",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield Hooks(f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(5)


CALL = {
    "CallSid": "CA" + "1" * 32,
    "AccountSid": "AC" + "0123456789abcdef" * 2,
    "From": CLIENT_PHONE,
    "To": SALES1,
    "CallStatus": "ringing",
    "Direction": "inbound",
}


# --- signatures ---------------------------------------------------------------------------


def test_unsigned_or_wrongly_signed_requests_are_refused(hooks: Hooks) -> None:
    assert hooks.post("/voice", CALL, signature="").status_code == 403
    assert hooks.post("/voice", CALL, signature="bm90IGEgc2lnbmF0dXJl").status_code == 403
    forged = RequestValidator("another-token").compute_signature(PUBLIC + "/voice", CALL)
    assert hooks.post("/voice", CALL, signature=forged).status_code == 403
    # Signed for the address this server listens on, not the public URL Twilio calls.
    assert hooks.post("/voice", CALL, signed_url=hooks.base + "/voice").status_code == 403
    # A parameter changed after signing.
    good = hooks.validator.compute_signature(PUBLIC + "/voice", CALL)
    tampered = requests.post(
        hooks.base + "/voice",
        data={**CALL, "From": "+15550000000"},
        headers={"X-Twilio-Signature": good},
        timeout=5,
    )
    assert tampered.status_code == 403
    assert hooks.post("/voice", CALL).status_code == 200


def test_health_route_and_unknown_paths(hooks: Hooks) -> None:
    assert requests.get(hooks.base + "/healthz", timeout=5).text == "ok\n"
    assert hooks.post("/nowhere", CALL).status_code == 404
    assert requests.get(hooks.base + "/voice", timeout=5).status_code == 405


# --- calls --------------------------------------------------------------------------------


def test_a_call_rings_the_holder_screened_showing_the_role_number(hooks: Hooks) -> None:
    root = hooks.twiml("/voice", CALL)
    (dial,) = root.iter("Dial")
    assert dial.get("callerId") == SALES1
    assert dial.get("action") == f"{PUBLIC}/voice/dialed?role=sales1"
    (number,) = dial.iter("Number")
    assert number.text == ALICE_PHONE
    assert number.get("url") == f"{PUBLIC}/voice/screen?" + urlencode(
        {"role": "sales1", "caller": CLIENT_PHONE}
    )


def test_the_next_call_after_a_holder_change_rings_the_new_holder(
    hooks: Hooks, store: Store
) -> None:
    change_holder(store, "sales1", "bob@acme.example")
    (number,) = hooks.twiml("/voice", CALL).iter("Number")
    assert number.text == BOB_PHONE


def test_a_co_holder_rings_beside_the_holder(hooks: Hooks, store: Store) -> None:
    """Pair mode: both work phones ring at once, both screened; ending it rings one again."""
    with transaction(store.sessions) as session:
        role_id = session.scalars(select(Role.id).where(Role.key == "sales1")).one()
        bob_id = session.scalars(
            select(Person.id).where(Person.named_address == "bob@acme.example")
        ).one()
        session.add(RoleHolder(role_id=role_id, person_id=bob_id, kind="coholder"))
    numbers = list(hooks.twiml("/voice", CALL).iter("Number"))
    assert [n.text for n in numbers] == [ALICE_PHONE, BOB_PHONE]
    assert all(n.get("url", "").startswith(f"{PUBLIC}/voice/screen?") for n in numbers)
    with transaction(store.sessions) as session:
        session.execute(
            update(RoleHolder)
            .where(RoleHolder.kind == "coholder")
            .values(ended_at=datetime.now(UTC))
        )
    assert [n.text for n in hooks.twiml("/voice", CALL).iter("Number")] == [ALICE_PHONE]


def test_the_whisper_names_the_client_and_asks_for_1(hooks: Hooks) -> None:
    leg = {**CALL, "From": SALES1, "To": ALICE_PHONE, "CallSid": "CA" + "2" * 32}
    root = hooks.twiml("/voice/screen", leg, role="sales1", caller=CLIENT_PHONE)
    (gather,) = root.iter("Gather")
    assert gather.get("numDigits") == "1"
    assert gather.get("action") == f"{PUBLIC}/voice/screened?role=sales1"
    (say,) = gather.iter("Say")
    assert "John Doe, Acme Steel" in (say.text or "") and "Press 1" in (say.text or "")
    assert [e.tag for e in root] == ["Gather", "Hangup"]

    assert list(hooks.twiml("/voice/screened", {**leg, "Digits": "1"}, role="sales1")) == []
    assert [
        e.tag for e in hooks.twiml("/voice/screened", {**leg, "Digits": "2"}, role="sales1")
    ] == ["Hangup"]


def test_a_call_not_taken_ends_in_the_role_voicemail(hooks: Hooks) -> None:
    for status in ("no-answer", "busy", "failed"):
        root = hooks.twiml("/voice/dialed", {**CALL, "DialCallStatus": status}, role="sales1")
        (record,) = root.iter("Record")
        assert record.get("recordingStatusCallback") == f"{PUBLIC}/voice/recording?role=sales1"
        assert "Sales desk 1" in (root.find("Say").text or "")  # type: ignore[union-attr]
    # Screened away: the holder's leg hung up without pressing 1.
    refused = {**CALL, "DialCallStatus": "completed", "DialBridged": "false"}
    assert list(hooks.twiml("/voice/dialed", refused, role="sales1").iter("Record"))
    taken = {**CALL, "DialCallStatus": "completed", "DialBridged": "true"}
    assert [e.tag for e in hooks.twiml("/voice/dialed", taken, role="sales1")] == ["Hangup"]


def test_a_role_without_holder_rings_the_team_line(hooks: Hooks, store: Store) -> None:
    from sqlalchemy import update

    from rolekeeper.clock import utcnow
    from rolekeeper.store.db import transaction
    from rolekeeper.store.models import RoleHolder

    with transaction(store.sessions) as s:
        s.execute(update(RoleHolder).where(RoleHolder.person_id == 2).values(ended_at=utcnow()))
    root = hooks.twiml("/voice", {**CALL, "To": SALES2_NUMBER})
    (number,) = root.iter("Number")
    assert number.text == TEAM and number.get("url") is None


def test_an_unknown_number_is_not_in_service(hooks: Hooks) -> None:
    root = hooks.twiml("/voice", {**CALL, "To": "+15559999999"})
    assert [e.tag for e in root] == ["Say", "Hangup"]


def test_voicemail_is_mailed_once_to_the_role_mailbox(
    hooks: Hooks, store: Store, settings: Settings, tmp_path: Path
) -> None:
    callback = {
        **CALL,
        "RecordingSid": "RE" + "3" * 32,
        "RecordingStatus": "completed",
        "RecordingUrl": "https://api.twilio.com/recordings/RE333",
        "RecordingDuration": "14",
    }
    for _ in range(2):  # Twilio may repeat a callback
        assert list(hooks.twiml("/voice/recording", callback, role="sales1")) == []
    with store.sessions() as session:
        (job,) = session.scalars(select(DueJob).where(DueJob.kind == MAIL_JOB))
        ctx = JobContext(
            job.id,
            job.kind,
            job.key,
            job.payload,
            job.due_at,
            job.due_at,
            _with_smtp(settings, sink := SmtpSink().start()),
            store.sessions,
        )
    try:
        send_role_mail(ctx)
        (mail,) = sink.wait_for(1)
    finally:
        sink.stop()
    assert mail.rcpt_tos == ("sales1@acme.example",)
    text = mail.content.decode()
    assert "Voicemail for sales1 from Acme Steel" in text
    assert "https://api.twilio.com/recordings/RE333" in text and "John Doe" in text


def _with_smtp(settings: Settings, sink: SmtpSink) -> Settings:
    from rolekeeper.config import SmtpSettings

    smtp = SmtpSettings(host=sink.host, port=sink.port, security="plain")
    return settings.model_copy(update={"smtp": smtp})


# --- SMS ----------------------------------------------------------------------------------


def test_an_sms_is_forwarded_to_the_holder_and_copied_to_the_role_mailbox(
    hooks: Hooks, store: Store
) -> None:
    sms = {
        "MessageSid": "SM" + "4" * 32,
        "From": CLIENT_PHONE,
        "To": SALES1,
        "Body": "Please call me back",
        "NumMedia": "0",
    }
    root = hooks.twiml("/sms", sms, messaging=True)
    (message,) = root.iter("Message")
    assert message.get("to") == ALICE_PHONE and message.get("from") == SALES1
    assert message.text == "John Doe (Acme Steel): Please call me back"
    with store.sessions() as session:
        (job,) = session.scalars(select(DueJob).where(DueJob.kind == MAIL_JOB))
    assert job.key == f"sms:{sms['MessageSid']}" and job.payload["role"] == "sales1"
    assert "Please call me back" in job.payload["body"]


# --- the access number --------------------------------------------------------------------


def _access_call(hooks: Hooks, pin: str, caller: str = ALICE_PHONE) -> ElementTree.Element:
    call = {**CALL, "From": caller, "To": ACCESS, "CallSid": "CA" + "5" * 32}
    (gather,) = hooks.twiml("/voice", call).iter("Gather")
    assert gather.get("action") == f"{PUBLIC}/voice/access/pin"
    return hooks.twiml("/voice/access/pin", {**call, "Digits": pin})


def test_the_access_number_dials_the_holders_clients_from_the_role_number(hooks: Hooks) -> None:
    (gather,) = _access_call(hooks, PIN).iter("Gather")
    action = gather.get("action") or ""
    assert action.startswith(f"{PUBLIC}/voice/access/dial?ok=")
    token = action.rpartition("ok=")[2]
    call = {**CALL, "From": ALICE_PHONE, "To": ACCESS, "CallSid": "CA" + "5" * 32}
    # Typed as a national number, ended with #.
    root = hooks.twiml("/voice/access/dial", {**call, "Digits": "5557654321"}, ok=token)
    (dial,) = root.iter("Dial")
    assert dial.get("callerId") == SALES1
    assert [n.text for n in dial.iter("Number")] == [CLIENT_PHONE]
    # Not a client of alice's roles (Other Co is sales2's), not a client at all: refused.
    for digits in ("5557650000", "19005550000"):
        refused = hooks.twiml("/voice/access/dial", {**call, "Digits": digits}, ok=token)
        assert not list(refused.iter("Dial"))
    # Without the token the PIN step hands out, nothing is dialled.
    forged = hooks.twiml("/voice/access/dial", {**call, "Digits": "5557654321"}, ok="0" * 32)
    assert not list(forged.iter("Dial"))


def test_a_wrong_pin_or_a_stranger_gets_nothing(hooks: Hooks) -> None:
    assert not list(_access_call(hooks, "0000").iter("Gather"))
    assert not list(_access_call(hooks, PIN, caller="+15550000000").iter("Gather"))
