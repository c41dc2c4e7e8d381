"""`rolekeeper demo`: the main job on embedded defaults, on this machine, in one command.

Builds a private state directory (SQLite, a config for the sample organisation), imports
the sample people, roles and clients, and prints the status an admin would see.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Any

from rolekeeper.commands.common import actor
from rolekeeper.commands.status import render_status
from rolekeeper.config import load_settings
from rolekeeper.directory import queries
from rolekeeper.directory.importer import import_clients, import_people, import_roles
from rolekeeper.store.db import transaction
from rolekeeper.store.open import open_store

DEMO_CONFIG = """\
# Written by `rolekeeper demo`: the sample organisation on a private SQLite store.
[organisation]
name = "Acme (sample organisation)"
domains = ["acme.example"]
default_region = "RU"
timezone = "Europe/Moscow"
main_lines = ["+7 495 120-45-00"]

[database]
url = "sqlite:///{db}"

[logging]
level = "warning"

# The sample CRM export has Russian column headers, as a Russian CRM writes them.
[import.clients]
default_language = "ru"
[import.clients.columns]
client_id = "ID клиента"
client = "Компания"
domains = "Домены"
segment = "Сегмент"
role = "Роль"
contact = "Контакт"
email = "E-mail"
phone = "Телефон"
mobile = "Мобильный"
language = "Язык"
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo", help="run the main job on the sample organisation (SQLite, local state)"
    )
    parser.add_argument(
        "--dir", type=Path, default=Path("var/demo"), help="state directory (default var/demo)"
    )
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    state: Path = args.dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    config = state / "rolekeeper.toml"
    config.write_text(DEMO_CONFIG.format(db=state / "rolekeeper.db"), encoding="utf-8")
    settings = load_settings(config)
    store = open_store(settings)
    sample = resources.files("rolekeeper.sample")
    try:
        print(f"rolekeeper demo: state in {state} (config {config})\n")
        for kind, importer in (
            ("people", import_people),
            ("roles", import_roles),
            ("clients", import_clients),
        ):
            with (
                resources.as_file(sample / f"{kind}.csv") as path,
                transaction(store.sessions) as session,
            ):
                report = importer(session, path, settings, actor())
            print(
                f"import {kind:<8} {report.rows:>4} rows, {report.records:>3} {kind}: "
                f"{report.created} new, "
                f"{report.updated} changed, {report.unchanged} unchanged"
            )
        with store.sessions() as session:
            print("\n" + render_status(queries.status(session, settings)))
    finally:
        store.close()
    return 0
