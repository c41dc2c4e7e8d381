"""The lab's mail relay: what the SMTP sink accepts is delivered by LMTP to the lab Dovecot's
users (so client mailboxes really receive notices and auto-replies), and a copy of every
message goes to a journal mailbox, as envelope journaling gives a real firm (the copy carries
the envelope recipients in X-Envelope-To).

The journal copy is delivered before the sink answers 250, so "accepted" implies "in the
journal" here (real journaling lags, which `handover.journal_grace_minutes` covers).
Recipients are delivered from a thread: their Sieve may send mail (a vacation reply) back
through the sink, which must not wait for itself.
"""

from __future__ import annotations

import queue
import smtplib
import threading

from rolekeeper.lab.smtp import ReceivedMail


class LmtpRelay:
    def __init__(self, host: str, lmtp_port: int, journal: str | None = None) -> None:
        self.host = host
        self.port = lmtp_port
        self.journal = journal
        self.refused: list[tuple[str, str]] = []  # (recipient, reason): not a lab user
        self._queue: queue.Queue[ReceivedMail | None] = queue.Queue()
        self._marks: list[threading.Event] = []
        self._worker = threading.Thread(target=self._run, name="lab-relay", daemon=True)
        self._worker.start()

    def __call__(self, mail: ReceivedMail) -> None:
        if self.journal:
            # Envelope journaling: the copy records where the message really went, which
            # its headers need not say (a Bcc, a server-side forward).
            envelope = f"X-Envelope-To: {', '.join(mail.rcpt_tos)}\r\n".encode()
            self._deliver(mail, [self.journal], envelope + mail.content)
        self._queue.put(mail)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every accepted message was delivered."""
        done = threading.Event()
        self._marks.append(done)
        self._queue.put(None)
        if not done.wait(timeout):
            raise TimeoutError("the lab relay did not catch up")

    def _run(self) -> None:
        while True:
            mail = self._queue.get()
            if mail is None:
                while self._marks:
                    self._marks.pop(0).set()
                continue
            self._deliver(mail, list(mail.rcpt_tos))

    def _deliver(
        self, mail: ReceivedMail, recipients: list[str], content: bytes | None = None
    ) -> None:
        sender = "" if mail.mail_from in ("", "<>") else mail.mail_from
        with smtplib.LMTP(self.host, self.port, timeout=30) as lmtp:
            for rcpt in recipients:
                try:
                    lmtp.sendmail(sender, [rcpt], mail.content if content is None else content)
                except smtplib.SMTPRecipientsRefused as exc:
                    self.refused.append((rcpt, str(exc.recipients.get(rcpt))))
                    lmtp.rset()
