"""Credentials (password, personal access token, the session and token keys the server hands
out) never appear in logs, in the store, in exceptions or in the CLI's output — in normal
runs with DEBUG logging and when things fail."""

from __future__ import annotations

import logging
import socket
import sqlite3
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from cvat_bridge.client import CvatError, CvatSettings, connect
from sync.pull import pull_jobs
from sync.push import push_run
from sync.store import open_store
from tests.bridge_support import (
    ADMIN,
    ROOT,
    SDK_IS_217,
    cvat_env,
    serve,
    settings_for,
    synthetic_run,
    write_images,
)
from tests.fake_cvat import FaultPlan

DATASET, RUN = "synthetic", "prelabel-1"
WRONG_PASSWORD = "wrong-Secret-pw-9"
BAD_TOKEN = "Bad0Secret0Token0Value0That0Is0Long0Enough1"
DEBUG_CLI = (  # the SDK lowers urllib3's and its own loggers to WARNING: keep everything at DEBUG
    "import logging, sys\n"
    "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
    "logging.Logger.setLevel = lambda self, level: None\n"
    "from sync.cli import main\n"
    "sys.argv = ['autolabel', *sys.argv[1:]]\n"
    "main()\n"
)


@pytest.fixture
def fake():
    yield from serve()


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "store.db"
    synthetic_run(open_store(f"sqlite:///{path}"), write_images(tmp_path / "images", 4), shapes_per_image=3)
    return path


def server_secrets(fake) -> list[str]:
    """Every credential the fake handed out or accepted: session keys, CSRF tokens, login
    token keys, personal access tokens."""
    db = fake.db
    with db.lock:
        secrets = [s.key for s in db.sessions.values()] + [s.csrf for s in db.sessions.values()]
        secrets += [u.token_key for u in db.users.values() if u.token_key]
        secrets += [t.value for t in db.access_tokens.values()]
    return [s for s in secrets if s]


def store_dump(path: Path) -> tuple[str, bytes]:
    """Every table of the SQLite store as SQL text, and the raw bytes of its files."""
    with sqlite3.connect(path) as db:
        text = "\n".join(db.iterdump())
    raw = b"".join(Path(f"{path}{s}").read_bytes() for s in ("", "-wal") if Path(f"{path}{s}").exists())
    return text, raw


def failure_text(error: BaseException) -> str:
    return str(error) + "\n" + "".join(traceback.format_exception(error))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_secret_free(secrets, *texts: str, raw: bytes = b"") -> None:
    for secret in secrets:
        assert len(secret) >= 8
        for text in texts:
            assert secret not in text
        assert secret.encode() not in raw


def test_secrets_stay_out_of_logs_store_and_exceptions(fake, store_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "cvat_sdk", "cvat_sdk.api_client"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    monkeypatch.setattr(logging.Logger, "setLevel", lambda self, level: None)  # the SDK sets WARNING
    store = open_store(f"sqlite:///{store_path}")
    settings = settings_for(fake)
    client = connect(settings)
    pushed = push_run(store, client, dataset=DATASET, run_name=RUN, task_name="secret-test", segment_size=2,
                      assignees=["alice"])
    pull_jobs(store, client, task_id=pushed.task_id)
    failures = []
    if SDK_IS_217:  # no personal access tokens before CVAT/cvat-sdk 2.48
        with pytest.raises(CvatError, match="access tokens need cvat-sdk >= 2.48") as refused:
            connect(settings_for(fake, access_token=BAD_TOKEN))
        failures.append(refused.value)
    else:
        token = fake.mint_token(ADMIN[0], name="ci")
        token_client = connect(settings_for(fake, username=None, password=None, access_token=token))
        assert token_client.sdk.users.retrieve_current_user().username == ADMIN[0]
        pull_jobs(store, token_client, task_id=pushed.task_id)
        with pytest.raises(CvatError, match="401") as bad_token:
            connect(settings_for(fake, username=None, password=None, access_token=BAD_TOKEN))
        failures.append(bad_token.value)

    with pytest.raises(CvatError, match="40[01]") as wrong:
        connect(settings_for(fake, password=WRONG_PASSWORD))
    with pytest.raises(CvatError, match="connection failed") as unreachable:
        connect(settings_for(fake, url=f"http://127.0.0.1:{closed_port()}", retries=0))
    fake.set_faults(FaultPlan("500"))
    with pytest.raises(CvatError, match="500") as broken_pull:
        pull_jobs(store, client, task_id=pushed.task_id)
    with pytest.raises(CvatError, match="500") as broken_login:
        connect(settings)
    with pytest.raises(CvatError) as refused_url:
        CvatSettings(url=f"http://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:1", username=ADMIN[0], password=ADMIN[1])
    failures += [wrong.value, unreachable.value, broken_pull.value, broken_login.value, refused_url.value]
    assert "CVAT URL must not carry credentials" in str(refused_url.value)

    secrets = [ADMIN[1], WRONG_PASSWORD, BAD_TOKEN, *server_secrets(fake)]
    assert len(secrets) >= 5
    assert any(r.name.startswith("urllib3") and "/api/auth/login" in r.getMessage() for r in caplog.records)
    dump, raw = store_dump(store_path)
    assert f"job{pushed.jobs[0]}-rev1" in dump  # the dump does hold the store
    assert_secret_free(
        secrets, caplog.text, dump, repr(settings), str(settings), *(failure_text(e) for e in failures), raw=raw
    )
    assert repr(settings).count("password") == 0 and "access_token" not in repr(settings)


def test_cli_output_with_debug_logging_holds_no_secret(fake, store_path):
    def autolabel(*args: str, **env: str):
        result = subprocess.run(
            [sys.executable, "-c", DEBUG_CLI, *args], capture_output=True, check=False, text=True, cwd=ROOT,
            env=cvat_env(fake, f"sqlite:///{store_path}", **env), timeout=300,
        )
        return result, result.stdout + result.stderr

    push, push_out = autolabel("cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", "cli-secrets",
                               "--assignees", "bob")
    assert push.returncode == 0, push_out
    assert "DEBUG" in push_out and "/api/auth/login" in push_out  # the SDK's requests were logged
    task_id = next(iter(fake.db.tasks))
    outputs = [push_out]
    if SDK_IS_217:
        pull, out = autolabel("cvat", "pull", "--task", str(task_id))
    else:
        token = fake.mint_token(ADMIN[0], name="cli")
        pull, out = autolabel("cvat", "pull", "--task", str(task_id), CVAT_USERNAME="", CVAT_PASSWORD="",
                              CVAT_ACCESS_TOKEN=token)
    assert pull.returncode == 0, out
    outputs.append(out)
    status, out = autolabel("cvat", "status")
    assert status.returncode == 0 and "cli-secrets" in out, out
    outputs.append(out)
    wrong, out = autolabel("cvat", "pull", "--task", str(task_id), CVAT_PASSWORD=WRONG_PASSWORD)
    assert wrong.returncode == 2 and "40" in out, out
    outputs.append(out)
    fake.set_faults(FaultPlan("500", methods={"GET"}, paths=r"^/api/jobs"))
    broken, out = autolabel("cvat", "pull", "--task", str(task_id), CVAT_RETRIES="1")
    assert broken.returncode == 2 and "500" in out, out
    outputs.append(out)

    dump, raw = store_dump(store_path)
    assert_secret_free([ADMIN[1], WRONG_PASSWORD, *server_secrets(fake)], *outputs, dump, raw=raw)
