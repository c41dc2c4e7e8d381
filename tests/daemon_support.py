"""A real `rolekeeper run` subprocess for crash tests: started with the test hooks on, so
ROLEKEEPER_CRASH_AT=NAME[#N] makes it SIGKILL itself at a named point (rolekeeper.testhooks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from rolekeeper.config import Settings


class Daemon:
    def __init__(self, settings: Settings, log: Path, **env: str) -> None:
        self.log = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rolekeeper", "--config", str(settings.source_files[0]), "run"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ROLEKEEPER_TEST_HOOKS": "1", **env},
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.log.close()

    def crashed(self, timeout: float = 60) -> bool:
        """Wait for the crash point to kill it; True when it died of SIGKILL."""
        try:
            return self.proc.wait(timeout) == -signal.SIGKILL
        finally:
            self.proc.kill()
            self.stop()
