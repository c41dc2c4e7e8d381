"""A real `rolekeeper run` subprocess: sd_notify, watchdog, SIGTERM, SIGHUP, due work at start."""

from __future__ import annotations

import json
import os
import select as io_select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from rolekeeper.clock import utcnow
from rolekeeper.config import load_settings
from rolekeeper.duework import schedule
from rolekeeper.store.db import transaction
from rolekeeper.store.models import ActionMail, AuditEntry, DueJob, Incident, UnreadableMessage
from rolekeeper.store.open import open_store

SECRET = "pa55-w0rd-that-must-not-leak"


def config_text(tmp: Path, poll: float = 3600, level: str = "info") -> str:
    return (
        f'[database]\nurl = "sqlite:///{tmp}/rk.db"\n'
        f'[scheduler]\npoll_seconds = {poll}\ninstance_id = "test-1"\n'
        f'[logging]\nlevel = "{level}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nusername = "rk"\npassword_file = "{tmp}/smtp.pw"\n'
    )


class Daemon:
    """Runs `python -m rolekeeper run`, collecting JSON log lines and sd_notify datagrams."""

    def __init__(self, config: Path, notify: Path, extra_env: dict[str, str]) -> None:
        self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_sock.bind(str(notify))
        self.notify_sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        env = {**os.environ, "NOTIFY_SOCKET": str(notify), **extra_env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rolekeeper", "--config", str(config), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stop = False
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            try:
                self.logs.append(json.loads(line))
            except json.JSONDecodeError:
                self.logs.append({"event": "<not json>", "line": line})

    def _listen(self) -> None:
        while not self._stop:
            try:
                data = self.notify_sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)

    def wait_for(self, predicate: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None and not predicate():
                break
            time.sleep(0.05)
        raise AssertionError(f"timed out; logs: {''.join(self.raw)[-3000:]}")

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs if entry.get("event") == event]

    def notified(self, key: str, value: str = "1") -> list[dict[str, str]]:
        return [m for m in self.messages if m.get(key) == value]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._stop = True
        self._listener.join(2)
        self.notify_sock.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    (tmp_path / "smtp.pw").write_text(SECRET)
    (tmp_path / "rolekeeper.toml").write_text(config_text(tmp_path))
    return tmp_path


@pytest.fixture
def start(state: Path) -> Iterator[Any]:
    daemons: list[Daemon] = []

    def _start(**env: str) -> Daemon:
        daemon = Daemon(state / "rolekeeper.toml", state / f"notify{len(daemons)}", env)
        daemons.append(daemon)
        return daemon

    yield _start
    for daemon in daemons:
        daemon.close()


def test_notify_ready_watchdog_and_stopping(start: Any, state: Path) -> None:
    daemon = start(WATCHDOG_USEC="600000")  # pings every 0.3 s
    daemon.wait_for(lambda: daemon.notified("READY"))
    ready = daemon.notified("READY")[0]
    assert ready["MAINPID"] == str(daemon.proc.pid)
    assert ready["STATUS"].startswith("running")
    daemon.wait_for(lambda: len(daemon.notified("WATCHDOG")) >= 3, timeout=5)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0
    daemon.wait_for(lambda: daemon.notified("STOPPING"), timeout=3)
    assert daemon.logged("stopped")
    # Logs are JSON (stdout is not a TTY) and never carry the secret.
    assert all(entry["event"] != "<not json>" for entry in daemon.logs)
    assert SECRET not in "".join(daemon.raw)


def test_job_due_during_downtime_runs_at_start(start: Any, state: Path) -> None:
    settings = load_settings(state / "rolekeeper.toml")
    store = open_store(settings)
    long_ago = utcnow() - timedelta(days=400)
    with transaction(store.sessions) as session:
        session.add(Incident(rule="r1", message_key="<old@x>", detected_at=long_ago))
        session.add(Incident(rule="r1", message_key="<new@x>"))
        session.add(
            UnreadableMessage(
                source="imap:x",
                folder="INBOX",
                uidvalidity=1,
                uid=1,
                reason="r",
                seen_at=long_ago,
            )
        )
        for n, status in enumerate(("sent", "sending")):  # an open one waits to be settled
            session.add(
                ActionMail(
                    kind="alert",
                    subject="incident:1",
                    message_id=f"<alert-{n}@x>",
                    recipient="boss@x",
                    incidents=[1],
                    status=status,
                    attempts=1,
                    created_at=long_ago,
                    updated_at=long_ago,
                )
            )
        # The daily purge fell due three hours ago, while the daemon was down.
        schedule(session, "maintenance.purge", utcnow() - timedelta(hours=3))
    store.close()
    daemon = start()  # poll_seconds is an hour: only the pass at start can run it
    daemon.wait_for(lambda: daemon.logged("job done"))
    store = open_store(settings)
    with store.sessions() as session:
        assert list(session.scalars(select(Incident.message_key))) == ["<new@x>"]
        purges = select(DueJob).where(DueJob.kind == "maintenance.purge").order_by(DueJob.id)
        statuses = [(j.kind, j.status) for j in session.scalars(purges)]
        assert statuses == [("maintenance.purge", "done"), ("maintenance.purge", "pending")]
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purge"))
        assert [(a.detail["incidents"], a.detail["events"]) for a in audit] == [(1, 1)]
        assert list(session.scalars(select(ActionMail.status))) == ["sending"]
    store.close()


def test_sigterm_lets_the_current_job_finish(start: Any, state: Path) -> None:
    settings = load_settings(state / "rolekeeper.toml")
    store = open_store(settings)
    with transaction(store.sessions) as session:
        schedule(session, "test.sleep", utcnow(), key="a", payload={"seconds": 2})
        schedule(session, "test.sleep", utcnow(), key="b", payload={"seconds": 2})
    store.close()
    daemon = start(ROLEKEEPER_TEST_HOOKS="1")
    daemon.wait_for(lambda: daemon.logged("job started"))
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0
    assert len(daemon.logged("job done")) == 1
    store = open_store(settings)
    with store.sessions() as session:
        statuses = {j.key: j.status for j in session.scalars(select(DueJob))}
    store.close()
    assert statuses["a"] == "done" and statuses["b"] == "pending"


def test_sighup_reloads_and_refuses_a_bad_config(start: Any, state: Path) -> None:
    config = state / "rolekeeper.toml"
    daemon = start()
    daemon.wait_for(lambda: daemon.notified("READY"))
    config.write_text(config_text(state) + "[logging]\nlevel = 'loud'\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.logged("reload refused: keeping the running config"))
    refused = daemon.logged("reload refused: keeping the running config")[0]
    assert any("logging" in p for p in refused["problems"])
    assert daemon.proc.poll() is None
    config.write_text(config_text(state, poll=0.5, level="debug"))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.logged("config reloaded"))
    assert daemon.logged("config reloaded")[0]["poll_seconds"] == 0.5
    assert daemon.notified("RELOADING")
    assert len(daemon.notified("READY")) == 3  # start, after the refusal, after the reload
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0


def test_bad_config_at_start_exits_2(state: Path) -> None:
    config = state / "rolekeeper.toml"
    config.write_text("[scheduler]\npoll_seconds = 'often'\n")
    result = subprocess.run(
        [sys.executable, "-m", "rolekeeper", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"config error: {config}: scheduler.poll_seconds:")
    assert "Traceback" not in result.stderr


def test_console_output_on_a_tty(state: Path) -> None:
    import pty

    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rolekeeper", "--config", str(state / "rolekeeper.toml"), "run"],
        stdout=child_fd,
        stderr=child_fd,
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
    )
    os.close(child_fd)
    seen = b""
    deadline = time.monotonic() + 20
    try:
        while b"ready" not in seen and time.monotonic() < deadline:
            seen += os.read(main_fd, 4096)
    finally:
        proc.send_signal(signal.SIGTERM)
        # Keep reading: a child whose terminal buffer is full blocks on its next log line.
        stop = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < stop:
            if io_select.select([main_fd], [], [], 0.1)[0]:
                try:
                    seen += os.read(main_fd, 4096)
                except OSError:
                    break  # the child closed the terminal
        assert proc.wait(20) == 0
        os.close(main_fd)
    text = seen.decode(errors="replace")
    lines = [line for line in text.splitlines() if "ready" in line]
    assert lines, text
    assert not lines[0].lstrip().startswith("{")  # human-readable, not JSON
    assert SECRET not in text
