"""The whole loop on a fake CVAT with the real cvat-sdk: pre-label with tiny models into the
store, push to CVAT, annotators edit through the API, jobs move to acceptance, pull, and the
store holds exactly the human revision — plus reruns, --force and incremental pulls.

The fake's version follows the installed SDK (see `tests.bridge_support`).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from cvat_bridge.client import connect
from sync.cli import app
from sync.pull import pull_jobs
from sync.push import push_run
from sync.store import open_store
from tests.bridge_support import (
    ANNOTATORS,
    ROOT,
    SAMPLES,
    assert_revision_is_the_job,
    copy_sqlite,
    cvat_env,
    edit_job,
    job_of,
    job_shapes,
    label_ids,
    sdk_client,
    serve,
    server_content,
    server_counts,
    settings_for,
    shape_request,
)

DATASET, RUN, TASK = "photos", "tiny-run", "photos-batch-1"
PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg")
AUTOLABEL = [sys.executable, "-m", "sync.cli"]


@pytest.fixture(scope="module")
def prelabelled(tmp_path_factory, tiny_models):
    """A store file holding a pre-label run made by ``autolabel prelabel --dataset --run``
    with the tiny models on three sample photos (boxes only: SAM on CPU would triple the
    time; masks go through the loop in `tests/test_bridge_faults.py`)."""
    db = tmp_path_factory.mktemp("prelabel") / "store.db"
    env = {**tiny_models.environment(), "AUTOLABEL_DB": f"sqlite:///{db}", "HF_HUB_OFFLINE": "1"}
    args = ["prelabel", *(str(SAMPLES / p) for p in PHOTOS), "--ontology", str(SAMPLES / "ontology.yaml"),
            "--dataset", DATASET, "--run", RUN, "--threshold", "0.9"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return db


@pytest.fixture
def store_url(prelabelled, tmp_path):
    """A private copy of the pre-labelled store."""
    path = tmp_path / "store.db"
    copy_sqlite(prelabelled, path)
    return f"sqlite:///{path}"


@pytest.fixture
def fake():
    yield from serve()


def cli(args, env):
    return subprocess.run(
        AUTOLABEL + args, capture_output=True, check=False, text=True, env=env, cwd=ROOT, timeout=300
    )


def prelabel_snapshot(store):
    """Everything the pre-label run holds, per sample, comparable with ==."""
    run = store.get_run(DATASET, RUN)
    snapshot = {}
    for sample_id, det in store.annotations_of(run, masks=True).items():
        snapshot[sample_id] = (
            det.xyxy.tobytes(), det.scores.tobytes(), det.labels.tolist(),
            None if det.masks is None else np.packbits(det.masks).tobytes(),
            {k: [repr(v) for v in det.data[k].tolist()] for k in sorted(det.data)},
        )
    return store.get_run(DATASET, RUN), store.count_annotations(run), snapshot


def test_prelabel_push_edit_accept_pull_stores_exactly_the_human_revision(fake, store_url):
    store = open_store(store_url)
    before = prelabel_snapshot(store)
    assert before[1] > 0

    # push through the CLI, as a user does
    env = cvat_env(fake, store_url)
    result = cli(["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", TASK,
                  "--segment-size", "2", "--assignees", "alice,bob"], env)
    assert result.returncode == 0, result.stderr
    (task,) = fake.db.tasks.values()
    assert task.name == TASK and len(task.data.frames) == len(PHOTOS)
    job1, job2 = job_of(fake, task.id, 0), job_of(fake, task.id, 2)
    users = {u.id: u.username for u in fake.db.users.values()}
    assert (users[job1.assignee_id], users[job2.assignee_id]) == ("alice", "bob")
    link = store.get_cvat_task(settings_for(fake).server, task.id)
    pushed = store.pushed_shapes(link)
    assert len(fake.db.shapes(task.id)) == len(pushed) == before[1]
    assert f"task {task.id}: 2 jobs, {before[1]} pre-labels" in result.stdout

    # alice edits job 1 as an annotator would, with the SDK: move, relabel, delete, add
    ids = label_ids(fake, task.id)
    rectangles = [s for s in job_shapes(fake, job1) if s["type"] == "rectangle"]
    assert len(rectangles) >= 3, "the tiny models should give a few boxes"
    moved, relabelled, deleted = rectangles[0], rectangles[1], rectangles[-1]
    new_label = next(n for n in ("person", "cat", "rocket") if ids[n] != relabelled["label_id"])
    alice = sdk_client(fake, "alice", ANNOTATORS["alice"])
    edit_job(alice, job1.id, "update", [
        shape_request(moved, points=[p + 7.5 for p in moved["points"]], source="manual"),
        shape_request(relabelled, label_id=ids[new_label], source="manual"),
    ])
    edit_job(alice, job1.id, "delete", [shape_request(deleted)])
    edit_job(alice, job1.id, "create", [
        shape_request({"type": "rectangle", "frame": 1, "label_id": ids["rocket"], "points": [10, 12, 60, 90],
                       "occluded": False, "z_order": 0, "source": "manual", "attributes": []})
    ])
    alice.jobs.retrieve(job1.id).update({"stage": "acceptance", "state": "completed"})
    bob = sdk_client(fake, "bob", ANNOTATORS["bob"])
    bob.jobs.retrieve(job2.id).update({"stage": "acceptance", "state": "completed"})

    result = pull_jobs(store, connect(settings_for(fake)), task_id=task.id)
    assert set(result.pulled) == {job1.id, job2.id}

    rev1, = store.revisions_of(store.get_cvat_job(link, job1.id))
    rev2, = store.revisions_of(store.get_cvat_job(link, job2.id))
    stored = assert_revision_is_the_job(store, rev1, fake, job1, pushed)
    assert_revision_is_the_job(store, rev2, fake, job2, pushed)
    assert (rev1.assignee, rev1.stage, rev1.state) == ("alice", "acceptance", "completed")
    assert (rev2.assignee, rev2.stage, rev2.state) == ("bob", "acceptance", "completed")
    assert rev1.parent_run_id == before[0].id

    # the human edits, as the store sees them
    prelabel = store.annotations_of(before[0])
    by_annotation = {int(a): (str(d.labels[i]), d.xyxy[i]) for d in prelabel.values()
                     for i, a in enumerate(d.data["annotation_id"])}
    _, label, _, box, pre_id, _, _ = stored[moved["id"]]
    assert pre_id == pushed[moved["id"]]
    np.testing.assert_allclose(box, by_annotation[pre_id][1] + 7.5, atol=1e-4)
    _, label, _, _, pre_id, _, _ = stored[relabelled["id"]]
    assert label == new_label != by_annotation[pre_id][0]
    assert deleted["id"] not in stored
    (added,) = [v for k, v in stored.items() if k not in pushed]
    assert added[1:3] == ("rocket", "rectangle") and added[4] == -1
    assert {v[6] for v in stored.values()} == {1.0}  # human work carries no scores

    # the pre-label run is untouched
    assert prelabel_snapshot(store) == before


def test_rerunning_push_adds_no_task_job_or_shape(fake, store_url):
    store = open_store(store_url)
    client = connect(settings_for(fake))
    first = push_run(store, client, dataset=DATASET, run_name=RUN, task_name=TASK, segment_size=2,
                     assignees=["alice", "bob"])
    counts, content = server_counts(fake), server_content(fake)
    links = (store.pushed_shapes(first.task_link_id), store.jobs_of(first.task_link_id))
    fake.clear_log()

    again = push_run(store, client, dataset=DATASET, run_name=RUN, task_name=TASK, segment_size=2,
                     assignees=["alice", "bob"])

    assert (again.task_id, again.jobs, again.shapes) == (first.task_id, first.jobs, first.shapes)
    assert again.annotation_requests == 0 and again.skipped_jobs == ()
    assert server_counts(fake) == counts == {"tasks": 1, "jobs": 2, "frames": 3, "shapes": first.shapes,
                                             "tags": 0, "tracks": 0}
    assert server_content(fake) == content
    assert [r for r in fake.requests if r[0] != "GET"] == []  # no write of any kind
    assert (store.pushed_shapes(first.task_link_id), store.jobs_of(first.task_link_id)) == links


def test_push_refuses_a_human_edited_job_unless_forced(fake, store_url):
    store = open_store(store_url)
    client = connect(settings_for(fake))
    first = push_run(store, client, dataset=DATASET, run_name=RUN, task_name=TASK, segment_size=2,
                     assignees=["alice", "bob"])
    pristine = server_content(fake)
    job1 = job_of(fake, first.task_id, 0)
    victim = job_shapes(fake, job1)[0]
    edit_job(sdk_client(fake, "alice", ANNOTATORS["alice"]), job1.id, "delete", [shape_request(victim)])
    edited = server_content(fake)

    env = cvat_env(fake, store_url)
    args = ["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", TASK, "--segment-size", "2"]
    refused = cli(args, env)
    assert refused.returncode == 1, refused.stderr
    assert f"job {job1.id}: a human has changed it; not overwritten (use --force)" in refused.stderr
    assert f"skipped human-edited jobs [{job1.id}]" in refused.stdout
    assert server_content(fake) == edited  # nothing overwritten

    forced = cli([*args, "--force"], env)
    assert forced.returncode == 0, forced.stderr
    assert f"overwrote human-edited jobs [{job1.id}]" in forced.stdout
    assert server_content(fake) == pristine and server_counts(fake)["tasks"] == 1
    pushed = store.pushed_shapes(first.task_link_id)
    assert sorted(pushed) == sorted(s["id"] for s in fake.db.shapes(first.task_id))
    assert len(set(pushed.values())) == first.shapes

    # after the forced push the job is ours again: a plain rerun changes nothing
    again = push_run(store, client, dataset=DATASET, run_name=RUN, task_name=TASK, segment_size=2)
    assert again.skipped_jobs == () and again.annotation_requests == 0


def test_pull_is_incremental_and_keeps_earlier_revisions(fake, store_url):
    store = open_store(store_url)
    client = connect(settings_for(fake))
    pushed = push_run(store, client, dataset=DATASET, run_name=RUN, task_name=TASK, segment_size=2,
                      assignees=["alice", "bob"])
    first = pull_jobs(store, client, task_id=pushed.task_id)
    assert sorted(first.pulled) == sorted(pushed.jobs)
    revisions = {r.name: r for r in store.list_runs(DATASET, kind="human")}

    def content(run):
        return {k: (d.xyxy.tobytes(), d.labels.tolist()) for k, d in store.annotations_of(run).items()}

    old = {name: content(run) for name, run in revisions.items()}

    fake.clear_log()
    nothing = pull_jobs(store, client, task_id=pushed.task_id)
    assert nothing.pulled == () and sorted(nothing.unchanged) == sorted(pushed.jobs)
    assert not [r for r in fake.requests if "annotations" in r[1]]
    assert len(store.list_runs(DATASET, kind="human")) == len(revisions)

    job2 = job_of(fake, pushed.task_id, 2)
    bob = sdk_client(fake, "bob", ANNOTATORS["bob"])
    edit_job(bob, job2.id, "delete", [shape_request(job_shapes(fake, job2)[0])])
    fake.clear_log()
    second = pull_jobs(store, client, task_id=pushed.task_id)

    assert second.pulled == (job2.id,)
    assert [r[1] for r in fake.requests if "annotations" in r[1]] == [f"/api/jobs/{job2.id}/annotations/"]
    link = store.get_cvat_task(settings_for(fake).server, pushed.task_id)
    old2, new2 = store.revisions_of(store.get_cvat_job(link, job2.id))
    assert (old2.name, new2.name) == (f"job{job2.id}-rev1", f"job{job2.id}-rev2")
    assert store.count_annotations(new2) == store.count_annotations(old2) - 1
    assert {name: content(revisions[name]) for name in old} == old  # earlier revisions intact
    assert_revision_is_the_job(store, new2, fake, job2, store.pushed_shapes(link))
