"""``autolabel experiment thresholds``: one model per pre-label threshold plus the human
reference, each trained (tiny: yolo yaml, imgsz 64, one epoch) and measured on the
human-corrected validation samples; table, plot, JSON and HTML."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sync.cli import app
from sync.console import CliError
from sync.store import open_store
from tests.train_support import fill_store

FAST = ["--model", "yolo11n.yaml", "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0",
        "--device", "cpu", "--val", "0.3"]


def run(args, db):
    return CliRunner().invoke(app, ["experiment", "thresholds", *args], env={"AUTOLABEL_DB": str(db), "COLUMNS": "220"})


def test_one_model_per_threshold_and_the_human_reference_measured_on_held_out_truth(tmp_path):
    db = tmp_path / "store.db"
    with open_store(db) as store:
        fill_store(store, tmp_path)
    files = {k: tmp_path / f"e.{k}" for k in ("json", "html", "png")}
    result = run(["--dataset", "pets", "--thresholds", "0.5,0.3", *FAST, "--out", str(tmp_path / "exp"),
                  "--json", str(files["json"]), "--html", str(files["html"]), "--plot", str(files["png"])], db)
    assert result.exit_code == 0, result.output[-3000:] + repr(result.exception)
    found = json.loads(files["json"].read_text())
    rows = found["rows"]
    assert [r["threshold"] for r in rows] == [0.3, 0.5, None]  # sorted, then the reference
    assert [r["training_run"] for r in rows] == ["thresholds-t0.3", "thresholds-t0.5", "thresholds-human"]
    assert rows[0]["train_boxes"] > rows[1]["train_boxes"]  # a higher threshold trains on fewer pre-labels
    assert all(isinstance(r["map50"], float) and 0.0 <= r["map50"] <= 1.0 for r in rows)
    for row in ("pre-labels >= 0.3", "pre-labels >= 0.5", "human (reference)"):
        assert row in result.stdout
    with open_store(db) as store:
        trainings = {r.name: r for r in store.list_training_runs("pets")}
        assert trainings["thresholds-t0.3"].labels == "prelabel:auto" and trainings["thresholds-t0.3"].threshold == 0.3
        assert trainings["thresholds-human"].labels == "human" and all(r.finished for r in trainings.values())
        val = {sid for sid, s in store.training_samples(trainings["thresholds-human"]).items() if s.split == "val"}
        for row in rows:  # each model's predictions cover exactly the held-out human-corrected samples
            assert set(store.covered_samples(store.get_run("pets", row["run"]))) == val
    assert found["samples"] == len(val)
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = files["html"].read_text()
    assert 'id="threshold-experiment"' in page and 'id="threshold-plot"' in page
    assert all(row["run"] in page for row in rows)


def test_every_threshold_is_checked_before_anything_trains(tmp_path):
    db = tmp_path / "store.db"
    with open_store(db) as store:
        fill_store(store, tmp_path)
    result = run(["--dataset", "pets", "--thresholds", "0.3,0.99", *FAST, "--out", str(tmp_path / "exp")], db)
    assert isinstance(result.exception, CliError)
    assert str(result.exception).startswith("threshold 0.99: ")
    assert not (tmp_path / "exp").exists()
    with open_store(db) as store:
        assert store.list_training_runs("pets") == []
    for bad, message in (("0.3,x", "is not a number"), ("0.3,0.3", "distinct"), ("2", "not in 0..1")):
        refused = run(["--dataset", "pets", "--thresholds", bad, *FAST], db)
        assert isinstance(refused.exception, CliError) and message in str(refused.exception)


def test_without_human_corrections_in_the_validation_split_it_refuses(tmp_path):
    db = tmp_path / "store.db"
    with open_store(db) as store:
        fill_store(store, tmp_path, truth=False)
    result = run(["--dataset", "pets", "--thresholds", "0.3", *FAST, "--out", str(tmp_path / "exp")], db)
    assert isinstance(result.exception, CliError)
    assert "human" in str(result.exception)
    assert not (tmp_path / "exp").exists()
