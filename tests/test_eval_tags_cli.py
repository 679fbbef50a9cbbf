"""`autolabel eval` and `autolabel tune` on a store that holds tags (image-level labels): a
pre-label run of a classifier's tags with scores, a human revision with the annotators' tags,
and a run that mixes boxes and tags.

Tags are rows of shape type ``tag`` whose box is the whole frame (`sync.store.records.
AnnotationIn`), as pre-labeling and pulls store them. Expected numbers are counted by hand in
the comments.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from serverless.detections import Detections
from serverless.ontology import load_ontology, parse_ontology
from sync.cli import app
from sync.evaluate.html import TAG_PLOT_ID
from sync.store import Provenance, SampleIn, open_store
from sync.store.records import AnnotationIn

W, H = 40, 30
TAGS_ONTOLOGY = """\
defaults:
  threshold: 0.3
labels:
  - name: indoor   # inside a building
    type: tag
    threshold: 0.3
  - name: outdoor
    type: tag
"""
MIXED_ONTOLOGY = """\
labels:
  - {name: cat, threshold: 0.5}
  - {name: dog, type: polygon}
  - {name: indoor, type: tag}
"""
TRUTH = [{"indoor"}, {"outdoor"}, {"outdoor"}, {"indoor"}]
PRED = [{"indoor": 0.9, "outdoor": 0.35}, {"outdoor": 0.8}, {"indoor": 0.4, "outdoor": 0.6}, {"indoor": 0.7}]
"""Four images with a human revision; a fifth, tagged ``indoor`` 0.95 by the run, has none."""
CAT = [2, 2, 20, 20]


def tag_row(sample_id, label, score=None):
    return AnnotationIn(sample_id, label, 0, 0, W, H, shape_type="tag", score=score)


def human(items) -> Detections:
    """A human revision's annotations of one image: ``[(label, box or None for a tag)]``."""
    n = len(items)
    return Detections(
        xyxy=np.array([box or [0, 0, W, H] for _, box in items], np.float32).reshape(-1, 4),
        scores=np.ones(n, np.float32),
        class_ids=np.zeros(n, np.int64),
        labels=np.array([label for label, _ in items] if n else [], dtype=str),
        data={"shape_type": np.array(["rectangle" if box else "tag" for _, box in items] if n else [], dtype=str)},
    )


def add_revision(store, ds, run, sample_ids, truth, task_id):
    task = store.link_cvat_task(ds, "https://cvat.example.com", task_id, run=run)
    store.link_frames(task, dict(enumerate(sample_ids)))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    job = store.upsert_cvat_job(task, task_id, start_frame=0, stop_frame=len(sample_ids) - 1, updated_date=when)
    store.record_human_revision(job, {sid: human(items) for sid, items in zip(sample_ids, truth)}, updated_date=when)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """``tags``: run ``clip`` (tags only) and a human revision of the first four images; an
    import ``no-scores`` of the same tags without scores. ``mixed``: run ``both`` with a cat
    box and an ``indoor`` tag on one image, and a revision that keeps both."""
    root = tmp_path_factory.mktemp("eval-tags")
    path = root / "store.db"
    with open_store(f"sqlite:///{path}") as store:
        ds = store.get_or_create_dataset("tags")
        ids = store.add_samples(ds, [SampleIn(f"/photos/{i}.jpg", W, H) for i in range(5)])
        provenance = Provenance.from_ontology(parse_ontology(TAGS_ONTOLOGY, "tags.yaml"), model_id="clip-tiny")
        run = store.create_run(ds, "prelabel", name="clip", provenance=provenance)
        rows = [tag_row(sid, label, score) for sid, tags in zip(ids, PRED) for label, score in tags.items()]
        store.add_annotations(run, [*rows, tag_row(ids[4], "indoor", 0.95)])
        run = store.finish_run(run)
        add_revision(store, ds, run, ids[:4], [[(label, None) for label in sorted(t)] for t in TRUTH], 1)
        store.add_finished_run(
            ds, "import", [tag_row(sid, label) for sid, tags in zip(ids, PRED) for label in tags],
            name="no-scores", provenance=Provenance(params={"role": "prediction", "with_scores": False}),
        )

        ds = store.get_or_create_dataset("mixed")
        (sid,) = store.add_samples(ds, [SampleIn("/photos/mixed.jpg", W, H)])
        provenance = Provenance.from_ontology(parse_ontology(MIXED_ONTOLOGY, "mixed.yaml"))
        run = store.create_run(ds, "prelabel", name="both", provenance=provenance)
        store.add_annotations(run, [AnnotationIn(sid, "cat", *CAT, score=0.9), tag_row(sid, "indoor", 0.8)])
        add_revision(store, ds, store.finish_run(run), [sid], [[("cat", CAT), ("indoor", None)]], 2)
    return {"path": path, "url": f"sqlite:///{path}", "ids": ids, "root": root}


def invoke(args, db):
    result = CliRunner().invoke(app, args, env={"AUTOLABEL_DB": db["url"], "COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_load_keeps_tags_out_of_the_shapes_and_leaves_unrevised_samples_out(db):
    from sync.evaluate.load import choose_runs, load_eval

    with open_store(db["url"]) as store:
        (data,) = load_eval(store, choose_runs(store, "mixed"))
        assert data.labels == ("cat", "dog")
        assert [det.labels.tolist() for det in (*data.truth, *data.pred)] == [["cat"], ["cat"]]
        assert data.tags.labels == ("indoor",) and data.tags.truth.tolist() == [[True]]
        assert data.tags.scores.tolist() == [[pytest.approx(0.8)]]

        (data,) = load_eval(store, choose_runs(store, "tags"))
        assert data.labels == () and not data.has_shapes
        assert [int(i) for i in data.sample_ids] == db["ids"][:4]  # the fifth has no human revision
        assert data.tags.labels == ("indoor", "outdoor")
        assert data.tags.truth.tolist() == [[True, False], [False, True], [False, True], [True, False]]
        assert data.pred_thresholds == {"indoor": 0.3, "outdoor": 0.3}


def test_eval_of_a_tag_run_reports_only_its_tags(db, tmp_path):
    """indoor: given on s0 (0.9, right), s2 (0.4, wrong), s3 (0.7, right): P 2/3, R 1, F1 0.8;
    outdoor: s0 (0.35, wrong), s1 (0.8), s2 (0.6): the same. Exact sets: s1 and s3 → 1/2.
    Top-1: every image has one true tag and the highest tag is it each time → 1. Best F1:
    indoor keeps >= 0.7 (F1 1), outdoor >= 0.6 (F1 1); written as 0.7 and 0.6."""
    report_file, page = tmp_path / "report.json", tmp_path / "report.html"
    result = invoke(["eval", "--dataset", "tags", "--json", str(report_file), "--html", str(page)], db)
    report = json.loads(report_file.read_text())
    assert report["overall"] is None and report["per_class"] is None and report["samples"] == 4
    tags = report["tags"]
    for label in ("indoor", "outdoor"):
        m = tags["per_label"][label]
        assert (m["tp"], m["fp"], m["fn"], m["support"], m["predictions"]) == (2, 1, 0, 2, 3)
        assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0 and m["f1"] == pytest.approx(0.8)
    assert tags["micro"]["f1"] == pytest.approx(0.8) and tags["macro"]["f1"] == pytest.approx(0.8)
    assert tags["accuracy"] == 0.5 and tags["top1_accuracy"] == 1.0 and tags["top1_samples"] == 4
    best = {label: entry["best_f1"] for label, entry in tags["thresholds"].items()}
    assert best["indoor"]["threshold"] == 0.7 and best["outdoor"]["threshold"] == 0.6
    assert best["indoor"]["f1"] == 1.0 and tags["thresholds"]["indoor"]["current"] == 0.3

    out = result.output
    assert "Box metrics" not in out and "IoU" not in out and "Tags (image-level labels) of clip" in out
    assert "0.500 (2 of 4 samples)" in out and "top-1 accuracy: 1.000" in out
    html = page.read_text()
    assert f'id="{TAG_PLOT_ID}"' in html and "Box metrics" not in html


def test_eval_of_boxes_and_tags_keeps_them_apart(db, tmp_path):
    report_file = tmp_path / "mixed.json"
    invoke(["eval", "--dataset", "mixed", "--json", str(report_file)], db)
    report = json.loads(report_file.read_text())
    assert list(report["per_class"]) == ["cat", "dog"]
    assert report["overall"]["truth"] == 1 and report["overall"]["f1"] == 1.0  # the tag is no full-frame box
    assert report["tags"]["per_label"]["indoor"]["tp"] == 1 and report["tags"]["accuracy"] == 1.0
    assert report["runs"][0]["edits"]["overall"]["accepted"] == 1


def test_tune_writes_tag_thresholds_and_then_has_nothing_to_change(db, tmp_path):
    ontology = tmp_path / "tags.yaml"
    ontology.write_text(TAGS_ONTOLOGY)
    dry = invoke(["tune", "--dataset", "tags"], db)
    assert "Tag thresholds for clip (best F1)" in dry.output and "dry run" in dry.output
    assert ontology.read_text() == TAGS_ONTOLOGY

    result = invoke(["tune", "--dataset", "tags", "--write", str(ontology)], db)
    assert "indoor: 0.300 → 0.700" in result.output and "outdoor: 0.300 (the default) → 0.600" in result.output
    assert ontology.read_text() == (
        "defaults:\n  threshold: 0.3\nlabels:\n"
        "  - name: indoor   # inside a building\n    type: tag\n    threshold: 0.7\n"
        "  - name: outdoor\n    threshold: 0.6\n    type: tag\n"
    )
    tuned = load_ontology(ontology)
    assert [tuned.threshold_for(i) for i in range(2)] == [0.7, 0.6]

    again = invoke(["tune", "--dataset", "tags", "--by", "time", "--write", str(ontology)], db)
    assert "nothing to change" in again.output and "tags are tuned by best F1" in again.output
    assert [load_ontology(ontology).threshold_for(i) for i in range(2)] == [0.7, 0.6]


def test_tune_refuses_a_run_without_scores(db):
    from sync.console import CliError

    args = ["tune", "--dataset", "tags", "--pred", "no-scores"]
    result = CliRunner().invoke(app, args, env={"AUTOLABEL_DB": db["url"]})
    assert isinstance(result.exception, CliError) and "'no-scores' has no scores" in str(result.exception)
