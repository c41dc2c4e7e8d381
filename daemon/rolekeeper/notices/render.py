"""jinja2 templates in English and Russian, chosen by language; admins may override them.

A template file holds the subject on its first line ("Subject: …"), then the plain text.
Header values are built with the email package (never by pasting text into headers), so a
name with a newline in it cannot inject a header.
"""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any

import jinja2

PACKAGED = Path(__file__).with_name("templates")
# CPython's header folding drops the space between two encoded words it splits a phrase
# into ("пожалуйста, пишите" arrives as "пожалуйста,пишите"); folding only past the
# 998-character limit of RFC 5322 avoids that.
HEADER_POLICY = email.policy.default.clone(max_line_length=998)


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
) -> EmailMessage:
    message = EmailMessage(policy=HEADER_POLICY)
    message["From"] = formataddr(_one_line(sender))
    message["To"] = ", ".join(formataddr(_one_line(a)) for a in to)
    message["Subject"] = " ".join(subject.split())
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id or make_msgid(domain=sender[1].rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    for key, value in (headers or {}).items():
        message[key] = " ".join(value.split())
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def _one_line(address: tuple[str, str]) -> tuple[str, str]:
    name, addr = address
    return " ".join(name.split()), addr.strip()
