"""Provisioning, the reconciler and SMS notices against Prism (Twilio's own spec), through a
proxy that records every request and injects 429, 5xx and timeouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sqlalchemy import select

from rolekeeper.backends.twilio import TwilioApi, TwilioUnavailable
from rolekeeper.config import Settings
from rolekeeper.store.models import AuditEntry, Role, TwilioNumber
from rolekeeper.store.open import Store, open_store
from rolekeeper.telephony import numbers
from rolekeeper.telephony.sms import notice_sms_delivery, send_notice_sms
from tests.servers.prism import TwilioProxy
from tests.twilio_support import (
    ACCOUNT,
    ALICE_PHONE,
    BOB_PHONE,
    CLIENT_PHONE,
    FALLBACK_URL,
    MESSAGING_SERVICE,
    PUBLIC,
    SALES2_NUMBER,
    FakeNumbers,
    change_holder,
    make_org,
    twilio_settings,
)

NUMBERS = rf"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers"
MESSAGES = rf"/2010-04-01/Accounts/{ACCOUNT}/Messages\.json$"
SINCE = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path, twilio_proxy: TwilioProxy) -> Settings:
    return twilio_settings(tmp_path, api_base=twilio_proxy.url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings)
    make_org(store)
    yield store
    store.close()


@pytest.fixture
def fake(twilio_proxy: TwilioProxy) -> FakeNumbers:
    fake = FakeNumbers()
    fake.add("PN" + "2" * 32, SALES2_NUMBER, friendly_name="old name", voice_url="https://old/")
    fake.install(twilio_proxy)
    return fake


@pytest.fixture
def api(settings: Settings) -> TwilioApi:
    assert settings.twilio is not None
    return TwilioApi(settings.twilio)


def test_dry_run_plans_and_changes_nothing(
    api: TwilioApi, settings: Settings, store: Store, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    with store.sessions() as session:
        plan = {i.role: i for i in numbers.plan(api, settings, session)}
    assert plan["sales1"].action == "buy" and plan["sales1"].number == "+18089251571"
    assert plan["sales2"].action == "adopt" and plan["sales2"].sid == "PN" + "2" * 32
    assert plan["sales3"].action == "skip" and "not on this Twilio account" in plan["sales3"].detail
    assert not [r for r in twilio_proxy.records if r.method == "POST"]
    search = twilio_proxy.calls("GET", r"/AvailablePhoneNumbers/US/Local\.json$")
    assert search[0].query["AreaCode"] == ["808"]
    assert search[0].query["VoiceEnabled"] == ["true"] and search[0].query["SmsEnabled"] == ["true"]
    twilio_proxy.assert_all_valid()


def test_provision_buys_adopts_and_points_numbers_at_the_webhooks(
    api: TwilioApi, settings: Settings, store: Store, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    items = {i.role: i for i in numbers.provision(api, settings, store.sessions)}
    assert [items[r].action for r in ("sales1", "sales2", "sales3")] == ["buy", "adopt", "skip"]

    (buy,) = [r for r in twilio_proxy.calls("POST", rf"{NUMBERS}\.json$") if r.passed]
    assert buy.one("PhoneNumber") == "+18089251571"
    assert buy.one("FriendlyName") == "sales1"
    assert buy.one("VoiceUrl") == f"{PUBLIC}/voice" and buy.one("SmsUrl") == f"{PUBLIC}/sms"
    assert buy.one("VoiceFallbackUrl") == f"{FALLBACK_URL}/18089251571.xml"
    assert buy.one("VoiceFallbackMethod") == "GET"
    assert buy.one("SmsFallbackUrl") == f"{FALLBACK_URL}/18089251571-sms.xml"

    # The adopted number had drifted: only its wrong fields were sent.
    (repair,) = twilio_proxy.calls("POST", rf"{NUMBERS}/PN2+\.json$")
    assert repair.one("FriendlyName") == "sales2"
    assert repair.one("VoiceUrl") == f"{PUBLIC}/voice"
    assert "VoiceMethod" not in repair.form  # already POST
    twilio_proxy.assert_all_valid()

    with store.sessions() as session:
        rows = {n.number: n for n in session.scalars(select(TwilioNumber))}
        assert set(rows) == {"+18089251571", SALES2_NUMBER}
        assert rows[SALES2_NUMBER].adopted and not rows["+18089251571"].adopted
        assert (
            session.scalars(select(Role.number).where(Role.key == "sales1")).one() == "+18089251571"
        )
        actions = set(session.scalars(select(AuditEntry.action)))
    assert {"twilio.number.bought", "twilio.number.adopted", "twilio.number.repaired"} <= actions

    fallback = Path(settings.twilio.fallback.directory)  # type: ignore[union-attr]
    voice = ElementTree.fromstring((fallback / "18089251571.xml").read_text())
    assert [n.text for n in voice.iter("Number")] == [ALICE_PHONE, "+15550100"]
    assert {d.get("callerId") for d in voice.iter("Dial")} == {"+18089251571"}

    # Run again: nothing bought twice, nothing to repair, no write at all.
    before = len(twilio_proxy.records)
    again = {i.role: i.action for i in numbers.provision(api, settings, store.sessions)}
    assert again == {"sales1": "keep", "sales2": "keep", "sales3": "skip"}
    assert not [r for r in twilio_proxy.records[before:] if r.method == "POST"]


def test_reconciler_repairs_drift_made_by_hand(
    api: TwilioApi, settings: Settings, store: Store, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    numbers.provision(api, settings, store.sessions, ["sales2"])
    sid = "PN" + "2" * 32
    fake.numbers[sid]["sms_url"] = "https://someone-else.example/sms"
    before = len(twilio_proxy.records)
    (state,) = numbers.reconcile(api, settings, store.sessions)
    assert state.changes == {"sms_url": f"{PUBLIC}/sms"}
    (repair,) = [r for r in twilio_proxy.records[before:] if r.method == "POST"]
    assert repair.form == {"SmsUrl": [f"{PUBLIC}/sms"]}
    assert fake.numbers[sid]["sms_url"] == f"{PUBLIC}/sms"


def test_reroute_follows_a_holder_change_within_a_second(
    api: TwilioApi, settings: Settings, store: Store, fake: FakeNumbers
) -> None:
    numbers.provision(api, settings, store.sessions, ["sales1"])
    change_holder(store, "sales1", "bob@acme.example")
    started = time.monotonic()
    (state,) = numbers.reroute(settings, store.sessions, "sales1")
    assert time.monotonic() - started < 1.0
    assert state.fallback_files and not state.changes
    xml = ElementTree.fromstring(state.fallback_files[0].read_text())
    assert next(n.text for n in xml.iter("Number")) == BOB_PHONE


def test_buy_whose_answer_is_lost_is_not_bought_twice(
    api: TwilioApi, settings: Settings, store: Store, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    twilio_proxy.inject("POST", rf"{NUMBERS}\.json$", "500-after")
    numbers.provision(api, settings, store.sessions, ["sales1"])
    buys = twilio_proxy.calls("POST", rf"{NUMBERS}\.json$")
    assert [b.passed for b in buys] == [True]
    assert twilio_proxy.calls("GET", rf"{NUMBERS}\.json$")[-1].query["PhoneNumber"] == [
        "+18089251571"
    ]
    assert len(fake.numbers) == 2


def test_updates_survive_429_500_and_timeouts(
    api: TwilioApi, settings: Settings, store: Store, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    path = rf"{NUMBERS}/PN2+\.json$"
    twilio_proxy.inject("POST", path, "429", 2)
    twilio_proxy.inject("POST", path, "500", 2)
    twilio_proxy.inject("POST", path, "timeout", 1)
    twilio_proxy.inject("GET", path, "timeout", 1)
    numbers.provision(api, settings, store.sessions, ["sales2"])
    statuses = [r.status for r in twilio_proxy.calls("POST", path)]
    assert statuses == [429, 429, 500, 500, 0, 200]
    assert fake.numbers["PN" + "2" * 32]["voice_url"] == f"{PUBLIC}/voice"


def test_twilio_down_for_longer_than_retry_seconds_is_reported(
    tmp_path: Path, twilio_proxy: TwilioProxy, fake: FakeNumbers
) -> None:
    cfg = twilio_settings(tmp_path, api_base=twilio_proxy.url, retry_seconds=0.3).twilio
    assert cfg is not None
    twilio_proxy.inject("GET", rf"{NUMBERS}\.json$", "500", 1000)
    with pytest.raises(TwilioUnavailable, match="500"):
        TwilioApi(cfg).list_numbers()


# --- SMS notices ----------------------------------------------------------------------


def test_notice_sms_goes_through_the_messaging_service_from_the_role_number(
    api: TwilioApi, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    result = send_notice_sms(
        api, role_number=SALES2_NUMBER, to=CLIENT_PHONE, body="Hello", since=SINCE
    )
    assert result.status == "sent" and result.sid is not None
    (post,) = twilio_proxy.calls("POST", MESSAGES)
    assert post.form == {
        "From": [SALES2_NUMBER],
        "To": [CLIENT_PHONE],
        "Body": ["Hello"],
        "MessagingServiceSid": [MESSAGING_SERVICE],
    }
    twilio_proxy.assert_all_valid()


def test_notice_sms_is_sent_once_through_429_500_and_a_lost_answer(
    api: TwilioApi, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    twilio_proxy.inject("POST", MESSAGES, "429", 2)
    twilio_proxy.inject("POST", MESSAGES, "500", 1)
    twilio_proxy.inject("POST", MESSAGES, "timeout", 1)
    result = send_notice_sms(
        api, role_number=SALES2_NUMBER, to=CLIENT_PHONE, body="New manager", since=SINCE
    )
    assert result.status == "sent"
    posts = twilio_proxy.calls("POST", MESSAGES)
    assert [p.status for p in posts] == [429, 429, 500, 0]
    assert [p.passed for p in posts] == [False, False, False, True]  # one message reached Twilio
    assert len(fake.messages) == 1 and result.sid == fake.messages[0]["sid"]
    # After each unknown outcome, the role number's messages to the contact were listed.
    lists = twilio_proxy.calls("GET", MESSAGES)
    assert len(lists) == 2
    assert lists[0].query["To"] == [CLIENT_PHONE] and lists[0].query["From"] == [SALES2_NUMBER]
    assert lists[0].query["DateSent>"] == ["2026-11-01"]
    twilio_proxy.assert_all_valid()


def test_a_retried_notice_finds_the_earlier_message(
    api: TwilioApi, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    first = send_notice_sms(api, role_number=SALES2_NUMBER, to=CLIENT_PHONE, body="Hi", since=SINCE)
    again = send_notice_sms(
        api, role_number=SALES2_NUMBER, to=CLIENT_PHONE, body="Hi", since=SINCE, check_first=True
    )
    assert again.status == "already_sent" and again.sid == first.sid
    assert len(twilio_proxy.calls("POST", MESSAGES)) == 1


@pytest.mark.parametrize("code", [21610, 30034])
def test_opt_out_and_unregistered_a2p_are_final(
    code: int, api: TwilioApi, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    twilio_proxy.answer(
        "POST", MESSAGES, lambda rec: (400, {"code": code, "message": "refused", "status": 400})
    )
    result = send_notice_sms(
        api, role_number=SALES2_NUMBER, to=CLIENT_PHONE, body="Hi", since=SINCE
    )
    assert (result.status, result.error_code, result.final) == ("refused", code, True)
    assert len(twilio_proxy.calls("POST", MESSAGES)) == 1


def test_undelivered_30034_is_reported_final(
    api: TwilioApi, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    sid = "SM" + "9" * 32
    twilio_proxy.answer(
        "GET",
        rf"/Messages/{sid}\.json$",
        lambda rec: (
            200,
            {**rec.prism_body, "sid": sid, "status": "undelivered", "error_code": 30034},
        ),
    )
    result = notice_sms_delivery(api, sid)
    assert (result.status, result.error_code, result.final) == ("refused", 30034, True)
    assert "A2P 10DLC" in result.detail


def test_check_connect_probes_twilio_through_the_same_client(
    settings: Settings, twilio_proxy: TwilioProxy
) -> None:
    from rolekeeper.backends.probe import probe_twilio

    assert settings.twilio is not None
    result = probe_twilio(settings.twilio)
    assert result.ok, result.detail
    (fetch,) = twilio_proxy.calls("GET", rf"/Accounts/{ACCOUNT}\.json$")
    assert fetch.passed


def test_the_recurring_reconcile_job_repairs_drift(
    api: TwilioApi, settings: Settings, store: Store, fake: FakeNumbers
) -> None:
    from rolekeeper.clock import utcnow
    from rolekeeper.duework import JobContext
    from rolekeeper.jobkinds import job_kinds

    kind = job_kinds()[numbers.RECONCILE_JOB]
    assert kind.recurring and kind.every is not None
    assert kind.every(settings).total_seconds() == 15 * 60
    numbers.provision(api, settings, store.sessions, ["sales2"])
    sid = "PN" + "2" * 32
    fake.numbers[sid]["voice_url"] = "https://hand-edited.example/voice"
    now = utcnow()
    kind.handler(JobContext(1, kind.name, "", {}, now, now, settings, store.sessions))
    assert fake.numbers[sid]["voice_url"] == f"{PUBLIC}/voice"


@pytest.mark.postgres
def test_provision_on_postgresql(
    tmp_path: Path, pg_url: str, twilio_proxy: TwilioProxy, fake: FakeNumbers
) -> None:
    pg = twilio_settings(tmp_path, api_base=twilio_proxy.url)
    pg = pg.model_copy(update={"database": pg.database.model_copy(update={"url": pg_url})})
    store = open_store(pg)
    try:
        make_org(store)
        assert pg.twilio is not None
        items = numbers.provision(TwilioApi(pg.twilio), pg, store.sessions)
        assert sorted(i.action for i in items) == ["adopt", "buy", "skip"]
        with store.sessions() as session:
            assert len(session.scalars(select(TwilioNumber)).all()) == 2
    finally:
        store.close()


def test_the_access_number_is_pointed_at_the_voice_webhook(
    api: TwilioApi, settings: Settings, store: Store, fake: FakeNumbers, twilio_proxy: TwilioProxy
) -> None:
    from tests.twilio_support import ACCESS

    fake.add("PN" + "a" * 32, ACCESS, voice_url="https://old.example/voice")
    states = {s.role: s for s in numbers.reconcile(api, settings, store.sessions)}
    assert states["(access)"].changes == {
        "friendly_name": numbers.ACCESS_NAME,
        "voice_url": f"{PUBLIC}/voice",
    }
    assert fake.numbers["PN" + "a" * 32]["voice_url"] == f"{PUBLIC}/voice"
    twilio_proxy.assert_all_valid()
