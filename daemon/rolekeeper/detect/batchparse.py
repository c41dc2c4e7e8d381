"""Parse a batch of fetched messages; runs in the scanner's parse worker or inline.

Module-level functions of plain data in and out, so that a worker process can run them.
"""

from __future__ import annotations

from dataclasses import dataclass

from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.message import UnreadableMessage, facts_from_bytes, with_body


@dataclass(frozen=True, slots=True)
class Parsed:
    uid: int
    facts: MessageFacts | None  # None: unreadable, `error` says why
    error: str | None = None


def read_headers(items: list[tuple[int, bytes]]) -> list[Parsed]:
    out = []
    for uid, data in items:
        try:
            out.append(Parsed(uid, facts_from_bytes(data)))
        except UnreadableMessage as exc:
            out.append(Parsed(uid, None, str(exc)[:2000]))
    return out


def read_bodies(items: list[tuple[int, MessageFacts, bytes]]) -> list[Parsed]:
    out = []
    for uid, header_facts, data in items:
        try:
            out.append(Parsed(uid, with_body(header_facts, data)))
        except UnreadableMessage as exc:
            out.append(Parsed(uid, None, str(exc)[:2000]))
    return out
