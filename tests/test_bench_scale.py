"""bench/scale.py: a tiny run compares the per-image reference loop, the pipelined process and
Ray side by side in one table, each row's rate follows from its seconds, and the two stored
modes stored the same annotations."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "scale.py"


@pytest.fixture(scope="module")
def bench():
    """The script as the module ``scale`` with bench/ on ``sys.path``: each mode runs in a
    spawned process, which imports the job's module by that name (spawn hands the child this
    ``sys.path``). ``sys.path`` and the ``models`` module it imports are put back afterwards."""
    had_models, path = "models" in sys.modules, list(sys.path)
    sys.path.insert(0, str(SCRIPT.parent))
    module = importlib.import_module("scale")
    yield module
    sys.modules.pop("scale", None)
    if not had_models:
        sys.modules.pop("models", None)
    sys.path[:] = path


def test_a_tiny_run_prints_every_mode_side_by_side(bench, tmp_path):
    argv = ["--models", "tiny", "--images", "3", "--size", "96x64", "--batch-size", "2", "--workers", "1",
            "--ray", "1", "--threshold", "0.5", "--device", "cpu", "--workdir", str(tmp_path / "work"),
            "--json", str(tmp_path / "report.json"), "--markdown", str(tmp_path / "table.md")]
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    rows = report["rows"]
    assert [row["mode"] for row in rows] == ["reference", "pipelined", "ray-1"]
    assert report["card"] and report["setup"]["device"] == "cpu"
    for row in rows:
        assert row["images"] == 3 and row["seconds"] > 0
        assert row["images_per_s"] == pytest.approx(3 / row["seconds"])
        assert row["gpu_busy"] is None  # no GPU sampled on the CPU
    reference = rows[0]["images_per_s"]
    assert [row["vs_reference"] for row in rows] == pytest.approx([row["images_per_s"] / reference for row in rows])
    pipelined, ray = rows[1], rows[2]
    assert pipelined["covered"] == ray["covered"] == 3
    assert pipelined["annotations"] == ray["annotations"]
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("| models | mode | device | images |")
    assert len([line for line in table.splitlines() if line.startswith("| tiny")]) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "huge"], "--models must list tiny and/or full, got 'huge'"),
        (["--size", "640"], "--size must be WxH of at least 8x8, got '640'"),
        (["--ray", "1,x"], "--ray must be worker counts such as 1,2, got '1,x'"),
        (["--ray", "0"], "--ray worker counts must be at least 1, got '0'"),
        (["--threshold", "2"], "--threshold must lie in 0..1, got 2.0"),
    ],
)
def test_bad_arguments_are_one_line(bench, argv, message):
    with pytest.raises(SystemExit, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        bench.main(argv)
