"""bench/train.py: its --tiny run trains yolo11n (imgsz 64, 1 epoch), serves the checkpoint it
trained through the yolo backend next to a tiny Grounding DINO, and prints two tables whose
rates follow from the seconds they print."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "train.py"


@pytest.fixture(scope="module")
def bench():
    """The script as a module. Its in-process run sets process-wide state: torch's flush of
    denormal floats and its thread count (the benchmark and ultralytics' trainer both set them),
    OMP_NUM_THREADS (ultralytics' import sets it) and the ``models`` module (bench/models.py,
    which it imports): all put back afterwards."""
    import torch

    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    had_models = "models" in sys.modules
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_train", None)
    if not had_models:
        sys.modules.pop("models", None)
    torch.set_flush_denormal(False)  # torch's default; it has no getter
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(scope="module")
def tiny_run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-train")
    argv = ["--tiny", "--workdir", str(out / "work"), "--json", str(out / "report.json"),
            "--markdown", str(out / "tables.md")]
    assert bench.main(argv) == 0
    return json.loads((out / "report.json").read_text()), (out / "tables.md").read_text(), out / "work"


def _tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``, each as rows of cells (header first, rule dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_tiny_tables_have_every_column_and_row(bench, tiny_run):
    report, text, _ = tiny_run
    training, inference = _tables(text)
    assert training[0] == list(bench.TRAINING_COLUMNS)
    assert inference[0] == list(bench.INFERENCE_COLUMNS)
    assert [row[1] for row in training[1:]] == ["64"]
    assert [row[1] for row in inference[1:]] == ["yolo", "grounding-dino"]
    assert inference[-1][0].startswith("Grounding DINO-T") and inference[-1][-2] == "1.00x"
    assert all(len(row) == len(training[0]) for row in training)
    assert all(len(row) == len(inference[0]) for row in inference)
    assert text.count("TINY run") == 2 and "GPU not measured" in text and "projection" in text
    assert report["tiny"] is True and report["machine"]["cpu"] and report["machine"]["torch"]


def test_the_served_yolo_is_the_checkpoint_trained_here(tiny_run):
    report, _, work = tiny_run
    (trained,) = report["training"]
    checkpoint = Path(trained["checkpoint"])
    assert checkpoint.is_file() and checkpoint.is_relative_to(work)
    assert report["inference"][0]["spec"] == f"yolo:{checkpoint}"
    assert report["inference"][0]["input"] == "64x64"  # the checkpoint's own training size
    assert trained["settings"]["imgsz"] == 64 and trained["settings"]["close_mosaic"] == 0
    assert trained["workers"] == 0 and trained["torch_threads"] >= 1


def test_training_rates_follow_from_the_printed_seconds(tiny_run):
    report, text, _ = tiny_run
    training, _ = _tables(text)
    for row, cells in zip(report["training"], training[1:], strict=True):
        assert row["images"] == 8 and row["epochs"] == len(row["epoch_s"]) == 1
        assert all(s > 0 for s in row["epoch_s"]) and all(r > 0 for r in row["images_per_s"])
        for seconds, rate in zip(row["epoch_s"], row["images_per_s"], strict=True):
            assert rate == pytest.approx(row["images"] / seconds, rel=1e-3)
        assert row["total_images_per_s"] == pytest.approx(row["images"] * row["epochs"] / sum(row["epoch_s"]), rel=1e-3)
        images, seconds, rates = int(cells[2]), float(cells[7].split(" / ")[0]), float(cells[8].split(" / ")[0])
        assert rates == pytest.approx(images / seconds, rel=5e-3)  # both as printed


def test_inference_rates_and_speed_ups_follow_from_the_medians(bench, tiny_run):
    report, text, _ = tiny_run
    _, inference = _tables(text)
    reference = report["inference"][-1]["ms"]
    for row, cells in zip(report["inference"], inference[1:], strict=True):
        assert row["params_m"] > 0 and row["gflops"] > 0 and row["ms"] > 0 and row["images_per_s"] > 0
        assert len(row["ms_samples"]) == row["photos"] * row["repeats"] == 4
        assert row["ms"] == pytest.approx(statistics.median(row["ms_samples"]), abs=0.01)
        assert row["images_per_s"] == pytest.approx(1000 / row["ms"], rel=1e-3)
        assert row["speed_up"] == pytest.approx(reference / row["ms"], abs=0.01)
        assert row["gflops"] == pytest.approx(row["flops"] / 1e9, abs=0.005)
        assert row["h100_images_per_s"] == pytest.approx(0.40 * 989e12 / row["flops"], abs=0.05)
        assert float(cells[6]) == pytest.approx(1000 / float(cells[5]), rel=5e-3)  # both as printed
        assert float(cells[7].rstrip("x")) == pytest.approx(reference / float(cells[5]), abs=0.01)


def test_dataset_labels_are_yolo_boxes_of_the_two_classes(bench, tmp_path):
    from PIL import Image

    data = bench.write_dataset(tmp_path, train=3, val=2, size=(96, 64), seed=1)
    assert "names:\n  0: cat\n  1: dog\n" in data.read_text()
    for split, count in (("train", 3), ("val", 2)):
        labels = sorted((tmp_path / "labels" / split).glob("*.txt"))
        assert [p.stem for p in labels] == [p.stem for p in sorted((tmp_path / "images" / split).glob("*.jpg"))]
        assert len(labels) == count
        for path in labels:
            rows = np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()])
            assert 1 <= len(rows) <= 4 and set(rows[:, 0]) <= {0.0, 1.0}
            cx, cy, w, h = rows[:, 1:].T
            assert (w > 0).all() and (h > 0).all() and (cx - w / 2 >= 0).all() and (cx + w / 2 <= 1).all()
            assert (cy - h / 2 >= 0).all() and (cy + h / 2 <= 1).all()
        with Image.open(tmp_path / "images" / split / "0000.jpg") as image:
            assert image.size == (96, 64)


@pytest.mark.parametrize("argv", [["--imgsz", "16"], ["--imgsz", "x"], ["--epochs", "0"], ["--repeats", "0"]])
def test_bad_arguments_are_refused(bench, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--tiny", *argv])
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err
