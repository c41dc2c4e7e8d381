"""Housekeeping jobs: the retention purge."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from rolekeeper.config import Settings
from rolekeeper.domain import JobStatus
from rolekeeper.duework import JobContext, JobKind
from rolekeeper.log import get_logger
from rolekeeper.notices.actionmail import OPEN_STATES
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import rowcount, transaction
from rolekeeper.store.models import (
    ActionMail,
    ClientArrival,
    DueJob,
    Incident,
    UnreadableMessage,
)

log = get_logger(__name__)


def purge(ctx: JobContext) -> None:
    """Delete what is older than the retention periods: incidents (and their settled
    action mails), events (client arrivals, unreadable-message records) and finished jobs.
    The audit log is never purged."""
    retention = ctx.settings.retention
    incidents_before = ctx.now - timedelta(days=retention.incidents_days)
    events_before = ctx.now - timedelta(days=retention.events_days)
    jobs_before = ctx.now - timedelta(days=retention.jobs_days)
    with transaction(ctx.sessions) as session:
        incidents = rowcount(
            session.execute(delete(Incident).where(Incident.detected_at < incidents_before))
        )
        # An action mail goes with its incidents; one still open is kept until settled.
        mails = rowcount(
            session.execute(
                delete(ActionMail).where(
                    ActionMail.created_at < incidents_before,
                    ActionMail.status.not_in(OPEN_STATES),
                )
            )
        )
        events = rowcount(
            session.execute(delete(ClientArrival).where(ClientArrival.arrived_at < events_before))
        ) + rowcount(
            session.execute(
                delete(UnreadableMessage).where(UnreadableMessage.seen_at < events_before)
            )
        )
        jobs = rowcount(
            session.execute(
                delete(DueJob).where(
                    DueJob.status == JobStatus.DONE, DueJob.finished_at < jobs_before
                )
            )
        )
        record_audit(
            session,
            "rolekeeper",
            "retention.purge",
            "store",
            {
                "incidents": incidents,
                "action_mails": mails,
                "events": events,
                "jobs": jobs,
                "before": incidents_before.isoformat(),
            },
        )
    log.info("retention purge", incidents=incidents, events=events, jobs=jobs)


def _purge_every(settings: Settings) -> timedelta:
    return timedelta(hours=settings.retention.purge_every_hours)


PURGE = JobKind("maintenance.purge", purge, every=_purge_every)
