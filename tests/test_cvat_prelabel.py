"""``autolabel cvat prelabel TASK``: pre-labelling an existing task on a fake CVAT, driven by the
real cvat-sdk, with tiny models through the real loaders and a real SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import ROOT
from tests.fake_cvat import FakeCvat, FaultPlan
from tests.fake_cvat.fixtures import ADMIN_PASSWORD, ADMIN_USERNAME

ONTOLOGY = """\
name: site
defaults: {threshold: 0.3}
labels:
  - name: person
    prompts: [person, astronaut]
  - name: cat
"""
MASK_ONTOLOGY = """\
name: site-masks
defaults: {threshold: 0.3}
labels:
  - name: person
  - name: cat
    type: polygon
  - name: cup
    type: mask
"""
SIZE = (64, 48)


# ---- helpers -----------------------------------------------------------------------------------------
def _cli() -> typer.Typer:
    """The command as the lead registers it: ``cvat.app.command("prelabel")(prelabel)``."""
    from sync.commands.cvat_prelabel import prelabel

    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def cvat() -> None:
        """autolabel cvat"""

    app.command("prelabel")(prelabel)
    return app


def prelabel(*args: object):
    return CliRunner().invoke(_cli(), ["prelabel", *map(str, args)])


def pull(task_id: int):
    from sync.cli import app

    return CliRunner().invoke(app, ["cvat", "pull", "--task", str(task_id)])


def write_images(folder: Path, count: int, size: tuple[int, int] = SIZE) -> list[Path]:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"frame_{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def ontology_file(tmp_path: Path) -> Path:
    path = tmp_path / "ontology.yaml"
    path.write_text(ONTOLOGY)
    return path


@pytest.fixture
def env(fake_cvat: FakeCvat, tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """CVAT, models and store as a user sets them: environment variables."""
    values = {
        **tiny_models.environment(),
        "AUTOLABEL_DEVICE": "cpu",
        "AUTOLABEL_DB": str(tmp_path / "store.db"),
        "CVAT_URL": fake_cvat.url,
        "CVAT_USERNAME": ADMIN_USERNAME,
        "CVAT_PASSWORD": ADMIN_PASSWORD,
    }
    for name in ("CVAT_ACCESS_TOKEN", "CVAT_ORG", "CVAT_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def client(env, tmp_path: Path):
    """A plain cvat-sdk client for setting up tasks and human edits."""
    from cvat_sdk import Client, Config

    sdk = Client(env["CVAT_URL"], config=Config(status_check_period=0.01, cache_dir=tmp_path / "sdk-cache"))
    sdk.login((ADMIN_USERNAME, ADMIN_PASSWORD))
    return sdk


@pytest.fixture
def store(env):
    from sync.store import open_store

    store = open_store(env["AUTOLABEL_DB"])
    yield store
    store.close()


def make_task(client, tmp_path: Path, ontology_text: str, frames: int, name: str = "site-a") -> object:
    """A task made the way a user makes one: labels of the ontology, images, 2 frames per job."""
    from cvat_sdk.core.proxies.tasks import ResourceType

    from cvat_bridge.tasks import labels_spec

    paths = write_images(tmp_path / name, frames)
    return client.tasks.create_from_data(
        spec={"name": name, "labels": labels_spec(_ontology(ontology_text)), "segment_size": 2},
        resource_type=ResourceType.LOCAL,
        resources=[str(p) for p in paths],
        data_params={"image_quality": 95, "sorting_method": "predefined"},
    )


def jobs_of(fake: FakeCvat, task_id: int) -> list:
    return fake.db.task_jobs(task_id)


def shapes_in(fake: FakeCvat, task_id: int, job) -> list[dict]:
    return [s for s in fake.db.shapes(task_id) if job.start_frame <= s["frame"] <= job.stop_frame]


def annotation_puts(fake: FakeCvat) -> Counter:
    return Counter(
        r.path.rstrip("/").split("/")[3]
        for r in fake.request_log
        if r.method in {"PUT", "PATCH"} and r.path.startswith("/api/jobs/") and "annotations" in r.path
    )


def frame_reads(fake: FakeCvat, task_id: int) -> list[int]:
    from urllib.parse import parse_qs

    reads = []
    for r in fake.request_log:
        if r.method == "GET" and r.path.rstrip("/") == f"/api/tasks/{task_id}/data":
            query = parse_qs(r.query)
            if query.get("type") == ["frame"]:
                assert query.get("quality") == ["original"]
                reads.append(int(query["number"][0]))
    return reads


def human_rectangle(client, job_id: int, frame: int, label_id: int) -> None:
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    client.jobs.retrieve(job_id).update_annotations(
        models.PatchedLabeledDataRequest(
            shapes=[
                models.LabeledShapeRequest(
                    type="rectangle", frame=frame, label_id=label_id, points=[1.0, 2.0, 30.0, 40.0]
                )
            ]
        ),
        action=AnnotationUpdateAction.CREATE,
    )


def host_port(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


# ---- tests -------------------------------------------------------------------------------------------
def test_frame_uri_names_the_server_without_credentials():
    from sync.cvat_prelabel import frame_uri

    assert frame_uri("https://alice:s3cret@cvat.example.com:8443/?x=1#f", 12, 3) == (
        "cvat://cvat.example.com:8443/tasks/12/frames/3"
    )
    assert frame_uri("http://cvat.local/cvat/", 1, 0) == "cvat://cvat.local/cvat/tasks/1/frames/0"
    assert frame_uri("http://alice:s3cret@[::1]:8080/", 2, 5) == "cvat://[::1]:8080/tasks/2/frames/5"


_WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)


@given(
    user=_WORD,
    secret=_WORD.map(lambda w: "pw-" + w),
    host=_WORD,
    port=st.none() | st.integers(1, 65535),
    scheme=st.sampled_from(["http", "https"]),
    task_id=st.integers(0, 10**9),
    frame=st.integers(0, 10**6),
)
def test_frame_uris_never_hold_credentials(user, secret, host, port, scheme, task_id, frame):
    from sync.cvat_prelabel import frame_uri
    from sync.store import strip_credentials

    netloc = f"{host}.example" + (f":{port}" if port else "")
    uri = frame_uri(f"{scheme}://{user}:{secret}@{netloc}/?token={secret}", task_id, frame)
    assert uri == f"cvat://{netloc}/tasks/{task_id}/frames/{frame}"
    assert secret not in uri and strip_credentials(uri) == uri


def test_prelabels_untouched_jobs_records_everything_and_pull_works(
    fake_cvat: FakeCvat, client, store, env, ontology_file: Path, tmp_path: Path
):
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    task = make_task(client, tmp_path, ONTOLOGY, frames=5)
    jobs = jobs_of(fake_cvat, task.id)
    assert [(j.start_frame, j.stop_frame) for j in jobs] == [(0, 1), (2, 3), (4, 4)]
    labels = {label.name: label.id for label in client.tasks.retrieve(task.id).get_labels()}
    human_rectangle(client, jobs[2].id, 4, labels["cat"])

    result = prelabel(task.id, "--ontology", ontology_file, "--batch-size", 3)

    assert result.exit_code == 1, result.output
    assert f"jobs left alone: [{jobs[2].id}]" in result.stdout
    # what the job holds, in words, decided before the models ran: its frame was never read
    assert f"job {jobs[2].id}: holds 1 shape this store did not upload (1 drawn by hand); not pre-labelled" \
        in " ".join(result.stderr.split())
    assert 4 not in frame_reads(fake_cvat, task.id)
    assert "TINY RANDOM MODELS" in result.stderr
    # the untouched jobs hold the pre-labels, all "auto"; the human's job is as the human left it
    auto = [s for j in jobs[:2] for s in shapes_in(fake_cvat, task.id, j)]
    assert auto and {s["source"] for s in auto} == {"auto"} and {s["type"] for s in auto} == {"rectangle"}
    assert {s["label_id"] for s in auto} <= {labels["person"], labels["cat"]}
    (kept,) = shapes_in(fake_cvat, task.id, jobs[2])
    assert kept["source"] == "manual" and kept["points"] == [1.0, 2.0, 30.0, 40.0]

    # the store: dataset, samples named after the frames, a finished run with provenance, links
    dataset = f"cvat-task-{task.id}"
    (run,) = store.list_runs(dataset)
    assert run.kind == "prelabel" and not run.finished  # frame 4 waits for --force
    assert run.model_id == env["AUTOLABEL_GDINO_MODEL"]
    assert run.params["masks"] is False and run.params["cvat_task_id"] == task.id
    assert run.ontology_yaml == ONTOLOGY and set(run.thresholds) == {"person", "cat"}
    samples = store.samples(dataset)
    assert [s.uri for s in samples] == [
        f"cvat://{host_port(fake_cvat.url)}/tasks/{task.id}/frames/{n}" for n in range(5)
    ]
    assert {(s.width, s.height) for s in samples} == {SIZE}
    assert ADMIN_PASSWORD not in str(run.params) and all(ADMIN_USERNAME not in s.uri for s in samples)
    link = store.get_cvat_task(fake_cvat.url, task.id)
    assert link.run_id == run.id and link.name == "site-a"
    assert store.frames_of(link) == {n: s.id for n, s in enumerate(samples)}
    assert sorted(store.covered_samples(run)) == [s.id for s in samples[:4]]
    assert [j.job_id for j in store.jobs_of(link)] == [j.id for j in jobs]
    pushed = store.pushed_shapes(link)
    assert sorted(pushed) == sorted(s["id"] for s in auto)
    dets = store.annotations_of(run)
    first_jobs = [s.id for s in samples[:4]]
    assert sorted(pushed.values()) == sorted(int(a) for sid in first_jobs for a in dets[sid].data["annotation_id"])
    assert samples[4].id not in dets  # frame 4 was not run: its job is left alone

    # a rerun with --force writes the human's job; the other jobs are not uploaded again
    fake_cvat.clear_log()
    result = prelabel(task.id, "--ontology", ontology_file, "--force")
    assert result.exit_code == 0, result.output
    assert frame_reads(fake_cvat, task.id) == [4]
    assert f"job {jobs[2].id}: holds 1 shape this store did not upload (1 drawn by hand); replacing them" in \
        " ".join(result.stderr.split())
    run = store.get_run(dataset, run.name)
    assert run.finished
    dets = store.annotations_of(run)
    assert annotation_puts(fake_cvat) == Counter({str(jobs[2].id): 1})
    last = shapes_in(fake_cvat, task.id, jobs[2])
    assert len(last) == len(dets[samples[4].id]) and {s["source"] for s in last} == {"auto"}
    assert len(fake_cvat.db.shapes(task.id)) == store.count_annotations(run) == len(store.pushed_shapes(link))

    # a human moves a pre-label: a rerun leaves that job alone and sends nothing
    first = min(auto, key=lambda s: s["id"])
    client.jobs.retrieve(jobs[0].id).update_annotations(
        models.PatchedLabeledDataRequest(
            shapes=[
                models.LabeledShapeRequest(
                    id=first["id"],
                    type="rectangle",
                    frame=first["frame"],
                    label_id=first["label_id"],
                    points=[0.0, 0.0, 5.0, 5.0],
                    source="auto",
                )
            ]
        ),
        action=AnnotationUpdateAction.UPDATE,
    )
    fake_cvat.clear_log()
    result = prelabel(task.id, "--ontology", ontology_file)
    assert result.exit_code == 1 and f"jobs left alone: [{jobs[0].id}]" in result.stdout
    assert f"job {jobs[0].id}: holds 1 pre-label changed by a human; not pre-labelled" in result.stderr
    assert annotation_puts(fake_cvat) == Counter() and frame_reads(fake_cvat, task.id) == []

    # and the human revisions come back through pull
    result = pull(task.id)
    assert result.exit_code == 0, result.output
    assert "pulled 3 jobs" in result.stdout
    revisions = store.list_runs(dataset, kind="human")
    assert len(revisions) == 3 and {r.parent_run_id for r in revisions} == {run.id}
    assert sum(store.count_annotations(r) for r in revisions) == store.count_annotations(run)


def test_an_undecodable_frame_is_skipped_and_a_rerun_resumes(
    fake_cvat: FakeCvat, client, store, ontology_file: Path, tmp_path: Path
):
    from sync.console import CliError

    task = make_task(client, tmp_path, ONTOLOGY, frames=4)
    jobs = jobs_of(fake_cvat, task.id)
    broken = fake_cvat.db.tasks[task.id].data.frames[2]
    original, broken.original = broken.original, b"\x89PNG\r\n\x1a\n this is not a picture"

    result = prelabel(task.id, "--ontology", ontology_file, "--run", "first-pass", "--batch-size", 2)

    assert result.exit_code == 1, result.output
    assert "frame 2: skipped" in result.stderr and "not a recognised image format" in result.stderr
    assert "frames not pre-labelled: [2]" in result.stdout
    assert f"jobs waiting for those frames: [{jobs[1].id}]" in result.stdout
    assert shapes_in(fake_cvat, task.id, jobs[0]) and not shapes_in(fake_cvat, task.id, jobs[1])
    dataset = f"cvat-task-{task.id}"
    run = store.get_run(dataset, "first-pass")
    link = store.get_cvat_task(fake_cvat.url, task.id)
    frames = store.frames_of(link)
    assert not run.finished and set(frames) == {0, 1, 2, 3}
    assert sorted(store.covered_samples(run)) == sorted(frames[n] for n in (0, 1, 3))  # frame 2 stays uncovered

    # a resumed run keeps its options and its dataset; a change is a one-line error, nothing is lost
    for args, reason in (
        (["--threshold", 0.5], "by run 'first-pass' with --threshold not given (this time 0.5)"),
        (["--dataset", "elsewhere"], f"is recorded in dataset '{dataset}', not 'elsewhere'"),
        (["--run", "other"], "holds pre-label run 'first-pass'"),
    ):
        failed = prelabel(task.id, "--ontology", ontology_file, *args)
        assert isinstance(failed.exception, CliError) and reason in str(failed.exception), failed.output
    assert [d.name for d in store.list_datasets()] == [dataset]
    assert sorted(store.covered_samples(run)) == sorted(frames[n] for n in (0, 1, 3))

    broken.original = original
    fake_cvat.clear_log()
    result = prelabel(task.id, "--ontology", ontology_file)

    assert result.exit_code == 0, result.output
    assert "resuming run 'first-pass'" in result.stderr
    assert frame_reads(fake_cvat, task.id) == [2]
    assert annotation_puts(fake_cvat) == Counter({str(jobs[1].id): 1})
    run = store.get_run(dataset, "first-pass")
    assert run.finished and sorted(store.covered_samples(run)) == sorted(frames.values())
    server_shapes = fake_cvat.db.shapes(task.id)
    assert len(server_shapes) == store.count_annotations(run) == len(store.pushed_shapes(link))
    keys = Counter((s["frame"], s["label_id"], tuple(s["points"])) for s in server_shapes)
    assert max(keys.values()) == 1  # nothing uploaded twice

    fake_cvat.clear_log()
    result = prelabel(task.id, "--ontology", ontology_file)  # all done: nothing to read, nothing to send
    assert result.exit_code == 0, result.output
    assert frame_reads(fake_cvat, task.id) == [] and annotation_puts(fake_cvat) == Counter()


def test_a_frame_the_server_fails_to_send_is_skipped(
    fake_cvat: FakeCvat, client, store, tiny_settings, sample_ontology, tmp_path: Path
):
    from cvat_bridge.client import CvatSettings, connect
    from sync.cvat_prelabel import prelabel_task

    task = make_task(client, tmp_path, ONTOLOGY, frames=2)
    no_retry = connect(CvatSettings.from_env(retries=0))  # one 503 fails the frame at once
    fake_cvat.set_faults(
        FaultPlan(kind="503", methods={"GET"}, paths=rf"^/api/tasks/{task.id}/data/?$", skip=1, limit=1)
    )
    messages: list[str] = []
    onto = _ontology(ONTOLOGY)

    result = prelabel_task(store, no_retry, task.id, onto, tiny_settings, report=messages.append)

    assert [f.frame for f in result.failed] == [1] and "503" in result.failed[0].reason
    assert any(m.startswith("frame 1: skipped") for m in messages)
    assert result.processed == (0,) and not result.finished and not result.complete
    assert result.waiting_jobs == tuple(j.id for j in jobs_of(fake_cvat, task.id))
    assert fake_cvat.db.shapes(task.id) == []


def test_missing_labels_are_one_error_listing_them(fake_cvat: FakeCvat, client, store, env, tmp_path: Path):
    from sync.console import CliError

    task = make_task(client, tmp_path, "name: x\nlabels:\n  - name: person\n", frames=1)
    onto = tmp_path / "wide.yaml"
    onto.write_text("name: wide\nlabels:\n  - name: person\n  - name: rocket\n  - name: cat\n")

    result = prelabel(task.id, "--ontology", onto)

    assert isinstance(result.exception, CliError)
    message = str(result.exception)
    assert "\n" not in message and f"task {task.id} lacks the ontology's labels rocket, cat" in message
    assert store.list_datasets() == []
    assert fake_cvat.db.shapes(task.id) == []


def test_exit_code_2_through_the_command_line(fake_cvat: FakeCvat, client, env, tmp_path: Path):
    task = make_task(client, tmp_path, "name: x\nlabels:\n  - name: person\n", frames=1)
    onto = tmp_path / "wide.yaml"
    onto.write_text("name: wide\nlabels:\n  - name: person\n  - name: rocket\n")
    code = (
        "import sys\n"
        "from sync.cli import main, app\n"
        "from sync.commands import cvat\n"
        "from sync.commands.cvat_prelabel import prelabel\n"
        "if not any(c.name == 'prelabel' for c in cvat.app.registered_commands):\n"
        "    cvat.app.command('prelabel')(prelabel)\n"
        f"sys.argv = ['autolabel', 'cvat', 'prelabel', '{task.id}', '--ontology', {str(onto)!r}]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env, "COLUMNS": "300"},
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "lacks the ontology's labels rocket" in done.stderr and "Traceback" not in done.stderr


def test_masks_follow_the_label_types(fake_cvat: FakeCvat, client, store, tmp_path: Path):
    task = make_task(client, tmp_path, MASK_ONTOLOGY, frames=1)
    onto = tmp_path / "masks.yaml"
    onto.write_text(MASK_ONTOLOGY)

    result = prelabel(task.id, "--ontology", onto, "--masks", "--threshold", 0.3)

    assert result.exit_code == 0, result.output
    labels = {label.id: label.name for label in client.tasks.retrieve(task.id).get_labels()}
    types = {(labels[s["label_id"]], s["type"]) for s in fake_cvat.db.shapes(task.id)}
    print(types)
    assert types == {("person", "rectangle"), ("cat", "polygon"), ("cup", "mask")}
    (run,) = store.list_runs(f"cvat-task-{task.id}")
    assert run.params["masks"] is True and run.params["sam_checkpoint"]


def _ontology(text: str):
    from serverless.ontology import parse_ontology

    return parse_ontology(text, "test ontology")


SDK_217 = ROOT / ".cache" / "sdk-2.17"
SCRIPT_217 = """\
import sys
import cvat_sdk
from cvat_sdk import Client, Config
from cvat_sdk.core.proxies.tasks import ResourceType

assert cvat_sdk.__version__.startswith("2.17."), cvat_sdk.__version__
from cvat_bridge.tasks import labels_spec
from serverless.ontology import load_ontology
from sync.cli import main
from sync.commands import cvat
from sync.commands.cvat_prelabel import prelabel

client = Client(URL, config=Config(status_check_period=0.01, cache_dir=CACHE))
client.login((USER, PASSWORD))
task = client.tasks.create_from_data(
    spec={"name": "old-server", "labels": labels_spec(load_ontology(ONTOLOGY)), "segment_size": 2},
    resource_type=ResourceType.LOCAL, resources=IMAGES,
    data_params={"image_quality": 95, "sorting_method": "predefined"},
)
print("TASK", task.id)
if not any(c.name == "prelabel" for c in cvat.app.registered_commands):
    cvat.app.command("prelabel")(prelabel)
for args in (["prelabel", str(task.id), "--ontology", ONTOLOGY], ["pull", "--task", str(task.id)]):
    sys.argv = ["autolabel", "cvat", *args]
    try:
        main()
    except SystemExit as done:
        print("EXIT", args[0], done.code)
"""


def test_works_with_cvat_sdk_2_17_against_a_2_17_server(
    fake_cvat_217: FakeCvat, tiny_models, ontology_file: Path, tmp_path: Path
):
    """The SDK of a 2.17 server (cvat-sdk 2.80 cannot talk to one): frames, upload, pull."""
    images = [str(p) for p in write_images(tmp_path / "images", 3)]
    db = tmp_path / "store.db"
    constants = (
        f"URL = {fake_cvat_217.url!r}\nUSER = {ADMIN_USERNAME!r}\nPASSWORD = {ADMIN_PASSWORD!r}\n"
        f"CACHE = {str(tmp_path / 'sdk-cache')!r}\nONTOLOGY = {str(ontology_file)!r}\nIMAGES = {images!r}\n"
    )
    environment = {
        **os.environ,
        **tiny_models.environment(),
        "AUTOLABEL_DEVICE": "cpu",
        "AUTOLABEL_DB": str(db),
        "CVAT_URL": fake_cvat_217.url,
        "CVAT_USERNAME": ADMIN_USERNAME,
        "CVAT_PASSWORD": ADMIN_PASSWORD,
        "PYTHONPATH": os.pathsep.join([str(SDK_217), str(ROOT)]),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "300",
    }
    for name in ("CVAT_ACCESS_TOKEN", "CVAT_ORG", "CVAT_INSECURE"):
        environment.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", constants + SCRIPT_217],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=600,
    )
    assert "EXIT prelabel 0" in done.stdout and "EXIT pull 0" in done.stdout, done.stdout + done.stderr
    task_id = int(done.stdout.split("TASK ", 1)[1].split()[0])
    shapes = fake_cvat_217.db.shapes(task_id)
    assert shapes and {s["source"] for s in shapes} == {"auto"}
    assert {s["frame"] for s in shapes} <= {0, 1, 2}

    from sync.store import open_store

    store = open_store(str(db))
    try:
        (run,) = store.list_runs(f"cvat-task-{task_id}", kind="prelabel")
        link = store.get_cvat_task(fake_cvat_217.url, task_id)
        assert run.finished and store.count_annotations(run) == len(shapes) == len(store.pushed_shapes(link))
        assert len(store.list_runs(f"cvat-task-{task_id}", kind="human")) == 2
    finally:
        store.close()


def _store_counts(store) -> tuple:
    return tuple((d.name, tuple((r.name, r.finished, store.count_annotations(r)) for r in store.list_runs(d)))
                 for d in store.list_datasets())


def test_a_changed_option_is_refused_even_when_the_run_is_finished(
    fake_cvat: FakeCvat, client, store, env, ontology_file: Path, tmp_path: Path
):
    """Issue 9 B6: a rerun with another threshold (or model, masks, ontology) used to print
    "0 of N frames pre-labelled now … already uploaded" and exit 0."""
    from sync.console import CliError

    task = make_task(client, tmp_path, ONTOLOGY, frames=2)
    first = prelabel(task.id, "--ontology", ontology_file, "--threshold", 0.3)
    assert first.exit_code == 0, first.output
    (run,) = store.list_runs(f"cvat-task-{task.id}")
    assert run.finished
    before, shapes = _store_counts(store), fake_cvat.db.shapes(task.id)
    other_ontology = tmp_path / "other.yaml"
    other_ontology.write_text(ONTOLOGY.replace("threshold: 0.3", "threshold: 0.35"))

    for args, reason in (
        (["--threshold", 0.5], "with --threshold 0.3 (this time 0.5)"),
        ([], "with --threshold 0.3 (this time not given)"),
        (["--threshold", 0.3, "--masks"], "with --masks off (this time on)"),
        (["--threshold", 0.3, "--gdino-model", "IDEA-Research/grounding-dino-base"],
         f"with --gdino-model {env['AUTOLABEL_GDINO_MODEL']!r} (this time 'IDEA-Research/grounding-dino-base')"),
    ):
        fake_cvat.clear_log()
        refused = prelabel(task.id, "--ontology", ontology_file, *args)
        assert isinstance(refused.exception, CliError), (args, refused.output)
        message = str(refused.exception)
        assert "\n" not in message and message.startswith(f"task {task.id} was pre-labelled by run '{run.name}' ")
        assert reason in message and "--run NEW-NAME" in message, message
        assert frame_reads(fake_cvat, task.id) == [] and annotation_puts(fake_cvat) == Counter()
    refused = prelabel(task.id, "--ontology", other_ontology, "--threshold", 0.3)
    assert isinstance(refused.exception, CliError) and "with another ontology" in str(refused.exception)
    assert _store_counts(store) == before and fake_cvat.db.shapes(task.id) == shapes

    again = prelabel(task.id, "--ontology", ontology_file, "--threshold", 0.3)  # the same options: a no-op
    assert again.exit_code == 0 and "0 of 2 frames pre-labelled now (2 before)" in again.stdout, again.output


def test_the_hint_works_a_new_run_takes_the_task_over(
    fake_cvat: FakeCvat, client, store, env, ontology_file: Path, tmp_path: Path
):
    """Following the refusal's hint: ``--run NEW`` with the new options pre-labels the task
    again; a job holding the old run's untouched pre-labels gets the new ones, a job a human
    changed is left alone (and says so), and the task's link moves to the new run."""
    task = make_task(client, tmp_path, ONTOLOGY, frames=4)
    assert prelabel(task.id, "--ontology", ontology_file, "--threshold", 0.3, "--run", "low").exit_code == 0
    dataset = f"cvat-task-{task.id}"
    server = fake_cvat.url.rstrip("/")
    link = store.get_cvat_task(server, task.id)
    jobs = sorted(fake_cvat.db.task_jobs(task.id), key=lambda j: j.start_frame)
    labels = {label.name: label.id for label in client.tasks.retrieve(task.id).get_labels()}
    human_rectangle(client, jobs[1].id, jobs[1].start_frame, labels["cat"])  # a human's work in job 2
    edited = {s["id"] for s in fake_cvat.db.shapes(task.id) if s["frame"] >= jobs[1].start_frame}

    result = prelabel(task.id, "--ontology", ontology_file, "--threshold", 0.6, "--run", "high")
    assert result.exit_code == 1, result.output  # 1: a job was left alone, so the task is not complete
    flat = " ".join(result.output.split())
    assert "run 'high' takes task" in flat and "from run 'low'" in flat
    high = store.get_run(dataset, "high")
    assert store.get_cvat_task(server, task.id).run_id == high.id
    assert not high.finished  # the frames of the job left alone wait for a --force rerun
    now = fake_cvat.db.shapes(task.id)
    first_job = [s for s in now if s["frame"] < jobs[1].start_frame]
    wanted = store.annotations_of(high, sample_ids=[store.frames_of(link)[f] for f in (0, 1)])
    assert len(first_job) == sum(len(d) for d in wanted.values())  # the new run's pre-labels only
    assert all(float(d.scores.min(initial=1.0)) >= 0.6 for d in wanted.values())
    assert {s["id"] for s in now if s["frame"] >= jobs[1].start_frame} == edited  # the human's job untouched
    assert "holds" in flat and str(jobs[1].id) in flat


def _auto_rectangles(client, job_id: int, frames_and_labels, source: str = "auto") -> None:
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    client.jobs.retrieve(job_id).update_annotations(
        models.PatchedLabeledDataRequest(
            shapes=[
                models.LabeledShapeRequest(
                    type="rectangle", frame=frame, label_id=label_id, points=[2.0, 3.0, 20.0 + i, 30.0],
                    source=source,
                )
                for i, (frame, label_id) in enumerate(frames_and_labels)
            ]
        ),
        action=AnnotationUpdateAction.CREATE,
    )


def test_a_task_holding_another_tools_shapes_is_refused_before_the_models_run(
    fake_cvat: FakeCvat, client, store, env, ontology_file: Path, tmp_path: Path
):
    """Issue 9 B7: the models used to run over every frame, then every job was refused with
    "a human has changed it" (exit 1)."""
    from sync.console import CliError

    task = make_task(client, tmp_path, ONTOLOGY, frames=4)
    jobs = jobs_of(fake_cvat, task.id)
    labels = {label.name: label.id for label in client.tasks.retrieve(task.id).get_labels()}
    _auto_rectangles(client, jobs[0].id, [(0, labels["cat"]), (1, labels["person"]), (1, labels["cat"])])
    _auto_rectangles(client, jobs[1].id, [(2, labels["person"]), (3, labels["person"])])
    _auto_rectangles(client, jobs[1].id, [(3, labels["cat"])], source="manual")
    theirs = fake_cvat.db.shapes(task.id)
    fake_cvat.clear_log()

    refused = prelabel(task.id, "--ontology", ontology_file)

    assert isinstance(refused.exception, CliError), refused.output
    assert str(refused.exception) == (
        f"{fake_cvat.url}: task {task.id} ('site-a') already holds 6 shapes this store did not upload "
        "(5 made by another tool (source auto), 1 drawn by hand) in every job "
        f"[{jobs[0].id}, {jobs[1].id}]; the models were not run: pass --force to replace them with pre-labels"
    )
    assert frame_reads(fake_cvat, task.id) == [] and annotation_puts(fake_cvat) == Counter()
    assert store.list_datasets() == [] and fake_cvat.db.shapes(task.id) == theirs

    forced = prelabel(task.id, "--ontology", ontology_file, "--force")

    assert forced.exit_code == 0, forced.output
    assert sorted(frame_reads(fake_cvat, task.id)) == [0, 1, 2, 3]
    now = fake_cvat.db.shapes(task.id)
    assert now and not {s["id"] for s in now} & {s["id"] for s in theirs}
    link = store.get_cvat_task(fake_cvat.url, task.id)
    assert sorted(store.pushed_shapes(link)) == sorted(s["id"] for s in now)
    text = " ".join(forced.stderr.split())
    assert f"job {jobs[0].id}: holds 3 shapes this store did not upload (3 made by another tool (source auto)); " \
           "replacing them (--force)" in text


def test_models_are_named_by_spec_strings(fake_cvat: FakeCvat, client, store, env, ontology_file: Path, tmp_path: Path):
    """``--detector`` takes a registry spec, like ``autolabel prelabel``; a bad one is one line,
    before the server is asked anything."""
    from sync.console import CliError

    task = make_task(client, tmp_path, ONTOLOGY, frames=1)
    fake_cvat.clear_log()
    bad = prelabel(task.id, "--ontology", ontology_file, "--detector", "no-such-backend:x")
    assert isinstance(bad.exception, CliError), bad.output
    assert "\n" not in str(bad.exception) and "'no-such-backend:x'" in str(bad.exception)
    assert fake_cvat.requests == []
    weights = env["AUTOLABEL_GDINO_MODEL"]
    done = prelabel(task.id, "--ontology", ontology_file, "--detector", f"grounding-dino:{weights}")
    assert done.exit_code == 0, done.output
    (run,) = store.list_runs(f"cvat-task-{task.id}")
    assert run.model_id == weights and run.finished


def test_describe_job_content_names_every_kind_of_content():
    from cvat_bridge.annotations import shape_key
    from sync.cvat_prelabel import describe_job_content

    def shape(shape_id, source, x=1.0):
        return {"id": shape_id, "frame": 0, "label_id": 1, "type": "rectangle", "points": [x, 1.0, 5.0, 5.0],
                "source": source}

    mine = [shape(10, "auto"), shape(11, "auto"), shape(12, "auto")]
    expected = {100: shape_key(mine[0]), 101: shape_key(mine[1]), 102: shape_key(mine[2]), 103: shape_key(mine[2])}
    pushed = {10: 100, 11: 101, 12: 102, 13: 103}
    empty = {"shapes": [], "tags": [], "tracks": []}
    assert describe_job_content(empty, {}) is None
    assert describe_job_content({**empty, "shapes": mine}, {10: 100, 11: 101, 12: 102}, expected) is None
    held = {
        "shapes": [mine[0], shape(11, "auto", x=2.0), shape(20, "semi-auto"), shape(21, "file"), shape(22, "consensus")],
        "tags": [{"id": 1}],
        "tracks": [{"id": 2}, {"id": 3}],
    }
    assert describe_job_content(held, pushed, expected) == (
        "3 shapes this store did not upload (1 made with an AI tool in CVAT (source semi-auto), 1 imported from a "
        "file, 1 with source consensus), 1 tag, 2 tracks, 1 pre-label changed by a human, "
        "2 pre-labels deleted by a human"
    )


def test_reading_threads_give_the_same_prelabels_and_skip_the_same_frames(
    fake_cvat: FakeCvat, client, store, ontology_file: Path, tmp_path: Path
):
    """--workers N downloads and decodes frames in N threads ahead of the models: the same
    pre-labels reach the same frames as with one frame at a time, each frame is read once,
    and an undecodable frame is still a reported skip."""
    tasks = [make_task(client, tmp_path, ONTOLOGY, frames=7, name=f"site-{n}") for n in (0, 2)]
    for task in tasks:
        fake_cvat.db.tasks[task.id].data.frames[3].original = b"not a picture"
    fake_cvat.clear_log()
    found = {}
    for task, workers in zip(tasks, (0, 2), strict=True):
        result = prelabel(task.id, "--ontology", ontology_file, "--batch-size", 2, "--workers", workers)
        assert result.exit_code == 1, result.output  # frame 3's job waits
        assert "frame 3: skipped" in result.stderr and "frames not pre-labelled: [3]" in result.stdout
        assert sorted(frame_reads(fake_cvat, task.id)) == list(range(7))
        (run,) = store.list_runs(f"cvat-task-{task.id}")
        assert "workers" not in run.params
        names = {label.id: label.name for label in client.tasks.retrieve(task.id).get_labels()}
        found[workers] = sorted(
            (s["frame"], names[s["label_id"]], tuple(np.round(s["points"], 3))) for s in fake_cvat.db.shapes(task.id)
        )
    assert found[2] == found[0] and found[0]

    failed = prelabel(tasks[0].id, "--ontology", ontology_file, "--workers", -1)
    assert str(failed.exception) == "--workers must be at least 0, got -1"


def test_compile_with_a_backend_torch_lacks_is_one_line_before_any_frame_is_read(
    fake_cvat: FakeCvat, client, ontology_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from sync.console import CliError

    task = make_task(client, tmp_path, ONTOLOGY, frames=2)
    monkeypatch.setenv("AUTOLABEL_COMPILE_BACKEND", "turbo")
    fake_cvat.clear_log()
    failed = prelabel(task.id, "--ontology", ontology_file, "--compile")
    assert isinstance(failed.exception, CliError), failed.output
    assert str(failed.exception).startswith("torch.compile backend 'turbo' (from AUTOLABEL_COMPILE_BACKEND) is not one of")
    assert frame_reads(fake_cvat, task.id) == []
