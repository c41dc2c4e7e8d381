"""What the reconciler needs of a mail system: mailboxes, their ACLs, send-as.

A backend that cannot do something says so with `ProvisionError`; nothing fails silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from rolekeeper.errors import RolekeeperError


class ProvisionError(RolekeeperError):
    """A provisioner could not do what was asked; the message says what and why."""


class MailboxProvisioner(Protocol):
    """Creates a role mailbox on the mail server."""

    name: str
    can_create: bool

    def create(self, address: str) -> None:
        """Create the mailbox; harmless when it exists already."""


class SendAsProvisioner(Protocol):
    """Who may submit mail with a role address as the sender."""

    name: str

    def read(self, addresses: Sequence[str]) -> dict[str, frozenset[str]]:
        """Role address → logins allowed to send as it, for each of `addresses`."""

    def grant(self, address: str, login: str) -> None: ...

    def revoke(self, address: str, login: str) -> None: ...

    def flush(self) -> None:
        """Make the grants and revokes so far take effect (write and postmap a map)."""


class AccessBackend(Protocol):
    """Everything the reconciler reads and changes, whatever the mail system."""

    can_create_mailboxes: bool
    manages_send_as: bool

    def mailbox_exists(self, address: str) -> bool: ...

    def create_mailbox(self, address: str) -> None: ...

    def read_acls(self, address: str) -> dict[str, dict[str, str]] | None:
        """Folder → identifier → rights on the mailbox; None when it does not exist."""

    def set_rights(
        self, address: str, folders: Sequence[str], identifier: str, rights: str
    ) -> list[str]:
        """Exactly these rights on `folders` (all folders when empty); the folders changed."""

    def remove_rights(self, address: str, folders: Sequence[str], identifier: str) -> list[str]:
        """No entry for `identifier` on `folders` (all when empty); the folders changed."""

    def read_send_as(self, addresses: Sequence[str]) -> Mapping[str, frozenset[str]] | None:
        """Role address → logins; None when the backend cannot list them."""

    def grant_send_as(self, address: str, login: str) -> None: ...

    def revoke_send_as(self, address: str, login: str) -> None: ...

    def flush_send_as(self) -> None: ...
