"""`send_as = "map"`: a Postfix `smtpd_sender_login_maps` table of role addresses.

Each line is `role@domain  login1,login2`: the SASL logins that may use the address as
MAIL FROM (with `reject_sender_login_mismatch`). rolekeeper owns every line whose key is a
role address, wherever it stands in the file, and writes them inside a marked block; lines
for other addresses (people's own) and comments are kept as they are. The file is replaced
atomically (write beside it, fsync, rename, same mode and owner), then `postmap_command`
runs (skipped when empty) so Postfix sees the change.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from rolekeeper.log import get_logger
from rolekeeper.provision.base import ProvisionError
from rolekeeper.provision.commands import run_command

log = get_logger(__name__)

BEGIN = "# BEGIN rolekeeper: role addresses (managed by rolekeeper; edits here are undone)"
END = "# END rolekeeper"


def entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """(key, logins) for each entry of a Postfix table text; continuation lines (starting
    with white space) belong to the entry above."""
    key: str | None = None
    values: list[str] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0].isspace() and key is not None:
            values += raw.replace(",", " ").split()
            continue
        if key is not None:
            yield key, values
        parts = raw.replace(",", " ").split()
        key, values = parts[0].lower(), [v.lower() for v in parts[1:]]
    if key is not None:
        yield key, values


def owners(text: str) -> dict[str, frozenset[str]]:
    """Address → logins. Postfix uses the first entry of a key; rolekeeper never writes
    a key twice, and any other duplicate is merged here so it is seen and undone."""
    found: dict[str, set[str]] = {}
    for key, values in entries(text):
        found.setdefault(key, set()).update(values)
    return {key: frozenset(values) for key, values in found.items()}


def render(text: str, managed: dict[str, frozenset[str]]) -> str:
    """The file with every line keyed by a managed address dropped and the block rewritten
    from `managed` (addresses with no login get no line)."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            inside = True
            continue
        if stripped == END:
            inside = False
            continue
        if inside:
            continue
        first = stripped.replace(",", " ").split()[:1]
        if first and not stripped.startswith("#") and first[0].lower() in managed:
            continue
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    block = [BEGIN]
    width = max((len(a) for a in managed), default=0) + 2
    for address in sorted(managed):
        if managed[address]:
            block.append(f"{address.ljust(width)}{','.join(sorted(managed[address]))}")
    block.append(END)
    return "\n".join([*kept, *([""] if kept else []), *block]) + "\n"


def block_addresses(text: str) -> dict[str, frozenset[str]]:
    """The entries inside rolekeeper's block."""
    inside: list[str] = []
    within = False
    for line in text.splitlines():
        if line.strip() == BEGIN:
            within = True
        elif line.strip() == END:
            within = False
        elif within:
            inside.append(line)
    return owners("\n".join(inside))


def write_atomically(path: Path, text: str) -> None:
    mode, owner = 0o644, None
    with contextlib.suppress(FileNotFoundError):
        st = path.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(mode)
        if owner is not None and os.geteuid() == 0:
            os.chown(tmp, *owner)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class MapSendAs:
    name = "map"

    def __init__(self, path: Path, postmap: Sequence[str], timeout: float) -> None:
        self.path = path
        self.postmap = tuple(postmap)
        self.timeout = timeout
        self._pending: dict[str, set[str]] = {}

    def _text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise ProvisionError(f"sender_map_path {self.path}: {exc}") from None

    def read(self, addresses: Sequence[str]) -> dict[str, frozenset[str]]:
        found = owners(self._text())
        return {a: found.get(a.lower(), frozenset()) for a in addresses}

    def _entry(self, address: str) -> set[str]:
        key = address.lower()
        if key not in self._pending:
            self._pending[key] = set(owners(self._text()).get(key, frozenset()))
        return self._pending[key]

    def grant(self, address: str, login: str) -> None:
        self._entry(address).add(login.lower())

    def revoke(self, address: str, login: str) -> None:
        self._entry(address).discard(login.lower())

    def flush(self) -> None:
        if not self._pending:
            return
        text = self._text()
        managed = dict(block_addresses(text))
        managed.update({a: frozenset(logins) for a, logins in self._pending.items()})
        if not self.path.parent.is_dir():
            raise ProvisionError(f"sender_map_path: directory {self.path.parent} does not exist")
        try:
            write_atomically(self.path, render(text, managed))
        except OSError as exc:
            raise ProvisionError(f"sender_map_path {self.path}: cannot write: {exc}") from None
        self._pending.clear()
        log.info("send-as map written", path=str(self.path))
        if self.postmap:
            run_command(self.postmap, {"path": str(self.path)}, self.timeout)
