"""The handover report to the leaver's supervisor: every client with its segment and notice
status, and the clients at risk (incidents involving the leaver lately), VIP and key first,
so that the supervisor can meet them."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rolekeeper.backends.imap import ImapSource
from rolekeeper.backends.smtp import SmtpSender
from rolekeeper.clock import local_date
from rolekeeper.notices.render import Templates, build_message
from rolekeeper.store.models import Client, Contact, Incident, Notice, Person, Role
from rolekeeper.workflows.engine import StepContext

SEGMENT_ORDER = {"vip": 0, "key": 1, "regular": 2, "minor": 3}


def report_context(session: Session, ctx: StepContext) -> dict[str, Any]:
    transition = ctx.transition(session)
    outgoing = ctx.outgoing(session)
    plan = transition.plan.get("roles", {})
    roles = {int(r): session.get_one(Role, int(r)) for r in plan}
    heirs = {int(r): session.get_one(Person, int(p)) for r, p in plan.items()}
    notices: dict[int, Counter[str]] = defaultdict(Counter)
    for client_id, status, n in session.execute(
        select(Contact.client_id, Notice.status, func.count())
        .join(Contact, Contact.id == Notice.contact_id)
        .where(Notice.transition_id == transition.id)
        .group_by(Contact.client_id, Notice.status)
    ):
        notices[client_id][status] += int(n)
    client_ids = set(notices) | set(
        session.scalars(select(Client.id).where(Client.role_id.in_(list(roles))))
    )
    clients: list[dict[str, Any]] = []
    for client in session.scalars(select(Client).where(Client.id.in_(client_ids))):
        tally = notices.get(client.id, Counter())
        role = session.get(Role, client.role_id) if client.role_id else None
        problems = ", ".join(f"{n} {s}" for s, n in sorted(tally.items()) if s != "sent")
        clients.append(
            {
                "name": client.name,
                "crm_id": client.crm_id,
                "segment": client.segment,
                "role": role.key if role else "-",
                "notices": sum(tally.values()),
                "sent": tally.get("sent", 0),
                "problems": problems,
            }
        )
    clients.sort(key=lambda c: (SEGMENT_ORDER.get(c["segment"], 9), c["name"]))
    # Each notice that did not reach its contact, with why (Twilio's 30034, a bounce...).
    not_reached: list[dict[str, Any]] = []
    for notice, contact, client in session.execute(
        select(Notice, Contact, Client)
        .join(Contact, Contact.id == Notice.contact_id)
        .join(Client, Client.id == Contact.client_id)
        .where(Notice.transition_id == transition.id, Notice.status.in_(("failed", "unknown")))
    ):
        not_reached.append(
            {
                "name": client.name,
                "crm_id": client.crm_id,
                "segment": client.segment,
                "contact": contact.name,
                "channel": "SMS" if notice.channel == "sms" else "mail",
                "recipient": notice.recipient or "",
                "status": notice.status,
                "error": notice.last_error or "",
            }
        )
    not_reached.sort(key=lambda n: (SEGMENT_ORDER.get(n["segment"], 9), n["name"], n["contact"]))
    since = transition.effective_at - timedelta(days=ctx.settings.handover.at_risk_days)
    risky = session.execute(
        select(Client, func.count(Incident.id), func.max(Incident.detected_at))
        .join(Incident, Incident.client_id == Client.id)
        .where(Incident.person_id.in_([p.id for p in outgoing]), Incident.detected_at >= since)
        .group_by(Client.id)
    ).all()
    at_risk: list[dict[str, Any]] = [
        {
            "name": client.name,
            "crm_id": client.crm_id,
            "segment": client.segment,
            "incidents": int(n),
            "last": last.date().isoformat() if last else "",
        }
        for client, n, last in risky
    ]
    at_risk.sort(key=lambda c: (SEGMENT_ORDER.get(c["segment"], 9), -c["incidents"], c["name"]))
    return {
        "transition_id": transition.id,
        "leaver_name": ", ".join(p.name for p in outgoing),
        "effective_date": local_date(transition.effective_at, ctx.settings.organisation.timezone),
        "roles": [
            {"name": roles[r].name, "address": roles[r].address, "successor": heirs[r].name}
            for r in sorted(roles)
        ],
        "clients": clients,
        "not_reached": not_reached,
        "at_risk": at_risk,
        "at_risk_days": ctx.settings.handover.at_risk_days,
    }


def send_report(ctx: StepContext, mailer: SmtpSender, filing: ImapSource) -> dict[str, Any]:
    from rolekeeper.actions import sender_address

    with ctx.sessions() as session:
        bosses = {
            boss.named_address: boss
            for person in ctx.outgoing(session)
            if person.supervisor_id is not None
            for boss in [session.get_one(Person, person.supervisor_id)]
        }
        if not bosses:
            return {"report": "not sent: no supervisor in the directory"}
        context = report_context(session, ctx)
        nonce = ctx.transition(session).plan.get("nonce", "0")
    sender = sender_address(ctx.settings)
    message_id = f"<rk-report-{ctx.transition_id}.{nonce}@{sender.rpartition('@')[2]}>"
    subject, body = Templates(ctx.settings.handover.templates_dir).render(
        "handover_report", ctx.settings.actions.language, **context
    )
    sent = []
    for n, boss in enumerate(sorted(bosses.values(), key=lambda b: b.named_address)):
        mid = message_id if n == 0 else message_id.replace("@", f".{n}@", 1)
        # After a crash between sending and recording, the supervisor's mailbox tells.
        if not filing.has_message(boss.named_address, "INBOX", mid):
            mailer.send(
                build_message(
                    ("rolekeeper", sender),
                    [(boss.name, boss.named_address)],
                    subject,
                    body,
                    message_id=mid,
                )
            )
        sent.append(boss.named_address)
    return {
        "report": ", ".join(sent),
        "message_id": message_id,
        "clients": len(context["clients"]),
        "at_risk": len(context["at_risk"]),
    }
