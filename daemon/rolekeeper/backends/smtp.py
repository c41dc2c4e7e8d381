"""Mail submission (SMTP with STARTTLS or implicit TLS, and a login): one connection per batch."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message

from rolekeeper.backends.tls import client_context
from rolekeeper.config import SmtpSettings


class SmtpSender:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    @contextmanager
    def session(self) -> Iterator[smtplib.SMTP]:
        cfg = self.settings
        context = client_context(cfg.verify_tls, cfg.ca_file)
        smtp: smtplib.SMTP
        if cfg.security == "tls":
            smtp = smtplib.SMTP_SSL(
                cfg.host, cfg.port, timeout=cfg.timeout_seconds, context=context
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds)
        with smtp:
            smtp.ehlo()
            if cfg.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if cfg.username and cfg.password is not None:
                smtp.login(cfg.username, cfg.password.get_secret_value())
            yield smtp

    def send(self, message: Message) -> None:
        """Submit one message; raises smtplib's errors when the server refuses it."""
        with self.session() as smtp:
            smtp.send_message(message)
