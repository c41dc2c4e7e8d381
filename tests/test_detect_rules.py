"""Rule edge cases on a small hand-made directory, the quiet-client evaluator, and the corpora."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from rolekeeper.detect.addresses import addresses
from rolekeeper.detect.directory import ClientRef, Directory, Employee
from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.freemail import BUILTIN_FREEMAIL
from rolekeeper.detect.message import UnreadableMessage, facts_from_bytes
from rolekeeper.detect.quiet import quiet_clients
from rolekeeper.detect.rules import evaluate

IVAN = Employee(1, "Ivan", "ivan@acme.example")
BOSS = Employee(2, "Boss", "boss@acme.example", exempt=True)
CLIENT = ClientRef(10, "C1", "Romashka", "vip")
OTHER = ClientRef(11, "C2", "Lyutik", "key")
DIRECTORY = Directory(
    firm_domains=frozenset({"acme.example"}),
    freemail=BUILTIN_FREEMAIL,
    employees={IVAN.address: IVAN, BOSS.address: BOSS},
    personal={"ivan@mail.ru": IVAN},
    roles={"manager1@acme.example": IVAN},
    contacts={"olga@romashka.example": CLIENT, "romashka.ceo@gmail.com": CLIENT},
    client_domains={"romashka.example": CLIENT, "lyutik.example": OTHER},
    corporate_numbers=frozenset({"+74951204501"}),
    client_numbers={CLIENT.id: frozenset({"+79215446318"})},
)


def facts(**kw: object) -> MessageFacts:
    return MessageFacts(message_key="<k@x>", message_id="<k@x>", **kw)  # type: ignore[arg-type]


def rules_hit(f: MessageFacts) -> set[str]:
    return {finding.rule for finding in evaluate(f, DIRECTORY)}


def test_freemail_listed_as_contact_is_a_client_not_personal() -> None:
    f = facts(sender="romashka.ceo@gmail.com", to=("ivan@acme.example",))
    assert rules_hit(f) == {"client-to-named"}
    assert not DIRECTORY.is_personal("romashka.ceo@gmail.com")
    assert DIRECTORY.is_personal("stranger@gmail.com")


def test_exempt_people_are_skipped() -> None:
    assert rules_hit(facts(sender="olga@romashka.example", to=("boss@acme.example",))) == set()
    assert rules_hit(facts(sender="boss@acme.example", to=("olga@romashka.example",))) == set()


def test_firm_and_freemail_domains_never_make_a_client() -> None:
    assert DIRECTORY.client_of("someone@acme.example") is None
    assert DIRECTORY.client_of("x@gmail.com") is None
    assert DIRECTORY.client_of("anyone@lyutik.example") == OTHER


def test_forward_to_personal_is_rule_4_not_rule_3() -> None:
    f = facts(
        sender="ivan@acme.example",
        to=("ivan@mail.ru",),
        forward=True,
        carried_senders=("olga@romashka.example",),
    )
    assert rules_hit(f) == {"client-thread-forwarded-out"}


FORWARDED = "client-thread-forwarded-out"


def test_auto_forward_seen_only_in_the_journal_envelope_is_rule_4() -> None:
    # A client writes to Ivan; his mailbox passes it on to his mail.ru address unseen.
    passed_on = facts(
        sender="olga@romashka.example",
        to=("ivan@acme.example",),
        envelope_to=("ivan@mail.ru",),
        redirected_by="ivan@acme.example",
    )
    # Rule 1 fires as well: the client wrote to the named address.
    assert rules_hit(passed_on) == {"client-to-named", "client-thread-forwarded-out"}
    [finding] = [f for f in evaluate(passed_on, DIRECTORY) if f.rule == FORWARDED]
    assert (finding.employee, finding.client) == (IVAN, CLIENT)
    assert finding.evidence == (
        "auto-forwarded mail from olga@romashka.example → ivan@mail.ru (envelope)"
    )
    # The journal copy of the first delivery names only the firm: no forward.
    assert rules_hit(passed_on._replace(envelope_to=("ivan@acme.example",))) == {"client-to-named"}
    # Passed on to the role mailbox (rolekeeper's own redirect): no forward.
    assert rules_hit(passed_on._replace(envelope_to=("manager1@acme.example",))) == {
        "client-to-named"
    }
    # Unseen recipients of an alias, with no redirect header: the firm's addressee answers.
    [alias] = [
        f
        for f in evaluate(passed_on._replace(redirected_by=None), DIRECTORY)
        if f.rule == FORWARDED
    ]
    assert alias.employee == IVAN


def test_forward_to_another_client_is_not_a_leak_but_named_address_is() -> None:
    f = facts(
        sender="ivan@acme.example",
        to=("boss@lyutik.example",),
        forward=True,
        carried_senders=("olga@romashka.example",),
    )
    assert rules_hit(f) == {"named-to-client"}


def test_resend_without_client_origin_is_ignored() -> None:
    f = facts(
        sender="news@vendor.example", resent_from="ivan@acme.example", resent_to=("ivan@mail.ru",)
    )
    assert rules_hit(f) == set()


def test_private_number_rules() -> None:
    base = {"sender": "manager1@acme.example", "to": ("olga@romashka.example",)}
    corporate = facts(
        **base, author_text="Call +7 495 120-45-01 or the client line +7 921 544-63-18"
    )
    assert rules_hit(corporate) == set()
    leak = facts(**base, author_text="Mobile: +7 903 111 22 33")
    [finding] = evaluate(leak, DIRECTORY)
    assert (finding.rule, finding.employee, finding.evidence) == (
        "private-contact-in-text",
        IVAN,
        "Mobile: +7 903 111 22 33",
    )
    tax_ids = facts(**base, author_text="ИНН 7701234567\nINN: 7707083893, КПП 770701001")
    assert rules_hit(tax_ids) == set()
    not_read = facts(**base)  # body not fetched: rule 5 cannot judge, says nothing
    assert rules_hit(not_read) == set()


def test_evidence_is_one_bounded_line() -> None:
    text = "x" * 1000 + " +7 903 111 22 33"
    f = facts(sender="manager1@acme.example", to=("olga@romashka.example",), author_text=text)
    [finding] = evaluate(f, DIRECTORY)
    assert len(finding.evidence) == 300


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("a@x.example", ("a@x.example",)),
        ("Ivan <Ivan@X.example>, b@y.example", ("ivan@x.example", "b@y.example")),
        (
            '"Petrov, Ivan" <i@x.example>, "x@evil.example" <j@x.example>',
            ("i@x.example", "j@x.example"),
        ),
        ("=?utf-8?B?0JjQstCw0L0=?= <i@x.example>", ("i@x.example",)),
        ("undisclosed-recipients:;", ()),
        ("i@x.example (Ivan), i@x.example", ("i@x.example",)),
        ("", ()),
    ],
)
def test_address_fast_path_and_fallback(value: str, found: tuple[str, ...]) -> None:
    assert addresses(value) == found


def days_ago(now: datetime, *days: int) -> list[datetime]:
    return [now - timedelta(days=d) for d in days]


def test_quiet_client_evaluator() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    history = {
        1: days_ago(now, 40, 33, 26, 19, 12),  # weekly, silent 12 days: not yet (3 × 7 = 21)
        2: days_ago(now, 80, 73, 66, 59, 52),  # weekly, silent 52 days: quiet
        3: days_ago(now, 60, 50, 40, 30),  # only 4 days with mail: no verdict
        4: days_ago(now, 60, 60, 60, 60, 60, 10),  # one busy day counts once
    }
    verdicts = {v.client_id: v for v in quiet_clients(history, now, factor=3)}
    assert set(verdicts) == {2}
    assert verdicts[2].usual_gap_days == 7
    assert verdicts[2].last_arrival == now - timedelta(days=52)


CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def test_every_corpus_message_is_parsed_or_recorded_unreadable() -> None:
    if not CORPORA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CORPORA} is missing; CI clones the project with ../shared beside it")
        pytest.skip("../shared/corpora is not beside this checkout")
    files = sorted(CORPORA.rglob("*.eml"))
    assert len(files) > 10_000
    parsed = unreadable = 0
    hits: Counter[str] = Counter()
    for path in files:
        try:
            found = facts_from_bytes(path.read_bytes(), with_body=True)
        except UnreadableMessage:
            unreadable += 1
            continue
        assert found.message_key
        parsed += 1
        hits.update(finding.rule for finding in evaluate(found, ENRON))
    assert parsed + unreadable == len(files)
    assert parsed > 0.99 * len(files)
    # The rules judge real mail too: Enron as the firm, its trading partners as clients
    # (no named addresses are known, so rules 1 and 2 stay silent).
    assert {"personal-in-client-thread", "private-contact-in-text"} <= set(hits), hits


# The Enron corpus seen as a firm: enron.com people, a few counterparties as clients.
ENRON = Directory(
    firm_domains=frozenset({"enron.com"}),
    freemail=BUILTIN_FREEMAIL,
    employees={},
    personal={},
    roles={},
    contacts={},
    client_domains={
        domain: ClientRef(n, f"E{n}", domain, "key")
        for n, domain in enumerate(
            ("nyiso.com", "caiso.com", "williams.com", "duke-energy.com", "reliantenergy.com"), 1
        )
    },
)


def test_fast_body_path_agrees_with_the_full_parser_on_the_corpora() -> None:
    """Where the fast path takes a message, it must read what the stdlib's parser reads."""
    from rolekeeper.detect import authortext, message

    if not CORPORA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CORPORA} is missing; CI clones the project with ../shared beside it")
        pytest.skip("../shared/corpora is not beside this checkout")
    taken = differ = 0
    for path in sorted(CORPORA.rglob("*.eml")):
        raw = path.read_bytes()
        text = message.fast_body_text(raw)
        if text is None:
            continue
        taken += 1
        # The reply-cut shortcut finds the line the full pattern's search finds.
        full = authortext._CUT.search(text)
        assert authortext._first_cut_line(text) == (full.start() if full else len(text))
        own, rest = message.split_author_text(text[: message.MAX_TEXT])
        slow_own, slow_carried, _ = message._read_body_slowly(raw)
        if (own, message.carried_senders(rest)) != (slow_own, slow_carried):
            differ += 1
    assert taken > 10_000
    # The few that differ are MIME torture tests (a line that looks like a boundary but is
    # not; parts the stdlib reads as empty), where the fast path follows RFC 2046.
    assert differ <= 7


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"From: a@x.example\r\n\r\nplain body\r\n", "plain body\r\n"),
        (
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"0J/RgNC40LLQtdGC\r\n",
            "Привет",
        ),
        (
            b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\npreamble\r\n--b1\r\n'
            b"Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: quoted-printable"
            b"\r\n\r\n=F0=D2=C9=D7=C5=D4\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b1--\r\n",
            "Привет",
        ),
        (
            b"Content-Type: multipart/mixed; boundary=b2\r\n\r\n--b2\r\nContent-Type: message/rfc822"
            b"\r\n\r\nFrom: c@d.example\r\n\r\nhi\r\n--b2--\r\n",
            None,
        ),
        (b"Content-Type: text/plain\r\n\r\nEuro \x80\r\n", None),
    ],
)
def test_fast_body_shapes(raw: bytes, text: str | None) -> None:
    from rolekeeper.detect.message import fast_body_text

    assert fast_body_text(raw) == text


def _as_read(value: datetime | None) -> tuple[datetime, object] | None:
    # Aware datetimes compare as instants: compare the wall time and the offset instead.
    return None if value is None else (value.replace(tzinfo=None), value.utcoffset())


def _stdlib_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


@pytest.mark.parametrize(
    "value",
    [
        "Tue, 24 Nov 2026 09:15:02 +0300",
        "24 Nov 2026 09:15:02 -0130",
        "Mon, 14 May 2001 16:39:00 -0700 (PDT)",
        "Tue, 24 nov 2026 09:15:02 -0000",  # no zone known: naive, as the stdlib gives it
        "Sat, 8 Oct 0001 22:46:16 -0800 (PST)",  # a year below 100 is 19xx/20xx
        "Tue, 31 Feb 2026 09:15:02 +0300",  # no such day
        "Tue, 24 Nov 2026 09:15:02 +9999",  # no such zone
        "Tue, 24 Xyz 2026 09:15:02 +0100",
        "Tue, 24 Nov 26 09:15 MSK",
        "garbage",
    ],
)
def test_usual_dates_are_read_as_the_stdlib_reads_them(value: str) -> None:
    from rolekeeper.detect.message import _date

    assert _as_read(_date(value)) == _as_read(_stdlib_date(value))


def test_every_corpus_date_is_read_as_the_stdlib_reads_it() -> None:
    from rolekeeper.detect.message import _date, _usual_date, header_fields

    if not CORPORA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CORPORA} is missing; CI clones the project with ../shared beside it")
        pytest.skip("../shared/corpora is not beside this checkout")
    dates = [
        fields["date"]
        for path in sorted(CORPORA.rglob("*.eml"))
        if "date" in (fields := header_fields(path.read_bytes()))
    ]
    assert len(dates) > 10_000
    assert sum(_usual_date(d) is not None for d in dates) > 0.9 * len(dates)
    assert [d for d in dates if _as_read(_date(d)) != _as_read(_stdlib_date(d))] == []
