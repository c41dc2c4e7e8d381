"""The scheduled rotation policy: due every N months, holders move one role along."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import load_settings
from rolekeeper.errors import ConfigError
from rolekeeper.store.models import Person, Role, Transition
from rolekeeper.store.open import open_store
from rolekeeper.workflows.policy import add_months, rotate_by_policy
from tests.conftest import import_sample_org


def test_add_months_keeps_the_day_or_takes_the_last() -> None:
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 15, tzinfo=UTC), 12) == datetime(2027, 11, 15, tzinfo=UTC)


def test_a_rotation_is_stored_when_due_and_not_before(tmp_path: Path) -> None:
    config = tmp_path / "rolekeeper.toml"
    config.write_text(
        DEMO_CONFIG.format(db=tmp_path / "rk.db")
        + '[handover]\nrotation_every_months = 12\nrotation_groups = [["manager1", "manager3"]]\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    store = open_store(settings)
    try:
        import_sample_org(settings, store)
        start = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
        first = rotate_by_policy(store.sessions, settings, start)
        assert first is not None
        assert rotate_by_policy(store.sessions, settings, add_months(start, 11)) is None
        assert rotate_by_policy(store.sessions, settings, add_months(start, 12)) is not None
        with store.sessions() as session:
            transition = session.get_one(Transition, first)
            plan = {
                session.get_one(Role, int(r)).key: session.get_one(Person, p).named_address
                for r, p in transition.plan["roles"].items()
            }
            assert len(list(session.scalars(select(Transition)))) == 2
    finally:
        store.close()
    # manager1 (Ivan) and manager3 (Maria) swap holders.
    assert plan == {
        "manager1": "maria.kuznetsova@acme.example",
        "manager3": "ivan.petrov@acme.example",
    }


def test_a_bad_group_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "rolekeeper.toml"
    config.write_text('[handover]\nrotation_groups = [["manager1"]]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"handover.rotation_groups: .*at least two roles"):
        load_settings(config)
