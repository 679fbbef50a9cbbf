"""Bulk writes: idempotent inserts and the fast path for annotation rows.

`insert_ignore` is ``INSERT … ON CONFLICT (keys) DO NOTHING`` (SQLite and PostgreSQL), the
building block of the idempotent "get or create" upserts: a concurrent writer of the same
object cannot make a duplicate, and the caller reads the row back to compare.

`fast_insert` writes pre-serialized tuples. At 100k rows SQLAlchemy's per-row parameter
processing costs more than the database itself, so it hands the rows to the driver inside
the session's transaction: SQLite ``executemany``; PostgreSQL ``COPY … FROM STDIN`` (text
format) with psycopg2; SQLAlchemy Core ``executemany`` for any other driver.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from sync.store.checks import chunks
from sync.store.errors import StoreError

__all__ = ["INSERT_BATCH", "bulk_insert", "copy_line", "fast_insert", "first_line", "insert_ignore"]

INSERT_BATCH = 20_000
"""Rows per driver call of the bulk inserts (bounds the memory of one call)."""

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def first_line(error: BaseException | None) -> str:
    """The first line of an error's message (driver messages add context lines)."""
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def insert_ignore(session: Session, table: Table, rows: list[dict], keys: Sequence[str]) -> None:
    """INSERT … ON CONFLICT (keys) DO NOTHING, in batches."""
    if not rows:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    for batch in chunks(rows, INSERT_BATCH):
        session.execute(statement, list(batch))


def bulk_insert(session: Session, table: Table, rows: list[dict]) -> None:
    """Plain executemany INSERT of dicts through SQLAlchemy Core, in batches."""
    for batch in chunks(rows, INSERT_BATCH):
        session.execute(insert(table), list(batch))


def _copy_field(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    return repr(value) if isinstance(value, float) else str(value)


def copy_line(values: Sequence[Any]) -> str:
    """One line of PostgreSQL's COPY text format: NULL is ``\\N``; backslash, tab, newline
    and carriage return are escaped; floats in their exact ``repr``."""
    return "\t".join(map(_copy_field, values)) + "\n"


def fast_insert(session: Session, table: Table, columns: Sequence[str], rows: list[tuple], where: str) -> None:
    """Insert tuples (values of ``columns``, JSON columns as JSON text) in the session's
    transaction; driver errors become `StoreError` prefixed with ``where``."""
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect
    names = ", ".join(columns)
    if dialect.name == "sqlite":
        statement = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})"
        for batch in chunks(rows, INSERT_BATCH):
            conn.exec_driver_sql(statement, list(batch))
        return
    if dialect.name == "postgresql" and dialect.driver == "psycopg2":
        statement = f"COPY {table.name} ({names}) FROM STDIN"
        try:
            with conn.connection.dbapi_connection.cursor() as cursor:
                for batch in chunks(rows, INSERT_BATCH):
                    cursor.copy_expert(statement, io.StringIO("".join(map(copy_line, batch))))
        except dialect.loaded_dbapi.Error as err:
            raise StoreError(f"{where}: {first_line(err)}") from err
        return
    bulk_insert(session, table, [dict(zip(columns, row)) for row in rows])
