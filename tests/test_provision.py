"""[provisioning] settings and the provisioners that need no mail server."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolekeeper.config import load_settings
from rolekeeper.errors import ConfigError
from rolekeeper.provision.base import ProvisionError
from rolekeeper.provision.commands import CommandMailbox, run_command
from rolekeeper.provision.passwd import DovecotPasswdMailbox, users_in
from rolekeeper.provision.sendas_map import BEGIN, END, MapSendAs, owners


def problems(tmp_path: Path, section: str) -> list[str]:
    path = tmp_path / "rolekeeper.toml"
    path.write_text(f"[provisioning]\n{section}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return [p.removeprefix(f"{path}: ") for p in caught.value.problems]


def test_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rolekeeper.toml"
    path.write_text("", encoding="utf-8")
    cfg = load_settings(path).provisioning
    assert (cfg.mailbox, cfg.send_as, cfg.holders_access, cfg.supervisors_access) == (
        "adopt",
        "none",
        "lrwstipekx",
        "lr",
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            'mailbox = "ldap"',
            "provisioning.mailbox: input should be 'adopt', 'dovecot-passwd' or 'command' "
            "(got 'ldap')",
        ),
        (
            'mailbox = "dovecot-passwd"',
            'provisioning: mailbox = "dovecot-passwd" needs userdb_path',
        ),
        ('mailbox = "command"', 'provisioning: mailbox = "command" needs mailbox_command'),
        ('send_as = "map"', 'provisioning: send_as = "map" needs sender_map_path'),
        (
            'send_as = "command"\nsend_as_grant_command = ["/bin/true"]',
            'provisioning: send_as = "command" needs send_as_revoke_command',
        ),
        (
            'holders_access = "lrswipkxtecda"',
            "provisioning.holders_access: unknown or obsolete IMAP rights 'cd'; use letters of "
            "'lrwstipekxa' (RFC 4314; Dovecot derives the obsolete c and d itself)",
        ),
        ('supervisors_access = "llr"', "provisioning.supervisors_access: 'llr' repeats a right"),
        (
            'mailbox_command = ["/usr/local/sbin/mkmbox", "{user}"]',
            "provisioning.mailbox_command: unknown placeholder {user} in '{user}'; known: "
            "{address}",
        ),
        (
            "mailbox_command = []",
            "provisioning.mailbox_command: expected a program and its arguments, e.g. "
            '["/usr/local/sbin/x"]',
        ),
        (
            'userdb_line = "{password}:{address}"',
            'provisioning.userdb_line: must start with "{address}:{password}" '
            "(passwd-file user:password)",
        ),
        (
            "reconcile_minutes = -1",
            "provisioning.reconcile_minutes: Input should be greater than or equal to 0",
        ),
        ('supervisors = ["a b@x"]', "provisioning.supervisors: 'a b@x' is not a login name"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, section: str, expected: str) -> None:
    assert problems(tmp_path, section) == [expected]


def test_command_template_runs_without_a_shell(tmp_path: Path) -> None:
    out = run_command(["/bin/echo", "{address}"], {"address": "a b; rm -rf /"}, 5)
    assert out == "a b; rm -rf /\n"
    with pytest.raises(ProvisionError, match="/nonexistent/mkmbox: program not found"):
        CommandMailbox(["/nonexistent/mkmbox", "{address}"], 5).create("r@x")
    with pytest.raises(ProvisionError, match=r"no answer within 0.2 s; killed"):
        run_command(["/bin/sleep", "5"], {}, 0.2)


def test_passwd_file_append_is_idempotent(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("someone@x:{PLAIN}pw::::::")  # no trailing newline
    mailbox = DovecotPasswdMailbox(users, "{address}:{password}:1000:1000::/home/{address}::")
    mailbox.create("role@x")
    mailbox.create("role@x")
    lines = users.read_text().splitlines()
    assert users_in(users.read_text()) == {"someone@x", "role@x"}
    assert lines[0] == "someone@x:{PLAIN}pw::::::"
    assert lines[1].startswith("role@x:{SSHA512}") and lines[1].endswith(
        ":1000:1000::/home/role@x::"
    )
    with pytest.raises(ProvisionError, match="does not exist"):
        DovecotPasswdMailbox(tmp_path / "missing", "{address}:{password}").create("r@x")


def test_map_rewrite_owns_role_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "senders"
    path.write_text(
        "# admin's lines\nann@x  ann@x\nrole@x  intruder@x\n"
        f"{BEGIN}\nrole@x  ann@x\nother@x  bob@x\n{END}\n"
    )
    sender = MapSendAs(path, (), 5)
    assert sender.read(["role@x", "other@x", "none@x"]) == {
        "role@x": frozenset({"ann@x", "intruder@x"}),
        "other@x": frozenset({"bob@x"}),
        "none@x": frozenset(),
    }
    sender.revoke("role@x", "intruder@x")
    sender.revoke("role@x", "ann@x")
    sender.grant("role@x", "bob@x")
    sender.flush()
    text = path.read_text()
    assert text == (
        f"# admin's lines\nann@x  ann@x\n\n{BEGIN}\nother@x  bob@x\nrole@x   bob@x\n{END}\n"
    )
    assert owners(text)["role@x"] == {"bob@x"}
    sender.flush()  # nothing pending: nothing written
    assert path.read_text() == text
