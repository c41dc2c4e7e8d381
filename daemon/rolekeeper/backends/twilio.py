"""Twilio's REST API as rolekeeper uses it: numbers and messages, retried where that is safe.

One seam for connections (`TwilioApi`), one rule for retries:
- 429 (rate limited) means Twilio did not act: always retried, with exponential backoff;
- 5xx, timeouts and broken connections leave the outcome of a POST that *creates* something
  unknown, so `create_once` first looks for what the lost request may have made and only
  sends again when it finds nothing; reads and updates are simply retried.
Retrying stops after ``[twilio].retry_seconds``; then `TwilioUnavailable` says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from rolekeeper.config import TwilioSettings
from rolekeeper.errors import RolekeeperError
from rolekeeper.log import get_logger

log = get_logger(__name__)
T = TypeVar("T")

# The settings of an IncomingPhoneNumber rolekeeper owns, by their API attribute names.
NUMBER_FIELDS = (
    "friendly_name",
    "voice_url",
    "voice_method",
    "voice_fallback_url",
    "voice_fallback_method",
    "sms_url",
    "sms_method",
    "sms_fallback_url",
    "sms_fallback_method",
)


class TwilioUnavailable(RolekeeperError):
    """Twilio kept failing (5xx, 429, timeouts) for longer than the configured retry time."""


class TwilioRefused(RolekeeperError):
    """Twilio answered 4xx: the request itself is wrong or not allowed; resending is useless."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        self.status = status
        self.code = code
        self.text = message
        super().__init__(f"Twilio refused ({status}, error {code}): {message}")


@dataclass(frozen=True)
class IncomingNumber:
    sid: str
    phone_number: str
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SentMessage:
    sid: str
    to: str
    from_: str
    body: str
    status: str
    error_code: int | None
    error_message: str | None = None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a Twilio error: TwilioRestException for single resources,
    TwilioException("Unable to fetch page", response) for list pages."""
    if isinstance(exc, TwilioRestException):
        return int(exc.status)
    if isinstance(exc, TwilioException) and len(exc.args) >= 2:
        status = getattr(exc.args[1], "status_code", None)
        return int(status) if status is not None else None
    return None


def rate_limited(exc: BaseException) -> bool:
    return http_status(exc) == 429


def outcome_unknown(exc: BaseException) -> bool:
    """A failure after which Twilio may or may not have acted."""
    status = http_status(exc)
    if status is not None:
        return status >= 500
    return isinstance(exc, requests.Timeout | requests.ConnectionError)


def transient(exc: BaseException) -> bool:
    return rate_limited(exc) or outcome_unknown(exc)


def routed_url(cfg: TwilioSettings, url: str) -> str:
    """`url` as sent: unchanged in production; for test doubles, a host named in
    ``api_hosts`` goes to its base, any other ``*.twilio.com`` host to ``api_base``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    base = cfg.api_hosts.get(host)
    if base is None and cfg.api_base and host.endswith(".twilio.com"):
        base = cfg.api_base
    if base is None:
        return url
    target = urlsplit(base)
    return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))


class _HttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Twilio's own client with a timeout, TLS verification as configured and, for test
    doubles only, Twilio's hosts rewritten (`routed_url`)."""

    def __init__(self, cfg: TwilioSettings) -> None:
        super().__init__(timeout=cfg.timeout_seconds)
        self.session.verify = cfg.verify_tls
        self._cfg = cfg

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(method, routed_url(self._cfg, url), *args, **kwargs)


class TwilioApi:
    def __init__(self, cfg: TwilioSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        token = cfg.auth_token.get_secret_value() if cfg.auth_token else ""
        self.cfg = cfg
        self.client = Client(cfg.account_sid, token, http_client=_HttpClient(cfg))
        self._sleep = sleep

    # --- the retry rule ------------------------------------------------------------------

    def _retrying(self, retry: Callable[[BaseException], bool]) -> Retrying:
        cfg = self.cfg
        return Retrying(
            retry=retry_if_exception(retry),
            wait=wait_random_exponential(multiplier=cfg.retry_initial_seconds, max=30.0),
            stop=stop_after_delay(cfg.retry_seconds),
            sleep=self._sleep,
            reraise=True,
            before_sleep=lambda state: log.warning(
                "twilio request failed, retrying",
                attempt=state.attempt_number,
                error=_short(state.outcome.exception() if state.outcome else None),
            ),
        )

    def call(self, what: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run one request: 429 always retried; 5xx/timeouts only when `idempotent`."""
        try:
            return self._retrying(transient if idempotent else rate_limited)(what)
        except TwilioException as exc:
            raise _translate(exc) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TwilioUnavailable(f"Twilio did not answer: {_short(exc)}") from None

    def create_once(self, create: Callable[[], T], find: Callable[[], T | None]) -> T:
        """Create something exactly once although a request's outcome may be lost.

        After a 5xx or timeout, `find` looks for what that request may have made; only when it
        finds nothing is the request sent again. 429 is retried inside `create`'s attempt.
        """
        unsure = False

        def attempt() -> T:
            nonlocal unsure
            if unsure:
                found = self.call(find)
                if found is not None:
                    log.info("twilio request had succeeded before its answer was lost")
                    return found
            try:
                return self._retrying(rate_limited)(create)
            except BaseException as exc:
                if outcome_unknown(exc):
                    unsure = True
                raise

        try:
            return self._retrying(outcome_unknown)(attempt)
        except TwilioException as exc:
            raise _translate(exc) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TwilioUnavailable(f"Twilio did not answer: {_short(exc)}") from None

    # --- numbers -------------------------------------------------------------------------

    @property
    def _account(self) -> Any:
        return self.client.api.v2010.accounts(self.cfg.account_sid)

    def available_numbers(
        self, country: str, area_code: int | None, capabilities: tuple[str, ...], limit: int = 5
    ) -> list[str]:
        query: dict[str, Any] = {f"{c}_enabled": True for c in capabilities}
        if area_code is not None:
            query["area_code"] = area_code
        local = self._account.available_phone_numbers(country).local
        found = self.call(lambda: local.list(limit=limit, **query))
        return [str(n.phone_number) for n in found]

    def list_numbers(self, phone_number: str | None = None) -> list[IncomingNumber]:
        query: dict[str, Any] = {"phone_number": phone_number} if phone_number else {}
        found = self.call(lambda: self._account.incoming_phone_numbers.list(**query))
        numbers = [_number(n) for n in found]
        # The filter matches partial numbers too; only an exact match is the number.
        return [n for n in numbers if phone_number is None or n.phone_number == phone_number]

    def fetch_number(self, sid: str) -> IncomingNumber:
        return _number(self.call(lambda: self._account.incoming_phone_numbers(sid).fetch()))

    def buy_number(self, phone_number: str, settings: Mapping[str, str]) -> IncomingNumber:
        def create() -> IncomingNumber:
            return _number(
                self._account.incoming_phone_numbers.create(
                    phone_number=phone_number, **dict(settings)
                )
            )

        def find() -> IncomingNumber | None:
            found = self.list_numbers(phone_number)
            return found[0] if found else None

        return self.create_once(create, find)

    def update_number(self, sid: str, changes: Mapping[str, str]) -> IncomingNumber:
        return _number(
            self.call(lambda: self._account.incoming_phone_numbers(sid).update(**dict(changes)))
        )

    # --- messages ------------------------------------------------------------------------

    def create_message(
        self, *, from_: str, to: str, body: str, messaging_service_sid: str | None
    ) -> SentMessage:
        """One POST, 429 retried; a 5xx or timeout is raised for the caller to check."""
        query: dict[str, Any] = {"from_": from_, "to": to, "body": body}
        if messaging_service_sid:
            query["messaging_service_sid"] = messaging_service_sid
        return _message(self._account.messages.create(**query))

    def recent_messages(self, *, from_: str, to: str, since: datetime) -> list[SentMessage]:
        # Twilio filters by GMT date only ("DateSent>=YYYY-MM-DD"); the body tells ours apart.
        day = since.astimezone(UTC).date().isoformat()
        found = self.call(
            lambda: self._account.messages.list(
                from_=from_, to=to, date_sent_after=day, page_size=50, limit=200
            )
        )
        return [_message(m) for m in found]

    def fetch_message(self, sid: str) -> SentMessage:
        return _message(self.call(lambda: self._account.messages(sid).fetch()))


def _number(instance: Any) -> IncomingNumber:
    settings = {
        name: str(value)
        for name in NUMBER_FIELDS
        if (value := getattr(instance, name, None)) is not None
    }
    return IncomingNumber(str(instance.sid), str(instance.phone_number), settings)


def _message(instance: Any) -> SentMessage:
    code = getattr(instance, "error_code", None)
    return SentMessage(
        sid=str(instance.sid),
        to=str(instance.to),
        from_=str(getattr(instance, "from_", "") or ""),
        body=str(instance.body or ""),
        status=str(instance.status or ""),
        error_code=int(code) if code not in (None, "") else None,
        error_message=str(getattr(instance, "error_message", None) or "") or None,
    )


def _translate(exc: TwilioException) -> RolekeeperError:
    status = http_status(exc)
    if transient(exc):
        return TwilioUnavailable(f"Twilio kept failing: HTTP {status} {_short(exc)}")
    if isinstance(exc, TwilioRestException):
        return TwilioRefused(int(exc.status), exc.code, str(exc.msg))
    return TwilioRefused(status or 0, None, _short(exc))


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, TwilioRestException):
        return f"{exc.status} {exc.code or ''} {exc.msg}".strip()
    return f"{type(exc).__name__}: {exc}"[:300]
