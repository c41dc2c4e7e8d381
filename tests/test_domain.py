"""Address, domain and phone normal forms."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rolekeeper.domain import InvalidValue, normalise_domain, normalise_email, normalise_phone


def reference(value: str, region: str) -> str | None:
    """phonenumbers on the text as written, without our shortcut."""
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@settings(max_examples=2000, deadline=None)
@given(
    st.from_regex(r"\+?[0-9 ()./-]{3,22}", fullmatch=True),
    st.sampled_from(["RU", "US", "GB", "DE", "IT", "UA"]),
)
def test_phone_shortcut_agrees_with_phonenumbers(value: str, region: str) -> None:
    try:
        ours: str | None = normalise_phone.__wrapped__(value, region)
    except InvalidValue:
        ours = None
    assert ours == reference(value.strip(), region)


@pytest.mark.parametrize(
    ("written", "region", "e164"),
    [
        ("8 (903) 111-22-33", "RU", "+79031112233"),
        ("+7 495 120-45-01", "RU", "+74951204501"),
        ("+44 (0)20 7946 0000", "GB", "+442079460000"),
        ("06 6982 0000", "IT", "+390669820000"),
        ("+7 495 120-45-01 доб. 12", "RU", "+74951204501"),
    ],
)
def test_phone_forms(written: str, region: str, e164: str) -> None:
    assert normalise_phone(written, region) == e164


def test_email_and_domain_forms() -> None:
    assert normalise_email(" Ivan.Petrov@ACME.Example ") == "ivan.petrov@acme.example"
    assert normalise_email("info@пример.рф") == "info@xn--e1afmkfd.xn--p1ai"
    assert normalise_domain("@Пример.РФ") == "xn--e1afmkfd.xn--p1ai"
    for bad in ("a@b", "no-at.example", "a b@c.example", "a@-x.example"):
        with pytest.raises(InvalidValue):
            normalise_email(bad)
