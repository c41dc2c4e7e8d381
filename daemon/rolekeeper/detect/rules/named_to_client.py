"""Rule 2: an employee writes to a client from the named address, not the role mailbox."""

from __future__ import annotations

from collections.abc import Iterator

from rolekeeper.detect.directory import Directory
from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.rules.base import Finding, Rule, evidence

NAME = "named-to-client"


def check(facts: MessageFacts, directory: Directory) -> Iterator[Finding]:
    if facts.sender is None:
        return
    employee = directory.employee(facts.sender)
    if employee is None:
        return
    clients = directory.clients_among(facts.recipients)
    if clients:
        to = [a for a in facts.recipients if directory.client_of(a) is not None]
        text = evidence(f"From: {facts.sender} To/Cc: {', '.join(to)}")
        yield Finding(NAME, employee, clients[0], text, to[0])


RULE = Rule(NAME, "an employee's named address writing to a client party", check)
