"""`mailbox = "dovecot-passwd"`: a user line appended to a Dovecot passwd-file userdb.

The role mailbox gets no usable password: the line carries the salted SHA-512 hash
(`{SSHA512}`, a scheme Dovecot knows) of 32 random bytes that are thrown away at once. A
shared role password would outlive every holder's departure; instead holders open the
role mailbox with their own login through the ACL (Dovecot's shared namespace) and
rolekeeper through the master user. Dovecot re-reads a changed passwd-file by itself.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import secrets
from pathlib import Path

from rolekeeper.log import get_logger
from rolekeeper.provision.base import ProvisionError
from rolekeeper.provision.commands import fill

log = get_logger(__name__)


def unusable_password() -> str:
    """A `{SSHA512}` hash of a random secret nobody keeps."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha512(secrets.token_bytes(32) + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode("ascii")


def users_in(text: str) -> set[str]:
    return {
        line.split(":", 1)[0].strip().lower()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }


class DovecotPasswdMailbox:
    name = "dovecot-passwd"
    can_create = True

    def __init__(self, path: Path, line_template: str) -> None:
        self.path = path
        self.line_template = line_template

    def create(self, address: str) -> None:
        if any(ch in address for ch in ":\n\r") or not address:
            raise ProvisionError(f"{address!r} cannot be a passwd-file user name")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            raise ProvisionError(f"userdb_path {self.path} does not exist") from None
        except PermissionError:
            raise ProvisionError(f"userdb_path {self.path} is not writable by this user") from None
        with os.fdopen(fd, "r+", encoding="utf-8") as passwd:
            # One writer at a time (another instance, an admin's script using flock).
            fcntl.flock(passwd, fcntl.LOCK_EX)
            passwd.seek(0)
            text = passwd.read()
            if address.lower() in users_in(text):
                return
            line = fill([self.line_template], {"address": address, "password": unusable_password()})
            prefix = "" if not text or text.endswith("\n") else "\n"
            passwd.write(f"{prefix}{line[0]}\n")
            passwd.flush()
            os.fsync(passwd.fileno())
        log.info("role mailbox added to the passwd-file", address=address, path=str(self.path))


class AdoptMailbox:
    """`mailbox = "adopt"`: role mailboxes are made by the admin; rolekeeper only uses them."""

    name = "adopt"
    can_create = False

    def create(self, address: str) -> None:
        raise ProvisionError(
            f"role mailbox {address} does not exist (or the master user cannot open it), and "
            'provisioning.mailbox = "adopt" does not create mailboxes: create it on the '
            'server, or choose "dovecot-passwd" or "command"'
        )
