"""Shared helpers of the bridge tests (`tests/test_bridge_*.py`, `tests/test_cli_cvat.py`)
and of `bench/bridge.py`: a fake CVAT matching the installed cvat-sdk, users, settings,
synthetic pre-label runs, annotator actions through the real SDK, and snapshots of what the
server and the store hold.

The fake server's version follows the installed SDK: cvat-sdk 2.17 (``PYTHONPATH=.cache/sdk-2.17``)
talks to a fake CVAT 2.17, any newer SDK to a fake CVAT 2.54 — as with real servers, where
the SDK is pinned to the server's minor version.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cvat_sdk
import numpy as np

from cvat_bridge.client import CvatSettings
from tests.fake_cvat import FakeCvat

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "serverless" / "samples"
SDK_IS_217 = cvat_sdk.__version__.startswith("2.17")
FAKE_VERSION = "2.17" if SDK_IS_217 else "2.54"

ADMIN = ("admin", "admin-Secret-pw-1")
ANNOTATORS = {"alice": "alice-Secret-pw-2", "bob": "bob-Secret-pw-3"}


def start_fake(**kwargs: Any) -> FakeCvat:
    """A started fake CVAT of `FAKE_VERSION` with the admin and the annotators."""
    server = FakeCvat(FAKE_VERSION, instant_requests=True, **kwargs)
    server.add_user(*ADMIN, is_admin=True)
    for name, password in ANNOTATORS.items():
        server.add_user(name, password)
    return server.start()


def serve(**kwargs: Any) -> Iterator[FakeCvat]:
    """Fixture body: a started fake, stopped afterwards; fails if the fake itself crashed."""
    server = start_fake(**kwargs)
    try:
        yield server
    finally:
        server.stop()
    server.raise_errors()


def settings_for(server: FakeCvat, **overrides: Any) -> CvatSettings:
    """Admin settings for the fake: fast retries and polling."""
    values: dict[str, Any] = {
        "url": server.url,
        "username": ADMIN[0],
        "password": ADMIN[1],
        "retries": 4,
        "backoff": 0.0,
        "status_check_period": 0.01,
        "read_timeout": 30.0,
    }
    values.update(overrides)
    return CvatSettings(**values)


def cvat_env(server: FakeCvat, db_url: str, **extra: str) -> dict[str, str]:
    """Environment for ``autolabel cvat …`` against the fake, as the admin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVAT_")}
    env.update(
        CVAT_URL=server.url,
        CVAT_USERNAME=ADMIN[0],
        CVAT_PASSWORD=ADMIN[1],
        CVAT_RETRIES="4",
        AUTOLABEL_DB=db_url,
        HF_HUB_OFFLINE="1",
        COLUMNS="400",
    )
    sdk_path = os.environ.get("PYTHONPATH")
    if sdk_path:  # e.g. .cache/sdk-2.17: absolute, since the CLI may run elsewhere
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sdk_path.split(os.pathsep) if p)
    env.update(extra)
    return env


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy an SQLite store file with its write-ahead log (a store may still be open)."""
    import shutil

    for suffix in ("", "-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", f"{target}{suffix}")


# ---------------------------------------------------------------------------- synthetic runs
def write_images(directory: Path, count: int, *, width: int = 64, height: int = 48, seed: int = 0) -> list[Path]:
    """``count`` small distinct PNG files."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = directory / f"img{i:05d}.png"
        if not path.exists():
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def synthetic_detections(
    count: int, width: int, height: int, labels: Sequence[str], *, masks: bool = False, seed: int = 0
) -> Any:
    """``count`` random boxes (and filled-rectangle masks) with the given labels in turn."""
    from serverless.detections import Detections

    rng = np.random.default_rng(seed)
    x1 = rng.integers(0, width - 8, count)
    y1 = rng.integers(0, height - 8, count)
    x2 = np.minimum(x1 + rng.integers(4, 24, count), width)
    y2 = np.minimum(y1 + rng.integers(4, 24, count), height)
    xyxy = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
    names = [labels[i % len(labels)] for i in range(count)]
    full = None
    if masks:
        full = np.zeros((count, height, width), dtype=bool)
        for i, (a, b, c, d) in enumerate(xyxy.astype(int)):
            full[i, b:d, a:c] = True
    return Detections(
        xyxy=xyxy,
        scores=rng.uniform(0.3, 1.0, count).astype(np.float32),
        class_ids=np.array([list(labels).index(n) for n in names], dtype=np.int64),
        labels=np.array(names),
        masks=full,
    )


def synthetic_run(
    store: Any,
    images: Sequence[Path],
    *,
    dataset: str = "synthetic",
    run: str = "prelabel-1",
    shapes_per_image: int = 5,
    masks: bool = True,
    ontology: Any = None,
) -> Any:
    """A finished pre-label run over ``images`` with random detections of the sample
    ontology's labels (masks for every detection when ``masks``)."""
    from PIL import Image

    from serverless.ontology import load_ontology
    from sync.store import Provenance, SampleIn

    ontology = ontology or load_ontology(SAMPLES / "ontology.yaml")
    ds = store.get_or_create_dataset(dataset)
    info = store.create_run(ds, "prelabel", name=run, provenance=Provenance.from_ontology(ontology))
    samples = []
    for path in images:
        with Image.open(path) as image:
            samples.append(SampleIn(str(path.resolve()), image.width, image.height))
    ids = store.add_samples(ds, samples)
    store.add_detections(
        info,
        {
            sid: synthetic_detections(
                shapes_per_image, s.width, s.height, ontology.label_names, masks=masks, seed=sid
            )
            for sid, s in zip(ids, samples)
        },
    )
    return store.finish_run(info)


# ---------------------------------------------------------------------------- annotators
def sdk_client(server: FakeCvat, username: str, password: str) -> Any:
    """A cvat-sdk client logged in as ``username`` (what an annotator's tools do)."""
    from cvat_sdk import Client, Config

    client = Client(server.url, config=Config(status_check_period=0.01), check_server_version=False)
    client.login((username, password))
    return client


def shape_request(shape: Mapping[str, Any], **changes: Any) -> Any:
    """An SDK ``LabeledShapeRequest`` from a shape read from the server, with changes."""
    from cvat_sdk import models

    fields = {
        key: shape[key]
        for key in ("id", "type", "frame", "label_id", "points", "occluded", "z_order", "rotation", "source")
        if shape.get(key) is not None
    }
    fields["attributes"] = [
        models.AttributeValRequest(spec_id=a["spec_id"], value=str(a["value"])) for a in shape.get("attributes") or []
    ]
    fields.update(changes)
    fields["type"] = str(getattr(fields["type"], "value", fields["type"]))
    return models.LabeledShapeRequest(**fields)


def edit_job(client: Any, job_id: int, action: str, shapes: Sequence[Any]) -> None:
    """PATCH ``action`` (create|update|delete) on a job's annotations with the SDK."""
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    job = client.jobs.retrieve(job_id)
    job.update_annotations(
        models.PatchedLabeledDataRequest(shapes=list(shapes), tags=[], tracks=[]),
        action=AnnotationUpdateAction(action),
    )


# ---------------------------------------------------------------------------- snapshots
def job_of(fake: FakeCvat, task_id: int, start: int) -> Any:
    """The fake's job of a task that starts at frame ``start``."""
    return next(j for j in fake.db.jobs.values() if j.task_id == task_id and j.start_frame == start)


def job_shapes(fake: FakeCvat, job: Any) -> list[dict[str, Any]]:
    """The shapes the fake holds in a job's frames (dicts)."""
    return [dict(s) for s in fake.db.shapes(job.task_id) if job.start_frame <= s["frame"] <= job.stop_frame]


def label_ids(fake: FakeCvat, task_id: int) -> dict[str, int]:
    """Label ids of a task by name."""
    return {label.name: label.id for label in fake.db.labels.values() if label.task_id == task_id}


def assert_revision_is_the_job(store: Any, revision: Any, fake: FakeCvat, job: Any, pushed: Mapping[int, int]) -> dict:
    """The revision holds exactly the job's shapes: label, type, box (masks pixel for
    pixel), the sample of each frame, and pre-label links for pushed shapes only. Returns
    ``{cvat id: (sample id, label, type, box, pre-label annotation id, mask, score)}``."""
    from serverless.convert.cvat_shapes import decode_mask

    link = store.get_cvat_task(settings_for(fake).server, job.task_id)
    frames = store.frames_of(link)
    dataset = next(d for d in store.list_datasets() if d.id == revision.dataset_id)
    sizes = {s.id: (s.width, s.height) for s in store.samples(dataset)}
    names = {i: n for n, i in label_ids(fake, job.task_id).items()}
    stored = {}
    for sample_id, det in store.annotations_of(revision, masks=True).items():
        for i in range(len(det)):
            mask = None if det.masks is None else det.masks[i]
            stored[int(det.data["cvat_id"][i])] = (
                sample_id, str(det.labels[i]), str(det.data["shape_type"][i]), det.xyxy[i],
                int(det.data["pre_annotation_id"][i]), mask, float(det.scores[i]),
            )
    shapes = job_shapes(fake, job)
    assert sorted(stored) == sorted(s["id"] for s in shapes)
    for shape in shapes:
        sample_id, label, kind, box, pre_id, mask, _ = stored[shape["id"]]
        assert sample_id == frames[shape["frame"]]
        assert (label, kind) == (names[shape["label_id"]], shape["type"])
        if kind == "rectangle":
            np.testing.assert_allclose(box, shape["points"], atol=1e-4)
        else:
            assert kind == "mask"
            width, height = sizes[sample_id]
            expected = decode_mask(shape["points"], image_width=width, image_height=height)
            assert np.array_equal(mask, expected)
            ys, xs = np.nonzero(expected)
            np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert pre_id == pushed.get(shape["id"], -1)
    return stored


def server_counts(server: FakeCvat) -> dict[str, int]:
    """How many tasks, jobs, shapes, tags and tracks the fake holds."""
    db = server.db
    with db.lock:
        return {
            "tasks": len(db.tasks),
            "jobs": len(db.jobs),
            "frames": sum(len(t.data.frames) for t in db.tasks.values() if t.data),
            "shapes": sum(len(a.shapes) for a in db.annotations.values()),
            "tags": sum(len(a.tags) for a in db.annotations.values()),
            "tracks": sum(len(a.tracks) for a in db.annotations.values()),
        }


def _key(shape: Mapping[str, Any], label_names: Mapping[int, str]) -> tuple:
    kind = str(getattr(shape["type"], "value", shape["type"]))
    return (int(shape["frame"]), label_names[int(shape["label_id"])], kind, tuple(np.round(shape["points"], 2)))


def server_content(server: FakeCvat) -> dict[tuple[str, int, int], Counter]:
    """Per (task name, job start, job stop): the multiset of shapes (frame, label, type,
    points) — comparable between servers whose ids differ."""
    db = server.db
    with db.lock:
        names = {label.id: label.name for label in db.labels.values()}
        result = {}
        for job in db.jobs.values():
            task = db.tasks[job.task_id]
            shapes = [s for s in db.annotations[task.id].shapes.values() if job.contains(s["frame"])]
            result[(task.name, job.start_frame, job.stop_frame)] = Counter(_key(s, names) for s in shapes)
        return result


def revision_content(store: Any, dataset: str) -> dict[tuple[int, int], list[tuple[str, Counter]]]:
    """Per (CVAT task id, job id): ``(revision name, multiset of (sample uri, label, shape
    type, box))`` of each human revision of the dataset, oldest first."""
    samples = {s.id: s.uri for s in store.samples(dataset)}
    result: dict[tuple[int, int], list] = {}
    for run in store.list_runs(dataset, kind="human"):
        content = Counter()
        for sample_id, det in store.annotations_of(run).items():
            for i in range(len(det)):
                box = tuple(np.round(det.xyxy[i].astype(float), 2))
                content[(samples[sample_id], str(det.labels[i]), str(det.data["shape_type"][i]), box)] += 1
        result.setdefault((run.cvat_task_id, run.cvat_job_id), []).append((run.name, content))
    return result
