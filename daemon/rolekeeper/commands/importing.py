"""`rolekeeper import people|roles|clients FILE.csv`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.commands.common import actor, add_json_flag, print_json, settings_of, store_of
from rolekeeper.config import Settings
from rolekeeper.directory.importer import (
    ImportReport,
    import_clients,
    import_people,
    import_roles,
)
from rolekeeper.errors import RolekeeperError


def register(sub: Any) -> None:
    parser = sub.add_parser("import", help="import an HR/CRM CSV export (all rows or none)")
    parser.add_argument("kind", choices=("people", "roles", "clients"))
    parser.add_argument("file", type=Path)
    parser.add_argument(
        "--dry-run", action="store_true", help="check and count, then roll everything back"
    )
    parser.add_argument(
        "--reassign",
        action="store_true",
        help="roles: let the file change a role's holder directly (no handover, no notices)",
    )
    add_json_flag(parser)
    parser.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    rerouted: list[str] = []
    with store_of(args) as store:
        with store.sessions() as session, session.begin():
            report: ImportReport
            if args.kind == "people":
                report = import_people(session, args.file, settings, actor())
            elif args.kind == "roles":
                report = import_roles(session, args.file, settings, actor(), reassign=args.reassign)
            else:
                report = import_clients(session, args.file, settings, actor())
            if args.dry_run:
                session.rollback()
        if report.holders_changed and not args.dry_run:
            rerouted = _reroute(settings, store.sessions, report)
    data = report.as_dict() | {"dry_run": args.dry_run, "rerouted": rerouted}
    if args.json:
        print_json(data)
    else:
        verb = "would import" if args.dry_run else "imported"
        print(
            f"{verb} {report.kind} from {report.path}: {report.rows} rows, "
            f"{report.records} {report.kind}; "
            f"{report.created} new, {report.updated} changed, {report.unchanged} unchanged"
            + (f", {report.removed} contacts no longer listed" if report.removed else "")
        )
        if rerouted:
            print(f"role numbers now ring the new holders: {', '.join(rerouted)}")
        for warning in report.warnings:
            print(f"warning: {warning}")
    return 0


def _reroute(
    settings: Settings, sessions: sessionmaker[Session], report: ImportReport
) -> list[str]:
    """The role numbers of the roles whose holder the file changed follow at once, as in a
    handover (`numbers.reroute`): calls already do (the webhooks read the store), the
    fallback TwiML is rewritten and the numbers' settings checked. Without Twilio nothing is
    needed; if Twilio fails, the warning says so and the reconciler's next pass finishes."""
    cfg = settings.twilio
    if cfg is None or cfg.public_url is None:
        return []
    from rolekeeper.backends.twilio import TwilioApi
    from rolekeeper.telephony.numbers import reroute

    try:
        states = reroute(settings, sessions, report.holders_changed, TwilioApi(cfg), actor=actor())
    except (RolekeeperError, OSError) as exc:
        report.warnings.append(
            f"the phone routing of {', '.join(report.holders_changed)} was not updated now "
            f"({exc}); the reconciler's next pass does it"
        )
        return []
    return sorted({state.role for state in states})
