"""apscheduler wiring. Jobs here only wake the due-work runner; the store holds what is due."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

DUE_WORK_JOB = "due-work"


def build_scheduler() -> BackgroundScheduler:
    # misfire_grace_time=None: a wake-up that comes late still runs (the default 1 s would
    # drop it with a "missed" warning); coalesce: several missed wake-ups run once.
    return BackgroundScheduler(
        timezone=UTC,
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
    )


def add_due_work(scheduler: BackgroundScheduler, run: Callable[[], object], every: float) -> None:
    """Run at once (the pass at start), then every `every` seconds."""
    scheduler.add_job(
        run,
        "interval",
        seconds=every,
        id=DUE_WORK_JOB,
        next_run_time=datetime.now(UTC),
        replace_existing=True,
    )


def set_due_work_interval(scheduler: BackgroundScheduler, every: float) -> None:
    scheduler.reschedule_job(DUE_WORK_JOB, trigger="interval", seconds=every)


MAIL_SCAN_JOB = "mail-scan"


def add_mail_scan(scheduler: BackgroundScheduler, run: Callable[[], object], every: float) -> None:
    """Scans are cursor-driven: a skipped tick loses nothing, the next pass reads on."""
    scheduler.add_job(
        run,
        "interval",
        seconds=every,
        id=MAIL_SCAN_JOB,
        next_run_time=datetime.now(UTC),
        replace_existing=True,
    )


def reschedule_mail_scan(scheduler: BackgroundScheduler, every: float) -> None:
    scheduler.reschedule_job(MAIL_SCAN_JOB, trigger="interval", seconds=every)


def wake_due_work(scheduler: BackgroundScheduler) -> None:
    job = scheduler.get_job(DUE_WORK_JOB)
    if job is not None:
        job.modify(next_run_time=datetime.now(UTC))
