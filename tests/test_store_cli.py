"""``autolabel store migrate`` and ``autolabel store info``, run as a user runs them (real
processes, the store named by ``AUTOLABEL_DB``), on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from sqlalchemy import create_engine, inspect

from sync.store import SCHEMA_VERSION, SampleIn, open_store, resolve_url
from sync.store.migrations import read_version
from tests.conftest import ROOT
from tests.test_store import SECRET, pg_admin_url, pg_url, stamp, store_url  # noqa: F401 (fixtures)

# ``autolabel`` itself, with one change made before it starts: the last migration step is a
# test step that adds a table, so a store stamped one version back has something to upgrade.
WITH_TEST_MIGRATION = (
    "import sys\n"
    "from sqlalchemy import text\n"
    "from sync.store.migrations import MIGRATIONS\n"
    "from sync.store.schema import SCHEMA_VERSION\n"
    "MIGRATIONS[SCHEMA_VERSION - 1] = lambda conn: conn.execute(text('CREATE TABLE migrated_here (id INTEGER)'))\n"
    "from sync.cli import main\n"
    "sys.argv = ['autolabel', *sys.argv[1:]]\n"
    "main()\n"
)


def autolabel(args: list[str], db: str, *, migration: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTOLABEL_DB": db, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", WITH_TEST_MIGRATION] if migration else [sys.executable, "-m", "sync.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def version_of(url: str) -> int:
    """The stamped schema version, read without `open_store` (which refuses other versions)."""
    engine = create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return read_version(conn, url)
    finally:
        engine.dispose()


def test_the_old_schema_message_names_a_command_that_upgrades_the_store(store_url):
    with open_store(store_url) as store:
        store.get_or_create_dataset("kept")
        stamp(store, SCHEMA_VERSION - 1)

    refused = autolabel(["store", "info"], store_url)
    assert refused.returncode == 2
    message = one_line(refused.stderr)
    assert f"schema version {SCHEMA_VERSION - 1}; this autolabel needs {SCHEMA_VERSION}" in message
    command = re.search(r"`autolabel (store migrate)`", message).group(1).split()

    upgraded = autolabel(command, store_url, migration=True)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip().endswith(f"from schema version {SCHEMA_VERSION - 1} to {SCHEMA_VERSION}")
    assert version_of(store_url) == SCHEMA_VERSION
    with open_store(store_url) as store:
        assert "migrated_here" in inspect(store.engine).get_table_names()
        assert [d.name for d in store.list_datasets()] == ["kept"]

    again = autolabel(command, store_url, migration=True)
    assert again.returncode == 0, again.stderr
    assert f"at schema version {SCHEMA_VERSION} already: nothing to do" in again.stdout


def test_migrate_refuses_a_newer_store_and_a_missing_one(store_url, tmp_path):
    with open_store(store_url) as store:
        stamp(store, SCHEMA_VERSION + 1)
    newer = autolabel(["store", "migrate"], store_url)
    assert newer.returncode == 2
    assert f"schema version {SCHEMA_VERSION + 1}, newer than the {SCHEMA_VERSION}" in one_line(newer.stderr)
    assert "upgrade autolabel" in newer.stderr and "Traceback" not in newer.stderr
    assert version_of(store_url) == SCHEMA_VERSION + 1

    missing = tmp_path / "none.db"
    for command in (["store", "migrate"], ["store", "info"]):
        result = autolabel(command, str(missing))
        assert result.returncode == 2 and "there is no store at sqlite:///" in one_line(result.stderr)
    assert not missing.exists()  # neither command creates a store


def test_info_counts_what_the_store_holds_and_hides_the_password(pg_url):
    url = pg_url.set(password=SECRET).render_as_string(hide_password=False)  # trust authentication ignores it
    with open_store(url) as store:
        ds = store.get_or_create_dataset("site")
        store.add_samples(ds, [SampleIn(f"img/{i}.jpg", 8, 6) for i in range(3)])
        store.create_run(ds, "import")
        store.create_run(ds, "prelabel")
    result = autolabel(["store", "info"], url)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("store: postgresql+psycopg2://postgres:***@") and lines[0].endswith(
        f"(postgresql, schema version {SCHEMA_VERSION})"
    )
    counts = dict(re.fullmatch(r"\s+(.+?):\s+(\d+)", line).groups() for line in lines[1:])
    assert counts == {
        "datasets": "1", "samples": "3", "runs: prelabel": "1", "runs: human": "0", "runs: import": "1",
        "annotations": "0", "CVAT tasks": "0", "CVAT jobs": "0", "training runs": "0", "embeddings": "0",
    }


def test_store_help_lists_both_commands():
    result = autolabel(["store", "--help"], "unused.db")
    assert result.returncode == 0, result.stderr
    assert "migrate" in result.stdout and "info" in result.stdout
