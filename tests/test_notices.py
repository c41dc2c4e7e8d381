"""Messages rolekeeper writes: templates, languages, safe headers."""

from __future__ import annotations

import email
import email.policy

from rolekeeper.notices.render import Templates, build_message


def parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_cyrillic_subject_keeps_its_spaces() -> None:
    subject = "Acme: пожалуйста, пишите на manager1@acme.example, мы всегда на связи"
    raw = build_message(("Менеджер 1", "manager1@acme.example"), [("", "x@y.example")],
                        subject, "текст").as_bytes()  # fmt: skip
    assert parse(raw)["Subject"] == subject


def test_names_cannot_inject_headers() -> None:
    raw = build_message(
        ("Evil\r\nBcc: victim@x.example", "manager1@acme.example"),
        [("Name\nX-Injected: yes", "client@x.example")],
        "subject\r\nBcc: another@x.example",
        "body",
    ).as_bytes()
    parsed = parse(raw)
    assert parsed["Bcc"] is None and parsed["X-Injected"] is None
    assert parsed["To"].addresses[0].addr_spec == "client@x.example"


def test_templates_by_language_with_english_fallback() -> None:
    templates = Templates()
    context = {
        "contact_name": "Ольга",
        "organisation": "Acme",
        "role_name": "Менеджер 1",
        "role_address": "manager1@acme.example",
        "role_number": "+7 495 120-45-01",
    }
    subject, body = templates.render("nudge", "ru", **context)
    assert subject == "Acme: пожалуйста, пишите на manager1@acme.example"
    assert "Уважаемый(ая) Ольга!" in body and "+7 495 120-45-01" in body
    subject, _ = templates.render("nudge", "de", **context)  # no German template
    assert subject == "Acme: please write to manager1@acme.example"
