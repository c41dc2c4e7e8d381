"""A small telephony organisation, settings pointing at the test proxy, and a stateful
answer for IncomingPhoneNumbers so the reconciler sees its own repairs (Prism is stateless)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from rolekeeper.clock import utcnow
from rolekeeper.config import Settings, settings_from_mapping
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Client, Contact, Person, Role, RoleHolder
from rolekeeper.store.open import Store
from tests.conftest import sqlite_mapping
from tests.servers.prism import Recorded, TwilioProxy

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "test-auth-token-0123456789"
PUBLIC = "https://hooks.example.com/twilio"
FALLBACK_URL = "https://www.example.com/twiml"
MESSAGING_SERVICE = "MG" + "ab" * 16
PIN = "4711"
ACCESS = "+15550199"
TEAM = "+15550100"

ALICE_PHONE = "+15550111"
BOB_PHONE = "+15550112"
CLIENT_PHONE = "+15557654321"
SALES2_NUMBER = "+15550102"
SALES3_NUMBER = "+15550103"


def twilio_settings(tmp_path: Path, api_base: str = "http://127.0.0.1:9", **extra: Any) -> Settings:
    token = tmp_path / "twilio-token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n", encoding="utf-8")
    twilio: dict[str, Any] = {
        "account_sid": ACCOUNT,
        "auth_token_file": str(token),
        "api_base": api_base,
        "timeout_seconds": 0.5,
        "retry_seconds": 8.0,
        "retry_initial_seconds": 0.02,
        "public_url": PUBLIC,
        "messaging_service_sid": MESSAGING_SERVICE,
        "team_line": TEAM,
        "numbers": {"country": "US", "area_code": 808},
        "webhooks": {"access_number": ACCESS, "pin_file": str(pin)},
        "fallback": {"directory": str(tmp_path / "fallback"), "url": FALLBACK_URL},
    }
    twilio |= extra
    mapping = sqlite_mapping(tmp_path / "rk.db", twilio=twilio)
    mapping["organisation"] = {
        "name": "Test Org",
        "domains": ["acme.example"],
        "default_region": "US",
    }
    return settings_from_mapping(mapping)


def make_org(store: Store) -> None:
    """alice holds sales1 (no number yet) and sales3, bob holds sales2; Acme is sales1's."""
    with transaction(store.sessions) as s:
        alice = Person(
            name="Alice Adams", named_address="alice@acme.example", work_phone=ALICE_PHONE
        )
        bob = Person(name="Bob Brown", named_address="bob@acme.example", work_phone=BOB_PHONE)
        s.add_all([alice, bob])
        roles = [
            Role(key="sales1", name="Sales desk 1", address="sales1@acme.example", number=None),
            Role(
                key="sales2",
                name="Sales desk 2",
                address="sales2@acme.example",
                number=SALES2_NUMBER,
            ),
            Role(
                key="sales3",
                name="Sales desk 3",
                address="sales3@acme.example",
                number=SALES3_NUMBER,
            ),
        ]
        s.add_all(roles)
        s.flush()
        s.add_all(
            [
                RoleHolder(role_id=roles[0].id, person_id=alice.id),
                RoleHolder(role_id=roles[1].id, person_id=bob.id),
                RoleHolder(role_id=roles[2].id, person_id=alice.id),
            ]
        )
        acme = Client(crm_id="CRM-1", name="Acme Steel", segment="key", role_id=roles[0].id)
        other = Client(crm_id="CRM-2", name="Other Co", segment="regular", role_id=roles[1].id)
        s.add_all([acme, other])
        s.flush()
        s.add_all(
            [
                Contact(
                    client_id=acme.id,
                    name="John Doe",
                    phone=CLIENT_PHONE,
                    is_mobile=True,
                    language="en",
                ),
                Contact(client_id=other.id, name="Jane Roe", phone="+15557650000", language="en"),
            ]
        )


def set_number(store: Store, role: str, number: str) -> None:
    with transaction(store.sessions) as s:
        s.execute(update(Role).where(Role.key == role).values(number=number))


def change_holder(store: Store, role: str, person_address: str) -> None:
    """What the handover does: close the current holder row, open a new one."""
    with transaction(store.sessions) as s:
        role_id = s.scalars(select(Role.id).where(Role.key == role)).one()
        person_id = s.scalars(select(Person.id).where(Person.named_address == person_address)).one()
        s.execute(
            update(RoleHolder)
            .where(RoleHolder.role_id == role_id, RoleHolder.ended_at.is_(None))
            .values(ended_at=utcnow())
        )
        s.add(RoleHolder(role_id=role_id, person_id=person_id))


_FIELDS = {
    "FriendlyName": "friendly_name",
    "VoiceUrl": "voice_url",
    "VoiceMethod": "voice_method",
    "VoiceFallbackUrl": "voice_fallback_url",
    "VoiceFallbackMethod": "voice_fallback_method",
    "SmsUrl": "sms_url",
    "SmsMethod": "sms_method",
    "SmsFallbackUrl": "sms_fallback_url",
    "SmsFallbackMethod": "sms_fallback_method",
}


@dataclass
class FakeNumbers:
    """The account's numbers as the proxy reports them: Prism checks each request, this
    keeps what a real account would remember."""

    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)  # sid -> resource
    messages: list[dict[str, Any]] = field(default_factory=list)
    # What Twilio says later of the messages to a number: To -> (status, error_code).
    # Unlisted numbers keep the status they were created with ("accepted").
    delivery: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    def add(self, sid: str, phone: str, **fields: str) -> None:
        self.numbers[sid] = {"sid": sid, "phone_number": phone, "account_sid": ACCOUNT} | fields

    def install(self, proxy: TwilioProxy) -> None:
        proxy.answer("GET", r"/IncomingPhoneNumbers\.json$", self._list)
        proxy.answer("POST", r"/IncomingPhoneNumbers\.json$", self._create)
        proxy.answer("GET", r"/IncomingPhoneNumbers/PN\w+\.json$", self._fetch)
        proxy.answer("POST", r"/IncomingPhoneNumbers/PN\w+\.json$", self._update)
        proxy.answer("POST", r"/Messages\.json$", self._send)
        proxy.answer("GET", r"/Messages\.json$", self._messages)
        proxy.answer("GET", r"/Messages/SM\w+\.json$", self._fetch_message)

    def _list(self, rec: Recorded) -> tuple[int, Any]:
        wanted = rec.one("PhoneNumber")
        found = [n for n in self.numbers.values() if not wanted or n["phone_number"] == wanted]
        body = dict(rec.prism_body, next_page_uri=None)
        body["incoming_phone_numbers"] = [
            {**body["incoming_phone_numbers"][0], **_url_defaults(), **n} for n in found
        ]
        return 200, body

    def _create(self, rec: Recorded) -> tuple[int, Any]:
        sid = "PN" + f"{len(self.numbers) + 1:032x}"
        self.add(sid, rec.one("PhoneNumber"))
        self._apply(sid, rec)
        return 201, {**rec.prism_body, **_url_defaults(), **self.numbers[sid]}

    def _fetch(self, rec: Recorded) -> tuple[int, Any]:
        sid = rec.path.rsplit("/", 1)[1].removesuffix(".json")
        return 200, {**rec.prism_body, **_url_defaults(), **self.numbers[sid]}

    def _update(self, rec: Recorded) -> tuple[int, Any]:
        sid = rec.path.rsplit("/", 1)[1].removesuffix(".json")
        self._apply(sid, rec)
        return 200, {**rec.prism_body, **_url_defaults(), **self.numbers[sid]}

    def _apply(self, sid: str, rec: Recorded) -> None:
        for form_name, attr in _FIELDS.items():
            if form_name in rec.form:
                self.numbers[sid][attr] = rec.one(form_name)

    def _send(self, rec: Recorded) -> tuple[int, Any]:
        message = {
            **rec.prism_body,
            "sid": "SM" + f"{len(self.messages) + 1:032x}",
            "to": rec.one("To"),
            "from": rec.one("From"),
            "body": rec.one("Body"),
            "status": "accepted",
            "error_code": None,
            "error_message": None,
        }
        self.messages.append(message)
        return 201, message

    def _fetch_message(self, rec: Recorded) -> tuple[int, Any]:
        sid = rec.path.rsplit("/", 1)[1].removesuffix(".json")
        found = [m for m in self.messages if m["sid"] == sid]
        if not found:
            return 404, {"code": 20404, "message": "not found", "status": 404}
        message = found[0]
        if message["to"] in self.delivery:
            status, code = self.delivery[message["to"]]
            message.update(status=status, error_code=code, error_message=None)
        return 200, {**rec.prism_body, **message}

    def _messages(self, rec: Recorded) -> tuple[int, Any]:
        found = [
            m for m in self.messages if m["to"] == rec.one("To") and m["from"] == rec.one("From")
        ]
        return 200, {**rec.prism_body, "messages": found, "next_page_uri": None}


def _url_defaults() -> dict[str, Any]:
    return {
        "friendly_name": "(808) 555-0000",
        "voice_url": None,
        "voice_method": "POST",
        "voice_fallback_url": None,
        "voice_fallback_method": "POST",
        "sms_url": "",
        "sms_method": "POST",
        "sms_fallback_url": "",
        "sms_fallback_method": "POST",
    }
