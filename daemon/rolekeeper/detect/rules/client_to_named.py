"""Rule 1: a client writes to an employee's named address instead of the role's."""

from __future__ import annotations

from collections.abc import Iterator

from rolekeeper.detect.directory import Directory
from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.rules.base import Finding, Rule, evidence

NAME = "client-to-named"


def check(facts: MessageFacts, directory: Directory) -> Iterator[Finding]:
    if facts.automated or facts.sender is None:
        return
    client = directory.client_of(facts.sender)
    if client is None:
        return
    for address in facts.recipients:
        employee = directory.employee(address)
        if employee is not None:
            yield Finding(
                NAME,
                employee,
                client,
                evidence(f"From: {facts.sender} To/Cc: {address}"),
                facts.sender,
            )


RULE = Rule(NAME, "client mail to an employee's named address (it counts with the role too)", check)
