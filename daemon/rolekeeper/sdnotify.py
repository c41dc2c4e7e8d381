"""The sd_notify protocol: a datagram of KEY=VALUE lines to $NOTIFY_SOCKET.

A dozen lines of socket code, so no dependency on libsystemd; outside systemd every call
is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        address = environ.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = environ.get("WATCHDOG_USEC")
        # WATCHDOG_PID names the process meant to ping; a child must not take it over.
        owner = environ.get("WATCHDOG_PID")
        if raw and raw.isdigit() and (not owner or owner == str(os.getpid())):
            usec = int(raw)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """How often to ping: half of WatchdogSec, as systemd recommends."""
        if not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2_000_000

    def notify(self, **fields: str | int) -> bool:
        if self._address is None:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        target = self._address
        if target.startswith("@"):
            target = "\0" + target[1:]  # abstract namespace socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.connect(target)
                sock.sendall(payload)
            except OSError:
                return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(ready=1, status=status, mainpid=os.getpid())

    def reloading(self) -> bool:
        return self.notify(reloading=1, status="reloading configuration")

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def stopping(self) -> bool:
        return self.notify(stopping=1, status="stopping")

    def status(self, text: str) -> bool:
        return self.notify(status=text)
