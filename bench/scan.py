"""Benchmark the mail scanner against a raw IMAP FETCH of the same items, on a private Dovecot.

Run from the repository root (Dovecot must be installed; `scripts/bootstrap test` does it):

    .venv/bin/python bench/scan.py [--messages 20000] [--batch-size 500] [--rounds 2] [--profile]

It starts a private Dovecot, creates the journal mailbox journal@acme.example and
MULTIAPPENDs N realistic messages (fixed random seed) into its INBOX, 100 per command: mail
of the sample organisation (rolekeeper.sample) with its real role, named, personal and client
addresses; Russian and English text, RFC 2047 names and subjects, signatures with role numbers
and now and then a personal mobile, text/plain or multipart/alternative bodies in 8bit,
quoted-printable or base64, quoted replies and forwards. The mix is printed with its counts.

Then, after one throw-away header FETCH of every UID (a warm cache for both sides), it runs
`--rounds` rounds, each one:

* scanner: `Scanner.scan("journal@acme.example", "INBOX", directory)` on a fresh SQLite store
  with the sample organisation imported and a fresh ImapSource: wall time, bodies fetched,
  incidents, events (rows in incidents, client_arrivals, learned_numbers, candidates and
  unreadable_messages), the cursor and the commit transactions. The ImapSource instance has
  its fetch_headers and fetch_bodies wrapped to record exactly which UIDs each call asked for;
* raw: on a fresh connection logged in as the master user, imapclient FETCH of exactly the
  same items for exactly the same UID lists, call for call (BODY.PEEK[HEADER.FIELDS (...)]
  built from HEADER_FIELDS as ImapSource builds it, and BODY.PEEK[]<0.LIMIT>).

Scanner and raw alternate (S R S R ...); the ratio uses the best round of each. messages/s is
N / seconds for both; the raw seconds are the header plus body FETCH time. The target is a
scanner at 0.6 of the raw rate. With `--profile` one more scanner round runs under cProfile
(not timed) and its top 25 cumulative (and top 15 own-time) lines go to stderr.

It prints one JSON document to stdout. The exit code is 1 if a check fails (the scanner did
not read every message, the rounds disagree, or nothing was fetched), else 0; missing the
target is reported in the JSON, not by the exit code.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import cProfile
import csv
import html
import io
import json
import math
import os
import platform
import pstats
import random
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime
from importlib import resources
from pathlib import Path
from typing import Any

import imapclient
import sqlalchemy
from sqlalchemy import func, select

from rolekeeper.backends.base import Fetched
from rolekeeper.backends.imap import FETCH_BATCH, ImapSource
from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import Settings, load_settings
from rolekeeper.detect.message import HEADER_FIELDS
from rolekeeper.directory.snapshot import load_directory
from rolekeeper.lab.dovecot import DovecotServer, dovecot_binary, running_dovecot
from rolekeeper.sample import import_sample
from rolekeeper.store.models import (
    Candidate,
    ClientArrival,
    Incident,
    LearnedNumber,
    ScanCursor,
    UnreadableMessage,
)
from rolekeeper.store.open import Store, open_store
from rolekeeper.watch import Scanner

SEED = 20240611
JOURNAL = "journal@acme.example"
FOLDER = "INBOX"
FIRM = "acme.example"
APPEND_CHUNK = 100
TARGET_RATIO = 0.6
CRLF = "\r\n"

# (kind, share of all messages); firm mail to clients (role_to_client, named_to_client) needs
# a body and must be at least 20 % of the mix.
MIX: tuple[tuple[str, float], ...] = (
    ("client_to_role", 0.30),
    ("client_to_named", 0.10),
    ("role_to_client", 0.25),
    ("named_to_client", 0.05),
    ("internal", 0.15),
    ("newsletter_or_autoreply", 0.10),
    ("forward_to_personal", 0.05),
)

# --- the sample organisation ------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    name: str
    address: str
    personal_emails: tuple[str, ...]
    personal_phones: tuple[str, ...]
    work_phone: str


@dataclass(frozen=True)
class RoleBox:
    key: str
    name: str
    address: str
    number: str
    holder: Person


@dataclass(frozen=True)
class ClientContact:
    name: str
    email: str
    phone: str
    language: str
    company: str
    role_key: str


@dataclass
class Org:
    people: list[Person] = field(default_factory=list)
    roles: dict[str, RoleBox] = field(default_factory=dict)
    contacts: list[ClientContact] = field(default_factory=list)


def _sample_rows(name: str, delimiter: str) -> list[dict[str, str]]:
    text = (resources.files("rolekeeper.sample") / f"{name}.csv").read_text(encoding="utf-8-sig")
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(";") if v.strip())


def load_org() -> Org:
    org = Org()
    by_address: dict[str, Person] = {}
    for row in _sample_rows("people", ";"):
        person = Person(
            row["name"],
            row["email"],
            _split(row["personal_emails"]),
            _split(row["personal_phones"]),
            row["work_phone"],
        )
        org.people.append(person)
        by_address[person.address] = person
    for row in _sample_rows("roles", ","):
        org.roles[row["role"]] = RoleBox(
            row["role"], row["name"], row["address"], row["number"], by_address[row["holder"]]
        )
    for row in _sample_rows("clients", ";"):
        org.contacts.append(
            ClientContact(
                row["Контакт"],
                row["E-mail"],
                row["Телефон"],
                row["Язык"],
                row["Компания"],
                row["Роль"],
            )
        )
    return org


def import_sample_org(settings: Settings, store: Store) -> None:
    """The sample organisation of `rolekeeper demo` (people, roles, clients)."""
    import_sample(store, settings, "bench")


# --- message text -----------------------------------------------------------------------

RU_SENTENCES = (
    "Добрый день!",
    "Просим выставить счёт на оплату по прилагаемой спецификации.",
    "Подтверждаем получение груза, замечаний по комплектности нет.",
    "Направляем скорректированный график поставок на следующий квартал.",
    "Уточните, пожалуйста, сроки отгрузки и условия доставки до склада.",
    "Бухгалтерия просит прислать акт сверки взаиморасчётов за прошлый месяц.",
    "Цены действительны до конца месяца при условии предоплаты 50%.",
    "Во вложении договор поставки с нашими правками, просим согласовать.",
    "Товар будет готов к отгрузке в среду, машину подадим к 10:00.",
    "По рекламации: образцы переданы в лабораторию, результат сообщим.",
    "Сообщаем об изменении банковских реквизитов с первого числа.",
    "Прошу перезвонить, чтобы обсудить объёмы на следующий год.",
    "Спасибо за оперативный ответ, ждём счёт.",
    "Оплата по счёту № 4512 проведена сегодня, платёжное поручение во вложении.",
    "Коллеги, напоминаем о сверке остатков на складе.",
    "Готовы рассмотреть скидку при увеличении объёма закупки вдвое.",
)
EN_SENTENCES = (
    "Good afternoon,",
    "Please find attached the updated price list for the coming quarter.",
    "Could you confirm the delivery date for order 7741 and the incoterms?",
    "We have received the shipment; two pallets were damaged in transit.",
    "The invoice has been paid today, remittance advice attached.",
    "Let us schedule a call next week to go over the annual volumes.",
    "Our warehouse will be closed on Friday for the stock count.",
    "Thank you for the quick reply, we will place the order tomorrow.",
    "Please note our new bank details from the first of next month.",
    "The samples are with our lab; we expect the results by Thursday.",
    "Kindly send the signed contract back by the end of the week.",
    "We can offer a 3% discount for a prepaid order of this size.",
)
RU_SUBJECTS = (
    "Заявка №{n}",
    "Счёт на оплату №{n}",
    "Спецификация к договору {n}",
    "Отгрузка по заказу {n}",
    "Акт сверки за {m}",
    "Рекламация по партии {n}",
    "График поставок, {m}",
)
EN_SUBJECTS = (
    "Order {n}",
    "Invoice {n}",
    "Delivery schedule, {m}",
    "Quotation request {n}",
    "Contract amendment {n}",
)
INTERNAL_SUBJECTS = (
    "Планёрка в понедельник",
    "Отпуск с {n}",
    "Отчёт по продажам за {m}",
    "Weekly pipeline review",
    "Доступ к CRM",
    "Командировка в Екатеринбург",
)
MONTHS = ("январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август")
VENDORS = (
    ("Деловые новости", "news@biznews.example", "ru"),
    ("LogiTrade Weekly", "newsletter@logitrade.example", "en"),
    ("Конференция «Склад 2025»", "noreply@sklad-expo.example", "ru"),
    ("Office Supplies Online", "offers@officesupplies.example", "en"),
)
MAILERS = (
    "Microsoft Outlook 16.0",
    "Mozilla Thunderbird 115.6",
    "Яндекс.Почта",
    "Apple Mail (2.3774)",
    "Roundcube Webmail/1.6.5",
)


# --- message building -------------------------------------------------------------------


def encoded(text: str) -> str:
    """An RFC 2047 encoded-word header value for non-ASCII text, the text itself otherwise."""
    if text.isascii():
        return text
    return Header(text, "utf-8").encode()


def mailbox(name: str, address: str, rng: random.Random) -> str:
    if not name:
        return address
    if not name.isascii():
        return f"{encoded(name)} <{address}>"
    if " " in name and rng.random() < 0.3:  # Outlook writes "Last, First" in quotes
        first, _, last = name.rpartition(" ")
        return f'"{last}, {first}" <{address}>'
    return f"{name} <{address}>"


def address_list(values: Sequence[str]) -> str:
    return ("," + CRLF + " ").join(values)


def paragraph(rng: random.Random, sentences: Sequence[str], count: int) -> str:
    return " ".join(rng.choice(sentences) for _ in range(count))


@dataclass
class Body:
    text: str
    html: str | None = None


def html_of(text: str, quoted: str | None) -> str:
    paragraphs = "".join(
        "<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>\n" for p in text.split("\n\n") if p
    )
    quote = ""
    if quoted:
        quote = (
            '<blockquote style="border-left:2px solid #ccc;padding-left:8px">'
            + html.escape(quoted).replace("\n", "<br>\n")
            + "</blockquote>\n"
        )
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        "<style>p{margin:0 0 8px 0;font-family:Calibri,Arial,sans-serif;font-size:11pt}"
        "</style></head>\n<body>\n<div>\n" + paragraphs + quote + "</div>\n</body></html>\n"
    )


def _encode_part(
    data: str, subtype: str, rng: random.Random, allow_8bit: bool
) -> tuple[list[str], str]:
    raw = data.replace("\n", CRLF).encode("utf-8")
    choice = rng.random()
    if allow_8bit and choice < 0.4:
        cte, payload = "8bit", raw.decode("utf-8")
    elif choice < 0.7:
        cte = "quoted-printable"
        payload = binascii.b2a_qp(raw).decode("ascii").replace("\r\n", "\n").replace("\n", CRLF)
    else:
        cte, payload = "base64", base64.encodebytes(raw).decode("ascii").replace("\n", CRLF)
    headers = [
        f"Content-Type: text/{subtype}; charset=utf-8",
        f"Content-Transfer-Encoding: {cte}",
    ]
    return headers, payload


def body_part(body: Body, rng: random.Random) -> tuple[list[str], str]:
    """Content headers and the encoded body: text/plain, or multipart/alternative."""
    if body.html is None:
        return _encode_part(body.text, "plain", rng, allow_8bit=True)
    boundary = f"----=_Part_{rng.getrandbits(64):016x}"
    parts = []
    for data, subtype in ((body.text, "plain"), (body.html, "html")):
        headers, payload = _encode_part(data, subtype, rng, allow_8bit=False)
        parts.append(CRLF.join(headers) + CRLF + CRLF + payload)
    text = "This is a multi-part message in MIME format." + CRLF + CRLF + f"--{boundary}" + CRLF
    text += (CRLF + f"--{boundary}" + CRLF).join(parts) + CRLF + f"--{boundary}--" + CRLF
    return [f'Content-Type: multipart/alternative; boundary="{boundary}"'], text


def message(headers: list[str], body: Body, rng: random.Random) -> bytes:
    content, payload = body_part(body, rng)
    head = [*headers, "MIME-Version: 1.0", *content]
    return (CRLF.join(head) + CRLF + CRLF + payload).encode("utf-8")


# --- the generator ----------------------------------------------------------------------


class Generator:
    def __init__(self, org: Org, seed: int) -> None:
        self.org = org
        self.rng = random.Random(seed)
        self.start = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
        self.serial = 0
        self.holders = [r.holder for r in org.roles.values()]

    # helpers

    def _when(self) -> datetime:
        return self.start + timedelta(seconds=self.rng.randrange(20 * 86400))

    def _envelope(
        self,
        sender: str,
        to: Sequence[str],
        subject: str,
        *,
        cc: Sequence[str] = (),
        outside: bool,
        reply: bool,
        extra: Sequence[str] = (),
    ) -> list[str]:
        rng = self.rng
        self.serial += 1
        when = self._when()
        host = "mx1.acme.example"
        headers = [
            f"Return-Path: <{sender.rpartition('<')[2].rstrip('>')}>",
            f"Received: from {host} (localhost [127.0.0.1]){CRLF}\tby mail.acme.example "
            f"with LMTP id {rng.getrandbits(40):010x}{CRLF}\t; {format_datetime(when)}",
        ]
        if outside:
            headers.append(
                f"Received: from out.{rng.randrange(1, 99)}.relay.example "
                f"(out.relay.example [198.51.100.{rng.randrange(1, 254)}]){CRLF}"
                f"\tby {host} (Postfix) with ESMTPS id {rng.getrandbits(36):09X}{CRLF}"
                f"\tfor <{FIRM}>; {format_datetime(when)}"
            )
            signature = base64.b64encode(rng.randbytes(128)).decode("ascii")
            headers.append(
                "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=relay.example;"
                f"{CRLF}\ts=mail; t={int(when.timestamp())}; h=from:to:subject:date:message-id;"
                f"{CRLF}\tbh={base64.b64encode(rng.randbytes(32)).decode('ascii')};"
                f"{CRLF}\tb={signature[:64]}{CRLF}\t {signature[64:]}"
            )
        headers += [
            f"From: {sender}",
            f"To: {address_list(to)}",
        ]
        if cc:
            headers.append(f"Cc: {address_list(cc)}")
        headers += [
            f"Subject: {encoded(('Re: ' if reply else '') + subject)}",
            f"Date: {format_datetime(when)}",
            f"Message-ID: <{self.serial:07d}.{rng.getrandbits(48):012x}@bench.{FIRM}>",
        ]
        if reply:
            ref = f"<{rng.getrandbits(48):012x}@prev.example>"
            headers += [f"In-Reply-To: {ref}", f"References: {ref}"]
        headers.append(f"X-Mailer: {rng.choice(MAILERS)}")
        headers += extra
        return headers

    def _subject(self, language: str) -> str:
        rng = self.rng
        pool = RU_SUBJECTS if language == "ru" else EN_SUBJECTS
        return rng.choice(pool).format(n=rng.randrange(1000, 99999), m=rng.choice(MONTHS))

    def _text(self, language: str, paragraphs: int) -> str:
        rng = self.rng
        sentences = RU_SENTENCES if language == "ru" else EN_SENTENCES
        return "\n\n".join(paragraph(rng, sentences, rng.randint(1, 3)) for _ in range(paragraphs))

    def _quote(self, language: str, name: str, address: str, signature: str = "") -> str:
        rng = self.rng
        text = self._text(language, rng.randint(1, 2)) + ("\n\n" + signature if signature else "")
        lines = text.replace(". ", ".\n").split("\n")
        when = format_datetime(self._when())
        style = rng.random()
        if style < 0.4:
            head = (
                f"{when}, {name} <{address}> пишет:"
                if language == "ru"
                else f"On {when}, {name} <{address}> wrote:"
            )
            return head + "\n" + "\n".join("> " + line for line in lines)
        if style < 0.8:
            return (
                "-----Original Message-----\n"
                f"From: {name} <{address}>\nSent: {when}\nSubject: {self._subject(language)}\n\n"
                + "\n".join(lines)
            )
        return (
            "________________________________\n"
            f"От: {name} <{address}>\nОтправлено: {when}\nТема: {self._subject(language)}\n\n"
            + "\n".join(lines)
        )

    def _client_signature(self, contact: ClientContact) -> str:
        if contact.language == "ru":
            return f"С уважением,\n{contact.name}\n{contact.company}\nТел.: {contact.phone}"
        return f"Best regards,\n{contact.name}\n{contact.company}\nPhone: {contact.phone}"

    def _firm_signature(self, name: str, phone: str, language: str, mobile: str | None) -> str:
        if language == "ru":
            text = f"--\nС уважением,\n{name}\nООО «Акме»\nТел.: {phone}"
            return text + (f"\nМоб.: {mobile}" if mobile else "")
        text = f"--\nKind regards,\n{name}\nAcme LLC\nTel: {phone}"
        return text + (f"\nMobile: {mobile}" if mobile else "")

    def _body(self, text: str, quoted: str | None, html_share: float) -> Body:
        full = text + ("\n\n" + quoted if quoted else "")
        if self.rng.random() < html_share:
            return Body(full, html_of(text, quoted))
        return Body(full)

    def _contact(self) -> ClientContact:
        return self.rng.choice(self.org.contacts)

    def _colleague(self, contact: ClientContact) -> list[str]:
        rng = self.rng
        if rng.random() > 0.25:
            return []
        others = [
            c
            for c in self.org.contacts
            if c.company == contact.company and c.email != contact.email
        ]
        return [mailbox(o.name, o.email, rng) for o in others[:1]]

    # kinds

    def client_to_role(self, named: bool) -> bytes:
        rng = self.rng
        contact = self._contact()
        role = self.org.roles[contact.role_key]
        reply = rng.random() < 0.5
        text = self._text(contact.language, rng.randint(1, 3))
        text += "\n\n" + self._client_signature(contact)
        quoted = None
        if reply:
            quoted = self._quote(contact.language, role.name, role.address)
        if named:
            to = [mailbox(role.holder.name, role.holder.address, rng)]
            cc = [mailbox(role.name, role.address, rng)] if rng.random() < 0.3 else []
        else:
            to = [mailbox(role.name, role.address, rng)]
            cc = []
        cc += self._colleague(contact)
        headers = self._envelope(
            mailbox(contact.name, contact.email, rng),
            to,
            self._subject(contact.language),
            cc=cc,
            outside=True,
            reply=reply,
        )
        return message(headers, self._body(text, quoted, 0.35), rng)

    def firm_to_client(self, named: bool) -> bytes:
        rng = self.rng
        contact = self._contact()
        role = self.org.roles[contact.role_key]
        person = role.holder
        mobile = None
        if person.personal_phones and rng.random() < 0.1:
            mobile = rng.choice(person.personal_phones)
        if named:
            sender = mailbox(person.name, person.address, rng)
            signature = self._firm_signature(
                person.name, person.work_phone, contact.language, mobile
            )
        else:
            sender = mailbox(role.name, role.address, rng)
            signature = self._firm_signature(role.name, role.number, contact.language, mobile)
        reply = rng.random() < 0.6
        text = self._text(contact.language, rng.randint(1, 3)) + "\n\n" + signature
        quoted = None
        if reply:
            signature = self._client_signature(contact)
            quoted = self._quote(contact.language, contact.name, contact.email, signature)
        cc = self._colleague(contact)
        if not named and rng.random() < 0.3:
            cc.append(mailbox(person.name, person.address, rng))
        headers = self._envelope(
            sender,
            [mailbox(contact.name, contact.email, rng)],
            self._subject(contact.language),
            cc=cc,
            outside=False,
            reply=reply,
        )
        return message(headers, self._body(text, quoted, 0.5), rng)

    def internal(self) -> bytes:
        rng = self.rng
        author, *others = rng.sample(self.org.people, 3)
        to = [mailbox(p.name, p.address, rng) for p in others[: rng.randint(1, 2)]]
        if rng.random() < 0.3:
            role = rng.choice(list(self.org.roles.values()))
            to.append(mailbox(role.name, role.address, rng))
        language = "ru" if rng.random() < 0.8 else "en"
        subject = rng.choice(INTERNAL_SUBJECTS).format(n=rng.randrange(1, 28), m=rng.choice(MONTHS))
        text = self._text(language, rng.randint(1, 4))
        text += "\n\n" + self._firm_signature(author.name, author.work_phone, language, None)
        headers = self._envelope(
            mailbox(author.name, author.address, rng), to, subject, outside=False, reply=False
        )
        return message(headers, self._body(text, None, 0.4), rng)

    def automated(self) -> bytes:
        rng = self.rng
        role = rng.choice(list(self.org.roles.values()))
        if rng.random() < 0.6:
            name, address, language = rng.choice(VENDORS)
            text = self._text(language, rng.randint(3, 6))
            text += "\n\nЧтобы отписаться, перейдите по ссылке: https://lists.example/u/"
            text += f"{rng.getrandbits(64):016x}"
            headers = self._envelope(
                mailbox(name, address, rng),
                [role.address],
                self._subject(language),
                outside=True,
                reply=False,
                extra=[
                    "Precedence: bulk",
                    f"List-Id: {name.encode('ascii', 'replace').decode()} <news.{address}>",
                    f"List-Unsubscribe: <mailto:unsubscribe@{address.partition('@')[2]}>",
                ],
            )
            return message(headers, self._body(text, None, 0.9), rng)
        contact = self._contact()
        if contact.language == "ru":
            subject = "Автоответ: " + self._subject("ru")
            text = "Здравствуйте! Я в отпуске до понедельника, ответ будет с задержкой."
        else:
            subject = "Automatic reply: " + self._subject("en")
            text = "I am out of the office until Monday with limited access to e-mail."
        text += "\n\n" + self._client_signature(contact)
        headers = self._envelope(
            mailbox(contact.name, contact.email, rng),
            [mailbox(role.name, role.address, rng)],
            subject,
            outside=True,
            reply=False,
            extra=["Auto-Submitted: auto-replied", "X-Autoreply: yes"],
        )
        return message(headers, self._body(text, None, 0.0), rng)

    def forward_to_personal(self) -> bytes:
        rng = self.rng
        contact = self._contact()
        people = [p for p in self.holders if p.personal_emails] or self.org.people
        person = rng.choice(people)
        target = rng.choice(person.personal_emails or ("someone@gmail.com",))
        ru = contact.language == "ru"
        banner = (
            "-------- Пересылаемое сообщение --------"
            if ru
            else "---------- Forwarded message ---------"
        )
        forwarded = (
            f"{banner}\n{'От' if ru else 'From'}: {contact.name} <{contact.email}>\n"
            f"{'Дата' if ru else 'Date'}: {format_datetime(self._when())}\n"
            f"{'Тема' if ru else 'Subject'}: {self._subject(contact.language)}\n\n"
            + self._text(contact.language, rng.randint(1, 3))
            + "\n\n"
            + self._client_signature(contact)
        )
        own = rng.choice(("", "Для себя.", "Посмотрю вечером.", "fyi"))
        headers = self._envelope(
            mailbox(person.name, person.address, rng),
            [target],
            ("Fwd: " if rng.random() < 0.6 else "Пересл.: ") + self._subject(contact.language),
            outside=False,
            reply=False,
        )
        return message(headers, self._body(own, forwarded, 0.3), rng)

    def make(self, kind: str) -> bytes:
        builders: dict[str, Callable[[], bytes]] = {
            "client_to_role": lambda: self.client_to_role(named=False),
            "client_to_named": lambda: self.client_to_role(named=True),
            "role_to_client": lambda: self.firm_to_client(named=False),
            "named_to_client": lambda: self.firm_to_client(named=True),
            "internal": self.internal,
            "newsletter_or_autoreply": self.automated,
            "forward_to_personal": self.forward_to_personal,
        }
        return builders[kind]()


def kinds_for(n: int, rng: random.Random) -> list[str]:
    counts = {kind: math.floor(n * share) for kind, share in MIX}
    for kind, _ in MIX[: n - sum(counts.values())]:
        counts[kind] += 1
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(kinds)
    return kinds


def generate(n: int) -> tuple[list[bytes], list[str]]:
    generator = Generator(load_org(), SEED)
    kinds = kinds_for(n, random.Random(SEED + 1))
    return [generator.make(kind) for kind in kinds], kinds


# --- Dovecot and the store --------------------------------------------------------------


def append_all(server: DovecotServer, messages: Sequence[bytes]) -> float:
    start = time.perf_counter()
    with server.imap(*server.master_login(JOURNAL)) as client:
        for first in range(0, len(messages), APPEND_CHUNK):
            client.multiappend(FOLDER, messages[first : first + APPEND_CHUNK])
    return time.perf_counter() - start


WORKERS: int | None = None


def write_settings(
    tmp: Path, server: DovecotServer, name: str, batch_size: int | None, workers: int | None = None
) -> Settings:
    watch = f'[watch]\njournal_mailbox = "{JOURNAL}"\nfolders = ["{FOLDER}"]\n'
    if workers is not None:
        watch += f"parse_workers = {workers}\n"
    if batch_size is not None:
        watch += f"batch_size = {batch_size}\n"
    config = tmp / f"{name}.toml"
    config.write_text(
        DEMO_CONFIG.format(db=tmp / f"{name}.db")
        + server.config_sections(tmp / "master.pw")
        + watch,
        encoding="utf-8",
    )
    return load_settings(config)


def header_item() -> str:
    """The header FETCH item exactly as ImapSource.fetch_headers builds it."""
    return f"BODY.PEEK[HEADER.FIELDS ({' '.join(f.upper() for f in HEADER_FIELDS)})]"


def body_item(limit: int) -> str:
    return f"BODY.PEEK[]<0.{limit}>"


def chunks(values: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


# --- the scanner ------------------------------------------------------------------------


@dataclass
class ScanRound:
    seconds: float
    report: dict[str, Any]
    header_calls: list[list[int]]
    body_calls: list[list[int]]
    commits: int
    cursor: str | None
    counts: dict[str, int]
    workers_start_s: float
    workers: int


def count_rows(store: Store) -> dict[str, int]:
    with store.sessions() as session:
        return {
            model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Incident, ClientArrival, LearnedNumber, Candidate, UnreadableMessage)
        }


def scan_round(
    tmp: Path,
    server: DovecotServer,
    name: str,
    batch_size: int | None,
    profiler: cProfile.Profile | None = None,
) -> ScanRound:
    settings = write_settings(tmp, server, name, batch_size, WORKERS)
    assert settings.imap is not None
    store = open_store(settings)
    try:
        import_sample_org(settings, store)
        with store.sessions() as session:
            directory = load_directory(session, settings)
        source = ImapSource(settings.imap)
        header_calls: list[list[int]] = []
        body_calls: list[list[int]] = []
        fetch_headers, fetch_bodies = source.fetch_headers, source.fetch_bodies

        def recording_headers(
            mailbox: str, folder: str, uids: Sequence[int], fields: Sequence[str]
        ) -> list[Fetched]:
            header_calls.append(list(uids))
            return fetch_headers(mailbox, folder, uids, fields)

        def recording_bodies(
            mailbox: str, folder: str, uids: Sequence[int], limit: int
        ) -> list[Fetched]:
            body_calls.append(list(uids))
            return fetch_bodies(mailbox, folder, uids, limit)

        source.fetch_headers = recording_headers  # type: ignore[method-assign]
        source.fetch_bodies = recording_bodies  # type: ignore[method-assign]
        scanner = Scanner(store.sessions, settings, source)
        commit = scanner._commit
        commits = 0

        def counting_commit(*args: Any, **kwargs: Any) -> None:
            nonlocal commits
            commits += 1
            commit(*args, **kwargs)

        scanner._commit = counting_commit  # type: ignore[method-assign]
        try:
            # Started once per scanner and kept (the daemon's scanner lives on): timed apart.
            start = time.perf_counter()
            scanner.start_workers()
            workers_start_s = time.perf_counter() - start
            if profiler is not None:
                profiler.enable()
            start = time.perf_counter()
            report = scanner.scan(JOURNAL, FOLDER, directory)
            seconds = time.perf_counter() - start
            if profiler is not None:
                profiler.disable()
        finally:
            scanner.close()
            source.close()
        with store.sessions() as session:
            cursor = session.scalar(
                select(ScanCursor.cursor).where(
                    ScanCursor.source == f"{source.name}:{JOURNAL}", ScanCursor.folder == FOLDER
                )
            )
        return ScanRound(
            seconds,
            report.as_dict(),
            header_calls,
            body_calls,
            commits,
            cursor,
            count_rows(store),
            workers_start_s,
            settings.watch.parse_workers,
        )
    finally:
        store.close()


# --- the raw FETCH ----------------------------------------------------------------------


@dataclass
class RawRound:
    header_s: float
    body_s: float
    header_batches: int
    bodies: int

    @property
    def seconds(self) -> float:
        return self.header_s + self.body_s


def raw_round(
    server: DovecotServer,
    header_calls: Sequence[Sequence[int]],
    body_calls: Sequence[Sequence[int]],
    limit: int,
) -> RawRound:
    """The scanner's FETCH commands, call for call, on a fresh master-user connection."""
    headers, bodies = header_item(), body_item(limit)
    batches = fetched = 0
    with server.imap(*server.master_login(JOURNAL)) as client:
        # As the scanner's connections: no imaplib debug formatting of every line (imapclient
        # turns it on), so the baseline is imapclient at its fastest.
        client._imap.debug = 0
        client.select_folder(FOLDER, readonly=True)
        start = time.perf_counter()
        for call in header_calls:
            for batch in chunks(call, FETCH_BATCH):  # as ImapSource._fetch splits them
                client.fetch(batch, [headers])
                batches += 1
        header_s = time.perf_counter() - start
        start = time.perf_counter()
        for call in body_calls:
            for batch in chunks(call, FETCH_BATCH):
                fetched += len(client.fetch(batch, [bodies]))
        body_s = time.perf_counter() - start
    return RawRound(header_s, body_s, batches, fetched)


def warm_up(server: DovecotServer, batch_size: int) -> int:
    """A throw-away header FETCH of every UID, so both sides start from a warm cache."""
    with server.imap(*server.master_login(JOURNAL)) as client:
        client.select_folder(FOLDER, readonly=True)
        uids = sorted(client.search(["ALL"]))
        for batch in chunks(uids, batch_size):
            client.fetch(batch, [header_item()])
    return len(uids)


# --- output -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    dovecot = dovecot_binary()
    version = None
    if dovecot is not None:
        version = subprocess.run(
            [dovecot, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dovecot": version,
        "imapclient": imapclient.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


def print_profile(profiler: cProfile.Profile) -> None:
    for order, lines in (("cumulative", 25), ("tottime", 15)):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(lines)
        sys.stderr.write(f"--- scanner profile, top {lines} by {order} ---\n{out.getvalue()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="watch.batch_size (default: the setting's)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="scanner/raw rounds, alternating")
    parser.add_argument("--profile", action="store_true", help="cProfile one more scanner run")
    parser.add_argument(
        "--parse-workers", type=int, default=None, help="watch.parse_workers (default: config's)"
    )
    args = parser.parse_args(argv)
    global WORKERS
    WORKERS = args.parse_workers
    if args.messages < 1 or args.rounds < 1:
        parser.error("--messages and --rounds must be positive")

    start = time.perf_counter()
    messages, kinds = generate(args.messages)
    generate_s = time.perf_counter() - start
    total_bytes = sum(len(m) for m in messages)
    mix = Counter(kinds)
    body_kinds = ("client_to_role", "client_to_named", "role_to_client", "named_to_client")
    output: dict[str, Any] = {
        "messages": args.messages,
        "mix": {
            **{kind: mix[kind] for kind, _ in MIX},
            "outbound_to_client_share": round(
                (mix["role_to_client"] + mix["named_to_client"]) / args.messages, 3
            ),
            "expected_bodies": sum(mix[k] for k in (*body_kinds, "forward_to_personal")),
            "avg_bytes": round(total_bytes / args.messages),
        },
    }
    failures: list[str] = []
    with running_dovecot() as server, tempfile.TemporaryDirectory(prefix="rk-bench-scan-") as tmp:
        server.add_users({JOURNAL: secrets.token_urlsafe(12)})
        append_s = append_all(server, messages)
        del messages
        output["append"] = {
            "seconds": round(append_s, 2),
            "messages_per_s": round(args.messages / append_s),
            "generate_s": round(generate_s, 2),
        }
        base = write_settings(Path(tmp), server, "base", args.batch_size)
        batch_size = base.watch.batch_size
        limit = base.watch.body_limit_bytes
        if warm_up(server, batch_size) != args.messages:
            failures.append("the mailbox does not hold every appended message")
        scans: list[ScanRound] = []
        raws: list[RawRound] = []
        for n in range(args.rounds):
            scan = scan_round(Path(tmp), server, f"round{n}", args.batch_size)
            scans.append(scan)
            raws.append(raw_round(server, scan.header_calls, scan.body_calls, limit))
        if args.profile:
            profiler = cProfile.Profile()
            scan_round(Path(tmp), server, "profile", args.batch_size, profiler)
            print_profile(profiler)

    first = scans[0]
    best_scan = min(scans, key=lambda s: s.seconds)
    best_raw = min(raws, key=lambda r: r.seconds)
    bodies = sum(len(c) for c in first.body_calls)
    events = sum(first.counts.values())
    scanner_mps = args.messages / best_scan.seconds
    raw_mps = args.messages / best_raw.seconds
    ratio = scanner_mps / raw_mps
    output["scanner"] = {
        "seconds": round(best_scan.seconds, 3),
        "messages_per_s": round(scanner_mps),
        "rounds_s": [round(s.seconds, 3) for s in scans],
        "messages_read": first.report["messages"],
        "bodies": bodies,
        "incidents": first.report["incidents"],
        "events": events,
        "event_rows": first.counts,
        "cursor": first.cursor,
        "commits": first.commits,
        "batches_expected": math.ceil(args.messages / batch_size),
        "batch_size": batch_size,
        "parse_workers": first.workers,
        "parse_workers_start_s": round(first.workers_start_s, 3),
    }
    output["raw_fetch"] = {
        "seconds": round(best_raw.seconds, 3),
        "messages_per_s": round(raw_mps),
        "rounds_s": [round(r.seconds, 3) for r in raws],
        "header_s": round(best_raw.header_s, 3),
        "body_s": round(best_raw.body_s, 3),
        "header_batches": best_raw.header_batches,
        "bodies": best_raw.bodies,
        "header_item": header_item(),
        "body_item": body_item(limit),
    }
    output["ratio"] = round(ratio, 3)
    output["target_ratio"] = TARGET_RATIO
    output["meets_target"] = ratio >= TARGET_RATIO
    output["machine"] = machine()

    if first.report["messages"] != args.messages:
        failures.append(f"the scanner read {first.report['messages']} of {args.messages}")
    if best_raw.bodies != bodies:
        failures.append(f"raw FETCH got {best_raw.bodies} bodies, the scanner asked {bodies}")
    if any(
        (s.counts, s.cursor, s.report) != (first.counts, first.cursor, first.report) for s in scans
    ):
        failures.append("scanner rounds disagree")
    if first.commits != output["scanner"]["batches_expected"]:
        failures.append(
            f"{first.commits} commits for {output['scanner']['batches_expected']} batches"
        )
    if failures:
        output["failures"] = failures
    json.dump(output, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
