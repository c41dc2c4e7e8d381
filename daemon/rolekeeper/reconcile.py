"""Role mailbox access: desired state from the store against what the servers have.

Desired, for each role: its current holder and co-holders (open `role_holders` rows) get
`provisioning.holders_access` on every folder of the role mailbox and may send as the role
address (so may rolekeeper's own `[smtp]` login, which sends notices from it); the
configured supervisors (and, with `holders_supervisor`, the holders' own supervisors) get
`provisioning.supervisors_access`; nobody else has an ACL entry, except the mailbox's own
login and `provisioning.keep_identifiers`. `plan` reads the actual state and returns the
difference as typed changes; `apply` makes them, writing each to the audit log once it is
done. Planning again right after applying gives nothing, and a grant re-added by hand to
someone else is in the next plan as a revoke.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from rolekeeper.backends.acl import canonical, rights_by_identifier
from rolekeeper.config import Settings
from rolekeeper.duework import JobContext, JobKind
from rolekeeper.errors import NotFoundError, RolekeeperError
from rolekeeper.log import get_logger
from rolekeeper.namedbox import KeptFilters, keep_filters
from rolekeeper.provision.base import AccessBackend
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import AuditEntry, Person, Role, RoleHolder

log = get_logger(__name__)

ACTOR = "rolekeeper:reconcile"
MAILBOX_CREATE = "mailbox.create"
ACL_GRANT = "acl.grant"
ACL_REVOKE = "acl.revoke"
SENDAS_GRANT = "sendas.grant"
SENDAS_REVOKE = "sendas.revoke"
KINDS = (MAILBOX_CREATE, ACL_GRANT, ACL_REVOKE, SENDAS_GRANT, SENDAS_REVOKE)
# Identifiers that are the mailbox itself in some servers' answers.
_SELF = frozenset({"owner"})


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between desired and actual access.

    `target` is the role address; `identifier` a login (the person's named address);
    `rights` the RFC 4314 letters granted, or held before a revoke; `folders` the folders
    it concerns, empty meaning every folder of the mailbox (a mailbox not yet created).
    """

    kind: str
    target: str
    identifier: str = ""
    rights: str = ""
    folders: tuple[str, ...] = ()

    def describe(self) -> str:
        where = f" ({', '.join(self.folders)})" if self.folders else " (every folder)"
        if self.kind == MAILBOX_CREATE:
            return f"create role mailbox {self.target}"
        if self.kind == ACL_GRANT:
            return f"grant {self.identifier} rights {self.rights!r} on {self.target}{where}"
        if self.kind == ACL_REVOKE:
            return f"revoke {self.identifier} (had {self.rights!r}) on {self.target}{where}"
        if self.kind == SENDAS_GRANT:
            return f"allow {self.identifier} to send as {self.target}"
        if self.kind == SENDAS_REVOKE:
            return f"stop {self.identifier} sending as {self.target}"
        return f"{self.kind} {self.target} {self.identifier}".rstrip()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folders"] = list(self.folders)
        data["description"] = self.describe()
        return data


@dataclass(frozen=True)
class Desired:
    """What one role mailbox should look like."""

    address: str
    acl: Mapping[str, str]  # identifier → canonical rights
    send_as: frozenset[str]
    keep: frozenset[str] = field(default_factory=frozenset)


class ReconcileError(RolekeeperError):
    """Some changes failed; the others were applied (and audited)."""

    def __init__(self, applied: list[Change], failures: list[tuple[Change, str]]) -> None:
        self.applied = applied
        self.failures = failures
        lines = [f"{change.describe()}: {why}" for change, why in failures]
        super().__init__(
            f"{len(failures)} of {len(applied) + len(failures)} change(s) failed:\n  "
            + "\n  ".join(lines)
        )


# --- desired state -------------------------------------------------------------------------


def select_roles(session: Session, roles: Sequence[str] | None) -> list[Role]:
    """Roles by key or address (all roles when None), in key order."""
    query = select(Role).order_by(Role.key)
    if roles is None:
        return list(session.scalars(query))
    wanted = [r.strip().lower() for r in roles]
    found = list(session.scalars(query.where(or_(Role.key.in_(roles), Role.address.in_(wanted)))))
    known = {r.key for r in found} | {r.address.lower() for r in found}
    missing = [r for r in roles if r not in known and r.strip().lower() not in known]
    if missing:
        raise NotFoundError(f"no such role: {', '.join(missing)}")
    return found


def desired_state(
    session: Session, settings: Settings, roles: Sequence[str] | None = None
) -> list[Desired]:
    cfg = settings.provisioning
    chosen = select_roles(session, roles)
    supervisor = aliased(Person)
    rows = session.execute(
        select(RoleHolder.role_id, Person.named_address, supervisor.named_address)
        .join(Person, Person.id == RoleHolder.person_id)
        .outerjoin(supervisor, supervisor.id == Person.supervisor_id)
        .where(RoleHolder.ended_at.is_(None), RoleHolder.role_id.in_([r.id for r in chosen]))
    ).all()
    holders: dict[int, set[str]] = defaultdict(set)
    bosses: dict[int, set[str]] = defaultdict(set)
    for role_id, address, boss in rows:
        holders[role_id].add(address.lower())
        if cfg.holders_supervisor and boss:
            bosses[role_id].add(boss.lower())
    # rolekeeper's own submission login sends nudges and notices from the role addresses.
    smtp = settings.smtp
    own_sender = frozenset({smtp.username.lower()} if smtp and smtp.username else ())
    out = []
    for role in chosen:
        acl: dict[str, str] = {}
        for who in {*cfg.supervisors, *bosses[role.id]}:
            if cfg.supervisors_access:
                acl[who] = canonical(cfg.supervisors_access)
        for who in holders[role.id]:
            acl[who] = canonical(acl.get(who, "") + cfg.holders_access)
        address = role.address.lower()
        acl.pop(address, None)  # the mailbox's own login has its owner's rights already
        out.append(
            Desired(
                address,
                acl,
                frozenset(holders[role.id]) | own_sender,
                frozenset({address, *_SELF, *cfg.keep_identifiers}),
            )
        )
    return out


# --- plan ----------------------------------------------------------------------------------


def plan(
    session: Session,
    settings: Settings,
    access: AccessBackend,
    roles: list[str] | None = None,
) -> list[Change]:
    """The changes that make every chosen role's access what the store says; reads only."""
    wanted = desired_state(session, settings, roles)
    changes: list[Change] = []
    for desired in wanted:
        changes += _plan_acl(desired, access)
    if access.manages_send_as:
        changes += _plan_send_as(session, wanted, access)
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(changes, key=lambda c: (c.target, order[c.kind], c.identifier))


def _plan_acl(desired: Desired, access: AccessBackend) -> list[Change]:
    target = desired.address
    actual = access.read_acls(target)
    if actual is None:
        return [
            Change(MAILBOX_CREATE, target),
            *(Change(ACL_GRANT, target, who, r) for who, r in sorted(desired.acl.items())),
        ]
    by_who = rights_by_identifier(actual)
    folders = sorted(actual)
    changes = []
    for who, rights in sorted(desired.acl.items()):
        held = by_who.get(who, {})
        wrong = tuple(f for f in folders if held.get(f) != rights)
        if wrong:
            changes.append(Change(ACL_GRANT, target, who, rights, wrong))
    for who, held in sorted(by_who.items()):
        if who in desired.acl or who.lower() in desired.keep:
            continue
        had = canonical("".join(held.values()))
        changes.append(Change(ACL_REVOKE, target, who, had, tuple(sorted(held))))
    return changes


def _plan_send_as(session: Session, wanted: list[Desired], access: AccessBackend) -> list[Change]:
    addresses = [d.address for d in wanted]
    actual = access.read_send_as(addresses)
    if actual is None:
        actual = recorded_send_as(session, addresses)
    changes = []
    for desired in wanted:
        have = {login.lower() for login in actual.get(desired.address, frozenset())}
        for login in sorted(desired.send_as - have):
            changes.append(Change(SENDAS_GRANT, desired.address, login))
        for login in sorted(have - desired.send_as):
            changes.append(Change(SENDAS_REVOKE, desired.address, login))
    return changes


def recorded_send_as(session: Session, addresses: Sequence[str]) -> dict[str, frozenset[str]]:
    """Send-as as the audit log says rolekeeper left it: for provisioners that cannot list."""
    state: dict[str, set[str]] = {a: set() for a in addresses}
    query = (
        select(AuditEntry.action, AuditEntry.target, AuditEntry.detail)
        .where(
            AuditEntry.action.in_((SENDAS_GRANT, SENDAS_REVOKE)),
            AuditEntry.target.in_(list(addresses)),
        )
        .order_by(AuditEntry.id)
    )
    for action, target, detail in session.execute(query):
        login = str(detail.get("identifier", "")).lower()
        if action == SENDAS_GRANT:
            state[target].add(login)
        else:
            state[target].discard(login)
    return {a: frozenset(logins) for a, logins in state.items()}


# --- apply ---------------------------------------------------------------------------------


def apply(
    sessions: sessionmaker[Session],
    settings: Settings,
    access: AccessBackend,
    changes: Sequence[Change],
    *,
    actor: str = ACTOR,
) -> list[Change]:
    """Make the changes; each one done is audited at once. A failing change does not stop
    the others (except the rest of its role after a failed mailbox.create); when any failed,
    ReconcileError lists them and carries what was applied."""
    applied: list[Change] = []
    failures: list[tuple[Change, str]] = []
    broken: set[str] = set()
    send_as: list[Change] = []
    for change in changes:
        if change.kind in (SENDAS_GRANT, SENDAS_REVOKE):
            send_as.append(change)
            continue
        if change.target in broken:
            failures.append((change, "skipped: the role mailbox could not be created"))
            continue
        try:
            done = _apply_one(access, change)
        except Exception as exc:  # noqa: BLE001 - one failing change must not stop the others
            failures.append((change, _reason(exc)))
            if change.kind == MAILBOX_CREATE:
                broken.add(change.target)
            continue
        if done is not None:
            _audit(sessions, actor, done)
            applied.append(done)
    if send_as:
        try:
            for change in send_as:
                if change.kind == SENDAS_GRANT:
                    access.grant_send_as(change.target, change.identifier)
                else:
                    access.revoke_send_as(change.target, change.identifier)
            access.flush_send_as()
        except Exception as exc:  # noqa: BLE001 - reported with every send-as change
            failures += [(change, _reason(exc)) for change in send_as]
        else:
            for change in send_as:
                _audit(sessions, actor, change)
                applied.append(change)
    for change in applied:
        log.info("access changed", change=change.describe())
    if failures:
        raise ReconcileError(applied, failures)
    return applied


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, RolekeeperError) else f"{type(exc).__name__}: {exc}"


def _apply_one(access: AccessBackend, change: Change) -> Change | None:
    if change.kind == MAILBOX_CREATE:
        access.create_mailbox(change.target)
        return change
    if change.kind == ACL_GRANT:
        done = access.set_rights(change.target, change.folders, change.identifier, change.rights)
    elif change.kind == ACL_REVOKE:
        done = access.remove_rights(change.target, change.folders, change.identifier)
    else:
        raise RolekeeperError(f"unknown change kind {change.kind!r}")
    # The folders actually changed (one deleted since the plan is not counted).
    return Change(change.kind, change.target, change.identifier, change.rights, tuple(done))


def _audit(sessions: sessionmaker[Session], actor: str, change: Change) -> None:
    detail = {
        "identifier": change.identifier,
        "rights": change.rights,
        "folders": list(change.folders),
        "description": change.describe(),
    }
    with transaction(sessions) as session:
        record_audit(session, actor, change.kind, change.target, detail)


# --- one pass ------------------------------------------------------------------------------


def run_once(
    sessions: sessionmaker[Session],
    settings: Settings,
    roles: list[str] | None = None,
    dry_run: bool = False,
    *,
    actor: str = ACTOR,
) -> list[Change]:
    """Plan with the configured backends (IMAP ACLs, the send-as provisioner); with
    `dry_run` return the plan, else apply it and return what was applied."""
    from rolekeeper.provision.access import build_access

    access = build_access(settings)
    with sessions() as session:
        changes = plan(session, settings, access, roles)
    if dry_run or not changes:
        return changes
    return apply(sessions, settings, access, changes, actor=actor)


def _reconcile_job(ctx: JobContext) -> None:
    if ctx.settings.imap is None or ctx.settings.provisioning.reconcile_minutes == 0:
        return
    try:
        applied = run_once(ctx.sessions, ctx.settings)
    except ReconcileError as exc:
        # The healthy roles were reconciled; keep the job recurring rather than parking it.
        for change, why in exc.failures:
            log.error("access change failed", change=change.describe(), error=why)
        applied = exc.applied
    if applied:
        log.info("access reconciled", changes=len(applied))
    keep_sieve(ctx.sessions, ctx.settings)


def keep_sieve(sessions: sessionmaker[Session], settings: Settings) -> KeptFilters:
    """Named mailboxes keep rolekeeper's Sieve wrapper: current employees' with redirects in
    force and departed people's; each repair is audited, a mailbox already right is not
    written to, and one that fails is logged and left for the next pass."""
    kept = keep_filters(sessions, settings)
    for mailbox, changes in kept.changed.items():
        with transaction(sessions) as session:
            record_audit(session, ACTOR, "sieve.repair", mailbox, {"changes": changes})
        log.info("named mailbox filtering repaired", mailbox=mailbox, changes=changes)
    for mailbox, why in kept.failed.items():
        log.error("named mailbox filtering not checked", mailbox=mailbox, error=why)
    return kept


def _every(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.provisioning.reconcile_minutes or 60)


RECONCILE = JobKind("reconcile.access", _reconcile_job, every=_every)
