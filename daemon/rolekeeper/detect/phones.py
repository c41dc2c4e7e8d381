"""Phone numbers written in text, as E.164, skipping tax and bank numbers that look alike."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

import phonenumbers

# Russian company registration and bank numbers look like phone numbers to the matcher.
_NOT_A_PHONE = re.compile(
    r"(?:инн|кпп|огрн|огрнип|окпо|бик|р/с|к/с|сч[её]т|inn|kpp|ogrn|bic|iban|swift|account)"
    r"[\s:№#.-]*$",
    re.IGNORECASE,
)


# Seven digits with anything short between them: a line without this holds no number.
_SEVEN_DIGITS = re.compile(r"\d(?:\D{0,3}\d){6}")


def phones_in(text: str, region: str) -> Iterator[tuple[str, int]]:
    """(E.164 number, position) for each valid number in `text`.

    phonenumbers' matcher is pure Python and slow, so it reads only the lines that could
    hold a number, and a line it has read before (signatures repeat) comes from a cache.
    """
    start = 0
    for line in text.splitlines(keepends=True):
        if _SEVEN_DIGITS.search(line):
            for number, offset in _numbers_in_line(line, region):
                yield number, start + offset
        start += len(line)


@lru_cache(maxsize=8192)
def _numbers_in_line(line: str, region: str) -> tuple[tuple[str, int], ...]:
    found = []
    for match in phonenumbers.PhoneNumberMatcher(
        line, region, leniency=phonenumbers.Leniency.VALID
    ):
        if _NOT_A_PHONE.search(line[max(0, match.start - 12) : match.start]):
            continue
        number = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        found.append((number, match.start))
    return tuple(found)
