"""The admin commands end to end, as an admin runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from rolekeeper.lab.ports import free_port


def rk(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rolekeeper", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("demo")
    result = rk("demo", "--dir", str(state))
    assert "import clients" in result.stdout
    return state / "rolekeeper.toml"


def rk_json(config: Path, *args: str) -> Any:
    return json.loads(rk("--config", str(config), *args, "--json").stdout)


def test_demo_imports_the_sample_organisation_and_is_repeatable(demo: Path) -> None:
    """Each run starts from a fresh store: the same import, the same departure."""
    again = rk("demo", "--dir", str(demo.parent)).stdout
    assert "import people      7 rows,   7 people: 7 new, 0 changed, 0 unchanged" in again
    assert "import clients    85 rows,  40 clients: 40 new, 0 changed, 0 unchanged" in again
    assert "Clients per segment: vip 2, key 11, regular 20, minor 7" in again
    assert "transition 1: done" in again
    assert "25 notices sent from the role mailboxes (9 in en, 16 in ru)" in again
    assert "The supervisor's report:" in again


def test_roles_people_clients_lists(demo: Path) -> None:
    roles = {r["role"]: r for r in rk_json(demo, "roles", "list")}
    # The demo ends with Ivan Petrov's departure: Maria Kuznetsova holds his roles.
    assert roles["manager1"]["holder"] == "maria.kuznetsova@acme.example"
    assert roles["manager1"]["number"] == "+74951204501"
    assert sum(r["clients"] for r in roles.values()) == 40
    people = {p["address"]: p for p in rk_json(demo, "people", "list")}
    assert people["maria.kuznetsova@acme.example"]["roles"] == [
        "manager1",
        "manager2",
        "manager3",
    ]
    assert people["ivan.petrov@acme.example"]["supervisor"] == "igor.smirnov@acme.example"
    vip = rk_json(demo, "clients", "list", "--segment", "vip")
    assert len(vip) == 2 and {c["segment"] for c in vip} == {"vip"}
    mine = rk_json(demo, "clients", "list", "--role", "manager1")
    assert len(mine) == roles["manager1"]["clients"]
    text = rk("--config", str(demo), "clients", "list", "--role", "manager1").stdout
    assert text.splitlines()[0].split() == ["ID", "CLIENT", "SEGMENT", "ROLE", "CONTACTS"]


def test_status_json(demo: Path) -> None:
    status = rk_json(demo, "status")
    assert status["organisation"] == "Acme (sample organisation)"
    assert status["clients_per_segment"] == {"vip": 2, "key": 11, "regular": 20, "minor": 7}
    assert status["contacts"] == 85
    assert status["open_transitions"] == []
    [source] = status["mail_sources"]  # the demo's private Dovecot
    assert (source["backend"], source["server"], source["folders"]) == ("imap", "127.0.0.1", 26)
    assert source["last_scan"] is not None
    from rolekeeper.jobkinds import job_kinds

    recurring = sum(1 for kind in job_kinds().values() if kind.recurring)
    # Every recurring job waits for its next time; nothing failed or is stuck.
    assert status["jobs"] == {"pending": recurring, "running": 0, "parked": 0}


@pytest.fixture
def smtp_port() -> Iterator[int]:
    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


def test_check_connect_names_the_failing_backend(tmp_path: Path, smtp_port: int) -> None:
    (tmp_path / "pw").write_text("secret")
    closed = free_port()
    config = tmp_path / "rk.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/rk.db"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "plain"\n'
        f'[imap]\nhost = "127.0.0.1"\nport = {closed}\nsecurity = "plain"\n'
        f'username = "admin"\npassword_file = "{tmp_path}/pw"\n'
    )
    assert rk("--config", str(config), "check").stdout.startswith("config ok")
    result = rk("--config", str(config), "check", "--connect", check=False)
    assert result.returncode == 1
    lines = {line.split()[1]: line for line in result.stdout.splitlines()[1:]}
    assert lines["database"].startswith("ok")
    assert lines["smtp"].startswith("ok") and "accepted a session" in lines["smtp"]
    assert lines["imap"].startswith("FAIL")
    assert lines["imap"].endswith("connection refused (nothing listening on that port?)")
    report = json.loads(
        rk("--config", str(config), "check", "--connect", "--json", check=False).stdout
    )
    assert {b["backend"]: b["ok"] for b in report["backends"]} == {
        "database": True,
        "imap": False,
        "sieve": False,
        "smtp": True,
    }


def test_check_warns_when_tls_is_not_verified(tmp_path: Path) -> None:
    config = tmp_path / "rk.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/rk.db"\n'
        '[smtp]\nhost = "smtp.acme.example"\nverify_tls = false\n'
    )
    result = rk("--config", str(config), "check")
    assert "warning: smtp.verify_tls = false" in result.stderr


def test_jobs_list_and_retry(tmp_path: Path) -> None:
    from rolekeeper.clock import utcnow
    from rolekeeper.config import load_settings
    from rolekeeper.store.db import transaction
    from rolekeeper.store.models import DueJob
    from rolekeeper.store.open import open_store

    config = tmp_path / "rk.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/rk.db"\n')
    store = open_store(load_settings(config))
    with transaction(store.sessions) as session:
        job = DueJob(
            kind="maintenance.purge",
            due_at=utcnow(),
            status="parked",
            attempts=5,
            last_error="OperationalError: disk full",
        )
        session.add(job)
        session.flush()
        job_id = job.id
    store.close()
    [listed] = rk_json(config, "jobs", "list")
    assert (listed["status"], listed["last_error"]) == ("parked", "OperationalError: disk full")
    assert (
        rk("--config", str(config), "jobs", "retry", str(job_id)).stdout
        == f"job {job_id} queued again\n"
    )
    [listed] = rk_json(config, "jobs", "list")
    assert (listed["status"], listed["attempts"]) == ("pending", 0)
    again = rk("--config", str(config), "jobs", "retry", str(job_id), check=False)
    assert again.returncode == 4 and again.stderr == f"error: job {job_id} is not parked\n"


def test_demo_watches_the_sample_mail(demo: Path) -> None:
    from rolekeeper.lab.dovecot import SIEVE_PLUGIN, dovecot_binary
    from tests.conftest import require

    require(dovecot_binary() is not None and SIEVE_PLUGIN.exists(), "Dovecot is not installed")
    incidents = rk_json(demo, "incidents", "list")
    live = {(i["rule"], i["person"], i["client"]) for i in incidents if i["live"]}
    assert live == {
        ("client-to-named", "ivan.petrov@acme.example", "CRM-1002"),
        ("named-to-client", "ivan.petrov@acme.example", "CRM-1002"),
        ("personal-in-client-thread", "ivan.petrov@acme.example", "CRM-1001"),
        ("client-thread-forwarded-out", "ivan.petrov@acme.example", "CRM-1001"),
        ("private-contact-in-text", "maria.kuznetsova@acme.example", "CRM-1009"),
    }
    backfilled = [i for i in incidents if not i["live"]]
    assert [(i["rule"], i["message"]) for i in backfilled] == [
        ("client-to-named", "<hist-named@demo.acme.example>")
    ]
