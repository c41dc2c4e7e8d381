"""Raw RFC 822 bytes → MessageFacts. Never raises on bad mail: UnreadableMessage says why."""

from __future__ import annotations

import email
import hashlib
import re
from datetime import datetime
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parsedate_to_datetime

from rolekeeper.detect.addresses import addresses, first_address
from rolekeeper.detect.authortext import carried_senders, html_to_text, split_author_text
from rolekeeper.detect.facts import MessageFacts

# Header fields the scanner fetches (IMAP BODY.PEEK[HEADER.FIELDS (...)]).
HEADER_FIELDS = (
    "from",
    "to",
    "cc",
    "reply-to",
    "message-id",
    "date",
    "subject",
    "auto-submitted",
    "precedence",
    "content-type",
    "resent-from",
    "resent-to",
    "resent-message-id",
    "list-id",
    "x-autoreply",
    "x-autorespond",
    "return-path",
)
MAX_TEXT = 64 * 1024

_FORWARD_SUBJECT = re.compile(r"^\s*(?:re:\s*)*(?:fwd?|fw|tr|wg|enc|пересл\.?|пересылка)\s*:", re.I)
_BULK = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})
_DAEMON = re.compile(r"^(?:mailer-daemon|postmaster|no-?reply|do-?not-?reply)@", re.I)


class UnreadableMessage(ValueError):
    """The message could not be parsed; the scanner records it and goes on."""


def header_fields(raw: bytes) -> dict[str, str]:
    """The wanted header fields, unfolded; the first occurrence of each wins."""
    end = raw.find(b"\r\n\r\n")
    end2 = raw.find(b"\n\n")
    if end < 0 or (0 <= end2 < end):
        end = end2
    block = raw if end < 0 else raw[:end]
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        text = block.decode("utf-8", errors="replace")
    fields: dict[str, str] = {}
    name: str | None = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t"):
            if name is not None:
                fields[name] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            name = None
            continue
        key = key.strip().lower()
        if key in fields or key not in HEADER_FIELDS:
            name = None
            continue
        fields[key] = value.strip()
        name = key
    return fields


def facts_from_bytes(raw: bytes, *, with_body: bool = False) -> MessageFacts:
    try:
        fields = header_fields(raw)
        if not fields:
            raise UnreadableMessage("no header fields: not an RFC 822 message")
        own_text: str | None = None
        carried: tuple[str, ...] = ()
        attached = False
        if with_body:
            own_text, carried, attached = _read_body(raw)
        return _facts(fields, own_text, carried, attached)
    except UnreadableMessage:
        raise
    except Exception as exc:  # any parser failure makes the message unreadable
        raise UnreadableMessage(f"{type(exc).__name__}: {exc}") from exc


def _facts(
    fields: dict[str, str], own_text: str | None, carried: tuple[str, ...], attached: bool
) -> MessageFacts:
    message_id = _message_id(fields.get("message-id"))
    sender = first_address(fields.get("from"))
    subject = _decoded(fields.get("subject", ""))
    content_type = fields.get("content-type", "").lower()
    automated = (
        fields.get("auto-submitted", "no").strip().lower() not in ("", "no")
        or fields.get("precedence", "").strip().lower() in _BULK
        or "list-id" in fields
        or "x-autoreply" in fields
        or "x-autorespond" in fields
        or content_type.startswith("multipart/report")
        or fields.get("return-path", "").strip() == "<>"
        or bool(sender and _DAEMON.match(sender))
    )
    return MessageFacts(
        message_key=message_id or _digest(fields),
        message_id=message_id,
        sender=sender,
        to=addresses(fields.get("to")),
        cc=addresses(fields.get("cc")),
        reply_to=addresses(fields.get("reply-to")),
        resent_from=first_address(fields.get("resent-from")),
        resent_to=addresses(fields.get("resent-to")),
        date=_date(fields.get("date")),
        automated=automated,
        calendar_reply="text/calendar" in content_type and "method=reply" in content_type,
        forward=attached or bool(_FORWARD_SUBJECT.match(subject)),
        carried_senders=carried,
        author_text=own_text,
    )


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    match = re.search(r"<[^<>\s]+>", value)
    return match.group(0) if match else value.strip()[:255] or None


def _digest(fields: dict[str, str]) -> str:
    material = "\n".join(fields.get(k, "") for k in ("from", "to", "cc", "date", "subject"))
    return "digest:" + hashlib.sha256(material.encode("utf-8", "replace")).hexdigest()[:40]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def _decoded(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, ValueError, UnicodeError):
        return value


def _read_body(raw: bytes) -> tuple[str, tuple[str, ...], bool]:
    """(author's text, senders of carried messages, whether a message is attached)."""
    message = email.message_from_bytes(raw)
    carried: dict[str, None] = {}
    attached = False
    text: str | None = None
    for part in _walk_outer(message, carried):
        if part.get_content_type() == "message/rfc822":
            attached = True
            continue
        if text is None and part.get_content_maintype() == "text":
            subtype = part.get_content_subtype()
            if subtype in ("plain", "html") and not _is_attachment(part):
                body = _part_text(part)
                text = html_to_text(body) if subtype == "html" else body
    own, rest = split_author_text((text or "")[:MAX_TEXT])
    for address in carried_senders(rest):
        carried.setdefault(address, None)
    return own, tuple(carried), attached


def _walk_outer(message: Message, carried: dict[str, None]) -> list[Message]:
    """Parts of the message itself; attached messages are noted, not descended into."""
    parts: list[Message] = []
    stack = [message]
    while stack:
        part = stack.pop(0)
        if part.get_content_type() == "message/rfc822":
            parts.append(part)
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                for address in addresses(inner.get("from")):
                    carried.setdefault(address, None)
            continue
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
            continue
        parts.append(part)
    return parts


def _is_attachment(part: Message) -> bool:
    return (part.get("content-disposition") or "").strip().lower().startswith("attachment")


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload[: MAX_TEXT * 4].decode(charset, errors="replace")
    except LookupError:
        return payload[: MAX_TEXT * 4].decode("utf-8", errors="replace")
