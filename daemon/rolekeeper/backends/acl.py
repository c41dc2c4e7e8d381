"""IMAP ACLs (RFC 4314) on every folder of a mailbox, through the master-user login.

The master user opens `mailbox*admin`; with Dovecot's `acl_user = %u` that session is checked
as the mailbox's owner, who may change its ACLs. Without a master user the mailbox's own
login (its per-mailbox password) is that owner. Identifiers are login names (the people's
named addresses). Rights are compared as sets of RFC 4314 letters without the obsolete
"c" and "d", which Dovecot derives from k and x/t/e and reports on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from rolekeeper.backends.imap import mailbox_login, open_imap
from rolekeeper.config import ImapSettings
from rolekeeper.errors import RolekeeperError

# RFC 2086's rights, kept by RFC 4314 for compatibility; derived, never compared.
DERIVED_RIGHTS = frozenset("cd")

# Folder → identifier → rights.
Acls = dict[str, dict[str, str]]


class AclError(RolekeeperError):
    """The IMAP server refused to read or change an ACL; the message is the server's."""


def canonical(rights: str) -> str:
    """Rights as a sorted string without the derived letters: what two ACLs compare by."""
    return "".join(sorted(set(rights) - DERIVED_RIGHTS))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class ImapAcl:
    """Reads and changes ACLs on every folder of a mailbox's personal namespace."""

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings

    @contextmanager
    def session(self, mailbox: str) -> Iterator[IMAPClient]:
        client = open_imap(self.settings, *mailbox_login(self.settings, mailbox))
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def mailbox_exists(self, mailbox: str) -> bool:
        """Whether the master user can open the mailbox (a login is refused for a user the
        server does not know)."""
        try:
            with self.session(mailbox):
                return True
        except LoginError:
            return False

    def folders(self, client: IMAPClient) -> list[str]:
        """Selectable folders of the personal namespace (not other users' shared ones)."""
        others = [
            _text(prefix)
            for group in client.namespace()[1:]
            for prefix, _sep in (group or ())
            if prefix
        ]
        names = []
        for flags, _delimiter, name in client.list_folders():
            text = _text(name)
            if any(text.startswith(prefix) for prefix in others):
                continue
            if any(_text(flag).lower() in ("\\noselect", "\\nonexistent") for flag in flags):
                continue
            names.append(text)
        return sorted(names)

    def read(self, mailbox: str) -> Acls:
        """Every folder's ACL, identifiers as the server gives them."""
        with self.session(mailbox) as client:
            return {folder: self._getacl(client, folder) for folder in self.folders(client)}

    def _getacl(self, client: IMAPClient, folder: str) -> dict[str, str]:
        try:
            pairs = client.getacl(folder)
        except IMAPClientError as exc:
            raise AclError(f"GETACL {folder}: {exc}") from None
        return {_text(who): _text(rights) for who, rights in pairs}

    def set_rights(
        self, mailbox: str, folders: Sequence[str], identifier: str, rights: str
    ) -> list[str]:
        """Give `identifier` exactly `rights` on `folders` (every folder when empty); returns
        the folders changed."""
        return self._change(mailbox, folders, identifier, rights)

    def remove(self, mailbox: str, folders: Sequence[str], identifier: str) -> list[str]:
        """Delete `identifier`'s entry on `folders` (every folder when empty)."""
        return self._change(mailbox, folders, identifier, None)

    def _change(
        self, mailbox: str, folders: Sequence[str], identifier: str, rights: str | None
    ) -> list[str]:
        changed = []
        with self.session(mailbox) as client:
            existing = self.folders(client)
            for folder in folders or existing:
                if folder not in existing:
                    continue  # deleted since the plan was made
                try:
                    if rights is None:
                        client._command_and_check(
                            "deleteacl", client._normalise_folder(folder), identifier, unpack=True
                        )
                    else:
                        client.setacl(folder, identifier, rights)
                except IMAPClientError as exc:
                    raise AclError(f"{mailbox}: {folder}: {identifier}: {exc}") from None
                changed.append(folder)
        return changed


def rights_by_identifier(acls: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Identifier → folder → canonical rights, from folder → identifier → rights."""
    out: dict[str, dict[str, str]] = {}
    for folder, entries in acls.items():
        for who, rights in entries.items():
            out.setdefault(who, {})[folder] = canonical(rights)
    return out
