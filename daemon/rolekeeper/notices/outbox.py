"""Transition notices, exactly once per contact and transition.

SMTP submission files no copy in Sent, and a crash can fall between any two of: the server
accepting a message, the store recording it, the copy in the role's Sent folder. So each
notice moves through stored states, every one committed before the next action:

    queued → sending (Message-ID fixed) → accepted (the server took it)
           → sent (its copy is in the role's Sent folder)

At the start of every pass, notices left between states are settled from the mail itself:
"accepted" ones are filed in Sent if they are not there yet; a "sending" one found in Sent
is sent; found in the journal mailbox it was accepted; with a journal and absent after
`handover.journal_grace_minutes` it was never accepted and goes again; without a journal
nothing can tell, so it is parked as "unknown" for an admin, never resent silently.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.clock import as_utc
from rolekeeper.config import Settings
from rolekeeper.log import get_logger
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Client, Contact, Notice, Role
from rolekeeper.testhooks import crash_point

log = get_logger(__name__)
SENT_FOLDER = "Sent"
OPEN_STATES = ("queued", "sending", "accepted")


class Filing(Protocol):
    def has_message(self, mailbox: str, folder: str, message_id: str) -> bool: ...
    def append(self, mailbox: str, folder: str, message: bytes) -> None: ...


class Mailer(Protocol):
    def session(self) -> AbstractContextManager[smtplib.SMTP]: ...


@dataclass
class OutboxReport:
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    waiting: int = 0  # "sending" within the journal grace period
    settled: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def notice_message_id(
    transition_id: int, nonce: str, contact_id: int, channel: str, domain: str
) -> str:
    """Stable: the same notice always has the same Message-ID, so the mail itself tells
    whether it went out."""
    return f"<rk-notice-{transition_id}.{nonce}-{contact_id}-{channel}@{domain}>"


def settle(
    sessions: sessionmaker[Session],
    settings: Settings,
    filing: Filing,
    transition_id: int,
    now: datetime,
) -> OutboxReport:
    report = OutboxReport()
    journal = settings.watch.journal_mailbox
    grace = timedelta(minutes=settings.handover.journal_grace_minutes)
    with sessions() as session:
        rows = session.execute(
            select(Notice.id, Notice.status, Notice.message_id, Notice.sending_at, Role.address)
            .join(Role, Role.id == Notice.role_id)
            .where(
                Notice.transition_id == transition_id,
                Notice.channel == "mail",
                Notice.status.in_(("sending", "accepted")),
            )
        ).all()
    for notice_id, status, message_id, sending_at, role_address in rows:
        if filing.has_message(role_address, SENT_FOLDER, message_id):
            _set(sessions, notice_id, "sent", now)
        elif status == "accepted":
            continue  # the send pass files it
        elif journal is not None and filing.has_message(journal, "INBOX", message_id):
            _set(sessions, notice_id, "accepted", now)  # the server took it; file it next
        elif journal is not None:
            if sending_at is not None and now - as_utc(sending_at) < grace:
                report.waiting += 1
                continue
            _set(sessions, notice_id, "queued", now)  # never accepted: it goes again
        else:
            _set(sessions, notice_id, "unknown", now, "crashed while sending; no journal")
            report.unknown += 1
            continue
        report.settled += 1
    return report


def _set(
    sessions: sessionmaker[Session],
    notice_id: int,
    status: str,
    now: datetime,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status == "sent":
        values["sent_at"] = now
    if error is not None:
        values["last_error"] = error[:2000]
    with transaction(sessions) as session:
        session.execute(update(Notice).where(Notice.id == notice_id).values(**values))


def send_pending(
    sessions: sessionmaker[Session],
    settings: Settings,
    mailer: Mailer,
    filing: Filing,
    transition_id: int,
    build: Callable[[Session, Notice], EmailMessage],
    clock: Callable[[], datetime],
) -> OutboxReport:
    """Send every queued notice of the transition, and file the accepted ones.

    Each state is committed before the next action; a notice's "sent" shares the
    transaction of the next notice's "sending" (one commit fewer per notice, the same
    guarantees: until it is committed the copy in Sent settles it)."""
    report = settle(sessions, settings, filing, transition_id, clock())
    per_minute = settings.handover.notices_per_minute
    interval = 60.0 / per_minute if per_minute else 0.0
    filed: int | None = None  # filed in Sent, "sent" not yet committed

    def flush_sent(session: Session) -> None:
        if filed is not None:
            _mark(session, filed, "sent", clock())

    with mailer.session() as smtp:
        for notice_id, status, recipient, role_address, message, data in _prepared(
            sessions, transition_id, build
        ):
            if status == "queued":
                with transaction(sessions) as session:
                    flush_sent(session)
                    session.execute(
                        update(Notice)
                        .where(Notice.id == notice_id)
                        .values(status="sending", sending_at=clock(), attempts=Notice.attempts + 1)
                    )
                if filed is not None:
                    filed = None
                    report.sent += 1
                    crash_point("notice.sent")
                crash_point("notice.sending")
                outcome = _submit(smtp, message, data)
                if outcome is not None:
                    final, error = outcome
                    _set(sessions, notice_id, "failed" if final else "queued", clock(), error)
                    if final:
                        report.failed += 1
                        report.problems.append(f"{recipient}: {error}")
                        continue
                    raise ConnectionError(error)  # the step is retried later
                crash_point("notice.accepted.uncommitted")
                _set(sessions, notice_id, "accepted", clock())
                crash_point("notice.accepted")
            filing.append(role_address, SENT_FOLDER, data)
            crash_point("notice.filed.uncommitted")
            if filed is not None:  # two accepted ones in a row (after a crash)
                _set(sessions, filed, "sent", clock())
                report.sent += 1
            filed = notice_id
            if interval:
                time.sleep(interval)
        if filed is not None:
            _set(sessions, filed, "sent", clock())
            report.sent += 1
            crash_point("notice.sent")
    return report


def _prepared(
    sessions: sessionmaker[Session],
    transition_id: int,
    build: Callable[[Session, Notice], EmailMessage],
    chunk: int = 200,
) -> Iterator[tuple[int, str, str | None, str, EmailMessage, bytes]]:
    """The notices to send or file, built a chunk at a time in one short read each (the
    store's transactions take the write lock, so none stays open while mail goes out).
    Each message is serialised once, with CRLF line ends as SMTP and IMAP want them: the
    same bytes go to the server and to Sent."""
    ids = list(_ids(sessions, transition_id, ("queued", "accepted")))
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        with sessions() as reader:
            # One query fills the session's identity map for the whole chunk.
            reader.execute(
                select(Notice, Contact, Client, Role)
                .join(Contact, Contact.id == Notice.contact_id)
                .join(Client, Client.id == Contact.client_id)
                .join(Role, Role.id == Notice.role_id)
                .where(Notice.id.in_(part))
            ).all()
            built = []
            for notice_id in part:
                notice = reader.get_one(Notice, notice_id)
                role = reader.get_one(Role, notice.role_id)
                message = build(reader, notice)
                built.append(
                    (
                        notice_id,
                        notice.status,
                        notice.recipient,
                        role.address,
                        message,
                        message.as_bytes(policy=message.policy.clone(linesep="\r\n")),
                    )
                )
        yield from built


def _mark(session: Session, notice_id: int, status: str, now: datetime) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status == "sent":
        values["sent_at"] = now
    session.execute(update(Notice).where(Notice.id == notice_id).values(**values))


def _ids(
    sessions: sessionmaker[Session],
    transition_id: int,
    states: tuple[str, ...],
    channel: str = "mail",
) -> Iterator[int]:
    with sessions() as session:
        ids = list(
            session.scalars(
                select(Notice.id)
                .where(
                    Notice.transition_id == transition_id,
                    Notice.channel == channel,
                    Notice.status.in_(states),
                )
                .order_by(Notice.id)
            )
        )
    yield from ids


def _submit(smtp: smtplib.SMTP, message: EmailMessage, data: bytes) -> tuple[bool, str] | None:
    """None when the server accepted it; else (final?, why). A connection lost during DATA
    leaves the outcome unknown: that propagates, the notice stays "sending", and settle
    decides from the mail."""
    sender = message["From"].addresses[0].addr_spec
    recipients = [a.addr_spec for a in message["To"].addresses]
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


def counts(session: Session, transition_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Notice.status, func.count())
        .where(Notice.transition_id == transition_id)
        .group_by(Notice.status)
    ).all()
    return {status: int(n) for status, n in rows}


def send_sms_pending(
    sessions: sessionmaker[Session],
    settings: Settings,
    api: Any,
    transition_id: int,
    text: Callable[[Session, Notice], str],
    clock: Callable[[], datetime],
) -> OutboxReport:
    """SMS notices: Twilio's Messages API has no idempotency key, so a notice whose outcome
    is unknown (a crash or a lost answer while "sending") is sent with check_first, which
    lists the role number's recent messages to the contact before sending again."""
    from rolekeeper.telephony.sms import send_notice_sms

    report = OutboxReport()
    for notice_id in _ids(sessions, transition_id, ("queued", "sending"), channel="sms"):
        with sessions() as session:
            notice = session.get_one(Notice, notice_id)
            role = session.get_one(Role, notice.role_id)
            body = text(session, notice)
            unsure = notice.status == "sending"
            since = as_utc(notice.sending_at) if notice.sending_at else clock()
        if role.number is None or notice.recipient is None:
            _set(sessions, notice_id, "failed", clock(), "the role has no number")
            report.failed += 1
            continue
        with transaction(sessions) as session:
            session.execute(
                update(Notice)
                .where(Notice.id == notice_id)
                .values(
                    status="sending",
                    sending_at=since if unsure else clock(),
                    attempts=Notice.attempts + 1,
                )
            )
        crash_point("sms.sending")
        result = send_notice_sms(
            api,
            role_number=role.number,
            to=notice.recipient,
            body=body,
            since=since - timedelta(minutes=5),
            check_first=unsure,
            messaging_service_sid=settings.twilio.messaging_service_sid
            if settings.twilio
            else None,
        )
        if result.status == "refused":
            _set(sessions, notice_id, "failed", clock(), f"{result.error_code} {result.detail}")
            report.failed += 1
            report.problems.append(f"{notice.recipient}: {result.error_code} {result.detail}")
        else:
            _set(sessions, notice_id, "sent", clock())
            report.sent += 1
    return report
