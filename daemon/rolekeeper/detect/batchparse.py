"""Parse a batch of fetched messages; runs in the scanner's parse workers or inline.

Module-level functions of plain data in and out, so that a worker process can run them.
Results are named tuples: they cross the process boundary, where tuples pickle fastest.
"""

from __future__ import annotations

from typing import NamedTuple

from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.message import BodyFacts, UnreadableMessage, facts_from_bytes, read_body


class ReadHeaders(NamedTuple):
    uid: int
    facts: MessageFacts | None  # None: unreadable, `error` says why
    error: str | None = None


class ReadBody(NamedTuple):
    uid: int
    body: BodyFacts | None  # None: unreadable, `error` says why
    error: str | None = None


def read_headers(items: list[tuple[int, bytes]]) -> list[ReadHeaders]:
    out = []
    for uid, data in items:
        try:
            out.append(ReadHeaders(uid, facts_from_bytes(data)))
        except UnreadableMessage as exc:
            out.append(ReadHeaders(uid, None, str(exc)[:2000]))
    return out


def read_bodies(items: list[tuple[int, bytes]]) -> list[ReadBody]:
    out = []
    for uid, data in items:
        try:
            out.append(ReadBody(uid, read_body(data)))
        except UnreadableMessage as exc:
            out.append(ReadBody(uid, None, str(exc)[:2000]))
    return out
