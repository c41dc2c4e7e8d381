"""apscheduler wiring. Jobs here only wake the due-work runner and the mail scanner; the
store holds what is due, and the scan cursors what was read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

DUE_WORK_JOB = "due-work"
# Scans are cursor-driven: a skipped tick loses nothing, the next pass reads on.
MAIL_SCAN_JOB = "mail-scan"


def build_scheduler() -> BackgroundScheduler:
    # misfire_grace_time=None: a wake-up that comes late still runs (the default 1 s would
    # drop it with a "missed" warning); coalesce: several missed wake-ups run once.
    return BackgroundScheduler(
        timezone=UTC,
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
    )


def add_every(
    scheduler: BackgroundScheduler, job_id: str, run: Callable[[], object], every: float
) -> None:
    """Run at once (the pass at start), then every `every` seconds."""
    scheduler.add_job(
        run,
        "interval",
        seconds=every,
        id=job_id,
        next_run_time=datetime.now(UTC),
        replace_existing=True,
    )


def set_every(scheduler: BackgroundScheduler, job_id: str, every: float) -> None:
    scheduler.reschedule_job(job_id, trigger="interval", seconds=every)


def wake(scheduler: BackgroundScheduler, job_id: str) -> None:
    """Run a job now instead of at its next tick."""
    job = scheduler.get_job(job_id)
    if job is not None:
        job.modify(next_run_time=datetime.now(UTC))
