"""IMAP IDLE on a bounded set of folders: new mail there is scanned within a second.

One thread and one connection per watched folder (the journal first, then role mailboxes'
INBOX, up to `watch.idle_folders`); everything else is polled. A thread that loses its
connection reconnects with exponential backoff and jitter, then asks for a scan, because
mail may have arrived while it was away; the cursor makes that scan exact.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable

from imapclient import IMAPClient

from rolekeeper.backends.imap import ImapSource
from rolekeeper.log import get_logger

log = get_logger(__name__)
REISSUE_SECONDS = 25 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes
CHECK_SECONDS = 1.0  # how often a waiting thread notices a stop request


class IdleWatcher:
    def __init__(
        self,
        source: ImapSource,
        folders: list[tuple[str, str]],
        on_new_mail: Callable[[str, str], object],
    ) -> None:
        self.source = source
        self.folders = folders
        self.on_new_mail = on_new_mail
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for mailbox, folder in self.folders:
            thread = threading.Thread(
                target=self._run,
                args=(mailbox, folder),
                name=f"idle:{mailbox}/{folder}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self, mailbox: str, folder: str) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                client = self.source.connect(mailbox)
            except Exception as exc:  # noqa: BLE001 - any failure: back off and retry
                failures += 1
                self._backoff(mailbox, folder, failures, exc)
                continue
            try:
                client.select_folder(folder, readonly=True)
                failures = 0
                self.on_new_mail(mailbox, folder)  # whatever came while we were away
                self._idle(client, mailbox, folder)
            except Exception as exc:  # noqa: BLE001
                failures += 1
                self._backoff(mailbox, folder, failures, exc)
            finally:
                with contextlib.suppress(Exception):
                    client.logout()

    def _idle(self, client: IMAPClient, mailbox: str, folder: str) -> None:
        while not self._stop.is_set():
            client.idle()
            news = False
            waited = 0.0
            while not self._stop.is_set() and not news and waited < REISSUE_SECONDS:
                responses = client.idle_check(timeout=CHECK_SECONDS)
                waited += CHECK_SECONDS
                news = any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses)
            client.idle_done()
            if news:
                self.on_new_mail(mailbox, folder)

    def _backoff(self, mailbox: str, folder: str, failures: int, exc: Exception) -> None:
        delay = min(300.0, 2.0 ** min(failures, 8)) * random.uniform(0.5, 1.0)  # noqa: S311
        log.warning(
            "IDLE connection lost; reconnecting",
            mailbox=mailbox,
            folder=folder,
            retry_in=round(delay, 1),
            error=str(exc),
        )
        self._stop.wait(delay)
