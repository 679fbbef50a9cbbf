"""Thresholds without evidence stay put, one threshold is one number everywhere, and runs
without scores are said to have none (issue: tune raised thresholds of a run scored against
itself and wrote a default explicitly; table, plot legend and JSON showed three numbers)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from sync.cli import app
from sync.console import CliError
from sync.evaluate.metrics import evaluate_detections
from sync.evaluate.sweep import sweep_thresholds
from sync.prelabel_store import file_sha256
from sync.store import Provenance, SampleIn, open_store
from tests.bridge_support import write_images
from tests.test_eval_cli import SIZE, labelled

BOXES = [[10, 10, 60, 60], [100, 100, 150, 150], [20, 120, 70, 170], [120, 10, 170, 60]]
ONTOLOGY = "defaults: {threshold: 0.3}\nlabels:\n  - name: person\n  - name: cat  # felines\n    threshold: 0.3\n"


def invoke(args, db):
    result = CliRunner().invoke(app, args, env={"AUTOLABEL_DB": db, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture
def self_scored(tmp_path):
    """A run (threshold 0.3) whose truth is exactly its own pre-labels: F1 = 1 at every
    threshold that keeps them all; scores 0.6..0.97, so 0.3 up to 0.6 is as good as the best."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url) as store:
        images = write_images(tmp_path / "img", 2, width=SIZE, height=SIZE)
        ds = store.get_or_create_dataset("d")
        sids = store.add_samples(ds, [SampleIn(str(p.resolve()), SIZE, SIZE, file_sha256(p)) for p in images])
        run = store.create_run(ds, "prelabel", name="pre", provenance=Provenance(
            thresholds={"person": 0.3, "cat": 0.3}, ontology_yaml=ONTOLOGY))
        pre = {
            sids[0]: labelled([("person", BOXES[0], 0.6), ("cat", BOXES[1], 0.9)]),
            sids[1]: labelled([("person", BOXES[2], 0.97), ("cat", BOXES[3], 0.95)]),
        }
        store.add_detections(run, pre)
        task = store.link_cvat_task(ds, "https://cvat.example.com", 1, run=store.finish_run(run))
        store.link_frames(task, {0: sids[0], 1: sids[1]})
        when = datetime(2026, 1, 1, tzinfo=UTC)
        job = store.upsert_cvat_job(task, 1, start_frame=0, stop_frame=1, updated_date=when)
        store.record_human_revision(job, pre, updated_date=when)
    ontology = tmp_path / "ontology.yaml"
    ontology.write_text(ONTOLOGY)
    return url, ontology


def test_tune_changes_nothing_when_the_current_threshold_is_as_good(self_scored):
    url, ontology = self_scored
    before = ontology.read_bytes()
    for by in ("f1", "time"):
        result = invoke(["tune", "--dataset", "d", "--by", by, "--write", str(ontology)], url)
        assert "nothing to change" in result.output
        assert ontology.read_bytes() == before  # no raise to 0.6/0.9, no explicit default
    rows = [line for line in invoke(["tune", "--dataset", "d"], url).output.splitlines() if "│" in line]
    assert all("unchanged" in row for row in rows if re.search(r"\b(person|cat)\b", row))


def test_a_value_equal_to_the_default_is_never_written(tmp_path):
    from sync.evaluate.tune import write_thresholds

    path = tmp_path / "o.yaml"
    path.write_text(ONTOLOGY)
    write_thresholds(path, {"person": 0.3, "cat": 0.3})
    assert path.read_text() == ONTOLOGY


def test_one_threshold_is_one_number_in_table_json_and_plot(self_scored, tmp_path):
    """The choice shown in the eval table, the JSON and the plot legend is the same value
    (the one tune would write); the JSON keeps the lowest score kept apart, as ``score``."""
    url, _ = self_scored
    report_file, html_file = tmp_path / "r.json", tmp_path / "r.html"
    result = invoke(["eval", "--dataset", "d", "--json", str(report_file), "--html", str(html_file)], url)
    report = json.loads(report_file.read_text())
    thresholds = report["runs"][0]["thresholds"]
    for label in ("person", "cat"):
        best = thresholds[label]["best_f1"]
        assert best["threshold"] == 0.3 == thresholds[label]["current"]  # as good as the best: kept
        assert best["score"] == pytest.approx(min(0.6, 0.9) if label == "person" else 0.9, abs=1e-6)
        row = next(line for line in result.output.splitlines() if line.startswith(("│ " + label, "┃ " + label))
                   and "0.300" in line)
        assert row.count("0.300") >= 3  # current, best-F1 threshold and min-time threshold: the same text
    from sync.evaluate.html import threshold_marks  # the legend of the F1-vs-threshold plot

    marks = threshold_marks(thresholds["person"])
    assert marks["best_f1"] == (0.3, "best F1 0.300") and marks["current"] == (0.3, "current 0.300")


def test_a_run_without_scores_has_no_threshold_sweep_and_is_flagged(self_scored, tmp_path):
    url, _ = self_scored
    coco = tmp_path / "noscores.json"
    images = sorted((tmp_path / "img").iterdir())
    coco.write_text(json.dumps({
        "images": [{"id": i + 1, "file_name": p.name, "width": SIZE, "height": SIZE} for i, p in enumerate(images)],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [120, 10, 50, 50]}],
    }))
    invoke(["import", "--dataset", "d", "--coco", str(coco), "--images", str(tmp_path / "img"),
            "--as-run", "other-tool"], url)
    report_file = tmp_path / "r.json"
    result = invoke(["eval", "--dataset", "d", "--pred", "pre", "--pred", "other-tool", "--json", str(report_file)], url)
    report = json.loads(report_file.read_text())
    unscored = next(run for run in report["runs"] if run["name"] == "other-tool")
    assert unscored["scores"] is False and unscored["thresholds"] == {}
    assert any("'other-tool' carry no scores" in note and "--rank-by f1" in note for note in report["notes"])
    assert "carry no scores" in " ".join(result.output.split())
    refused = CliRunner().invoke(app, ["tune", "--dataset", "d", "--pred", "other-tool"], env={"AUTOLABEL_DB": url})
    assert isinstance(refused.exception, CliError) and "has no scores" in str(refused.exception)


def test_ties_prefer_the_current_threshold_over_the_lowest(self_scored):
    """The sweep itself: among tied optima the one holding the current threshold wins."""
    from sync.evaluate.load import choose_runs, load_eval

    url, _ = self_scored
    store = open_store(url)
    (data,) = load_eval(store, choose_runs(store, "d"))
    sweeps = sweep_thresholds(evaluate_detections(data), floors={"person": 0.3, "cat": 0.3})
    for sweep in sweeps.values():
        assert sweep.keeps(0.3, "f1") and sweep.best_f1.threshold == 0.3
        assert not sweep.keeps(float(np.nextafter(np.float32(sweep.best_f1.highest), np.float32(2))), "f1")
