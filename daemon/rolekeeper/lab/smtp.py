"""An SMTP sink on 127.0.0.1 that records every envelope it receives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    """One envelope; `mail_from` is as aiosmtpd gives it, "<>" for the null sender."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


class SmtpSink:
    """aiosmtpd in a thread; `messages` is what arrived, in order.

    aiosmtpd 1.4.6 cannot bind port 0, so a free port is picked first.
    """

    def __init__(self, port: int | None = None) -> None:
        if port is None:
            from rolekeeper.lab.ports import free_port

            port = free_port()
        self.host = HOST
        self.port = port
        self._messages: list[ReceivedMail] = []
        self._changed = threading.Condition()
        self._controller = Controller(self, hostname=HOST, port=port)
        self._running = False
        # Called with each message before it is answered (rolekeeper.lab.relay).
        self.relay: Callable[[ReceivedMail], None] | None = None

    # aiosmtpd handler hook: runs in the controller's event-loop thread.
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if not content and isinstance(envelope.content, bytes):
            content = envelope.content
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=content,
        )
        if self.relay is not None:
            self.relay(mail)
        with self._changed:
            self._messages.append(mail)
            self._changed.notify_all()
        return "250 OK"

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._changed:
            return list(self._messages)

    def clear(self) -> None:
        with self._changed:
            self._messages.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least `count` messages arrived; return them all or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"SMTP sink on port {self.port}: {len(self._messages)} message(s) "
                        f"after {timeout} s, wanted {count}"
                    )
                self._changed.wait(left)
            return list(self._messages)

    def start(self) -> SmtpSink:
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._controller.stop()
            self._running = False

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
