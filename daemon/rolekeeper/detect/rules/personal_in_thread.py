"""Rule 3: a personal address (known from HR, or unknown free mail) in To, Cc or Reply-To of
a client conversation. Forwards are rule 4's."""

from __future__ import annotations

from collections.abc import Iterator

from rolekeeper.detect.directory import Directory, Employee
from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.rules.base import Finding, Rule, evidence

NAME = "personal-in-client-thread"


def check(facts: MessageFacts, directory: Directory) -> Iterator[Finding]:
    if facts.forward or facts.sender is None:
        return
    client, party = directory.client_of(facts.sender), facts.sender
    if client is None:
        party = next((a for a in facts.recipients if directory.client_of(a) is not None), "")
        client = directory.client_of(party) if party else None
    if client is None:
        return
    for field, values in (("To", facts.to), ("Cc", facts.cc), ("Reply-To", facts.reply_to)):
        for address in values:
            if not directory.is_personal(address):
                continue
            employee = directory.personal_owner(address) or _in_conversation(facts, directory)
            if employee is not None and employee.exempt:
                continue
            yield Finding(NAME, employee, client, evidence(f"{field}: {address}"), party)


def _in_conversation(facts: MessageFacts, directory: Directory) -> Employee | None:
    """Whose unknown free-mail address it likely is: the firm's side of the conversation."""
    for address in (facts.sender or "", *facts.recipients):
        found = directory.speaker_for_firm(address)
        if found is not None:
            return found
    return None


RULE = Rule(NAME, "a personal or free-mail address in To/Cc/Reply-To of client mail", check)
