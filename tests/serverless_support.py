"""A Twilio Serverless account as the proxy before the Serverless Prism reports it.

Prism checks each request against Twilio's Serverless v1 spec but keeps no state (lists are
always empty, every create answers the same SIDs); this remembers what a real account would
— services, environments, assets, the versions the upload server received, builds and
deployments — so find-or-create, lost answers and "nothing changed" can be tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.servers.prism import Recorded, TwilioProxy
from tests.twilio_support import ACCOUNT

SERVICES = r"^/v1/Services$"
ENVIRONMENTS = r"^/v1/Services/ZS\w+/Environments$"
ASSETS = r"^/v1/Services/ZS\w+/Assets$"
VERSIONS = r"^/v1/Services/ZS\w+/Assets/ZH\w+/Versions$"
BUILDS = r"^/v1/Services/ZS\w+/Builds$"
BUILD_STATUS = r"^/v1/Services/ZS\w+/Builds/ZB\w+/Status$"
DEPLOYMENTS = r"^/v1/Services/ZS\w+/Environments/ZE\w+/Deployments$"


def _sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032x}"


@dataclass
class FakeServerless:
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    contents: dict[str, str] = field(default_factory=dict)  # version sid -> uploaded text
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What the next status polls answer, in order; then "completed".
    build_statuses: list[str] = field(default_factory=list)
    _n: int = 0

    def next_sid(self, prefix: str) -> str:
        self._n += 1
        return _sid(prefix, self._n)

    def install(self, proxy: TwilioProxy) -> None:
        proxy.answer("GET", SERVICES, lambda r: self._list(r, "services", self.services))
        proxy.answer("POST", SERVICES, self._create_service)
        proxy.answer(
            "GET", ENVIRONMENTS, lambda r: self._list(r, "environments", self.environments)
        )
        proxy.answer("POST", ENVIRONMENTS, self._create_environment)
        proxy.answer("GET", ASSETS, lambda r: self._list(r, "assets", self.assets))
        proxy.answer("POST", ASSETS, self._create_asset)
        proxy.answer("GET", VERSIONS, self._list_versions)
        proxy.answer("GET", BUILDS, lambda r: self._list(r, "builds", self.builds))
        proxy.answer("POST", BUILDS, self._create_build)
        proxy.answer("GET", BUILD_STATUS, self._status)
        proxy.answer("GET", DEPLOYMENTS, lambda r: self._list(r, "deployments", self.deployments))
        proxy.answer("POST", DEPLOYMENTS, self._create_deployment)

    # --- what the upload server calls --------------------------------------------------------

    def create_version(
        self, service_sid: str, asset_sid: str, path: str, visibility: str, content: str
    ) -> dict[str, Any]:
        sid = self.next_sid("ZN")
        self.versions[sid] = {
            "sid": sid,
            "account_sid": ACCOUNT,
            "service_sid": service_sid,
            "asset_sid": asset_sid,
            "path": path,
            "visibility": visibility,
            "date_created": "2026-11-24T10:00:00Z",
            "url": f"https://serverless.twilio.com/v1/Services/{service_sid}/Assets/"
            f"{asset_sid}/Versions/{sid}",
        }
        self.contents[sid] = content
        return self.versions[sid]

    # --- what a deployment serves ------------------------------------------------------------

    def served(self, environment_sid: str) -> dict[str, tuple[str, str]]:
        """Path -> (visibility, content) of what the environment's current build holds."""
        build_sid = self.environments[environment_sid]["build_sid"]
        if build_sid is None:
            return {}
        return {
            v["path"]: (v["visibility"], self.contents[v["sid"]])
            for v in self.builds[build_sid]["asset_versions"]
        }

    # --- answers -----------------------------------------------------------------------------

    def _parent(self, rec: Recorded, prefix: str) -> str:
        return next(part for part in rec.path.split("/") if part.startswith(prefix))

    def _list(self, rec: Recorded, key: str, items: dict[str, dict[str, Any]]) -> tuple[int, Any]:
        parts = rec.path.split("/")
        service = next((p for p in parts if p.startswith("ZS")), None)
        environment = next((p for p in parts if p.startswith("ZE")), None)
        found = [
            item
            for item in items.values()
            if key == "services"
            or (
                item.get("service_sid") == service
                and (environment is None or item.get("environment_sid") == environment)
            )
        ]
        if key in ("builds", "deployments"):
            found.reverse()  # newest first, as Twilio lists them
        meta = dict(rec.prism_body["meta"], next_page_url=None)
        return 200, {key: found, "meta": meta}

    def _list_versions(self, rec: Recorded) -> tuple[int, Any]:
        asset = self._parent(rec, "ZH")
        found = [v for v in self.versions.values() if v["asset_sid"] == asset]
        meta = dict(rec.prism_body["meta"], next_page_url=None)
        return 200, {"asset_versions": found, "meta": meta}

    def _create_service(self, rec: Recorded) -> tuple[int, Any]:
        sid = self.next_sid("ZS")
        unique = rec.one("UniqueName")
        self.services[sid] = {
            **rec.prism_body,
            "sid": sid,
            "unique_name": unique,
            "friendly_name": rec.one("FriendlyName"),
            "include_credentials": rec.one("IncludeCredentials") == "true",
            "ui_editable": rec.one("UiEditable") == "true",
            "domain_base": f"{unique}-1234",
        }
        return 201, self.services[sid]

    def _create_environment(self, rec: Recorded) -> tuple[int, Any]:
        service = self._parent(rec, "ZS")
        sid = self.next_sid("ZE")
        suffix = rec.one("DomainSuffix") or None
        base = self.services[service]["domain_base"]
        self.environments[sid] = {
            **rec.prism_body,
            "sid": sid,
            "service_sid": service,
            "build_sid": None,
            "unique_name": rec.one("UniqueName"),
            "domain_suffix": suffix,
            "domain_name": f"{base}-{suffix}.twil.io" if suffix else f"{base}.twil.io",
        }
        return 201, self.environments[sid]

    def _create_asset(self, rec: Recorded) -> tuple[int, Any]:
        service = self._parent(rec, "ZS")
        sid = self.next_sid("ZH")
        self.assets[sid] = {
            **rec.prism_body,
            "sid": sid,
            "service_sid": service,
            "friendly_name": rec.one("FriendlyName"),
        }
        return 201, self.assets[sid]

    def _create_build(self, rec: Recorded) -> tuple[int, Any]:
        service = self._parent(rec, "ZS")
        sid = self.next_sid("ZB")
        wanted = rec.form.get("AssetVersions", [])
        unknown = [v for v in wanted if v not in self.versions]
        if unknown:
            return 400, {"code": 20001, "message": f"unknown versions {unknown}", "status": 400}
        self.builds[sid] = {
            **rec.prism_body,
            "sid": sid,
            "service_sid": service,
            "status": "building",
            "asset_versions": [self.versions[v] for v in wanted],
            "function_versions": [],
            "dependencies": [],
        }
        return 201, self.builds[sid]

    def _status(self, rec: Recorded) -> tuple[int, Any]:
        sid = self._parent(rec, "ZB")
        status = self.build_statuses.pop(0) if self.build_statuses else "completed"
        self.builds[sid]["status"] = status
        return 200, {**rec.prism_body, "sid": sid, "status": status}

    def _create_deployment(self, rec: Recorded) -> tuple[int, Any]:
        service = self._parent(rec, "ZS")
        environment = self._parent(rec, "ZE")
        sid = self.next_sid("ZD")
        build = rec.one("BuildSid")
        self.deployments[sid] = {
            **rec.prism_body,
            "sid": sid,
            "service_sid": service,
            "environment_sid": environment,
            "build_sid": build,
        }
        self.environments[environment]["build_sid"] = build
        return 201, self.deployments[sid]
