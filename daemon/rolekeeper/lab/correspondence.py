"""Real-looking mail of the sample organisation, for `rolekeeper demo`.

Ordinary client work through role mailboxes, and a handful of the breaches the rules exist
for: a client writing to a manager's own address, a manager answering from it, a private
Yandex address in copy, a thread forwarded to mail.ru, a mobile number in a signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr


@dataclass(frozen=True)
class Mail:
    mailbox: str
    folder: str
    message: bytes


def _message(
    sender: tuple[str, str],
    to: list[tuple[str, str]],
    subject: str,
    body: str,
    when: datetime,
    key: str,
    *,
    cc: list[tuple[str, str]] | None = None,
    html: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = formataddr(sender)
    msg["To"] = ", ".join(formataddr(a) for a in to)
    if cc:
        msg["Cc"] = ", ".join(formataddr(a) for a in cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<{key}@demo.acme.example>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


ROLE1 = ("Менеджер 1", "manager1@acme.example")
ROLE3 = ("Менеджер 3", "manager3@acme.example")
IVAN = ("Иван Петров", "ivan.petrov@acme.example")
MARIA = ("Мария Кузнецова", "maria.kuznetsova@acme.example")
STEPANOV = ("Михаил Степанов", "m.stepanov@severstal-snab.example")
GROMOVA = ("Екатерина Громова", "e.gromova@severstal-snab.example")
LEBEDEV = ("Михаил Лебедев", "m.lebedev@uralchemplast.example")
FEDOROV = ("Михаил Фёдоров", "m.fedorov@kamsky-zavod.example")
SIGNATURE = "--\nМенеджер 1, ООО «Акме»\nТел.: +7 495 120-45-01\n"


def history(now: datetime | None = None) -> list[Mail]:
    """Mail of the past weeks: what the first scan reads back, records and does not act on."""
    start = (now or datetime.now(UTC)) - timedelta(days=20)
    mail = []
    for day in range(0, 20, 3):
        when = start + timedelta(days=day, hours=10)
        mail.append(
            Mail(
                ROLE1[1],
                "INBOX",
                _message(
                    STEPANOV,
                    [ROLE1],
                    f"Заявка №{100 + day}",
                    f"Добрый день! Просим выставить счёт по заявке №{100 + day}.\n\nМ. Степанов",
                    when,
                    f"hist-in-{day}",
                ),
            )
        )
        mail.append(
            Mail(
                ROLE1[1],
                "Sent",
                _message(
                    ROLE1,
                    [STEPANOV],
                    f"Re: Заявка №{100 + day}",
                    f"Михаил, счёт во вложении.\n\n{SIGNATURE}",
                    when + timedelta(hours=2),
                    f"hist-out-{day}",
                ),
            )
        )
    mail.append(
        Mail(
            IVAN[1],
            "INBOX",
            _message(
                GROMOVA,
                [IVAN],
                "Договор",
                "Иван, пришлите проект договора, пожалуйста.",
                start + timedelta(days=5),
                "hist-named",
            ),
        )
    )
    return mail


def new_mail(now: datetime | None = None) -> list[Mail]:
    """Mail arriving while rolekeeper watches: the breaches it is there to see."""
    when = now or datetime.now(UTC)
    return [
        Mail(
            ROLE1[1],
            "INBOX",
            _message(
                STEPANOV,
                [ROLE1],
                "Отгрузка",
                "Когда ждать отгрузку по счёту 2025-114?",
                when,
                "new-clean",
            ),
        ),
        Mail(
            IVAN[1],
            "INBOX",
            _message(
                LEBEDEV,
                [IVAN],
                "Скидка",
                "Иван, пишу вам лично: обсудим скидку на следующий год?",
                when,
                "new-client-to-named",
            ),
        ),
        Mail(
            IVAN[1],
            "Sent",
            _message(
                IVAN,
                [LEBEDEV],
                "Re: Скидка",
                "Михаил, давайте созвонимся завтра.",
                when,
                "new-named-to-client",
            ),
        ),
        Mail(
            ROLE1[1],
            "INBOX",
            _message(
                GROMOVA,
                [ROLE1],
                "Проект договора",
                "Проект договора во вложении.",
                when,
                "new-personal-cc",
                cc=[("Иван", "vanya.p@yandex.ru")],
            ),
        ),
        Mail(
            IVAN[1],
            "Sent",
            _message(
                IVAN,
                [("", "ivan.petrov.1987@mail.ru")],
                "Fwd: Проект договора",
                "\n---------- Forwarded message ---------\nFrom: Екатерина Громова "
                "<e.gromova@severstal-snab.example>\nSubject: Проект договора\n\n"
                "Проект во вложении.",
                when,
                "new-forward-out",
            ),
        ),
        Mail(
            ROLE3[1],
            "Sent",
            _message(
                ROLE3,
                [FEDOROV],
                "Документы",
                "Михаил, документы пришлите мне на masha.k@bk.ru.\n\n--\nМария\n"
                "Моб.: +7 926 444-55-66",
                when,
                "new-private-contact",
                html="<p>Михаил, документы пришлите мне на <b>masha.k@bk.ru</b>.</p>"
                "<p>Мария<br>Моб.: +7 926 444-55-66</p>",
            ),
        ),
    ]
