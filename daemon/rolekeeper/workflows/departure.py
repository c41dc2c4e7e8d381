"""Turn `rolekeeper depart` (or an HR drop file) into a stored transition.

The transition row is the only record of what is due: its steps are stored with it, and
the periodic job (rolekeeper.workflows.engine) runs it once its time has come, also after
the daemon was down at that time.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from rolekeeper.clock import as_utc
from rolekeeper.domain import OPEN_TRANSITION_STATUSES
from rolekeeper.errors import RolekeeperError
from rolekeeper.store.audit import record_audit
from rolekeeper.store.models import Person, Role, RoleHolder, Transition, TransitionStep

DEPARTURE_STEPS = (
    "reassign",
    "access",
    "phones",
    "named_mailbox",
    "queue_notices",
    "send_notices",
    "report",
)
UNPAIR_STEPS = ("end_coholder", "access", "phones")
ROTATION_STEPS = ("reassign", "access", "phones", "queue_notices", "send_notices", "report")


class PlanError(RolekeeperError):
    exit_code = 3


@dataclass(frozen=True)
class RolePlan:
    role_id: int
    role_key: str
    role_address: str
    successor_id: int
    successor: str


def find_person(session: Session, who: str) -> Person:
    """A person by named address (any case) or exact name."""
    found = list(
        session.scalars(
            select(Person).where(
                or_(Person.named_address == who.strip().lower(), Person.name == who)
            )
        )
    )
    if not found:
        raise PlanError(f"no person {who!r} (give the named address or the exact name)")
    if len(found) > 1:
        raise PlanError(f"{who!r} names {len(found)} people; give the named address")
    return found[0]


def held_roles(session: Session, person_id: int) -> list[Role]:
    return list(
        session.scalars(
            select(Role)
            .join(RoleHolder, RoleHolder.role_id == Role.id)
            .where(RoleHolder.person_id == person_id, RoleHolder.ended_at.is_(None))
            .order_by(Role.key)
        )
    )


def plan_departure(
    session: Session,
    leaver: str,
    successor: str | None,
    per_role: Mapping[str, str],
) -> tuple[Person, list[RolePlan]]:
    person = find_person(session, leaver)
    roles = held_roles(session, person.id)
    if not roles:
        raise PlanError(f"{person.named_address} holds no role: nothing to hand over")
    by_key = {r.key: r for r in roles}
    unknown = sorted(set(per_role) - set(by_key))
    if unknown:
        raise PlanError(f"{person.named_address} does not hold role(s) {', '.join(unknown)}")
    plans = []
    for role in roles:
        who = per_role.get(role.key, successor)
        if who is None:
            raise PlanError(f"no successor for role {role.key}: give --successor or --role")
        heir = find_person(session, who)
        if heir.id == person.id:
            raise PlanError(f"role {role.key}: the successor is the leaver")
        if not heir.active:
            raise PlanError(f"role {role.key}: {heir.named_address} is not active")
        plans.append(RolePlan(role.id, role.key, role.address, heir.id, heir.named_address))
    return person, plans


def open_transitions(session: Session, person_id: int) -> list[Transition]:
    return list(
        session.scalars(
            select(Transition).where(
                Transition.person_id == person_id,
                Transition.status.in_(OPEN_TRANSITION_STATUSES),
            )
        )
    )


def plan_rotation(
    session: Session, pairs: Sequence[tuple[str, str]], *, coholder: bool = False
) -> list[RolePlan]:
    """Roles passing to new holders (or co-holders), by role key and person."""
    plans = []
    seen: set[str] = set()
    for key, who in pairs:
        if key in seen:
            raise PlanError(f"role {key} appears twice in the plan")
        seen.add(key)
        role = session.scalars(select(Role).where(Role.key == key)).one_or_none()
        if role is None:
            raise PlanError(f"no role {key!r}")
        heir = find_person(session, who)
        if not heir.active:
            raise PlanError(f"role {key}: {heir.named_address} is not active")
        holder = current_holder_id(session, role.id)
        if holder == heir.id and not coholder:
            raise PlanError(f"role {key}: {heir.named_address} holds it already")
        plans.append(RolePlan(role.id, role.key, role.address, heir.id, heir.named_address))
    if not plans:
        raise PlanError("the plan names no role")
    return plans


def current_holder_id(session: Session, role_id: int) -> int | None:
    return session.scalar(
        select(RoleHolder.person_id).where(
            RoleHolder.role_id == role_id,
            RoleHolder.kind == "holder",
            RoleHolder.ended_at.is_(None),
        )
    )


def create_transition(
    session: Session,
    kind: str,
    person: Person | None,
    plans: Sequence[RolePlan],
    effective_at: datetime,
    created_by: str,
    extra: Mapping[str, Any] | None = None,
) -> Transition:
    # Stored as UTC: SQLite keeps the wall time of whatever zone it is given.
    effective_at = as_utc(effective_at)
    if person is not None and open_transitions(session, person.id):
        raise PlanError(
            f"{person.named_address} already has an open transition "
            "(see `rolekeeper transitions list`; cancel it first)"
        )
    plan = {
        "roles": {str(p.role_id): p.successor_id for p in plans},
        # Part of every notice's Message-ID: unique beyond this store (a rebuilt store
        # starts its transition ids at 1 again, the mailboxes keep the old notices).
        "nonce": secrets.token_hex(4),
        # Who held each role before: the notices and the report name them.
        "previous": {str(p.role_id): current_holder_id(session, p.role_id) for p in plans},
        **(extra or {}),
    }
    transition = Transition(
        kind=kind,
        person_id=person.id if person is not None else None,
        effective_at=effective_at,
        status="scheduled",
        plan=plan,
        created_by=created_by,
    )
    session.add(transition)
    session.flush()
    steps = {"departure": DEPARTURE_STEPS, "unpair": UNPAIR_STEPS}.get(kind, ROTATION_STEPS)
    for seq, name in enumerate(steps, 1):
        session.add(
            TransitionStep(transition_id=transition.id, seq=seq, name=name, status="pending")
        )
    record_audit(
        session,
        created_by,
        f"transition.{kind}",
        person.named_address if person is not None else ",".join(p.role_key for p in plans),
        {
            "transition": transition.id,
            "effective_at": effective_at.isoformat(),
            "roles": {p.role_key: p.successor for p in plans},
        },
    )
    return transition
