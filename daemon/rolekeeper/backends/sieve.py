"""Server-side redirects on a person's mailbox through ManageSieve, beside the person's own
filters and vacation.

ManageSieve allows one active script per user. rolekeeper never replaces the employee's
script: it stores its own (`rolekeeper`) and makes the active script a small wrapper
(`rolekeeper-main`) that includes (RFC 6609) its script first and then the one that was
active before. Every call checks before it acts, so running it again changes nothing, and a
wrapper that someone switched off is put back, keeping their newly active script.
"""

from __future__ import annotations

import re
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sievelib.managesieve import Client

from rolekeeper.backends.imap import mailbox_login
from rolekeeper.backends.tls import client_context
from rolekeeper.config import ImapSettings
from rolekeeper.errors import RolekeeperError

OWN_SCRIPT = "rolekeeper"
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
WRAPPER = "rolekeeper-main"
_INCLUDED = re.compile(r'^include :personal "((?:[^"\\]|\\.)*)";\s*#\s*their script$', re.M)


class SieveError(RolekeeperError):
    """The Sieve server refused a login or a script; the message is the server's."""


@dataclass(frozen=True, slots=True)
class Redirect:
    """Mail from these senders (addresses or whole domains) goes to `target`."""

    target: str
    addresses: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AutoReply:
    """Answer these senders once (per `days`) until `until`: the leaver's named mailbox
    telling a client where the work goes on."""

    addresses: tuple[str, ...]
    domains: tuple[str, ...]
    subject: str
    body: str
    from_address: str
    until: date
    days: int


def quote(value: str) -> str:
    """A Sieve quoted string (RFC 5228 §2.4.2)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _string_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"


def _sender_test(addresses: Sequence[str], domains: Sequence[str]) -> str | None:
    tests = []
    if addresses:
        tests.append(f'address :is "from" {_string_list(sorted(addresses))}')
    if domains:
        tests.append(f'address :domain :is "from" {_string_list(sorted(domains))}')
    if not tests:
        return None
    return tests[0] if len(tests) == 1 else f"anyof ({', '.join(tests)})"


def render_own_script(
    redirects: Sequence[Redirect], keep_copy: bool, replies: Sequence[AutoReply] = ()
) -> str:
    """rolekeeper's script: one redirect per role, for that role's clients' mail, and after a
    departure one auto-reply per role and language."""
    action = "redirect :copy" if keep_copy else "redirect"
    needs = (["copy"] if keep_copy else []) + (
        ["vacation", "date", "relational"] if replies else []
    )
    lines = [
        "# Managed by rolekeeper: client mail goes to the role mailbox. Edits are overwritten.",
        f"require {_string_list(needs)};" if needs else "",
    ]
    first = True
    for reply in replies:
        condition = _sender_test(reply.addresses, reply.domains)
        if condition is None:
            continue
        keyword = "if" if first else "elsif"
        first = False
        lines.append(
            f'{keyword} allof ({condition}, currentdate :value "le" "date" '
            f"{quote(reply.until.isoformat())}) {{\n"
            f"    vacation :days {reply.days} :subject {quote(reply.subject)} "
            f":from {quote(reply.from_address)} {quote(reply.body)};\n}}"
        )
    for redirect in sorted(redirects, key=lambda r: r.target):
        condition = _sender_test(redirect.addresses, redirect.domains)
        if condition is None:
            continue
        lines.append(f"if {condition} {{\n    {action} {quote(redirect.target)};\n}}")
    return "\n".join(line for line in lines if line) + "\n"


def render_wrapper(their_script: str | None) -> str:
    lines = [
        "# Managed by rolekeeper: runs rolekeeper's redirects, then the mailbox's own script.",
        'require ["include"];',
        f"include :personal {quote(OWN_SCRIPT)};",
    ]
    if their_script:
        lines.append(f"include :personal {quote(their_script)}; # their script")
    return "\n".join(lines) + "\n"


def their_script_in(wrapper: str) -> str | None:
    found = _INCLUDED.search(wrapper)
    return found.group(1).replace('\\"', '"').replace("\\\\", "\\") if found else None


class _SieveClient(Client):  # type: ignore[misc]
    """sievelib's client with TLS from rolekeeper's one context builder: sievelib builds a
    default context of its own, which knows neither `ca_file` nor `verify_tls`."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(host, port)
        self._context = context

    # sievelib's private (name-mangled) method; tests/test_tls.py pins that it is used.
    def _Client__enable_ssl(self, keyfile: str | None = None, certfile: str | None = None) -> None:
        plain = self.sock  # type: ignore[has-type]
        self.sock = self._context.wrap_socket(plain, server_hostname=self.srvhostname)


class SieveManager:
    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings

    def _connect(self, mailbox: str) -> Client:
        cfg = self.settings
        client = _SieveClient(cfg.host, cfg.sieve_port, client_context(cfg.verify_tls, cfg.ca_file))
        login, password = mailbox_login(cfg, mailbox)
        with warnings.catch_warnings():
            if cfg.host in _LOOPBACK:  # plain text never leaves the machine
                warnings.simplefilter("ignore", UserWarning)
            ok = client.connect(login, password, starttls=cfg.security != "plain", authmech="PLAIN")
        if not ok:
            raise SieveError(f"{mailbox}: ManageSieve login refused: {client.errmsg!r}")
        return client

    def ensure(
        self,
        mailbox: str,
        redirects: Sequence[Redirect],
        keep_copy: bool,
        replies: Sequence[AutoReply] = (),
    ) -> list[str]:
        """Make the mailbox's active filtering what it should be; return what was changed."""
        client = self._connect(mailbox)
        try:
            return self._ensure(client, mailbox, render_own_script(redirects, keep_copy, replies))
        finally:
            client.logout()

    def _ensure(self, client: Client, mailbox: str, own: str) -> list[str]:
        changes: list[str] = []
        active, others = client.listscripts()  # the active script is not among `others`
        scripts = {*others, *([active] if active else [])}
        if OWN_SCRIPT not in scripts or not _same(client.getscript(OWN_SCRIPT), own):
            self._put(client, mailbox, OWN_SCRIPT, own)
            changes.append(f"wrote {OWN_SCRIPT}")
        theirs = _their_script(client, active, scripts)
        wrapper = render_wrapper(theirs)
        if WRAPPER not in scripts or not _same(client.getscript(WRAPPER), wrapper):
            self._put(client, mailbox, WRAPPER, wrapper)
            changes.append(f"wrote {WRAPPER} (including {theirs or 'no script of theirs'})")
        if active != WRAPPER:
            if not client.setactive(WRAPPER):
                raise SieveError(f"{mailbox}: cannot activate {WRAPPER}: {client.errmsg!r}")
            changes.append(f"activated {WRAPPER}")
        return changes

    def _put(self, client: Client, mailbox: str, name: str, content: str) -> None:
        if not client.putscript(name, content):
            raise SieveError(f"{mailbox}: the server refused {name}: {client.errmsg!r}")

    def active_scripts(self, mailbox: str) -> tuple[str | None, list[str]]:
        client = self._connect(mailbox)
        try:
            active, scripts = client.listscripts()
            return active, list(scripts)
        finally:
            client.logout()


def _their_script(client: Client, active: str | None, scripts: set[str]) -> str | None:
    """The owner's script the wrapper should include.

    A script of theirs that is active now was chosen by them since the wrapper was
    activated: it is the one to keep. With nothing of theirs active (the wrapper is, or
    someone switched filtering off, or activated rolekeeper's own script) the wrapper keeps
    the one it included, so their filters and vacation are never dropped; unless they
    deleted it, since an include of a missing script would make Dovecot refuse the wrapper.
    """
    if active and active not in (WRAPPER, OWN_SCRIPT):
        return active
    if WRAPPER not in scripts:
        return None
    included = their_script_in(client.getscript(WRAPPER) or "")
    return included if included in scripts else None


def _same(stored: str | None, wanted: str) -> bool:
    """GETSCRIPT gives the text back with its own line endings."""
    return stored is not None and stored.replace("\r\n", "\n").strip() == wanted.strip()
