"""Twilio Serverless (Functions & Assets, v1) as rolekeeper uses it: static assets only.

Every creating request goes through `TwilioApi.create_once`, so after a lost answer the
resource the request may have made is looked for before anything is sent again; reads go
through `TwilioApi.call`. The Service, Environment and Assets are found by their names; an
Asset Version by being new since just before the upload; a Build by its asset versions; a
Deployment by its build.

Uploading an Asset Version is not in Twilio's OpenAPI spec nor in twilio-python: it is a
multipart/form-data POST of ``Path``, ``Visibility`` and the file part ``Content`` to
``https://serverless-upload.twilio.com/v1/Services/{ServiceSid}/Assets/{AssetSid}/Versions``
(as Twilio's own Serverless Toolkit sends it), answered with the version's JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException

from rolekeeper.backends.twilio import TwilioApi, routed_url
from rolekeeper.errors import RolekeeperError
from rolekeeper.log import get_logger

log = get_logger(__name__)

UPLOAD_BASE = "https://serverless-upload.twilio.com/v1"
BUILD_POLL_SECONDS = 1.0
# Recent builds and deployments looked through after a lost answer: ours is among the newest.
RECENT = 50


class BuildFailed(RolekeeperError):
    """Twilio could not build the assets, or did not finish within the configured time."""


@dataclass(frozen=True)
class Environment:
    service_sid: str
    sid: str
    domain_name: str
    build_sid: str | None


class ServerlessApi:
    def __init__(self, api: TwilioApi, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.cfg = api.cfg
        self._v1 = api.client.serverless.v1
        self._sleep = sleep
        self._http = requests.Session()
        token = self.cfg.auth_token.get_secret_value() if self.cfg.auth_token else ""
        self._http.auth = (self.cfg.account_sid, token)
        self._http.verify = self.cfg.verify_tls

    # --- service and environment ---------------------------------------------------------

    def ensure_service(self, unique_name: str) -> str:
        def find() -> str | None:
            found = self.api.call(lambda: self._v1.services.list())
            return next((str(s.sid) for s in found if s.unique_name == unique_name), None)

        def create() -> str:
            service = self._v1.services.create(
                unique_name=unique_name,
                friendly_name="rolekeeper fallback TwiML",
                # Static assets need no credentials; none are injected anywhere.
                include_credentials=False,
                # Read-only in the console: rolekeeper owns what is deployed here.
                ui_editable=False,
            )
            return str(service.sid)

        return find() or self.api.create_once(create, find)

    def ensure_environment(
        self, service_sid: str, unique_name: str, domain_suffix: str | None
    ) -> Environment:
        environments = self._v1.services(service_sid).environments

        def find() -> Environment | None:
            found = self.api.call(lambda: environments.list())
            return next(
                (_environment(service_sid, e) for e in found if e.unique_name == unique_name),
                None,
            )

        def create() -> Environment:
            options: dict[str, Any] = {"unique_name": unique_name}
            if domain_suffix is not None:
                options["domain_suffix"] = domain_suffix
            return _environment(service_sid, environments.create(**options))

        return find() or self.api.create_once(create, find)

    # --- assets ----------------------------------------------------------------------------

    def ensure_assets(self, service_sid: str, names: Iterable[str]) -> dict[str, str]:
        """The Asset SID of each friendly name, creating those that are missing."""
        assets = self._v1.services(service_sid).assets

        def listed() -> dict[str, str]:
            found = self.api.call(lambda: assets.list())
            return {str(a.friendly_name): str(a.sid) for a in found}

        known = listed()
        for name in names:
            if name in known:
                continue

            def find(name: str = name) -> str | None:
                return listed().get(name)

            def create(name: str = name) -> str:
                return str(assets.create(friendly_name=name).sid)

            known[name] = self.api.create_once(create, find)
        return known

    def upload_version(
        self, service_sid: str, asset_sid: str, path: str, content: str, visibility: str
    ) -> str:
        """Upload one Asset Version; returns its SID (ZN…)."""
        versions = self._v1.services(service_sid).assets(asset_sid).asset_versions

        def existing() -> set[str]:
            return {str(v.sid) for v in self.api.call(lambda: versions.list())}

        before = existing()

        def find() -> str | None:
            found = self.api.call(lambda: versions.list())
            return next((str(v.sid) for v in found if v.sid not in before and v.path == path), None)

        def create() -> str:
            return self._post_version(service_sid, asset_sid, path, content, visibility)

        return self.api.create_once(create, find)

    def _post_version(
        self, service_sid: str, asset_sid: str, path: str, content: str, visibility: str
    ) -> str:
        url = f"{UPLOAD_BASE}/Services/{service_sid}/Assets/{asset_sid}/Versions"
        response = self._http.post(
            routed_url(self.cfg, url),
            data={"Path": path, "Visibility": visibility},
            files={"Content": (path.lstrip("/"), content.encode("utf-8"), "application/xml")},
            timeout=self.cfg.timeout_seconds,
        )
        if response.status_code >= 300:
            # The same exception twilio-python raises, so one retry rule covers both.
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise TwilioRestException(
                response.status_code,
                url,
                str(body.get("message") or response.reason),
                body.get("code"),
                method="POST",
            )
        return str(response.json()["sid"])

    # --- builds and deployments ------------------------------------------------------------

    def build(self, service_sid: str, version_sids: list[str], timeout: float) -> str:
        """Build these asset versions and wait until the build is completed; its SID."""
        builds = self._v1.services(service_sid).builds
        wanted = set(version_sids)

        def find() -> str | None:
            found = self.api.call(lambda: builds.list(limit=RECENT))
            return next((str(b.sid) for b in found if _version_sids(b) == wanted), None)

        def create() -> str:
            return str(builds.create(asset_versions=version_sids).sid)

        sid = self.api.create_once(create, find)
        self._wait_for(service_sid, sid, timeout)
        return sid

    def _wait_for(self, service_sid: str, build_sid: str, timeout: float) -> None:
        status_of = self._v1.services(service_sid).builds(build_sid).build_status
        deadline = time.monotonic() + timeout
        while True:
            status = str(self.api.call(lambda: status_of().fetch()).status)
            if status == "completed":
                return
            if status == "failed":
                raise BuildFailed(f"Twilio could not build the fallback assets (build {build_sid})")
            if time.monotonic() >= deadline:
                raise BuildFailed(
                    f"build {build_sid} still {status!r} after {timeout:g} s "
                    "([twilio.fallback].build_timeout_seconds)"
                )
            self._sleep(BUILD_POLL_SECONDS)

    def deploy(self, environment: Environment, build_sid: str) -> str:
        deployments = (
            self._v1.services(environment.service_sid).environments(environment.sid).deployments
        )

        def find() -> str | None:
            found = self.api.call(lambda: deployments.list(limit=RECENT))
            return next((str(d.sid) for d in found if d.build_sid == build_sid), None)

        def create() -> str:
            return str(deployments.create(build_sid=build_sid).sid)

        return self.api.create_once(create, find)


def _environment(service_sid: str, instance: Any) -> Environment:
    return Environment(
        service_sid=service_sid,
        sid=str(instance.sid),
        domain_name=str(instance.domain_name),
        build_sid=str(instance.build_sid) if instance.build_sid else None,
    )


def _version_sids(build: Any) -> set[str]:
    return {str(v.get("sid")) for v in (build.asset_versions or [])}
