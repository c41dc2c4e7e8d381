"""The steps of a departure or rotation. Each checks before it acts: run twice, it changes
nothing the second time (see engine.py)."""

from __future__ import annotations

from datetime import timedelta
from email.message import Message
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rolekeeper.backends.imap import ImapSource
from rolekeeper.backends.smtp import SmtpSender
from rolekeeper.backends.twilio import TwilioApi
from rolekeeper.clock import local_date
from rolekeeper.directory.queries import role_context
from rolekeeper.errors import RolekeeperError
from rolekeeper.namedbox import ensure_filters
from rolekeeper.notices import outbox
from rolekeeper.notices.render import Templates, build_message
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import table_of, transaction
from rolekeeper.store.models import (
    Client,
    Contact,
    Incident,
    Notice,
    Person,
    Role,
    RoleHolder,
)
from rolekeeper.store.upsert import insert_ignore
from rolekeeper.telephony.numbers import reroute
from rolekeeper.workflows.engine import NotYet, Step, StepContext
from rolekeeper.workflows.report import send_report

CLIENT_TO_NAMED = "client-to-named"


def _imap(ctx: StepContext) -> ImapSource:
    if ctx.settings.imap is None:
        raise RolekeeperError("this step needs [imap]")
    source = ctx.services.get("imap")
    if source is None:
        source = ctx.services["imap"] = ImapSource(ctx.settings.imap)
    assert isinstance(source, ImapSource)
    return source


def _smtp(ctx: StepContext) -> SmtpSender:
    if ctx.settings.smtp is None:
        raise RolekeeperError("this step needs [smtp]")
    return SmtpSender(ctx.settings.smtp)


def plan_roles(session: Session, ctx: StepContext) -> list[tuple[Role, Person]]:
    plan = ctx.transition(session).plan
    return [
        (session.get_one(Role, int(role_id)), session.get_one(Person, int(person_id)))
        for role_id, person_id in sorted(plan.get("roles", {}).items())
    ]


def reassign(ctx: StepContext) -> dict[str, Any]:
    """Close the leaver's holder rows of the plan's roles, open the successors'."""
    changed: dict[str, str] = {}
    with transaction(ctx.sessions) as session:
        transition = ctx.transition(session)
        for role, heir in plan_roles(session, ctx):
            current = list(
                session.scalars(
                    select(RoleHolder).where(
                        RoleHolder.role_id == role.id,
                        RoleHolder.kind == "holder",
                        RoleHolder.ended_at.is_(None),
                    )
                )
            )
            if any(row.person_id == heir.id for row in current):
                continue
            for row in current:
                row.ended_at = transition.effective_at
            session.flush()
            session.add(
                RoleHolder(
                    role_id=role.id,
                    person_id=heir.id,
                    kind="holder",
                    started_at=transition.effective_at,
                    transition_id=transition.id,
                )
            )
            changed[role.key] = heir.named_address
            record_audit(
                session,
                "rolekeeper",
                "role.holder",
                role.address,
                {"holder": heir.named_address, "transition": transition.id},
            )
        if transition.kind == "departure":
            leaver = ctx.leaver(session)
            if leaver.active:
                leaver.active = False
                record_audit(session, "rolekeeper", "person.departed", leaver.named_address, {})
    return {"reassigned": changed}


def end_coholder(ctx: StepContext) -> dict[str, Any]:
    """A pairing ends: the co-holder's row closes (its access goes with the next step)."""
    ended = []
    with transaction(ctx.sessions) as session:
        transition = ctx.transition(session)
        for role, person in plan_roles(session, ctx):
            for row in session.scalars(
                select(RoleHolder).where(
                    RoleHolder.role_id == role.id,
                    RoleHolder.person_id == person.id,
                    RoleHolder.kind == "coholder",
                    RoleHolder.ended_at.is_(None),
                )
            ):
                row.ended_at = transition.effective_at
                ended.append(f"{role.key}: {person.named_address}")
                record_audit(
                    session,
                    "rolekeeper",
                    "role.coholder.end",
                    role.address,
                    {"coholder": person.named_address},
                )
    return {"ended": ended}


def access(ctx: StepContext) -> dict[str, Any]:
    """Role mailboxes: the successors read (IMAP ACL) and send as them, the leaver no longer
    (the reconciler's desired state follows the new holder rows)."""
    from rolekeeper import reconcile

    with ctx.sessions() as session:
        keys = [role.key for role, _ in plan_roles(session, ctx)]
    changes = reconcile.run_once(ctx.sessions, ctx.settings, keys, actor="rolekeeper:handover")
    detail: dict[str, Any] = {"changes": [c.describe() for c in changes]}
    if ctx.settings.handover.delegate_named_mailbox:
        detail["delegated"] = _delegate_named(ctx)
    return detail


def _delegate_named(ctx: StepContext) -> list[str]:
    """Read access to the leaver's named mailbox for the successors (policy permitting)."""
    from rolekeeper.backends.acl import ImapAcl

    if ctx.settings.imap is None:
        raise RolekeeperError("delegating the named mailbox needs [imap]")
    with ctx.sessions() as session:
        mailbox = ctx.leaver(session).named_address
        heirs = sorted({heir.named_address for _, heir in plan_roles(session, ctx)})
    acl = ImapAcl(ctx.settings.imap)
    for heir in heirs:
        acl.set_rights(mailbox, [], heir, "lr")
    with transaction(ctx.sessions) as session:
        record_audit(session, "rolekeeper", "named.delegated", mailbox, {"to": heirs})
    return heirs


def named_mailbox(ctx: StepContext) -> dict[str, Any]:
    """Redirect client mail from the leaver's named mailbox and answer it once (Sieve)."""
    with ctx.sessions() as session:
        mailbox = ctx.leaver(session).named_address
        _, changes = ensure_filters(session, mailbox, ctx.settings)
    if changes:
        with transaction(ctx.sessions) as session:
            record_audit(session, "rolekeeper", "sieve.departure", mailbox, {"changes": changes})
    return {"sieve": changes}


def recipients(session: Session, ctx: StepContext) -> list[tuple[Contact, int]]:
    """(contact, role id) for every contact of every client of the plan's roles, and of
    every client who wrote to the leaver's named address in the last N days."""
    transition = ctx.transition(session)
    role_ids = [role.id for role, _ in plan_roles(session, ctx)]
    clients: dict[int, int] = {}
    for client_id, role_id in session.execute(
        select(Client.id, Client.role_id).where(Client.role_id.in_(role_ids))
    ):
        if role_id is not None:
            clients[client_id] = role_id
    days = ctx.settings.handover.recent_named_days
    if transition.person_id is not None and days:
        since = transition.effective_at - timedelta(days=days)
        wrote = session.execute(
            select(Client.id, Client.role_id)
            .join(Incident, Incident.client_id == Client.id)
            .where(
                Incident.person_id == transition.person_id,
                Incident.rule == CLIENT_TO_NAMED,
                Incident.detected_at >= since,
                Client.role_id.is_not(None),
            )
        ).all()
        for client_id, role_id in wrote:
            if role_id is not None:
                clients.setdefault(client_id, role_id)
    contacts = session.scalars(
        select(Contact)
        .where(Contact.client_id.in_(list(clients)), Contact.removed_at.is_(None))
        .order_by(Contact.id)
    )
    return [(contact, clients[contact.client_id]) for contact in contacts]


def channel_of(contact: Contact) -> tuple[str, str] | None:
    """Mail where there is an address; an SMS where the CRM says the only number is a
    mobile (phonenumbers cannot tell US mobiles from landlines); else nothing to send."""
    if contact.email:
        return "mail", contact.email
    if contact.phone and contact.is_mobile:
        return "sms", contact.phone
    return None


def queue_notices(ctx: StepContext) -> dict[str, Any]:
    with ctx.sessions() as session:
        rows = []
        unreachable = 0
        nonce = str(ctx.transition(session).plan.get("nonce", "0"))
        for contact, role_id in recipients(session, ctx):
            role = session.get_one(Role, role_id)
            domain = role.address.rpartition("@")[2]
            found = channel_of(contact)
            if found is None:
                unreachable += 1
                continue
            channel, recipient = found
            if channel == "sms" and ctx.settings.twilio is None:
                unreachable += 1
                continue
            rows.append(
                {
                    "transition_id": ctx.transition_id,
                    "contact_id": contact.id,
                    "channel": channel,
                    "message_id": outbox.notice_message_id(
                        ctx.transition_id, nonce, contact.id, channel, domain
                    ),
                    "status": "queued",
                    "attempts": 0,
                    "role_id": role_id,
                    "recipient": recipient,
                    "language": contact.language,
                    "updated_at": ctx.now(),
                }
            )
    with transaction(ctx.sessions) as session:
        new = insert_ignore(session, table_of(Notice), rows)
    return {"contacts": len(rows) + unreachable, "queued": new, "unreachable": unreachable}


def notice_context(session: Session, ctx: StepContext, notice: Notice) -> dict[str, Any]:
    transition = ctx.transition(session)
    contact = session.get_one(Contact, notice.contact_id)
    client = session.get_one(Client, contact.client_id)
    role = session.get_one(Role, notice.role_id)
    roles: dict[int, dict[str, Any]] = ctx.services.setdefault("role_contexts", {})
    if role.id not in roles:  # read once per role, not per notice
        roles[role.id] = role_context(session, role, ctx.settings)
    previous = transition.plan.get("previous", {}).get(str(role.id))
    leaver_id = transition.person_id or previous
    leaver = session.get(Person, leaver_id) if leaver_id else None
    return {
        **roles[role.id],
        "contact_name": contact.name,
        "client_name": client.name,
        "leaver_name": leaver.name if leaver else "",
        "effective_date": local_date(transition.effective_at, ctx.settings.organisation.timezone),
        "kind": transition.kind,
    }


def describe_notice(ctx: StepContext) -> Any:
    """What a notice says, read from the store (inside a short read)."""

    def describe(session: Session, notice: Notice) -> dict[str, Any]:
        context = notice_context(session, ctx, notice)
        return {
            "fields": context,
            "language": notice.language or ctx.settings.import_.clients.default_language,
            "recipient": notice.recipient or "",
            "message_id": notice.message_id,
        }

    return describe


def render_notice(templates: Templates) -> Any:
    """The notice as a message, from what `describe_notice` read (no store access)."""

    def render(notice: dict[str, Any]) -> Message:
        fields, language = notice["fields"], notice["language"]
        template = "rotation" if fields["kind"] == "rotation" else "transition"
        subject, body = templates.render(template, language, **fields)
        html = templates.render_html(template, language, **fields)
        return build_message(
            (fields["successor_name"], fields["role_address"]),
            [(fields["contact_name"], notice["recipient"])],
            subject,
            body,
            message_id=notice["message_id"],
            html=html,
        )

    return render


def sms_text(ctx: StepContext, templates: Templates) -> Any:
    def text(session: Session, notice: Notice) -> str:
        context = notice_context(session, ctx, notice)
        language = notice.language or ctx.settings.import_.clients.default_language
        return templates.render("transition_sms", language, **context)[1].strip()

    return text


def phones(ctx: StepContext) -> dict[str, Any]:
    """Role numbers follow the new holders: calls at once (the webhooks read the store),
    the fallback TwiML rewritten and the numbers' settings checked on Twilio."""
    if ctx.settings.twilio is None:
        return {"phones": "no [twilio] configured"}
    api = TwilioApi(ctx.settings.twilio)
    with ctx.sessions() as session:
        keys = [role.key for role, _ in plan_roles(session, ctx)]
    states = {key: len(reroute(ctx.settings, ctx.sessions, key, api)) for key in keys}
    return {"rerouted": states}


def send_notices(ctx: StepContext) -> dict[str, Any]:
    """Send what is queued, then settle: mail from the Sent folder and the journal, SMS
    from Twilio's delivery status. The step waits (NotYet, no attempt lost) while a mail
    may still be on its way or an SMS has no final status yet, so the report that follows
    names every notice that did not reach its contact."""
    templates = Templates(ctx.settings.handover.templates_dir)
    report = outbox.send_pending(
        ctx.sessions,
        ctx.settings,
        _smtp(ctx),
        _imap(ctx),
        ctx.transition_id,
        describe_notice(ctx),
        render_notice(templates),
        ctx.now,
    )
    waiting_sms = 0
    if ctx.settings.twilio is not None:
        api = TwilioApi(ctx.settings.twilio)
        outbox.send_sms_pending(
            ctx.sessions,
            ctx.settings,
            api,
            ctx.transition_id,
            sms_text(ctx, templates),
            ctx.now,
        )
        delivery = outbox.settle_sms(ctx.sessions, ctx.settings, api, ctx.transition_id, ctx.now())
        waiting_sms = delivery.waiting
    with ctx.sessions() as session:
        counts = outbox.counts(session, ctx.transition_id)
        problems = [
            f"{n.channel} {n.recipient}: {n.status}, {n.last_error or 'no detail'}"
            for n in outbox.attention(session, ctx.transition_id)
        ]
    if report.waiting:
        raise NotYet(f"{report.waiting} notice(s) may still be on their way (journal grace)")
    if waiting_sms:
        raise NotYet(f"{waiting_sms} SMS notice(s) await a final delivery status from Twilio")
    return {"outbox": counts, "problems": problems[:50]}


def report(ctx: StepContext) -> dict[str, Any]:
    return send_report(ctx, _smtp(ctx), _imap(ctx))


def steps() -> dict[str, Step]:
    return {
        "reassign": reassign,
        "phones": phones,
        "access": access,
        "end_coholder": end_coholder,
        "named_mailbox": named_mailbox,
        "queue_notices": queue_notices,
        "send_notices": send_notices,
        "report": report,
    }
