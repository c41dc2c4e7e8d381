"""An SMTP sink on 127.0.0.1 that records every envelope it receives, and a submission
server that also demands a login and checks the sender against a Postfix
`smtpd_sender_login_maps` file, as `reject_sender_login_mismatch` does."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

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

    def __init__(self, port: int | None = None, **smtp_options: Any) -> None:
        if port is None:
            from rolekeeper.lab.ports import free_port

            port = free_port()
        self.host = HOST
        self.port = port
        self._messages: list[ReceivedMail] = []
        self._changed = threading.Condition()
        self._controller = Controller(self, hostname=HOST, port=port, **smtp_options)
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


class SubmissionServer(SmtpSink):
    """A submission server for tests of send-as: AUTH PLAIN/LOGIN is required, and MAIL
    FROM is refused (553) unless the login owns the address by `sender_map`.

    Ownership is read from the map file at every MAIL FROM (the file the "map" send-as
    provisioner writes), with Postfix's `reject_sender_login_mismatch` reading: an address
    listed in the map may be used by its listed logins only; an address not listed, only by
    the login of the same name (what a `pcre:` map `/^(.*)$/ ${1}` after the role map gives
    on a real Postfix, as the README sets it up). AUTH goes over plain TCP on 127.0.0.1
    (`auth_require_tls=False`): the lab has no certificate and nothing leaves the machine.
    """

    def __init__(self, users: Mapping[str, str], sender_map: Path, port: int | None = None) -> None:
        self.users = dict(users)
        self.sender_map = sender_map
        self.refused: list[tuple[str, str]] = []  # (login, MAIL FROM) refused
        # aiosmtpd warns (per connection) that AUTH without TLS is unsafe; on loopback it is
        # what the lab wants, and pyproject's pytest filterwarnings silences it.
        super().__init__(
            port, authenticator=self._authenticate, auth_required=True, auth_require_tls=False
        )

    def start(self) -> SubmissionServer:
        super().start()
        return self

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        password = data.password.decode("utf-8", "replace")
        expected = self.users.get(login)
        ok = expected is not None and hmac.compare_digest(expected, password)
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def may_send_as(self, login: str, address: str) -> bool:
        from rolekeeper.provision.sendas_map import owners

        try:
            table = owners(self.sender_map.read_text(encoding="utf-8"))
        except FileNotFoundError:
            table = {}
        allowed = table.get(address.lower())
        if allowed is None:
            return login.lower() == address.lower()
        return login.lower() in allowed

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        login = str(session.auth_data or "")
        if not self.may_send_as(login, address):
            self.refused.append((login, address))
            return f"553 5.7.1 <{address}>: Sender address rejected: not owned by user {login}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"
