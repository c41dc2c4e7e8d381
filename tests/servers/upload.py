"""A stand-in for serverless-upload.twilio.com, the one Twilio host outside any OpenAPI spec.

It accepts what Twilio documents for an Asset Version upload — a multipart/form-data POST of
``Path``, ``Visibility`` and the file part ``Content`` to
``/v1/Services/{ZS…}/Assets/{ZH…}/Versions`` with the account's basic auth — refuses anything
else with 400/401 as Twilio would, and answers with the version's JSON (a ZN… sid). Its
records go into a `TwilioProxy`'s timeline, so one list shows the order of every request,
and that proxy's injected faults apply here too.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from tests.servers.httpthread import serving
from tests.servers.prism import Recorded, TwilioProxy, send_json

VERSIONS = re.compile(r"^/v1/Services/(ZS[0-9a-fA-F]{32})/Assets/(ZH[0-9a-fA-F]{32})/Versions$")
VISIBILITIES = {"public", "protected", "private"}
# Creates the version (service, asset, path, visibility, content) and returns its resource.
CreateVersion = Callable[[str, str, str, str, str], dict[str, Any]]


@dataclass
class UploadServer:
    timeline: TwilioProxy
    create_version: CreateVersion
    credentials: tuple[str, str]
    url: str = ""

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = urlsplit(handler.path).path
        record = Recorded(handler.command, path, {}, {})
        record.prism_body = {"upload": True}
        with self.timeline.lock:
            self.timeline.records.append(record)
        fault = self.timeline.take_fault(record.method, path)
        if fault in ("500", "429"):
            code = int(fault)
            return send_json(handler, record, code, _error(code, "injected"))
        status, payload = self._accept(handler, body, record)
        record.prism_status = status
        if fault == "timeout":
            time.sleep(self.timeline.timeout_delay)  # created, but the answer is lost
            handler.close_connection = True
            return None
        if fault == "500-after":
            status, payload = 500, _error(500, "injected")
        return send_json(handler, record, status, payload)

    def _accept(
        self, handler: BaseHTTPRequestHandler, body: bytes, record: Recorded
    ) -> tuple[int, Any]:
        if handler.command != "POST" or not (match := VERSIONS.match(record.path)):
            return 404, _error(404, f"no such resource: {handler.command} {record.path}")
        user, token = self.credentials
        expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
        if handler.headers.get("Authorization") != expected:
            return 401, _error(401, "authenticate")
        content_type = handler.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data; boundary="):
            return 400, _error(400, f"expected multipart/form-data, got {content_type!r}")
        parts = _parts(content_type, body)
        record.form = {
            name: [part.get_payload(decode=True).decode()] for name, part in parts.items()
        }
        problems = []
        if not record.one("Path").startswith("/"):
            problems.append("Path must start with /")
        if record.one("Visibility") not in VISIBILITIES:
            problems.append(f"Visibility must be one of {sorted(VISIBILITIES)}")
        content = parts.get("Content")
        if content is None or not content.get_filename():
            problems.append("Content must be a file part with a filename")
        elif content.get_content_type() not in ("application/xml", "text/xml"):
            problems.append(f"Content type {content.get_content_type()} is not XML")
        elif not record.one("Content").strip():
            problems.append("Content is empty")
        if problems:
            return 400, _error(400, "; ".join(problems))
        service_sid, asset_sid = match.groups()
        return 201, self.create_version(
            service_sid,
            asset_sid,
            record.one("Path"),
            record.one("Visibility"),
            record.one("Content"),
        )


def _parts(content_type: str, body: bytes) -> dict[str, Message]:
    message = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    found: dict[str, Message] = {}
    for part in message.get_payload() if message.is_multipart() else []:
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            found[name] = part
    return found


def _error(status: int, message: str) -> dict[str, Any]:
    return {"code": 20000 + status, "message": message, "status": status}


@contextlib.contextmanager
def running_upload_server(
    timeline: TwilioProxy, create_version: CreateVersion, credentials: tuple[str, str]
) -> Iterator[UploadServer]:
    upload = UploadServer(timeline, create_version, credentials)

    with serving(upload.handle) as url:
        upload.url = url
        yield upload
