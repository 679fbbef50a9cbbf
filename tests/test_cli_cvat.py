"""``autolabel cvat push|pull|status`` as a user runs them: a bad setup or bad input ends with
exit code 2 and a one-line reason (never a traceback, never the password)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sync.store import open_store
from tests.bridge_support import ADMIN, SAMPLES, cvat_env, serve, synthetic_run, write_images

AUTOLABEL = [sys.executable, "-m", "sync.cli"]
DATASET, RUN = "synthetic", "prelabel-1"
WRONG_PASSWORD = "wrong-Secret-pw-7"


@pytest.fixture(scope="module")
def fake():
    yield from serve()


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "store.db"
    store = open_store(f"sqlite:///{path}")
    images = write_images(path.parent / "images", 2)
    synthetic_run(store, images, dataset=DATASET, run=RUN, shapes_per_image=2)
    ds = store.get_or_create_dataset(DATASET)
    store.create_run(ds, "prelabel", name="unfinished")
    return f"sqlite:///{path}"


PUSH = ["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", "cli"]
CASES = {
    "no server": (PUSH, {"CVAT_URL": ""}, "no CVAT server: set CVAT_URL or pass --url"),
    "no credentials": (PUSH, {"CVAT_USERNAME": "", "CVAT_PASSWORD": ""}, "no CVAT credentials"),
    "credentials in the URL": (
        PUSH, {"CVAT_URL": f"https://{ADMIN[0]}:{WRONG_PASSWORD}@cvat.example.com"}, "must not carry credentials"
    ),
    "wrong password": (PUSH, {"CVAT_PASSWORD": WRONG_PASSWORD}, "log in as 'admin': 40"),
    "unreachable": (PUSH, {"CVAT_URL": "http://127.0.0.1:9", "CVAT_RETRIES": "0"}, "connection failed"),
    "unknown dataset": (["cvat", "push", "--dataset", "nope", "--run", RUN, "--task-name", "cli"], {},
                        "no dataset 'nope'"),
    "unknown run": (["cvat", "push", "--dataset", DATASET, "--run", "nope", "--task-name", "cli"], {}, "'nope'"),
    "unfinished run": (["cvat", "push", "--dataset", DATASET, "--run", "unfinished", "--task-name", "cli"], {},
                       "is not finished"),
    "project and ontology": ([*PUSH, "--project", "3", "--ontology", str(SAMPLES / "ontology.yaml")], {},
                             "give --project or --ontology, not both"),
    "unknown assignee": ([*PUSH, "--assignees", "carol"], {}, "no user named 'carol'"),
    "pull without scope": (["cvat", "pull"], {}, "give exactly one of --task ID or --project ID"),
    "pull of an unknown task": (["cvat", "pull", "--task", "999"], {}, "task 999 on http://127.0.0.1"),
}


def test_cli_errors_are_one_line_with_exit_2(fake, store_url, tmp_path):
    # all cases at once: two cores, a few seconds of start-up each
    running = {
        name: subprocess.Popen(AUTOLABEL + args, env=cvat_env(fake, store_url, **env), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (args, env, _) in CASES.items()
    }
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        expected = CASES[name][2]
        assert process.returncode == 2, f"{name}: {out}{err}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err}"
        assert expected in lines[0], f"{name}: {lines[0]}"
        assert "Traceback" not in out + err and WRONG_PASSWORD not in out + err and ADMIN[1] not in out + err
    assert not [t for t in fake.db.tasks.values() if t.name == "cli"]  # nothing was created on the way


def test_status_shows_pushed_jobs_and_what_they_hold_now(fake, store_url, tmp_path):
    env = cvat_env(fake, store_url)
    push = subprocess.run(AUTOLABEL + ["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", "status",
                                       "--segment-size", "1", "--assignees", "alice"],
                          env=env, capture_output=True, check=False, text=True, cwd=tmp_path, timeout=120)
    assert push.returncode == 0, push.stderr
    status = subprocess.run(AUTOLABEL + ["cvat", "status", "--dataset", DATASET], env=env, capture_output=True,
                            check=False, text=True, cwd=tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr
    (task,) = [t for t in fake.db.tasks.values() if t.name == "status"]
    assert f"task {task.id} 'status' · dataset '{DATASET}' · run '{RUN}'" in status.stdout
    rows = [line for line in status.stdout.splitlines() if "alice" in line]
    assert len(rows) == 2, status.stdout  # one per job
    assert all("never" in row and row.endswith(" 2 (2)") for row in rows), status.stdout
    assert all(row.split()[-3] == "2" for row in rows), status.stdout  # pre-labels on the job's frame

    (tmp_path / "map.json").write_text('{"999": "bob"}')
    bad_map = subprocess.run(AUTOLABEL + ["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", "status",
                                          "--assign-map", "map.json"],
                             env=env, capture_output=True, check=False, text=True, cwd=tmp_path, timeout=120)
    assert bad_map.returncode == 2, bad_map.stderr
    last = bad_map.stderr.strip().splitlines()[-1]  # after the progress lines
    assert last == f"error: task {task.id}: assignment map names jobs that are not in the task: [999]"


def test_status_is_readable_at_80_columns(fake, store_url, tmp_path):
    """One line per job at 80 columns: ids, frames, stage, state and numbers whole, never wrapped."""
    from tests.bridge_support import sdk_client

    name = "site-a batch 1 [v2] with a long name for the heading"
    env = cvat_env(fake, store_url, COLUMNS="80")
    fake.add_user("a-rather-long-annotator-username", "long-Secret-pw-4")
    push = subprocess.run(AUTOLABEL + ["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", name,
                                       "--segment-size", "1", "--assignees", "a-rather-long-annotator-username"],
                          env=env, capture_output=True, check=False, text=True, cwd=tmp_path, timeout=120)
    assert push.returncode == 0, push.stderr
    (task,) = [t for t in fake.db.tasks.values() if t.name == name]
    jobs = sorted(j.id for j in fake.db.jobs.values() if j.task_id == task.id)
    admin = sdk_client(fake, *ADMIN)
    admin.jobs.retrieve(jobs[1]).update({"stage": "validation", "state": "in progress"})
    status = subprocess.run(AUTOLABEL + ["cvat", "status", "--dataset", DATASET], env=env, capture_output=True,
                            check=False, text=True, cwd=tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), status.stdout
    assert f"task {task.id} {name!r}" in " ".join(lines)  # the heading may wrap, between words; brackets kept
    rows = {int(line.split()[0]): line for line in lines if line.split() and line.split()[0].isdigit()}
    assert set(jobs) <= set(rows), status.stdout
    for job_id, frame, stage, state in ((jobs[0], 0, "annotation", "new"), (jobs[1], 1, "validation", "in progress")):
        words = rows[job_id].split()
        assert words[:3] == [str(job_id), f"{frame}-{frame}", stage], rows[job_id]
        assert f" {state} " in rows[job_id] and " a-rather-long" in rows[job_id], rows[job_id]  # cut, with "…"
        assert words[-4:] == ["never", "2", "2", "(2)"], rows[job_id]


def test_a_task_deleted_in_cvat_is_an_error_naming_it(fake, store_url, tmp_path):
    from tests.bridge_support import sdk_client

    store = open_store(store_url)
    images = write_images(tmp_path / "gone-images", 2, seed=3)
    synthetic_run(store, images, dataset="gone", run="r1", shapes_per_image=1)
    env = cvat_env(fake, store_url)
    push = subprocess.run(AUTOLABEL + ["cvat", "push", "--dataset", "gone", "--run", "r1", "--task-name",
                                       "site-a batch 1"],
                          env=env, capture_output=True, check=False, text=True, cwd=tmp_path, timeout=120)
    assert push.returncode == 0, push.stderr
    (task,) = [t for t in fake.db.tasks.values() if t.name == "site-a batch 1"]
    sdk_client(fake, *ADMIN).tasks.remove_by_ids([task.id])
    assert task.id not in fake.db.tasks

    expected = (f"task {task.id} ('site-a batch 1') no longer exists on {fake.url} (deleted, or this user cannot "
                "see it); it was pushed from run 'r1' of dataset 'gone'")
    pull = subprocess.run(AUTOLABEL + ["cvat", "pull", "--task", str(task.id)], env=env, capture_output=True,
                          check=False, text=True, cwd=tmp_path, timeout=120)
    assert pull.returncode == 2 and pull.stderr.strip().splitlines() == [f"error: {expected}"], pull.stderr
    assert "pulled" not in pull.stdout
    status = subprocess.run(AUTOLABEL + ["cvat", "status", "--dataset", "gone"], env=env, capture_output=True,
                            check=False, text=True, cwd=tmp_path, timeout=120)
    assert status.returncode == 1 and status.stderr.strip().splitlines() == [f"warning: {expected}"], status.stderr
    # the other tasks of the store are still shown, and the deleted one spoils nothing
    everything = subprocess.run(AUTOLABEL + ["cvat", "status"], env=env, capture_output=True, check=False,
                                text=True, cwd=tmp_path, timeout=120)
    assert everything.returncode == 1 and "'status'" in everything.stdout and expected in everything.stderr
