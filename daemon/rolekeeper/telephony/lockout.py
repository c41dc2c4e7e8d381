"""The access number's PIN lockout: toll-fraud protection kept in the store.

The access number dials out on the company's account, so its PIN is what stands between a
stranger and paid calls. Every refused PIN is a row (caller number, CallSid, time) in
``access_failures``; several webhook instances answer calls, so the count lives in the
store, not in any process. ``[twilio.webhooks]``:

- ``pin_attempts`` refusals from one caller number within ``pin_window_minutes`` lock that
  number out for ``pin_lockout_minutes`` (the row that did it carries ``locked_until``);
  a locked-out number's calls to the access number are rejected unanswered (<Reject>);
- one call may try ``pin_attempts_per_call`` PINs, then it is hung up;
- a PIN accepted clears the caller's refusals (a holder's typing slip is forgotten);
- `rolekeeper roles lockouts` lists the numbers locked out now, `roles unlock NUMBER`
  lifts one (audited).

Rows are pruned as refusals are written: those older than the window, unless they still
lock a number out. Caller ID can be spoofed, so the lockout slows a guesser that rotates
numbers only by the per-call limit and Twilio's own per-call cost; the PIN is the secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.clock import as_utc
from rolekeeper.config import TwilioWebhooksSettings
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import AccessFailure


@dataclass(frozen=True)
class Refusal:
    """A refused PIN, as counted once it is stored."""

    recent: int  # this caller's refusals within the window (since its last lockout ended)
    in_call: int  # this call's refusals
    locked_until: datetime | None  # set when this refusal locked the caller out


def locked_until(session: Session, caller: str, now: datetime) -> datetime | None:
    """When the caller's lockout ends, if it is locked out now."""
    until: datetime | None = session.scalar(
        select(func.max(AccessFailure.locked_until)).where(
            AccessFailure.caller == caller, AccessFailure.locked_until > now
        )
    )
    return as_utc(until) if until is not None else None


def has_refusals(session: Session, caller: str) -> bool:
    return (
        session.scalar(select(AccessFailure.id).where(AccessFailure.caller == caller)) is not None
    )


def refuse(
    sessions: sessionmaker[Session],
    hooks: TwilioWebhooksSettings,
    caller: str,
    call_sid: str,
    now: datetime,
) -> Refusal:
    """Store one refused PIN and count; lock the caller out when that makes
    `pin_attempts`. One transaction, so concurrent instances serialise on it."""
    window = timedelta(minutes=hooks.pin_window_minutes)
    with transaction(sessions) as session:
        session.execute(
            delete(AccessFailure).where(
                AccessFailure.at < now - window,
                or_(AccessFailure.locked_until.is_(None), AccessFailure.locked_until <= now),
            )
        )
        row = AccessFailure(caller=caller, call_sid=call_sid, at=now)
        session.add(row)
        session.flush()
        # Refusals before a lockout that has ended do not count again.
        ended = session.scalar(
            select(func.max(AccessFailure.locked_until)).where(
                AccessFailure.caller == caller, AccessFailure.locked_until <= now
            )
        )
        since = max(now - window, as_utc(ended)) if ended is not None else now - window
        recent = session.scalar(
            select(func.count()).where(
                AccessFailure.caller == caller,
                and_(AccessFailure.at >= since, AccessFailure.at <= now),
            )
        )
        in_call = session.scalar(select(func.count()).where(AccessFailure.call_sid == call_sid))
        until = None
        if int(recent or 0) >= hooks.pin_attempts:
            until = now + timedelta(minutes=hooks.pin_lockout_minutes)
            row.locked_until = until
    return Refusal(int(recent or 0), int(in_call or 0), until)


def forget(sessions: sessionmaker[Session], caller: str, now: datetime) -> None:
    """The caller entered the PIN: its refusals no longer count (a lockout still running
    cannot be, since a locked-out caller is not asked for the PIN)."""
    with transaction(sessions) as session:
        session.execute(
            delete(AccessFailure).where(
                AccessFailure.caller == caller,
                or_(AccessFailure.locked_until.is_(None), AccessFailure.locked_until <= now),
            )
        )


@dataclass(frozen=True)
class Lockout:
    caller: str
    locked_until: datetime
    refusals: int  # the caller's refused PINs still stored


def lockouts(session: Session, now: datetime) -> list[Lockout]:
    """Caller numbers locked out now, the soonest to end first."""
    until = func.max(AccessFailure.locked_until)
    rows = session.execute(
        select(AccessFailure.caller, until, func.count())
        .group_by(AccessFailure.caller)
        .having(until > now)
        .order_by(until, AccessFailure.caller)
    ).all()
    found = []
    for caller, ends, count in rows:
        assert ends is not None  # HAVING keeps only callers with a lockout running
        found.append(Lockout(caller, as_utc(ends), int(count)))
    return found


def unlock(sessions: sessionmaker[Session], caller: str, actor: str) -> int:
    """An admin lifts a caller's lockout: every refusal of that number is forgotten
    (audited). Returns how many were."""
    with transaction(sessions) as session:
        removed = session.execute(delete(AccessFailure).where(AccessFailure.caller == caller))
        count = int(getattr(removed, "rowcount", 0) or 0)
        record_audit(session, actor, "access.unlock", caller, {"refusals": count})
    return count
