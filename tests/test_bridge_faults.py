"""Push and pull under injected faults lose and duplicate nothing; a pull killed with
SIGKILL and rerun gives the store an uninterrupted pull gives.

Every scenario runs the same push (images, masks and boxes, several annotation chunks per
job, assignments) and pull as a fault-free baseline and compares what the server and the
store hold: task, jobs, frames, every shape (frame, label, type, points), the store's
shape-id links and the human revisions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cvat_bridge.client import connect
from sync.pull import pull_jobs
from sync.push import push_run
from sync.store import open_store
from tests.bridge_support import (
    ROOT,
    assert_revision_is_the_job,
    copy_sqlite,
    cvat_env,
    revision_content,
    server_content,
    server_counts,
    settings_for,
    start_fake,
    synthetic_run,
    write_images,
)
from tests.fake_cvat import FaultPlan

DATASET, RUN, TASK = "synthetic", "prelabel-1", "faults"
IMAGES, SHAPES_PER_IMAGE, SEGMENT = 6, 5, 2
CHUNK_BYTES = 1500  # several PATCH action=create chunks per job
WRITES = frozenset({"POST", "PUT", "PATCH"})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), IMAGES)


def make_store(path, images):
    """A store with the synthetic run; sample ids run against the file names (frames must
    follow the samples, not the names)."""
    store = open_store(f"sqlite:///{path}")
    synthetic_run(store, images[::-1], dataset=DATASET, run=RUN, shapes_per_image=SHAPES_PER_IMAGE, masks=True)
    return store


def push_and_pull(store, fake, **settings):
    client = connect(settings_for(fake, **settings))
    pushed = push_run(store, client, dataset=DATASET, run_name=RUN, task_name=TASK, segment_size=SEGMENT,
                      assignees=["alice", "bob"], max_request_bytes=CHUNK_BYTES)
    pulled = pull_jobs(store, client, task_id=pushed.task_id)
    return pushed, pulled


def snapshot(store, fake, pushed):
    """What the server and the store hold, without the ids a retried PUT may change."""
    links = store.pushed_shapes(pushed.task_link_id)
    revisions = {key: [content for _, content in revs] for key, revs in revision_content(store, DATASET).items()}
    jobs = [(j.job_id, j.start_frame, j.stop_frame, j.assignee) for j in store.jobs_of(pushed.task_link_id)]
    return {
        "counts": server_counts(fake),
        "frames": [[f.name for f in t.data.frames] if t.data else None for t in fake.db.tasks.values()],
        "content": server_content(fake),
        "assignees": sorted((j.start_frame, j.assignee_id) for j in fake.db.jobs.values()),
        "links": (len(links), sorted(links.values()) == sorted(set(links.values()))),
        "linked_shapes": sorted(links) == sorted(s["id"] for s in fake.db.shapes(pushed.task_id)),
        "jobs": jobs,
        "revisions": revisions,
        "result": (pushed.jobs, pushed.shapes, pushed.skipped_jobs, sorted(pushed.assignments.values())),
    }


@pytest.fixture(scope="module")
def baseline(images, tmp_path_factory):
    """The fault-free push and pull, checked shape by shape."""
    store = make_store(tmp_path_factory.mktemp("baseline") / "store.db", images)
    fake = start_fake()
    try:
        pushed, pulled = push_and_pull(store, fake)
        assert pushed.annotation_requests > len(pushed.jobs)  # chunks were PATCHed
        assert sorted(pulled.pulled) == sorted(pushed.jobs) and pushed.shapes == IMAGES * SHAPES_PER_IMAGE
        (task,) = fake.db.tasks.values()
        uris = [s.uri for s in store.samples(DATASET)]  # by sample id
        assert [f.name for f in task.data.frames] == [Path(u).name for u in uris] != sorted(Path(u).name for u in uris)
        pushes = store.pushed_shapes(pushed.task_link_id)
        for job in fake.db.jobs.values():
            (revision,) = store.revisions_of(store.get_cvat_job(pushed.task_link_id, job.id))
            stored = assert_revision_is_the_job(store, revision, fake, job, pushes)
            assert {v[2] for v in stored.values()} == {"mask", "rectangle"}
        return snapshot(store, fake, pushed)
    finally:
        fake.stop()
        fake.raise_errors()


# A plan firing on every n-th write with n <= 3 would hit the 3-POST data upload (Upload-Start,
# Upload-Multiple, Upload-Finish) in every attempt, forever; such plans get a ``limit``.
SCENARIOS = {
    "502 on every 3rd GET, 500 after every 4th": (
        [FaultPlan("502", every=3, methods={"GET"}), FaultPlan("500", every=4, methods={"GET"}, when="after")],
        {},
    ),
    "500 answers lost after every 4th write": ([FaultPlan("500", every=4, methods=WRITES, when="after")], {}),
    "502 before and 503 after writes, 504 on GETs": (
        [
            FaultPlan("502", every=5, methods=WRITES),
            FaultPlan("503", every=3, methods=WRITES, when="after", limit=4),
            FaultPlan("504", every=4, methods={"GET"}),
        ],
        {},
    ),
    "connection reset on every 5th request": ([FaultPlan("reset", every=5)], {}),
    "connection reset after every 3rd write": ([FaultPlan("reset", every=3, methods=WRITES, when="after")], {}),
    "timeouts before and after": (
        [
            FaultPlan("timeout", every=4, methods={"GET"}, delay=1.0, limit=4),
            FaultPlan("timeout", every=3, methods=WRITES, delay=1.0, when="after", limit=4),
        ],
        {"read_timeout": 0.25},
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_push_and_pull_under_faults_lose_and_duplicate_nothing(name, images, baseline, tmp_path):
    plans, settings = SCENARIOS[name]
    store = make_store(tmp_path / "store.db", images)
    fake = start_fake(faults=plans)
    try:
        pushed, pulled = push_and_pull(store, fake, **settings)
        fired = [stats["fired"] for stats in fake.faults.plan_stats()]
        assert all(fired), f"every plan must fire: {fired}"
        assert snapshot(store, fake, pushed) == baseline
        assert sorted(pulled.pulled) == sorted(pushed.jobs)
    finally:
        fake.stop()
    fake.raise_errors()


DATA = r"^/api/tasks/\d+/data/?$"
TASKS = r"^/api/tasks/?$"
TARGETED = {  # plan, and whether the images go through the SDK's chunked upload
    "task creation answer lost": (FaultPlan("502", methods={"POST"}, paths=TASKS, when="after", limit=1), False),
    "task creation refused twice": (FaultPlan("503", methods={"POST"}, paths=TASKS, limit=2), False),
    "one-shot data upload answer lost": (FaultPlan("502", methods={"POST"}, paths=DATA, when="after", limit=1), False),
    "one-shot data upload reset": (FaultPlan("reset", methods={"POST"}, paths=DATA, limit=1), False),
    # chunked: Upload-Start, Upload-Multiple, Upload-Finish
    "Upload-Finish answer lost": (
        FaultPlan("502", every=3, methods={"POST"}, paths=DATA, when="after", limit=1), True
    ),
    "Upload-Multiple answer lost": (
        FaultPlan("500", every=2, methods={"POST"}, paths=DATA, when="after", limit=1), True
    ),
    "Upload-Multiple reset": (FaultPlan("reset", every=2, methods={"POST"}, paths=DATA, limit=1), True),
    "annotation chunk answers lost": (
        FaultPlan("500", methods={"PATCH"}, paths=r"/annotations", when="after", limit=3), False
    ),
    "annotation chunk refused": (FaultPlan("502", methods={"PATCH"}, paths=r"/annotations", limit=3), False),
    "job assignment answers lost": (
        FaultPlan("502", methods={"PATCH"}, paths=r"^/api/jobs/\d+/?$", when="after", limit=2), False
    ),
}


@pytest.mark.parametrize("name", list(TARGETED))
def test_each_non_idempotent_step_is_reconciled(name, images, baseline, tmp_path, monkeypatch):
    plan, chunked = TARGETED[name]
    if chunked:
        monkeypatch.setattr("cvat_bridge.tasks.ONE_SHOT_BYTES", 0)
    store = make_store(tmp_path / "store.db", images)
    fake = start_fake(faults=plan)
    try:
        pushed, _ = push_and_pull(store, fake)
        assert fake.faults.plan_stats()[0]["fired"] == plan.limit
        data_posts = [r for r in fake.request_log if r.method == "POST" and "/data" in r.path]
        assert len(data_posts) >= 3 if chunked else len(data_posts) <= 2  # start, files, finish / one shot
        assert snapshot(store, fake, pushed) == baseline
    finally:
        fake.stop()
    fake.raise_errors()


def test_a_pull_killed_halfway_and_rerun_gives_the_uninterrupted_store(images, tmp_path):
    """``autolabel cvat pull`` in a subprocess, SIGKILLed once the first job is stored."""
    fake = start_fake()
    try:
        killed_path, clean_path = tmp_path / "killed.db", tmp_path / "clean.db"
        store = make_store(killed_path, images)
        client = connect(settings_for(fake))
        pushed = push_run(store, client, dataset=DATASET, run_name=RUN, task_name=TASK, segment_size=1)
        assert len(pushed.jobs) == IMAGES
        copy_sqlite(killed_path, clean_path)  # same links, nothing pulled yet
        pull = [sys.executable, "-m", "sync.cli", "cvat", "pull", "--task", str(pushed.task_id)]

        fake.set_faults(FaultPlan("slow", methods={"GET"}, paths=r"^/api/jobs/\d+/annotations", delay=0.6))
        process = subprocess.Popen(pull, env=cvat_env(fake, f"sqlite:///{killed_path}"), cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watcher = open_store(f"sqlite:///{killed_path}")
        deadline = time.monotonic() + 120
        while not watcher.list_runs(DATASET, kind="human"):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the pull stored nothing"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        partial = len(watcher.list_runs(DATASET, kind="human"))
        assert 1 <= partial < IMAGES, "the kill must land halfway"

        fake.set_faults(None)
        rerun = subprocess.run(pull, env=cvat_env(fake, f"sqlite:///{killed_path}"), cwd=ROOT,
                               capture_output=True, check=False, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert f"pulled {IMAGES - partial} jobs" in rerun.stdout
        clean = subprocess.run(pull, env=cvat_env(fake, f"sqlite:///{clean_path}"), cwd=ROOT,
                               capture_output=True, check=False, text=True, timeout=300)
        assert clean.returncode == 0, clean.stderr

        killed_store, clean_store = open_store(f"sqlite:///{killed_path}"), open_store(f"sqlite:///{clean_path}")
        assert revision_content(killed_store, DATASET) == revision_content(clean_store, DATASET)
        for job_id in pushed.jobs:
            a = killed_store.get_cvat_job(pushed.task_link_id, job_id)
            b = clean_store.get_cvat_job(pushed.task_link_id, job_id)
            assert len(killed_store.revisions_of(a)) == 1
            assert (a.last_pulled_updated_date, a.stage, a.state) == (b.last_pulled_updated_date, b.stage, b.state)
    finally:
        fake.stop()
    fake.raise_errors()
