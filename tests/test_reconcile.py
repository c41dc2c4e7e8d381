"""Role mailbox access and send-as against a real Dovecot and a real aiosmtpd submission
server: the reconciler's plan, apply, drift repair and audit trail."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from imapclient.exceptions import IMAPClientError
from sqlalchemy import select

from rolekeeper import reconcile
from rolekeeper.clock import utcnow
from rolekeeper.config import Settings, settings_from_mapping
from rolekeeper.jobkinds import job_kinds
from rolekeeper.lab.dovecot import DovecotServer
from rolekeeper.lab.smtp import SubmissionServer
from rolekeeper.provision.access import build_access
from rolekeeper.reconcile import Change
from rolekeeper.store.db import transaction
from rolekeeper.store.models import AuditEntry, Person, Role, RoleHolder
from rolekeeper.store.open import Store, open_store
from tests.conftest import sqlite_mapping

HOLDER_RIGHTS = "eiklprstwx"  # the default "lrwstipekx", as rights compare (sorted)


@dataclass
class World:
    dovecot: DovecotServer
    settings: Settings
    store: Store
    config: Path
    role: str
    a: str
    b: str
    boss: str
    passwords: dict[str, str]
    sender_map: Path

    def plan(self) -> list[Change]:
        with self.store.sessions() as session:
            return reconcile.plan(session, self.settings, build_access(self.settings))

    def apply(self, changes: list[Change]) -> list[Change]:
        return reconcile.apply(
            self.store.sessions, self.settings, build_access(self.settings), changes
        )

    def hand_over(self, old: str, new: str) -> None:
        """What the transition engine does in the store: close one holder row, open one."""
        with transaction(self.store.sessions) as session:
            role = session.scalars(select(Role).where(Role.address == self.role)).one()
            people = {p.named_address: p.id for p in session.scalars(select(Person))}
            current = session.scalars(
                select(RoleHolder).where(
                    RoleHolder.role_id == role.id,
                    RoleHolder.person_id == people[old],
                    RoleHolder.ended_at.is_(None),
                )
            ).one()
            current.ended_at = utcnow()
            session.flush()
            session.add(RoleHolder(role_id=role.id, person_id=people[new], kind="holder"))

    def audit(self) -> list[AuditEntry]:
        with self.store.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.action.in_(reconcile.KINDS))
                    .order_by(AuditEntry.id)
                )
            )

    def shared(self, folder: str = "INBOX") -> str:
        return f"shared/{self.role}/{folder}"


@pytest.fixture
def world_factory(dovecot_server: DovecotServer, tmp_path: Path) -> Iterator[Any]:
    stores: list[Store] = []

    def build(smtp_login: str | None = None, **provisioning: Any) -> World:
        tag = uuid.uuid4().hex[:8]
        role, a, b, boss = (f"{n}-{tag}@acme.example" for n in ("mgr", "ann", "bob", "boss"))
        passwords = {a: f"pa-{tag}", b: f"pb-{tag}", boss: f"ps-{tag}"}
        dovecot_server.add_users(passwords)
        sender_map = tmp_path / "sender_login_maps"
        sections = tomllib.loads(dovecot_server.config_sections(tmp_path / "imap-password"))
        settings_map: dict[str, Any] = {
            "mailbox": "dovecot-passwd",
            "userdb_path": str(dovecot_server.users_path),
            "send_as": "map",
            "sender_map_path": str(sender_map),
            "postmap_command": [],
            "supervisors": [boss],
        }
        settings_map.update(provisioning)
        mapping = sqlite_mapping(tmp_path / "rk.db", provisioning=settings_map, **sections)
        if smtp_login:
            mapping["smtp"] = {"host": "127.0.0.1", "security": "plain", "username": smtp_login}
        settings = settings_from_mapping(mapping)
        config = tmp_path / "rolekeeper.toml"
        config.write_text(_toml(mapping), encoding="utf-8")
        store = open_store(settings)
        stores.append(store)
        with transaction(store.sessions) as session:
            people = {
                address: Person(name=address.split("@")[0], named_address=address)
                for address in (a, b, boss)
            }
            session.add_all(people.values())
            role_row = Role(key=f"mgr-{tag}", name="Manager", address=role)
            session.add(role_row)
            session.flush()
            session.add(RoleHolder(role_id=role_row.id, person_id=people[a].id, kind="holder"))
        return World(
            dovecot_server, settings, store, config, role, a, b, boss, passwords, sender_map
        )

    yield build
    for store in stores:
        store.close()


def _toml(data: dict[str, Any]) -> str:
    """Enough TOML for these settings (tables of strings, numbers, lists)."""
    import json

    lines: list[str] = []
    for table, values in data.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def can_read(world: World, login: str, folder: str = "INBOX") -> bool:
    with world.dovecot.imap(login, world.passwords[login]) as client:
        try:
            client.select_folder(world.shared(folder), readonly=True)
        except IMAPClientError:
            return False
        return True


def kinds(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.kind, c.identifier) for c in changes]


def test_holder_change_moves_access_and_repairs_drift(world_factory: Any) -> None:
    world: World = world_factory()
    first = world.plan()
    assert kinds(first) == [
        ("mailbox.create", ""),
        ("acl.grant", world.a),
        ("acl.grant", world.boss),
        ("sendas.grant", world.a),
    ]
    assert first[0].describe() == f"create role mailbox {world.role}"
    applied = world.apply(first)
    assert kinds(applied) == kinds(first)
    assert world.plan() == []
    # The role mailbox exists, without a usable password of its own.
    users = world.dovecot.users_path.read_text()
    assert f"{world.role}:{{SSHA512}}" in users
    with pytest.raises(IMAPClientError):
        world.dovecot.imap(world.role, "")

    world.dovecot.deliver(world.role, b"Subject: order\r\n\r\nHello\r\n")
    assert can_read(world, world.a)
    assert can_read(world, world.boss)
    assert not can_read(world, world.b)

    world.hand_over(world.a, world.b)
    second = world.plan()
    assert kinds(second) == [
        ("acl.grant", world.b),
        ("acl.revoke", world.a),
        ("sendas.grant", world.b),
        ("sendas.revoke", world.a),
    ]
    assert second[0].rights == HOLDER_RIGHTS
    assert second[1].describe().startswith(f"revoke {world.a} (had ")
    world.apply(second)

    # B reads the role's mail with B's own password; A cannot open the folder any more.
    with world.dovecot.imap(world.b, world.passwords[world.b]) as client:
        info = client.select_folder(world.shared(), readonly=True)
        assert info[b"EXISTS"] == 1
    assert not can_read(world, world.a)
    # The supervisor may read but not file mail into the role mailbox ("lr").
    boss = world.dovecot.imap(world.boss, world.passwords[world.boss])
    with boss as client, pytest.raises(IMAPClientError):
        client.append(world.shared(), b"Subject: x\r\n\r\nx\r\n")

    # Someone gives A access again by hand: the next pass takes it away.
    with world.dovecot.imap(*world.dovecot.master_login(world.role)) as admin:
        admin.setacl("INBOX", world.a, "lrs")
    assert can_read(world, world.a)
    drift = world.plan()
    assert kinds(drift) == [("acl.revoke", world.a)]
    assert drift[0].folders == ("INBOX",) and drift[0].rights == "lrs"
    world.apply(drift)
    assert not can_read(world, world.a)
    assert world.plan() == []

    # A folder the holder creates gets the same ACL on the next pass (inherited or repaired).
    with world.dovecot.imap(*world.dovecot.master_login(world.role)) as admin:
        admin.create_folder("Archive")
    world.apply(world.plan())
    assert can_read(world, world.b, "Archive")
    assert not can_read(world, world.a, "Archive")
    assert world.plan() == []

    audit = world.audit()
    assert [(e.action, e.target) for e in audit][:4] == [
        ("mailbox.create", world.role),
        ("acl.grant", world.role),
        ("acl.grant", world.role),
        ("sendas.grant", world.role),
    ]
    revokes = [e for e in audit if e.action == "acl.revoke"]
    assert [e.detail["identifier"] for e in revokes] == [world.a, world.a]
    assert revokes[1].detail["folders"] == ["INBOX"]
    assert all(e.actor == reconcile.ACTOR for e in audit)


def test_send_as_map_and_submission_server(world_factory: Any) -> None:
    world: World = world_factory()
    world.apply(world.plan())
    world.hand_over(world.a, world.b)
    world.apply(world.plan())
    # The map says exactly: B, and nobody else, may send as the role address.
    text = world.sender_map.read_text()
    entries = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert entries == [[world.role, world.b]]

    message = f"From: {world.role}\r\nSubject: hello\r\n\r\nHi\r\n".encode()
    with SubmissionServer(world.passwords, world.sender_map) as server:
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            smtp.login(world.b, world.passwords[world.b])
            assert smtp.sendmail(world.role, ["client@outside.example"], message) == {}
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            smtp.login(world.a, world.passwords[world.a])
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                smtp.sendmail(world.role, ["client@outside.example"], message)
            assert refused.value.smtp_code == 553
            # A may still send as A's own address (not in the role map).
            assert smtp.sendmail(world.a, ["client@outside.example"], message) == {}
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPSenderRefused) as unauthenticated:
                smtp.sendmail(world.role, ["client@outside.example"], message)
            assert unauthenticated.value.smtp_code == 530
        mails = server.wait_for(2)
    assert [m.mail_from for m in mails] == [world.role, world.a]
    assert server.refused == [(world.a, world.role)]


def test_send_as_map_keeps_admin_lines_and_runs_postmap(world_factory: Any, tmp_path: Path) -> None:
    log = tmp_path / "postmap.log"
    postmap = tmp_path / "postmap"
    postmap.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    postmap.chmod(0o755)
    world: World = world_factory(postmap_command=[str(postmap), "hash:{path}"])
    world.sender_map.write_text(
        f"# people send as themselves\nann@acme.example  ann@acme.example\n"
        f"{world.role}  intruder@acme.example\n"
    )
    changes = world.plan()
    assert ("sendas.revoke", "intruder@acme.example") in kinds(changes)
    world.apply(changes)
    text = world.sender_map.read_text()
    assert text.startswith("# people send as themselves\nann@acme.example  ann@acme.example\n")
    assert "intruder" not in text
    assert log.read_text() == f"hash:{world.sender_map}\n"
    assert world.plan() == []


def rk(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rolekeeper", "--config", str(config), "reconcile", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_dry_run_changes_nothing_and_the_cli(world_factory: Any) -> None:
    world: World = world_factory()
    users_before = world.dovecot.users_path.read_text()
    result = rk(world.config, "--once", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["dry_run"] is True
    assert [c["kind"] for c in out["changes"]] == [
        "mailbox.create",
        "acl.grant",
        "acl.grant",
        "sendas.grant",
    ]
    assert out["changes"][1]["identifier"] == world.a
    assert world.dovecot.users_path.read_text() == users_before
    assert not world.sender_map.exists()
    assert world.audit() == []

    result = rk(world.config, "--once")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"done: create role mailbox {world.role}",
        f"done: grant {world.a} rights {HOLDER_RIGHTS!r} on {world.role} (INBOX)",
        f"done: grant {world.boss} rights 'lr' on {world.role} (INBOX)",
        f"done: allow {world.a} to send as {world.role}",
    ]
    assert [e.actor.startswith("cli:") for e in world.audit()] == [True] * 4
    result = rk(world.config, "--once", "--role", "nope")
    assert result.returncode == 4 and "no such role: nope" in result.stderr
    result = rk(world.config, "--once", "--dry-run", "--role", world.role)
    assert (result.returncode, result.stdout) == (0, "nothing to change\n")


def test_command_provisioners(
    world_factory: Any, dovecot_server: DovecotServer, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.log"
    state = tmp_path / "sendas.state"
    state.touch()
    mkmbox = tmp_path / "mkmbox"
    users = dovecot_server.users_path
    # The admin's program: here it adds the user to the lab Dovecot's passwd-file.
    mkmbox.write_text(
        "#!/bin/sh\n"
        f'echo "mkmbox $1" >> {calls}\n'
        f'grep -q "^$1:" {users} || printf "%s:{{PLAIN}}unused-%s::::::\\n" "$1" "$$" >> {users}\n'
    )
    grant = tmp_path / "grant"
    grant.write_text(f'#!/bin/sh\necho "grant $1 $2" >> {calls}\necho "$1 $2" >> {state}\n')
    revoke = tmp_path / "revoke"
    revoke.write_text(
        f'#!/bin/sh\necho "revoke $1 $2" >> {calls}\n'
        f'grep -v "^$1 $2$" {state} > {state}.new; mv {state}.new {state}\n'
    )
    for program in (mkmbox, grant, revoke):
        program.chmod(0o755)
    world: World = world_factory(
        mailbox="command",
        mailbox_command=[str(mkmbox), "{address}"],
        send_as="command",
        send_as_grant_command=[str(grant), "{address}", "{login}"],
        send_as_revoke_command=[str(revoke), "{address}", "{login}"],
    )
    world.apply(world.plan())
    assert calls.read_text().splitlines() == [
        f"mkmbox {world.role}",
        f"grant {world.role} {world.a}",
    ]
    assert can_read(world, world.a)
    # No list command: what was granted is read back from the audit log.
    assert world.plan() == []
    world.hand_over(world.a, world.b)
    world.apply(world.plan())
    assert calls.read_text().splitlines()[2:] == [
        f"grant {world.role} {world.b}",
        f"revoke {world.role} {world.a}",
    ]
    assert state.read_text() == f"{world.role} {world.b}\n"
    assert world.plan() == []


def test_failing_mailbox_command_is_reported_and_others_go_on(
    world_factory: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "mkmbox"
    broken.write_text("#!/bin/sh\necho 'quota exceeded for domain' >&2\nexit 3\n")
    broken.chmod(0o755)
    world: World = world_factory(mailbox="command", mailbox_command=[str(broken), "{address}"])
    with pytest.raises(reconcile.ReconcileError) as failed:
        world.apply(world.plan())
    reasons = dict((c.kind + " " + c.identifier, why) for c, why in failed.value.failures)
    assert reasons["mailbox.create "] == (
        f"{broken} {world.role}: exit status 3: quota exceeded for domain"
    )
    assert reasons[f"acl.grant {world.a}"] == "skipped: the role mailbox could not be created"
    # Send-as is independent of the mailbox and was applied (and audited).
    assert kinds(failed.value.applied) == [("sendas.grant", world.a)]
    assert [e.action for e in world.audit()] == ["sendas.grant"]


def test_adopt_does_not_create(world_factory: Any) -> None:
    world: World = world_factory(mailbox="adopt", send_as="none")
    changes = world.plan()
    assert kinds(changes) == [
        ("mailbox.create", ""),
        ("acl.grant", world.a),
        ("acl.grant", world.boss),
    ]
    with pytest.raises(reconcile.ReconcileError, match='"adopt" does not create mailboxes'):
        world.apply(changes)
    assert world.audit() == []


def test_coholders_and_holders_supervisor(world_factory: Any) -> None:
    world: World = world_factory(supervisors=[], holders_supervisor=True)
    with transaction(world.store.sessions) as session:
        people = {p.named_address: p for p in session.scalars(select(Person))}
        people[world.a].supervisor_id = people[world.boss].id
        role = session.scalars(select(Role).where(Role.address == world.role)).one()
        session.add(RoleHolder(role_id=role.id, person_id=people[world.b].id, kind="coholder"))
    changes = world.plan()
    assert kinds(changes) == [
        ("mailbox.create", ""),
        ("acl.grant", world.a),
        ("acl.grant", world.b),
        ("acl.grant", world.boss),
        ("sendas.grant", world.a),
        ("sendas.grant", world.b),
    ]
    world.apply(changes)
    assert can_read(world, world.a) and can_read(world, world.b) and can_read(world, world.boss)
    # The pair ends: the co-holder loses access and send-as.
    with transaction(world.store.sessions) as session:
        row = session.scalars(select(RoleHolder).where(RoleHolder.kind == "coholder")).one()
        row.ended_at = utcnow() + timedelta(seconds=-1)
    assert kinds(world.plan()) == [("acl.revoke", world.b), ("sendas.revoke", world.b)]


def test_reconcile_job_is_registered() -> None:
    kind = job_kinds()["reconcile.access"]
    settings = settings_from_mapping({"provisioning": {"reconcile_minutes": 5}})
    assert kind.every is not None and kind.every(settings) == timedelta(minutes=5)


def test_rolekeepers_own_smtp_login_may_send_as_roles(world_factory: Any) -> None:
    """Notices and nudges go out from the role address with rolekeeper's [smtp] login."""
    world: World = world_factory(smtp_login="Rolekeeper@acme.example", mailbox="adopt")
    sendas = [c for c in world.plan() if c.kind.startswith("sendas.")]
    assert kinds(sendas) == [
        ("sendas.grant", world.a),
        ("sendas.grant", "rolekeeper@acme.example"),
    ]
