"""Turn CSV rows into checked records. Pure: no store access; a bad cell raises RowError."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from rolekeeper.directory.csvfile import Row
from rolekeeper.domain import (
    InvalidValue,
    Segment,
    normalise_domain,
    normalise_email,
    normalise_phone,
)


class RowError(ValueError):
    """One row cannot be imported; the message says why."""


# Words CRM exports use for segments; admins add their own in [import.clients] segment_values.
BUILTIN_SEGMENT_VALUES: Mapping[str, Segment] = {
    "vip": Segment.VIP,
    "вип": Segment.VIP,
    "key": Segment.KEY,
    "ключевой": Segment.KEY,
    "regular": Segment.REGULAR,
    "обычный": Segment.REGULAR,
    "рядовой": Segment.REGULAR,
    "minor": Segment.MINOR,
    "мелкий": Segment.MINOR,
    "малый": Segment.MINOR,
}
_YES = frozenset({"1", "yes", "y", "true", "да", "д", "mobile", "моб", "мобильный", "x", "+"})
_NO = frozenset({"", "0", "no", "n", "false", "нет", "н", "-"})
_ROLE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LIST_SPLIT = re.compile(r"[,;\s]+")
_PHONE_SPLIT = re.compile(r"[,;]+")


@dataclass(frozen=True, slots=True)
class PersonRecord:
    line: int
    name: str
    email: str
    personal_emails: tuple[str, ...]
    personal_phones: tuple[str, ...]
    work_phone: str | None
    supervisor: str | None


@dataclass(frozen=True, slots=True)
class RoleRecord:
    line: int
    key: str
    name: str
    address: str
    number: str | None
    holder: str | None


@dataclass(slots=True)
class ContactRecord:
    line: int
    name: str
    email: str | None
    phone: str | None
    is_mobile: bool
    language: str

    @property
    def identity(self) -> str:
        # A contact is known by its address, else by its phone.
        return self.email or f"tel:{self.phone}"


@dataclass(slots=True)
class ClientRecord:
    line: int
    crm_id: str
    name: str
    segment: Segment
    role: str | None
    domains: tuple[str, ...]
    contacts: list[ContactRecord] = field(default_factory=list)


def _required(cells: Mapping[str, str], name: str) -> str:
    value = cells.get(name, "")
    if not value:
        raise RowError(f"{name} is empty")
    return value


def _email(value: str, what: str) -> str:
    try:
        return normalise_email(value)
    except InvalidValue as exc:
        raise RowError(f"{what}: {exc}") from None


def _phone(value: str, region: str, what: str) -> str:
    try:
        return normalise_phone(value, region)
    except InvalidValue as exc:
        raise RowError(f"{what}: {exc}") from None


def person_record(row: Row, region: str) -> PersonRecord:
    cells = row.cells
    supervisor = cells.get("supervisor", "")
    work_phone = cells.get("work_phone", "")
    email = _email(_required(cells, "email"), "email")
    record = PersonRecord(
        line=row.line,
        name=_required(cells, "name"),
        email=email,
        personal_emails=tuple(
            _email(v, "personal_emails") for v in _split(cells.get("personal_emails", ""))
        ),
        personal_phones=tuple(
            _phone(v, region, "personal_phones")
            for v in _split(cells.get("personal_phones", ""), _PHONE_SPLIT)
        ),
        work_phone=_phone(work_phone, region, "work_phone") if work_phone else None,
        supervisor=_email(supervisor, "supervisor") if supervisor else None,
    )
    if record.supervisor == email:
        raise RowError("a person cannot be their own supervisor")
    if email in record.personal_emails:
        raise RowError(f"{email} is the named address; it cannot also be a personal one")
    return record


def role_record(row: Row, region: str) -> RoleRecord:
    cells = row.cells
    key = _required(cells, "role")
    if not _ROLE_KEY.match(key):
        raise RowError(f"role {key!r}: use letters, digits, '.', '_' or '-'")
    number = cells.get("number", "")
    holder = cells.get("holder", "")
    return RoleRecord(
        line=row.line,
        key=key,
        name=cells.get("name", "") or key,
        address=_email(_required(cells, "address"), "address"),
        number=_phone(number, region, "number") if number else None,
        holder=_email(holder, "holder") if holder else None,
    )


CLIENT_HEAD_FIELDS = ("client_id", "client", "domains", "segment", "role")


@dataclass(frozen=True, slots=True)
class ClientHead:
    """The client columns, repeated on each of a client's rows."""

    crm_id: str
    name: str
    segment: Segment
    role: str | None
    domains: tuple[str, ...]


def client_head(cells: Mapping[str, str], segment_values: Mapping[str, str]) -> ClientHead:
    label = _required(cells, "segment")
    folded = label.casefold()
    segment = segment_values.get(folded) or BUILTIN_SEGMENT_VALUES.get(folded)
    if segment is None:
        raise RowError(
            f"segment {label!r} is not one of vip, key, regular, minor "
            "(map your CRM's words in [import.clients] segment_values)"
        )
    try:
        domains = tuple(normalise_domain(d) for d in _split(cells.get("domains", "")))
    except InvalidValue as exc:
        raise RowError(f"domains: {exc}") from None
    return ClientHead(
        crm_id=_required(cells, "client_id"),
        name=_required(cells, "client"),
        segment=Segment(segment),
        role=cells.get("role", "") or None,
        domains=domains,
    )


# One row of a client file: its line, the client columns (shared between rows with the
# same values, so grouping can compare by identity) and its contact, if it has one.
ClientRow = tuple[int, ClientHead, "ContactRecord | None"]


class ClientRowParser:
    """Parses client rows; the client columns are checked once per distinct value."""

    def __init__(self, region: str, segment_values: Mapping[str, str], language: str) -> None:
        self.region = region
        self.segment_values = segment_values
        self.language = language
        self._heads: dict[tuple[str, ...], ClientHead | RowError] = {}

    def __call__(self, row: Row) -> ClientRow:
        cells = row.cells
        key = tuple([cells.get(f, "") for f in CLIENT_HEAD_FIELDS])
        head = self._heads.get(key)
        if head is None:
            try:
                head = client_head(row.cells, self.segment_values)
            except RowError as exc:
                head = exc
            self._heads[key] = head
        if isinstance(head, RowError):
            raise RowError(str(head))
        return (row.line, head, _contact(row, self.language))


def _contact(row: Row, default_language: str) -> ContactRecord | None:
    """The contact of a client row; its phone stays as written until the importer has
    normalised all numbers of the file at once (see directory.phones)."""
    cells = row.cells
    name, email, phone = cells.get("contact", ""), cells.get("email", ""), cells.get("phone", "")
    if not (name or email or phone):
        return None
    if not (email or phone):
        raise RowError(f"contact {name!r} has neither email nor phone")
    mobile = cells.get("mobile", "").casefold()
    if mobile not in _YES and mobile not in _NO:
        raise RowError(f"mobile {cells['mobile']!r}: expected yes/no")
    language = (cells.get("language", "") or default_language).lower()
    if not re.fullmatch(r"[a-z]{2}", language):
        raise RowError(f"language {language!r}: expected a two-letter code such as en or ru")
    normalised_email = _email(email, "email") if email else None
    return ContactRecord(
        line=row.line,
        name=name or (normalised_email or phone),
        email=normalised_email,
        phone=phone or None,
        is_mobile=mobile in _YES,
        language=language,
    )


def _split(value: str, pattern: re.Pattern[str] = _LIST_SPLIT) -> list[str]:
    return [part.strip() for part in pattern.split(value) if part.strip()]
