"""A scheduled rotation policy: every `handover.rotation_every_months`, the holders of each
group in `handover.rotation_groups` move one role along (the holder of the first role takes
the second, …, the last takes the first), through an ordinary rotation transition.

Clients get used to a role, not a person: a regular rotation keeps it so. The last rotation
the policy made is the record of when the next one is due, so a restart changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.clock import as_utc, utcnow
from rolekeeper.config import Settings
from rolekeeper.duework import JobContext, JobKind
from rolekeeper.log import get_logger
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Person, Role, Transition
from rolekeeper.workflows.departure import RolePlan, create_transition, current_holder_id

log = get_logger(__name__)
ACTOR = "rotation-policy"


def add_months(when: datetime, months: int) -> datetime:
    month0 = when.month - 1 + months
    year, month = when.year + month0 // 12, month0 % 12 + 1
    for day in range(when.day, 27, -1):  # the 31st of a short month: its last day
        try:
            return when.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return when.replace(year=year, month=month, day=min(when.day, 28))


def _plans(session: Session, groups: tuple[tuple[str, ...], ...]) -> list[RolePlan]:
    plans = []
    for group in groups:
        roles = [
            session.scalars(select(Role).where(Role.key == key)).one_or_none() for key in group
        ]
        held = [(r, current_holder_id(session, r.id)) for r in roles if r is not None]
        held = [(r, h) for r, h in held if h is not None]
        if len(held) < 2:
            continue
        for index, (role, _) in enumerate(held):
            heir_id = held[index - 1][1]
            assert heir_id is not None
            heir = session.get_one(Person, heir_id)
            plans.append(RolePlan(role.id, role.key, role.address, heir.id, heir.named_address))
    return plans


def rotate_by_policy(
    sessions: sessionmaker[Session], settings: Settings, now: datetime
) -> int | None:
    """Store the rotation that is due, if one is; returns its transition id."""
    months = settings.handover.rotation_every_months
    groups = settings.handover.rotation_groups
    if not months or not groups:
        return None
    with transaction(sessions) as session:
        last = session.scalar(
            select(Transition.created_at)
            .where(Transition.kind == "rotation", Transition.created_by == ACTOR)
            .order_by(Transition.created_at.desc())
            .limit(1)
        )
        if last is not None and add_months(as_utc(last), months) > now:
            return None
        plans = _plans(session, groups)
        if not plans:
            return None
        transition = create_transition(session, "rotation", None, plans, now, ACTOR)
        transition.created_at = now
        session.flush()
        log.info("rotation due by policy", transition=transition.id, roles=len(plans))
        return transition.id


def _job(ctx: JobContext) -> None:
    rotate_by_policy(ctx.sessions, ctx.settings, utcnow())


def _every(_: Settings) -> timedelta:
    return timedelta(hours=1)


ROTATION_POLICY = JobKind("handover.rotation_policy", _job, every=_every)
