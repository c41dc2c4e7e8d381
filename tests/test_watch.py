"""The scanner against a private Dovecot: backfill, live mail, restarts, UIDVALIDITY changes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from rolekeeper.backends.imap import ImapSource
from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import Settings, load_settings
from rolekeeper.lab.dovecot import DovecotServer
from rolekeeper.store.models import (
    Candidate,
    ClientArrival,
    Incident,
    LearnedNumber,
    ScanCursor,
    UnreadableMessage,
)
from rolekeeper.store.open import Store, open_store
from rolekeeper.watch import Scanner
from tests.conftest import import_sample_org

SAMPLES = Path(__file__).parent / "samples"
IVAN = "ivan.petrov@acme.example"
MANAGER1 = "manager1@acme.example"


def sample(name: str, message_id: str | None = None) -> bytes:
    raw = (SAMPLES / f"{name}.eml").read_bytes()
    # Drop the expectation headers; give each use its own Message-ID when asked.
    lines = [line for line in raw.split(b"\n") if not line.startswith(b"X-Rolekeeper-Expect")]
    text = b"\n".join(lines)
    if message_id is not None:
        start = text.index(b"Message-ID: <") + len(b"Message-ID: <")
        end = text.index(b">", start)
        text = text[:start] + message_id.encode() + text[end:]
    return text


@pytest.fixture
def org(tmp_path: Path, dovecot_server: DovecotServer) -> Iterator[tuple[Settings, Store]]:
    config = tmp_path / "rolekeeper.toml"
    config.write_text(
        DEMO_CONFIG.format(db=tmp_path / "rk.db")
        + dovecot_server.config_sections(tmp_path / "master.pw")
        + '[watch]\nfolders = ["INBOX", "Sent"]\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    store = open_store(settings)
    import_sample_org(settings, store)
    scanner = scanner_for(settings, store)
    missing = {m: "pw" for m in scanner.mailboxes() if m not in _USERS}
    if missing:  # once per session: Dovecot sees new passwd-file users only a second later
        dovecot_server.add_users(missing)
        _USERS.update(missing)
    for mailbox in scanner.mailboxes():
        _empty(dovecot_server, mailbox)
    yield settings, store
    store.close()


_USERS: set[str] = set()


def _empty(server: DovecotServer, mailbox: str) -> None:
    with server.imap(*server.master_login(mailbox)) as client:
        for folder in ("INBOX", "Sent"):
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.select_folder(folder)
            uids = client.search(["ALL"])
            if uids:
                client.delete_messages(uids)
                client.expunge()


def scanner_for(settings: Settings, store: Store) -> Scanner:
    assert settings.imap is not None
    return Scanner(store.sessions, settings, ImapSource(settings.imap))


def incidents(store: Store) -> list[tuple[str, str, bool]]:
    with store.sessions() as session:
        rows = session.execute(
            select(Incident.rule, Incident.message_key, Incident.live).order_by(Incident.id)
        ).all()
    return [(r, k, live) for r, k, live in rows]


def count(store: Store, model: Any) -> int:
    with store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_backfill_records_without_acting_then_live_mail_is_live(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    dovecot_server.append(IVAN, "INBOX", sample("r1_client_to_named", "old-1@x"))
    dovecot_server.append(IVAN, "Sent", sample("r2_named_to_client", "old-2@x"))
    scanner = scanner_for(settings, store)
    reports = {(r.mailbox, r.folder): r for r in scanner.scan_all()}
    assert reports[(IVAN, "INBOX")].mode == "backfill"
    assert incidents(store) == [
        ("client-to-named", "<old-1@x>", False),
        ("named-to-client", "<old-2@x>", False),
    ]
    # New mail after the first pass is live; the old mail is not read again.
    dovecot_server.deliver(MANAGER1, sample("r3_personal_cc", "new-3@x"))
    reports = {(r.mailbox, r.folder): r for r in scanner.scan_all()}
    assert reports[(MANAGER1, "INBOX")].mode == "live"
    assert reports[(MANAGER1, "INBOX")].messages == 1
    assert reports[(IVAN, "INBOX")].messages == 0
    assert incidents(store)[-1] == ("personal-in-client-thread", "<new-3@x>", True)
    # A client writing to its role mailbox is an arrival for rule 6, and its numbers learned.
    assert count(store, ClientArrival) == 1
    scanner.source.close()


def test_restart_and_reconnect_lose_nothing_and_count_nothing_twice(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    first = scanner_for(settings, store)
    first.scan_all()
    for n in range(5):
        dovecot_server.deliver(IVAN, sample("r1_client_to_named", f"burst-{n}@x"))
    first.scan_all()
    first.source.close()  # the connection goes away, as at a restart
    dovecot_server.deliver(IVAN, sample("r1_client_to_named", "after-restart@x"))
    dovecot_server.deliver(IVAN, sample("r1_client_to_named", "burst-0@x"))  # a duplicate
    second = scanner_for(settings, store)
    second.scan_all()
    second.scan_all()
    keys = [key for _, key, _ in incidents(store)]
    assert sorted(keys) == sorted([f"<burst-{n}@x>" for n in range(5)] + ["<after-restart@x>"])
    with store.sessions() as session:
        cursor = session.scalar(
            select(ScanCursor.cursor).where(
                ScanCursor.source == f"imap:{IVAN}", ScanCursor.folder == "INBOX"
            )
        )
    with dovecot_server.imap(*dovecot_server.master_login(IVAN)) as client:
        status = client.folder_status("INBOX", [b"UIDVALIDITY", b"UIDNEXT"])
    assert cursor == f"{status[b'UIDVALIDITY']}:{status[b'UIDNEXT'] - 1}"
    second.source.close()


def test_uidvalidity_change_resyncs_without_duplicates(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    scanner = scanner_for(settings, store)
    scanner.scan_all()
    dovecot_server.deliver(IVAN, sample("r1_client_to_named", "before-rebuild@x"))
    scanner.scan_all()
    # The admin rebuilds the folder: same mail, new UIDVALIDITY.
    with dovecot_server.imap(*dovecot_server.master_login(IVAN)) as client:
        client.rename_folder("Sent", "Sent-old")
        client.create_folder("Sent")
    dovecot_server.append(IVAN, "Sent", sample("r2_named_to_client", "in-rebuilt@x"))
    dovecot_server.append(IVAN, "Sent", sample("r2_named_to_client", "in-rebuilt-2@x"))
    reports = {(r.mailbox, r.folder): r for r in scanner.scan_all()}
    assert reports[(IVAN, "Sent")].mode == "resync"
    assert incidents(store) == [
        ("client-to-named", "<before-rebuild@x>", True),
        ("named-to-client", "<in-rebuilt@x>", False),
        ("named-to-client", "<in-rebuilt-2@x>", False),
    ]
    with dovecot_server.imap(*dovecot_server.master_login(IVAN)) as client:
        client.delete_folder("Sent-old")
    scanner.source.close()


def test_unreadable_mail_is_recorded_and_skipped(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    scanner = scanner_for(settings, store)
    scanner.scan_all()
    # APPEND stores the bytes as given (LMTP would add Return-Path and Delivered-To).
    dovecot_server.append(IVAN, "INBOX", b"This is not a message at all.\r\nJust text.\r\n")
    dovecot_server.deliver(IVAN, sample("r1_client_to_named", "after-junk@x"))
    scanner.scan_all()
    with store.sessions() as session:
        [bad] = session.scalars(select(UnreadableMessage)).all()
    assert bad.source == f"imap:{IVAN}" and "no header fields" in bad.reason
    assert [key for _, key, _ in incidents(store)] == ["<after-junk@x>"]
    scanner.source.close()


def test_unknown_correspondents_become_candidates(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    scanner = scanner_for(settings, store)
    scanner.scan_all()
    message = (
        b"From: Buyer <buyer@new-prospect.example>\r\nTo: manager1@acme.example\r\n"
        b"Subject: price request\r\nMessage-ID: <prospect-1@x>\r\n\r\nHello\r\n"
    )
    dovecot_server.deliver(MANAGER1, message)
    dovecot_server.deliver(MANAGER1, message.replace(b"prospect-1", b"prospect-2"))
    dovecot_server.deliver(MANAGER1, message.replace(b"buyer@new-prospect.example", b"x@gmail.com"))
    scanner.scan_all()
    with store.sessions() as session:
        found = session.scalars(select(Candidate)).all()
    assert [c.address for c in found] == ["buyer@new-prospect.example"]
    [candidate] = found
    assert (candidate.address, candidate.domain, candidate.messages) == (
        "buyer@new-prospect.example",
        "new-prospect.example",
        2,
    )
    assert candidate.role_id is not None
    assert count(store, LearnedNumber) == 0
    scanner.source.close()

    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "rolekeeper", "--config", str(settings.source_files[0])]
    listed = json.loads(
        subprocess.run(
            [*cmd, "clients", "candidates", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert [(c["address"], c["role"]) for c in listed] == [
        ("buyer@new-prospect.example", "manager1")
    ]
    subprocess.run(
        [
            *cmd,
            "clients",
            "confirm",
            "buyer@new-prospect.example",
            "--new-client",
            "New Prospect",
            "--segment",
            "key",
        ],
        check=True,
        capture_output=True,
    )
    clients = json.loads(
        subprocess.run(
            [*cmd, "clients", "list", "--role", "manager1", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert {
        "client_id": "learned:new-prospect.example",
        "name": "New Prospect",
        "segment": "key",
        "role": "manager1",
        "contacts": 1,
    } in clients
    again = subprocess.run(
        [*cmd, "clients", "candidates", "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(again.stdout) == []


def test_scan_and_incidents_commands(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    import json
    import subprocess
    import sys

    settings, _ = org
    config = str(settings.source_files[0])
    dovecot_server.append(IVAN, "INBOX", sample("r1_client_to_named", "cli-1@x"))
    cmd = [sys.executable, "-m", "rolekeeper", "--config", config]
    scanned = json.loads(
        subprocess.run(
            [*cmd, "scan", "--once", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    inbox = next(r for r in scanned if r["mailbox"] == IVAN and r["folder"] == "INBOX")
    assert (inbox["mode"], inbox["messages"], inbox["incidents"]) == ("backfill", 1, 1)
    listed = json.loads(
        subprocess.run(
            [*cmd, "incidents", "list", "--person", IVAN, "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert [(i["rule"], i["client"], i["live"], i["message"]) for i in listed] == [
        ("client-to-named", "CRM-1001", False, "<cli-1@x>")
    ]
    from rolekeeper.store.models import AuditEntry

    with org[1].sessions() as session:
        [read] = session.scalars(select(AuditEntry).where(AuditEntry.action == "evidence.read"))
    assert read.detail == {"person": IVAN, "incidents": [listed[0]["id"]]}
    assert read.actor.startswith("cli:")
    replay = json.loads(
        subprocess.run(
            [*cmd, "scan", "--as-of", "2026-11-01", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert {r["mode"] for r in replay} == {"replay"}
    empty = subprocess.run(
        [*cmd, "incidents", "list", "--rule", "named-to-client"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert empty.stdout.strip() == "(none)"


@contextlib.contextmanager
def running_service(settings: Settings, store: Store, watch: str) -> Iterator[None]:
    """`rolekeeper run` with extra [watch] lines, once its first pass over all folders is done."""
    config = settings.source_files[0]
    text = config.read_text(encoding="utf-8").replace("[watch]\n", f"[watch]\n{watch}")
    config.write_text(text, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rolekeeper", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and count(store, ScanCursor) < 26:
            time.sleep(0.1)
        assert count(store, ScanCursor) == 26  # the first pass (a backfill) is done
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def wait_for_incidents(store: Store, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds and not incidents(store):
        time.sleep(0.05)
    return time.monotonic() - started


def test_the_service_watches_mail(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    with running_service(settings, store, "poll_seconds = 1\n"):
        dovecot_server.deliver(IVAN, sample("r1_client_to_named", "while-running@x"))
        wait_for_incidents(store, 10)
        assert incidents(store) == [("client-to-named", "<while-running@x>", True)]


def test_idle_sees_new_mail_without_polling(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    with running_service(settings, store, "poll_seconds = 3600\nidle_folders = 2\n"):
        time.sleep(1)  # the IDLE threads are waiting
        message = sample("r1_role_and_named", "idle-1@x")  # a client, Ivan in Cc
        # IDLE watches keyaccounts' and manager1's INBOX; the next poll is an hour away.
        dovecot_server.deliver("manager1@acme.example", message)
        took = wait_for_incidents(store, 5)
        assert incidents(store) == [("client-to-named", "<idle-1@x>", True)]
        assert took < 3


def test_the_same_folder_twice_sees_new_mail(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    """The connection keeps INBOX selected between scans; its state must still be fresh."""
    from rolekeeper.directory.snapshot import load_directory

    settings, store = org
    scanner = scanner_for(settings, store)
    with store.sessions() as session:
        directory = load_directory(session, settings)
    assert scanner.scan(IVAN, "INBOX", directory).mode == "backfill"
    for n in range(3):
        dovecot_server.deliver(IVAN, sample("r1_client_to_named", f"again-{n}@x"))
        report = scanner.scan(IVAN, "INBOX", directory)
        assert (report.mode, report.messages, report.incidents) == ("live", 1, 1)
    scanner.source.close()


def test_a_long_read_parsed_by_workers_stores_what_an_inline_read_stores(
    org: tuple[Settings, Store], dovecot_server: DovecotServer, tmp_path: Path
) -> None:
    """The pipelined read (parse workers, several batches) against the plain one."""
    settings, store = org
    names = sorted(p.stem for p in SAMPLES.glob("*.eml"))
    for n in range(3):
        for name in names:
            dovecot_server.append(IVAN, "INBOX", sample(name, f"{name}-{n}@x"))
    dovecot_server.append(IVAN, "INBOX", b"\x00\xff not a message at all\r\n")

    def scan_with(workers: int, target: Store, target_settings: Settings) -> list[Any]:
        watch = target_settings.watch.model_copy(update={"batch_size": 4, "parse_workers": workers})
        tuned = target_settings.model_copy(update={"watch": watch})
        scanner = scanner_for(tuned, target)
        try:
            report = scanner.scan(IVAN, "INBOX", scanner._recent_directory())
        finally:
            scanner.close()
            scanner.source.close()
        with target.sessions() as session:
            cursor = session.scalar(select(ScanCursor.cursor))
        return [report.as_dict(), incidents(target), count(target, UnreadableMessage), cursor]

    pooled = scan_with(2, store, settings)
    plain_settings = settings.model_copy(
        update={
            "database": settings.database.model_copy(update={"url": f"sqlite:///{tmp_path}/b.db"})
        }
    )
    plain_store = open_store(plain_settings)
    try:
        import_sample_org(plain_settings, plain_store)
        plain = scan_with(0, plain_store, plain_settings)
    finally:
        plain_store.close()
    assert pooled[0]["messages"] == 3 * len(names)
    assert pooled[0]["bodies"] > 0 and pooled[1] and pooled[2] == 1
    assert pooled == plain


def test_commits_in_order_stop_at_the_first_failure() -> None:
    """A later batch's cursor must never be stored after an earlier batch failed."""
    from rolekeeper.watch import InOrder

    ran: list[int] = []

    def fail() -> None:
        raise OSError("disk full")

    commits = InOrder()
    commits.submit(lambda: ran.append(1))
    commits.submit(fail)
    commits.submit(lambda: ran.append(3))
    with pytest.raises(OSError, match="disk full"):
        commits.wait()
    assert ran == [1]


def _imap_session_pids(server: DovecotServer) -> list[int]:
    """The server's IMAP session processes (children of its master named "imap")."""
    master = server._process.pid if server._process is not None else None
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                parent = int(stat[stat.rindex(")") + 2 :].split()[1])
                if name == "imap" and parent == master:
                    found.append(int(entry.name))
    return found


def _kill_imap_sessions(server: DovecotServer) -> int:
    """Drop every IMAP session from the server's side, as a restart or a kick does."""
    killed = 0
    for pid in _imap_session_pids(server):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def test_a_failing_mailbox_or_a_dropped_connection_stops_nothing(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    after = "zz-after@acme.example"  # read after the failing one (extra mailboxes keep order)
    if after not in _USERS:
        dovecot_server.add_users({after: "pw"})
        _USERS.add(after)
    _empty(dovecot_server, after)
    watch = settings.watch.model_copy(
        update={"extra_mailboxes": ("no-such-box@acme.example", after)}
    )
    settings = settings.model_copy(update={"watch": watch})
    dovecot_server.deliver(after, sample("r1_client_to_named", "after-1@x"))
    scanner = scanner_for(settings, store)
    reports = {(r.mailbox, r.folder): r for r in scanner.scan_all()}
    # The mailbox whose login fails is skipped; the one after it is read.
    assert ("no-such-box@acme.example", "INBOX") not in reports
    assert reports[(after, "INBOX")].messages == 1
    # The server drops every session; new mail is read in the same pass, on new connections.
    dovecot_server.deliver(after, sample("r1_client_to_named", "after-2@x"))
    dovecot_server.deliver(IVAN, sample("r1_client_to_named", "ivan-2@x"))
    assert _kill_imap_sessions(dovecot_server) > 0
    reports = {(r.mailbox, r.folder): r for r in scanner.scan_all()}
    assert reports[(after, "INBOX")].messages == 1
    assert reports[(IVAN, "INBOX")].messages == 1
    keys = sorted(key for _, key, _ in incidents(store))
    assert keys == ["<after-1@x>", "<after-2@x>", "<ivan-2@x>"]
    scanner.source.close()


def test_a_backfill_leaves_older_mail_behind_for_good(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    """Mail older than the backfill window, though filed later (a higher UID), is never
    taken for new mail: the cursor ends at the folder's last UID, not the last one read."""
    settings, store = org
    assert settings.watch.backfill_days is not None
    dovecot_server.deliver(IVAN, sample("r1_client_to_named", "recent@x"))
    old = datetime.now(UTC) - timedelta(days=settings.watch.backfill_days + 30)
    dovecot_server.append(IVAN, "INBOX", sample("r1_client_to_named", "filed-later@x"), when=old)
    scanner = scanner_for(settings, store)
    scanner.scan_all()
    scanner.scan_all()
    assert incidents(store) == [("client-to-named", "<recent@x>", False)]
    scanner.source.close()


def test_as_of_replays_the_window_before_that_date_and_acts_on_nothing(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    settings, store = org
    assert settings.watch.backfill_days is not None
    now = datetime.now(UTC)
    as_of = now - timedelta(days=120)
    inside = as_of - timedelta(days=settings.watch.backfill_days // 2)
    too_old = as_of - timedelta(days=settings.watch.backfill_days + 10)
    after = as_of + timedelta(days=10)
    for key, when in (("inside", inside), ("too-old", too_old), ("after", after)):
        dovecot_server.append(IVAN, "INBOX", sample("r1_client_to_named", f"{key}@x"), when=when)
    scanner = scanner_for(settings, store)
    reports = scanner.scan_all(as_of=as_of)
    assert {r.mode for r in reports} == {"replay"}
    assert incidents(store) == [("client-to-named", "<inside@x>", False)]
    with store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ScanCursor)) == 0
    scanner.source.close()


def test_three_hundred_mailboxes_polled_over_a_capped_pool(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    import threading

    settings, store = org
    boxes = [f"box{n:03d}@acme.example" for n in range(300)]
    missing = {box: "pw" for box in boxes if box not in _USERS}
    if missing:
        dovecot_server.add_users(missing)
        _USERS.update(missing)
    for n, box in enumerate(boxes):
        if box not in missing:
            _empty(dovecot_server, box)  # left by an earlier test run in this session
        if n % 30 == 0:
            dovecot_server.append(box, "INBOX", sample("r1_client_to_named", f"old-{n}@x"))
    assert settings.imap is not None
    imap = settings.imap.model_copy(update={"max_connections": 4})
    watch = settings.watch.model_copy(update={"extra_mailboxes": tuple(boxes)})
    settings = settings.model_copy(update={"imap": imap, "watch": watch})
    scanner = scanner_for(settings, store)
    peak = 0
    done = threading.Event()

    def sample_sessions() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(_imap_session_pids(dovecot_server)))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample_sessions)
    sampler.start()
    try:
        first = {r.mailbox: r for r in scanner.scan_all() if r.folder == "INBOX"}
        for n in range(5, 300, 60):
            dovecot_server.deliver(boxes[n], sample("r1_client_to_named", f"new-{n}@x"))
        second = {r.mailbox: r for r in scanner.scan_all() if r.folder == "INBOX"}
    finally:
        done.set()
        sampler.join()
        scanner.source.close()
    assert set(boxes) <= set(first) and set(boxes) <= set(second)
    assert {b for b in boxes if first[b].messages} == {boxes[n] for n in range(0, 300, 30)}
    assert {b for b in boxes if first[b].mode == "backfill"} == set(boxes)
    # Only the new mail is read on the next pass, as live mail.
    assert {b: second[b].messages for b in boxes if second[b].messages} == {
        boxes[n]: 1 for n in range(5, 300, 60)
    }
    live = [key for _, key, is_live in incidents(store) if is_live]
    assert sorted(live) == sorted(f"<new-{n}@x>" for n in range(5, 300, 60))
    # Never more IMAP sessions than the pool's cap (Dovecot allows 10 per user and IP).
    assert 1 <= peak <= 4


def test_annotated_samples_through_dovecot_give_what_they_name(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    """Each sample, read the scanner's way (header fields, then a body only where a rule
    needs one), produces exactly the incidents its X-Rolekeeper-Expect lines name."""
    from rolekeeper.store.models import Client, Person
    from tests.test_detect_samples import SAMPLES, expected

    settings, store = org
    want: set[tuple[str, str, str, str]] = set()
    for path in SAMPLES:
        raw = path.read_bytes()
        message_id = next(
            line.split(b":", 1)[1].strip().decode()
            for line in raw.splitlines()
            if line.lower().startswith(b"message-id:")
        )
        for rule, person, client in expected(raw):
            want.add((rule, person, client, message_id))
        dovecot_server.append(IVAN, "INBOX", raw)
    scanner = scanner_for(settings, store)
    [report] = [r for r in scanner.scan_all() if (r.mailbox, r.folder) == (IVAN, "INBOX")]
    scanner.source.close()
    assert report.messages == len(SAMPLES) and report.unreadable == 0
    with store.sessions() as session:
        rows = session.execute(
            select(Incident.rule, Person.named_address, Client.crm_id, Incident.message_key)
            .join(Person, Person.id == Incident.person_id)
            .join(Client, Client.id == Incident.client_id)
        ).all()
    assert {tuple(row) for row in rows} == want


def test_idle_reconnects_after_the_server_drops_it_and_asks_for_a_scan(
    org: tuple[Settings, Store], dovecot_server: DovecotServer
) -> None:
    import threading

    from rolekeeper.idle import IdleWatcher

    settings, _ = org
    assert settings.imap is not None
    source = ImapSource(settings.imap)
    calls: list[float] = []
    called = threading.Condition()

    def on_new_mail(mailbox: str, folder: str) -> None:
        assert (mailbox, folder) == (IVAN, "INBOX")
        with called:
            calls.append(time.monotonic())
            called.notify_all()

    def wait_for_calls(n: int, timeout: float) -> None:
        with called:
            assert called.wait_for(lambda: len(calls) >= n, timeout), calls

    watcher = IdleWatcher(source, [(IVAN, "INBOX")], on_new_mail)
    watcher.start()
    try:
        wait_for_calls(1, 10)  # connected: a scan for whatever came while away
        time.sleep(0.5)
        assert _kill_imap_sessions(dovecot_server) >= 1
        # Reconnected after a short backoff (2 s at most for a first failure): asks again.
        wait_for_calls(2, 10)
        time.sleep(0.5)  # IDLE again
        dovecot_server.deliver(IVAN, sample("r1_client_to_named", "after-drop@x"))
        wait_for_calls(3, 5)  # new mail seen through IDLE on the new connection
    finally:
        watcher.stop()
        source.close()


def test_a_server_side_forward_seen_in_the_journal_envelope(
    org: tuple[Settings, Store], dovecot_server: DovecotServer, relay: Any
) -> None:
    """Ivan's own Sieve script passes every message on to his mail.ru address; only the
    journal copy's envelope shows it. The forward is rule 4, keyed on the client's message."""
    from sievelib.managesieve import Client as SieveClient

    from rolekeeper.store.models import Person
    from tests.handover_org import JOURNAL

    settings, store = org
    if JOURNAL not in _USERS:
        dovecot_server.add_users({JOURNAL: "pw"})
        _USERS.add(JOURNAL)
    _empty(dovecot_server, JOURNAL)
    watch = settings.watch.model_copy(update={"journal_mailbox": JOURNAL})
    settings = settings.model_copy(update={"watch": watch})
    sieve = SieveClient("127.0.0.1", dovecot_server.sieve_port)
    assert sieve.connect(IVAN, "pw", starttls=False, authmech="PLAIN")
    before = sieve.listscripts()[0]
    assert sieve.putscript(
        "to-home", 'require ["copy"];\nredirect :copy "ivan.petrov.1987@mail.ru";'
    )
    assert sieve.setactive("to-home")
    try:
        dovecot_server.deliver(IVAN, sample("r1_client_to_named", "passed-on@x"))
        relay.drain()
    finally:
        assert sieve.setactive(before or "")
        assert sieve.deletescript("to-home")
        sieve.logout()
    scanner = scanner_for(settings, store)
    scanner.scan_all()
    scanner.source.close()
    with store.sessions() as session:
        rows = session.execute(
            select(Person.named_address, Incident.message_key, Incident.evidence)
            .join(Person, Person.id == Incident.person_id)
            .where(Incident.rule == "client-thread-forwarded-out")
        ).all()
    assert [tuple(r) for r in rows] == [
        (
            IVAN,
            "<passed-on@x>",
            "auto-forwarded mail from m.stepanov@severstal-snab.example → "
            "ivan.petrov.1987@mail.ru (envelope)",
        )
    ]
