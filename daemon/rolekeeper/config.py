"""TOML files → validated, frozen settings. The only module that reads config files and env.

One main file plus ``conf.d/*.toml`` beside it, merged in name order (later wins, tables merge
key by key). Every problem is reported as ``FILE: key: what is expected``; secrets are never
accepted in the text, only as ``*_file`` paths or systemd credential names.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from rolekeeper.domain import InvalidValue, normalise_domain, normalise_phone
from rolekeeper.errors import ConfigError, MailboxAccessError

DEFAULT_CONFIG_PATH = Path("/etc/rolekeeper/rolekeeper.toml")
CONFIG_ENV = "ROLEKEEPER_CONFIG"

# Keys that would hold a secret in clear text; the text of a config file is often world-
# readable, copied into tickets and kept in git, so these are refused outright.
_SECRET_KEYS = frozenset(
    {"password", "auth_token", "token", "secret", "api_key", "client_secret", "pin"}
)


def _domain_list(value: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(normalise_domain(d) for d in value)
    except InvalidValue as exc:
        raise ValueError(str(exc)) from None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Section):
    """A secret named by a file path or a systemd credential, resolved at load time."""

    password_file: Path | None = None
    password_credential: str | None = None
    # Filled from the file or credential; never read from the config text.
    password: SecretStr | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="after")
    def _resolve_secret(self) -> Self:
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("give either password_file or password_credential, not both")
        if self.password_file is not None:
            object.__setattr__(self, "password", SecretStr(_read_secret(self.password_file)))
        elif self.password_credential is not None:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            if not creds:
                raise ValueError(
                    f"password_credential {self.password_credential!r} needs systemd's "
                    "$CREDENTIALS_DIRECTORY (LoadCredential= in the unit); it is not set"
                )
            path = Path(creds) / self.password_credential
            object.__setattr__(self, "password", SecretStr(_read_secret(path)))
        return self


def _read_secret(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"secret file {path} does not exist") from None
    except PermissionError:
        raise ValueError(f"secret file {path} is not readable by this user") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"secret file {path} cannot be read: {exc}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ValueError(f"secret file {path} is empty")
    return secret


TlsMode = Literal["tls", "starttls", "plain"]
Port = Annotated[int, Field(ge=1, le=65535)]


class OrganisationSettings(_Section):
    name: str = "Example Corp"
    domains: tuple[str, ...] = ()
    default_region: str = "RU"
    timezone: str = "UTC"
    main_lines: tuple[str, ...] = ()
    corporate_numbers: tuple[str, ...] = ()

    _domains = field_validator("domains")(lambda value: _domain_list(value))

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a two-letter region code phonenumbers knows")
        return region

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name") from None
        return value

    @model_validator(mode="after")
    def _numbers(self) -> Self:
        for field in ("main_lines", "corporate_numbers"):
            try:
                numbers = tuple(
                    normalise_phone(n, self.default_region) for n in getattr(self, field)
                )
            except InvalidValue as exc:
                raise ValueError(f"{field}: {exc}") from None
            object.__setattr__(self, field, numbers)
        return self


class DatabaseSettings(SecretRef):
    url: str = "sqlite:////var/lib/rolekeeper/rolekeeper.db"
    busy_timeout_seconds: float = Field(default=30.0, gt=0)
    pool_size: int = Field(default=5, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"{value!r} is not a database URL") from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError("only sqlite:/// and postgresql:// URLs are supported")
        if url.password:
            raise ValueError(
                "the URL carries a password; put it in password_file or password_credential"
            )
        return value


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class SchedulerSettings(_Section):
    poll_seconds: float = Field(default=30.0, ge=0.2, le=3600)
    max_attempts: int = Field(default=5, ge=1, le=100)
    lease_seconds: int = Field(default=900, ge=10)
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1)


class RetentionSettings(_Section):
    incidents_days: int = Field(default=365, ge=1)
    notices_days: int = Field(default=730, ge=1)
    events_days: int = Field(default=90, ge=1)
    jobs_days: int = Field(default=30, ge=1)
    purge_every_hours: float = Field(default=24.0, gt=0)


class _ServerSettings(SecretRef):
    """A TCP server reached with TLS (verified unless configured otherwise) and a login."""

    host: str
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)


class ImapSettings(_ServerSettings):
    port: Port = 993
    security: TlsMode = "tls"
    username: str
    # Dovecot "user*master" logins; empty means per-mailbox credentials.
    master_user_separator: str = "*"
    # Per-mailbox credentials: a directory with one password file per mailbox, named by its
    # address; or a systemd credential loaded from such a directory, whose files systemd
    # names "<credential>_<address>".
    credentials_dir: Path | None = None
    credentials_credential: str | None = None
    max_connections: int = Field(default=8, ge=1, le=1000)
    sieve_port: Port = 4190
    # Where the "<prefix><address>" password files are, once resolved.
    _passwords_at: tuple[Path, str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _per_mailbox(self) -> Self:
        given = [
            key
            for key in ("credentials_dir", "credentials_credential")
            if getattr(self, key) is not None
        ]
        if self.master_user_separator:
            return self  # unused with a master user (`rolekeeper check` says so)
        if not given:
            raise ValueError(
                'master_user_separator = "" (a login per mailbox) needs credentials_dir or '
                "credentials_credential: where each mailbox's password file is"
            )
        if len(given) == 2:
            raise ValueError("give either credentials_dir or credentials_credential, not both")
        if self.credentials_dir is not None:
            if not self.credentials_dir.is_dir():
                raise ValueError(f"credentials_dir {self.credentials_dir} is not a directory")
            where = (self.credentials_dir, "")
        else:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            if not creds:
                raise ValueError(
                    f"credentials_credential {self.credentials_credential!r} needs systemd's "
                    "$CREDENTIALS_DIRECTORY (LoadCredential= in the unit); it is not set"
                )
            where = (Path(creds), f"{self.credentials_credential}_")
        self._passwords_at = where
        return self

    def mailbox_password(self, mailbox: str) -> SecretStr:
        """The password of one mailbox, read from its file now, so that a mailbox added
        later needs no reload. Raises MailboxAccessError naming the file, never its text."""
        if self._passwords_at is None:
            raise MailboxAccessError(f"{mailbox}: no per-mailbox credentials are configured")
        directory, prefix = self._passwords_at
        if not mailbox or "/" in mailbox or mailbox.startswith("."):
            raise MailboxAccessError(f"{mailbox!r} cannot name a password file")
        path = directory / f"{prefix}{mailbox}"
        if not path.exists() and mailbox != mailbox.lower():
            path = directory / f"{prefix}{mailbox.lower()}"
        try:
            return SecretStr(_read_secret(path))
        except ValueError as exc:
            raise MailboxAccessError(f"{mailbox}: no IMAP password: {exc}") from None


class SmtpSettings(_ServerSettings):
    port: Port = 587
    security: TlsMode = "starttls"
    username: str | None = None

    @model_validator(mode="after")
    def _login(self) -> Self:
        if self.password is not None and not self.username:
            raise ValueError("a password is given but no username to log in with")
        return self


class ExchangeSettings(SecretRef):
    service_endpoint: str
    username: str
    auth_type: Literal["NTLM", "basic", "digest"] = "NTLM"
    verify_tls: bool = True
    access_type: Literal["impersonation", "delegate"] = "impersonation"
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("service_endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        if not re.match(r"^https://[^/\s]+/", value):
            raise ValueError(
                "expected the EWS URL, e.g. https://mail.example.com/EWS/Exchange.asmx"
            )
        return value


_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _e164(value: str | None) -> str | None:
    if value is not None and not _E164.fullmatch(value):
        raise ValueError(f"{value!r} is not a number in E.164 form (+ and country code)")
    return value


def _base_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"{value!r} is not an http(s) URL without query or fragment")
    return value.rstrip("/")


class TwilioNumbersSettings(_Section):
    """How `rolekeeper roles provision` finds numbers for roles that lack one."""

    # ISO country of the numbers to buy, e.g. "US", "GB".
    country: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    # Local numbers only in this area code (US and Canada); unset: any.
    area_code: int | None = Field(default=None, ge=200, le=999)
    # What a role number must be able to do.
    capabilities: tuple[Literal["voice", "sms", "mms"], ...] = ("voice", "sms")
    # Numbers already on the account to adopt instead of buying: role key -> E.164 number.
    adopt: dict[str, str] = Field(default_factory=dict)

    @field_validator("adopt")
    @classmethod
    def _adopt(cls, value: dict[str, str]) -> dict[str, str]:
        for number in value.values():
            _e164(number)
        return value


class TwilioWebhooksSettings(_Section):
    """The `rolekeeper webhooks` service that answers Twilio's voice and messaging requests."""

    listen_host: str = "127.0.0.1"
    listen_port: Port = 8089
    # Seconds the holder's phone rings before the call goes to the role voicemail.
    ring_seconds: int = Field(default=20, ge=5, le=120)
    # Whisper the caller's name to the holder and ask for 1 before connecting.
    screen: bool = True
    # Longest voicemail, in seconds.
    voicemail_max_seconds: int = Field(default=120, ge=10, le=3600)
    # Ask Twilio to transcribe voicemail (English only at Twilio); the mail carries the text.
    transcribe: bool = False
    # Language and voice of spoken prompts (<Say language=…>).
    language: str = Field(default="en-US", pattern=r"^[a-z]{2}-[A-Z]{2}$")
    # The Twilio number holders call to reach clients through their role number; unset: off.
    access_number: str | None = None
    # The PIN the access number asks for (digits); a file or a systemd credential.
    pin_file: Path | None = None
    pin_credential: str | None = None
    pin: SecretStr | None = Field(default=None, exclude=True, repr=False)
    # Toll-fraud protection: this many wrong PINs from one caller number within
    # pin_window_minutes lock that number out of the access number for pin_lockout_minutes
    # (counted in the store, so across every webhook instance).
    pin_attempts: int = Field(default=3, ge=1, le=100)
    pin_window_minutes: float = Field(default=15.0, gt=0)
    pin_lockout_minutes: float = Field(default=60.0, gt=0)
    # Wrong PINs one call may try before it is hung up.
    pin_attempts_per_call: int = Field(default=3, ge=1, le=10)

    _number = field_validator("access_number")(lambda value: _e164(value))

    @model_validator(mode="after")
    def _resolve_pin(self) -> Self:
        if self.pin_file is None and self.pin_credential is None:
            if self.access_number is not None:
                raise ValueError("access_number needs pin_file or pin_credential")
            return self
        ref = SecretRef(password_file=self.pin_file, password_credential=self.pin_credential)
        assert ref.password is not None
        pin = ref.password.get_secret_value().strip()
        if not re.fullmatch(r"[0-9]{4,12}", pin):
            raise ValueError("the PIN must be 4 to 12 digits")
        object.__setattr__(self, "pin", SecretStr(pin))
        return self


class TwilioFallbackSettings(_Section):
    """Static TwiML each number falls back to when the webhooks do not answer."""

    # Where it is published: a directory a web server serves, or Twilio Serverless assets.
    publish: Literal["file", "serverless"] = "file"
    # The directory the files are written to (one per number, replaced atomically).
    directory: Path = Field(default="/var/lib/rolekeeper/fallback-twiml", validate_default=True)
    # The public URL of that directory; unset: numbers get no fallback URL. File only: with
    # serverless the URL is the Environment's domain, learned from Twilio.
    url: str | None = None
    # Serverless: the Service's unique name (part of its domain) and the Environment's.
    service_name: str = Field(
        default="rolekeeper-fallback", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,49}$"
    )
    environment: str = Field(default="production", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
    # The Environment's domain suffix (...-<suffix>.twil.io); unset: none.
    domain_suffix: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,15}$")
    # "protected" assets answer only requests carrying Twilio's signature, as Twilio's own
    # fallback requests do; "public" ones anyone who learns the URL.
    visibility: Literal["protected", "public"] = "protected"
    # Longest wait for Twilio to build the assets before the publish counts as failed.
    build_timeout_seconds: float = Field(default=300.0, gt=0)

    _url = field_validator("url")(lambda value: _base_url(value))

    @model_validator(mode="after")
    def _url_only_for_files(self) -> Self:
        if self.publish == "serverless" and self.url is not None:
            raise ValueError(
                'url is only for publish = "file"; with "serverless" the URL is the '
                "Environment's domain on Twilio (remove url)"
            )
        return self


class TwilioSettings(_Section):
    account_sid: str
    auth_token_file: Path | None = None
    auth_token_credential: str | None = None
    auth_token: SecretStr | None = Field(default=None, exclude=True, repr=False)
    api_base: str | None = None  # only for test doubles; Twilio's own hosts otherwise
    # Only for test doubles: one base URL per Twilio host (serverless.twilio.com, ...),
    # before api_base, which takes every other *.twilio.com host.
    api_hosts: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    # Seconds to wait for one API answer, and how long to keep retrying (429, 5xx, timeouts).
    timeout_seconds: float = Field(default=15.0, gt=0)
    retry_seconds: float = Field(default=120.0, ge=0)
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    # The public URL of `rolekeeper webhooks` as Twilio reaches it (through a reverse proxy).
    public_url: str | None = None
    # Messaging Service the SMS notices go through (with the role number as sender).
    messaging_service_sid: str | None = None
    # The team line calls go to when a role has no holder (and in the fallback TwiML).
    team_line: str | None = None
    # Minutes between reconciler passes over the numbers' settings.
    reconcile_minutes: float = Field(default=15.0, gt=0)
    numbers: TwilioNumbersSettings = TwilioNumbersSettings()
    webhooks: TwilioWebhooksSettings = TwilioWebhooksSettings()
    fallback: TwilioFallbackSettings = TwilioFallbackSettings()

    _public = field_validator("public_url")(lambda value: _base_url(value))

    @field_validator("api_hosts")
    @classmethod
    def _hosts(cls, value: dict[str, str]) -> dict[str, str]:
        for host in value:
            if not host.endswith(".twilio.com"):
                raise ValueError(f"{host!r} is not a Twilio host (*.twilio.com)")
        return {host: str(_base_url(base)) for host, base in value.items()}

    _team = field_validator("team_line")(lambda value: _e164(value))

    @field_validator("account_sid")
    @classmethod
    def _sid(cls, value: str) -> str:
        if not re.fullmatch(r"AC[0-9a-fA-F]{32}", value):
            raise ValueError("expected an Account SID: AC followed by 32 hex digits")
        return value

    @field_validator("messaging_service_sid")
    @classmethod
    def _mg(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"MG[0-9a-fA-F]{32}", value):
            raise ValueError("expected a Messaging Service SID: MG followed by 32 hex digits")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        if self.auth_token_file is not None and self.auth_token_credential is not None:
            raise ValueError("give either auth_token_file or auth_token_credential, not both")
        if self.auth_token_file is None and self.auth_token_credential is None:
            raise ValueError("give auth_token_file or auth_token_credential")
        ref = SecretRef(
            password_file=self.auth_token_file, password_credential=self.auth_token_credential
        )
        object.__setattr__(self, "auth_token", ref.password)
        return self


PEOPLE_FIELDS = ("name", "email", "personal_emails", "personal_phones", "work_phone", "supervisor")
ROLE_FIELDS = ("role", "name", "address", "number", "holder")
CLIENT_FIELDS = (
    "client_id",
    "client",
    "domains",
    "segment",
    "role",
    "contact",
    "email",
    "phone",
    "mobile",
    "language",
)


def _mapping_validator(known: tuple[str, ...]) -> Any:
    def check(value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key not in known:
                raise ValueError(f"unknown field {key!r}; fields are: {', '.join(known)}")
        return value

    return check


class PeopleImport(_Section):
    columns: dict[str, str] = Field(default_factory=dict)
    _check = field_validator("columns")(_mapping_validator(PEOPLE_FIELDS))


class RolesImport(_Section):
    columns: dict[str, str] = Field(default_factory=dict)
    _check = field_validator("columns")(_mapping_validator(ROLE_FIELDS))


class ClientsImport(_Section):
    columns: dict[str, str] = Field(default_factory=dict)
    segment_values: dict[str, str] = Field(default_factory=dict)
    default_language: str = Field(default="en", pattern=r"^[a-z]{2}$")
    _check = field_validator("columns")(_mapping_validator(CLIENT_FIELDS))

    @field_validator("segment_values")
    @classmethod
    def _segments(cls, value: dict[str, str]) -> dict[str, str]:
        from rolekeeper.domain import Segment

        allowed = {s.value for s in Segment}
        for label, segment in value.items():
            if segment.strip().lower() not in allowed:
                raise ValueError(
                    f"{label!r} maps to {segment!r}; segments are: {', '.join(sorted(allowed))}"
                )
        return {k.strip().casefold(): v.strip().lower() for k, v in value.items()}


class ImportSettings(_Section):
    people: PeopleImport = PeopleImport()
    roles: RolesImport = RolesImport()
    clients: ClientsImport = ClientsImport()


class DetectSettings(_Section):
    # Free-mail domains beyond the built-in list (rolekeeper.detect.freemail).
    freemail_domains: tuple[str, ...] = ()
    # Named addresses of people the rules skip (e.g. the director who may write from anywhere).
    exempt_people: tuple[str, ...] = ()
    # Rule 6: quiet when nothing came for more than this many times the usual interval.
    quiet_factor: float = Field(default=3.0, gt=1)
    # Correspondents never learned as client candidates (vendors, newsletters).
    ignore_domains: tuple[str, ...] = ()

    _domains = field_validator("freemail_domains", "ignore_domains")(
        lambda value: _domain_list(value)
    )

    @field_validator("exempt_people")
    @classmethod
    def _people(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from rolekeeper.domain import normalise_email

        try:
            return tuple(normalise_email(a) for a in value)
        except InvalidValue as exc:
            raise ValueError(str(exc)) from None


class WatchSettings(_Section):
    # Folders read in every watched mailbox (role and named mailboxes of the directory).
    folders: tuple[str, ...] = ("INBOX", "Sent")
    # A mailbox receiving a copy of all mail (journaling, always_bcc); read like the others.
    journal_mailbox: str | None = None
    # Mailboxes to read besides the directory's, e.g. shared team mailboxes.
    extra_mailboxes: tuple[str, ...] = ()
    # The first scan of a folder (and a resync after UIDVALIDITY changed) reads this far back.
    backfill_days: int = Field(default=30, ge=0, le=3650)
    # How often every folder is checked for new mail, in seconds.
    poll_seconds: float = Field(default=60.0, ge=1)
    # Folders watched with IMAP IDLE (new mail scanned within a second): the journal's
    # INBOX first, then role mailboxes' INBOX; one connection each. 0 turns IDLE off.
    idle_folders: int = Field(default=4, ge=0, le=100)
    # Header fetches per round trip, and how much of a body is read when a rule needs it.
    batch_size: int = Field(default=500, ge=1, le=2000)
    body_limit_bytes: int = Field(default=65536, ge=1024)
    # Worker processes that parse fetched mail while the scanner fetches and stores (a long
    # read: a backfill, a resync, the first pass after downtime). 0 parses in the scanner.
    parse_workers: int = Field(default=2, ge=0, le=16)


SEGMENTS = ("vip", "key", "regular", "minor")


class RuleActions(_Section):
    """Per rule: which client segments trigger each action."""

    # Alert the person's supervisor at once; other segments go to the daily digest.
    alert_at_once: tuple[Literal["vip", "key", "regular", "minor"], ...] = ("vip", "key")
    # Redirect the client's further mail from the named mailbox to the role mailbox.
    redirect: tuple[Literal["vip", "key", "regular", "minor"], ...] = ()
    # Reply politely from the role mailbox, giving the role's address and number.
    nudge: tuple[Literal["vip", "key", "regular", "minor"], ...] = ()


def _default_rule_actions() -> dict[str, RuleActions]:
    everyone = SEGMENTS
    return {
        "client-to-named": RuleActions(redirect=everyone, nudge=everyone),
        "named-to-client": RuleActions(),
        "personal-in-client-thread": RuleActions(nudge=everyone),
        "client-thread-forwarded-out": RuleActions(alert_at_once=everyone),
        "private-contact-in-text": RuleActions(),
        "key-client-quiet": RuleActions(),
    }


class ActionsSettings(_Section):
    # Per rule (see the README's rule list); rules left out keep their defaults.
    rules: dict[str, RuleActions] = Field(default_factory=_default_rule_actions)
    # Redirects keep a copy in the named mailbox (Sieve :copy).
    redirect_keep_copy: bool = True
    # Local time (organisation.timezone) of the daily digest to supervisors, HH:MM.
    digest_time: str = Field(default="08:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    # Language of alerts and digests to supervisors (templates exist for en and ru).
    language: str = Field(default="en", pattern=r"^[a-z]{2}$")
    # Sender of alerts and digests; empty: rolekeeper@ the first organisation domain.
    from_address: str = ""
    # A client gets at most one nudge in this many days.
    nudge_every_days: int = Field(default=14, ge=1)

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, RuleActions]) -> dict[str, RuleActions]:
        defaults = _default_rule_actions()
        for name in value:
            if name not in defaults:
                raise ValueError(f"unknown rule {name!r}; rules are: {', '.join(defaults)}")
        return defaults | value


class HandoverSettings(_Section):
    """Departures and rotations: notices, the named mailbox's auto-reply, retries."""

    # Clients who wrote to the leaver's named address in this many days are notified too.
    recent_named_days: int = Field(default=90, ge=0, le=3650)
    # The leaver's named mailbox answers clients (once each) for this many days.
    autoreply_days: int = Field(default=90, ge=1, le=3650)
    # Notices per minute over SMTP; 0 sends as fast as the server takes them.
    notices_per_minute: int = Field(default=0, ge=0)
    # With watch.journal_mailbox: how long a notice the journal does not show may still be
    # on its way before it is sent again (after a crash between "sending" and "accepted").
    journal_grace_minutes: float = Field(default=10.0, ge=0)
    # SMS notices are followed after Twilio accepts them, until Twilio reports them
    # delivered, undelivered or failed. One Twilio reports "sent" (handed to the carrier)
    # counts as delivered after this many minutes: not every carrier returns a delivery
    # receipt, and without one Twilio's status stays "sent".
    sms_sent_grace_minutes: float = Field(default=10.0, ge=0)
    # One still without a final status after this many minutes is "unknown" (the report
    # names it and the handover goes on).
    sms_delivery_timeout_minutes: float = Field(default=60.0, ge=0)
    # A step that failed this many times is parked (visible, `transitions retry ID`).
    step_attempts: int = Field(default=5, ge=1, le=100)
    # Give the successor read access to the leaver's named mailbox (it holds private and
    # HR mail: only where the firm's policy allows it). Audited.
    delegate_named_mailbox: bool = False
    # Incidents involving the leaver in this many days put a client on the report's
    # "at risk" list.
    at_risk_days: int = Field(default=90, ge=1, le=3650)
    # A directory of the admin's own templates (transition.en.txt, …); packaged ones else.
    templates_dir: Path | None = None
    # Where HR drops departure files (CSV or JSON); each is taken whole or not at all.
    drop_folder: Path | None = None
    # A rotation policy: every N months the holders of each group move one role along.
    rotation_every_months: int = Field(default=0, ge=0, le=120)
    rotation_groups: tuple[tuple[str, ...], ...] = ()

    @model_validator(mode="after")
    def _sms_times(self) -> Self:
        if self.sms_delivery_timeout_minutes < self.sms_sent_grace_minutes:
            raise ValueError("sms_delivery_timeout_minutes must be at least sms_sent_grace_minutes")
        return self

    @field_validator("rotation_groups")
    @classmethod
    def _groups(cls, value: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        seen: set[str] = set()
        for group in value:
            if len(group) < 2:
                raise ValueError("each group needs at least two roles")
            if seen & set(group) or len(set(group)) != len(group):
                raise ValueError("a role may be in one group only, once")
            seen |= set(group)
        return value


# RFC 4314 rights Dovecot stores. The obsolete RFC 2086 rights "c" and "d" are not accepted:
# Dovecot derives them (c from k, d from x/t/e) and reports them back on its own.
ACL_RIGHTS = "lrwstipekxa"
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")


def _rights(value: str) -> str:
    bad = sorted({ch for ch in value if ch not in ACL_RIGHTS})
    if bad:
        raise ValueError(
            f"unknown or obsolete IMAP rights {''.join(bad)!r}; use letters of {ACL_RIGHTS!r} "
            "(RFC 4314; Dovecot derives the obsolete c and d itself)"
        )
    if len(set(value)) != len(value):
        raise ValueError(f"{value!r} repeats a right")
    return value


def _template(value: tuple[str, ...] | None, fields: frozenset[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not value or not value[0]:
        raise ValueError('expected a program and its arguments, e.g. ["/usr/local/sbin/x"]')
    for arg in value:
        for name in _TEMPLATE_FIELD.findall(arg):
            if name not in fields:
                raise ValueError(
                    f"unknown placeholder {{{name}}} in {arg!r}; known: "
                    + ", ".join(f"{{{f}}}" for f in sorted(fields))
                )
    return value


class ProvisioningSettings(_Section):
    """Role mailboxes, who may read them (IMAP ACL) and who may send as them."""

    # "adopt": use existing mailboxes only; "dovecot-passwd": append to a passwd-file userdb;
    # "command": run mailbox_command.
    mailbox: Literal["adopt", "dovecot-passwd", "command"] = "adopt"
    userdb_path: Path | None = None
    userdb_line: str = "{address}:{password}::::::"
    mailbox_command: tuple[str, ...] | None = None
    # "map": a Postfix smtpd_sender_login_maps file; "command": grant/revoke programs.
    send_as: Literal["map", "command", "none"] = "none"
    sender_map_path: Path | None = None
    postmap_command: tuple[str, ...] = ("/usr/sbin/postmap", "{path}")
    send_as_grant_command: tuple[str, ...] | None = None
    send_as_revoke_command: tuple[str, ...] | None = None
    send_as_list_command: tuple[str, ...] | None = None
    command_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    holders_access: str = Field(default="lrwstipekx", min_length=1)
    supervisors_access: str = "lr"
    supervisors: tuple[str, ...] = ()
    holders_supervisor: bool = False
    keep_identifiers: tuple[str, ...] = ()
    reconcile_minutes: int = Field(default=15, ge=0, le=10080)

    _access = field_validator("holders_access", "supervisors_access")(lambda v: _rights(v))

    @field_validator("supervisors", "keep_identifiers")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not item.strip() or any(ch.isspace() for ch in item):
                raise ValueError(f"{item!r} is not a login name")
        return tuple(item.strip().lower() for item in value)

    @field_validator("userdb_line")
    @classmethod
    def _line(cls, value: str) -> str:
        if not value.startswith("{address}:{password}"):
            raise ValueError('must start with "{address}:{password}" (passwd-file user:password)')
        _template((value,), frozenset({"address", "password"}))
        return value

    @field_validator("mailbox_command")
    @classmethod
    def _mailbox_command(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _template(value, frozenset({"address"}))

    @field_validator("send_as_grant_command", "send_as_revoke_command")
    @classmethod
    def _grant(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _template(value, frozenset({"address", "login"}))

    @field_validator("send_as_list_command")
    @classmethod
    def _list(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _template(value, frozenset())

    @field_validator("postmap_command")
    @classmethod
    def _postmap(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value:
            _template(value, frozenset({"path"}))
        return value

    @model_validator(mode="after")
    def _complete(self) -> Self:
        needs = {
            ("mailbox", "dovecot-passwd"): ("userdb_path",),
            ("mailbox", "command"): ("mailbox_command",),
            ("send_as", "map"): ("sender_map_path",),
            ("send_as", "command"): ("send_as_grant_command", "send_as_revoke_command"),
        }
        for (key, mode), required in needs.items():
            if getattr(self, key) != mode:
                continue
            for name in required:
                if getattr(self, name) is None:
                    raise ValueError(f'{key} = "{mode}" needs {name}')
        return self


class Settings(_Section):
    organisation: OrganisationSettings = OrganisationSettings()
    database: DatabaseSettings = DatabaseSettings()
    logging: LoggingSettings = LoggingSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    retention: RetentionSettings = RetentionSettings()
    import_: ImportSettings = Field(default=ImportSettings(), alias="import")
    detect: DetectSettings = DetectSettings()
    watch: WatchSettings = WatchSettings()
    actions: ActionsSettings = ActionsSettings()
    handover: HandoverSettings = HandoverSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    imap: ImapSettings | None = None
    smtp: SmtpSettings | None = None
    exchange: ExchangeSettings | None = None
    twilio: TwilioSettings | None = None
    # The files this was read from, in merge order; not a config key.
    source_files: tuple[Path, ...] = Field(default=(), exclude=True)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def missing_key(settings: Settings, key: str, why: str) -> ConfigError:
    """A key a command needs that the (valid) config does not set, as FILE: key: problem."""
    where = f"{settings.source_files[0]}: " if settings.source_files else ""
    return ConfigError([f"{where}{key}: {why}"])


def config_path(explicit: str | Path | None) -> Path:
    """--config beats $ROLEKEEPER_CONFIG beats the packaged default path."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_settings(path: str | Path | None = None) -> Settings:
    main = config_path(path)
    if not main.is_file():
        raise ConfigError([f"{main}: config file not found (set --config or ${CONFIG_ENV})"])
    files = [main, *sorted((main.parent / "conf.d").glob("*.toml"))]
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, ...], Path] = {}
    problems: list[str] = []
    for file in files:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{file}: not valid TOML: {exc}")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{file}: cannot be read: {exc}")
            continue
        problems.extend(_inline_secrets(file, data))
        _merge(merged, data, origin, file, ())
    if problems:
        raise ConfigError(problems)
    return settings_from_mapping(merged, origin, main, tuple(files))


def settings_from_mapping(
    data: Mapping[str, Any],
    origin: Mapping[tuple[str, ...], Path] | None = None,
    main: Path | None = None,
    files: tuple[Path, ...] = (),
) -> Settings:
    try:
        settings = Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin or {}, main)) from None
    return settings.model_copy(update={"source_files": files})


def _merge(
    into: dict[str, Any],
    data: Mapping[str, Any],
    origin: dict[tuple[str, ...], Path],
    file: Path,
    prefix: tuple[str, ...],
) -> None:
    for key, value in data.items():
        path = (*prefix, key)
        origin[path] = file
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, file, path)
        else:
            into[key] = value


def _inline_secrets(file: Path, data: Mapping[str, Any]) -> Iterator[str]:
    for path, _ in _walk(data, ()):
        if path[-1] in _SECRET_KEYS:
            key = ".".join(path)
            yield (
                f"{file}: {key}: secrets are not accepted in the config text; use "
                f"{path[-1]}_file = PATH or {path[-1]}_credential = NAME (systemd LoadCredential)"
                if path[-1] != "password"
                else f"{file}: {key}: secrets are not accepted in the config text; use "
                "password_file = PATH or password_credential = NAME (systemd LoadCredential)"
            )


def _walk(
    data: Mapping[str, Any], prefix: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            yield from _walk(value, path)
        else:
            yield path, value


def _describe(
    exc: ValidationError, origin: Mapping[tuple[str, ...], Path], main: Path | None
) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc) if loc else "(top level)"
        file = _origin_of(loc, origin) or main
        where = f"{file}: " if file else ""
        lines.append(f"{where}{key}: {_message(error, loc)}")
    return lines


def _origin_of(loc: tuple[str, ...], origin: Mapping[tuple[str, ...], Path]) -> Path | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in origin:
            return origin[loc[:end]]
    return None


def _message(error: Mapping[str, Any], loc: tuple[str, ...]) -> str:
    kind = error["type"]
    got = error.get("input")
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key{hint} (known here: {', '.join(known)})"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
        return f"{message[0].lower()}{message[1:]} (got {got!r})"
    return message


def _known_keys(loc: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return []
        sub = _model_of(field.annotation)
        if sub is None:
            return []
        model = sub
    return sorted(
        (f.alias or name)
        for name, f in model.model_fields.items()
        if not f.exclude and name != "source_files"
    )


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
