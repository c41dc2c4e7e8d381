"""`rolekeeper roles provision|numbers|reroute` and `rolekeeper webhooks`."""

from __future__ import annotations

import argparse
from typing import Any

from rolekeeper.commands.common import actor, add_json_flag, print_json, settings_of, store_of
from rolekeeper.commands.common import table as format_table


def register_roles(roles: Any) -> None:
    p = roles.add_parser(
        "provision",
        help="buy or adopt a Twilio number for roles lacking one and set its routing",
    )
    p.add_argument("roles", nargs="*", metavar="ROLE", help="only these roles (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    add_json_flag(p)
    p.set_defaults(func=_provision)

    p = roles.add_parser(
        "numbers", help="check each role number's settings on Twilio and repair drift"
    )
    p.add_argument("roles", nargs="*", metavar="ROLE", help="only these roles (default: all)")
    p.add_argument("--dry-run", action="store_true", help="report drift, repair nothing")
    add_json_flag(p)
    p.set_defaults(func=_numbers)

    p = roles.add_parser("lockouts", help="caller numbers locked out of the access number now")
    add_json_flag(p)
    p.set_defaults(func=_lockouts)

    p = roles.add_parser("unlock", help="lift a caller number's access-number PIN lockout")
    p.add_argument("number", metavar="NUMBER", help="the caller's number, e.g. +79031112233")
    p.set_defaults(func=_unlock)


def register(sub: Any) -> None:
    p = sub.add_parser("webhooks", help="serve Twilio's voice and SMS webhooks (its own unit)")
    p.add_argument("--host", help="listen address (default: [twilio.webhooks].listen_host)")
    p.add_argument("--port", type=int, help="listen port (default: [twilio.webhooks].listen_port)")
    p.set_defaults(func=_webhooks)


def _provision(args: argparse.Namespace) -> int:
    from rolekeeper.backends.twilio import TwilioApi
    from rolekeeper.telephony import numbers

    settings = settings_of(args)
    cfg = numbers.twilio_of(settings)
    api = TwilioApi(cfg)
    with store_of(args) as store:
        if args.dry_run:
            with store.sessions() as session:
                items = numbers.plan(api, settings, session, args.roles or None)
        else:
            items = numbers.provision(
                api, settings, store.sessions, args.roles or None, actor=actor()
            )
    rows = [i.as_dict() for i in items]
    if args.json:
        print_json(rows)
    else:
        columns = [("role", "ROLE"), ("action", "ACTION"), ("number", "NUMBER"), ("sid", "SID")]
        print(format_table(rows, [*columns, ("detail", "DETAIL")]))
    return 1 if any(i.action == "skip" for i in items) else 0


def _numbers(args: argparse.Namespace) -> int:
    from rolekeeper.backends.twilio import TwilioApi
    from rolekeeper.telephony import numbers

    settings = settings_of(args)
    api = TwilioApi(numbers.twilio_of(settings))
    with store_of(args) as store:
        states = numbers.reconcile(
            api, settings, store.sessions, args.roles or None, dry_run=args.dry_run, actor=actor()
        )
    rows = [s.as_dict() for s in states]
    if args.json:
        print_json(rows)
    else:
        shown = [
            {**r, "changes": ",".join(sorted(s.changes)) or "-"}
            for r, s in zip(rows, states, strict=True)
        ]
        columns = [("role", "ROLE"), ("number", "NUMBER"), ("sid", "SID"), ("changes", "DRIFT")]
        print(format_table(shown, columns))
    return 0


def _lockouts(args: argparse.Namespace) -> int:
    from rolekeeper.clock import utcnow
    from rolekeeper.telephony.lockout import lockouts

    with store_of(args) as store, store.sessions() as session:
        found = lockouts(session, utcnow())
    rows = [
        {
            "caller": lock.caller,
            "locked_until": lock.locked_until.isoformat(timespec="seconds"),
            "refusals": lock.refusals,
        }
        for lock in found
    ]
    if args.json:
        print_json(rows)
    else:
        columns = [("caller", "CALLER"), ("locked_until", "UNTIL"), ("refusals", "REFUSALS")]
        print(format_table(rows, columns))
    return 0


def _unlock(args: argparse.Namespace) -> int:
    from rolekeeper.domain import InvalidValue, normalise_phone
    from rolekeeper.errors import RolekeeperError
    from rolekeeper.telephony.lockout import unlock

    settings = settings_of(args)
    try:
        number = normalise_phone(args.number, settings.organisation.default_region)
    except InvalidValue as exc:
        raise RolekeeperError(str(exc)) from None
    with store_of(args) as store:
        count = unlock(store.sessions, number, actor())
    print(f"{number}: {count} refused PIN(s) forgotten; the number may call the access number")
    return 0


def _webhooks(args: argparse.Namespace) -> int:
    import uvicorn

    from rolekeeper.log import configure_logging
    from rolekeeper.store.open import open_store
    from rolekeeper.telephony.webhooks import WebhookApp

    settings = settings_of(args)
    configure_logging(settings.logging)
    store = open_store(settings, upgrade=False)
    try:
        app = WebhookApp(settings, store.sessions)
        assert settings.twilio is not None
        hooks = settings.twilio.webhooks
        config = uvicorn.Config(
            app,
            host=args.host or hooks.listen_host,
            port=args.port or hooks.listen_port,
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
        )
        uvicorn.Server(config).run()
    finally:
        store.close()
    return 0
