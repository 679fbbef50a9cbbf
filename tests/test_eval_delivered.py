"""A Grounded-SAM run (``--masks``) pushed with rectangle, polygon and mask labels, left
untouched by the annotators, pulled back: every pre-label counts as accepted and scores
perfectly, whatever its shape type (issue: the edit matcher compared the pulled polygon or
mask with the detector box and SAM mask kept in the store, and counted 0 accepted).

The fake CVAT keeps ``points`` as a real server does (floats, exactly as sent), so this
runs the same against the 2.54 fake (cvat-sdk 2.80) and the 2.17 fake (``make test-sdk217``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sync.cli import app
from sync.store import open_store
from tests.bridge_support import SAMPLES, copy_sqlite, cvat_env, sdk_client, serve, settings_for

DATASET, RUN, TASK = "mixed", "gsam", "mixed-batch"
PHOTOS = ("astronaut.jpg", "chelsea.jpg")
ONTOLOGY = """\
labels:
  - name: person
    type: rectangle
  - name: cat
    type: polygon
  - name: cup
    type: mask
  - name: rocket
    type: polygon
"""


def run_cli(args, env):
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module", params=["grounded-sam", "sam3"])
def masked_run(request, tmp_path_factory, tiny_models):
    """A pre-label run with masks: tiny Grounding DINO boxes + SAM masks, or SAM 3, whose
    detections carry masks of their own (no segmenter)."""
    root = tmp_path_factory.mktemp("delivered")
    ontology = root / "ontology.yaml"
    ontology.write_text(ONTOLOGY)
    db = root / "store.db"
    env = {**tiny_models.environment(), "AUTOLABEL_DB": f"sqlite:///{db}", "HF_HUB_OFFLINE": "1"}
    if request.param == "sam3":
        from serverless.models import registry

        weights = registry.backend("sam3").tiny(tiny_models.gdino_dir.parent, 0)
        chosen = ["--detector", f"sam3:{weights}", "--threshold", "0.0"]  # random SAM 3 scores lie near 0.25
    else:
        chosen = ["--threshold", "0.9"]
    run_cli(["prelabel", *(str(SAMPLES / p) for p in PHOTOS), "--ontology", str(ontology), "--masks",
             "--dataset", DATASET, "--run", RUN, *chosen], env)
    return db, ontology


@pytest.fixture
def fake():
    yield from serve()


def shape_types(fake, task_id):
    job_ids = [j.id for j in fake.db.jobs.values() if j.task_id == task_id]
    types = []
    for job_id in job_ids:
        client = sdk_client(fake, "admin", "admin-Secret-pw-1")
        types += [str(s.type.value) for s in client.jobs.retrieve(job_id).get_annotations().shapes]
    return types


def test_untouched_masks_polygons_and_boxes_count_as_accepted(fake, masked_run, tmp_path):
    source, ontology = masked_run
    db = tmp_path / "store.db"
    copy_sqlite(source, db)
    url = f"sqlite:///{db}"
    env = cvat_env(fake, url)
    run_cli(["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", TASK, "--ontology", str(ontology),
             "--segment-size", "1"], env)
    (task,) = fake.db.tasks.values()
    sent = shape_types(fake, task.id)
    # precondition: every CVAT shape type was pushed, so the test covers each
    assert {"rectangle", "polygon", "mask"} <= set(sent), sent

    admin = sdk_client(fake, "admin", "admin-Secret-pw-1")
    for job in [j for j in fake.db.jobs.values() if j.task_id == task.id]:
        admin.jobs.retrieve(job.id).update({"stage": "acceptance", "state": "completed"})
    run_cli(["cvat", "pull", "--task", str(task.id), "--stage", "acceptance"], env)

    report_file = tmp_path / "report.json"
    run_cli(["eval", "--dataset", DATASET, "--json", str(report_file)], env)
    report = json.loads(report_file.read_text())
    (evaluation,) = report["runs"]
    edits = evaluation["edits"]["overall"]
    assert edits["accepted"] == len(sent)
    assert (edits["adjusted"], edits["relabeled"], edits["deleted"], edits["added"]) == (0, 0, 0, 0)
    assert evaluation["masks"] is not None  # polygons and masks on both sides: mask metrics too
    for geometry in (evaluation, evaluation["masks"]):
        for label, metrics in geometry["per_class"].items():
            if metrics["truth"]:
                assert (metrics["precision"], metrics["recall"]) == (pytest.approx(1.0), pytest.approx(1.0)), label
                assert metrics["map"] == pytest.approx(1.0), label
        assert geometry["overall"]["f1"] == pytest.approx(1.0)


def test_what_push_sent_is_recorded_per_shape(fake, masked_run, tmp_path):
    source, ontology = masked_run
    db = tmp_path / "store.db"
    copy_sqlite(source, db)
    url = f"sqlite:///{db}"
    run_cli(["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", TASK, "--ontology", str(ontology)],
            cvat_env(fake, url))
    store = open_store(url)
    (task,) = fake.db.tasks.values()
    link = store.get_cvat_task(settings_for(fake).server, task.id)
    pushed = store.pushed_shapes(link)  # shape id -> annotation id
    geometry = store.pushed_geometry(link, pushed.values())
    assert set(geometry) == set(pushed.values())
    on_server = {}
    for job in [j for j in fake.db.jobs.values() if j.task_id == task.id]:
        for shape in sdk_client(fake, "admin", "admin-Secret-pw-1").jobs.retrieve(job.id).get_annotations().shapes:
            on_server[pushed[shape.id]] = (str(shape.type.value), [float(v) for v in shape.points])
    assert geometry == on_server
    labels = store.task_labels_at_push(link)
    assert sorted(name for name, _ in labels.values()) == ["cat", "cup", "person", "rocket"]
    assert dict(labels.values())["cup"] == "mask"


def test_untouched_run_matches_itself_shape_for_shape(masked_run):
    """Without CVAT: the shapes push would send, read back as a pull reads them, are the
    same both ways (the derivation used for runs that were never pushed)."""
    from sync.evaluate.delivered import delivered_predictions

    source, _ = masked_run
    store = open_store(f"sqlite:///{source}")
    run = store.get_run(DATASET, RUN)
    ids = sorted(store.covered_samples(run))
    sizes = {s.id: (s.width, s.height) for s in store.samples(DATASET, ids=ids)}
    shown = delivered_predictions(store, run, ids, {}, sizes, masks=True)
    stored = store.annotations_of(run, sample_ids=ids, masks=True)
    kinds = {"person": "rectangle", "cat": "polygon", "cup": "mask", "rocket": "polygon"}
    total = 0
    for sid in ids:
        det = shown.detections[sid]
        total += len(det)
        for i, label in enumerate(det.labels.tolist()):
            kind = str(det.data["shape_type"][i])
            assert kind == kinds[label] or (kinds[label] == "polygon" and kind == "mask")
            if kind == "rectangle":
                raw = stored[sid]
                j = int(np.flatnonzero(raw.data["annotation_id"] == det.data["annotation_id"][i])[0])
                np.testing.assert_array_equal(det.xyxy[i], raw.xyxy[j])
            elif kind == "polygon":  # the box is the shape's own bounds, not the detector's box
                (ring,) = det.polygons[i]
                assert det.xyxy[i].tolist() == [*ring.min(axis=0).tolist(), *ring.max(axis=0).tolist()]
            else:
                ys, xs = np.nonzero(det.masks[i])
                assert det.xyxy[i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert total + shown.left_out == sum(len(d) for d in stored.values())
