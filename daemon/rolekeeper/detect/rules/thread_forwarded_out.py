"""Rule 4: a client conversation sent on to a personal address: a forward, an attached client
message, a redirect or resend, or a server-side auto-forward seen in the journal.

The incident's message is the one that left: a forward's own Message-ID; a redirect or resend
keeps the original's Message-ID, which is what MessageFacts.message_key then holds.

A server-side auto-forward (a Sieve `redirect`, an Exchange inbox rule, an alias) leaves the
headers as they were: To still names the employee. Only the journal copy's envelope
recipients (X-Envelope-To) show where it went; a recipient there that the headers do not
name was sent the message unseen."""

from __future__ import annotations

from collections.abc import Iterator

from rolekeeper.detect.directory import ClientRef, Directory
from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.rules.base import Finding, Rule, evidence

NAME = "client-thread-forwarded-out"


def check(facts: MessageFacts, directory: Directory) -> Iterator[Finding]:
    resent = facts.resent_from is not None or bool(facts.resent_to)
    unseen = tuple(a for a in facts.envelope_to if a not in facts.all_addressees)
    client, source, party = _carried_client(facts, directory, resent or bool(unseen))
    if client is None:
        return
    forwarder = facts.redirected_by or (
        facts.resent_from if resent and facts.resent_from else facts.sender
    )
    employee = directory.speaker_for_firm(forwarder or "")
    if employee is None and forwarder is not None:
        employee = directory.personal_owner(forwarder)
    if employee is None and unseen:
        # An alias or forward seen only in the envelope: the firm's party it was sent to.
        employee = next(
            (e for a in facts.all_addressees if (e := directory.speaker_for_firm(a))), None
        )
    targets = facts.resent_to if resent else facts.all_addressees
    own = {c for c in _client_addresses(facts, directory, client)}
    for address in (*targets, *unseen):
        if address in own or not directory.is_personal(address):
            continue
        owner = directory.personal_owner(address) or employee
        if owner is not None and owner.exempt:
            continue
        how = " (envelope)" if address in unseen else ""
        yield Finding(NAME, owner, client, evidence(f"{source} → {address}{how}"), party)


def _carried_client(
    facts: MessageFacts, directory: Directory, passed_on: bool
) -> tuple[ClientRef | None, str, str | None]:
    """The client whose conversation this message carries. A resend, redirect or
    auto-forward (`passed_on`) carries its sender's own message."""
    if passed_on and facts.sender is not None:
        client = directory.client_of(facts.sender)
        if client is not None:
            how = "resent" if facts.resent_from or facts.resent_to else "auto-forwarded"
            return client, f"{how} mail from {facts.sender}", facts.sender
    if facts.forward or facts.carried_senders:
        for address in facts.carried_senders:
            client = directory.client_of(address)
            if client is not None:
                return client, f"forwarded mail from {address}", address
    return None, "", None


def _client_addresses(facts: MessageFacts, directory: Directory, client: ClientRef) -> set[str]:
    """Sending a client's mail back to that client is not a leak."""
    everyone = (*facts.all_addressees, *facts.carried_senders)
    return {a for a in everyone if (c := directory.client_of(a)) is not None and c.id == client.id}


RULE = Rule(NAME, "a client conversation forwarded or redirected to a personal address", check)
