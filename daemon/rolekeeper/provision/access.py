"""The access backend for an IMAP server (Dovecot): ACLs over IMAP, mailboxes and send-as
through the configured provisioners. `build_access` picks them from [provisioning]."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from imapclient.exceptions import LoginError

from rolekeeper.backends.acl import ImapAcl
from rolekeeper.config import Settings
from rolekeeper.errors import ConfigError
from rolekeeper.provision.base import MailboxProvisioner, ProvisionError, SendAsProvisioner
from rolekeeper.provision.commands import CommandMailbox, CommandSendAs
from rolekeeper.provision.passwd import AdoptMailbox, DovecotPasswdMailbox
from rolekeeper.provision.sendas_map import MapSendAs


class ImapAccess:
    def __init__(
        self,
        acl: ImapAcl,
        mailboxes: MailboxProvisioner,
        send_as: SendAsProvisioner | None,
    ) -> None:
        self.acl = acl
        self.mailboxes = mailboxes
        self.send_as = send_as
        self.can_create_mailboxes = mailboxes.can_create
        self.manages_send_as = send_as is not None
        self.visible_within = 10.0

    def mailbox_exists(self, address: str) -> bool:
        return self.acl.mailbox_exists(address)

    def create_mailbox(self, address: str) -> None:
        """Create it and wait until the server knows it (Dovecot re-reads a passwd-file at
        most once a second), so the grants that follow can open it."""
        self.mailboxes.create(address)
        deadline = time.monotonic() + self.visible_within
        while not self.acl.mailbox_exists(address):
            if time.monotonic() > deadline:
                raise ProvisionError(
                    f"{address}: created by {self.mailboxes.name}, but the master user still "
                    f"cannot open it after {self.visible_within:g} s"
                )
            time.sleep(0.2)

    def read_acls(self, address: str) -> dict[str, dict[str, str]] | None:
        try:
            return self.acl.read(address)
        except LoginError:
            return None

    def set_rights(
        self, address: str, folders: Sequence[str], identifier: str, rights: str
    ) -> list[str]:
        return self.acl.set_rights(address, folders, identifier, rights)

    def remove_rights(self, address: str, folders: Sequence[str], identifier: str) -> list[str]:
        return self.acl.remove(address, folders, identifier)

    def read_send_as(self, addresses: Sequence[str]) -> Mapping[str, frozenset[str]] | None:
        """None when the provisioner cannot list what is granted (a command without
        send_as_list_command): the reconciler then goes by its audit log."""
        if self.send_as is None:
            return {}
        if isinstance(self.send_as, CommandSendAs) and not self.send_as.can_list:
            return None
        return self.send_as.read(addresses)

    def grant_send_as(self, address: str, login: str) -> None:
        self._sender().grant(address, login)

    def revoke_send_as(self, address: str, login: str) -> None:
        self._sender().revoke(address, login)

    def flush_send_as(self) -> None:
        if self.send_as is not None:
            self.send_as.flush()

    def _sender(self) -> SendAsProvisioner:
        if self.send_as is None:
            raise ProvisionError('provisioning.send_as = "none": send-as is not managed')
        return self.send_as


def mailbox_provisioner(settings: Settings) -> MailboxProvisioner:
    cfg = settings.provisioning
    if cfg.mailbox == "dovecot-passwd":
        assert cfg.userdb_path is not None  # the config insists
        return DovecotPasswdMailbox(cfg.userdb_path, cfg.userdb_line)
    if cfg.mailbox == "command":
        assert cfg.mailbox_command is not None
        return CommandMailbox(cfg.mailbox_command, cfg.command_timeout_seconds)
    return AdoptMailbox()


def send_as_provisioner(settings: Settings) -> SendAsProvisioner | None:
    cfg = settings.provisioning
    if cfg.send_as == "map":
        assert cfg.sender_map_path is not None
        return MapSendAs(cfg.sender_map_path, cfg.postmap_command, cfg.command_timeout_seconds)
    if cfg.send_as == "command":
        assert cfg.send_as_grant_command is not None and cfg.send_as_revoke_command is not None
        return CommandSendAs(
            cfg.send_as_grant_command,
            cfg.send_as_revoke_command,
            cfg.send_as_list_command,
            cfg.command_timeout_seconds,
        )
    return None


def build_access(settings: Settings) -> ImapAccess:
    if settings.imap is None:
        source = settings.source_files[0] if settings.source_files else "config"
        raise ConfigError([f"{source}: imap: role mailbox access needs an [imap] section"])
    return ImapAccess(
        ImapAcl(settings.imap), mailbox_provisioner(settings), send_as_provisioner(settings)
    )
