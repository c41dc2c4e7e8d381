"""The fallback TwiML published as Twilio Serverless assets (``publish = "serverless"``).

The documents are those of `fallback` (one voice and one SMS document per number), served
at ``https://<environment domain>/<file>``. Twilio keeps no file in place: publishing is
upload a new Asset Version per changed document, build *every* current version (a build
replaces the whole deployment), wait for the build, deploy it. So what was deployed — each
document's version and hash, and the build — is kept in the store, and nothing is published
when no document changed and the environment still runs rolekeeper's build.
"""

from __future__ import annotations

import hashlib
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.backends.serverless import Environment, ServerlessApi
from rolekeeper.clock import utcnow
from rolekeeper.config import TwilioFallbackSettings
from rolekeeper.log import get_logger
from rolekeeper.store.db import transaction
from rolekeeper.store.models import FallbackAsset, FallbackEnvironment

log = get_logger(__name__)

# One publish at a time in this process: two interleaved builds would each deploy only
# their own view of the versions. Instances share the scheduler lock for the same reason.
_publishing = threading.Lock()


def asset_path(name: str) -> str:
    return f"/{name}"


def known_base(cfg: TwilioFallbackSettings, session: Session) -> str | None:
    """The public base URL of the assets as last learned from Twilio; None before that."""
    row = _environment_row(cfg, session)
    return f"https://{row.domain_name}" if row is not None else None


def ensure_base(
    cfg: TwilioFallbackSettings, sessions: sessionmaker[Session], api: ServerlessApi
) -> str:
    """Make sure the Service and Environment exist; the base URL of their assets."""
    return f"https://{_ensure_environment(cfg, sessions, api).domain_name}"


def publish(
    cfg: TwilioFallbackSettings,
    sessions: sessionmaker[Session],
    api: ServerlessApi,
    documents: dict[str, str],
) -> list[str]:
    """Deploy `documents` (file name → TwiML) beside the others already deployed, if any
    changed or someone deployed another build; returns the asset paths uploaded."""
    with _publishing:
        environment = _ensure_environment(cfg, sessions, api)
        with sessions() as session:
            query = select(FallbackAsset).where(
                FallbackAsset.service_sid == environment.service_sid
            )
            deployed = {row.path: row for row in session.scalars(query)}
            ours = _environment_row(cfg, session)
            our_build = ours.build_sid if ours is not None else None
        wanted = {asset_path(name): text for name, text in documents.items()}
        changed = {
            path: text
            for path, text in wanted.items()
            if path not in deployed or deployed[path].sha256 != _digest(cfg, text)
        }
        if not changed and our_build is not None and environment.build_sid == our_build:
            return []
        if not changed:
            log.warning(
                "fallback environment runs another build, deploying rolekeeper's again",
                found=environment.build_sid,
                expected=our_build,
            )
        uploaded = _upload(cfg, api, environment, changed)
        versions = {path: row.version_sid for path, row in deployed.items()}
        versions |= {path: version for path, (_, version) in uploaded.items()}
        build_sid = api.build(
            environment.service_sid, sorted(versions.values()), cfg.build_timeout_seconds
        )
        api.deploy(environment, build_sid)
        _record(cfg, sessions, environment, build_sid, changed, uploaded)
        log.info("fallback TwiML deployed", build=build_sid, uploaded=len(uploaded))
        return sorted(uploaded)


def _upload(
    cfg: TwilioFallbackSettings,
    api: ServerlessApi,
    environment: Environment,
    changed: dict[str, str],
) -> dict[str, tuple[str, str]]:
    """Path → (asset SID, new version SID) for each changed document."""
    if not changed:
        return {}
    assets = api.ensure_assets(environment.service_sid, sorted(changed))
    return {
        path: (
            assets[path],
            api.upload_version(environment.service_sid, assets[path], path, text, cfg.visibility),
        )
        for path, text in sorted(changed.items())
    }


def _record(
    cfg: TwilioFallbackSettings,
    sessions: sessionmaker[Session],
    environment: Environment,
    build_sid: str,
    changed: dict[str, str],
    uploaded: dict[str, tuple[str, str]],
) -> None:
    now = utcnow()
    with transaction(sessions) as session:
        rows = {
            row.path: row
            for row in session.scalars(
                select(FallbackAsset).where(
                    FallbackAsset.service_sid == environment.service_sid,
                    FallbackAsset.path.in_(list(uploaded)),
                )
            )
        }
        for path, (asset_sid, version_sid) in uploaded.items():
            row = rows.get(path) or FallbackAsset(service_sid=environment.service_sid, path=path)
            row.asset_sid, row.version_sid = asset_sid, version_sid
            row.sha256, row.deployed_at = _digest(cfg, changed[path]), now
            session.add(row)
        env_row = _environment_row(cfg, session)
        assert env_row is not None
        env_row.build_sid, env_row.deployed_at = build_sid, now


def _ensure_environment(
    cfg: TwilioFallbackSettings, sessions: sessionmaker[Session], api: ServerlessApi
) -> Environment:
    service_sid = api.ensure_service(cfg.service_name)
    environment = api.ensure_environment(service_sid, cfg.environment, cfg.domain_suffix)
    with transaction(sessions) as session:
        row = _environment_row(cfg, session)
        if row is None:
            row = FallbackEnvironment(service_name=cfg.service_name, environment=cfg.environment)
            session.add(row)
        if (row.service_sid, row.environment_sid) != (service_sid, environment.sid):
            # A new (or recreated) environment: nothing of ours is deployed there.
            row.build_sid = None
        row.service_sid, row.environment_sid = service_sid, environment.sid
        row.domain_name = environment.domain_name
    return environment


def _environment_row(cfg: TwilioFallbackSettings, session: Session) -> FallbackEnvironment | None:
    return session.scalars(
        select(FallbackEnvironment).where(
            FallbackEnvironment.service_name == cfg.service_name,
            FallbackEnvironment.environment == cfg.environment,
        )
    ).one_or_none()


def _digest(cfg: TwilioFallbackSettings, text: str) -> str:
    # The visibility is part of what was deployed: changing it republishes.
    return hashlib.sha256(f"{cfg.visibility}\n{text}".encode()).hexdigest()
