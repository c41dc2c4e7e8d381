"""What a rule is: a name, a description, and a pure check over facts and the directory."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rolekeeper.detect.directory import ClientRef, Directory, Employee
from rolekeeper.detect.facts import MessageFacts

MAX_EVIDENCE = 300


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    employee: Employee | None
    client: ClientRef | None
    evidence: str
    # The client's address in this message (the one a nudge would answer).
    client_address: str | None = None

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.rule, self.employee.id if self.employee else None)


Check = Callable[[MessageFacts, Directory], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Check
    needs_body: bool = False


def evidence(text: str) -> str:
    """The one line that matched, never more (privacy by design)."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_EVIDENCE else line[: MAX_EVIDENCE - 1] + "…"
