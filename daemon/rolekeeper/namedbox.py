"""What a named mailbox's Sieve filtering should be, from the store.

Two sources feed one script (ManageSieve has one per owner, see backends/sieve.py):
redirects that live incidents call for (rolekeeper.actions), and after a departure every
client of the leaver's roles redirected to its role mailbox and answered once with an
auto-reply naming the role's contacts, until `handover.autoreply_days` after the date.
Both the incident job and the departure step call `ensure_filters`, so neither undoes the
other; the reconciler calls it too, for every mailbox that should carry these filters, so a
wrapper switched off by hand is put back (see `keep_filters`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.backends.sieve import AutoReply, Redirect, SieveManager
from rolekeeper.clock import as_utc
from rolekeeper.config import Settings
from rolekeeper.directory.queries import role_context
from rolekeeper.domain import JobStatus
from rolekeeper.errors import RolekeeperError
from rolekeeper.notices.render import Templates
from rolekeeper.store.models import (
    Client,
    ClientDomain,
    Contact,
    DueJob,
    Incident,
    Person,
    Role,
    Transition,
)

DEPARTURE = "departure"
REDIRECTS_JOB = "action.redirects"  # rolekeeper.actions applies an incident's redirects
STARTED = ("running", "done", "parked")  # a departure whose steps have begun


def redirects_in_force(
    session: Session, settings: Settings, mailbox: str | None = None
) -> dict[str, dict[int, str]]:
    """named mailbox → client id → role address, for clients whose live incidents call for
    a redirect (the rule's policy lists the incident's segment); one mailbox or all of them.
    The incident job and the reconciler both read redirects here, so they never disagree."""
    policies = settings.actions.rules
    query = (
        select(Person.named_address, Incident.rule, Incident.segment, Client.id, Role.address)
        .join(Person, Person.id == Incident.person_id)
        .join(Client, Client.id == Incident.client_id)
        .join(Role, Role.id == Client.role_id)
        .where(Incident.live)
    )
    if mailbox is not None:
        query = query.where(Person.named_address == mailbox)
    found: dict[str, dict[int, str]] = {}
    for address, rule, segment, client_id, role_address in session.execute(query):
        policy = policies.get(rule)
        if policy is not None and (segment or "") in policy.redirect:
            found.setdefault(address, {})[client_id] = role_address
    return found


def incident_redirects(session: Session, mailbox: str, settings: Settings) -> dict[int, str]:
    """client id → role address, for clients whose live incidents here call for a redirect."""
    return redirects_in_force(session, settings, mailbox).get(mailbox, {})


def departure_of(session: Session, mailbox: str) -> Transition | None:
    """The started departure of the person owning this named mailbox, if any."""
    return session.scalars(
        select(Transition)
        .join(Person, Person.id == Transition.person_id)
        .where(
            Person.named_address == mailbox,
            Transition.kind == DEPARTURE,
            Transition.status.in_(STARTED),
        )
        .order_by(Transition.effective_at.desc())
        .limit(1)
    ).first()


def _departed_clients(session: Session, transition: Transition) -> dict[int, str]:
    role_ids = [int(r) for r in transition.plan.get("roles", {})]
    rows = session.execute(
        select(Client.id, Role.address)
        .join(Role, Role.id == Client.role_id)
        .where(Client.role_id.in_(role_ids))
    ).all()
    return {client_id: address for client_id, address in rows}


def _senders(session: Session, client_ids: list[int]) -> dict[int, tuple[list[str], list[str]]]:
    found: dict[int, tuple[list[str], list[str]]] = {c: ([], []) for c in client_ids}
    for client_id, email in session.execute(
        select(Contact.client_id, Contact.email).where(
            Contact.client_id.in_(client_ids), Contact.removed_at.is_(None)
        )
    ):
        if email:
            found[client_id][0].append(email)
    for client_id, domain in session.execute(
        select(ClientDomain.client_id, ClientDomain.domain).where(
            ClientDomain.client_id.in_(client_ids)
        )
    ):
        found[client_id][1].append(domain)
    return found


def desired_filters(
    session: Session, mailbox: str, settings: Settings
) -> tuple[list[Redirect], list[AutoReply]]:
    targets = incident_redirects(session, mailbox, settings)
    departure = departure_of(session, mailbox)
    departed = _departed_clients(session, departure) if departure is not None else {}
    targets.update(departed)
    senders = _senders(session, sorted(targets))
    by_role: dict[str, tuple[set[str], set[str]]] = {}
    for client_id, role_address in targets.items():
        addresses, domains = by_role.setdefault(role_address, (set(), set()))
        addresses.update(senders[client_id][0])
        domains.update(senders[client_id][1])
    redirects = [
        Redirect(role, tuple(sorted(a)), tuple(sorted(d))) for role, (a, d) in by_role.items()
    ]
    replies: list[AutoReply] = []
    if departure is not None:
        replies = _auto_replies(session, departure, departed, settings)
    return sorted(redirects, key=lambda r: r.target), replies


def _auto_replies(
    session: Session, departure: Transition, clients: dict[int, str], settings: Settings
) -> list[AutoReply]:
    """One auto-reply per role and language, to that role's clients' contacts."""
    leaver = session.get_one(Person, departure.person_id)
    until = (
        as_utc(departure.effective_at) + timedelta(days=settings.handover.autoreply_days)
    ).date()
    templates = Templates(settings.handover.templates_dir)
    groups: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
    default_language = settings.import_.clients.default_language
    for client_id, role_address in clients.items():
        contacts = session.execute(
            select(Contact.email, Contact.language).where(
                Contact.client_id == client_id, Contact.removed_at.is_(None)
            )
        ).all()
        languages = [language for _, language in contacts] or [default_language]
        for email, language in contacts:
            if email:
                groups.setdefault((role_address, language), (set(), set()))[0].add(email)
        for domain in session.scalars(
            select(ClientDomain.domain).where(ClientDomain.client_id == client_id)
        ):
            groups.setdefault((role_address, languages[0]), (set(), set()))[1].add(domain)
    replies = []
    for (role_address, language), (addresses, domains) in sorted(groups.items()):
        role = session.scalars(select(Role).where(Role.address == role_address)).one()
        subject, body = templates.render(
            "autoreply", language, **reply_context(session, role, leaver, settings)
        )
        replies.append(
            AutoReply(
                tuple(sorted(addresses)),
                tuple(sorted(domains - {a.rpartition("@")[2] for a in addresses})),
                subject,
                body,
                role_address,
                until,
                settings.handover.autoreply_days,
            )
        )
    return replies


def reply_context(
    session: Session, role: Role, leaver: Person, settings: Settings
) -> dict[str, Any]:
    return {**role_context(session, role, settings), "leaver_name": leaver.name}


def ensure_filters(
    session: Session, mailbox: str, settings: Settings
) -> tuple[list[Redirect], list[str]]:
    """Make the mailbox's Sieve filtering what the store says; return the redirects it
    should have and what was changed to get there."""
    if settings.imap is None:
        raise RolekeeperError("Sieve filtering is due but [imap] is not configured")
    redirects, replies = desired_filters(session, mailbox, settings)
    changes = SieveManager(settings.imap).ensure(
        mailbox, redirects, settings.actions.redirect_keep_copy, replies
    )
    return redirects, changes


def departed_mailboxes(session: Session) -> list[str]:
    """Named mailboxes of people whose departure has started."""
    return sorted(
        set(
            session.scalars(
                select(Person.named_address)
                .join(Transition, Transition.person_id == Person.id)
                .where(
                    Transition.kind == DEPARTURE,
                    Transition.status.in_(STARTED),
                )
            )
        )
    )


def filtered_mailboxes(session: Session, settings: Settings) -> list[str]:
    """Named mailboxes that should carry rolekeeper's filters: those of current employees
    with redirects in force and those of people whose departure has started. A mailbox
    whose redirect job is still to run is left to that job: it writes the same scripts,
    and two writers on one mailbox at once (several instances) could interleave."""
    wanted = {*departed_mailboxes(session), *redirects_in_force(session, settings)}
    queued = session.scalars(
        select(DueJob.key).where(
            DueJob.kind == REDIRECTS_JOB,
            DueJob.status.in_((JobStatus.PENDING, JobStatus.RUNNING)),
        )
    )
    return sorted(wanted - {key.removeprefix("mailbox:") for key in queued})


@dataclass
class KeptFilters:
    """One reconciler pass over named mailboxes' Sieve: what changed, and which mailboxes
    could not be reached (the others were still kept)."""

    changed: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def keep_filters(sessions: sessionmaker[Session], settings: Settings) -> KeptFilters:
    """The reconciler's Sieve part: every named mailbox that should carry rolekeeper's filters
    has the wrapper active, including rolekeeper's script and the owner's own (the one they
    activated since, if they did). A mailbox already right costs a read and no write."""
    kept = KeptFilters()
    with sessions() as session:
        for mailbox in filtered_mailboxes(session, settings):
            try:
                _, changes = ensure_filters(session, mailbox, settings)
            except (RolekeeperError, OSError) as exc:
                # One mailbox the server refuses must not leave the others unrepaired.
                kept.failed[mailbox] = str(exc) or type(exc).__name__
                continue
            if changes:
                kept.changed[mailbox] = changes
    return kept
