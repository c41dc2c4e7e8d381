"""Latency from LMTP delivery to a stored incident, with the folder under IMAP IDLE.

Run from the repository root:

    .venv/bin/python bench/latency.py [--messages 100]

It starts a private Dovecot (rolekeeper.lab), imports the sample organisation into a SQLite
store, and runs the scanner with IDLE on manager1@acme.example's INBOX exactly as the
service wires them (rolekeeper.idle.IdleWatcher calling Scanner.scan_one). Then, one at a
time, it delivers a client's message that copies a manager's named address (rule
client-to-named) and measures the time until the incident row is committed. Dovecot itself
waits 0.5 s before it reports new mail to IDLE (FACTS.md), which is the floor.

It prints JSON: p50, p95, max and mean in seconds, the target (p95 ≤ 1.0 s) and whether it
is met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from rolekeeper.backends.imap import ImapSource
from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import load_settings
from rolekeeper.idle import IdleWatcher
from rolekeeper.lab.dovecot import running_dovecot
from rolekeeper.sample import import_sample
from rolekeeper.store.models import Incident
from rolekeeper.store.open import open_store
from rolekeeper.watch import Scanner

TARGET_P95 = 1.0
MAILBOX = "manager1@acme.example"


def message(key: str) -> bytes:
    return (
        "From: Mikhail Stepanov <m.stepanov@severstal-snab.example>\r\n"
        "To: manager1@acme.example\r\nCc: Ivan Petrov <ivan.petrov@acme.example>\r\n"
        f"Subject: order {key}\r\nMessage-ID: <{key}@severstal-snab.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nPlease confirm the order.\r\n"
    ).encode()


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="rk-latency-"))
    with running_dovecot() as server:
        config = tmp / "rolekeeper.toml"
        config.write_text(
            DEMO_CONFIG.format(db=tmp / "rk.db")
            + server.config_sections(tmp / "pw")
            + '[watch]\nfolders = ["INBOX"]\n',
            encoding="utf-8",
        )
        settings = load_settings(config)
        store = open_store(settings)
        import_sample(store, settings, "bench")
        assert settings.imap is not None
        source = ImapSource(settings.imap)
        scanner = Scanner(store.sessions, settings, source)
        server.add_users({m: uuid.uuid4().hex for m in scanner.mailboxes()})
        scanner.scan_all()  # the first pass (backfill) sets the cursors
        watcher = IdleWatcher(source, [(MAILBOX, "INBOX")], scanner.scan_one)
        watcher.start()
        time.sleep(1.5)  # the IDLE connection is up and waiting
        latencies = []
        try:
            for n in range(args.messages):
                key = f"lat-{n}-{uuid.uuid4().hex[:8]}"
                wanted = f"<{key}@severstal-snab.example>"
                started = time.perf_counter()
                server.deliver(MAILBOX, message(key))
                while True:
                    with store.sessions() as session:
                        found = session.scalar(
                            select(Incident.id).where(Incident.message_key == wanted)
                        )
                    if found is not None:
                        break
                    if time.perf_counter() - started > 30:
                        raise TimeoutError(f"no incident for {wanted} after 30 s")
                    time.sleep(0.005)
                latencies.append(time.perf_counter() - started)
        finally:
            watcher.stop()
            source.close()
            store.close()
    p95 = percentile(latencies, 0.95)
    print(
        json.dumps(
            {
                "messages": len(latencies),
                "p50_s": round(percentile(latencies, 0.50), 3),
                "p95_s": round(p95, 3),
                "max_s": round(max(latencies), 3),
                "mean_s": round(statistics.fmean(latencies), 3),
                "dovecot_idle_floor_s": 0.5,
                "target_p95_s": TARGET_P95,
                "meets_target": p95 <= TARGET_P95,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
