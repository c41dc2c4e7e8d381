"""One place that builds TLS contexts: verified by default, relaxed only when configured."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(verify: bool = True, ca_file: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        # Only for a lab server with a self-signed certificate; `check` warns about it.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
