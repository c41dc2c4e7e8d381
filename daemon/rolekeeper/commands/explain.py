"""`rolekeeper explain FILE.eml`: what each rule sees and decides for one message."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rolekeeper.commands.common import add_json_flag, parse_when, print_json, settings_of, store_of
from rolekeeper.detect.directory import Directory
from rolekeeper.detect.message import UnreadableMessage, facts_from_bytes
from rolekeeper.detect.rules import MESSAGE_RULES
from rolekeeper.directory.snapshot import load_directory
from rolekeeper.errors import RolekeeperError


def register(sub: Any) -> None:
    parser = sub.add_parser("explain", help="show what each detection rule decides for a message")
    parser.add_argument("file", type=Path, help="a message as an .eml file")
    parser.add_argument(
        "--as-of", type=parse_when, help="use the role holders of this date (ISO 8601) for replays"
    )
    add_json_flag(parser)
    parser.set_defaults(func=_explain)


def _explain(args: argparse.Namespace) -> int:
    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        raise RolekeeperError(f"{args.file}: {exc.strerror}") from None
    try:
        facts = facts_from_bytes(raw, with_body=True)
    except UnreadableMessage as exc:
        raise RolekeeperError(f"{args.file}: unreadable message: {exc}") from None
    settings = settings_of(args)
    with store_of(args) as store, store.sessions() as session:
        directory = load_directory(session, settings, as_of=args.as_of)
    verdicts: list[dict[str, Any]] = []
    for rule in MESSAGE_RULES:
        findings = list(rule.check(facts, directory))
        verdicts.append(
            {
                "rule": rule.name,
                "description": rule.description,
                "incidents": [
                    {
                        "employee": f.employee.address if f.employee else None,
                        "client": f.client.crm_id if f.client else None,
                        "segment": f.client.segment if f.client else None,
                        "evidence": f.evidence,
                    }
                    for f in findings
                ],
            }
        )
    sender = facts.sender
    seen = {
        "message": facts.message_key,
        "from": _describe(sender, directory) if sender else None,
        "to": [_describe(a, directory) for a in facts.to],
        "cc": [_describe(a, directory) for a in facts.cc],
        "reply_to": [_describe(a, directory) for a in facts.reply_to],
        "resent_to": [_describe(a, directory) for a in facts.resent_to],
        "automated": facts.automated,
        "forward": facts.forward,
        "carried_from": [_describe(a, directory) for a in facts.carried_senders],
    }
    if args.json:
        print_json({"facts": seen, "rules": verdicts})
        return 0
    for key, value in seen.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{key + ':':<14}{shown if shown not in (None, '') else '-'}")
    print()
    for verdict in verdicts:
        mark = "HIT " if verdict["incidents"] else "no  "
        print(f"{mark} {verdict['rule']}: {verdict['description']}")
        for incident in verdict["incidents"]:
            print(
                f"       employee {incident['employee'] or '?'}, client {incident['client']} "
                f"({incident['segment']}): {incident['evidence']}"
            )
    return 0


def _describe(address: str, directory: Directory) -> str:
    if (employee := directory.employee(address)) is not None:
        return f"{address} (named address of {employee.name})"
    if address in directory.roles:
        holder = directory.roles[address]
        return f"{address} (role, held by {holder.name if holder else 'nobody'})"
    if (owner := directory.personal_owner(address)) is not None:
        return f"{address} (personal address of {owner.name})"
    if (client := directory.client_of(address)) is not None:
        return f"{address} (client {client.crm_id} {client.name}, {client.segment})"
    if directory.is_personal(address):
        return f"{address} (free mail, not a client's)"
    return address
