"""Schema versions and the migrations between them.

The store stamps its schema version in ``store_meta`` (key ``schema_version``). A new store
is created at `sync.store.schema.SCHEMA_VERSION` directly from the models. A store at an
older version is upgraded by `upgrade_schema`, which runs ``MIGRATIONS[v]`` for each ``v``
from the store's version up to the target, in one transaction, stamping each step.

To change the schema: edit the models, bump ``SCHEMA_VERSION`` to ``N + 1`` and add
``MIGRATIONS[N]``, a function of a SQLAlchemy ``Connection`` that turns an ``N`` store into an
``N + 1`` store (DDL through ``sqlalchemy`` constructs, or dialect-checked SQL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import JSON, Connection, String, select, update

from sync.store.errors import StoreError
from sync.store.schema import SCHEMA_VERSION, StoreMeta

__all__ = ["MIGRATIONS", "VERSION_KEY", "Migration", "read_version", "upgrade_schema", "write_version"]

VERSION_KEY = "schema_version"
"""The ``store_meta`` key holding the schema version."""

Migration = Callable[[Connection], None]
"""Upgrades a store from version ``v`` to ``v + 1``, given a connection in a transaction."""

def _add_columns(conn: Connection, table: str, columns: Mapping[str, object]) -> None:
    """``ALTER TABLE … ADD COLUMN`` for nullable columns, in the dialect's own type names."""
    for name, column_type in columns.items():
        type_sql = column_type.compile(dialect=conn.dialect)  # type: ignore[attr-defined]
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {type_sql}")


def _v1_to_v2(conn: Connection) -> None:
    """Version 2 records what push sent (``pushed_shapes.shape_type``, ``.points``) and the
    task's labels at push time (``cvat_tasks.labels``). Older rows keep NULL there."""
    _add_columns(conn, "pushed_shapes", {"shape_type": String(16), "points": JSON()})
    _add_columns(conn, "cvat_tasks", {"labels": JSON()})


MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2}
"""``MIGRATIONS[v]`` upgrades a store from schema version ``v`` to ``v + 1``."""


def read_version(conn: Connection, where: str) -> int:
    """The schema version stamped in the store; `StoreError` if it is missing or malformed."""
    value = conn.execute(select(StoreMeta.value).where(StoreMeta.key == VERSION_KEY)).scalar()
    if value is None:
        raise StoreError(f"store at {where} has no schema version: it was not made by autolabel")
    try:
        return int(value)
    except ValueError:
        raise StoreError(f"store at {where} has a malformed schema version {value!r}") from None


def write_version(conn: Connection, version: int) -> None:
    """Stamp ``version`` (the ``store_meta`` row must exist)."""
    conn.execute(update(StoreMeta).where(StoreMeta.key == VERSION_KEY).values(value=str(int(version))))


def upgrade_schema(
    conn: Connection,
    current: int,
    where: str,
    *,
    target: int = SCHEMA_VERSION,
    migrations: Mapping[int, Migration] = MIGRATIONS,
) -> int:
    """Run the migrations from ``current`` to ``target`` on ``conn`` and stamp each step.

    Returns the new version. A missing step raises `StoreError` naming the store and the
    versions; the caller's transaction then rolls back, leaving the store as it was.
    """
    if current > target:
        raise StoreError(f"store at {where} has schema version {current}, newer than {target}: it cannot be downgraded")
    for version in range(current, target):
        step = migrations.get(version)
        if step is None:
            raise StoreError(f"store at {where}: no migration from schema version {version} to {version + 1}")
        step(conn)
        write_version(conn, version + 1)
    return target
