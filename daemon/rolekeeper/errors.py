"""The one exception root; every error an admin may see derives from it."""

from __future__ import annotations

from collections.abc import Sequence


class RolekeeperError(Exception):
    """Base of all errors rolekeeper raises on purpose."""

    exit_code = 1


class ConfigError(RolekeeperError):
    """The configuration cannot be used; carries one line per problem."""

    exit_code = 2

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class MailboxAccessError(RolekeeperError):
    """One mailbox cannot be opened (no password for it, or its login was refused); the
    others still can, so callers record it and go on."""


class ImportFileError(RolekeeperError):
    """A CSV file was refused; nothing of it was imported."""

    exit_code = 3

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__("\n".join(f"{path}: {p}" for p in self.problems))


class NotFoundError(RolekeeperError):
    """A named role, person or client does not exist."""

    exit_code = 4
