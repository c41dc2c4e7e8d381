"""What the watcher needs of a mail system; IMAP today, Exchange and Graph behind the same."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FolderState:
    uidvalidity: int
    uidnext: int


@dataclass(frozen=True, slots=True)
class Fetched:
    uid: int
    data: bytes  # header fields, or the first bytes of the whole message


class MailSource(Protocol):
    """Reads mailboxes by stable numbers (IMAP UIDs); the cursor is the backend's own."""

    name: str
    # Failures after which a later pass may well succeed (a dropped connection, a refused
    # login, a server restarting): the scanner logs them, drops the mailbox's connection
    # and goes on with the next mailbox.
    transient_errors: tuple[type[BaseException], ...]

    def folder_state(self, mailbox: str, folder: str) -> FolderState | None:
        """None when the folder does not exist."""

    def uids_since(
        self,
        mailbox: str,
        folder: str,
        first_uid: int,
        since: date | None = None,
        before: date | None = None,
    ) -> list[int]:
        """UIDs >= first_uid, optionally only of mail received on or after `since` and
        before `before` (IMAP SINCE/BEFORE: whole days, the server's time zone)."""

    def drop(self, mailbox: str) -> None:
        """Forget the mailbox's connection after a failure; the next call reconnects."""

    def fetch_headers(
        self, mailbox: str, folder: str, uids: Sequence[int], fields: Sequence[str]
    ) -> list[Fetched]: ...

    def fetch_bodies(
        self, mailbox: str, folder: str, uids: Sequence[int], limit: int
    ) -> list[Fetched]: ...

    def close(self) -> None: ...
