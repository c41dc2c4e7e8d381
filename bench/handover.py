"""Notices per second of a departure's notice outbox, against the minimal correct sender.

Run from the repository root (Dovecot must be installed; `scripts/bootstrap test` does it):

    .venv/bin/python bench/handover.py [--notices 1000]

It starts a private Dovecot (the role mailboxes, for the copies in Sent) and an aiosmtpd
sink in a process of its own (so the sink does not share this process's interpreter lock),
imports the sample organisation's people and roles and N generated clients of
ivan.petrov's two roles (one contact each, Russian and English), records his departure and
runs the steps before the notices (not timed). Then, in one run, rate limit off:

* rolekeeper: the `send_notices` step: every notice rendered from its jinja2 templates
  (plain and HTML parts), and moved queued → sending → accepted → sent with a commit at
  each state, over one SMTP connection, its copy APPENDed to the role's Sent folder;
* baseline: the minimal correct sender written plainly here: per notice the stdlib builds
  the same message (plain and HTML parts, f-strings), one SMTP connection sends it, IMAP
  APPENDs it to Sent, and one commit records it in a SQLite table (WAL, synchronous=FULL,
  as rolekeeper's store).

It prints JSON with notices/s of both and their ratio; the target is ≥ 0.7. Exit code 1
if a check fails (a notice not sent, a count that differs), else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from rolekeeper.clock import utcnow
from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import Settings, load_settings
from rolekeeper.directory.importer import import_clients, import_people, import_roles
from rolekeeper.lab.dovecot import DovecotServer, running_dovecot
from rolekeeper.lab.ports import free_port
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Contact, Notice, Person, Role
from rolekeeper.store.open import open_store
from rolekeeper.workflows.departure import create_transition, plan_departure
from rolekeeper.workflows.engine import StepContext
from rolekeeper.workflows.steps import steps

TARGET_RATIO = 0.7
LEAVER = "ivan.petrov@acme.example"
SUCCESSOR = "maria.kuznetsova@acme.example"
HEADER = "ID клиента;Компания;Домены;Сегмент;Роль;Контакт;E-mail;Телефон;Мобильный;Язык"


def write_clients(path: Path, count: int) -> None:
    lines = [HEADER]
    for n in range(count):
        language = "ru" if n % 2 == 0 else "en"
        name = f"Покупатель {n}" if language == "ru" else f"Buyer {n}"
        role = "manager1" if n % 3 else "manager2"
        lines.append(
            f"CRM-B{n};Client {n};client{n}.example;Обычный;{role};{name};"
            f"buyer{n}@client{n}.example;;нет;{language}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-l",
            f"127.0.0.1:{port}",
        ],
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the SMTP sink did not start")


def settings_for(tmp: Path, server: DovecotServer, smtp_port: int) -> Settings:
    config = tmp / "rolekeeper.toml"
    config.write_text(
        DEMO_CONFIG.format(db=tmp / "rk.db")
        + server.config_sections(tmp / "master.pw")
        + f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "plain"\n',
        encoding="utf-8",
    )
    return load_settings(config)


def prepare(tmp: Path, settings: Settings, server: DovecotServer, count: int) -> Any:
    store = open_store(settings)
    files = resources.files("rolekeeper.sample")
    with resources.as_file(files / "people.csv") as p, transaction(store.sessions) as s:
        import_people(s, p, settings, "bench")
    with resources.as_file(files / "roles.csv") as p, transaction(store.sessions) as s:
        import_roles(s, p, settings, "bench")
    write_clients(tmp / "clients.csv", count)
    with transaction(store.sessions) as s:
        import_clients(s, tmp / "clients.csv", settings, "bench")
    with store.sessions() as s:
        server.add_users({address: "pw" for address in s.scalars(select(Role.address))})
    with transaction(store.sessions) as s:
        person, plans = plan_departure(s, LEAVER, SUCCESSOR, {})
        transition = create_transition(s, "departure", person, plans, utcnow(), "bench")
        s.flush()
        tid = transition.id
    ctx = StepContext(store.sessions, settings, tid, utcnow, {})
    for name in ("reassign", "queue_notices"):
        steps()[name](ctx)
    return store, ctx


def baseline(
    tmp: Path, settings: Settings, server: DovecotServer, smtp_port: int, rows: list[Any]
) -> float:
    """The minimal correct sender: build, send, file in Sent, one commit per message."""
    import smtplib

    db = sqlite3.connect(tmp / "baseline.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE sent (id INTEGER PRIMARY KEY, message_id TEXT UNIQUE, at TEXT)")
    clients = {role: server.imap(*server.master_login(role)) for _, _, _, role, _ in rows}
    for client in clients.values():
        client.__enter__()
        client._imap.debug = 0  # as rolekeeper's own connections: no debug formatting
        if not client.folder_exists("Sent"):
            client.create_folder("Sent")
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        for n, (address, name, language, role, holder) in enumerate(rows):
            message = EmailMessage()
            message["From"] = formataddr((holder, role))
            message["To"] = formataddr((name, address))
            if language == "ru":
                message["Subject"] = f"Acme: с сегодняшнего дня с вами работает {holder}"
                text = (
                    f"Здравствуйте, {name}!\n\nС сегодняшнего дня вашу компанию ведёт {holder}. "
                    f"Пишите, как и раньше, на {role}; всё остальное остаётся прежним.\n\n"
                    f"С уважением,\n{holder}\n"
                )
            else:
                message["Subject"] = f"Acme: from today {holder} looks after you"
                text = (
                    f"Dear {name},\n\nfrom today {holder} looks after you at Acme. Please "
                    f"keep writing to {role}; everything else stays as it is.\n\n"
                    f"Kind regards,\n{holder}\n"
                )
            message["Date"] = format_datetime(datetime.now(UTC))
            message["Message-ID"] = f"<baseline-{n}@acme.example>"
            message.set_content(text)
            message.add_alternative(f"<p>{text}</p>", subtype="html")
            # Serialised once, with CRLF (SMTP and IMAP), for the server and for Sent.
            data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
            smtp.sendmail(role, [address], data)
            clients[role].append("Sent", data, flags=(b"\\Seen",))
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO sent (message_id, at) VALUES (?, ?)",
                (message["Message-ID"], datetime.now(UTC).isoformat()),
            )
            db.execute("COMMIT")
    seconds = time.perf_counter() - start
    for client in clients.values():
        client.__exit__(None, None, None)
    db.close()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--notices", type=int, default=1000)
    args = parser.parse_args()
    failures: list[str] = []
    sink, port = start_sink()
    try:
        with running_dovecot() as server, tempfile.TemporaryDirectory(prefix="rk-bench-") as t:
            tmp = Path(t)
            settings = settings_for(tmp, server, port)
            store, ctx = prepare(tmp, settings, server, args.notices)
            with store.sessions() as s:
                queued = s.scalar(select(func.count()).select_from(Notice)) or 0
                heir = s.scalars(select(Person).where(Person.named_address == SUCCESSOR)).one()
                rows = [
                    (
                        n.recipient,
                        s.get_one(Contact, n.contact_id).name,
                        n.language,
                        s.get_one(Role, n.role_id).address,
                        heir.name,
                    )
                    for n in s.scalars(select(Notice).order_by(Notice.id))
                ]
            start = time.perf_counter()
            detail = steps()["send_notices"](ctx)
            ours = time.perf_counter() - start
            ctx.services.get("imap") and ctx.services["imap"].close()
            base = baseline(tmp, settings, server, port, rows)
            with store.sessions() as s:
                sent = s.scalar(select(func.count()).where(Notice.status == "sent")) or 0
            store.close()
    finally:
        sink.terminate()
        sink.wait(10)
    if queued != args.notices:
        failures.append(f"{queued} notices queued for {args.notices} contacts")
    if sent != queued:
        failures.append(f"{sent} of {queued} notices sent: {detail}")
    ratio = (queued / ours) / (len(rows) / base)
    output: dict[str, Any] = {
        "notices": queued,
        "rolekeeper": {"seconds": round(ours, 3), "notices_per_s": round(queued / ours, 1)},
        "baseline": {
            "seconds": round(base, 3),
            "notices_per_s": round(len(rows) / base, 1),
            "method": "stdlib EmailMessage, one SMTP connection, IMAP APPEND to Sent, "
            "one SQLite commit per message",
        },
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "rate_limit": "off",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    if failures:
        output["failures"] = failures
    json.dump(output, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
