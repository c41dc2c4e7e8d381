"""Checks on the shipped systemd unit: hardening score and key directives."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT_PATH = REPO_ROOT / "systemd" / "rolekeeper.service"
WEBHOOKS_UNIT_PATH = REPO_ROOT / "systemd" / "rolekeeper-webhooks.service"
MAX_EXPOSURE = 2.0

_EXPOSURE_RE = re.compile(r"Overall exposure level for [\w-]+\.service:\s*(\d+(?:\.\d+)?)")

UnitSections = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> UnitSections:
    """Parse a systemd unit into section -> key -> list of values.

    configparser cannot be used: unit files legitimately repeat keys
    (LoadCredential=, SystemCallFilter=, Environment=, ...), and every
    occurrence matters.
    """
    sections: UnitSections = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            # Continuation line: join with the next one, as systemd does.
            pending = line[:-1].rstrip() + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"unparsable unit line: {raw!r}")
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _require_systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        message = "systemd-analyze is not on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return exe


@pytest.mark.parametrize("unit", [UNIT_PATH, WEBHOOKS_UNIT_PATH], ids=lambda p: p.name)
def test_security_exposure_is_ok(unit: Path) -> None:
    exe = _require_systemd_analyze()
    result = subprocess.run(
        [exe, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    match = _EXPOSURE_RE.search(output)
    assert match is not None, f"no exposure line in systemd-analyze output:\n{output}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, (
        f"exposure {exposure} > {MAX_EXPOSURE}; systemd-analyze output:\n{output}"
    )


def test_key_directives_present() -> None:
    unit = parse_unit(UNIT_PATH.read_text(encoding="utf-8"))
    service = unit["Service"]

    assert service.get("Type") == ["notify"]
    assert service.get("NotifyAccess") == ["main"]
    assert "WatchdogSec" in service
    assert service.get("Restart") == ["on-failure"]
    assert service.get("DynamicUser") == ["yes"] or "User" in service
    assert service.get("StateDirectory") == ["rolekeeper"]

    exec_start = service.get("ExecStart", [])
    assert len(exec_start) == 1
    assert exec_start[0].startswith("/opt/rolekeeper/venv/bin/rolekeeper ")
    assert exec_start[0].endswith(" run")

    credential_ids = {value.partition(":")[0] for value in service.get("LoadCredential", [])}
    assert {
        "imap-password",
        "smtp-password",
        "exchange-password",
        "twilio-auth-token",
        "database-password",
    } <= credential_ids

    assert unit["Install"].get("WantedBy") == ["multi-user.target"]


def test_webhooks_unit_shares_the_daemons_user_and_store() -> None:
    unit = parse_unit(WEBHOOKS_UNIT_PATH.read_text(encoding="utf-8"))
    service = unit["Service"]
    assert service.get("Type") == ["exec"]
    (exec_start,) = service["ExecStart"]
    assert exec_start.startswith("/opt/rolekeeper/venv/bin/rolekeeper ")
    assert exec_start.endswith(" webhooks")
    # The same dynamic user as rolekeeper.service (named after that unit), the same store.
    assert service.get("DynamicUser") == ["yes"]
    assert service.get("User") == ["rolekeeper"]
    assert service.get("StateDirectory") == ["rolekeeper"]
    credential_ids = {value.partition(":")[0] for value in service.get("LoadCredential", [])}
    assert {"twilio-auth-token", "twilio-access-pin"} <= credential_ids
    assert unit["Install"].get("WantedBy") == ["multi-user.target"]


def test_parse_unit_collects_repeated_keys() -> None:
    text = "[Service]\n# comment\nA=1\nA=2\nB=x \\\n  y\n"
    assert parse_unit(text) == {"Service": {"A": ["1", "2"], "B": ["x y"]}}
