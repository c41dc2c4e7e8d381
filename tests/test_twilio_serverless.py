"""Fallback TwiML published as Twilio Serverless assets, against a second Prism serving
Twilio's Serverless v1 spec and a stand-in for the upload host, both recorded on one
timeline, with 429, 5xx and lost answers injected."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sqlalchemy import select

from rolekeeper.backends.serverless import BuildFailed
from rolekeeper.backends.twilio import TwilioApi
from rolekeeper.config import Settings
from rolekeeper.store.models import FallbackAsset
from rolekeeper.store.open import Store, open_store
from rolekeeper.telephony import numbers
from tests.serverless_support import (
    ASSETS,
    BUILD_STATUS,
    BUILDS,
    DEPLOYMENTS,
    ENVIRONMENTS,
    SERVICES,
    VERSIONS,
    FakeServerless,
)
from tests.servers.prism import Recorded, TwilioProxy
from tests.servers.upload import UploadServer, running_upload_server
from tests.twilio_support import (
    ACCOUNT,
    ALICE_PHONE,
    BOB_PHONE,
    SALES2_NUMBER,
    TOKEN,
    FakeNumbers,
    change_holder,
    make_org,
    twilio_settings,
)

NUMBERS = rf"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers"
DOMAIN = "https://rolekeeper-fallback-1234.twil.io"
BOUGHT = "18089251571"  # the number Prism's example offers to buy
SALES2 = SALES2_NUMBER.lstrip("+")


@pytest.fixture
def fake_serverless(serverless_proxy: TwilioProxy) -> FakeServerless:
    fake = FakeServerless()
    fake.install(serverless_proxy)
    return fake


@pytest.fixture
def upload(
    serverless_proxy: TwilioProxy, fake_serverless: FakeServerless
) -> Iterator[UploadServer]:
    with running_upload_server(
        serverless_proxy, fake_serverless.create_version, (ACCOUNT, TOKEN)
    ) as server:
        yield server


@pytest.fixture
def settings(
    tmp_path: Path, twilio_proxy: TwilioProxy, serverless_proxy: TwilioProxy, upload: UploadServer
) -> Settings:
    return twilio_settings(
        tmp_path,
        api_base=twilio_proxy.url,
        api_hosts={
            "serverless.twilio.com": serverless_proxy.url,
            "serverless-upload.twilio.com": upload.url,
        },
        fallback={"publish": "serverless", "directory": str(tmp_path / "unused")},
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings)
    make_org(store)
    yield store
    store.close()


@pytest.fixture
def fake(twilio_proxy: TwilioProxy) -> FakeNumbers:
    fake = FakeNumbers()
    fake.add("PN" + "2" * 32, SALES2_NUMBER)
    fake.install(twilio_proxy)
    return fake


@pytest.fixture
def api(settings: Settings) -> TwilioApi:
    assert settings.twilio is not None
    return TwilioApi(settings.twilio)


def writes(proxy: TwilioProxy, since: int = 0) -> list[Recorded]:
    return [r for r in proxy.records[since:] if r.method == "POST"]


def kind(record: Recorded) -> str:
    for name, pattern in [
        ("service", SERVICES),
        ("environment", ENVIRONMENTS),
        ("asset", ASSETS),
        ("upload", VERSIONS),
        ("build", BUILDS),
        ("status", BUILD_STATUS),
        ("deployment", DEPLOYMENTS),
    ]:
        if re.search(pattern, record.path):
            return name
    return record.path


def served_numbers(fake: FakeServerless, number: str) -> list[str | None]:
    (environment,) = fake.environments
    visibility, text = fake.served(environment)[f"/{number}.xml"]
    assert visibility == "protected"
    return [n.text for n in ElementTree.fromstring(text).iter("Number")]


def with_fallback(settings: Settings, **changes: object) -> Settings:
    """The settings with some `[twilio.fallback]` keys changed."""
    assert settings.twilio is not None
    fallback = settings.twilio.fallback.model_copy(update=changes)
    twilio = settings.twilio.model_copy(update={"fallback": fallback})
    return settings.model_copy(update={"twilio": twilio})


def test_provision_deploys_the_fallback_assets_and_points_numbers_at_them(
    api: TwilioApi,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    fake_serverless: FakeServerless,
    twilio_proxy: TwilioProxy,
    serverless_proxy: TwilioProxy,
) -> None:
    numbers.provision(api, settings, store.sessions, ["sales1", "sales2"])

    sequence = [
        kind(r) for r in serverless_proxy.records if r.method == "POST" or "Status" in r.path
    ]
    assert sequence == [
        "service",
        "environment",
        *["asset"] * 4,
        *["upload"] * 4,
        "build",
        "status",
        "deployment",
    ]
    posts = writes(serverless_proxy)
    service = posts[0]
    assert service.form["UniqueName"] == ["rolekeeper-fallback"]
    assert service.form["IncludeCredentials"] == ["false"]
    assert service.form["UiEditable"] == ["false"]
    assert posts[1].form == {"UniqueName": ["production"]}
    uploads = [p for p in posts if kind(p) == "upload"]
    assert sorted(u.one("Path") for u in uploads) == sorted(
        [f"/{BOUGHT}.xml", f"/{BOUGHT}-sms.xml", f"/{SALES2}.xml", f"/{SALES2}-sms.xml"]
    )
    assert {u.one("Visibility") for u in uploads} == {"protected"}
    assert all(u.status == 201 for u in uploads)
    (build,) = [p for p in posts if kind(p) == "build"]
    assert sorted(build.form["AssetVersions"]) == sorted(fake_serverless.versions)
    (deployment,) = [p for p in posts if kind(p) == "deployment"]
    assert deployment.one("BuildSid") == next(iter(fake_serverless.builds))
    serverless_proxy.assert_all_valid()  # every request as Twilio's spec (or upload host) wants

    # The bought number got the assets' URLs; the adopted one was repaired to them.
    (buy,) = [r for r in twilio_proxy.calls("POST", rf"{NUMBERS}\.json$") if r.passed]
    assert buy.one("VoiceFallbackUrl") == f"{DOMAIN}/{BOUGHT}.xml"
    assert buy.one("SmsFallbackUrl") == f"{DOMAIN}/{BOUGHT}-sms.xml"
    assert buy.one("VoiceFallbackMethod") == "GET"
    assert fake.numbers["PN" + "2" * 32]["voice_fallback_url"] == f"{DOMAIN}/{SALES2}.xml"
    twilio_proxy.assert_all_valid()

    # What is deployed rings the holder, then the team line.
    assert served_numbers(fake_serverless, BOUGHT) == [ALICE_PHONE, "+15550100"]
    assert served_numbers(fake_serverless, SALES2) == [BOB_PHONE, "+15550100"]


def test_nothing_is_published_when_nothing_changed(
    api: TwilioApi,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    fake_serverless: FakeServerless,
    serverless_proxy: TwilioProxy,
) -> None:
    numbers.provision(api, settings, store.sessions, ["sales2"])
    before = len(serverless_proxy.records)
    (state,) = numbers.reconcile(api, settings, store.sessions)
    assert state.fallback_assets == [] and state.changes == {}
    assert writes(serverless_proxy, before) == []
    assert len(fake_serverless.builds) == 1


def test_a_holder_change_republishes_that_numbers_documents(
    api: TwilioApi,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    fake_serverless: FakeServerless,
    serverless_proxy: TwilioProxy,
) -> None:
    numbers.provision(api, settings, store.sessions, ["sales1", "sales2"])
    first_versions = set(fake_serverless.versions)
    change_holder(store, "sales1", "bob@acme.example")
    before = len(serverless_proxy.records)

    (state,) = numbers.reroute(settings, store.sessions, "sales1", api)

    assert state.fallback_assets == [f"/{BOUGHT}.xml", f"/{BOUGHT}-sms.xml"]
    posts = writes(serverless_proxy, before)
    assert [kind(p) for p in posts] == ["upload", "upload", "build", "deployment"]
    # The build holds the two new versions and sales2's two unchanged ones.
    (build,) = [p for p in posts if kind(p) == "build"]
    new = set(fake_serverless.versions) - first_versions
    assert len(new) == 2 and new <= set(build.form["AssetVersions"])
    assert len(build.form["AssetVersions"]) == 4
    assert served_numbers(fake_serverless, BOUGHT) == [BOB_PHONE, "+15550100"]
    assert served_numbers(fake_serverless, SALES2) == [BOB_PHONE, "+15550100"]
    with store.sessions() as session:
        assert len(session.scalars(select(FallbackAsset)).all()) == 4


def test_build_and_deployment_are_made_once_through_5xx_timeouts_and_429(
    api: TwilioApi,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    fake_serverless: FakeServerless,
    serverless_proxy: TwilioProxy,
) -> None:
    serverless_proxy.inject("POST", BUILDS, "429", 1)
    serverless_proxy.inject("POST", BUILDS, "500-after", 1)  # built, answer lost
    serverless_proxy.inject("POST", DEPLOYMENTS, "timeout", 1)  # deployed, answer lost
    serverless_proxy.inject("POST", DEPLOYMENTS, "500", 1)
    numbers.provision(api, settings, store.sessions, ["sales2"])

    builds = [r for r in writes(serverless_proxy) if kind(r) == "build"]
    assert [b.status for b in builds] == [429, 500]
    assert len(fake_serverless.builds) == 1  # the lost answer's build was found, not redone
    deployments = [r for r in writes(serverless_proxy) if kind(r) == "deployment"]
    assert [d.status for d in deployments] == [0]
    assert len(fake_serverless.deployments) == 1
    assert serverless_proxy.calls("GET", BUILDS) and serverless_proxy.calls("GET", DEPLOYMENTS)
    (environment,) = fake_serverless.environments.values()
    assert environment["build_sid"] == next(iter(fake_serverless.builds))


def test_an_upload_whose_answer_is_lost_is_not_uploaded_twice(
    api: TwilioApi,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    fake_serverless: FakeServerless,
    serverless_proxy: TwilioProxy,
) -> None:
    serverless_proxy.inject("POST", VERSIONS, "timeout", 1)
    serverless_proxy.inject("POST", VERSIONS, "500", 1)
    numbers.provision(api, settings, store.sessions, ["sales2"])
    uploads = [r for r in writes(serverless_proxy) if kind(r) == "upload"]
    # The first upload was made but its answer lost: found, not sent again. The second
    # asset's upload met a 500 before anything was made: sent again.
    assert [u.status for u in uploads] == [0, 500, 201]
    assert len(fake_serverless.versions) == 2
    (build,) = [r for r in writes(serverless_proxy) if kind(r) == "build"]
    assert sorted(build.form["AssetVersions"]) == sorted(fake_serverless.versions)


def test_a_failed_build_is_reported_and_published_on_the_next_pass(
    api: TwilioApi,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    fake_serverless: FakeServerless,
    serverless_proxy: TwilioProxy,
) -> None:
    fake_serverless.build_statuses = ["building", "failed"]
    with pytest.raises(BuildFailed, match="could not build"):
        numbers.provision(api, settings, store.sessions, ["sales2"])
    assert not [r for r in writes(serverless_proxy) if kind(r) == "deployment"]
    with store.sessions() as session:
        assert session.scalars(select(FallbackAsset)).all() == []

    (state,) = numbers.reconcile(api, settings, store.sessions)
    assert state.fallback_assets == [f"/{SALES2}.xml", f"/{SALES2}-sms.xml"]
    assert len(fake_serverless.deployments) == 1


def test_a_build_that_never_finishes_is_reported(
    tmp_path: Path,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    fake_serverless: FakeServerless,
) -> None:
    slow = with_fallback(settings, build_timeout_seconds=0.5)
    assert slow.twilio is not None
    fake_serverless.build_statuses = ["building"] * 10
    with pytest.raises(BuildFailed, match="still 'building'"):
        numbers.provision(TwilioApi(slow.twilio), slow, store.sessions, ["sales2"])


def test_another_build_deployed_by_hand_is_replaced(
    api: TwilioApi,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    fake_serverless: FakeServerless,
    serverless_proxy: TwilioProxy,
) -> None:
    numbers.provision(api, settings, store.sessions, ["sales2"])
    (environment,) = fake_serverless.environments.values()
    environment["build_sid"] = "ZB" + "f" * 32
    before = len(serverless_proxy.records)
    numbers.reconcile(api, settings, store.sessions)
    # No upload: the deployed versions are built and deployed again.
    assert [kind(p) for p in writes(serverless_proxy, before)] == ["build", "deployment"]
    assert environment["build_sid"] != "ZB" + "f" * 32


def test_dry_run_publishes_nothing(
    api: TwilioApi,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    serverless_proxy: TwilioProxy,
) -> None:
    numbers.provision(api, settings, store.sessions, ["sales2"])
    change_holder(store, "sales2", "alice@acme.example")
    before = len(serverless_proxy.records)
    (state,) = numbers.reconcile(api, settings, store.sessions, dry_run=True)
    assert state.changes == {} and serverless_proxy.records[before:] == []


def test_changing_the_visibility_republishes_every_document(
    api: TwilioApi,
    settings: Settings,
    store: Store,
    fake: FakeNumbers,
    fake_serverless: FakeServerless,
    serverless_proxy: TwilioProxy,
) -> None:
    numbers.provision(api, settings, store.sessions, ["sales2"])
    public = with_fallback(settings, visibility="public")
    before = len(serverless_proxy.records)
    numbers.reconcile(api, public, store.sessions)
    uploads = [p for p in writes(serverless_proxy, before) if kind(p) == "upload"]
    assert sorted(u.one("Visibility") for u in uploads) == ["public", "public"]
    (environment,) = fake_serverless.environments
    assert {v for v, _ in fake_serverless.served(environment).values()} == {"public"}
