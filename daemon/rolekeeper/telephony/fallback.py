"""Static TwiML each number falls back to when `rolekeeper webhooks` does not answer.

Twilio requests a number's fallback URL when its voice or SMS URL fails (down, timeout, 5xx).
The documents ring the role's holder at the time they were written, then the team line; they
are rewritten on every holder change (`numbers.reroute`) and by each reconciler pass. One
pair per number: ``<digits>.xml`` (voice) and ``<digits>-sms.xml`` (messaging), fetched with
GET from ``<base>/<file>``. Published either as files (this module, ``publish = "file"``):
written atomically into ``[twilio.fallback].directory``, which a web server serves at
``[twilio.fallback].url``; or as Twilio Serverless assets (`serverless_fallback`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rolekeeper.config import TwilioSettings
from rolekeeper.telephony import twiml
from rolekeeper.telephony.routing import RoleRoute


def file_names(number: str) -> tuple[str, str]:
    digits = number.lstrip("+")
    return f"{digits}.xml", f"{digits}-sms.xml"


def fallback_urls(base: str | None, number: str) -> tuple[str, str] | None:
    """The voice and SMS fallback URLs of a number, given where its files are served."""
    if base is None:
        return None
    voice, sms = file_names(number)
    return f"{base}/{voice}", f"{base}/{sms}"


def documents(cfg: TwilioSettings, route: RoleRoute) -> dict[str, str]:
    voice, sms = file_names(route.number)
    return {
        voice: twiml.fallback_voice(
            holder_phone=route.holder_phone,
            team_line=cfg.team_line,
            role_number=route.number,
            ring_seconds=cfg.webhooks.ring_seconds,
        ),
        sms: twiml.fallback_sms(
            holder_phone=route.holder_phone, role_number=route.number, role_name=route.name
        ),
    }


def write_files(cfg: TwilioSettings, route: RoleRoute) -> list[Path]:
    """Write the route's fallback files where they changed; returns the files written."""
    directory = cfg.fallback.directory
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in documents(cfg, route).items():
        path = directory / name
        try:
            if path.read_text(encoding="utf-8") == text:
                continue
        except FileNotFoundError:
            pass
        _write_atomically(path, text)
        written.append(path)
    return written


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        # Readable by the web server that publishes the directory.
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
