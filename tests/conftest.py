"""Shared fixtures: real SQLite files, real PostgreSQL databases, real subprocesses."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rolekeeper.config import Settings, settings_from_mapping
from rolekeeper.store.open import Store, open_store

pytest_plugins = ["tests.servers.dovecot", "tests.servers.prism", "tests.handover_org"]

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("ROLEKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, why: str) -> None:
    """Skip on a developer machine that lacks a peer; in CI a missing peer is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{why} (CI=true: integration peers must be present)")
    pytest.skip(why)


def sqlite_mapping(path: Path, **sections: dict[str, object]) -> dict[str, object]:
    return {
        "organisation": {"name": "Test Org", "domains": ["acme.example"], "default_region": "RU"},
        "database": {"url": f"sqlite:///{path}"},
        **sections,
    }


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return settings_from_mapping(sqlite_mapping(tmp_path / "rk.db"))


@pytest.fixture
def sqlite_store(sqlite_settings: Settings) -> Iterator[Store]:
    store = open_store(sqlite_settings)
    yield store
    store.close()


def _pg_admin() -> object | None:
    import psycopg

    try:
        return psycopg.connect(
            PG_ADMIN_URL.replace("postgresql://", "postgresql://", 1),
            autocommit=True,
            connect_timeout=3,
        )
    except psycopg.OperationalError:
        return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    admin = _pg_admin()
    require(admin is not None, f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    assert isinstance(admin, psycopg.Connection)
    name = f"rk_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return settings_from_mapping(sqlite_mapping(tmp_path / "rk.db"))
    url = request.getfixturevalue("pg_url")
    mapping = sqlite_mapping(tmp_path / "unused.db")
    mapping["database"] = {"url": url}
    return settings_from_mapping(mapping)


def import_sample_org(settings: Settings, store: Store) -> None:
    """The sample organisation of `rolekeeper demo` (people, roles, clients)."""
    from rolekeeper.sample import import_sample

    import_sample(store, settings, "test")
