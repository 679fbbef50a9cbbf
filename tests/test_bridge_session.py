"""The bridge owns cvat-sdk: `connect` gives a `CvatSession`, the bridge hands `sync` its own
frozen values, and one retry layer (the transport) honours the settings.

Runs against the fake CVAT of the installed SDK (2.54 with cvat-sdk 2.8x, 2.17 with
``PYTHONPATH=.cache/sdk-2.17``).
"""

from __future__ import annotations

import ast
import dataclasses

import pytest

from cvat_bridge.annotations import job_annotations, upload_job_shapes
from cvat_bridge.api import call
from cvat_bridge.client import CvatError, CvatSession, CvatSettings, connect
from cvat_bridge.jobs import list_jobs, set_job
from cvat_bridge.tasks import (
    FrameInfo,
    Resources,
    TaskInfo,
    TaskMeta,
    ensure_task,
    frame_bytes,
    get_task,
    read_task,
    task_labels,
    task_meta,
)
from tests.bridge_support import ADMIN, FAKE_VERSION, ROOT, serve, settings_for, write_images
from tests.fake_cvat import FaultPlan

LABELS = [{"name": "car", "type": "rectangle", "attributes": []}]
JOB_ANNOTATIONS = r"^/api/jobs/\d+/annotations"


@pytest.fixture(scope="module")
def fake():
    yield from serve()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), 3, width=40, height=30)


@pytest.fixture(scope="module")
def task(fake, images) -> TaskInfo:
    session = connect(settings_for(fake))
    return ensure_task(session, "session-task", Resources("local", tuple(map(str, images))), labels=LABELS,
                       segment_size=2)


@pytest.fixture
def clean_faults(fake):
    fake.set_faults(None)
    yield
    fake.set_faults(None)


# ---------------------------------------------------------------------------- typed handles
def test_connect_gives_a_session_with_the_server_and_user(fake, clean_faults):
    session = connect(settings_for(fake))
    assert isinstance(session, CvatSession)
    assert session.server == fake.url.rstrip("/") and session.username == ADMIN[0]
    assert session.server_version.startswith(FAKE_VERSION)
    assert ADMIN[1] not in repr(session)


def test_tasks_come_back_as_frozen_values(fake, task, images, clean_faults):
    session = connect(settings_for(fake))
    assert task == TaskInfo(task.id, "session-task", 3, None)
    assert read_task(session, task.id) == task == get_task(session, task.id)
    assert get_task(session, task.id + 1000) is None
    with pytest.raises(CvatError, match="404") as missing:
        read_task(session, task.id + 1000)
    assert missing.value.status == 404
    meta = task_meta(session, task.id)
    assert meta == TaskMeta(tuple(FrameInfo(p.name, 40, 30) for p in images), frozenset())
    labels = task_labels(session, task)
    assert list(labels) == ["car"] and labels["car"].type == "rectangle"
    for value in (task, meta, meta.frames[0], labels["car"]):
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.id = 1  # type: ignore[misc]


def test_frames_are_the_bytes_cvat_serves(fake, task, images, clean_faults):
    from serverless.images import decode_image

    session = connect(settings_for(fake))
    data = frame_bytes(session, task.id, 1, quality="original")
    assert isinstance(data, bytes)
    assert decode_image(data, name="frame 1").shape == (30, 40, 3)


def test_job_annotations_are_cvats_json(fake, task, clean_faults):
    session = connect(settings_for(fake))
    (job, *_) = list_jobs(session, task_id=task.id)
    labels = task_labels(session, task)
    shape = {"type": "rectangle", "frame": job.start_frame, "label_id": labels["car"].id,
             "points": [1.0, 2.0, 11.0, 12.0], "occluded": False, "z_order": 0, "attributes": [], "source": "auto"}
    ids, requests = upload_job_shapes(session, job.id, [shape])
    current = job_annotations(session, job.id)
    assert set(current) == {"version", "shapes", "tags", "tracks"} and requests == 1
    assert [s["id"] for s in current["shapes"]] == ids and current["shapes"][0]["points"] == shape["points"]
    upload_job_shapes(session, job.id, [])
    assert job_annotations(session, job.id)["shapes"] == []


def test_sync_never_touches_cvat_sdk():
    """``grep -r cvat_sdk sync/`` finds nothing: the bridge is the only way to the server."""
    offenders = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "sync").rglob("*.py") if "cvat_sdk" in p.read_text())
    assert offenders == []


@pytest.mark.parametrize(
    "module, function",
    [("sync/push.py", "push_run"), ("sync/pull.py", "pull_jobs"), ("sync/cvat_prelabel.py", "prelabel_task")],
)
def test_the_sync_seam_is_typed(module, function):
    """The doors from ``sync`` into the bridge take a `CvatSession` and a `Store`, not ``Any``."""
    tree = ast.parse((ROOT / module).read_text())
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    annotations = {a.arg: ast.unparse(a.annotation) for a in node.args.args if a.annotation is not None}
    assert annotations["store"] == "Store" and annotations["session"] == "CvatSession"
    assert "Any" not in {ast.unparse(a.annotation) for a in [*node.args.args, *node.args.kwonlyargs] if a.annotation}


# ---------------------------------------------------------------------------- one retry layer
@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("kind", ["503", "502", "reset", "timeout"])
def test_one_failing_get_is_tried_exactly_retries_plus_one_times(fake, task, clean_faults, kind, retries):
    session = connect(settings_for(fake, retries=retries, read_timeout=0.3))
    (job, *_) = list_jobs(session, task_id=task.id)
    fake.set_faults(FaultPlan(kind, methods={"GET"}, paths=JOB_ANNOTATIONS, delay=0.6))
    with pytest.raises(CvatError, match=f"read annotations of job {job.id}") as failed:
        job_annotations(session, job.id)
    assert failed.value.retryable
    assert fake.faults.plan_stats() == [{"matched": retries + 1, "fired": retries + 1}]


def test_the_retries_come_from_cvat_retries(fake, task, clean_faults, monkeypatch):
    monkeypatch.setenv("CVAT_RETRIES", "3")
    settings = CvatSettings.from_env(url=fake.url, username=ADMIN[0], password=ADMIN[1], backoff=0.0)
    assert settings.retries == 3
    session = connect(settings)
    fake.set_faults(FaultPlan("500", methods={"GET"}, paths=r"^/api/tasks/\d+/?$"))
    with pytest.raises(CvatError, match="500"):
        read_task(session, task.id)
    assert fake.faults.plan_stats() == [{"matched": 4, "fired": 4}]


def test_a_get_that_recovers_within_the_retries_succeeds(fake, task, clean_faults):
    session = connect(settings_for(fake, retries=2))
    fake.set_faults(FaultPlan("502", methods={"GET"}, paths=r"^/api/tasks/\d+/?$", limit=2))
    assert read_task(session, task.id) == task
    assert fake.faults.plan_stats() == [{"matched": 3, "fired": 2}]


def test_a_write_is_sent_once_unless_it_is_repeatable(fake, task, clean_faults):
    """POST/PATCH are not retried blindly (the bridge reconciles them); a call idempotent by
    meaning (setting a job's fields) is retried by the same layer, as often as a GET."""
    from cvat_sdk.api_client import models

    session = connect(settings_for(fake, retries=2))
    (job, *_) = list_jobs(session, task_id=task.id)
    api = session.sdk.api_client.jobs_api
    fake.set_faults(FaultPlan("503", methods={"PATCH"}, paths=r"^/api/jobs/\d+/?$"))
    request = models.PatchedJobWriteRequest(stage="validation")
    with pytest.raises(CvatError, match="503"):
        call("update job", session.host, api.partial_update, job.id, patched_job_write_request=request)
    assert fake.faults.plan_stats() == [{"matched": 1, "fired": 1}]

    fake.set_faults(FaultPlan("503", methods={"PATCH"}, paths=r"^/api/jobs/\d+/?$"))
    with pytest.raises(CvatError, match="503"):
        set_job(session, job.id, current=job, stage="validation")
    assert fake.faults.plan_stats() == [{"matched": 3, "fired": 3}]

    fake.set_faults(FaultPlan("502", methods={"PATCH"}, paths=r"^/api/jobs/\d+/?$", when="after", limit=2))
    assert set_job(session, job.id, current=job, stage="validation").stage == "validation"
    set_job(session, job.id, stage="annotation")


def test_a_login_whose_answers_are_lost_is_repeated(fake, clean_faults):
    fake.set_faults(FaultPlan("502", methods={"POST"}, paths=r"/api/auth/login", when="after", limit=2))
    assert connect(settings_for(fake, retries=2)).username == ADMIN[0]


def test_the_transport_is_the_only_retry_loop():
    """No ``attempts`` loop around idempotent calls: `call` and `read_json` try once, the
    transport retries (reconciliation loops for POST/PATCH live in tasks and annotations)."""
    source = (ROOT / "cvat_bridge" / "api.py").read_text()
    assert "attempts" not in source and "sleep" not in source
    for path in (ROOT / "cvat_bridge").glob("*.py"):
        assert "attempts=" not in "".join(
            line for line in path.read_text().splitlines(keepends=True) if "call(" in line or "read_json(" in line
        ), path.name


def test_the_policy_follows_the_settings(fake):
    from cvat_bridge.transport import IDEMPOTENT_METHODS, retry_policy

    settings = settings_for(fake, retries=7, backoff=0.25)
    policy = retry_policy(settings)
    assert (policy.total, policy.read, policy.connect, policy.status, policy.backoff_factor) == (7, 7, 7, 7, 0.25)
    assert policy.allowed_methods == IDEMPOTENT_METHODS and "POST" not in IDEMPOTENT_METHODS
    assert retry_policy(settings, any_method=True).allowed_methods is None


@pytest.mark.parametrize("retries", [1, 3])
def test_reconciled_writes_are_sent_as_often_as_the_settings_say(fake, task, clean_faults, retries):
    """An annotation chunk's PATCH (which the transport does not retry) is reconciled and sent
    again at most ``retries + 1`` times, as a GET is retried."""
    session = connect(settings_for(fake, retries=retries))
    (job, *_) = list_jobs(session, task_id=task.id)
    car = task_labels(session, task)["car"].id
    shapes = [{"type": "rectangle", "frame": job.start_frame, "label_id": car, "points": [1.0, 2.0, x, 12.0],
               "occluded": False, "z_order": 0, "attributes": [], "source": "auto"} for x in (11.0, 21.0)]
    fake.set_faults(FaultPlan("502", methods={"PATCH"}, paths=JOB_ANNOTATIONS, limit=2))
    fake.clear_log()
    if retries == 1:
        with pytest.raises(CvatError, match="502"):
            upload_job_shapes(session, job.id, shapes, max_request_bytes=1)  # a PUT, then a PATCH
    else:
        ids, requests = upload_job_shapes(session, job.id, shapes, max_request_bytes=1)
        assert requests == 2 and [s["id"] for s in job_annotations(session, job.id)["shapes"]] == ids
    patches = [status for method, path, status in fake.requests if method == "PATCH"]
    assert patches == ([502, 502] if retries == 1 else [502, 502, 200])
    upload_job_shapes(session, job.id, [])
