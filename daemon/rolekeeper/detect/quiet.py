"""Rule 6: a VIP or key client goes quiet. Not a message rule: a periodic pure evaluation of
each client's arrival history against the clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

NAME = "key-client-quiet"
WINDOW = timedelta(days=90)
MIN_DAYS = 5


@dataclass(frozen=True, slots=True)
class QuietVerdict:
    client_id: int
    last_arrival: datetime
    usual_gap_days: float
    silent_days: float


def usual_gap(days: list[date]) -> float | None:
    """Mean gap in days between the distinct days with mail; None below MIN_DAYS days."""
    if len(days) < MIN_DAYS:
        return None
    return (days[-1] - days[0]).days / (len(days) - 1)


def quiet_clients(
    arrivals: Mapping[int, Iterable[datetime]], now: datetime, factor: float
) -> list[QuietVerdict]:
    """Clients whose silence is longer than `factor` times their usual interval as of `now`.

    `arrivals` holds, per client, the times of its own mail to its role channels
    (auto-replies, bounces and calendar answers already left out)."""
    verdicts = []
    for client_id, times in arrivals.items():
        recent = sorted(t for t in times if now - WINDOW <= t <= now)
        if not recent:
            continue
        gap = usual_gap(sorted({t.date() for t in recent}))
        if gap is None or gap <= 0:
            continue
        silent = (now - recent[-1]).total_seconds() / 86400
        if silent > factor * gap:
            verdicts.append(QuietVerdict(client_id, recent[-1], gap, silent))
    return verdicts
