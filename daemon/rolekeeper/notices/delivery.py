"""What the transition outbox and the action mails share: submitting one message and
telling its outcome apart, and, after a crash, finding out from the mail itself whether a
message whose Message-ID was fixed before submission went out.

A submitted message leaves traces where a copy lands: the sender's Sent folder (where we
file one after the server accepted it) and the journal mailbox (`watch.journal_mailbox`,
a copy of all org mail). Where neither is available nothing can tell, and the caller must
not resend: the answer is UNKNOWN.
"""

from __future__ import annotations

import smtplib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from email.utils import getaddresses, parseaddr
from enum import StrEnum
from typing import Protocol

from rolekeeper.clock import as_utc
from rolekeeper.config import Settings

SENT_FOLDER = "Sent"
JOURNAL_FOLDER = "INBOX"


class Filing(Protocol):
    def has_message(self, mailbox: str, folder: str, message_id: str) -> bool: ...
    def append(self, mailbox: str, folder: str, message: bytes) -> None: ...


class Mailer(Protocol):
    def session(self) -> AbstractContextManager[smtplib.SMTP]: ...


class Verdict(StrEnum):
    FILED = "filed"  # its copy is in the Sent folder: sent and filed
    ACCEPTED = "accepted"  # the journal has it: the server took it
    WAITING = "waiting"  # the journal does not show it yet, within the grace period
    ABSENT = "absent"  # the journal does not show it after the grace period: never accepted
    UNKNOWN = "unknown"  # no journal: nothing can tell


@dataclass(frozen=True)
class Lookout:
    """Where to look for a message whose SMTP outcome was lost (a crash, a dropped line)."""

    filing: Filing | None
    journal: str | None
    grace: timedelta

    @classmethod
    def of(cls, settings: Settings, filing: Filing | None) -> Lookout:
        grace = timedelta(minutes=settings.handover.journal_grace_minutes)
        return cls(filing, settings.watch.journal_mailbox, grace)

    def in_sent(self, mailbox: str | None, message_id: str) -> bool:
        if mailbox is None or self.filing is None:
            return False
        return self.filing.has_message(mailbox, SENT_FOLDER, message_id)

    def verdict(
        self,
        message_id: str,
        sent_mailbox: str | None,
        sending_at: datetime | None,
        now: datetime,
    ) -> Verdict:
        if self.in_sent(sent_mailbox, message_id):
            return Verdict.FILED
        if self.journal is None or self.filing is None:
            return Verdict.UNKNOWN
        if self.filing.has_message(self.journal, JOURNAL_FOLDER, message_id):
            return Verdict.ACCEPTED
        if sending_at is not None and now - as_utc(sending_at) < self.grace:
            return Verdict.WAITING
        return Verdict.ABSENT


def submit(smtp: smtplib.SMTP, message: Message, data: bytes) -> tuple[bool, str] | None:
    """None when the server accepted it; else (final?, why) when it refused it, so that
    nothing was accepted. A connection lost during DATA leaves the outcome unknown: that
    propagates, and the caller keeps the message "sending" for a Lookout to settle."""
    sender = parseaddr(str(message["From"]))[1]
    recipients = [address for _, address in getaddresses([str(message["To"])])]
    try:
        smtp.sendmail(sender, recipients, data)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{r}: {c} {_text(m)}" for r, (c, m) in exc.recipients.items())
        return (all(c >= 500 for c in codes), detail)
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        return (exc.smtp_code >= 500, f"{exc.smtp_code} {_text(exc.smtp_error)}")
    return None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
