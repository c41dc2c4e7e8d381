"""Voicemail and SMS copies mailed to the role mailbox, as due work.

The webhook only writes a row (fast, durable, and answered by whichever instance got the
request); the daemon's due-work runner sends the mail with the existing SMTP sender, with its
retries and parking. One row per Twilio resource (RecordingSid, MessageSid), so a callback
Twilio repeats is mailed once.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from rolekeeper.backends.smtp import SmtpSender
from rolekeeper.duework import JobContext, JobKind, schedule
from rolekeeper.errors import RolekeeperError
from rolekeeper.notices.render import build_message
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import DueJob, Role

MAIL_JOB = "telephony.mail"


def queue_role_mail(
    session: Session, *, role_key: str, key: str, subject: str, body: str, now: datetime
) -> bool:
    """Queue one mail to the role mailbox unless `key` was queued before; True if queued."""
    seen = session.scalar(
        select(DueJob.id).where(DueJob.kind == MAIL_JOB, DueJob.key == key).limit(1)
    )
    if seen is not None:
        return False
    schedule(session, MAIL_JOB, now, key, {"role": role_key, "subject": subject, "body": body})
    return True


def send_role_mail(ctx: JobContext) -> None:
    from rolekeeper.actions import sender_address

    settings = ctx.settings
    if settings.smtp is None:
        raise RolekeeperError("a voicemail or SMS copy is due but [smtp] is not configured")
    with ctx.sessions() as session:
        role = session.scalars(select(Role).where(Role.key == ctx.payload["role"])).one()
        name, address = role.name, role.address
    sender = sender_address(settings)
    local = re.sub(r"[^A-Za-z0-9.-]", "-", ctx.key)
    message = build_message(
        ("rolekeeper", sender),
        [(name, address)],
        str(ctx.payload["subject"]),
        str(ctx.payload["body"]),
        message_id=f"<{local}@{sender.rpartition('@')[2]}>",
    )
    SmtpSender(settings.smtp).send(message)
    with transaction(ctx.sessions) as session:
        record_audit(session, "rolekeeper", "telephony.mailed", address, {"key": ctx.key})


MAIL = JobKind(MAIL_JOB, send_role_mail)
