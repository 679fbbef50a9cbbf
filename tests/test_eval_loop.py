"""The whole evaluation loop on a fake CVAT with the real cvat-sdk, as a user runs it from
the README: pre-label with the tiny models, push, annotators accept / move / delete / add /
relabel through the API, pull, then ``autolabel eval``, ``tune``, ``select`` and a review
push of the selection.

Every count of the edit breakdown and every metric is checked against the edits the test
made. mAP is checked against pycocotools run on the truth the test reconstructs from its own
edits (not from the store).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from cvat_bridge.client import connect
from sync.cli import app
from sync.pull import pull_jobs
from sync.store import open_store
from tests.bridge_support import (
    ANNOTATORS,
    SAMPLES,
    copy_sqlite,
    cvat_env,
    edit_job,
    job_of,
    job_shapes,
    label_ids,
    sdk_client,
    serve,
    settings_for,
    shape_request,
)

DATASET, RUN, TASK = "photos", "tiny-run", "photos-batch-1"
PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg")
SECONDS = {"verify": 7.0, "adjust": 7.0, "relabel": 7.0, "delete": 1.5, "draw": 30.0}


@pytest.fixture(scope="module")
def prelabelled(tmp_path_factory, tiny_models):
    db = tmp_path_factory.mktemp("eval-loop") / "store.db"
    env = {**tiny_models.environment(), "AUTOLABEL_DB": f"sqlite:///{db}", "HF_HUB_OFFLINE": "1"}
    args = ["prelabel", *(str(SAMPLES / p) for p in PHOTOS), "--ontology", str(SAMPLES / "ontology.yaml"),
            "--dataset", DATASET, "--run", RUN, "--threshold", "0.9"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return db


@pytest.fixture
def fake():
    yield from serve()


def iou(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def run_cli(args, env):
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return result


def coco_oracle(pre, truth, labels):
    """pycocotools' stats and per-class AP for the pre-labels against the test's own truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cat = {name: i + 1 for i, name in enumerate(labels)}
    images, gts, dts = [], [], []
    for image_id, frame in enumerate(sorted(truth), start=1):
        images.append({"id": image_id, "width": 1000, "height": 1000})
        for label, box in truth[frame]:
            x1, y1, x2, y2 = map(float, box)
            gts.append({"id": len(gts) + 1, "image_id": image_id, "category_id": cat[label], "iscrowd": 0,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for label, box, score in pre[frame]:
            x1, y1, x2, y2 = map(float, box)
            dts.append({"image_id": image_id, "category_id": cat[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(score)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": gts, "categories": [{"id": i, "name": n} for n, i in cat.items()]}
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(dts), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    per_class = {}
    for k, name in enumerate(labels):
        p = evaluator.eval["precision"][:, :, k, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else None
    return evaluator.stats, per_class


def test_prelabel_push_edit_pull_then_eval_tune_select_counts_every_edit(fake, prelabelled, tmp_path):
    db = tmp_path / "store.db"
    copy_sqlite(prelabelled, db)
    store_url = f"sqlite:///{db}"
    store = open_store(store_url)
    env = cvat_env(fake, store_url)
    run_cli(["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", TASK, "--segment-size", "2",
             "--assignees", "alice,bob"], env)
    (task,) = fake.db.tasks.values()
    link = store.get_cvat_task(settings_for(fake).server, task.id)
    pushed = store.pushed_shapes(link)  # cvat id -> annotation id
    frames = store.frames_of(link)  # frame -> sample id
    run = store.get_run(DATASET, RUN)
    pre_dets = store.annotations_of(run)
    labels = ["person", "cat", "cup", "rocket"]

    # what was pushed, per frame: cvat id -> (label, box, score)
    by_annotation = {}
    for det in pre_dets.values():
        for i, ann in enumerate(det.data["annotation_id"].tolist()):
            by_annotation[ann] = (str(det.labels[i]), det.xyxy[i].astype(float), float(det.scores[i]))
    ids = label_ids(fake, task.id)
    names = {v: k for k, v in ids.items()}
    job1, job2 = job_of(fake, task.id, 0), job_of(fake, task.id, 2)
    shapes0 = sorted((s for s in job_shapes(fake, job1) if s["frame"] == 0), key=lambda s: s["id"])
    shapes1 = sorted((s for s in job_shapes(fake, job1) if s["frame"] == 1), key=lambda s: s["id"])

    def same_class_boxes(frame_shapes, label, exclude=()):
        return [by_annotation[pushed[s["id"]]][1] for s in frame_shapes
                if names[s["label_id"]] == label and s["id"] not in exclude]

    # preconditions that make the expected numbers unambiguous: pre-labels of frames 0 and 1
    # overlap each other at IoU < 0.5, so every edit below changes exactly one match
    for frame_shapes in (shapes0, shapes1):
        boxes = [by_annotation[pushed[s["id"]]][1] for s in frame_shapes]
        assert all(iou(a, b) < 0.5 for i, a in enumerate(boxes) for b in boxes[i + 1:])

    small, big, relabel, delete0 = shapes0[0], shapes0[1], shapes0[2], shapes0[3]
    delete1 = shapes1[0]
    small_box = np.array(small["points"]) + [2, 1, 2, 1]
    big_box = np.array(big["points"]) + [40, 40, 40, 40]
    old_label = names[relabel["label_id"]]
    new_label = next(n for n in labels if n != old_label)
    added0 = ("rocket", np.array([300.0, 20.0, 340.0, 70.0]))
    added1 = ("cat", np.array([5.0, 200.0, 45.0, 260.0]))
    assert iou(small["points"], small_box) >= 0.5 > iou(big["points"], big_box)
    others0 = [s for s in shapes0 if s["id"] != small["id"]]
    assert all(iou(small_box, b) < 0.5 for b in same_class_boxes(others0, names[small["label_id"]]))
    assert all(iou(big_box, b) < 0.5 for b in same_class_boxes(shapes0, names[big["label_id"]]))
    assert all(iou(by_annotation[pushed[relabel["id"]]][1], b) < 0.5 for b in same_class_boxes(shapes0, new_label))
    assert all(iou(added0[1], b) < 0.5 for b in same_class_boxes(shapes0, "rocket"))
    assert all(iou(added1[1], b) < 0.5 for b in same_class_boxes(shapes1, "cat"))
    # the added shapes do not sit on the deleted ones (or the edit matching would pair them)
    assert iou(added0[1], delete0["points"]) < 0.5 and iou(added1[1], delete1["points"]) < 0.5

    # the annotators' work, through the SDK
    alice = sdk_client(fake, "alice", ANNOTATORS["alice"])
    edit_job(alice, job1.id, "update", [
        shape_request(small, points=small_box.tolist(), source="manual"),
        shape_request(big, points=big_box.tolist(), source="manual"),
        shape_request(relabel, label_id=ids[new_label], source="manual"),
    ])
    edit_job(alice, job1.id, "delete", [shape_request(delete0), shape_request(delete1)])
    new_shape = {"type": "rectangle", "occluded": False, "z_order": 0, "source": "manual", "attributes": []}
    edit_job(alice, job1.id, "create", [
        shape_request({**new_shape, "frame": 0, "label_id": ids[added0[0]], "points": added0[1].tolist()}),
        shape_request({**new_shape, "frame": 1, "label_id": ids[added1[0]], "points": added1[1].tolist()}),
    ])
    alice.jobs.retrieve(job1.id).update({"stage": "acceptance", "state": "completed"})
    bob = sdk_client(fake, "bob", ANNOTATORS["bob"])
    bob.jobs.retrieve(job2.id).update({"stage": "acceptance", "state": "completed"})  # accepts all of frame 2
    pulled = pull_jobs(store, connect(settings_for(fake)), task_id=task.id)
    assert set(pulled.pulled) == {job1.id, job2.id}

    # the truth the test made, per frame, and the pre-labels per frame
    pre = {f: [] for f in frames}
    truth = {f: [] for f in frames}
    cvat_of = {a: c for c, a in pushed.items()}
    frame_of = {sid: f for f, sid in frames.items()}
    for sid, det in pre_dets.items():
        for ann in det.data["annotation_id"].tolist():
            pre[frame_of[sid]].append(by_annotation[ann])
    changed = {small["id"]: (names[small["label_id"]], small_box), big["id"]: (names[big["label_id"]], big_box),
               relabel["id"]: (new_label, by_annotation[pushed[relabel["id"]]][1])}
    deleted = {delete0["id"], delete1["id"]}
    for sid, det in pre_dets.items():
        for ann in det.data["annotation_id"].tolist():
            cvat_id = cvat_of[ann]
            if cvat_id in deleted:
                continue
            truth[frame_of[sid]].append(changed.get(cvat_id, by_annotation[ann][:2]))
    truth[0].append(added0)
    truth[1].append(added1)

    # expected counts, from the edits
    pre_count = Counter(label for items in pre.values() for label, _, _ in items)
    truth_count = Counter(label for items in truth.values() for label, _ in items)
    label_of = {c: by_annotation[a][0] for c, a in pushed.items()}
    edited = {small["id"], big["id"], relabel["id"], *deleted}
    accepted = Counter(label_of[c] for c in pushed if c not in edited)
    expected_edits = {
        name: {
            "accepted": accepted[name],
            "adjusted": sum(label_of[c] == name for c in (small["id"], big["id"])),
            "relabeled": int(old_label == name),
            "deleted": sum(label_of[c] == name for c in deleted),
            "added": sum(label == name for label, _ in (added0, added1)),
        }
        for name in labels
    }
    tp = Counter(accepted)
    tp[label_of[small["id"]]] += 1  # moved a little: still found; the big move and the relabel are not

    json_file, html_file = tmp_path / "report.json", tmp_path / "report.html"
    run_cli(["eval", "--dataset", DATASET, "--json", str(json_file), "--html", str(html_file)], env)
    report = json.loads(json_file.read_text())
    assert report["samples"] == 3 and report["seconds"] == SECONDS
    (section,) = report["runs"]
    assert section["name"] == RUN
    stats, ap = coco_oracle(pre, truth, labels)
    for name in labels:
        got = report["per_class"][name]
        fp, fn = pre_count[name] - tp[name], truth_count[name] - tp[name]
        assert (got["tp"], got["fp"], got["fn"]) == (tp[name], fp, fn), name
        assert (got["truth"], got["predictions"]) == (truth_count[name], pre_count[name])
        assert got["precision"] == pytest.approx(tp[name] / pre_count[name])
        assert got["recall"] == pytest.approx(tp[name] / truth_count[name])
        assert got["f1"] == pytest.approx(2 * tp[name] / (pre_count[name] + truth_count[name]))
        assert got["map"] == pytest.approx(ap[name], abs=1e-9)
        counts = section["edits"]["per_class"][name]
        assert {key: counts[key] for key in expected_edits[name]} == expected_edits[name], name
    overall = report["overall"]
    total_tp, total_pre, total_truth = sum(tp.values()), sum(pre_count.values()), sum(truth_count.values())
    assert (overall["tp"], overall["fp"], overall["fn"]) == (total_tp, total_pre - total_tp, total_truth - total_tp)
    assert overall["precision"] == pytest.approx(total_tp / total_pre)
    assert overall["recall"] == pytest.approx(total_tp / total_truth)
    assert (overall["map"], overall["map50"]) == (pytest.approx(stats[0], abs=1e-9), pytest.approx(stats[1], abs=1e-9))

    edits = section["edits"]
    n_accepted = sum(accepted.values())
    expected_overall = {"accepted": n_accepted, "adjusted": 2, "relabeled": 1, "deleted": 2, "added": 2}
    assert {key: edits["overall"][key] for key in expected_overall} == expected_overall
    assert edits["matched_by"] == {"shape_id": n_accepted + 3, "iou": 0}
    def band(value):
        return ("0.95-1.0" if value >= 0.95 else "0.9-0.95" if value >= 0.9 else "0.75-0.9" if value >= 0.75
                else "0.5-0.75" if value >= 0.5 else "<0.5")

    expected_bands = Counter([band(iou(small["points"], small_box)), "<0.5"])
    assert {b: n for b, n in edits["adjusted_iou"].items() if n} == dict(expected_bands)
    assert {b: n for b, n in edits["relabeled_iou"].items() if n} == {"0.95-1.0": 1}  # the relabel kept its box
    manual = total_truth * SECONDS["draw"]
    spent = (n_accepted * 7 + 2 * 7 + 1 * 7 + 2 * 1.5 + 2 * 30)
    assert edits["time"]["manual_seconds"] == pytest.approx(manual)
    assert edits["time"]["with_prelabels_seconds"] == pytest.approx(spent)
    assert edits["time"]["saved_seconds"] == pytest.approx(manual - spent)
    confusion = edits["confusion"]
    assert confusion["labels"] == [*labels, "background"]
    expected = np.zeros((len(labels) + 1, len(labels) + 1), dtype=int)
    for c, a in pushed.items():
        name = label_of[c]
        if c in deleted:
            expected[labels.index(name), -1] += 1
        else:
            expected[labels.index(name), labels.index(new_label if c == relabel["id"] else name)] += 1
    for name, _ in (added0, added1):
        expected[-1, labels.index(name)] += 1
    np.testing.assert_array_equal(np.array(confusion["matrix"]), expected)

    # the HTML report is there, with its plots
    page = html_file.read_text()
    assert page.count("data:image/png;base64,") >= 4 and DATASET in page

    # thresholds: the chosen ones go into a copy of the ontology, which still loads
    from serverless.ontology import load_ontology

    ontology = tmp_path / "ontology.yaml"
    ontology.write_text((SAMPLES / "ontology.yaml").read_text())
    run_cli(["tune", "--dataset", DATASET, "--write", str(ontology)], env)
    tuned = load_ontology(ontology)
    # the run was made with --threshold 0.9 for every label: the sweep knows it starts there
    assert [section["thresholds"][name]["current"] for name in labels] == pytest.approx([0.9] * len(labels))
    scores = {name: np.concatenate([d.scores[d.labels == name] for d in pre_dets.values()]) for name in labels}
    for i, name in enumerate(tuned.label_names):
        best = section["thresholds"][name]["best_f1"]
        if best is not None:  # what is written keeps exactly the predictions the best threshold keeps
            written = np.float32(tuned.threshold_for(i))
            np.testing.assert_array_equal(scores[name] >= written, scores[name] >= np.float32(best["threshold"]))
            assert 0.9 <= tuned.threshold_for(i) <= best["threshold"]  # never under the run's own
    assert "# Ontology for the bundled sample photographs" in ontology.read_text()  # comments kept

    # hard samples: the frame with the most edits first, then pushed as a review task
    selection = tmp_path / "review.json"
    run_cli(["select", "--dataset", DATASET, "--by", "edits", "--budget", "1", "--out", str(selection)], env)
    picked = json.loads(selection.read_text())["samples"]
    assert [p["sample_id"] for p in picked] == [frames[0]]  # 5 edits on frame 0, 2 on frame 1, 0 on frame 2
    run_cli(["select", "--dataset", DATASET, "--by", "f1", "--budget", "34%", "--out", str(selection)], env)
    by_f1 = [p["sample_id"] for p in json.loads(selection.read_text())["samples"]]
    assert len(by_f1) == 2 and frames[2] not in by_f1  # frame 2 was accepted as is: F1 = 1
    run_cli(["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", "review-1",
             "--samples", str(selection)], env)
    review = next(t for t in fake.db.tasks.values() if t.name == "review-1")
    review_link = store.get_cvat_task(settings_for(fake).server, review.id)
    assert sorted(store.frames_of(review_link).values()) == sorted(by_f1)
