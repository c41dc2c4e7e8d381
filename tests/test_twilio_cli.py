"""`rolekeeper roles provision|numbers` and `rolekeeper webhooks` as an admin runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from rolekeeper.cli import main
from rolekeeper.lab.ports import free_port
from rolekeeper.store.open import open_store
from tests.servers.prism import TwilioProxy
from tests.twilio_support import (
    ACCOUNT,
    ALICE_PHONE,
    BOB_PHONE,
    FALLBACK_URL,
    PUBLIC,
    SALES2_NUMBER,
    FakeNumbers,
    make_org,
    twilio_settings,
)


def write_config(tmp_path: Path, api_base: str, **twilio: str) -> Path:
    settings = twilio_settings(tmp_path, api_base=api_base)
    assert settings.twilio is not None
    lines = [
        "[organisation]",
        'domains = ["acme.example"]',
        'default_region = "US"',
        "[database]",
        f'url = "{settings.database.url}"',
        "[twilio]",
        f'account_sid = "{ACCOUNT}"',
        f'auth_token_file = "{settings.twilio.auth_token_file}"',
        f'api_base = "{api_base}"',
        "timeout_seconds = 0.5",
        "retry_initial_seconds = 0.02",
        *(f'{key} = "{value}"' for key, value in twilio.items()),
        "[twilio.fallback]",
        f'directory = "{tmp_path / "fallback"}"',
    ]
    path = tmp_path / "rolekeeper.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = open_store(settings)
    make_org(store)
    store.close()
    return path


def test_provision_dry_run_prints_the_plan(
    tmp_path: Path, twilio_proxy: TwilioProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeNumbers().install(twilio_proxy)
    config = write_config(tmp_path, twilio_proxy.url, public_url="https://hooks.example.com/tw")
    code = main(["--config", str(config), "roles", "provision", "--dry-run", "--json", "sales1"])
    assert code == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item == {
        "role": "sales1",
        "action": "buy",
        "number": "+18089251571",
        "sid": None,
        "detail": "",
    }
    assert not [r for r in twilio_proxy.records if r.method == "POST"]

    assert main(["--config", str(config), "roles", "provision", "--dry-run", "nosuch"]) == 4


def test_provision_without_public_url_names_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    assert main(["--config", str(config), "roles", "provision"]) == 2
    err = capsys.readouterr().err
    assert f"{config}: twilio.public_url: required" in err


def test_bad_telephony_config_is_reported_by_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", team_line="555-0100")
    assert main(["--config", str(config), "check"]) == 2
    err = capsys.readouterr().err
    assert f"{config}: twilio.team_line: '555-0100' is not a number in E.164 form" in err


def test_webhooks_command_serves_until_terminated(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", public_url="https://hooks.example.com/tw")
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rolekeeper",
            "--config",
            str(config),
            "webhooks",
            "--port",
            str(port),
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert response.text == "ok\n"
        unsigned = requests.post(f"http://127.0.0.1:{port}/voice", data={"To": "+1"}, timeout=2)
        assert unsigned.status_code == 403
    finally:
        process.terminate()
        # uvicorn finishes in-flight requests, then re-raises SIGTERM: systemd counts a
        # death by SIGTERM as a clean stop.
        assert process.wait(10) in (0, -signal.SIGTERM)


def test_an_inline_pin_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    with config.open("a", encoding="utf-8") as out:
        out.write('[twilio.webhooks]\npin = "4711"\n')
    assert main(["--config", str(config), "check"]) == 2
    err = capsys.readouterr().err
    assert f"{config}: twilio.webhooks.pin: secrets are not accepted in the config text" in err
    assert "4711" not in err


ROLES_CSV = (
    "role,name,address,number,holder\n"
    "sales2,Sales desk 2,sales2@acme.example,+15550102,alice@acme.example\n"
)


def reassign_setup(tmp_path: Path, proxy: TwilioProxy, fake: FakeNumbers) -> tuple[Path, Path]:
    """sales2 (Bob's) has its Twilio number, and its fallback TwiML rings Bob."""
    fake.add("PN" + "2" * 32, SALES2_NUMBER)
    fake.install(proxy)
    config = write_config(tmp_path, proxy.url, public_url=PUBLIC)
    with config.open("a", encoding="utf-8") as out:
        out.write(f'url = "{FALLBACK_URL}"\n')  # under [twilio.fallback]
    assert main(["--config", str(config), "roles", "provision", "sales2"]) == 0
    voice = tmp_path / "fallback" / f"{SALES2_NUMBER.lstrip('+')}.xml"
    assert BOB_PHONE in voice.read_text() and ALICE_PHONE not in voice.read_text()
    roles = tmp_path / "roles.csv"
    roles.write_text(ROLES_CSV, encoding="utf-8")
    return config, voice


def test_import_reassign_reroutes_the_changed_roles_numbers_at_once(
    tmp_path: Path, twilio_proxy: TwilioProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """`import roles --reassign` moves sales2 from Bob to Alice: the fallback TwiML rings
    Alice at once, as after a handover, not after the reconciler's next pass."""
    fake = FakeNumbers()
    config, voice = reassign_setup(tmp_path, twilio_proxy, fake)
    roles = str(tmp_path / "roles.csv")
    assert main(["--config", str(config), "import", "roles", roles, "--dry-run", "--reassign"]) == 0
    assert BOB_PHONE in voice.read_text()  # a dry run changes nothing
    capsys.readouterr()
    assert main(["--config", str(config), "import", "roles", roles, "--reassign", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["holders_changed"], out["rerouted"]) == (["sales2"], ["sales2"])
    assert ALICE_PHONE in voice.read_text() and BOB_PHONE not in voice.read_text()
    sms = voice.with_name(voice.name.replace(".xml", "-sms.xml"))
    assert ALICE_PHONE in sms.read_text()
    # The number's settings were checked on Twilio too (fetched, nothing to repair).
    fetches = twilio_proxy.calls("GET", r"/IncomingPhoneNumbers/PN2{32}\.json$")
    assert len(fetches) == 2  # provision, then the import's reroute
    twilio_proxy.assert_all_valid()


def test_import_reassign_with_twilio_down_still_imports(
    tmp_path: Path, twilio_proxy: TwilioProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeNumbers()
    config, voice = reassign_setup(tmp_path, twilio_proxy, fake)
    with config.open("r+", encoding="utf-8") as text:
        body = text.read().replace(
            "timeout_seconds = 0.5", "timeout_seconds = 0.5\nretry_seconds = 0.2"
        )
        text.seek(0)
        text.write(body)
    twilio_proxy.inject("GET", r"/IncomingPhoneNumbers/PN\w+\.json$", "500", 1000)
    capsys.readouterr()
    assert (
        main(
            ["--config", str(config), "import", "roles", str(tmp_path / "roles.csv"), "--reassign"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "warning: the phone routing of sales2 was not updated now" in out
    assert "the reconciler's next pass does it" in out
    # The fallback files are local: written before Twilio was asked.
    assert ALICE_PHONE in voice.read_text()


def test_lockouts_listed_and_lifted_by_an_admin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import timedelta

    from sqlalchemy import select

    from rolekeeper.clock import utcnow
    from rolekeeper.store.db import transaction
    from rolekeeper.store.models import AccessFailure, AuditEntry

    config = write_config(tmp_path, "http://127.0.0.1:9")
    settings = twilio_settings(tmp_path)
    store = open_store(settings)
    now = utcnow()
    with transaction(store.sessions) as session:  # as three refused PINs leave them
        for n, locked in enumerate((None, None, now + timedelta(minutes=60))):
            session.add(
                AccessFailure(caller=ALICE_PHONE, call_sid=f"CA{n}", at=now, locked_until=locked)
            )
        session.add(AccessFailure(caller=BOB_PHONE, call_sid="CA9", at=now))  # not locked
    capsys.readouterr()
    assert main(["--config", str(config), "roles", "lockouts", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["caller"], listed["refusals"]) == (ALICE_PHONE, 3)
    # Written as a person would type it; the region makes it E.164.
    national = ALICE_PHONE.removeprefix("+1")
    assert main(["--config", str(config), "roles", "unlock", national]) == 0
    assert f"{ALICE_PHONE}: 3 refused PIN(s) forgotten" in capsys.readouterr().out
    assert main(["--config", str(config), "roles", "lockouts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    with store.sessions() as session:
        assert session.scalars(select(AccessFailure.caller)).all() == [BOB_PHONE]
        [audit] = session.scalars(select(AuditEntry).where(AuditEntry.action == "access.unlock"))
    assert (audit.target, audit.detail) == (ALICE_PHONE, {"refusals": 3})
    assert main(["--config", str(config), "roles", "unlock", "not a number"]) != 0
    store.close()
