"""Action mails (supervisor alerts, daily digests, client nudges), each sent exactly once
where the mail can tell, never twice where it cannot.

A crash, or a lost SMTP answer, between the server accepting a mail and the store
recording it would repeat the mail on the job's retry. So, as the transition outbox does,
each mail is a row committed *before* the SMTP transaction, with its fixed Message-ID and
the exact bytes to send, and moves through stored states:

    queued → sending → sent                 (alerts and digests: no Sent folder of ours)
    queued → sending → accepted → sent      (nudges: filed in the role mailbox's Sent)

A row found "sending" on a retry is settled from the mail (notices.delivery.Lookout): in
Sent or in the journal it went out; absent from the journal after the grace period it never
did and goes again; with no journal nothing can tell, and it becomes "unknown" — a warning,
an audit entry and a mark in `rolekeeper incidents list` — never a silent resend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.config import Settings
from rolekeeper.errors import RolekeeperError
from rolekeeper.log import get_logger
from rolekeeper.notices.delivery import SENT_FOLDER, Filing, Lookout, Mailer, Verdict, submit
from rolekeeper.notices.render import wire_bytes
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import ActionMail
from rolekeeper.testhooks import crash_point

log = get_logger(__name__)
OPEN_STATES = ("queued", "sending", "accepted")
UNKNOWN_WHY = "the SMTP outcome was lost (crash or dropped connection) and no journal can tell"


class NotSettledYet(RolekeeperError):
    """A mail's copy may still be on its way to the journal: the job tries again later."""


class SmtpRefused(RolekeeperError):
    """The server refused the mail for now (nothing was accepted): the job tries again."""


@dataclass(frozen=True)
class Draft:
    """A mail an action decided to send, before it is recorded."""

    kind: str  # alert, digest, nudge
    subject: str  # incident:ID, supervisor:ID, client:ID
    message: Message
    incidents: Sequence[int]
    sent_mailbox: str | None = None  # file a copy in this mailbox's Sent folder


def record(session: Session, draft: Draft, now: datetime) -> int:
    """The mail's row, "queued", in the caller's transaction; returns its id."""
    to = getaddresses([str(draft.message["To"])])
    row = ActionMail(
        kind=draft.kind,
        subject=draft.subject,
        message_id=str(draft.message["Message-ID"]),
        recipient=to[0][1] if to else "",
        sent_mailbox=draft.sent_mailbox,
        incidents=list(draft.incidents),
        status="queued",
        content=wire_bytes(draft.message),
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def open_mails(session: Session, kind: str, subject: str | None = None) -> list[int]:
    """Mails of this kind (and subject) whose outcome is not settled yet, oldest first."""
    query = select(ActionMail.id).where(ActionMail.kind == kind, ActionMail.status.in_(OPEN_STATES))
    if subject is not None:
        query = query.where(ActionMail.subject == subject)
    return list(session.scalars(query.order_by(ActionMail.id)))


def by_message_id(session: Session, message_id: str) -> ActionMail | None:
    return session.scalar(select(ActionMail).where(ActionMail.message_id == message_id))


class ActionMailer:
    """Delivers recorded action mails, one committed state at a time."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        mailer: Mailer,
        filing: Filing | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self.mailer = mailer
        self.filing = filing
        self.lookout = Lookout.of(settings, filing)
        self.clock = clock

    def deliver(self, mail_id: int) -> str:
        """Take the mail from whatever state it was left in to a settled one; return that.
        Raises SmtpRefused or NotSettledYet (the job retries), or smtplib's and socket
        errors when the server could not be reached or the line dropped."""
        with self.sessions() as session:
            status = session.get_one(ActionMail, mail_id).status
        while status in OPEN_STATES:
            status = self._step(mail_id, status)
        return status

    def _step(self, mail_id: int, status: str) -> str:
        with self.sessions() as session:
            mail = session.get_one(ActionMail, mail_id)
            session.expunge(mail)  # read once; every change below is its own commit
        if status == "queued":
            return self._send(mail)
        if status == "accepted":
            return self._file(mail)
        return self._settle(mail)

    def _settle(self, mail: ActionMail) -> str:
        verdict = self.lookout.verdict(
            mail.message_id, mail.sent_mailbox, mail.sending_at, self.clock()
        )
        if verdict is Verdict.WAITING:
            raise NotSettledYet(f"{mail.message_id} may still be on its way to the journal")
        if verdict is Verdict.UNKNOWN:
            self._finish(mail, "unknown", UNKNOWN_WHY)
            log.warning(
                "action mail outcome unknown; not resent",
                kind=mail.kind,
                subject=mail.subject,
                message_id=mail.message_id,
            )
            return "unknown"
        if verdict is Verdict.FILED:
            self._finish(mail, "sent")
            return "sent"
        following = "accepted" if verdict is Verdict.ACCEPTED else "queued"
        log.info("action mail settled", message_id=mail.message_id, verdict=str(verdict))
        self._set(mail.id, status=following)
        return following

    def _send(self, mail: ActionMail) -> str:
        assert mail.content is not None
        message = BytesHeaderParser(policy=policy.compat32).parsebytes(mail.content)
        # A server that cannot be reached raises here, before anything is marked: "queued".
        with self.mailer.session() as smtp:
            self._set(
                mail.id,
                status="sending",
                sending_at=self.clock(),
                attempts=ActionMail.attempts + 1,
            )
            crash_point(f"{mail.kind}.sending")
            outcome = submit(smtp, message, mail.content)
            if outcome is not None:
                return self._refused(mail, *outcome)
            crash_point(f"{mail.kind}.accepted.uncommitted")
        if mail.sent_mailbox is None:
            self._finish(mail, "sent")
            return "sent"
        self._set(mail.id, status="accepted")
        return "accepted"

    def _refused(self, mail: ActionMail, final: bool, why: str) -> str:
        if final:
            self._finish(mail, "failed", why)
            log.error("action mail refused", message_id=mail.message_id, error=why)
            return "failed"
        self._set(mail.id, status="queued", last_error=why[:2000])
        raise SmtpRefused(f"{mail.recipient}: {why}")

    def _file(self, mail: ActionMail) -> str:
        crash_point(f"{mail.kind}.accepted")
        if self.filing is not None and mail.sent_mailbox is not None and mail.content:
            if not self.lookout.in_sent(mail.sent_mailbox, mail.message_id):
                self.filing.append(mail.sent_mailbox, SENT_FOLDER, mail.content)
            crash_point(f"{mail.kind}.filed.uncommitted")
        self._finish(mail, "sent")
        return "sent"

    def _set(self, mail_id: int, **values: Any) -> None:
        with transaction(self.sessions) as session:
            session.execute(
                update(ActionMail)
                .where(ActionMail.id == mail_id)
                .values(updated_at=self.clock(), **values)
            )

    def _finish(self, mail: ActionMail, status: str, why: str | None = None) -> None:
        """The settled state and its audit entry in one commit; the bytes are dropped."""
        now = self.clock()
        with transaction(self.sessions) as session:
            session.execute(
                update(ActionMail)
                .where(ActionMail.id == mail.id)
                .values(
                    status=status,
                    updated_at=now,
                    content=None,
                    last_error=why,
                    sent_at=now if status == "sent" else None,
                )
            )
            detail: dict[str, Any] = {
                "subject": mail.subject,
                "message_id": mail.message_id,
                "incidents": list(mail.incidents),
            }
            if why is not None:
                detail["why"] = why
            record_audit(session, "rolekeeper", f"{mail.kind}.{status}", mail.recipient, detail)


def actions_by_incident(session: Session, incident_ids: Sequence[int]) -> dict[int, list[str]]:
    """For each incident, its action mails as "kind status" ("alert sent", "nudge unknown")."""
    wanted = set(incident_ids)
    found: dict[int, list[str]] = {}
    if not wanted:
        return found
    rows = session.execute(
        select(ActionMail.kind, ActionMail.status, ActionMail.incidents).order_by(ActionMail.id)
    ).all()
    for kind, status, incidents in rows:
        for incident_id in incidents:
            if incident_id in wanted:
                found.setdefault(incident_id, []).append(f"{kind} {status}")
    return found
