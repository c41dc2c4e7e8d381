"""INSERT … ON CONFLICT DO NOTHING on SQLite and PostgreSQL: seen twice, stored once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignore(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert the rows that do not break a unique constraint; returns how many were new."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    values = [dict(row) for row in rows]
    if dialect == "sqlite":
        # The driver's executemany; its rowcount counts the rows really inserted.
        result = session.execute(sqlite.insert(table).on_conflict_do_nothing(), values)
        return int(cast(CursorResult[Any], result).rowcount)
    key = next(iter(table.primary_key.columns))
    statement = postgresql.insert(table).on_conflict_do_nothing().returning(key)
    # Batched by SQLAlchemy ("insertmanyvalues"); RETURNING names exactly the new rows,
    # where executemany's rowcount is -1 on psycopg.
    return len(session.execute(statement, values).all())
