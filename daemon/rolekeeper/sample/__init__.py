"""The sample organisation (people, roles, clients as CSV exports) of `rolekeeper demo`."""

from __future__ import annotations

from importlib import resources

from rolekeeper.config import Settings
from rolekeeper.directory.importer import (
    ImportReport,
    import_clients,
    import_people,
    import_roles,
)
from rolekeeper.store.db import transaction
from rolekeeper.store.open import Store


def import_sample(store: Store, settings: Settings, actor: str) -> list[ImportReport]:
    """Import people, roles and clients, in that order (each file refers to the one before)."""
    files = resources.files("rolekeeper.sample")
    reports = []
    for kind, importer in (
        ("people", import_people),
        ("roles", import_roles),
        ("clients", import_clients),
    ):
        with (
            resources.as_file(files / f"{kind}.csv") as path,
            transaction(store.sessions) as session,
        ):
            reports.append(importer(session, path, settings, actor))
    return reports
