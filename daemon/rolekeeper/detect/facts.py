"""What the rules see of one message: addresses, a few flags, and (when read) the author's text."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class MessageFacts(NamedTuple):
    """A named tuple rather than a dataclass: the parse workers send one per message across
    a process boundary, and a tuple is built and pickled several times faster."""

    # Message-ID, or a digest of the header fields where there is none.
    message_key: str
    message_id: str | None
    sender: str | None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    # Resent-* (a redirect or resend keeps the original Message-ID and From).
    resent_from: str | None = None
    resent_to: tuple[str, ...] = ()
    date: datetime | None = None
    # An auto-reply, bounce or bulk/list message: never counts as a client writing.
    automated: bool = False
    calendar_reply: bool = False
    # The subject marks a forward, or a message/rfc822 part is attached.
    forward: bool = False
    # From: of the messages this one carries (forwarded text or attached messages).
    carried_senders: tuple[str, ...] = ()
    # The sender's own words and signature; None when the body was not read.
    author_text: str | None = None
    # Envelope recipients a journal copy records (X-Envelope-To); only journal reads keep them.
    envelope_to: tuple[str, ...] = ()
    # The mailbox whose server-side rule sent this message on (X-Sieve-Redirected-From from
    # Dovecot's Sieve, X-MS-Exchange-Inbox-Rules-Loop from Exchange inbox rules).
    redirected_by: str | None = None

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.to + self.cc

    @property
    def all_addressees(self) -> tuple[str, ...]:
        return self.to + self.cc + self.resent_to
