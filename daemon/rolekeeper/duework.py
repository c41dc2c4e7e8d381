"""Work that falls due at a time, kept as rows so that nothing due is lost while down.

apscheduler only wakes us; the `due_jobs` table is the record. A pass claims rows whose time
has come (row locks with SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite), runs each
handler, and marks it done, retried with backoff, or parked after too many failures.
A claim is a lease: if the process dies, the row is free again when the lease runs out,
and a restarted instance frees its own claims at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.clock import Clock, SystemClock
from rolekeeper.config import Settings
from rolekeeper.domain import JobStatus
from rolekeeper.log import get_logger
from rolekeeper.store.db import rowcount, transaction
from rolekeeper.store.models import DueJob

log = get_logger(__name__)


@dataclass(frozen=True)
class JobContext:
    job_id: int
    kind: str
    key: str
    payload: Mapping[str, Any]
    due_at: datetime
    now: datetime
    settings: Settings
    sessions: sessionmaker[Session]


@dataclass(frozen=True)
class JobKind:
    """A handler, and for recurring work when it falls due next (an interval after the
    last run, or a time of day)."""

    name: str
    handler: Callable[[JobContext], None]
    every: Callable[[Settings], timedelta] | None = None
    next_due: Callable[[Settings, datetime], datetime] | None = None

    @property
    def recurring(self) -> bool:
        return self.every is not None or self.next_due is not None

    def following(self, settings: Settings, now: datetime) -> datetime:
        if self.next_due is not None:
            return self.next_due(settings, now)
        assert self.every is not None
        return now + self.every(settings)


def schedule(
    session: Session,
    kind: str,
    due_at: datetime,
    key: str = "",
    payload: Mapping[str, Any] | None = None,
) -> DueJob:
    job = DueJob(
        kind=kind, key=key, due_at=due_at, status=JobStatus.PENDING, payload=dict(payload or {})
    )
    session.add(job)
    return job


class DueWorkRunner:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        kinds: Mapping[str, JobKind],
        clock: Clock | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.kinds = dict(kinds)
        self.clock = clock or SystemClock()
        self._stop = threading.Event()

    @property
    def instance(self) -> str:
        return self.settings.scheduler.instance_id

    def request_stop(self) -> None:
        """Finish the job in hand, start no other."""
        self._stop.set()

    def recover(self) -> int:
        """Free the claims this instance held when it last stopped (crash, SIGKILL)."""
        with transaction(self.sessions) as session:
            result = session.execute(
                update(DueJob)
                .where(DueJob.status == JobStatus.RUNNING, DueJob.claimed_by == self.instance)
                .values(status=JobStatus.PENDING, claimed_by=None, lease_until=None)
            )
            freed = rowcount(result)
        if freed:
            log.warning("freed stale claims", count=freed, instance=self.instance)
        return freed

    def seed_recurring(self) -> None:
        """Make sure every recurring kind has one pending row; harmless to repeat."""
        now = self.clock.now()
        for kind in self.kinds.values():
            if not kind.recurring:
                continue
            try:
                with transaction(self.sessions) as session:
                    exists = session.scalar(
                        select(DueJob.id).where(
                            DueJob.kind == kind.name,
                            DueJob.key == "",
                            DueJob.status.in_((JobStatus.PENDING, JobStatus.RUNNING)),
                        )
                    )
                    if exists is None:
                        first = now if kind.next_due is None else kind.following(self.settings, now)
                        schedule(session, kind.name, first)
            except IntegrityError:
                pass  # another instance seeded it first

    def run_due(self) -> int:
        """Claim and run due jobs one at a time until none is due or a stop is asked."""
        done = 0
        while not self._stop.is_set():
            claimed = self._claim_one()
            if claimed is None:
                break
            self._run(claimed)
            done += 1
        return done

    def _claim_one(self) -> JobContext | None:
        now = self.clock.now()
        lease = timedelta(seconds=self.settings.scheduler.lease_seconds)
        with transaction(self.sessions) as session:
            query = (
                select(DueJob)
                .where(
                    DueJob.kind.in_(self.kinds),
                    DueJob.due_at <= now,
                    or_(
                        DueJob.status == JobStatus.PENDING,
                        and_(DueJob.status == JobStatus.RUNNING, DueJob.lease_until < now),
                    ),
                )
                .order_by(DueJob.due_at, DueJob.id)
                .limit(1)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            job = session.scalar(query)
            if job is None:
                return None
            job.status = JobStatus.RUNNING
            job.claimed_by = self.instance
            job.lease_until = now + lease
            job.attempts += 1
            return JobContext(
                job.id,
                job.kind,
                job.key,
                dict(job.payload),
                job.due_at,
                now,
                self.settings,
                self.sessions,
            )

    def _run(self, ctx: JobContext) -> None:
        kind = self.kinds[ctx.kind]
        bound = log.bind(job=ctx.job_id, kind=ctx.kind, key=ctx.key)
        bound.info("job started", due_at=ctx.due_at.isoformat())
        try:
            kind.handler(ctx)
        except Exception as exc:  # noqa: BLE001 - one failing job must not stop the others
            self._failed(ctx, exc)
            return
        now = self.clock.now()
        with transaction(self.sessions) as session:
            job = session.get_one(DueJob, ctx.job_id)
            job.status, job.finished_at, job.lease_until, job.last_error = (
                JobStatus.DONE,
                now,
                None,
                None,
            )
            if kind.recurring:
                schedule(session, kind.name, kind.following(self.settings, now), ctx.key)
        bound.info("job done")

    def _failed(self, ctx: JobContext, exc: Exception) -> None:
        now = self.clock.now()
        limit = self.settings.scheduler.max_attempts
        with transaction(self.sessions) as session:
            job = session.get_one(DueJob, ctx.job_id)
            job.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            job.lease_until = None
            if job.attempts >= limit:
                job.status = JobStatus.PARKED
            else:
                job.status = JobStatus.PENDING
                job.due_at = now + retry_delay(job.attempts)
            status, attempts = job.status, job.attempts
        log.error(
            "job failed",
            job=ctx.job_id,
            kind=ctx.kind,
            attempts=attempts,
            status=status,
            error=f"{type(exc).__name__}: {exc}",
        )


def every_poll(settings: Settings) -> timedelta:
    """The interval of work that runs at each scheduler poll (JobKind.every)."""
    return timedelta(seconds=settings.scheduler.poll_seconds)


def bring_forward(session: Session, kind: str, now: datetime) -> None:
    """Make a pending recurring job due now (work that may have fallen due while down)."""
    session.execute(
        update(DueJob)
        .where(DueJob.kind == kind, DueJob.status == JobStatus.PENDING, DueJob.due_at > now)
        .values(due_at=now)
    )


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min … capped at one hour."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


def retry_parked(session: Session, job_id: int, now: datetime) -> bool:
    job = session.get(DueJob, job_id)
    if job is None or job.status != JobStatus.PARKED:
        return False
    job.status, job.attempts, job.due_at = JobStatus.PENDING, 0, now
    return True
