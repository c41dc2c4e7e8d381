"""The detection rules, in one explicit list. Each module: NAME, RULE, a pure check()."""

from __future__ import annotations

from rolekeeper.detect.directory import Directory
from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.rules import (
    client_to_named,
    named_to_client,
    personal_in_thread,
    private_contact,
    thread_forwarded_out,
)
from rolekeeper.detect.rules.base import Finding, Rule

MESSAGE_RULES: tuple[Rule, ...] = (
    client_to_named.RULE,
    named_to_client.RULE,
    personal_in_thread.RULE,
    thread_forwarded_out.RULE,
    private_contact.RULE,
)


def evaluate(facts: MessageFacts, directory: Directory) -> list[Finding]:
    """Every finding of every rule, one per (rule, employee) as incidents are keyed."""
    findings: dict[tuple[str, int | None], Finding] = {}
    for rule in MESSAGE_RULES:
        if rule.needs_body and facts.author_text is None:
            continue
        for finding in rule.check(facts, directory):
            findings.setdefault(finding.key, finding)
    return list(findings.values())
