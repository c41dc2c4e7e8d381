"""Rule 6 in the store: a VIP client's silence becomes one warning until its mail resumes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import Settings, load_settings
from rolekeeper.quietwatch import record_quiet_clients
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Client, ClientArrival, Incident, Person
from rolekeeper.store.open import Store, open_store
from tests.conftest import import_sample_org


@pytest.fixture
def org(tmp_path: Path) -> Iterator[tuple[Settings, Store]]:
    config = tmp_path / "rk.toml"
    config.write_text(DEMO_CONFIG.format(db=tmp_path / "rk.db"), encoding="utf-8")
    settings = load_settings(config)
    store = open_store(settings)
    import_sample_org(settings, store)
    yield settings, store
    store.close()


def test_quiet_vip_client_warned_once_per_silence(org: tuple[Settings, Store]) -> None:
    settings, store = org
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    with transaction(store.sessions) as session:
        vip = session.scalars(select(Client).where(Client.crm_id == "CRM-1018")).one()
        regular = session.scalars(select(Client).where(Client.crm_id == "CRM-1001")).one()
        for client in (vip, regular):
            for n, days in enumerate((70, 63, 56, 49, 42)):
                session.add(
                    ClientArrival(
                        client_id=client.id,
                        message_key=f"<{client.id}-{n}>",
                        arrived_at=now - timedelta(days=days),
                    )
                )
    assert record_quiet_clients(store.sessions, settings, now, live=True) == 1
    assert record_quiet_clients(store.sessions, settings, now + timedelta(days=1), live=True) == 0
    with store.sessions() as session:
        [(incident, holder)] = session.execute(
            select(Incident, Person.named_address).join(Person, Person.id == Incident.person_id)
        ).all()
    assert (incident.rule, incident.segment, holder) == (
        "key-client-quiet",
        "vip",
        "pavel.novikov@acme.example",
    )
    assert incident.evidence == "no mail for 42 days; usually every 7.0 days (last 2026-10-12)"
    # Mail resumes, then stops again: a new silence is a new warning.
    with transaction(store.sessions) as session:
        for days in (2, 9, 16, 23, 30):
            session.add(
                ClientArrival(
                    client_id=vip.id,
                    message_key=f"<back-{days}>",
                    arrived_at=now + timedelta(days=days),
                )
            )
    assert record_quiet_clients(store.sessions, settings, now + timedelta(days=31), live=True) == 0
    assert record_quiet_clients(store.sessions, settings, now + timedelta(days=60), live=True) == 1


def test_as_of_replay_sees_only_the_past_and_keys_its_warnings_apart(
    org: tuple[Settings, Store],
) -> None:
    settings, store = org
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    with transaction(store.sessions) as session:
        vip = session.scalars(select(Client).where(Client.crm_id == "CRM-1018")).one()
        # Weekly mail until 42 days ago, then one message 10 days ago.
        for n, days in enumerate((70, 63, 56, 49, 42, 10)):
            session.add(
                ClientArrival(
                    client_id=vip.id, message_key=f"<v-{n}>", arrived_at=now - timedelta(days=days)
                )
            )
    # As of 15 days ago the client had been silent for 27 days (over 3x its weekly habit):
    # quiet, although a later arrival is stored.
    past = now - timedelta(days=15)
    assert record_quiet_clients(store.sessions, settings, past, live=False) == 1
    with store.sessions() as session:
        [replayed] = session.scalars(select(Incident))
    assert not replayed.live and replayed.message_key.endswith(":as-of:2026-11-08")
    # The same silence judged live later is its own warning, not hidden by the replay's.
    assert record_quiet_clients(store.sessions, settings, past, live=True) == 1
