"""Opening a store: where it is, connecting, creating or checking its schema.

Where the store is, in order: the ``url_or_path`` argument, else the ``AUTOLABEL_DB``
environment variable, else ``autolabel.db`` in the working directory. Either may be

- a SQLAlchemy URL: ``sqlite:///path/to/labels.db`` or
  ``postgresql://user@host:5432/dbname`` (psycopg2 unless another driver is named, as in
  ``postgresql+psycopg://``; PostgreSQL needs ``psycopg2-binary``;
  a PostgreSQL schema other than ``public`` can be chosen with
  ``?options=-csearch_path%3Dmyschema``), or
- a plain file path, which means SQLite.

Only SQLite and PostgreSQL are supported. SQLite connections run with ``foreign_keys=ON``,
``journal_mode=WAL`` (files), ``synchronous=NORMAL`` and a 30 s ``busy_timeout``, so several
processes can share one file.

A fresh database gets the tables and is stamped with `sync.store.schema.SCHEMA_VERSION`.
An existing store at another version raises `StoreError`: an older one can be upgraded with
``open_store(..., upgrade=True)`` or `upgrade_store` (the ``autolabel store migrate``
command); a newer one needs a newer autolabel. Creating and upgrading the schema are safe
when several processes open the same store at once: the first writes it under a lock (SQLite
``BEGIN IMMEDIATE``, a PostgreSQL advisory lock keyed by the schema) and the others, waiting
on that lock, then find it done; opening a current store takes no lock.

Passwords never appear in messages, logs or ``repr``: URLs are shown with
``render_as_string(hide_password=True)`` and driver messages have the password masked.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import URL, Connection, Engine, create_engine, event, insert, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from sync.store.api import Store
from sync.store.errors import StoreError
from sync.store.migrations import VERSION_KEY, read_version, upgrade_schema
from sync.store.schema import SCHEMA_VERSION, Base, StoreMeta

__all__ = ["DEFAULT_DB", "ENV_VAR", "open_store", "resolve_url", "upgrade_store"]

log = logging.getLogger(__name__)

ENV_VAR = "AUTOLABEL_DB"
"""Environment variable naming the store (a URL or a SQLite file path)."""

DEFAULT_DB = "autolabel.db"
"""The SQLite file used when neither an argument nor ``AUTOLABEL_DB`` names a store."""

SUPPORTED_BACKENDS = ("sqlite", "postgresql")

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another process's lock before failing."""

CONNECT_TIMEOUT_S = 10
"""PostgreSQL (psycopg2) connection timeout unless the URL sets ``connect_timeout``."""


def resolve_url(url_or_path: str | os.PathLike[str] | None = None) -> URL:
    """The store's SQLAlchemy URL: argument → ``AUTOLABEL_DB`` → ``./autolabel.db``.

    A string with ``://`` is a URL, anything else a SQLite file path. `StoreError` for an
    unparsable URL (the text is not repeated: it may hold a password) or an unsupported
    backend.
    """
    source = "argument"
    if url_or_path is None:
        url_or_path = os.environ.get(ENV_VAR) or None
        source = ENV_VAR
    if url_or_path is None:
        url_or_path, source = DEFAULT_DB, "default"
    if isinstance(url_or_path, os.PathLike) or "://" not in str(url_or_path):
        path = Path(os.fspath(url_or_path)).expanduser()
        if not str(path).strip():
            raise StoreError(f"the store path ({source}) is empty")
        return URL.create("sqlite", database=str(path))
    try:
        url = make_url(str(url_or_path))
    except (ArgumentError, ValueError):
        # SQLAlchemy's message quotes the whole string, password included: do not chain it.
        raise StoreError(
            f"the store URL ({source}) is not a valid SQLAlchemy URL such as "
            "sqlite:///labels.db or postgresql+psycopg2://user@host/db (not shown: it may hold a password)"
        ) from None
    if url.drivername in ("postgresql", "postgres"):
        # SQLAlchemy 2.1 defaults to psycopg 3; the package depends on psycopg2 (extra "postgres").
        url = url.set(drivername="postgresql+psycopg2")
    backend = url.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise StoreError(f"the store at {_display(url)} uses {backend!r}; supported: {', '.join(SUPPORTED_BACKENDS)}")
    return url


def _display(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _mask(text: str, url: URL) -> str:
    """``text`` with the URL's password (and its percent-encoded form) replaced by ``***``."""
    password = url.password
    if password:
        from urllib.parse import quote

        for form in {str(password), quote(str(password), safe="")}:
            text = text.replace(form, "***")
    return text


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _make_engine(url: URL) -> Engine:
    shown = _display(url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            parent = Path(database).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"cannot create the store at {shown}: directory {parent} does not exist")
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {}
    if url.get_driver_name() == "psycopg2" and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S  # an unreachable host fails, not hangs
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except (NoSuchModuleError, ImportError) as err:
        raise StoreError(
            f"cannot open the store at {shown}: the database driver is missing "
            f"({type(err).__name__}: {_mask(str(err), url)}); for PostgreSQL install "
            "autolabel-cvat[postgres] (psycopg2-binary)"
        ) from None


def _found_version(conn: Connection, shown: str) -> int | None:
    """The store's schema version, or None when the database has no store yet.

    `StoreError` when the database has tables named like the store's but no version stamp.
    """
    tables = set(inspect(conn).get_table_names())
    if StoreMeta.__tablename__ in tables:
        return read_version(conn, shown)
    present = sorted(tables & set(Base.metadata.tables))
    if present:
        raise StoreError(
            f"the database at {shown} has tables named like the store's ({', '.join(present)}) "
            "but no schema version: it is not an autolabel store, or it is damaged"
        )
    return None


def _check_version(version: int | None, shown: str, *, create: bool, upgrade: bool) -> bool:
    """Whether the store needs writing (creating or upgrading); `StoreError` when it may not be."""
    if version is None:
        if not create:
            raise StoreError(f"there is no store at {shown}")
        return True
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store at {shown} has schema version {version}, newer than the {SCHEMA_VERSION} "
            "this autolabel reads: upgrade autolabel"
        )
    if version < SCHEMA_VERSION and not upgrade:
        raise StoreError(
            f"the store at {shown} has schema version {version}; this autolabel needs "
            f"{SCHEMA_VERSION}: upgrade it with `autolabel store migrate` "
            "(sync.store.open_store(..., upgrade=True)) after a backup"
        )
    return version < SCHEMA_VERSION


def _lock_schema(conn: Connection) -> None:
    """Begin the connection's transaction holding the store's schema lock, so that one
    process at a time creates or upgrades the schema (the others wait, then find it done).

    SQLite: ``BEGIN IMMEDIATE`` (the database's write lock; waits up to the busy timeout).
    PostgreSQL: a transaction-scoped advisory lock keyed by the current schema, released at
    commit or rollback.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    schema = conn.execute(text("SELECT current_schema()")).scalar() or ""
    digest = hashlib.sha256(f"autolabel-store-schema:{schema}".encode()).digest()
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int.from_bytes(digest[:8], "big", signed=True)})


def _prepare(engine: Engine, url: URL, *, create: bool, upgrade: bool) -> int | None:
    """Create or check the schema; returns the schema version found (None: created now).

    A current store is only read. Creating or upgrading happens under `_lock_schema`, after
    looking again: of several processes opening a new store at once, one creates it and the
    others find it made.
    """
    shown = _display(url)
    with engine.connect() as conn:
        version = _found_version(conn, shown)
    if not _check_version(version, shown, create=create, upgrade=upgrade):
        return version
    with engine.connect() as conn, _foreign_keys_off(conn, version is not None):
        _lock_schema(conn)
        version = _found_version(conn, shown)
        if not _check_version(version, shown, create=create, upgrade=upgrade):
            conn.rollback()
        elif version is None:
            Base.metadata.create_all(conn)
            conn.execute(insert(StoreMeta), [{"key": VERSION_KEY, "value": str(SCHEMA_VERSION)}])
            conn.commit()
            log.info("created a store at %s (schema version %d)", shown, SCHEMA_VERSION)
        else:
            upgrade_schema(conn, version, shown, target=SCHEMA_VERSION)
            conn.commit()
            log.info("upgraded the store at %s from schema version %d to %d", shown, version, SCHEMA_VERSION)
    return version


@contextlib.contextmanager
def _foreign_keys_off(conn: Connection, upgrading: bool) -> Iterator[None]:
    """SQLite, when ``upgrading``: foreign-key enforcement off on ``conn`` (before its
    transaction begins: SQLite ignores the pragma inside one) and back on afterwards, so a
    migration may rebuild a table others refer to; `sync.store.migrations.upgrade_schema`
    checks the keys before committing. Anything else: nothing to do."""
    if not upgrading or conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()


def _open(url_or_path: str | os.PathLike[str] | None, *, create: bool, upgrade: bool) -> tuple[Store, int | None]:
    """`open_store`, also returning the schema version the store had (None: created now)."""
    url = resolve_url(url_or_path)
    shown = _display(url)
    if (
        not create
        and url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not Path(url.database).expanduser().exists()
    ):
        raise StoreError(f"there is no store at {shown}")
    engine = _make_engine(url)
    try:
        found = _prepare(engine, url, create=create, upgrade=upgrade)
    except StoreError:
        engine.dispose()
        raise
    except DBAPIError as err:
        engine.dispose()
        reason = _mask(str(err.orig).strip().splitlines()[0] if str(err.orig).strip() else type(err.orig).__name__, url)
        message = f"cannot open the store at {shown}: {reason}"
        if url.password and url.password in str(err):
            raise StoreError(message) from None  # the driver's own message holds the password
        raise StoreError(message) from err
    return Store(engine, shown), found


def open_store(
    url_or_path: str | os.PathLike[str] | None = None,
    *,
    create: bool = True,
    upgrade: bool = False,
) -> Store:
    """Open (and, when new and ``create``, initialize) the label store.

    ``url_or_path``: see the module docstring (None → ``AUTOLABEL_DB`` → ``./autolabel.db``).
    ``create=False`` refuses to make a new store (for commands that only read).
    ``upgrade=True`` migrates an older schema to the current one.

    Several processes may open (and create, or upgrade) the same store at once: one of them
    writes the schema, under a lock, and the others find it done.

    Raises `StoreError` with the URL (password hidden) when the URL is invalid, the driver is
    missing, the server is unreachable or refuses the login, the SQLite directory does not
    exist, or the schema version differs.
    """
    return _open(url_or_path, create=create, upgrade=upgrade)[0]


def upgrade_store(url_or_path: str | os.PathLike[str] | None = None) -> tuple[Store, int]:
    """Open an existing store, upgrading an older schema to `SCHEMA_VERSION` (the
    ``autolabel store migrate`` command); returns the store and the version it had before.

    `StoreError` when there is no store there (none is created), when its schema is newer than
    this autolabel's, or when a migration step fails (the store is then left as it was).
    """
    store, found = _open(url_or_path, create=False, upgrade=True)
    return store, SCHEMA_VERSION if found is None else found
