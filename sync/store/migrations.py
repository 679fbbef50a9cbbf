"""Schema versions and the migrations between them.

The store stamps its schema version in ``store_meta`` (key ``schema_version``). A new store
is created at `sync.store.schema.SCHEMA_VERSION` directly from the models. A store at an
older version is upgraded by `upgrade_schema`, which runs ``MIGRATIONS[v]`` for each ``v``
from the store's version up to the target, in one transaction, stamping each step.

To change the schema: edit the models, bump ``SCHEMA_VERSION`` to ``N + 1`` and add
``MIGRATIONS[N]``, a function of a SQLAlchemy ``Connection`` that turns an ``N`` store into an
``N + 1`` store (DDL through ``sqlalchemy`` constructs, or dialect-checked SQL).

SQLite cannot change a constraint in place: a step that must (version 3) rebuilds the table
from the current model, SQLite's documented way (create the new table, copy the rows, drop the
old one, rename the new one). That needs foreign-key enforcement off, which SQLite allows only
outside a transaction, so `sync.store.engine` turns it off around an upgrade and
`upgrade_schema` runs ``PRAGMA foreign_key_check`` before the upgrade commits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import JSON, Connection, Constraint, MetaData, String, Table, inspect, select, text, update
from sqlalchemy.schema import AddConstraint, CreateIndex, CreateTable, DropConstraint

from sync.store.errors import StoreError
from sync.store.schema import SCHEMA_VERSION, Base, StoreMeta

__all__ = [
    "MIGRATIONS",
    "VERSION_KEY",
    "Migration",
    "check_foreign_keys",
    "read_version",
    "upgrade_schema",
    "write_version",
]

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


def _constraint(table: Table, name: str) -> Constraint:
    return next(c for c in table.constraints if c.name == name)


def _model_copies() -> MetaData:
    """The current model's tables, copied: DDL constructs such as ``AddConstraint`` mark the
    constraint they are given as created apart, so they must never touch the model itself
    (a ``CREATE TABLE`` would then leave it out)."""
    copies = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(copies)
    return copies


def _rebuild_sqlite(conn: Connection, table: Table, copied: list[str]) -> None:
    """Replace SQLite table ``table.name`` by one made from the current model, copying the
    ``copied`` columns; the other columns take their defaults. Foreign keys must be off
    (`upgrade_schema`'s caller sees to it); the indexes are made anew."""
    if conn.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise StoreError(
            f"rebuilding table {table.name} needs SQLite foreign keys off; upgrade with "
            "`autolabel store migrate` (sync.store.upgrade_store), which turns them off"
        )
    copies = _model_copies()
    new = copies.tables[table.name].to_metadata(copies, name=f"{table.name}_v3")
    conn.execute(CreateTable(new))
    columns = ", ".join(copied)
    conn.exec_driver_sql(f"INSERT INTO {new.name} ({columns}) SELECT {columns} FROM {table.name}")
    conn.exec_driver_sql(f"DROP TABLE {table.name}")
    conn.exec_driver_sql(f"ALTER TABLE {new.name} RENAME TO {table.name}")  # its self-reference follows
    for index in copies.tables[table.name].indexes:
        conn.execute(CreateIndex(index))


def _v2_to_v3(conn: Connection) -> None:
    """Version 3 stores tags: ``annotations.shape_type`` may be ``tag`` (the CHECK constraint
    is replaced), and ``pushed_shapes`` gets ``kind`` (``shape`` for every older row) in its
    primary key, since CVAT numbers tags and shapes apart. PostgreSQL alters both tables in
    place; SQLite rebuilds them (`_rebuild_sqlite`)."""
    copies = _model_copies()
    annotations, pushed = copies.tables["annotations"], copies.tables["pushed_shapes"]
    if conn.dialect.name == "sqlite":
        _rebuild_sqlite(conn, annotations, [c.name for c in annotations.columns])
        _rebuild_sqlite(conn, pushed, [c.name for c in pushed.columns if c.name != "kind"])
        return
    check = _constraint(annotations, "ck_annotations_shape_type")
    conn.execute(DropConstraint(check))
    conn.execute(AddConstraint(check))
    if "kind" not in {c["name"] for c in inspect(conn).get_columns("pushed_shapes")}:
        conn.execute(text("ALTER TABLE pushed_shapes ADD COLUMN kind VARCHAR(8) DEFAULT 'shape' NOT NULL"))
        conn.execute(AddConstraint(_constraint(pushed, "ck_pushed_shapes_kind")))
    old_key = inspect(conn).get_pk_constraint("pushed_shapes")["name"]
    conn.execute(text(f'ALTER TABLE pushed_shapes DROP CONSTRAINT "{old_key}"'))
    conn.execute(AddConstraint(pushed.primary_key))


def check_foreign_keys(conn: Connection, where: str) -> None:
    """SQLite only: `StoreError` when ``PRAGMA foreign_key_check`` finds a row whose parent
    is missing (after a table rebuild, with enforcement off); the transaction then rolls back."""
    if conn.dialect.name != "sqlite":
        return
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise StoreError(
            f"store at {where}: the upgrade left {len(broken)} rows without their parent "
            f"(e.g. {table} row {rowid} → {parent}); nothing was changed"
        )


def _v3_to_v4(conn: Connection) -> None:
    """Version 4 records training runs: two new tables (``training_runs``,
    ``training_samples``); nothing else changes."""
    copies = _model_copies()
    for name in ("training_runs", "training_samples"):
        copies.tables[name].create(conn, checkfirst=True)


def _v4_to_v5(conn: Connection) -> None:
    """Version 5 stores embeddings: one new table (``embeddings``) with its indexes; nothing
    else changes."""
    _model_copies().tables["embeddings"].create(conn, checkfirst=True)


MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}
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
    check_foreign_keys(conn, where)
    return target
