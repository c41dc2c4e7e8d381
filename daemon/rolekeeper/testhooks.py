"""Test-only crash points: with ROLEKEEPER_TEST_HOOKS=1 and ROLEKEEPER_CRASH_AT=NAME[#N],
the process kills itself with SIGKILL the Nth time (default 1st) it passes point NAME.

The crash tests use this to stop the daemon exactly between two stored states; in
production the variables are unset and a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

TEST_HOOKS_ENV = "ROLEKEEPER_TEST_HOOKS"
CRASH_ENV = "ROLEKEEPER_CRASH_AT"
_passed: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec or os.environ.get(TEST_HOOKS_ENV) != "1":
        return
    wanted, _, nth = spec.partition("#")
    if wanted != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
