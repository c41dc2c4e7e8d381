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

SMS notices have no Sent folder; Twilio's Message is their record. Accepted by Twilio, one
stays "accepted" with its Message SID, and every pass (`settle_sms`) asks Twilio where it
got to until that is final:

    queued → sending → accepted (Message SID stored) → sent     delivered, or "sent" for
                                                                 handover.sms_sent_grace_minutes
                                                     → failed   undelivered/failed/canceled,
                                                                 with Twilio's error code
                                                     → unknown  nothing final after
                                                                 handover.sms_delivery_timeout_minutes

None of these sends anything again.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import Message
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.clock import as_utc
from rolekeeper.config import Settings
from rolekeeper.log import get_logger
from rolekeeper.notices.delivery import (
    SENT_FOLDER,
    Filing,
    Lookout,
    Mailer,
    Verdict,
    submit,
)
from rolekeeper.notices.render import wire_bytes
from rolekeeper.store.db import reading, transaction
from rolekeeper.store.models import Client, Contact, Notice, Role
from rolekeeper.testhooks import crash_point

log = get_logger(__name__)
OPEN_STATES = ("queued", "sending", "accepted")


@dataclass
class OutboxReport:
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    waiting: int = 0  # "sending" within the journal grace; SMS awaiting a final status
    accepted: int = 0  # SMS taken by Twilio in this pass (their delivery is followed)
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
    lookout = Lookout.of(settings, filing)
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
        if status == "accepted":
            if lookout.in_sent(role_address, message_id):
                _set(sessions, notice_id, "sent", now)
                report.settled += 1
            continue  # else the send pass files it
        verdict = lookout.verdict(message_id, role_address, sending_at, now)
        if verdict is Verdict.WAITING:
            report.waiting += 1
            continue
        if verdict is Verdict.UNKNOWN:
            _set(sessions, notice_id, "unknown", now, "crashed while sending; no journal")
            report.unknown += 1
            continue
        # FILED: sent; ACCEPTED: the server took it, file it next; ABSENT: it goes again.
        _set(sessions, notice_id, SETTLED_AS[verdict], now)
        report.settled += 1
    return report


SETTLED_AS = {Verdict.FILED: "sent", Verdict.ACCEPTED: "accepted", Verdict.ABSENT: "queued"}


def _set(
    sessions: sessionmaker[Session],
    notice_id: int,
    status: str,
    now: datetime,
    error: str | None = None,
) -> None:
    with transaction(sessions) as session:
        _mark(session, [notice_id], status, now, error)


def _mark(
    session: Session,
    notice_ids: Sequence[int],
    status: str,
    now: datetime,
    error: str | None = None,
) -> None:
    """One UPDATE moves these notices to `status` (inside the caller's transaction)."""
    if not notice_ids:
        return
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status == "sent":
        values["sent_at"] = now
    elif status == "accepted":
        values["accepted_at"] = now
    if error is not None:
        values["last_error"] = error[:2000]
    session.execute(update(Notice).where(Notice.id.in_(list(notice_ids))).values(**values))


def send_pending(
    sessions: sessionmaker[Session],
    settings: Settings,
    mailer: Mailer,
    filing: Filing,
    transition_id: int,
    describe: Callable[[Session, Notice], dict[str, Any]],
    render: Callable[[dict[str, Any]], Message],
    clock: Callable[[], datetime],
) -> OutboxReport:
    """Send every queued notice of the transition, and file the accepted ones.

    Notices go in small groups: one commit marks a group "sending", each is submitted, one
    commit marks the accepted ones "accepted", each is filed in Sent, and their "sent" is
    committed with the next group's "sending". Every notice's state is thus committed
    before its next action, as one at a time would, at a fraction of the commits (on
    SQLite each is a disk flush). With a rate limit the groups are single notices."""
    report = settle(sessions, settings, filing, transition_id, clock())
    ids = list(_ids(sessions, transition_id, ("queued", "accepted")))
    if not ids:
        return report  # no connection to the server when there is nothing to send
    per_minute = settings.handover.notices_per_minute
    interval = 60.0 / per_minute if per_minute else 0.0
    group = 1 if interval else GROUP
    filed: list[int] = []  # in Sent, "sent" not committed yet
    with mailer.session() as smtp:
        prepared = _prepared(sessions, ids, describe, render)
        while batch := list(itertools.islice(prepared, group)):
            queued = [item for item in batch if item[1] == "queued"]
            with transaction(sessions) as session:
                now = clock()
                _mark(session, filed, "sent", now)
                if queued:
                    session.execute(
                        update(Notice)
                        .where(Notice.id.in_([item[0] for item in queued]))
                        .values(status="sending", sending_at=now, attempts=Notice.attempts + 1)
                    )
            _count_sent(report, filed)
            filed = []
            accepted = [item for item in batch if item[1] == "accepted"]
            for position, item in enumerate(queued):
                notice_id, _, recipient, _, message, data = item
                crash_point("notice.sending")
                outcome = submit(smtp, message, data)
                if outcome is not None:
                    final, error = outcome
                    if final:
                        _set(sessions, notice_id, "failed", clock(), error)
                        report.failed += 1
                        report.problems.append(f"{recipient}: {error}")
                        continue
                    # The server is in trouble: record what it took, hand back the rest.
                    later = [other[0] for other in queued[position:]]
                    _accepted_and_back(sessions, [a[0] for a in accepted], later, clock())
                    raise ConnectionError(error)  # the step is retried later
                crash_point("notice.accepted.uncommitted")
                accepted.append(item)
            with transaction(sessions) as session:
                _mark(session, [item[0] for item in accepted], "accepted", clock())
            for notice_id, _, _, role_address, _, data in accepted:
                crash_point("notice.accepted")
                filing.append(role_address, SENT_FOLDER, data)
                crash_point("notice.filed.uncommitted")
                filed.append(notice_id)
                if interval:
                    time.sleep(interval)
        if filed:
            with transaction(sessions) as session:
                _mark(session, filed, "sent", clock())
            _count_sent(report, filed)
    return report


def _count_sent(report: OutboxReport, filed: list[int]) -> None:
    for _ in filed:
        report.sent += 1
        crash_point("notice.sent")


GROUP = 20  # notices per group of commits (see send_pending)


def _accepted_and_back(
    sessions: sessionmaker[Session], accepted: list[int], unsent: list[int], now: datetime
) -> None:
    with transaction(sessions) as session:
        _mark(session, accepted, "accepted", now)
        _mark(session, unsent, "queued", now, "the server refused for now")


Prepared = tuple[int, str, str | None, str, Message, bytes]


def _prepared(
    sessions: sessionmaker[Session],
    ids: list[int],
    describe: Callable[[Session, Notice], dict[str, Any]],
    render: Callable[[dict[str, Any]], Message],
    chunk: int = 100,
) -> Iterator[Prepared]:
    """The notices to send or file, in order, a chunk at a time: one short read each
    (read-only, so it never holds the write lock), then rendered outside any transaction.
    Each message is serialised once; the same bytes go to the server and to Sent.

    Rendering stays in this thread: a second one would make every socket wait of the
    sender also wait for the interpreter lock, which costs more than rendering itself."""
    readers = reading(sessions)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        with readers() as reader:
            # One query fills the session's identity map for the whole chunk.
            reader.execute(
                select(Notice, Contact, Client, Role)
                .join(Contact, Contact.id == Notice.contact_id)
                .join(Client, Client.id == Contact.client_id)
                .join(Role, Role.id == Notice.role_id)
                .where(Notice.id.in_(part))
            ).all()
            read = []
            for notice_id in part:
                notice = reader.get_one(Notice, notice_id)
                role = reader.get_one(Role, notice.role_id)
                read.append(
                    (
                        notice_id,
                        notice.status,
                        notice.recipient,
                        role.address,
                        describe(reader, notice),
                    )
                )
        for notice_id, status, recipient, address, context in read:
            message = render(context)
            yield (notice_id, status, recipient, address, message, wire_bytes(message))


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
    lists the role number's recent messages to the contact before sending again.

    A notice Twilio takes is "accepted" with its Message SID, not "sent": whether it
    reaches the contact shows later (`settle_sms`)."""
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
        if result.status == "refused" or result.sid is None:
            _set(sessions, notice_id, "failed", clock(), result.error)
            report.failed += 1
            report.problems.append(f"{notice.recipient}: {result.error}")
        else:
            crash_point("sms.accepted.uncommitted")
            with transaction(sessions) as session:
                _mark(session, [notice_id], "accepted", clock())
                session.execute(
                    update(Notice).where(Notice.id == notice_id).values(sms_sid=result.sid)
                )
            report.accepted += 1
    return report


def settle_sms(
    sessions: sessionmaker[Session],
    settings: Settings,
    api: Any,
    transition_id: int,
    now: datetime,
) -> OutboxReport:
    """Ask Twilio where each accepted SMS notice got to; settle those whose status is final.

    "delivered" (or "read") is sent; "sent" (handed to the carrier) is sent too once
    `handover.sms_sent_grace_minutes` passed since Twilio accepted it, since many carriers
    return no delivery receipt; undelivered, failed or canceled is failed, with Twilio's
    error code (30034 and 21610 named); anything else after
    `handover.sms_delivery_timeout_minutes` is unknown. The rest count as waiting. Twilio
    unreachable: the rest of this pass waits (the timeout still bounds it). Nothing here
    sends a message. See rolekeeper.telephony.sms for which statuses are final."""
    from rolekeeper.backends.twilio import TwilioRefused, TwilioUnavailable
    from rolekeeper.telephony.sms import notice_sms_delivery

    report = OutboxReport()
    grace = timedelta(minutes=settings.handover.sms_sent_grace_minutes)
    limit = timedelta(minutes=settings.handover.sms_delivery_timeout_minutes)
    with sessions() as session:
        rows = session.execute(
            select(
                Notice.id, Notice.recipient, Notice.sms_sid, Notice.accepted_at, Notice.sending_at
            )
            .where(
                Notice.transition_id == transition_id,
                Notice.channel == "sms",
                Notice.status == "accepted",
            )
            .order_by(Notice.id)
        ).all()
    reachable = True
    for notice_id, recipient, sid, accepted_at, sending_at in rows:
        since = as_utc(accepted_at or sending_at or now)
        age = now - since
        last = "no answer from Twilio"
        if sid is None:  # nothing to ask Twilio about
            _set(sessions, notice_id, "unknown", now, "accepted, but no Message SID was kept")
            report.unknown += 1
            continue
        if reachable:
            try:
                result = notice_sms_delivery(api, sid)
            except TwilioUnavailable as exc:
                log.warning("twilio unreachable: SMS delivery checked later", error=str(exc))
                reachable = False
            except TwilioRefused as exc:
                last = str(exc)
            else:
                if result.status == "refused":
                    _set(sessions, notice_id, "failed", now, result.error)
                    report.failed += 1
                    report.problems.append(f"{recipient}: {result.error}")
                    log.warning(
                        "notice SMS not delivered", notice=notice_id, code=result.error_code
                    )
                    continue
                if result.status == "delivered" or (result.detail == "sent" and age >= grace):
                    _set(sessions, notice_id, "sent", now)
                    report.sent += 1
                    continue
                last = f"Twilio's last status: {result.detail}"
        if age >= limit:
            minutes = f"{limit.total_seconds() / 60:g}"
            error = f"no final delivery status after {minutes} minutes ({last})"
            _set(sessions, notice_id, "unknown", now, error)
            report.unknown += 1
            report.problems.append(f"{recipient}: {error}")
            continue
        report.waiting += 1
    return report


def attention(session: Session, transition_id: int) -> list[Notice]:
    """The transition's notices that did not reach their contact (failed) or may not have
    (unknown), in order: what the report and `transitions show` name."""
    return list(
        session.scalars(
            select(Notice)
            .where(
                Notice.transition_id == transition_id,
                Notice.status.in_(("failed", "unknown")),
            )
            .order_by(Notice.id)
        )
    )
