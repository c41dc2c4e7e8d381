"""The store on SQLite and PostgreSQL: migrations, guards, and concurrent writers."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from rolekeeper.clock import utcnow
from rolekeeper.config import Settings, settings_from_mapping
from rolekeeper.store import migrate
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import create_store_engine, transaction
from rolekeeper.store.models import AuditEntry, Base, DueJob, Person, Role, RoleHolder
from rolekeeper.store.open import open_store
from tests.conftest import sqlite_mapping


def test_migrations_match_models_and_round_trip(any_settings: Settings) -> None:
    engine = create_store_engine(any_settings.database)
    try:
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision(engine)
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        migrate.downgrade(engine, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(engine)
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_audit_log_is_append_only(any_settings: Settings) -> None:
    store = open_store(any_settings)
    try:
        with transaction(store.sessions) as session:
            record_audit(session, "test", "role.holder", "manager1", {"holder": "a@x.example"})
        for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
                conn.execute(text(statement))
        with store.sessions() as session:
            assert session.scalar(select(AuditEntry.actor)) == "test"
    finally:
        store.close()


def test_one_current_holder_per_role(any_settings: Settings) -> None:
    store = open_store(any_settings)
    try:
        with transaction(store.sessions) as session:
            a = Person(name="A", named_address="a@acme.example")
            b = Person(name="B", named_address="b@acme.example")
            role = Role(key="manager1", name="M1", address="manager1@acme.example")
            session.add_all([a, b, role])
            session.flush()
            session.add(RoleHolder(role_id=role.id, person_id=a.id))
            ids = (role.id, a.id, b.id)
        with pytest.raises(IntegrityError), transaction(store.sessions) as session:
            session.add(RoleHolder(role_id=ids[0], person_id=ids[2]))
        with transaction(store.sessions) as session:  # closing the old row frees the seat
            current = session.scalars(select(RoleHolder)).one()
            current.ended_at = utcnow()
            session.flush()
            session.add(RoleHolder(role_id=ids[0], person_id=ids[2]))
        with store.sessions() as session:
            assert session.scalar(select(func.count()).select_from(RoleHolder)) == 2
    finally:
        store.close()


def test_sqlite_pragmas(sqlite_settings: Settings) -> None:
    store = open_store(sqlite_settings)
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


WRITERS = 4
WRITES = 60


def _writer(db: str, worker: int) -> None:
    """A separate process doing many short read-modify-write transactions."""
    settings = settings_from_mapping(sqlite_mapping(Path(db)))
    store = open_store(settings, upgrade=False)
    try:
        for i in range(WRITES):
            with transaction(store.sessions) as session:
                # Read then write: the pattern that fails with "database is locked" when a
                # deferred transaction tries to upgrade its lock.
                job = session.scalars(select(DueJob).where(DueJob.key == "counter")).one()
                job.attempts += 1
                record_audit(session, f"w{worker}", "test.write", str(i), {})
    finally:
        store.close()


def test_concurrent_writers_on_sqlite_never_fail(tmp_path: Path) -> None:
    db = tmp_path / "rk.db"
    settings = settings_from_mapping(sqlite_mapping(db))
    store = open_store(settings)
    with transaction(store.sessions) as session:
        session.add(DueJob(kind="test", key="counter", due_at=utcnow(), status="done"))
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(str(db), n)) for n in range(WRITERS)]
    errors: list[BaseException] = []

    def thread_writer() -> None:
        try:
            _writer(str(db), 99)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=thread_writer) for _ in range(2)]
    for p in processes:
        p.start()
    for t in threads:
        t.start()
    for p in processes:
        p.join(timeout=120)
    for t in threads:
        t.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * WRITERS
    assert errors == []
    expected = (WRITERS + 2) * WRITES
    with store.sessions() as session:
        assert session.scalar(select(DueJob.attempts)) == expected
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == expected
    store.close()


def test_main_lines_follow_the_config(tmp_path: Path) -> None:
    from rolekeeper.store.models import MainLine

    mapping = sqlite_mapping(tmp_path / "rk.db")
    mapping["organisation"] = {"main_lines": ["+7 495 120-45-00", "8 800 555-35-35"]}
    store = open_store(settings_from_mapping(mapping))
    mapping["organisation"] = {"main_lines": ["+7 495 120-45-00"]}
    store.close()
    store = open_store(settings_from_mapping(mapping))
    with store.sessions() as session:
        assert list(session.scalars(select(MainLine.number))) == ["+74951204500"]
    store.close()


def test_sqlite_datetimes_come_back_as_stored(sqlite_store: object) -> None:
    from rolekeeper.clock import as_utc
    from rolekeeper.store.open import Store

    assert isinstance(sqlite_store, Store)
    due = utcnow() + timedelta(hours=1)
    with transaction(sqlite_store.sessions) as session:
        session.add(DueJob(kind="k", due_at=due, status="pending"))
    with sqlite_store.sessions() as session:
        assert as_utc(session.scalars(select(DueJob.due_at)).one()) == due


def test_insert_ignore_counts_only_new_rows(any_settings: Settings) -> None:
    from rolekeeper.store.db import table_of
    from rolekeeper.store.models import Incident
    from rolekeeper.store.upsert import insert_ignore

    store = open_store(any_settings)
    try:
        row = {"rule": "r", "person_id": None, "person_key": 0, "evidence": "",
               "detected_at": utcnow(), "status": "open", "live": True, "source": ""}  # fmt: skip
        first = [row | {"message_key": f"<{n}>"} for n in range(3)]
        with transaction(store.sessions) as session:
            assert insert_ignore(session, table_of(Incident), first) == 3
        again = [row | {"message_key": f"<{n}>"} for n in range(2, 6)]
        with transaction(store.sessions) as session:
            assert insert_ignore(session, table_of(Incident), again) == 3
        with store.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Incident)) == 6
    finally:
        store.close()
