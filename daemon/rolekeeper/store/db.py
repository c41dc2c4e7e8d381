"""Engines and sessions for SQLite (default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.engine import URL, CursorResult, Result, make_url
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.config import DatabaseSettings
from rolekeeper.errors import RolekeeperError


class StoreError(RolekeeperError):
    """The database cannot be opened or migrated."""


def database_url(settings: DatabaseSettings) -> URL:
    url = make_url(settings.url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if settings.password is not None:
        url = url.set(password=settings.password.get_secret_value())
    return url


def create_store_engine(settings: DatabaseSettings) -> Engine:
    url = database_url(settings)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings.busy_timeout_seconds)
    return create_engine(
        url, pool_size=settings.pool_size, pool_pre_ping=True, hide_parameters=True
    )


def _sqlite_engine(url: URL, busy_timeout: float) -> Engine:
    if url.database and url.database != ":memory:":
        parent = Path(url.database).parent
        if not parent.is_dir():
            raise StoreError(f"database directory {parent} does not exist")
    engine = create_engine(
        url,
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from sqlite3 so every transaction can start IMMEDIATE:
        # a deferred one that later writes fails at once with "database is locked"
        # instead of waiting on the busy timeout (SQLAlchemy's pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read-only session (`reading`) begins deferred: in WAL mode it then never
        # holds the write lock, so a long read does not stall writers.
        deferred = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


READ_ONLY = "rolekeeper_read_only"


def reading(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions for reads only: on SQLite they never take the write lock (see above)."""
    engine = factory.kw["bind"]
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def safe_url(settings: DatabaseSettings) -> str:
    return database_url(settings).render_as_string(hide_password=True)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched (the typed Result hides CursorResult.rowcount)."""
    return int(cast(CursorResult[Any], result).rowcount)


def table_of(model: type[Any]) -> Table:
    """The Core table of a mapped class, typed (mapped classes expose a generic FromClause)."""
    return cast(Table, model.__table__)
