"""Rule 5: a private phone number or personal address in the author's text of firm mail to a
client. Corporate numbers (role numbers, main lines, configured ones) and the client's own
numbers are not leaks; an employee's own work mobile is (the client would call the person)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from rolekeeper.detect.directory import Directory
from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.phones import phones_in
from rolekeeper.detect.rules.base import Finding, Rule, evidence

NAME = "private-contact-in-text"

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def check(facts: MessageFacts, directory: Directory) -> Iterator[Finding]:
    text = facts.author_text
    if not text or facts.sender is None or not directory.is_firm(facts.sender):
        return
    clients = directory.clients_among(facts.recipients)
    if not clients:
        return
    party = next(a for a in facts.recipients if directory.client_of(a) is not None)
    employee = directory.speaker_for_firm(facts.sender)
    if employee is not None and employee.exempt:
        return
    allowed = set(directory.corporate_numbers)
    for client in clients:
        allowed |= directory.client_numbers.get(client.id, frozenset())
    for number, position in phones_in(text, directory.region):
        if number not in allowed:
            yield Finding(NAME, employee, clients[0], evidence(_line_of(text, position)), party)
    for found in _EMAIL.finditer(text):
        address = found.group(0).lower()
        if directory.is_personal(address):
            line = evidence(_line_of(text, found.start()))
            yield Finding(NAME, employee, clients[0], line, party)


def _line_of(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return text[start : end if end >= 0 else len(text)]


RULE = Rule(
    NAME, "a private phone number or personal address in firm mail to a client", check, True
)
