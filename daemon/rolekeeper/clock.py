"""Time in one place, so tests and replays can set it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def local_date(value: datetime, timezone: str) -> str:
    """The calendar date people at the firm see, e.g. in a notice's "from DATE"."""
    from zoneinfo import ZoneInfo

    return as_utc(value).astimezone(ZoneInfo(timezone)).date().isoformat()
