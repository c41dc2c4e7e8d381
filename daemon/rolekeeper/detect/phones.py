"""Phone numbers written in text, as E.164, skipping tax and bank numbers that look alike."""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers

# Russian company registration and bank numbers look like phone numbers to the matcher.
_NOT_A_PHONE = re.compile(
    r"(?:инн|кпп|огрн|огрнип|окпо|бик|р/с|к/с|сч[её]т|inn|kpp|ogrn|bic|iban|swift|account)"
    r"[\s:№#.-]*$",
    re.IGNORECASE,
)


def phones_in(text: str, region: str) -> Iterator[tuple[str, int]]:
    """(E.164 number, position) for each valid number in `text`."""
    for match in phonenumbers.PhoneNumberMatcher(
        text, region, leniency=phonenumbers.Leniency.VALID
    ):
        if _NOT_A_PHONE.search(text[max(0, match.start - 12) : match.start]):
            continue
        yield (
            phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164),
            match.start,
        )
