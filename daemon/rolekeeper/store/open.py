"""Open the store for use: engine, migrations to head, desired state from config."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.config import Settings
from rolekeeper.store import migrate
from rolekeeper.store.db import create_store_engine, make_sessionmaker, transaction
from rolekeeper.store.models import MainLine


@dataclass(frozen=True)
class Store:
    engine: Engine
    sessions: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()


def open_store(settings: Settings, *, upgrade: bool = True) -> Store:
    engine = create_store_engine(settings.database)
    if upgrade:
        migrate.upgrade(engine)
    store = Store(engine, make_sessionmaker(engine))
    sync_main_lines(store, settings)
    return store


def sync_main_lines(store: Store, settings: Settings) -> None:
    """The config lists the firm's main lines; the table mirrors it for queries."""
    wanted = set(settings.organisation.main_lines)
    with transaction(store.sessions) as session:
        have = set(session.scalars(select(MainLine.number)))
        if have == wanted:
            return
        if have - wanted:
            session.execute(delete(MainLine).where(MainLine.number.in_(have - wanted)))
        session.add_all(MainLine(number=n, label="main line") for n in sorted(wanted - have))
