"""Prism serving Twilio's own OpenAPI spec, and a recording, fault-injecting proxy before it.

Prism (`@stoplight/prism-cli`, installed by `scripts/bootstrap test` into .cache/node) checks
every request against Twilio's contract (422 for a bad parameter, 401 without auth) and
answers the spec's examples. The specs (the 2010 API, and Serverless v1 for a second Prism)
come from the npm package `@twilio/cli-core`, packed at test time into .cache/twilio-spec
(never committed). Prism keeps no state and never answers 429 or 5xx, so `TwilioProxy`
records what passed and injects those faults itself.

Twilio's form parameters that are lists are sent as repeated keys (``AssetVersions=ZN1&
AssetVersions=ZN2``: twilio-python and Twilio's own toolkits do so), which Prism 5.14 does
not read as an array; only ``AssetVersions[]=…`` passes its check. So the proxy rewrites the
list parameters the spec declares into that form for Prism alone, and records what was sent.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from rolekeeper.lab.ports import free_port
from tests.servers.httpthread import serving

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
PRISM = CACHE / "node" / "node_modules" / ".bin" / "prism"
CLI_CORE = "@twilio/cli-core@9.0.0"
SPEC_DIR = CACHE / "twilio-spec"
API_V2010 = "twilio_api_v2010.json"
SERVERLESS_V1 = "twilio_serverless_v1.json"
SPECS = (API_V2010, SERVERLESS_V1)


def twilio_spec(name: str = API_V2010) -> Path | None:
    """One of Twilio's API specs, from the npm package, fetched once into the cache."""
    spec = SPEC_DIR / name
    if spec.exists():
        return spec
    SPEC_DIR.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run(
            ["npm", "pack", CLI_CORE, "--silent", "--pack-destination", str(SPEC_DIR)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    tgz = SPEC_DIR / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as archive:
        for wanted in SPECS:
            member = archive.extractfile(f"package/src/services/twilio-api/{wanted}")
            assert member is not None
            tmp = (SPEC_DIR / wanted).with_suffix(".tmp")
            tmp.write_bytes(member.read())
            tmp.replace(SPEC_DIR / wanted)
    tgz.unlink()
    return spec


@contextlib.contextmanager
def running_prism(spec: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [str(PRISM), "mock", "-h", "127.0.0.1", "-p", str(port), str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"prism exited: {output[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("prism did not start listening within 60 s")
            time.sleep(0.1)
        # Drain its log so the pipe never fills.
        threading.Thread(
            target=lambda: process.stdout and process.stdout.read(), daemon=True
        ).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    status: int = 0  # what the client got (0: nothing, it timed out)
    prism_status: int | None = None  # None: never reached Prism
    prism_body: Any = None

    @property
    def passed(self) -> bool:
        """Reached Prism and Prism accepted it: Twilio would have acted."""
        return self.prism_status is not None and self.prism_status < 400

    def one(self, name: str) -> str:
        return (self.form.get(name) or self.query.get(name) or [""])[0]


Answer = Callable[["Recorded"], tuple[int, Any]]


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    kind: str  # "500", "429", "timeout" (forwarded, answer lost), "500-after" (forwarded)
    remaining: int


@dataclass
class TwilioProxy:
    """Forwards to Prism, records every request, injects faults, replaces answers."""

    prism: str
    timeout_delay: float = 1.0
    records: list[Recorded] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    answers: list[tuple[str, re.Pattern[str], Answer]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    # Form parameters the spec declares as arrays (see the module's note).
    array_fields: frozenset[str] = frozenset()

    def inject(self, method: str, path: str, kind: str, times: int = 1) -> None:
        """The next `times` requests matching get `kind` instead of a normal answer."""
        with self.lock:
            self.faults.append(_Fault(method, re.compile(path), kind, times))

    def answer(self, method: str, path: str, fn: Answer) -> None:
        """Answer matching requests (after Prism validated them) with fn(record)."""
        self.answers.insert(0, (method, re.compile(path), fn))

    def calls(self, method: str, path: str) -> list[Recorded]:
        pattern = re.compile(path)
        return [r for r in self.records if r.method == method and pattern.search(r.path)]

    def assert_all_valid(self) -> None:
        bad = [r for r in self.records if r.prism_status is not None and r.prism_status >= 400]
        assert not bad, [(r.method, r.path, r.prism_status, r.prism_body) for r in bad]

    def take_fault(self, method: str, path: str) -> str | None:
        with self.lock:
            for fault in self.faults:
                if fault.remaining and fault.method == method and fault.path.search(path):
                    fault.remaining -= 1
                    return fault.kind
        return None

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        record = Recorded(
            handler.command,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            parse_qs(body.decode(), keep_blank_values=True),
        )
        with self.lock:
            self.records.append(record)
        fault = self.take_fault(record.method, record.path)
        if fault in ("500", "429"):
            code = int(fault)
            error = {"code": 20000 + code, "message": "injected", "status": code}
            return send_json(handler, record, code, error)
        upstream = requests.request(
            handler.command,
            self.prism + handler.path,
            data=self._for_prism(record.form) if self.array_fields & set(record.form) else body,
            headers={k: v for k, v in handler.headers.items() if k.lower() != "host"},
            timeout=30,
        )
        record.prism_status = upstream.status_code
        try:
            record.prism_body = upstream.json()
        except ValueError:
            record.prism_body = upstream.text
        status, payload = upstream.status_code, record.prism_body
        if record.passed:
            for method, pattern, fn in self.answers:
                if method == record.method and pattern.search(record.path):
                    status, payload = fn(record)
                    break
        if fault == "timeout":
            time.sleep(self.timeout_delay)  # the client gave up: the answer is lost
            handler.close_connection = True
            return None
        if fault == "500-after":
            status, payload = 500, {"code": 20500, "message": "injected", "status": 500}
        return send_json(handler, record, status, payload)

    def _for_prism(self, form: dict[str, list[str]]) -> str:
        pairs = [
            (f"{name}[]" if name in self.array_fields else name, value)
            for name, values in form.items()
            for value in values
        ]
        return urlencode(pairs)


def array_fields(spec: Path) -> frozenset[str]:
    """The form parameters of `spec` whose type is array."""
    data = json.loads(spec.read_text(encoding="utf-8"))
    found = set()
    for item in data["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            form = content.get("application/x-www-form-urlencoded", {})
            for name, prop in form.get("schema", {}).get("properties", {}).items():
                if prop.get("type") == "array":
                    found.add(name)
    return frozenset(found)


def send_json(handler: BaseHTTPRequestHandler, record: Recorded, status: int, payload: Any) -> None:
    """Answer as Twilio does (JSON), and note the status on the record."""
    data = json.dumps(payload).encode()
    record.status = status
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@contextlib.contextmanager
def running_proxy(prism: str, arrays: frozenset[str] = frozenset()) -> Iterator[TwilioProxy]:
    proxy = TwilioProxy(prism, array_fields=arrays)

    with serving(proxy.handle) as url:
        proxy.url = url
        yield proxy


def _prism_for(name: str) -> Iterator[str]:
    from tests.conftest import require

    require(PRISM.exists(), f"Prism is not installed ({PRISM}; run scripts/bootstrap test)")
    spec = twilio_spec(name)
    require(spec is not None, f"cannot fetch Twilio's OpenAPI spec ({CLI_CORE} via npm pack)")
    assert spec is not None
    with running_prism(spec) as url:
        yield url


@pytest.fixture(scope="session")
def prism_url() -> Iterator[str]:
    """One Prism for the session, serving Twilio's 2010 API spec."""
    yield from _prism_for(API_V2010)


@pytest.fixture(scope="session")
def serverless_prism_url() -> Iterator[str]:
    """A second Prism, serving Twilio's Serverless v1 spec (serverless.twilio.com)."""
    yield from _prism_for(SERVERLESS_V1)


@pytest.fixture
def twilio_proxy(prism_url: str) -> Iterator[TwilioProxy]:
    """A fresh recording proxy before the session's Prism, for one test."""
    with running_proxy(prism_url) as proxy:
        yield proxy


@pytest.fixture
def serverless_proxy(serverless_prism_url: str) -> Iterator[TwilioProxy]:
    """A fresh recording proxy before the session's Serverless Prism, for one test."""
    spec = twilio_spec(SERVERLESS_V1)
    assert spec is not None
    with running_proxy(serverless_prism_url, array_fields(spec)) as proxy:
        yield proxy
