"""The due-work job that runs transitions: every scheduler poll and once at start."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.clock import utcnow
from rolekeeper.config import Settings
from rolekeeper.duework import JobContext, JobKind, every_poll
from rolekeeper.workflows.engine import run_due
from rolekeeper.workflows.steps import steps


def run_transitions_now(sessions: sessionmaker[Session], settings: Settings) -> dict[int, str]:
    services: dict[str, object] = {}
    try:
        return run_due(sessions, settings, steps(), utcnow, services)
    finally:
        close = getattr(services.get("imap"), "close", None)
        if close is not None:
            close()


def run_transitions(ctx: JobContext) -> None:
    run_transitions_now(ctx.sessions, ctx.settings)


TRANSITIONS = JobKind("transitions.run", run_transitions, every=every_poll)
