"""`rolekeeper webhooks` through the real HTTP server (uvicorn on loopback): signatures,
routing from the store, and TwiML checked against the verbs and attributes Twilio accepts."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
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
from rolekeeper.store.models import AccessFailure, DueJob, Person, Role, RoleHolder
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
    "Reject": ({"reason"}, {"Response"}),
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
    with serving(settings, store) as served:
        yield served


@contextlib.contextmanager
def serving(settings: Settings, store: Store) -> Iterator[Hooks]:
    """One `rolekeeper webhooks` instance (uvicorn on loopback) on the given store."""
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


def _asks_pin_again(root: ElementTree.Element) -> bool:
    return [g.get("action") for g in root.iter("Gather")] == [f"{PUBLIC}/voice/access/pin"]


def test_a_wrong_pin_or_a_stranger_gets_nothing(hooks: Hooks) -> None:
    """Refused, the caller is asked for the PIN again, never for a number to dial; the
    refusal does not say whether the PIN or the caller was wrong."""
    assert _asks_pin_again(_access_call(hooks, "0000"))
    stranger = _access_call(hooks, PIN, caller="+15550000000")
    assert _asks_pin_again(stranger)
    (say,) = stranger.iter("Say")
    assert "not accepted" in (say.text or "")


# --- the access number's PIN lockout -------------------------------------------------------


def _with_hooks(settings: Settings, **webhooks: object) -> Settings:
    assert settings.twilio is not None
    changed = settings.twilio.webhooks.model_copy(update=webhooks)
    twilio = settings.twilio.model_copy(update={"webhooks": changed})
    return settings.model_copy(update={"twilio": twilio})


def _call(n: int, caller: str = ALICE_PHONE) -> dict[str, str]:
    return {**CALL, "From": caller, "To": ACCESS, "CallSid": f"CA{n:032x}"}


def _pin(hooks: Hooks, call: dict[str, str], pin: str) -> ElementTree.Element:
    return hooks.twiml("/voice/access/pin", {**call, "Digits": pin})


def _hangs_up(root: ElementTree.Element) -> bool:
    return not list(root.iter("Gather")) and [e.tag for e in root][-1] == "Hangup"


Logged = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def logged() -> Iterator[Logged]:
    """What rolekeeper has logged so far in the test, as JSON objects."""
    import io
    import json
    import logging

    import structlog

    from rolekeeper.config import LoggingSettings
    from rolekeeper.log import configure_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="info", format="json"), stream)
    yield lambda: [
        json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")
    ]
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _mentions(lines: list[dict[str, Any]], *texts: str) -> bool:
    """Any of `texts` in a logged field (the timestamp aside: its digits are arbitrary)."""
    values = [str(v) for line in lines for k, v in line.items() if k != "timestamp"]
    return any(text in value for value in values for text in texts)


def test_a_call_is_hung_up_after_a_few_wrong_pins(
    settings: Settings, store: Store, logged: Logged
) -> None:
    settings = _with_hooks(settings, pin_attempts=10, pin_attempts_per_call=3)
    with serving(settings, store) as hooks:
        call = _call(1)
        assert _asks_pin_again(_pin(hooks, call, "1111"))
        assert _asks_pin_again(_pin(hooks, call, "2222"))
        assert _hangs_up(_pin(hooks, call, "3333"))
        # Not locked out (10 allowed): the next call is asked for the PIN, and the right one
        # goes through and clears the refusals.
        (gather,) = hooks.twiml("/voice", _call(2)).iter("Gather")
        assert gather.get("action") == f"{PUBLIC}/voice/access/pin"
        (gather,) = _pin(hooks, _call(2), PIN).iter("Gather")
        assert (gather.get("action") or "").startswith(f"{PUBLIC}/voice/access/dial?ok=")
    with store.sessions() as session:
        assert session.scalars(select(AccessFailure)).all() == []
    log_lines = logged()
    refused = [line for line in log_lines if line["event"] == "access number refused"]
    assert [line["in_call"] for line in refused] == [1, 2, 3]
    assert all(line["level"] == "warning" for line in refused)
    assert not _mentions(log_lines, "1111", "2222", "3333", PIN)


def test_wrong_pins_from_one_number_lock_it_out_across_calls_and_instances(
    settings: Settings, store: Store, logged: Logged
) -> None:
    """Two webhook instances on one store: the refusals add up, the lockout holds on both,
    other callers are not affected, and the right PIN does not get through a lockout."""
    with serving(settings, store) as one, serving(settings, store) as two:
        assert _asks_pin_again(_pin(one, _call(1), "1111"))
        assert _asks_pin_again(_pin(two, _call(2), "2222"))
        assert _hangs_up(_pin(one, _call(3), "3333"))  # the third: locked out
        for hooks in (one, two):
            rejected = hooks.twiml("/voice", _call(4))
            assert [e.tag for e in rejected] == ["Reject"]  # first verb: never answered
            assert _hangs_up(_pin(hooks, _call(4), PIN))
        # Bob, calling from his own work phone, is not affected.
        (gather,) = two.twiml("/voice", _call(5, caller=BOB_PHONE)).iter("Gather")
        assert gather.get("action") == f"{PUBLIC}/voice/access/pin"
    with store.sessions() as session:
        rows = session.scalars(select(AccessFailure).order_by(AccessFailure.id)).all()
    assert [r.caller for r in rows] == [ALICE_PHONE] * 3
    assert [r.locked_until is not None for r in rows] == [False, False, True]
    log_lines = logged()
    locked = [line for line in log_lines if "locked out" in str(line["event"])]
    assert locked[0]["caller"] == ALICE_PHONE and locked[0]["level"] == "warning"
    assert locked[0]["refusals"] == 3
    assert not _mentions(log_lines, "1111", "2222", "3333", PIN)


def test_a_lockout_ends_and_old_rows_are_pruned(settings: Settings, store: Store) -> None:
    from rolekeeper.clock import utcnow

    settings = _with_hooks(
        settings, pin_attempts=2, pin_window_minutes=15, pin_lockout_minutes=0.02
    )
    long_ago = utcnow() - timedelta(days=1)
    with transaction(store.sessions) as session:
        session.add_all(
            [
                AccessFailure(caller="+15550000001", call_sid="CA-old", at=long_ago),
                AccessFailure(
                    caller="+15550000002",
                    call_sid="CA-old-lock",
                    at=long_ago,
                    locked_until=long_ago + timedelta(hours=1),
                ),
            ]
        )
    with serving(settings, store) as hooks:
        assert _asks_pin_again(_pin(hooks, _call(1), "1111"))
        assert _hangs_up(_pin(hooks, _call(1), "2222"))  # locked out for 1.2 s
        assert [e.tag for e in hooks.twiml("/voice", _call(2))] == ["Reject"]
        time.sleep(1.5)
        (gather,) = hooks.twiml("/voice", _call(3)).iter("Gather")
        assert gather.get("action") == f"{PUBLIC}/voice/access/pin"
        # The refusals before the lockout are still within the window but count no more.
        assert _asks_pin_again(_pin(hooks, _call(3), "3333"))
    with store.sessions() as session:
        callers = session.scalars(select(AccessFailure.caller)).all()
    assert sorted(callers) == [ALICE_PHONE] * 3  # the day-old rows are gone
