"""Raw RFC 822 bytes → MessageFacts. Never raises on bad mail: UnreadableMessage says why."""

from __future__ import annotations

import binascii
import email
import hashlib
import re
from datetime import datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import NamedTuple

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
    "x-envelope-to",
    "x-sieve-redirected-from",
    "x-ms-exchange-inbox-rules-loop",
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


class BodyFacts(NamedTuple):
    """What a message's body adds to its header facts."""

    author_text: str
    carried_senders: tuple[str, ...]
    attached: bool  # a message/rfc822 part is attached


def facts_from_bytes(raw: bytes, *, with_body: bool = False) -> MessageFacts:
    try:
        fields = header_fields(raw)
        if not fields:
            raise UnreadableMessage("no header fields: not an RFC 822 message")
        facts = _facts(fields)
        return add_body(facts, _read_body(raw)) if with_body else facts
    except UnreadableMessage:
        raise
    except Exception as exc:  # any parser failure makes the message unreadable
        raise UnreadableMessage(f"{type(exc).__name__}: {exc}") from exc


def read_body(raw: bytes) -> BodyFacts:
    """What the body says; add it to the header facts with `add_body`."""
    try:
        return _read_body(raw)
    except Exception as exc:  # any parser failure makes the message unreadable
        raise UnreadableMessage(f"{type(exc).__name__}: {exc}") from exc


def add_body(facts: MessageFacts, body: BodyFacts) -> MessageFacts:
    return facts._replace(
        author_text=body.author_text,
        carried_senders=body.carried_senders,
        forward=facts.forward or body.attached,
    )


def _facts(fields: dict[str, str]) -> MessageFacts:
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
        forward=bool(_FORWARD_SUBJECT.match(subject)),
        envelope_to=addresses(fields.get("x-envelope-to")),
        redirected_by=first_address(
            fields.get("x-sieve-redirected-from") or fields.get("x-ms-exchange-inbox-rules-loop")
        ),
    )


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    match = re.search(r"<[^<>\s]+>", value)
    return match.group(0) if match else value.strip()[:255] or None


def _digest(fields: dict[str, str]) -> str:
    material = "\n".join(fields.get(k, "") for k in ("from", "to", "cc", "date", "subject"))
    return "digest:" + hashlib.sha256(material.encode("utf-8", "replace")).hexdigest()[:40]


# The usual RFC 5322 date, `Tue, 24 Nov 2026 09:15:02 +0300`, read without the stdlib's
# general parser (a third of the cost of a message's header fields); anything else goes to it.
_USUAL_DATE = re.compile(
    r"\s*(?:[A-Za-z]{3},\s*)?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d)"
    r" ([+-])(\d\d)(\d\d)\s*(?:\([A-Za-z ]*\)\s*)?"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_ZONES: dict[str, timezone] = {}


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    usual = _usual_date(value)
    if usual is not None:
        return usual
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def _usual_date(value: str) -> datetime | None:
    match = _USUAL_DATE.fullmatch(value)
    if match is None:
        return None
    day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    month_number = _MONTHS.get(month.lower())
    offset = sign + zone_h + zone_m
    # -0000 (no zone known) and years below 100 (taken as 19xx/20xx) the stdlib's way.
    if month_number is None or offset == "-0000" or int(year) < 100:
        return None
    try:
        zone = _ZONES.get(offset)
        if zone is None:
            minutes = int(zone_h) * 60 + int(zone_m)
            zone = timezone(timedelta(minutes=-minutes if sign == "-" else minutes))
            _ZONES[offset] = zone
        return datetime(
            int(year), month_number, int(day), int(hour), int(minute), int(second), tzinfo=zone
        )
    except ValueError:
        return None


def _decoded(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, ValueError, UnicodeError):
        return value


def _read_body(raw: bytes) -> BodyFacts:
    text = fast_body_text(raw)
    if text is not None:
        own, rest = split_author_text(text[:MAX_TEXT])
        return BodyFacts(own, carried_senders(rest), False)
    return _read_body_slowly(raw)


def _read_body_slowly(raw: bytes) -> BodyFacts:
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
    return BodyFacts(own, tuple(carried), attached)


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


# --- the fast path for the usual shapes: one text part, or text/plain + text/html -------

_PARAM = re.compile(r';\s*([a-z-]+)\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.I)
_SIMPLE_CTE = frozenset({"", "7bit", "8bit", "binary", "quoted-printable", "base64"})


def _split_head(raw: bytes) -> tuple[bytes, bytes] | None:
    for separator in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(separator)
        if at >= 0:
            return raw[:at], raw[at + len(separator) :]
    return None


def _head_fields(head: bytes) -> dict[str, str] | None:
    # Raw 8-bit bytes turn up in fields such as X-Mailer; the fields read here are ASCII,
    # and latin-1 keeps every byte so a non-ASCII boundary still fails to match below.
    text = head.decode("latin-1")
    fields: dict[str, str] = {}
    name: str | None = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t"):
            if name is not None:
                fields[name] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep or key != key.rstrip():
            return None  # not a plain header block (or obsolete syntax): the full parser
        name = key.strip().lower()
        if name in ("content-type", "content-transfer-encoding", "content-disposition"):
            if name in fields:
                return None
            fields[name] = value.strip()
        else:
            name = None
    return fields


def _params(value: str) -> tuple[str, dict[str, str]]:
    kind = value.split(";", 1)[0].strip().lower()
    params = {m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _PARAM.finditer(value)}
    return kind, params


def _decode(body: bytes, fields: dict[str, str]) -> str | None:
    cte = fields.get("content-transfer-encoding", "").strip().lower()
    if cte not in _SIMPLE_CTE:
        return None
    try:
        if cte == "base64":
            body = binascii.a2b_base64(body)
        elif cte == "quoted-printable":
            body = binascii.a2b_qp(body)
    except (binascii.Error, ValueError):
        return None
    _, params = _params(fields.get("content-type", "text/plain"))
    charset = params.get("charset", "")
    if not charset:
        if not body.isascii():
            return None  # 8-bit text of no declared charset: the full parser's guess
        charset = "us-ascii"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return None


def fast_body_text(raw: bytes) -> str | None:
    """The text a reader sees, for a single text part or a flat multipart of text parts;
    None for anything else (attachments of messages, nesting, unusual encodings)."""
    split = _split_head(raw)
    if split is None:
        return None
    head, body = split
    fields = _head_fields(head)
    if fields is None:
        return None
    kind, params = _params(fields.get("content-type", "text/plain"))
    if fields.get("content-disposition", "").lower().startswith("attachment"):
        return None
    if kind in ("text/plain", "text/html"):
        text = _decode(body, fields)
        if text is None:
            return None
        return html_to_text(text) if kind == "text/html" else text
    if kind not in ("multipart/alternative", "multipart/mixed") or not params.get("boundary"):
        return None
    chunks = _parts(body, params["boundary"])
    if chunks is None:
        return None
    first: tuple[str, bytes, dict[str, str]] | None = None
    for chunk in chunks:
        part = _split_head(chunk) if not chunk.startswith((b"\r\n", b"\n")) else (b"", chunk)
        if part is None:
            return None
        part_fields = _head_fields(part[0]) if part[0] else {}
        if part_fields is None:
            return None
        part_kind, _ = _params(part_fields.get("content-type", "text/plain"))
        if part_kind.startswith(("multipart/", "message/")):
            return None  # nested or attached messages: the full parser
        disposition = part_fields.get("content-disposition", "").lower()
        if disposition.startswith("attachment") or part_kind not in ("text/plain", "text/html"):
            continue
        if first is None:
            # The first text part is the body, as for the full parser (in the usual
            # multipart/alternative, plain comes first). Later parts are still looked at:
            # an attached message sends the whole message to the full parser.
            first = (part_kind, part[1], part_fields)
    if first is None:
        return ""
    decoded = _decode(first[1], first[2])
    if decoded is None:
        return None
    return html_to_text(decoded) if first[0] == "text/html" else decoded


def _parts(body: bytes, boundary: str) -> list[bytes] | None:
    """The parts between delimiter lines (RFC 2046 §5.1.1); None without a close delimiter.

    A delimiter is a whole line `--boundary` (`--boundary--` closes); the line break before it
    belongs to the delimiter, not to the part. Found with bytes.find: boundaries differ per
    message, so a compiled pattern per boundary would cost more than the search."""
    try:
        mark = b"--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        return None
    parts: list[bytes] = []
    start: int | None = None
    at = 0
    while True:
        at = body.find(mark, at)
        if at < 0:
            return None
        line_start = at == 0 or body[at - 1 : at] == b"\n"
        end = at + len(mark)
        closing = body[end : end + 2] == b"--"
        after = end + 2 if closing else end
        newline = body.find(b"\n", after)
        rest = body[after:] if newline < 0 else body[after:newline]
        if not line_start or rest.rstrip(b" \t\r"):
            at = end  # the boundary string inside a line, or followed by more text
            continue
        if start is not None:
            cut = at - 1 if at > 0 else at  # the line break before belongs to the delimiter
            if cut > 0 and body[cut - 1 : cut] == b"\r":
                cut -= 1
            parts.append(body[start : max(start, cut)])
        if closing:
            return parts
        start = len(body) if newline < 0 else newline + 1
        at = start
