"""Due work as rows: claimed once, retried with backoff, parked, recovered after a crash."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import select

from rolekeeper.clock import as_utc, utcnow
from rolekeeper.config import Settings
from rolekeeper.domain import JobStatus
from rolekeeper.duework import DueWorkRunner, JobContext, JobKind, retry_parked, schedule
from rolekeeper.store.db import transaction
from rolekeeper.store.models import DueJob
from rolekeeper.store.open import Store, open_store


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


def jobs(store: Store) -> list[DueJob]:
    with store.sessions() as session:
        return list(session.scalars(select(DueJob).order_by(DueJob.id)))


def test_due_job_runs_once_and_future_job_waits(
    sqlite_store: Store, sqlite_settings: Settings
) -> None:
    ran: list[str] = []
    kind = JobKind("test.record", lambda ctx: ran.append(ctx.key))
    now = utcnow()
    with transaction(sqlite_store.sessions) as session:
        schedule(session, "test.record", now - timedelta(hours=5), key="missed-while-down")
        schedule(session, "test.record", now + timedelta(hours=1), key="future")
        schedule(session, "other.kind", now - timedelta(hours=1), key="not-mine")
    runner = DueWorkRunner(sqlite_store.sessions, sqlite_settings, {kind.name: kind})
    assert runner.run_due() == 1
    assert runner.run_due() == 0
    assert ran == ["missed-while-down"]
    states = {j.key: j.status for j in jobs(sqlite_store)}
    assert states == {"missed-while-down": "done", "future": "pending", "not-mine": "pending"}


def test_failures_back_off_then_park_and_retry(
    sqlite_store: Store, sqlite_settings: Settings
) -> None:
    calls: list[int] = []

    def flaky(ctx: JobContext) -> None:
        calls.append(ctx.job_id)
        raise RuntimeError("server said no")

    clock = FixedClock(utcnow())
    settings = sqlite_settings.model_copy(
        update={"scheduler": sqlite_settings.scheduler.model_copy(update={"max_attempts": 3})}
    )
    runner = DueWorkRunner(
        sqlite_store.sessions, settings, {"t.flaky": JobKind("t.flaky", flaky)}, clock
    )
    with transaction(sqlite_store.sessions) as session:
        schedule(session, "t.flaky", clock.current)
    assert runner.run_due() == 1
    [job] = jobs(sqlite_store)
    assert (job.status, job.attempts, job.last_error) == (
        "pending",
        1,
        "RuntimeError: server said no",
    )
    assert as_utc(job.due_at) == clock.current + timedelta(seconds=30)
    assert runner.run_due() == 0  # not due again yet
    for _ in range(2):
        clock.current += timedelta(hours=1)
        runner.run_due()
    [job] = jobs(sqlite_store)
    assert (job.status, job.attempts) == ("parked", 3)
    clock.current += timedelta(days=1)
    assert runner.run_due() == 0  # parked stays parked
    with transaction(sqlite_store.sessions) as session:
        assert retry_parked(session, job.id, clock.current)
    runner.kinds["t.flaky"] = JobKind("t.flaky", lambda ctx: None)
    assert runner.run_due() == 1
    assert jobs(sqlite_store)[0].status == "done"
    assert len(calls) == 3


def test_recurring_job_is_seeded_once_and_reschedules_itself(
    sqlite_store: Store, sqlite_settings: Settings
) -> None:
    clock = FixedClock(utcnow())
    kind = JobKind("t.every", lambda ctx: None, every=lambda s: timedelta(hours=6))
    runner = DueWorkRunner(sqlite_store.sessions, sqlite_settings, {kind.name: kind}, clock)
    runner.seed_recurring()
    runner.seed_recurring()
    assert [j.status for j in jobs(sqlite_store)] == ["pending"]
    assert runner.run_due() == 1
    done, upcoming = jobs(sqlite_store)
    assert done.status == "done" and upcoming.status == "pending"
    assert as_utc(upcoming.due_at) == clock.current + timedelta(hours=6)


def test_claims_of_a_crashed_instance_are_freed(
    sqlite_store: Store, sqlite_settings: Settings
) -> None:
    clock = FixedClock(utcnow())
    ran: list[int] = []
    kind = JobKind("t.k", lambda ctx: ran.append(ctx.job_id))
    me = sqlite_settings.scheduler.instance_id
    with transaction(sqlite_store.sessions) as session:
        # A claim this instance held when it was killed, and one of another instance
        # whose lease ran out.
        session.add(
            DueJob(
                kind="t.k",
                key="1",
                due_at=clock.current,
                status="running",
                claimed_by=me,
                lease_until=clock.current + timedelta(hours=1),
            )
        )
        session.add(
            DueJob(
                kind="t.k",
                key="2",
                due_at=clock.current,
                status="running",
                claimed_by="b",
                lease_until=clock.current - timedelta(seconds=1),
            )
        )
        session.add(
            DueJob(
                kind="t.k",
                key="3",
                due_at=clock.current,
                status="running",
                claimed_by="c",
                lease_until=clock.current + timedelta(hours=1),
            )
        )
    runner = DueWorkRunner(sqlite_store.sessions, sqlite_settings, {kind.name: kind}, clock)
    assert runner.recover() == 1
    assert runner.run_due() == 2
    assert [j.status for j in jobs(sqlite_store)] == ["done", "done", "running"]


def test_stop_request_finishes_the_current_job_only(
    sqlite_store: Store, sqlite_settings: Settings
) -> None:
    started = threading.Event()
    release = threading.Event()
    runner: DueWorkRunner

    def slow(ctx: JobContext) -> None:
        started.set()
        release.wait(10)

    runner = DueWorkRunner(sqlite_store.sessions, sqlite_settings, {"t.s": JobKind("t.s", slow)})
    with transaction(sqlite_store.sessions) as session:
        for n in range(3):
            schedule(session, "t.s", utcnow(), key=f"j{n}")
    worker = threading.Thread(target=runner.run_due)
    worker.start()
    assert started.wait(10)
    runner.request_stop()
    release.set()
    worker.join(10)
    assert [j.status for j in jobs(sqlite_store)] == ["done", "pending", "pending"]


def test_two_instances_on_postgresql_never_run_a_job_twice(
    pg_url: str, sqlite_settings: Settings
) -> None:
    settings = sqlite_settings.model_copy(
        update={"database": sqlite_settings.database.model_copy(update={"url": pg_url})}
    )
    store = open_store(settings)
    seen: list[int] = []
    lock = threading.Lock()

    def record(ctx: JobContext) -> None:
        with lock:
            seen.append(ctx.job_id)

    try:
        with transaction(store.sessions) as session:
            for n in range(60):
                schedule(session, "t.pg", utcnow() - timedelta(seconds=1), key=f"j{n}")
        runners = [
            DueWorkRunner(
                store.sessions,
                settings.model_copy(
                    update={"scheduler": settings.scheduler.model_copy(update={"instance_id": n})}
                ),
                {"t.pg": JobKind("t.pg", record)},
            )
            for n in ("a", "b", "c")
        ]
        threads = [threading.Thread(target=r.run_due) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(seen) == sorted(set(seen)) and len(seen) == 60
        with store.sessions() as session:
            claimers = set(session.scalars(select(DueJob.claimed_by)))
            statuses = set(session.scalars(select(DueJob.status)))
        assert statuses == {JobStatus.DONE}
        assert len(claimers) >= 1
    finally:
        store.close()
