"""The voice webhook under load: open-loop latency and closed-loop throughput.

Run from the repository root:

    .venv/bin/python bench/webhook.py [--rate 200] [--seconds 30] [--concurrency 16]

It imports the sample organisation into a SQLite store and starts `rolekeeper webhooks`
exactly as the unit does (uvicorn with httptools), pinned to CPU 1 with `taskset -c 1`; this
load generator pins itself to CPU 0. Every request is a correctly signed Twilio voice webhook
for a role number (signature checked, holder and role read from the store, TwiML built).

1. Open loop: requests are *scheduled* at a fixed rate whether or not earlier ones have
   finished, and each latency is measured from its scheduled time, so a stall in the server
   shows up as latency instead of silently lowering the rate (no coordinated omission).
2. Closed loop: `concurrency` clients each send the next request as soon as the previous one
   is answered, first against the voice webhook, then against the same server's static
   route (/healthz), to show what the webhook's own work costs.

It prints JSON: p50/p99/max in ms with the target (p99 < 50 ms) and whether it is met, and
both closed-loop rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import select
from twilio.request_validator import RequestValidator

from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import load_settings
from rolekeeper.lab.ports import free_port
from rolekeeper.sample import import_sample
from rolekeeper.store.models import Contact, Role
from rolekeeper.store.open import open_store

TARGET_P99_MS = 50.0
PUBLIC = "https://hooks.example.com/twilio"
TOKEN = "bench-auth-token-0123456789abcdef"  # noqa: S105 - a throwaway token for the bench
ACCOUNT = "AC" + "0123456789abcdef" * 2


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def write_config(directory: Path) -> Path:
    token = directory / "twilio-token"
    token.write_text(TOKEN, encoding="utf-8")
    config = directory / "rolekeeper.toml"
    # The demo's config (sample organisation, its CRM column names) plus [twilio].
    config.write_text(
        DEMO_CONFIG.format(db=directory / "rk.db")
        + "\n".join(
            [
                "[twilio]",
                f'account_sid = "{ACCOUNT}"',
                f'auth_token_file = "{token}"',
                f'public_url = "{PUBLIC}"',
                "[twilio.fallback]",
                f'directory = "{directory / "fallback"}"',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return config


@contextlib.contextmanager
def webhooks_server(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "rolekeeper", "--config", str(config), "webhooks"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    if shutil.which("taskset"):
        argv = ["taskset", "-c", "1", *argv]
    # The server's log goes to a file beside its store, read back only if it fails.
    with (config.parent / "webhooks.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            process.wait(10)


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough client for this bench."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = time.perf_counter()

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


class Requests:
    """Signed voice webhooks (a new CallSid each) and the static route, as raw bytes."""

    def __init__(self, role_number: str, caller: str) -> None:
        self.validator = RequestValidator(TOKEN)
        self.role_number, self.caller = role_number, caller
        self.count = 0

    def voice(self) -> bytes:
        self.count += 1
        params = {
            "AccountSid": ACCOUNT,
            "CallSid": f"CA{self.count:032x}",
            "From": self.caller,
            "To": self.role_number,
            "CallStatus": "ringing",
            "Direction": "inbound",
        }
        body = urlencode(params).encode()
        signature = self.validator.compute_signature(f"{PUBLIC}/voice", params)
        return (
            b"POST /voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\nX-Twilio-Signature: {signature}\r\n\r\n".encode()
            + body
        )

    @staticmethod
    def static() -> bytes:
        return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def open_loop(port: int, make: Requests, rate: float, seconds: float) -> dict[str, object]:
    idle: list[Connection] = []
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def one(scheduled: float) -> None:
        # Like any client pool, never reuse a connection the server may have closed as idle
        # (uvicorn's keep-alive timeout is 5 s).
        while idle and time.perf_counter() - idle[-1].used > 4.0:
            idle.pop().close()
        connection = idle.pop() if idle else await Connection.open(port)
        try:
            status = await connection.request(make.voice())
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            connection.close()
            return
        latencies.append(time.perf_counter() - scheduled)
        if status != 200:
            errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
        connection.used = time.perf_counter()
        idle.append(connection)

    total = int(rate * seconds)
    tasks = []
    start = time.perf_counter() + 0.1
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    connections = len(idle)
    for connection in idle:
        connection.close()
    ms = [value * 1000 for value in latencies]
    p99 = percentile(ms, 0.99)
    return {
        "rate_per_second": rate,
        "seconds": seconds,
        "requests": total,
        "errors": errors,
        "connections": connections,
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(ms), 2),
        "target_p99_ms": TARGET_P99_MS,
        "met": p99 < TARGET_P99_MS and not errors,
    }


async def closed_loop(port: int, build: object, concurrency: int, seconds: float) -> float:
    assert callable(build)
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        connection = await Connection.open(port)
        try:
            while time.perf_counter() < stop:
                status = await connection.request(build())
                if status != 200:
                    raise RuntimeError(f"status {status}")
                done += 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def wait_ready(port: int, process: subprocess.Popen[bytes], config_dir: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = await Connection.open(port)
            await connection.request(Requests.static())
            connection.close()
            return
        except OSError:
            if process.poll() is not None:
                output = (config_dir / "webhooks.log").read_text(errors="replace")
                raise RuntimeError(output[-3000:]) from None
            if time.monotonic() > deadline:
                raise RuntimeError("webhooks did not start") from None
            await asyncio.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--closed-seconds", type=float, default=5.0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})

    with tempfile.TemporaryDirectory(prefix="rk-bench-webhook-") as tmp:
        config = write_config(Path(tmp))
        settings = load_settings(config)
        store = open_store(settings)
        import_sample(store, settings, "bench")
        with store.sessions() as session:
            role_number = session.scalars(select(Role.number).where(Role.key == "manager1")).one()
            caller = session.scalars(
                select(Contact.phone).where(Contact.phone.is_not(None)).limit(1)
            ).one()
        store.close()
        assert role_number is not None and caller is not None
        port = free_port()
        make = Requests(role_number, caller)
        with webhooks_server(config, port) as process:
            asyncio.run(wait_ready(port, process, config.parent))
            # Warm up the server (imports, first queries) before measuring.
            asyncio.run(closed_loop(port, make.voice, 4, 1.0))
            opened = asyncio.run(open_loop(port, make, args.rate, args.seconds))
            voice = asyncio.run(
                closed_loop(port, make.voice, args.concurrency, args.closed_seconds)
            )
            static = asyncio.run(
                closed_loop(port, Requests.static, args.concurrency, args.closed_seconds)
            )
            if opened["errors"]:
                log = (config.parent / "webhooks.log").read_text(errors="replace")
                print(log[-3000:], file=sys.stderr)
    result = {
        "bench": "webhook",
        "open_loop_voice": opened,
        "closed_loop": {
            "concurrency": args.concurrency,
            "seconds_each": args.closed_seconds,
            "voice_requests_per_second": round(voice),
            "static_requests_per_second": round(static),
            "voice_vs_static": round(voice / static, 3),
        },
        "cpus": {"server": "taskset -c 1", "load_generator": "sched_setaffinity {0}"},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    print(json.dumps(result, indent=2))
    return 0 if opened["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
