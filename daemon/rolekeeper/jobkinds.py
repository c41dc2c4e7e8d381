"""The explicit list of due-work kinds the service runs. Later features add theirs here."""

from __future__ import annotations

import os
import time

from rolekeeper.actions import ALERT, DIGEST, NUDGE, PLAN, REDIRECTS
from rolekeeper.duework import JobContext, JobKind
from rolekeeper.maintenance import PURGE
from rolekeeper.quietwatch import QUIET
from rolekeeper.reconcile import RECONCILE
from rolekeeper.telephony.mailcopy import MAIL as TELEPHONY_MAIL
from rolekeeper.telephony.numbers import RECONCILE as TELEPHONY_RECONCILE
from rolekeeper.testhooks import TEST_HOOKS_ENV
from rolekeeper.workflows.hrdrop import HR_DROP
from rolekeeper.workflows.job import TRANSITIONS
from rolekeeper.workflows.policy import ROTATION_POLICY


def _test_sleep(ctx: JobContext) -> None:
    """Test-only: a job that takes a while, to prove SIGTERM lets it finish."""
    time.sleep(float(ctx.payload.get("seconds", 1)))


def job_kinds() -> dict[str, JobKind]:
    kinds = [
        PURGE,
        PLAN,
        ALERT,
        REDIRECTS,
        DIGEST,
        NUDGE,
        QUIET,
        TELEPHONY_MAIL,
        TELEPHONY_RECONCILE,
        TRANSITIONS,
        HR_DROP,
        ROTATION_POLICY,
        RECONCILE,
    ]
    if os.environ.get(TEST_HOOKS_ENV) == "1":
        kinds.append(JobKind("test.sleep", _test_sleep))
    return {kind.name: kind for kind in kinds}
