"""`rolekeeper check --connect`: try each configured backend and say which fails and why."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text

from rolekeeper.backends.smtp import SmtpSender
from rolekeeper.config import ExchangeSettings, ImapSettings, Settings, SmtpSettings, TwilioSettings
from rolekeeper.store import migrate
from rolekeeper.store.db import create_store_engine, safe_url


@dataclass(frozen=True)
class ProbeResult:
    backend: str
    target: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "target": self.target,
            "ok": self.ok,
            "detail": self.detail,
        }


def _secret(value: object) -> str:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get else ""


def _explain(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listening on that port?)"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    text_ = str(exc) or type(exc).__name__
    if isinstance(text_, bytes):
        text_ = text_.decode(errors="replace")
    return f"{type(exc).__name__}: {text_}"


def probe_database(settings: Settings) -> ProbeResult:
    target = safe_url(settings.database)
    try:
        engine = create_store_engine(settings.database)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            current, head = migrate.current_revision(engine), migrate.head_revision(engine)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - report, don't crash, whatever the driver raises
        return ProbeResult("database", target, False, _explain(exc))
    state = (
        "schema up to date" if current == head else f"schema at {current}, will migrate to {head}"
    )
    return ProbeResult("database", target, True, f"connected; {state}")


def _admin_login(cfg: ImapSettings) -> tuple[str, str]:
    """The master user itself; without one, the mailbox `username` names, with its own
    password from the per-mailbox credentials."""
    from rolekeeper.backends.imap import mailbox_login

    if not cfg.master_user_separator:
        return mailbox_login(cfg, cfg.username)
    return cfg.username, _secret(cfg.password)


def probe_imap(cfg: ImapSettings) -> ProbeResult:
    from rolekeeper.backends.imap import open_imap

    target = f"{cfg.host}:{cfg.port} ({cfg.security})"
    try:
        client = open_imap(cfg, *_admin_login(cfg))
        try:
            caps = {c.decode() if isinstance(c, bytes) else str(c) for c in client.capabilities()}
        finally:
            with contextlib.suppress(Exception):  # the connection may already be gone
                client.logout()
    except Exception as exc:  # noqa: BLE001
        return ProbeResult("imap", target, False, _explain(exc))
    missing = sorted({"ACL", "IDLE", "UIDPLUS"} - caps)
    note = f"; server lacks {', '.join(missing)}" if missing else ""
    return ProbeResult("imap", target, not missing, f"logged in as {cfg.username}{note}")


def probe_sieve(cfg: ImapSettings) -> ProbeResult:
    from sievelib.managesieve import Client

    target = f"{cfg.host}:{cfg.sieve_port} (managesieve)"
    try:
        client = Client(cfg.host, cfg.sieve_port)
        login, password = _admin_login(cfg)
        ok = client.connect(login, password, starttls=cfg.security != "plain", authmech="PLAIN")
        if not ok:
            return ProbeResult("sieve", target, False, f"login refused: {client.errmsg!r}")
        client.logout()
    except Exception as exc:  # noqa: BLE001
        return ProbeResult("sieve", target, False, _explain(exc))
    return ProbeResult("sieve", target, True, f"logged in as {cfg.username}")


def probe_smtp(cfg: SmtpSettings) -> ProbeResult:
    target = f"{cfg.host}:{cfg.port} ({cfg.security})"
    try:
        with SmtpSender(cfg).session() as smtp:
            smtp.noop()
    except Exception as exc:  # noqa: BLE001
        return ProbeResult("smtp", target, False, _explain(exc))
    who = f"logged in as {cfg.username}" if cfg.username else "accepted a session"
    return ProbeResult("smtp", target, True, who)


def probe_exchange(cfg: ExchangeSettings) -> ProbeResult:
    from exchangelib import DELEGATE, IMPERSONATION, Account, Configuration, Credentials
    from exchangelib.protocol import BaseProtocol, NoVerifyHTTPAdapter

    target = cfg.service_endpoint
    # exchangelib keeps these as class-wide settings; the daemon uses one Exchange server.
    BaseProtocol.TIMEOUT = cfg.timeout_seconds
    if not cfg.verify_tls:
        BaseProtocol.HTTP_ADAPTER_CLS = NoVerifyHTTPAdapter
    try:
        config = Configuration(
            service_endpoint=cfg.service_endpoint,
            credentials=Credentials(cfg.username, _secret(cfg.password)),
            auth_type=cfg.auth_type,
        )
        account = Account(
            primary_smtp_address=cfg.username if "@" in cfg.username else None,
            config=config,
            autodiscover=False,
            access_type=IMPERSONATION if cfg.access_type == "impersonation" else DELEGATE,
        )
        account.root.refresh()
    except Exception as exc:  # noqa: BLE001
        return ProbeResult("exchange", target, False, _explain(exc))
    return ProbeResult("exchange", target, True, f"signed in as {cfg.username}")


def probe_twilio(cfg: TwilioSettings) -> ProbeResult:
    from rolekeeper.backends.twilio import TwilioApi

    target = cfg.api_base or "api.twilio.com"
    try:
        # The daemon's own client (timeout, TLS setting, test-double host), without retries:
        # a probe reports the first failure.
        client = TwilioApi(cfg).client
        account = client.api.v2010.accounts(cfg.account_sid).fetch()
    except Exception as exc:  # noqa: BLE001
        return ProbeResult("twilio", target, False, _explain(exc))
    return ProbeResult("twilio", target, True, f"account {account.sid} is {account.status}")


def probes_for(settings: Settings) -> list[Callable[[], ProbeResult]]:
    probes: list[Callable[[], ProbeResult]] = [lambda: probe_database(settings)]
    if (imap := settings.imap) is not None:
        probes += [lambda: probe_imap(imap), lambda: probe_sieve(imap)]
    if (smtp := settings.smtp) is not None:
        probes.append(lambda: probe_smtp(smtp))
    if (exchange := settings.exchange) is not None:
        probes.append(lambda: probe_exchange(exchange))
    if (twilio := settings.twilio) is not None:
        probes.append(lambda: probe_twilio(twilio))
    return probes
