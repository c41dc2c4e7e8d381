"""IMAP mail source (imapclient): one admin login reads every mailbox.

With a master user (Dovecot `user*master`), each mailbox is opened as `mailbox*admin`;
without one (`master_user_separator = ""`), as the mailbox itself with its own password. The
number of open connections is capped (`imap.max_connections`; Dovecot allows 10 per user
and IP by default); the least recently used one is closed to open another.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.response_parser import parse_fetch_response

from rolekeeper.backends.base import Fetched, FolderState
from rolekeeper.backends.tls import client_context
from rolekeeper.config import ImapSettings
from rolekeeper.errors import MailboxAccessError

FETCH_BATCH = 2000  # Dovecot refuses command lines over 64 KiB
_UID = re.compile(rb"[( ]UID (\d+)[ )]")


def mailbox_login(cfg: ImapSettings, mailbox: str) -> tuple[str, str]:
    """Login and password that open `mailbox`: as the admin (Dovecot's `mailbox*admin`), or
    without a master user as the mailbox itself with its own password (from its file).
    IMAP, ACLs and ManageSieve all log in with this."""
    if not cfg.master_user_separator:
        return mailbox, cfg.mailbox_password(mailbox).get_secret_value()
    password = cfg.password.get_secret_value() if cfg.password else ""
    return f"{mailbox}{cfg.master_user_separator}{cfg.username}", password


def open_imap(cfg: ImapSettings, login: str, password: str) -> IMAPClient:
    """Connect (TLS, STARTTLS or plain, as configured; certificates verified) and log in."""
    context = client_context(cfg.verify_tls, cfg.ca_file)
    client = IMAPClient(
        cfg.host,
        port=cfg.port,
        ssl=cfg.security == "tls",
        ssl_context=context,
        timeout=cfg.timeout_seconds,
    )
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        # imapclient sets imaplib's debug level to 5, which formats every response line and
        # every literal into a debug message even when nothing logs it.
        client._imap.debug = 0
    try:
        if cfg.security == "starttls":
            client.starttls(context)
        client.login(login, password)
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


class ImapSource:
    name = "imap"
    # imapclient's errors are imaplib's (IMAPClientError is IMAP4.error); sockets and TLS
    # fail with OSError.
    transient_errors: tuple[type[BaseException], ...] = (OSError, imaplib.IMAP4.error)

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self._connections: OrderedDict[str, IMAPClient] = OrderedDict()
        self._selected: dict[str, str] = {}
        self._known_folders: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _client(self, mailbox: str) -> IMAPClient:
        with self._lock:
            client = self._connections.pop(mailbox, None)
            if client is None:
                while len(self._connections) >= self.settings.max_connections:
                    _, oldest = self._connections.popitem(last=False)
                    with contextlib.suppress(Exception):
                        oldest.logout()
                client = self.connect(mailbox)
                self._selected.pop(mailbox, None)
            self._connections[mailbox] = client
            return client

    def connect(self, mailbox: str) -> IMAPClient:
        """A connection of its own, outside the pool (IDLE holds one per watched folder).
        Raises MailboxAccessError when this one mailbox cannot be opened."""
        try:
            return open_imap(self.settings, *mailbox_login(self.settings, mailbox))
        except LoginError as exc:
            said = exc.args[0] if exc.args else ""
            if isinstance(said, bytes):
                said = said.decode("utf-8", "replace")
            raise MailboxAccessError(f"{mailbox}: IMAP login refused: {said}") from None

    def drop(self, mailbox: str) -> None:
        """Forget a connection after an error; the next call reconnects."""
        with self._lock:
            client = self._connections.pop(mailbox, None)
            self._selected.pop(mailbox, None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    def _select(self, mailbox: str, folder: str) -> tuple[IMAPClient, int]:
        client = self._client(mailbox)
        info = client.select_folder(folder, readonly=True)
        self._selected[mailbox] = folder
        return client, int(info[b"UIDVALIDITY"])

    def folder_state(self, mailbox: str, folder: str) -> FolderState | None:
        client = self._client(mailbox)
        if self._selected.get(mailbox) == folder:
            # STATUS on the selected folder may answer from the session's stale view
            # (RFC 3501 §6.3.10); selecting it again reports the folder as it is now.
            info = client.select_folder(folder, readonly=True)
            return FolderState(int(info[b"UIDVALIDITY"]), int(info[b"UIDNEXT"]))
        if not client.folder_exists(folder):
            return None
        status = client.folder_status(folder, [b"UIDVALIDITY", b"UIDNEXT"])
        return FolderState(int(status[b"UIDVALIDITY"]), int(status[b"UIDNEXT"]))

    def uids_since(
        self,
        mailbox: str,
        folder: str,
        first_uid: int,
        since: date | None = None,
        before: date | None = None,
    ) -> list[int]:
        client, _ = self._select(mailbox, folder)
        criteria: list[Any] = ["UID", f"{max(1, first_uid)}:*"]
        if since is not None:
            criteria += ["SINCE", since]
        if before is not None:
            criteria += ["BEFORE", before]
        # "N:*" always matches the highest UID, even one below N.
        return sorted(uid for uid in client.search(criteria) if uid >= first_uid)

    def fetch_headers(
        self, mailbox: str, folder: str, uids: Sequence[int], fields: Sequence[str]
    ) -> list[Fetched]:
        item = f"BODY.PEEK[HEADER.FIELDS ({' '.join(f.upper() for f in fields)})]"
        return self._fetch(mailbox, folder, uids, item, b"BODY[HEADER")

    def fetch_bodies(
        self, mailbox: str, folder: str, uids: Sequence[int], limit: int
    ) -> list[Fetched]:
        return self._fetch(mailbox, folder, uids, f"BODY.PEEK[]<0.{limit}>", b"BODY[]")

    def _fetch(
        self, mailbox: str, folder: str, uids: Sequence[int], item: str, key_prefix: bytes
    ) -> list[Fetched]:
        if not uids:
            return []
        client = self._client(mailbox)
        if self._selected.get(mailbox) != folder:
            self._select(mailbox, folder)
        out: list[Fetched] = []
        for start in range(0, len(uids), FETCH_BATCH):
            batch = list(uids[start : start + FETCH_BATCH])
            out.extend(fetch_literals(client, batch, item, key_prefix))
        return out

    def has_message(self, mailbox: str, folder: str, message_id: str) -> bool:
        """Whether a message with this Message-ID is in the folder (a missing folder: no)."""
        client = self._client(mailbox)
        if not client.folder_exists(folder):
            return False
        self._select(mailbox, folder)
        return bool(client.search(["HEADER", "Message-ID", message_id]))

    def append(self, mailbox: str, folder: str, message: bytes) -> None:
        """File a copy (as read) in the folder, creating the folder if needed."""
        client = self._client(mailbox)
        if (mailbox, folder) not in self._known_folders:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            self._known_folders.add((mailbox, folder))
        try:
            client.append(folder, message, flags=(b"\\Seen",))
        except Exception:
            self._known_folders.discard((mailbox, folder))  # deleted meanwhile? look again
            raise

    def close(self) -> None:
        with self._lock:
            clients = list(self._connections.values())
            self._connections.clear()
            self._selected.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                client.logout()


def fetch_literals(
    client: IMAPClient, uids: Sequence[int], item: str, key_prefix: bytes
) -> list[Fetched]:
    """UID FETCH of one body section; the literal of each message, in the server's order.

    The answer is read here line by line and literal by literal (RFC 3501 §4.3): imaplib's
    reader matches several patterns per line and imapclient's parser tokenises every byte of
    every literal again, together three times the cost of the FETCH itself. The usual shape,
    `* n FETCH (UID u BODY[...] {size}`, is taken as it is; any other (UID after the
    literal, a quoted or NIL section, unsolicited FLAGS) goes to imapclient's parser.
    """
    imap = client._imap  # imapclient's own fetch() issues its command on it the same way
    tag = imap._command("UID", "FETCH", ",".join(str(u) for u in uids), f"({item})")
    try:
        return _read_fetch(imap, tag, set(uids), key_prefix)
    finally:
        imap.tagged_commands.pop(tag, None)


def _read_fetch(imap: Any, tag: bytes, wanted: set[int], key_prefix: bytes) -> list[Fetched]:
    out: list[Fetched] = []
    unusual: list[Any] = []
    while True:
        line = imap.readline()
        if not line:
            raise IMAPClientError("connection closed during FETCH")
        if line.startswith(tag + b" "):
            status = line[len(tag) + 1 :].split(b" ", 1)[0].upper()
            if status != b"OK":
                raise IMAPClientError(f"FETCH failed: {line.decode('ascii', 'replace').strip()}")
            break
        heads, literals = [line], []
        while (size := _literal_size(line)) is not None:
            literals.append(imap.read(size))
            line = imap.readline()
            heads.append(line)
        first = heads[0]
        if not first.startswith(b"* ") or b" FETCH " not in first[:24]:
            continue  # EXISTS, EXPUNGE, RECENT and the like: nothing to do with the answer
        match = _UID.search(first)
        if (
            len(literals) == 1
            and match
            and key_prefix in first[match.end() :]
            and heads[1].strip() == b")"
        ):
            uid = int(match.group(1))
            if uid in wanted:
                out.append(Fetched(uid, literals[0]))
            continue
        unusual.extend(_as_imaplib_data(heads, literals))
    if unusual:
        seen = {f.uid for f in out}
        out += [f for f in _parsed(unusual, sorted(wanted), key_prefix) if f.uid not in seen]
    return out


def _literal_size(line: bytes) -> int | None:
    if not line.endswith(b"}\r\n"):
        return None
    start = line.rfind(b"{")
    digits = line[start + 1 : -3]
    return int(digits) if start >= 0 and digits.isdigit() else None


def _as_imaplib_data(heads: list[bytes], literals: list[bytes]) -> list[Any]:
    """One untagged FETCH response in the form imaplib gives it to imapclient's parser."""
    first = heads[0][2:].replace(b" FETCH ", b" ", 1)  # "* 3 FETCH (" → "3 ("
    lines = [first, *heads[1:]]
    data: list[Any] = [(lines[i].rstrip(b"\r\n"), literals[i]) for i in range(len(literals))]
    data.append(lines[-1].rstrip(b"\r\n"))
    return data


def _parsed(data: list[Any], uids: Sequence[int], key_prefix: bytes) -> list[Fetched]:
    response = parse_fetch_response(data, False, True)
    out: list[Fetched] = []
    for uid in uids:
        fields = response.get(uid, {})
        value = next(
            (v for k, v in fields.items() if isinstance(k, bytes) and k.startswith(key_prefix)),
            None,
        )
        if isinstance(value, bytes):
            out.append(Fetched(uid, value))
    return out
