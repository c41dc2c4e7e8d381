"""Addresses out of header values: a fast path for the usual shapes, the stdlib for the rest.

The stdlib's structured headers cost ~1.3 ms a message (../shared/FACTS.md); most header
values are `addr`, `Name <addr>` or lists of those, which a split and a slice handle. Values
with quotes, comments, groups or backslashes go to `email.utils.getaddresses`.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

_HARD = re.compile(r'["()\\:]')
# A quoted display name right before `<`: `"Ivanov, Ivan" <ivan@x>`, the commonest hard case.
_QUOTED_NAME = re.compile(r'"[^"\\]*"\s*(?=<)')
_ADDRESS = re.compile(r"^[^\s@<>,;]+@[^\s@<>,;]+\.[^\s@<>,;]+$")


def addresses(value: str | None) -> tuple[str, ...]:
    """Lower-cased addr-specs of a To/Cc/From/Reply-To value, in order, without repeats."""
    if not value:
        return ()
    if '"' in value and "\\" not in value:
        value = _QUOTED_NAME.sub("", value)
    if _HARD.search(value):
        found = [addr for _, addr in getaddresses([value.replace("\n", " ").replace("\r", " ")])]
    else:
        found = []
        for piece in value.split(","):
            start = piece.rfind("<")
            if start >= 0:
                end = piece.find(">", start)
                found.append(piece[start + 1 : end if end > 0 else None])
            else:
                found.append(piece)
    seen: dict[str, None] = {}
    for addr in found:
        clean = addr.strip().strip("<>").lower()
        if _ADDRESS.match(clean):
            seen.setdefault(clean, None)
    return tuple(seen)


def first_address(value: str | None) -> str | None:
    found = addresses(value)
    return found[0] if found else None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]
