"""Several processes opening one store at the same moment (SQLite file and PostgreSQL schema).

Real processes, started together: each imports the store, says it is ready, waits for a start
file, then opens the store. Exactly one of them writes the schema (creates it, or upgrades an
older one) and every one succeeds.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import inspect, select

from sync.store import SCHEMA_VERSION, open_store
from sync.store.schema import Base, StoreMeta
from tests.conftest import ROOT
from tests.test_store import pg_admin_url, stamp, store_url  # noqa: F401 (fixtures)

PROCESSES = 4

CHILD = r"""
import logging, os, sys, time
from sqlalchemy import text
from sync.store import open_store
from sync.store.migrations import MIGRATIONS
from sync.store.schema import SCHEMA_VERSION

url, go, upgrade = sys.argv[1], sys.argv[2], sys.argv[3] == "upgrade"

def step(conn):  # slow (the others arrive meanwhile), and running it twice would fail
    time.sleep(0.5)
    conn.execute(text("CREATE TABLE upgraded_once (id INTEGER)"))


if upgrade:
    MIGRATIONS[SCHEMA_VERSION - 1] = step
messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append(record.getMessage())
logging.getLogger("sync.store.engine").addHandler(handler)
logging.getLogger("sync.store.engine").setLevel(logging.INFO)
print("ready", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.001)
with open_store(url, upgrade=upgrade) as store:
    store.list_datasets()
print(" ".join(m.split()[0] for m in messages) or "opened", flush=True)  # "created" / "upgraded"
"""


def open_at_once(url: str, go, mode: str) -> list[str]:
    """Start ``PROCESSES`` processes that open ``url`` together; what each one did."""
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, url, str(go), mode], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.communicate()[1]
        go.touch()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [stderr for proc, (_, stderr) in zip(procs, outputs) if proc.returncode != 0]
    assert not failed, failed[0]
    return sorted(stdout.strip() for stdout, _ in outputs)


def stored_meta(url: str) -> list[tuple[str, str]]:
    with open_store(url, create=False) as store, store.engine.connect() as conn:
        assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
        return [tuple(row) for row in conn.execute(select(StoreMeta.key, StoreMeta.value))]


def test_processes_creating_a_new_store_at_once_all_succeed(store_url, tmp_path):
    done = open_at_once(store_url, tmp_path / "go", "create")
    assert done == ["created"] + ["opened"] * (PROCESSES - 1)
    assert stored_meta(store_url) == [("schema_version", str(SCHEMA_VERSION))]


def test_processes_upgrading_an_older_store_at_once_all_succeed(store_url, tmp_path):
    with open_store(store_url) as store:
        stamp(store, SCHEMA_VERSION - 1)
    done = open_at_once(store_url, tmp_path / "go", "upgrade")
    assert done == ["opened"] * (PROCESSES - 1) + ["upgraded"]
    assert stored_meta(store_url) == [("schema_version", str(SCHEMA_VERSION))]
    with open_store(store_url) as store:
        assert "upgraded_once" in inspect(store.engine).get_table_names()


@pytest.mark.parametrize("create", [True, False])
def test_opening_a_current_store_takes_no_schema_lock(tmp_path, create):
    """A current store is only read: it opens while another connection holds the write lock."""
    import sqlite3

    path = tmp_path / "store.db"
    open_store(path).close()
    with sqlite3.connect(path, timeout=0.1) as holder:
        holder.execute("BEGIN IMMEDIATE")
        with open_store(path, create=create) as store:
            assert store.list_datasets() == []
        holder.rollback()
