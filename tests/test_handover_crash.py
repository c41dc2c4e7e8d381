"""SIGKILL the daemon in the middle of a departure, restart it: every contact ends with
exactly one notice, every step done, nothing "unknown" (the journal is configured)."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rolekeeper.cli import main
from rolekeeper.config import Settings
from rolekeeper.lab.dovecot import DovecotServer
from rolekeeper.lab.relay import LmtpRelay
from rolekeeper.store.models import Notice, Transition, TransitionStep
from rolekeeper.store.open import Store, open_store
from tests.daemon_support import Daemon
from tests.handover_org import (
    JOURNAL,
    LEAVER,
    SUCCESSOR,
    build_org,
    handover_settings,
)

DAEMON_CONFIG = """
[scheduler]
poll_seconds = 0.3
"""
WATCH = 'idle_folders = 0\npoll_seconds = 3600\nparse_workers = 0\nfolders = ["INBOX"]\n'


def settings_for(tmp: Path, server: DovecotServer) -> Settings:
    from rolekeeper.config import load_settings

    path = handover_settings(tmp, server, DAEMON_CONFIG).source_files[0]
    text = path.read_text()
    text = text.replace('level = "warning"', 'level = "info"\nformat = "json"')
    journal = f'[watch]\njournal_mailbox = "{JOURNAL}"\n'
    path.write_text(text.replace(journal, journal + WATCH))
    return load_settings(path)


def status(store: Store) -> tuple[str, dict[str, int]]:
    with store.sessions() as session:
        transition = session.scalars(select(Transition)).one()
        counts = dict(
            session.execute(select(Notice.status, func.count()).group_by(Notice.status)).all()
        )
    return transition.status, {k: int(v) for k, v in counts.items()}


def wait_until_done(store: Store, daemon: Daemon, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(store)[0] == "done":
            return
        assert daemon.proc.poll() is None, Path(daemon.log.name).read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"not done: {status(store)}; {Path(daemon.log.name).read_text()[-3000:]}")


def check_exactly_once(
    store: Store, server: DovecotServer, contacts: list[tuple[str, str]]
) -> None:
    wanted = {address for address, _ in contacts}
    sent = Counter(
        rcpt
        for mail in server.smtp.messages
        if b"rk-notice-" in mail.content
        for rcpt in mail.rcpt_tos
        if rcpt in wanted
    )
    assert set(sent) == wanted, wanted - set(sent)
    assert max(sent.values()) == 1, [a for a, n in sent.items() if n > 1]
    with store.sessions() as session:
        assert set(session.scalars(select(Notice.status))) == {"sent"}
        steps = set(session.scalars(select(TransitionStep.status)))
    assert steps == {"done"}


def depart(settings: Settings) -> None:
    config = str(settings.source_files[0])
    assert main(["--config", config, "depart", LEAVER, "--successor", SUCCESSOR]) == 0


def restart_and_check(
    settings: Settings,
    store: Store,
    server: DovecotServer,
    relay: LmtpRelay,
    contacts: list[tuple[str, str]],
    timeout: float,
) -> None:
    """Start the daemon again, let it finish the departure, check every contact once."""
    relay.drain()
    daemon = Daemon(settings, settings.source_files[0].parent / "daemon.log")
    try:
        wait_until_done(store, daemon, timeout=timeout)
    finally:
        daemon.stop()
    relay.drain()
    check_exactly_once(store, server, contacts)


POINTS = [
    "step.reassign.before",
    "step.reassign.done",
    "step.phones.done",
    "step.named_mailbox.done",
    "step.queue_notices.done",
    "notice.sending#3",
    "notice.accepted.uncommitted#3",
    "notice.accepted#3",
    "notice.filed.uncommitted#3",
    "notice.sent#3",
    "step.send_notices.done",
    "step.report.before",
]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_stored_state_then_restart(
    point: str, tmp_path: Path, dovecot_server: DovecotServer, relay: LmtpRelay
) -> None:
    settings = settings_for(tmp_path, dovecot_server)
    store = open_store(settings)
    try:
        tag = f"k{POINTS.index(point)}"
        contacts, _ = build_org(tmp_path, settings, store, dovecot_server, tag, 8)
        depart(settings)
        crashing = Daemon(settings, tmp_path / "daemon.log", ROLEKEEPER_CRASH_AT=point)
        try:
            assert crashing.proc.wait(60) == -signal.SIGKILL
        finally:
            crashing.proc.kill()
            crashing.stop()
        restart_and_check(settings, store, dovecot_server, relay, contacts, timeout=120)
    finally:
        store.close()


def test_sigkill_at_random_points_of_a_1000_notice_departure(
    tmp_path: Path, dovecot_server: DovecotServer, relay: LmtpRelay
) -> None:
    settings = settings_for(tmp_path, dovecot_server)
    store = open_store(settings)
    try:
        contacts, _ = build_org(tmp_path, settings, store, dovecot_server, "rnd", 1000)
        depart(settings)
        kills = sorted(random.Random(7).sample(range(20, 980), 5))
        for threshold in kills:
            daemon = Daemon(settings, tmp_path / "daemon.log")
            try:
                deadline = time.monotonic() + 180
                while status(store)[1].get("sent", 0) < threshold:
                    assert time.monotonic() < deadline, status(store)
                    assert daemon.proc.poll() is None
                    time.sleep(0.01)
            finally:
                daemon.proc.kill()
                daemon.proc.wait(10)
                daemon.stop()
        restart_and_check(settings, store, dovecot_server, relay, contacts, timeout=300)
    finally:
        store.close()
