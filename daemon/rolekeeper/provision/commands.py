"""Admin-supplied programs: argv templates run without a shell, with a timeout."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence

from rolekeeper.log import get_logger
from rolekeeper.provision.base import ProvisionError

log = get_logger(__name__)
_FIELD = re.compile(r"\{([a-z_]+)\}")


def fill(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """The argv with each {name} replaced; values are never split or interpreted."""
    return [_FIELD.sub(lambda m: values[m.group(1)], arg) for arg in template]


def run_command(template: Sequence[str], values: Mapping[str, str], timeout: float) -> str:
    """Run the filled argv; its standard output, or ProvisionError naming the program, its
    exit status and the end of what it wrote to stderr."""
    argv = fill(template, values)
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise ProvisionError(f"{argv[0]}: program not found") from None
    except PermissionError:
        raise ProvisionError(f"{argv[0]}: not executable by this user") from None
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"{' '.join(argv)}: no answer within {timeout:g} s; killed") from None
    if result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip())[-500:]
        raise ProvisionError(
            f"{' '.join(argv)}: exit status {result.returncode}" + (f": {said}" if said else "")
        )
    log.info("command ran", argv=argv)
    return result.stdout


class CommandMailbox:
    """`mailbox = "command"`: runs mailbox_command, e.g. ["/usr/local/sbin/mkmbox",
    "{address}"]. The program must succeed when the mailbox exists already."""

    name = "command"
    can_create = True

    def __init__(self, template: Sequence[str], timeout: float) -> None:
        self.template = tuple(template)
        self.timeout = timeout

    def create(self, address: str) -> None:
        run_command(self.template, {"address": address}, self.timeout)


class CommandSendAs:
    """`send_as = "command"`: grant and revoke programs, and optionally a list program
    printing "address login" lines (the actual state). Without one, rolekeeper cannot see
    what is on the server and takes what its audit log says it granted (see reconcile)."""

    name = "command"

    def __init__(
        self,
        grant: Sequence[str],
        revoke: Sequence[str],
        listing: Sequence[str] | None,
        timeout: float,
    ) -> None:
        self.grant_template = tuple(grant)
        self.revoke_template = tuple(revoke)
        self.list_template = tuple(listing) if listing else None
        self.timeout = timeout

    @property
    def can_list(self) -> bool:
        return self.list_template is not None

    def read(self, addresses: Sequence[str]) -> dict[str, frozenset[str]]:
        found: dict[str, set[str]] = {a: set() for a in addresses}
        if self.list_template is None:
            raise ProvisionError("send_as_list_command is not set: send-as cannot be read")
        for line in run_command(self.list_template, {}, self.timeout).splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].lower() in found:
                for login in parts[1:]:
                    found[parts[0].lower()].update(x for x in login.lower().split(",") if x)
        return {a: frozenset(logins) for a, logins in found.items()}

    def grant(self, address: str, login: str) -> None:
        run_command(self.grant_template, {"address": address, "login": login}, self.timeout)

    def revoke(self, address: str, login: str) -> None:
        run_command(self.revoke_template, {"address": address, "login": login}, self.timeout)

    def flush(self) -> None:
        return None
