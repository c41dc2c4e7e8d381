"""Run transitions whose time has come, step by step, each step's outcome stored.

A periodic due-work job (and a pass at start) calls `run_due`: the transition rows, not an
in-memory scheduler, say what is due, so a departure that fell due while the daemon was
down runs when it comes back. Steps run in order; each checks before it acts, so a step
repeated after a crash changes nothing twice. A step that keeps failing is parked after
`handover.step_attempts` tries and the transition with it; `transitions retry ID` resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.config import Settings
from rolekeeper.log import get_logger
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Person, Transition, TransitionStep
from rolekeeper.testhooks import crash_point

log = get_logger(__name__)
RUNNABLE = ("scheduled", "running")


class NotYet(Exception):
    """The step cannot finish yet (mail still on its way): try again later, no attempt lost."""


@dataclass
class StepContext:
    sessions: sessionmaker[Session]
    settings: Settings
    transition_id: int
    now: Callable[[], datetime]
    services: dict[str, Any] = field(default_factory=dict)

    def transition(self, session: Session) -> Transition:
        return session.get_one(Transition, self.transition_id)

    def leaver(self, session: Session) -> Person:
        person_id = self.transition(session).person_id
        assert person_id is not None
        return session.get_one(Person, person_id)

    def outgoing(self, session: Session) -> list[Person]:
        """Who gives roles up: the leaver, or in a rotation every previous holder."""
        transition = self.transition(session)
        if transition.person_id is not None:
            return [session.get_one(Person, transition.person_id)]
        ids = sorted({int(p) for p in transition.plan.get("previous", {}).values() if p})
        return [session.get_one(Person, person_id) for person_id in ids]


Step = Callable[[StepContext], dict[str, Any] | None]


def due(session: Session, now: datetime) -> list[int]:
    return list(
        session.scalars(
            select(Transition.id)
            .where(Transition.status.in_(RUNNABLE), Transition.effective_at <= now)
            .order_by(Transition.effective_at, Transition.id)
        )
    )


def run_due(
    sessions: sessionmaker[Session],
    settings: Settings,
    steps: dict[str, Step],
    now: Callable[[], datetime],
    services: dict[str, Any] | None = None,
) -> dict[int, str]:
    with sessions() as session:
        ids = due(session, now())
    shared = services if services is not None else {}
    return {
        tid: run_transition(StepContext(sessions, settings, tid, now, shared), steps) for tid in ids
    }


def run_transition(ctx: StepContext, steps: dict[str, Step]) -> str:
    with transaction(ctx.sessions) as session:
        transition = ctx.transition(session)
        if transition.status not in RUNNABLE:
            return transition.status
        if transition.status == "scheduled":
            transition.status = "running"
            record_audit(session, "rolekeeper", "transition.started", str(transition.id), {})
        pending = list(
            session.execute(
                select(TransitionStep.id, TransitionStep.name)
                .where(
                    TransitionStep.transition_id == ctx.transition_id,
                    TransitionStep.status != "done",
                )
                .order_by(TransitionStep.seq)
            ).all()
        )
    for step_id, name in pending:
        crash_point(f"step.{name}.before")
        try:
            detail = steps[name](ctx)
        except NotYet as exc:
            log.info("step waits", transition=ctx.transition_id, step=name, why=str(exc))
            _record(ctx, step_id, "pending", None, str(exc) or None, count=False)
            return "running"
        except Exception as exc:  # noqa: BLE001 - any failure is stored: retried or parked
            parked = _failed(ctx, step_id, name, exc)
            return "parked" if parked else "running"
        _record(ctx, step_id, "done", detail, None, count=True)
        crash_point(f"step.{name}.done")
    with transaction(ctx.sessions) as session:
        transition = ctx.transition(session)
        transition.status = "done"
        transition.finished_at = ctx.now()
        record_audit(session, "rolekeeper", "transition.done", str(transition.id), {})
    log.info("transition done", transition=ctx.transition_id)
    return "done"


def _record(
    ctx: StepContext,
    step_id: int,
    status: str,
    detail: dict[str, Any] | None,
    error: str | None,
    *,
    count: bool,
) -> None:
    values: dict[str, Any] = {"status": status, "last_error": error, "updated_at": ctx.now()}
    if detail is not None:
        values["detail"] = detail
    if count:
        values["attempts"] = TransitionStep.attempts + 1
    with transaction(ctx.sessions) as session:
        session.execute(update(TransitionStep).where(TransitionStep.id == step_id).values(**values))


def _failed(ctx: StepContext, step_id: int, name: str, exc: Exception) -> bool:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    with transaction(ctx.sessions) as session:
        step = session.get_one(TransitionStep, step_id)
        step.attempts += 1
        step.last_error = error
        parked = step.attempts >= ctx.settings.handover.step_attempts
        step.status = "parked" if parked else "failed"
        if parked:
            ctx.transition(session).status = "parked"
            record_audit(
                session,
                "rolekeeper",
                "transition.parked",
                str(ctx.transition_id),
                {"step": name, "error": error},
            )
    log.warning(
        "transition step failed",
        transition=ctx.transition_id,
        step=name,
        error=error,
        parked=parked,
    )
    return parked
