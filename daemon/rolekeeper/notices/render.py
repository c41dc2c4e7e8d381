"""jinja2 templates in English and Russian, chosen by language; admins may override them.

A template file holds the subject on its first line ("Subject: …"), then the plain text.
Header values are built with the email package (never by pasting text into headers), so a
name with a newline in it cannot inject a header.
"""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any

import jinja2

PACKAGED = Path(__file__).with_name("templates")
WIRE_POLICY = email.policy.compat32.clone(linesep="\r\n")
# Bodies in quoted-printable: readable where they are ASCII, safe for every relay.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


class Templates:
    def __init__(self, override_dir: Path | None = None) -> None:
        search = [str(override_dir)] if override_dir else []
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([*search, str(PACKAGED)]),
            # .txt templates are plain text; .html ones (notices) are escaped.
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, name: str, language: str, **context: Any) -> tuple[str, str]:
        """(subject, body) of template NAME in LANGUAGE, falling back to English."""
        try:
            template = self.env.get_template(f"{name}.{language}.txt")
        except jinja2.TemplateNotFound:
            template = self.env.get_template(f"{name}.en.txt")
        text = template.render(**context)
        first, _, body = text.partition("\n")
        if not first.startswith("Subject:"):
            raise ValueError(f"template {template.name} must start with a Subject: line")
        return " ".join(first.removeprefix("Subject:").split()), body.lstrip("\n")

    def render_html(self, name: str, language: str, **context: Any) -> str | None:
        """The HTML part of template NAME in LANGUAGE (English, else none), escaped."""
        for candidate in (language, "en"):
            try:
                return self.env.get_template(f"{name}.{candidate}.html").render(**context)
            except jinja2.TemplateNotFound:
                continue
        return None


def build_message(
    sender: tuple[str, str],
    to: list[tuple[str, str]],
    subject: str,
    body: str,
    *,
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
    html: str | None = None,
) -> Message:
    """A UTF-8 message (plain, or plain + HTML alternative), serialised with CRLF.

    Built with the email package's compat32 classes: RFC 2047 encoding by `Header` and
    `formataddr`, a quarter of the cost of the newer header registry (which matters at
    thousands of notices), and every value first put on one line, so no name or subject can
    inject a header."""
    text = MIMEText(body, "plain", _UTF8_QP)  # type: ignore[arg-type]  # takes a Charset too
    if html is None:
        message: Message = text
    else:
        message = MIMEMultipart("alternative")
        message.attach(text)
        message.attach(MIMEText(html, "html", _UTF8_QP))  # type: ignore[arg-type]
    message.policy = WIRE_POLICY
    message["From"] = formataddr(_one_line(sender), charset="utf-8")
    message["To"] = ", ".join(formataddr(_one_line(a), charset="utf-8") for a in to)
    message["Subject"] = _encoded(" ".join(subject.split()))
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id or make_msgid(domain=sender[1].rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    for key, value in (headers or {}).items():
        message[key] = _encoded(" ".join(value.split()))
    return message


def _encoded(value: str) -> Any:
    """ASCII as it is; anything else a Header, which the generator writes as RFC 2047
    encoded words folded between words (compat32 headers take Header objects)."""
    return value if value.isascii() else Header(value, "utf-8")


def wire_bytes(message: Message) -> bytes:
    """The message as sent and as filed: CRLF line ends, as SMTP and IMAP want them."""
    return message.as_bytes(policy=WIRE_POLICY)


def _one_line(address: tuple[str, str]) -> tuple[str, str]:
    name, addr = address
    return " ".join(name.split()), addr.strip()
