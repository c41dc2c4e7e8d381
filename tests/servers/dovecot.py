"""The session's private Dovecot, as a pytest fixture (the server itself: rolekeeper.lab)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sievelib.managesieve import Client as SieveClient

from rolekeeper.lab.dovecot import SIEVE_PLUGIN, DovecotServer, dovecot_binary, running_dovecot


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer]:
    """One private Dovecot for the whole session; tests add the users they need."""
    from tests.conftest import require

    require(dovecot_binary() is not None, "Dovecot is not installed (scripts/bootstrap test)")
    require(SIEVE_PLUGIN.exists(), f"Pigeonhole is not installed ({SIEVE_PLUGIN} is missing)")
    with running_dovecot() as server:
        yield server


def clear_sieve(server: DovecotServer, mailbox: str) -> None:
    """No Sieve script left in the mailbox: the session's Dovecot is shared by every test,
    and filtering one test leaves behind would act on the next one's mail."""
    client = SieveClient(server.host, server.sieve_port)
    assert client.connect(*server.master_login(mailbox), starttls=False, authmech="PLAIN")
    try:
        assert client.setactive("")
        for name in client.listscripts()[1]:
            assert client.deletescript(name)
    finally:
        client.logout()
