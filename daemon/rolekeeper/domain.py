"""Domain words shared by every layer: segments, statuses, address and phone forms."""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache

import phonenumbers


class Segment(StrEnum):
    VIP = "vip"
    KEY = "key"
    REGULAR = "regular"
    MINOR = "minor"


WATCHED_SEGMENTS = frozenset({Segment.VIP, Segment.KEY})


class HolderKind(StrEnum):
    HOLDER = "holder"
    COHOLDER = "coholder"


class ChannelKind(StrEnum):
    ROLE_MAILBOX = "role_mailbox"
    ROLE_NUMBER = "role_number"
    NAMED_MAILBOX = "named_mailbox"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    PARKED = "parked"


class TransitionStatus(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    PARKED = "parked"


OPEN_TRANSITION_STATUSES = frozenset(
    {TransitionStatus.SCHEDULED, TransitionStatus.RUNNING, TransitionStatus.PARKED}
)

# Deliberately simple: the CRM and HR exports are the authority, we only refuse what
# cannot be an address at all. Full RFC 5322 parsing belongs to the mail scanner.
_EMAIL_RE = re.compile(r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+$")
_DOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$")


_PLAIN_PHONE = re.compile(r"\+?[0-9 ()./-]+")
_NOT_DIGIT = re.compile(r"[^0-9]")


class InvalidValue(ValueError):
    """A value from a file or the command line does not have the expected form."""


def normalise_email(value: str) -> str:
    """Lower-case the whole address: mailbox local parts are case-insensitive in practice."""
    text = value.strip()
    if not _EMAIL_RE.match(text):
        raise InvalidValue(f"{value!r} is not an e-mail address")
    local, _, domain = text.rpartition("@")
    ascii_domain = _ascii_domain(domain.lower())
    if ascii_domain is None or not _DOMAIN_RE.match(ascii_domain):
        raise InvalidValue(f"{value!r} is not an e-mail address")
    return f"{local.lower()}@{ascii_domain}"


def normalise_domain(value: str) -> str:
    text = _ascii_domain(value.strip().lower().lstrip("@"))
    if text is None or not _DOMAIN_RE.match(text):
        raise InvalidValue(f"{value!r} is not a domain")
    return text


@lru_cache(maxsize=65536)
def _ascii_domain(domain: str) -> str | None:
    """IDNA form of a domain; cached because a file repeats its domains on many rows."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None


@lru_cache(maxsize=65536)
def normalise_phone(value: str, region: str) -> str:
    """E.164 form of a number written any usual way; `region` applies to national forms."""
    text = value.strip()
    if _PLAIN_PHONE.fullmatch(text) and len(_NOT_DIGIT.sub("", text)) >= 7:
        # Only digits and separators, and enough digits that phonenumbers' viability rules
        # treat separators alike: it would reduce the text to these digits anyway, and its
        # per-character Unicode handling is most of its cost.
        text = ("+" if text.startswith("+") else "") + _NOT_DIGIT.sub("", text)
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue(f"{value!r} is not a phone number") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidValue(f"{value!r} is not a possible phone number for region {region}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def pretty_number(e164: str) -> str:
    """+74951204501 → "+7 495 120-45-01": how people write the number."""
    import phonenumbers

    parsed = phonenumbers.parse(e164)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
