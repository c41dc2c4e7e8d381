"""Rule 6 as a recurring job: VIP and key clients whose mail to their role stopped."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.clock import as_utc
from rolekeeper.config import Settings
from rolekeeper.detect.quiet import NAME, WINDOW, quiet_clients
from rolekeeper.domain import WATCHED_SEGMENTS, HolderKind
from rolekeeper.duework import JobContext, JobKind
from rolekeeper.log import get_logger
from rolekeeper.store.db import table_of, transaction
from rolekeeper.store.models import Client, ClientArrival, Incident, RoleHolder
from rolekeeper.store.upsert import insert_ignore

log = get_logger(__name__)


def evaluate_quiet(ctx: JobContext) -> None:
    found = record_quiet_clients(ctx.sessions, ctx.settings, ctx.now, live=True)
    if found:
        log.info("key clients gone quiet", new_warnings=found)


def record_quiet_clients(
    factory: sessionmaker[Session], settings: Settings, now: datetime, *, live: bool
) -> int:
    """Store one warning per (client, last arrival); returns how many are new."""
    with factory() as session:
        clients = {
            c.id: c
            for c in session.scalars(
                select(Client).where(Client.segment.in_([s.value for s in WATCHED_SEGMENTS]))
            )
        }
        arrivals: dict[int, list[datetime]] = defaultdict(list)
        for client_id, at in session.execute(
            select(ClientArrival.client_id, ClientArrival.arrived_at).where(
                ClientArrival.client_id.in_(clients),
                ClientArrival.arrived_at >= now - WINDOW,
                ClientArrival.arrived_at <= now,  # a replay as of a past date sees its past
            )
        ).all():
            arrivals[client_id].append(as_utc(at))
        holders = dict(
            session.execute(
                select(RoleHolder.role_id, RoleHolder.person_id).where(
                    RoleHolder.ended_at.is_(None), RoleHolder.kind == HolderKind.HOLDER
                )
            ).all()
        )
    verdicts = quiet_clients(arrivals, now, settings.detect.quiet_factor)
    rows = []
    for verdict in verdicts:
        client = clients[verdict.client_id]
        holder = holders.get(client.role_id) if client.role_id else None
        rows.append(
            {
                "rule": NAME,
                "message_key": _key(client.id, verdict.last_arrival, now, live),
                "person_id": holder,
                "person_key": holder or 0,
                "client_id": client.id,
                "segment": client.segment,
                "evidence": (
                    f"no mail for {verdict.silent_days:.0f} days; usually every "
                    f"{verdict.usual_gap_days:.1f} days (last {verdict.last_arrival.date()})"
                ),
                "client_address": None,
                "detected_at": now,
                "status": "open",
                "live": live,
                "source": "quiet-client evaluator",
                "message_date": verdict.last_arrival,
            }
        )
    with transaction(factory) as session:
        return insert_ignore(session, table_of(Incident), rows)


def _key(client_id: int, last_arrival: datetime, now: datetime, live: bool) -> str:
    """One warning per (client, last arrival); a replay's warnings are keyed apart, so that
    replaying the past never stands in for a live warning of the same silence."""
    key = f"quiet:{client_id}:{last_arrival.isoformat()}"
    return key if live else f"{key}:as-of:{now.date().isoformat()}"


def _every(settings: Settings) -> timedelta:
    return timedelta(hours=6)


QUIET = JobKind("detect.quiet", evaluate_quiet, every=_every)
