"""The store's tables. Change them only through a new Alembic revision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from rolekeeper.clock import utcnow

# Stable constraint names so migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Person(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    named_address: Mapped[str] = mapped_column(String(320), unique=True)
    work_phone: Mapped[str | None] = mapped_column(String(32))
    supervisor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)

    supervisor: Mapped[Person | None] = relationship(remote_side=[id])


class PersonalAddress(Base):
    """A private address of an employee, known from HR. Never a channel to clients."""

    __tablename__ = "personal_addresses"
    __table_args__ = (UniqueConstraint("person_id", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320), index=True)


class PersonalPhone(Base):
    __tablename__ = "personal_phones"
    __table_args__ = (UniqueConstraint("person_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(32), index=True)


class Role(Base):
    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(320), unique=True)
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class RoleHolder(Base):
    """Holder history, kept forever; the open row (ended_at NULL) is the current one."""

    __tablename__ = "role_holders"
    __table_args__ = (
        # At most one current holder per role; co-holders are separate rows.
        Index(
            "uq_role_holders_current",
            "role_id",
            "kind",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="holder")
    started_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(Timestamp)
    transition_id: Mapped[int | None] = mapped_column(ForeignKey("transitions.id"))


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    crm_id: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    segment: Mapped[str] = mapped_column(String(16), index=True)
    role_id: Mapped[int | None] = mapped_column(ForeignKey("roles.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class ClientDomain(Base):
    __tablename__ = "client_domains"
    __table_args__ = (UniqueConstraint("client_id", "domain"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    domain: Mapped[str] = mapped_column(String(253), index=True)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("client_id", "email"),
        UniqueConstraint("client_id", "phone", name="uq_contacts_client_phone"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    is_mobile: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(8))
    # Set when the CRM export no longer lists the contact; the row stays for notice history.
    removed_at: Mapped[datetime | None] = mapped_column(Timestamp)


class MainLine(Base):
    """The firm's own published numbers; kept equal to the config at every start."""

    __tablename__ = "main_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")


class Channel(Base):
    """One way clients reach the firm: a role mailbox or number, or a named mailbox."""

    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("kind", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(320))
    backend: Mapped[str] = mapped_column(String(32))
    role_id: Mapped[int | None] = mapped_column(ForeignKey("roles.id"), index=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), index=True)
    closed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    external_id: Mapped[str | None] = mapped_column(String(200))


class Incident(Base):
    __tablename__ = "incidents"
    # person_key is person_id or 0: NULLs never collide in a unique constraint, and an
    # incident whose employee is unknown must still be stored once.
    __table_args__ = (UniqueConstraint("message_key", "rule", "person_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    message_key: Mapped[str] = mapped_column(String(255))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), index=True)
    person_key: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), index=True)
    segment: Mapped[str | None] = mapped_column(String(16))
    evidence: Mapped[str] = mapped_column(Text, default="")
    detected_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    # Seen live (acted on) or in a backfill, resync or replay (recorded and reported only).
    live: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    source: Mapped[str] = mapped_column(String(400), default="", server_default="")
    message_date: Mapped[datetime | None] = mapped_column(Timestamp)
    # When the actions for a live incident were queued (alert, nudge, redirect); NULL = not yet.
    planned_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The client's address in the message: where a nudge would go.
    client_address: Mapped[str | None] = mapped_column(String(320))
    # When a daily digest to the supervisor took it (incidents not alerted at once): set in
    # the commit that records the digest mail, before it is sent (see ActionMail).
    digested_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Transition(Base):
    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), index=True)
    effective_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class TransitionStep(Base):
    __tablename__ = "transition_steps"
    __table_args__ = (UniqueConstraint("transition_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transition_id: Mapped[int] = mapped_column(ForeignKey("transitions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)
    # What the step did (counts, changes), for `transitions show`.
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Notice(Base):
    """One message to one contact about one transition; its Message-ID is fixed up front."""

    __tablename__ = "notices"
    __table_args__ = (UniqueConstraint("transition_id", "contact_id", "channel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transition_id: Mapped[int] = mapped_column(ForeignKey("transitions.id"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    channel: Mapped[str] = mapped_column(String(8))
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)
    # The role whose mailbox sends it, and the recipient and language fixed when queued.
    role_id: Mapped[int | None] = mapped_column(ForeignKey("roles.id"))
    recipient: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str | None] = mapped_column(String(8))
    # When the notice entered "sending" (the journal grace period counts from here).
    sending_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # When the server (SMTP) or Twilio accepted it; an SMS notice's delivery is followed
    # from here, by its Message SID.
    accepted_at: Mapped[datetime | None] = mapped_column(Timestamp)
    sms_sid: Mapped[str | None] = mapped_column(String(34))
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ScanCursor(Base):
    """Where a mail source was last read; the value is opaque to everyone but its backend."""

    __tablename__ = "scan_cursors"
    __table_args__ = (UniqueConstraint("source", "folder"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(320))
    folder: Mapped[str] = mapped_column(String(255))
    cursor: Mapped[str] = mapped_column(Text)
    scanned_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class AuditEntry(Base):
    """Append-only: database triggers refuse UPDATE and DELETE on this table."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(320))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DueJob(Base):
    """Work that falls due at a time: the row, not the in-memory scheduler, is the record."""

    __tablename__ = "due_jobs"
    __table_args__ = (
        Index("ix_due_jobs_claimable", "status", "due_at"),
        # One pending row per recurring job key, so seeding at every start is idempotent.
        Index(
            "uq_due_jobs_pending_key",
            "kind",
            "key",
            unique=True,
            sqlite_where=text("status IN ('pending', 'running')"),
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255), default="")
    due_at: Mapped[datetime] = mapped_column(Timestamp)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class UnreadableMessage(Base):
    """A message the scanner could not parse: recorded, skipped, never retried silently."""

    __tablename__ = "unreadable_messages"
    __table_args__ = (UniqueConstraint("source", "folder", "uidvalidity", "uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(320))
    folder: Mapped[str] = mapped_column(String(255))
    # IMAP UIDs and UIDVALIDITY are unsigned 32-bit: beyond PostgreSQL's INTEGER.
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ClientArrival(Base):
    """One client message to its role channels: the history rule 6 reads."""

    __tablename__ = "client_arrivals"
    __table_args__ = (UniqueConstraint("client_id", "message_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    message_key: Mapped[str] = mapped_column(String(255))
    arrived_at: Mapped[datetime] = mapped_column(Timestamp, index=True)


class LearnedNumber(Base):
    """A number a client wrote itself (its own text or signature): never a leak (rule 5)."""

    __tablename__ = "learned_numbers"
    __table_args__ = (UniqueConstraint("client_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(32))
    first_seen: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Candidate(Base):
    """An external correspondent not in the directory: perhaps a client; never notified
    until an admin confirms it."""

    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(253), index=True)
    role_id: Mapped[int | None] = mapped_column(ForeignKey("roles.id"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    messages: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="new")


class Nudge(Base):
    """A polite reply from the role mailbox to a client that used a personal channel."""

    __tablename__ = "nudges"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    sent_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ActionMail(Base):
    """One mail an action sends (supervisor alert, daily digest, client nudge), exactly
    once: the row and its fixed Message-ID are committed before the SMTP transaction, as
    the transition outbox does for notices (rolekeeper.notices.actionmail).

    queued → sending → [accepted → filed in the sender's Sent] → sent; or "unknown" where
    a crash or a lost answer left the outcome open and no journal can tell."""

    __tablename__ = "action_mails"
    __table_args__ = (Index("ix_action_mails_open", "kind", "subject", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # alert, digest, nudge
    # What it is about, as the job key names it: incident:ID, supervisor:ID, client:ID.
    subject: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    recipient: Mapped[str] = mapped_column(String(320))
    # The mailbox whose Sent folder gets a copy (a nudge's role mailbox); NULL: none.
    sent_mailbox: Mapped[str | None] = mapped_column(String(320))
    incidents: Mapped[list[int]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16))
    # The exact bytes sent, kept only until the outcome is settled (a resend is identical).
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    sending_at: Mapped[datetime | None] = mapped_column(Timestamp)
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp)


class TwilioNumber(Base):
    """A role's number on Twilio, bought or adopted by `roles provision`. Never released by
    rolekeeper: a number given up is lost to the role's clients for good."""

    __tablename__ = "twilio_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"), unique=True)
    sid: Mapped[str] = mapped_column(String(34), unique=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    adopted: Mapped[bool] = mapped_column(Boolean, default=False)
    provisioned_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    # The last pass that found (or made) the number's settings equal to the desired ones.
    reconciled_at: Mapped[datetime | None] = mapped_column(Timestamp)


class FallbackEnvironment(Base):
    """The Twilio Serverless Environment the fallback TwiML is deployed to, and the build
    rolekeeper deployed there last (another build there means someone changed it)."""

    __tablename__ = "fallback_environments"
    __table_args__ = (UniqueConstraint("service_name", "environment"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_name: Mapped[str] = mapped_column(String(50))
    environment: Mapped[str] = mapped_column(String(100))
    service_sid: Mapped[str] = mapped_column(String(34))
    environment_sid: Mapped[str] = mapped_column(String(34))
    domain_name: Mapped[str] = mapped_column(String(255))
    build_sid: Mapped[str | None] = mapped_column(String(34))
    deployed_at: Mapped[datetime | None] = mapped_column(Timestamp)


class FallbackAsset(Base):
    """One deployed fallback document: its Asset, the version deployed and the hash of
    what that version holds, so only changed documents are uploaded again."""

    __tablename__ = "fallback_assets"
    __table_args__ = (UniqueConstraint("service_sid", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_sid: Mapped[str] = mapped_column(String(34))
    path: Mapped[str] = mapped_column(String(255))
    asset_sid: Mapped[str] = mapped_column(String(34))
    version_sid: Mapped[str] = mapped_column(String(34))
    sha256: Mapped[str] = mapped_column(String(64))
    deployed_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class AccessFailure(Base):
    """A refused PIN at the access number, from one caller number in one call. The rows
    are shared by every webhook instance: `pin_attempts` of them from one number within
    `pin_window_minutes` lock that number out, and the row that did carries `locked_until`.
    Pruned by the webhooks as they write (see rolekeeper.telephony.lockout)."""

    __tablename__ = "access_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    caller: Mapped[str] = mapped_column(String(64), index=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    locked_until: Mapped[datetime | None] = mapped_column(Timestamp)
