"""What rolekeeper does about live incidents: alert supervisors, redirect client mail.

A recurring job plans the actions of each new live incident once (incidents.planned_at) as
due-work rows, so an alert or a redirect survives a restart and a failing one is retried
and parked like any other job. Redirects are desired state: the job for a mailbox derives
every redirect it should have from the incidents and makes Sieve say exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased

from rolekeeper.backends.imap import ImapSource
from rolekeeper.backends.smtp import SmtpSender
from rolekeeper.clock import utcnow
from rolekeeper.config import Settings
from rolekeeper.detect.rules import MESSAGE_RULES
from rolekeeper.domain import JobStatus, pretty_number
from rolekeeper.duework import JobContext, JobKind, every_poll
from rolekeeper.errors import RolekeeperError
from rolekeeper.log import get_logger
from rolekeeper.namedbox import REDIRECTS_JOB, ensure_filters
from rolekeeper.notices.actionmail import ActionMailer, Draft, by_message_id, open_mails, record
from rolekeeper.notices.render import Templates, build_message
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import table_of, transaction
from rolekeeper.store.models import (
    Client,
    Contact,
    DueJob,
    Incident,
    Nudge,
    Person,
    Role,
)
from rolekeeper.store.upsert import insert_ignore
from rolekeeper.watch import PLAN_JOB

log = get_logger(__name__)
DESCRIPTIONS = {rule.name: rule.description for rule in MESSAGE_RULES}


def plan(ctx: JobContext) -> None:
    """Queue the actions of live incidents not planned yet."""
    policies = ctx.settings.actions.rules
    with transaction(ctx.sessions) as session:
        fresh = session.execute(
            select(Incident, Person.named_address, Person.supervisor_id)
            .outerjoin(Person, Person.id == Incident.person_id)
            .where(Incident.live, Incident.planned_at.is_(None))
            .order_by(Incident.id)
            .limit(1000)
        ).all()
        jobs: list[dict[str, Any]] = []
        for incident, address, supervisor_id in fresh:
            policy = policies.get(incident.rule)
            segment = incident.segment or ""
            if policy is not None and segment in policy.alert_at_once and supervisor_id:
                jobs.append(_job("action.alert", f"incident:{incident.id}", ctx))
            if policy is not None and segment in policy.redirect and address:
                jobs.append(_job(REDIRECTS_JOB, f"mailbox:{address}", ctx))
            if (
                policy is not None
                and segment in policy.nudge
                and incident.client_id
                and incident.client_address
            ):
                jobs.append(_job("action.nudge", f"client:{incident.client_id}", ctx))
            incident.planned_at = ctx.now
        # One pending job per key: a burst of incidents on one mailbox is one Sieve update.
        insert_ignore(session, table_of(DueJob), jobs)
    if fresh:
        log.info("actions planned", incidents=len(fresh), jobs=len(jobs))


def _job(kind: str, key: str, ctx: JobContext) -> dict[str, Any]:
    return {
        "kind": kind,
        "key": key,
        "due_at": ctx.now,
        "status": JobStatus.PENDING,
        "attempts": 0,
        "payload": {},
    }


def send_alert(ctx: JobContext) -> None:
    incident_id = int(ctx.key.removeprefix("incident:"))
    settings = ctx.settings
    _need_smtp(settings, "an alert")
    sender = sender_address(settings)
    message_id = f"<alert-{incident_id}@{sender.rpartition('@')[2]}>"
    with ctx.sessions() as session:
        known = by_message_id(session, message_id)
        mail_id = known.id if known is not None else None
    if mail_id is None:
        with transaction(ctx.sessions) as session:
            mail_id = record(session, _alert(session, settings, incident_id, message_id), ctx.now)
    with action_mailer(ctx) as mailer:
        mailer.deliver(mail_id)


def _alert(session: Session, settings: Settings, incident_id: int, message_id: str) -> Draft:
    incident = session.get_one(Incident, incident_id)
    person = session.get_one(Person, incident.person_id)
    supervisor = session.get_one(Person, person.supervisor_id)
    client = session.get(Client, incident.client_id) if incident.client_id else None
    role = session.get(Role, client.role_id) if client and client.role_id else None
    subject, body = Templates().render(
        "alert",
        settings.actions.language,
        supervisor_name=supervisor.name,
        person_name=person.name,
        person_address=person.named_address,
        rule_description=DESCRIPTIONS.get(incident.rule, incident.rule),
        client_name=client.name if client else "?",
        client_id=client.crm_id if client else "?",
        segment=incident.segment or "?",
        evidence=incident.evidence,
        when=incident.detected_at.isoformat(timespec="minutes"),
        role_address=role.address if role else None,
    )
    message = build_message(
        ("rolekeeper", sender_address(settings)),
        [(supervisor.name, supervisor.named_address)],
        subject,
        body,
        message_id=message_id,
    )
    return Draft("alert", f"incident:{incident_id}", message, [incident_id])


@contextmanager
def action_mailer(ctx: JobContext) -> Iterator[ActionMailer]:
    """SMTP for sending; IMAP (when configured) to file nudges in Sent and to read the
    journal after a crash."""
    assert ctx.settings.smtp is not None
    filing = ImapSource(ctx.settings.imap) if ctx.settings.imap is not None else None
    try:
        yield ActionMailer(
            ctx.sessions, ctx.settings, SmtpSender(ctx.settings.smtp), filing, utcnow
        )
    finally:
        if filing is not None:
            filing.close()


def sender_address(settings: Settings) -> str:
    if settings.actions.from_address:
        return settings.actions.from_address
    domains = settings.organisation.domains
    return f"rolekeeper@{domains[0] if domains else 'localhost'}"


def apply_redirects(ctx: JobContext) -> None:
    mailbox = ctx.key.removeprefix("mailbox:")
    with ctx.sessions() as session:
        redirects, changes = ensure_filters(session, mailbox, ctx.settings)
    if changes:
        with transaction(ctx.sessions) as session:
            record_audit(
                session,
                "rolekeeper",
                "sieve.redirects",
                mailbox,
                {"changes": changes, "roles": [r.target for r in redirects]},
            )
        log.info("redirects set", mailbox=mailbox, changes=changes)


def send_digests(ctx: JobContext) -> None:
    """Each supervisor gets one mail listing live incidents of their people not yet alerted.

    An incident is marked digested in the commit that records its digest, before the mail
    goes out: a digest left open by a crash is settled first, never rebuilt."""
    settings = ctx.settings
    with ctx.sessions() as session:
        left_open = open_mails(session, "digest")
    if left_open:
        _need_smtp(settings, "a digest")
        with action_mailer(ctx) as mailer:
            for mail_id in left_open:
                mailer.deliver(mail_id)
    drafts = _digests(ctx)
    if not drafts:
        return
    _need_smtp(settings, "a digest")
    with action_mailer(ctx) as mailer:
        for draft in drafts:
            with transaction(ctx.sessions) as session:
                mail_id = record(session, draft, ctx.now)
                session.execute(
                    update(Incident)
                    .where(Incident.id.in_(list(draft.incidents)))
                    .values(digested_at=ctx.now)
                )
            mailer.deliver(mail_id)


def _need_smtp(settings: Settings, what: str) -> None:
    if settings.smtp is None:
        raise RolekeeperError(f"{what} is due but [smtp] is not configured")


def _digests(ctx: JobContext) -> list[Draft]:
    settings = ctx.settings
    policies = settings.actions.rules
    supervisor = aliased(Person)
    with ctx.sessions() as session:
        rows = session.execute(
            select(Incident, Person, supervisor, Client)
            .join(Person, Person.id == Incident.person_id)
            .join(supervisor, supervisor.id == Person.supervisor_id)
            .outerjoin(Client, Client.id == Incident.client_id)
            .where(
                Incident.live,
                Incident.planned_at.is_not(None),
                Incident.digested_at.is_(None),
            )
            .order_by(Incident.id)
        ).all()
    by_supervisor: dict[int, tuple[Person, list[dict[str, Any]], list[int]]] = {}
    for incident, person, boss, client in rows:
        policy = policies.get(incident.rule)
        if policy is not None and (incident.segment or "") in policy.alert_at_once:
            continue  # already alerted at once
        _, items, ids = by_supervisor.setdefault(boss.id, (boss, [], []))
        items.append(
            {
                "person_name": person.name,
                "client_name": client.name if client else "?",
                "segment": incident.segment or "?",
                "rule_description": DESCRIPTIONS.get(incident.rule, incident.rule),
                "evidence": incident.evidence,
            }
        )
        ids.append(incident.id)
    sender = sender_address(settings)
    templates = Templates()
    day = ctx.now.date().isoformat()
    drafts = []
    for boss, items, ids in by_supervisor.values():
        subject, body = templates.render(
            "digest", settings.actions.language, supervisor_name=boss.name, items=items
        )
        message = build_message(
            ("rolekeeper", sender),
            [(boss.name, boss.named_address)],
            subject,
            body,
            message_id=f"<digest-{day}-{boss.id}-{ids[-1]}@{sender.rpartition('@')[2]}>",
        )
        drafts.append(Draft("digest", f"supervisor:{boss.id}", message, ids))
    return drafts


def send_nudge(ctx: JobContext) -> None:
    """At most one nudge per client in `nudge_every_days`, to the address that wrote.

    The nudge row (which the once-per-N-days rule counts) is committed with its mail's,
    before the mail goes out; a nudge left open by a crash is settled before anything else."""
    client_id = int(ctx.key.removeprefix("client:"))
    subject = f"client:{client_id}"
    with ctx.sessions() as session:
        left_open = open_mails(session, "nudge", subject)
    if left_open:
        _need_smtp(ctx.settings, "a nudge")
        with action_mailer(ctx) as mailer:
            for mail_id in left_open:
                mailer.deliver(mail_id)
        return
    with transaction(ctx.sessions) as session:
        nudge = _nudge(session, ctx, client_id)
        if nudge is None:
            return
        draft, incident_id = nudge
        mail_id = record(session, draft, ctx.now)
        session.add(
            Nudge(
                client_id=client_id,
                address=_recipient(draft),
                incident_id=incident_id,
                message_id=str(draft.message["Message-ID"]),
                sent_at=ctx.now,
            )
        )
    with action_mailer(ctx) as mailer:
        mailer.deliver(mail_id)


def _recipient(draft: Draft) -> str:
    return getaddresses([str(draft.message["To"])])[0][1]


def _nudge(session: Session, ctx: JobContext, client_id: int) -> tuple[Draft, int] | None:
    """The nudge due to this client, or None (one was sent lately, or nothing to answer)."""
    settings = ctx.settings
    since = ctx.now - timedelta(days=settings.actions.nudge_every_days)
    recent = session.scalar(
        select(Nudge.id).where(Nudge.client_id == client_id, Nudge.sent_at >= since)
    )
    if recent is not None:
        return None
    incident = session.scalars(
        select(Incident)
        .where(
            Incident.client_id == client_id,
            Incident.live,
            Incident.client_address.is_not(None),
        )
        .order_by(Incident.id.desc())
        .limit(1)
    ).first()
    client = session.get_one(Client, client_id)
    role = session.get(Role, client.role_id) if client.role_id else None
    if incident is None or incident.client_address is None or role is None:
        return None  # nothing to answer, or no role to point the client to
    contact = session.scalars(
        select(Contact).where(
            Contact.client_id == client_id, Contact.email == incident.client_address
        )
    ).first()
    _need_smtp(settings, "a nudge")
    language = contact.language if contact else settings.import_.clients.default_language
    subject, body = Templates().render(
        "nudge",
        language,
        contact_name=contact.name if contact else "",
        organisation=settings.organisation.name,
        role_name=role.name,
        role_address=role.address,
        role_number=pretty_number(role.number) if role.number else None,
    )
    domain = role.address.rpartition("@")[2]
    message = build_message(
        (role.name, role.address),
        [(contact.name if contact else "", incident.client_address)],
        subject,
        body,
        message_id=f"<nudge-{client_id}-{incident.id}@{domain}>",
    )
    # Sent from the role mailbox: its copy goes in the role's Sent, as notices' do.
    sent_mailbox = role.address if settings.imap is not None else None
    draft = Draft("nudge", f"client:{client_id}", message, [incident.id], sent_mailbox)
    return draft, incident.id


def next_digest(settings: Settings, now: datetime) -> datetime:
    """The next digest_time in the organisation's time zone, as UTC."""
    zone = ZoneInfo(settings.organisation.timezone)
    hour, minute = (int(part) for part in settings.actions.digest_time.split(":"))
    local = now.astimezone(zone)
    due = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due <= local:
        due = (local + timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return due.astimezone(UTC)


PLAN = JobKind(PLAN_JOB, plan, every=every_poll)
ALERT = JobKind("action.alert", send_alert)
REDIRECTS = JobKind(REDIRECTS_JOB, apply_redirects)
DIGEST = JobKind("action.digest", send_digests, next_due=next_digest)
NUDGE = JobKind("action.nudge", send_nudge)
