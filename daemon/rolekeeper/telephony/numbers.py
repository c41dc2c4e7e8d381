"""Role numbers on Twilio: what each number's settings should be, provisioning, the reconciler.

Desired state: a role's number is named after the role and sends voice and SMS to the
webhooks (``[twilio].public_url``), falling back to the static TwiML of `fallback`, published
as files or as Twilio Serverless assets (`serverless_fallback`).
`reconcile` reads each number's settings from Twilio and changes only what differs
(audited); `provision` first buys or adopts numbers for roles that lack one. Nothing here
releases a number: that is always an admin's decision, made in the Twilio console.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.backends.serverless import ServerlessApi
from rolekeeper.backends.twilio import TwilioApi
from rolekeeper.clock import utcnow
from rolekeeper.config import Settings, TwilioSettings, missing_key
from rolekeeper.duework import JobContext, JobKind
from rolekeeper.errors import NotFoundError
from rolekeeper.log import get_logger
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Role, TwilioNumber
from rolekeeper.telephony import fallback, routing, serverless_fallback

log = get_logger(__name__)
RECONCILE_JOB = "telephony.reconcile"

Action = Literal["keep", "adopt", "buy", "skip"]


def twilio_of(settings: Settings) -> TwilioSettings:
    cfg = settings.twilio
    if cfg is None:
        raise missing_key(settings, "twilio", "the [twilio] section is needed for telephony")
    if cfg.public_url is None:
        raise missing_key(settings, "twilio.public_url", "required: the URL Twilio calls")
    return cfg


def desired_settings(
    cfg: TwilioSettings, role_key: str, number: str, fallback_base: str | None
) -> dict[str, str]:
    """The IncomingPhoneNumber fields rolekeeper owns, as they should be; the fallback URLs
    when `fallback_base` (where the fallback TwiML is served) is known."""
    assert cfg.public_url is not None
    wanted = {
        "friendly_name": role_key[:64],
        "voice_url": f"{cfg.public_url}/voice",
        "voice_method": "POST",
        "sms_url": f"{cfg.public_url}/sms",
        "sms_method": "POST",
    }
    urls = fallback.fallback_urls(fallback_base, number)
    if urls is not None:
        wanted |= {
            "voice_fallback_url": urls[0],
            "voice_fallback_method": "GET",
            "sms_fallback_url": urls[1],
            "sms_fallback_method": "GET",
        }
    return wanted


# --- provisioning ----------------------------------------------------------------------


@dataclass(frozen=True)
class PlanItem:
    role: str
    action: Action
    number: str | None = None
    sid: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "role": self.role,
            "action": self.action,
            "number": self.number,
            "sid": self.sid,
            "detail": self.detail,
        }


def plan(
    api: TwilioApi, settings: Settings, session: Session, roles: list[str] | None = None
) -> list[PlanItem]:
    """What `provision` would do for each role (all, or those named). Reads Twilio only."""
    cfg = twilio_of(settings)
    query = select(Role).order_by(Role.key)
    if roles:
        query = query.where(Role.key.in_(roles))
    found = list(session.scalars(query))
    missing = sorted(set(roles or ()) - {r.key for r in found})
    if missing:
        raise NotFoundError(f"no such role: {', '.join(missing)}")
    have = {n.role_id: n for n in session.scalars(select(TwilioNumber))}
    taken = {n.number for n in have.values()}
    items: list[PlanItem] = []
    candidates: list[str] | None = None
    for role in found:
        if (row := have.get(role.id)) is not None:
            items.append(PlanItem(role.key, "keep", row.number, row.sid))
            continue
        named = cfg.numbers.adopt.get(role.key) or role.number
        if named is not None:
            on_account = api.list_numbers(named)
            if on_account:
                items.append(PlanItem(role.key, "adopt", named, on_account[0].sid))
            else:
                source = "[twilio.numbers].adopt" if role.key in cfg.numbers.adopt else "directory"
                items.append(
                    PlanItem(
                        role.key,
                        "skip",
                        named,
                        detail=f"{named} ({source}) is not on this Twilio account: port it in, "
                        "or name another number",
                    )
                )
            continue
        if candidates is None:
            candidates = api.available_numbers(
                cfg.numbers.country, cfg.numbers.area_code, cfg.numbers.capabilities, limit=20
            )
        pick = next((c for c in candidates if c not in taken), None)
        if pick is None:
            items.append(PlanItem(role.key, "skip", detail="no number available to buy"))
            continue
        taken.add(pick)
        items.append(PlanItem(role.key, "buy", pick))
    return items


def provision(
    api: TwilioApi,
    settings: Settings,
    sessions: sessionmaker[Session],
    roles: list[str] | None = None,
    *,
    actor: str = "rolekeeper",
) -> list[PlanItem]:
    """Buy or adopt a number for each role lacking one, then reconcile their settings."""
    cfg = twilio_of(settings)
    with sessions() as session:
        items = plan(api, settings, session, roles)
    base = None
    if any(i.action == "buy" for i in items):
        # A number is bought with its fallback URLs; with Serverless assets they are known
        # once the Service and Environment exist (the reconcile below deploys the files).
        base = fallback_base(cfg, sessions, api)
    done: list[PlanItem] = []
    for item in items:
        if item.action in ("buy", "adopt"):
            item = _acquire(api, cfg, sessions, item, base, actor)
        done.append(item)
    reconcile(api, settings, sessions, [i.role for i in done if i.action != "skip"], actor=actor)
    return done


def _acquire(
    api: TwilioApi,
    cfg: TwilioSettings,
    sessions: sessionmaker[Session],
    item: PlanItem,
    base: str | None,
    actor: str,
) -> PlanItem:
    assert item.number is not None
    if item.action == "buy":
        bought = api.buy_number(item.number, desired_settings(cfg, item.role, item.number, base))
        item = PlanItem(item.role, "buy", bought.phone_number, bought.sid, "bought")
    assert item.sid is not None and item.number is not None
    with transaction(sessions) as session:
        role = session.scalars(select(Role).where(Role.key == item.role)).one()
        session.add(
            TwilioNumber(
                role_id=role.id, sid=item.sid, number=item.number, adopted=item.action == "adopt"
            )
        )
        if role.number is None:
            role.number = item.number
        record_audit(
            session,
            actor,
            f"twilio.number.{'bought' if item.action == 'buy' else 'adopted'}",
            role.key,
            {"number": item.number, "sid": item.sid},
        )
    log.info("role number recorded", role=item.role, number=item.number, action=item.action)
    return item


# --- the reconciler ----------------------------------------------------------------------


@dataclass(frozen=True)
class NumberState:
    role: str
    number: str
    sid: str
    changes: dict[str, str] = field(default_factory=dict)
    fallback_files: list[Path] = field(default_factory=list)
    # Serverless: the asset paths of this number uploaded in this pass.
    fallback_assets: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "role": self.role,
            "number": self.number,
            "sid": self.sid,
            "changes": self.changes,
            "fallback_files": [str(p) for p in self.fallback_files],
            "fallback_assets": self.fallback_assets,
        }


def fallback_base(
    cfg: TwilioSettings,
    sessions: sessionmaker[Session],
    api: TwilioApi | None,
    *,
    dry_run: bool = False,
) -> str | None:
    """Where the fallback TwiML is served: the configured URL for files; for Serverless
    assets the Environment's domain (made sure of, unless `dry_run`: then as last known)."""
    if cfg.fallback.publish == "file":
        return cfg.fallback.url
    if dry_run:
        with sessions() as session:
            return serverless_fallback.known_base(cfg.fallback, session)
    return serverless_fallback.ensure_base(cfg.fallback, sessions, _serverless(cfg, api))


def _serverless(cfg: TwilioSettings, api: TwilioApi | None) -> ServerlessApi:
    # Publishing to Serverless needs Twilio even where the caller checks no number settings.
    return ServerlessApi(api if api is not None else TwilioApi(cfg))


def reconcile(
    api: TwilioApi | None,
    settings: Settings,
    sessions: sessionmaker[Session],
    roles: list[str] | None = None,
    *,
    dry_run: bool = False,
    actor: str = "rolekeeper",
) -> list[NumberState]:
    """Bring each provisioned number (of `roles`, or all) to its desired state.

    The fallback TwiML is published first (files: local and quick; Serverless assets: one
    build for every changed document); then, with an `api`, each number's settings are read
    from Twilio and only the fields that differ are updated.
    """
    cfg = twilio_of(settings)
    with sessions() as session:
        query = select(Role.key, TwilioNumber.number, TwilioNumber.sid).join(
            TwilioNumber, TwilioNumber.role_id == Role.id
        )
        if roles is not None:
            query = query.where(Role.key.in_(roles))
        rows = session.execute(query.order_by(Role.key)).all()
        routes = {key: routing.role_route(session, key=key) for key, _, _ in rows}
    base = fallback_base(cfg, sessions, api, dry_run=dry_run) if rows else None
    assets = _publish_assets(cfg, sessions, api, routes) if rows and not dry_run else set()
    states = []
    for key, number, sid in rows:
        route = routes[key]
        written: list[Path] = []
        if (
            route is not None
            and cfg.fallback.publish == "file"
            and cfg.fallback.url is not None
            and not dry_run
        ):
            written = fallback.write_files(cfg, route)
        mine = [serverless_fallback.asset_path(n) for n in fallback.file_names(number)]
        changes: dict[str, str] = {}
        if api is not None:
            actual = api.fetch_number(sid)
            wanted = desired_settings(cfg, key, number, base)
            changes = {k: v for k, v in wanted.items() if actual.settings.get(k) != v}
            if changes and not dry_run:
                api.update_number(sid, changes)
            if not dry_run:
                _record(sessions, key, sid, changes, actor)
        states.append(
            NumberState(key, number, sid, changes, written, [a for a in mine if a in assets])
        )
    if api is not None and roles is None and cfg.webhooks.access_number is not None:
        states += _reconcile_access(api, cfg, cfg.webhooks.access_number, dry_run=dry_run)
    return states


def _publish_assets(
    cfg: TwilioSettings,
    sessions: sessionmaker[Session],
    api: TwilioApi | None,
    routes: dict[str, routing.RoleRoute | None],
) -> set[str]:
    """Serverless: one publish for the documents of every route; the asset paths uploaded."""
    if cfg.fallback.publish != "serverless":
        return set()
    documents: dict[str, str] = {}
    for route in routes.values():
        if route is not None:
            documents |= fallback.documents(cfg, route)
    if not documents:
        return set()
    return set(
        serverless_fallback.publish(cfg.fallback, sessions, _serverless(cfg, api), documents)
    )


ACCESS_NAME = "rolekeeper access number"


def _reconcile_access(
    api: TwilioApi, cfg: TwilioSettings, number: str, *, dry_run: bool
) -> list[NumberState]:
    """The access number answers on the same voice webhook (it tells itself apart by To)."""
    found = api.list_numbers(number)
    if not found:
        log.warning("the access number is not on this Twilio account", number=number)
        return []
    wanted = {
        "friendly_name": ACCESS_NAME,
        "voice_url": f"{cfg.public_url}/voice",
        "voice_method": "POST",
    }
    changes = {k: v for k, v in wanted.items() if found[0].settings.get(k) != v}
    if changes and not dry_run:
        api.update_number(found[0].sid, changes)
        log.warning("access number drifted, repaired", fields=sorted(changes))
    return [NumberState("(access)", number, found[0].sid, changes)]


def _record(
    sessions: sessionmaker[Session], role: str, sid: str, changes: dict[str, str], actor: str
) -> None:
    with transaction(sessions) as session:
        row = session.scalars(select(TwilioNumber).where(TwilioNumber.sid == sid)).one()
        row.reconciled_at = utcnow()
        if changes:
            record_audit(session, actor, "twilio.number.repaired", role, {"sid": sid, **changes})
            log.warning("twilio number drifted, repaired", role=role, fields=sorted(changes))


def reroute(
    settings: Settings,
    sessions: sessionmaker[Session],
    role: str | Sequence[str],
    api: TwilioApi | None = None,
    *,
    actor: str = "rolekeeper",
) -> list[NumberState]:
    """Make the role's phone routing follow its holder; call after the holder change commits.

    The webhooks read the holder from the store on every call, so calls already follow the
    commit. This rewrites the role's fallback TwiML (files: milliseconds, no network;
    Serverless assets: an upload, a build and a deployment on Twilio, seconds) and, given an
    `api`, checks and repairs the number's settings on Twilio. Returns the number's state
    (empty when the role has no provisioned number). Safe to repeat. Several roles (a
    sequence of keys) are done in one pass: one Serverless deployment for all of them.
    """
    roles = [role] if isinstance(role, str) else list(role)
    return reconcile(api, settings, sessions, roles, actor=actor)


def reconcile_job(ctx: JobContext) -> None:
    if ctx.settings.twilio is None or ctx.settings.twilio.public_url is None:
        return
    reconcile(TwilioApi(ctx.settings.twilio), ctx.settings, ctx.sessions)


RECONCILE = JobKind(
    RECONCILE_JOB,
    reconcile_job,
    every=lambda s: _minutes(s.twilio.reconcile_minutes if s.twilio else 60.0),
)


def _minutes(value: float) -> timedelta:
    return timedelta(minutes=value)
