"""`rolekeeper depart` and `rolekeeper transitions list|show|retry|cancel|run`."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rolekeeper.clock import as_utc, utcnow
from rolekeeper.commands.common import (
    actor,
    add_json_flag,
    emit_rows,
    parse_when,
    print_json,
    settings_of,
    store_of,
)
from rolekeeper.errors import NotFoundError, RolekeeperError
from rolekeeper.notices.outbox import attention, counts
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Notice, Person, RoleHolder, Transition, TransitionStep
from rolekeeper.workflows.departure import (
    PlanError,
    RolePlan,
    create_transition,
    plan_departure,
    plan_rotation,
)
from rolekeeper.workflows.job import run_transitions_now


def _effective(value: str) -> datetime:
    return utcnow() if value == "now" else parse_when(value)


def _role_pair(value: str) -> tuple[str, str]:
    role, sep, person = value.partition("=")
    if not sep or not role or not person:
        raise argparse.ArgumentTypeError(f"{value!r}: expected ROLE=PERSON")
    return role.strip(), person.strip()


def register(sub: Any) -> None:
    p = sub.add_parser("depart", help="hand a leaving person's roles to successors")
    p.add_argument("person", help="named address or exact name of the person leaving")
    p.add_argument("--successor", help="who takes every role (unless --role says otherwise)")
    p.add_argument(
        "--role",
        action="append",
        type=_role_pair,
        default=[],
        metavar="ROLE=PERSON",
        help="give one role to another successor (repeatable)",
    )
    p.add_argument(
        "--effective", type=_effective, default="now", help="ISO 8601 time, or now (default)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, store nothing")
    add_json_flag(p)
    p.set_defaults(func=_depart)

    p = sub.add_parser("rotate", help="pass roles to new holders (a rotation), by a plan file")
    p.add_argument(
        "--plan", type=Path, required=True, help="CSV with columns role,holder (one per role)"
    )
    p.add_argument(
        "--effective", type=_effective, default="now", help="ISO 8601 time, or now (default)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, store nothing")
    add_json_flag(p)
    p.set_defaults(func=_rotate)

    p = sub.add_parser("pair", help="give a role a co-holder beside its holder")
    p.add_argument("role", help="role key")
    p.add_argument("person", help="named address or exact name of the co-holder")
    p.add_argument("--until", type=parse_when, help="end the pairing then (ISO 8601)")
    p.set_defaults(func=_pair)
    p = sub.add_parser("unpair", help="end a co-holder's pairing now")
    p.add_argument("role", help="role key")
    p.add_argument("person", help="named address or exact name of the co-holder")
    p.set_defaults(func=_unpair)

    group = sub.add_parser("transitions", help="departures and rotations").add_subparsers(
        dest="action", required=True
    )
    p = group.add_parser("list", help="list transitions")
    add_json_flag(p)
    p.set_defaults(func=_list)
    p = group.add_parser("show", help="a transition's steps and notices")
    p.add_argument("id", type=int)
    add_json_flag(p)
    p.set_defaults(func=_show)
    p = group.add_parser("retry", help="resume a parked transition")
    p.add_argument("id", type=int)
    p.set_defaults(func=_retry)
    p = group.add_parser("cancel", help="cancel a transition that has not started")
    p.add_argument("id", type=int)
    p.set_defaults(func=_cancel)
    p = group.add_parser("run", help="run the transitions that are due now, then exit")
    add_json_flag(p)
    p.set_defaults(func=_run)


def _depart(args: argparse.Namespace) -> int:
    if args.successor is None and not args.role:
        raise RolekeeperError("give --successor PERSON or --role ROLE=PERSON")
    per_role = dict(args.role)

    def plan(session: Session) -> tuple[Person | None, list[RolePlan]]:
        return plan_departure(session, args.person, args.successor, per_role)

    return _store_transition(args, "departure", plan)


def _store_transition(
    args: argparse.Namespace,
    kind: str,
    make_plan: Callable[[Session], tuple[Person | None, list[RolePlan]]],
) -> int:
    """Plan, store (unless --dry-run) and print a departure or rotation."""
    with store_of(args) as store, transaction(store.sessions) as session:
        person, plans = make_plan(session)
        shown: dict[str, Any] = {
            "kind": kind,
            "person": person.named_address if person else None,
            "effective_at": args.effective.isoformat(),
            "roles": {p.role_key: p.successor for p in plans},
        }
        if args.dry_run:
            session.rollback()
        else:
            transition = create_transition(session, kind, person, plans, args.effective, actor())
            session.flush()
            shown["transition"] = transition.id
    if args.json:
        print_json(shown)
        return 0
    who = shown["person"] or "roles"
    verb = (
        ("would hand over" if args.dry_run else "hands over")
        if person
        else ("would pass" if args.dry_run else "pass")
    )
    print(f"{who} {verb}, from {shown['effective_at']}:")
    for key, heir in shown["roles"].items():
        print(f"  {key} → {heir}")
    if not args.dry_run:
        print(f"transition {shown['transition']}: the daemon runs it when it falls due")
    return 0


def read_rotation_plan(path: Path) -> list[tuple[str, str]]:
    """(role, holder) rows of a rotation plan CSV; a bad row names its line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RolekeeperError(f"{path}: cannot be read: {exc.strerror}") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    pairs = []
    for line, row in enumerate(rows, 2):
        role, holder = (row.get("role") or "").strip(), (row.get("holder") or "").strip()
        if not role or not holder:
            raise PlanError(f"{path}:{line}: expected a role and a holder")
        pairs.append((role, holder))
    return pairs


def _rotate(args: argparse.Namespace) -> int:
    pairs = read_rotation_plan(args.plan)
    return _store_transition(
        args, "rotation", lambda session: (None, plan_rotation(session, pairs))
    )


def _pair(args: argparse.Namespace) -> int:
    """The co-holder gets access and send-as at once (the reconciler runs now when [imap] is
    configured, else at its next pass); --until stores the end as a transition that the
    daemon runs when it falls due."""
    settings = settings_of(args)
    with store_of(args) as store:
        with transaction(store.sessions) as session:
            (plan,) = plan_rotation(session, [(args.role, args.person)])
            taken = session.scalar(
                select(RoleHolder.id).where(
                    RoleHolder.role_id == plan.role_id,
                    RoleHolder.person_id == plan.successor_id,
                    RoleHolder.ended_at.is_(None),
                )
            )
            if taken is not None:
                raise PlanError(f"{plan.successor} already shares role {plan.role_key}")
            session.add(
                RoleHolder(
                    role_id=plan.role_id,
                    person_id=plan.successor_id,
                    kind="coholder",
                    started_at=utcnow(),
                )
            )
            record_audit(
                session,
                actor(),
                "role.coholder",
                plan.role_address,
                {
                    "coholder": plan.successor,
                    "until": args.until.isoformat() if args.until else None,
                },
            )
            if args.until is not None:
                end = create_transition(session, "unpair", None, [plan], args.until, actor())
                session.flush()
                print(f"the pairing ends at {args.until.isoformat()} (transition {end.id})")
        _reconcile_now(store, settings, plan.role_key)
    print(f"{plan.successor} now shares role {plan.role_key}")
    return 0


def _unpair(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    with store_of(args) as store:
        with transaction(store.sessions) as session:
            (plan,) = plan_rotation(session, [(args.role, args.person)], coholder=True)
            create_transition(session, "unpair", None, [plan], utcnow(), actor())
        results = run_transitions_now(store.sessions, settings)
    print(f"pairing ended: {results}")
    return 0


def _reconcile_now(store: Any, settings: Any, role: str) -> None:
    if settings.imap is None:
        print("no [imap]: the reconciler grants access at its next pass")
        return
    from rolekeeper import reconcile

    for change in reconcile.run_once(store.sessions, settings, [role], actor=actor()):
        print(f"  {change.describe()}")


def _list(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        rows = []
        for t in session.scalars(select(Transition).order_by(Transition.id)):
            person = session.get(Person, t.person_id) if t.person_id else None
            rows.append(
                {
                    "id": t.id,
                    "kind": t.kind,
                    "person": person.named_address if person else "",
                    "effective_at": as_utc(t.effective_at).isoformat(),
                    "status": t.status,
                    "notices": counts(session, t.id),
                }
            )
    return emit_rows(
        args,
        rows,
        [
            ("id", "ID"),
            ("kind", "KIND"),
            ("person", "PERSON"),
            ("effective_at", "EFFECTIVE"),
            ("status", "STATUS"),
            ("notices", "NOTICES"),
        ],
    )


def _show(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        t = session.get(Transition, args.id)
        if t is None:
            raise NotFoundError(f"no transition {args.id}")
        person = session.get(Person, t.person_id) if t.person_id else None
        steps = [
            {
                "step": s.name,
                "status": s.status,
                "attempts": s.attempts,
                "last_error": s.last_error,
                "detail": s.detail,
            }
            for s in session.scalars(
                select(TransitionStep)
                .where(TransitionStep.transition_id == t.id)
                .order_by(TransitionStep.seq)
            )
        ]
        unsettled = [
            {
                "notice": n.id,
                "channel": n.channel,
                "to": n.recipient,
                "status": n.status,
                "error": n.last_error,
            }
            for n in attention(session, t.id)
        ]
        # SMS notices Twilio took, whose delivery is still being followed.
        awaiting = [
            {"notice": n.id, "to": n.recipient, "sid": n.sms_sid}
            for n in session.scalars(
                select(Notice)
                .where(
                    Notice.transition_id == t.id,
                    Notice.channel == "sms",
                    Notice.status == "accepted",
                )
                .order_by(Notice.id)
            )
        ]
        data = {
            "id": t.id,
            "kind": t.kind,
            "person": person.named_address if person else None,
            "effective_at": as_utc(t.effective_at).isoformat(),
            "status": t.status,
            "plan": t.plan,
            "steps": steps,
            "notices": counts(session, t.id),
            "needs_attention": unsettled,
            "awaiting_delivery": awaiting,
        }
    if args.json:
        print_json(data)
        return 0
    print(f"transition {t.id}: {t.kind} of {data['person']}, {data['status']}")
    print(f"effective {data['effective_at']}; notices {data['notices']}")
    for s in steps:
        error = f" — {s['last_error']}" if s["last_error"] else ""
        print(f"  {s['step']:<14} {s['status']:<8} tries {s['attempts']}{error}")
    for n in unsettled:
        error = f" — {n['error']}" if n["error"] else ""
        print(f"  notice {n['notice']} ({n['channel']}) to {n['to']}: {n['status']}{error}")
    for n in awaiting:
        print(f"  notice {n['notice']} (sms) to {n['to']}: awaiting delivery status ({n['sid']})")
    return 0


def _retry(args: argparse.Namespace) -> int:
    with store_of(args) as store, transaction(store.sessions) as session:
        t = session.get(Transition, args.id)
        if t is None or t.status != "parked":
            raise NotFoundError(f"transition {args.id} is not parked")
        t.status = "running"
        session.execute(
            update(TransitionStep)
            .where(TransitionStep.transition_id == t.id, TransitionStep.status == "parked")
            .values(status="pending", attempts=0)
        )
        record_audit(session, actor(), "transition.retry", str(t.id), {})
    print(f"transition {args.id} resumes at the next pass")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with store_of(args) as store, transaction(store.sessions) as session:
        t = session.get(Transition, args.id)
        if t is None or t.status != "scheduled":
            raise NotFoundError(f"transition {args.id} is not waiting to start")
        t.status = "cancelled"
        record_audit(session, actor(), "transition.cancel", str(t.id), {})
    print(f"transition {args.id} cancelled")
    return 0


def _run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    with store_of(args) as store:
        results = run_transitions_now(store.sessions, settings)
    if args.json:
        print_json(results)
    else:
        for tid, status in results.items():
            print(f"transition {tid}: {status}")
        if not results:
            print("no transition is due")
    return 0
