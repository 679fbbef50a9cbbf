"""The `autolabel` command as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES

AUTOLABEL = [sys.executable, "-m", "sync.cli"]


def run(args, env_extra=None, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run(AUTOLABEL + args, capture_output=True, text=True, env=env, cwd=cwd or ROOT, timeout=600)


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "sys.argv = ['autolabel', '--help']\n"
        "from sync.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'segment_anything', 'cv2', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    result = subprocess.run(
        [sys.executable, "-c", "import sync, sync.cli, cvat_bridge, serverless.ontology, serverless.detections, "
         "serverless.pipeline; import sys; print('torch' in sys.modules)"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.stdout.strip() == "False", result.stderr


def test_make_tiny_prints_export_lines_that_a_shell_can_eval(tmp_path):
    script = (
        f'eval "$({shlex_join(AUTOLABEL)} models make-tiny {tmp_path}/m 2>/dev/null)" && '
        'echo "$AUTOLABEL_GDINO_MODEL|$AUTOLABEL_SAM_CHECKPOINT|$AUTOLABEL_SAM_MODEL_TYPE"'
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT)
    gdino, ckpt, model_type = result.stdout.strip().split("|")
    assert Path(gdino, "config.json").is_file() and Path(gdino, "vocab.txt").is_file()
    assert Path(ckpt).is_file() and Path(model_type).is_file()


def shlex_join(parts):
    import shlex

    return " ".join(shlex.quote(p) for p in parts)


@pytest.fixture()
def tiny_env(tiny_models):
    return tiny_models.environment()


def test_prelabel_writes_coco_and_skips_unreadable(tmp_path, tiny_env):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("astronaut.jpg", "coffee.jpg"):
        shutil.copy(SAMPLES / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    out = tmp_path / "out.json"
    result = run(["prelabel", str(folder), "--ontology", str(SAMPLES / "ontology.yaml"), "--masks", "--out", str(out)],
                 tiny_env)
    assert result.returncode == 0, result.stderr
    assert "broken.jpg" in result.stderr and "not a recognised image format" in result.stderr
    assert "TINY RANDOM MODELS" in result.stderr
    assert "2 images" in result.stdout
    data = json.loads(out.read_text())
    assert [img["file_name"] for img in data["images"]] == ["astronaut.jpg", "coffee.jpg"]  # relative to the folder
    assert [c["name"] for c in data["categories"]] == ["person", "cat", "cup", "rocket"]
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= width + 1e-3 and y + h <= height + 1e-3
        assert 0 <= ann["score"] <= 1
        assert "segmentation" in ann


def test_prelabel_with_prompt(tmp_path, tiny_env):
    out = tmp_path / "p.json"
    result = run(["prelabel", str(SAMPLES / "chelsea.jpg"), "--prompt", "cat. cup", "--out", str(out)], tiny_env)
    assert result.returncode == 0, result.stderr
    assert [c["name"] for c in json.loads(out.read_text())["categories"]] == ["cat", "cup"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "  "], "prompt is empty"),
        (["--prompt", "cat", "--threshold", "1.5"], "--threshold must lie in 0..1"),
        (["--prompt", "cat", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--ontology", "missing.yaml"], "missing.yaml"),
        ([], "give exactly one of --ontology FILE or --prompt"),
    ],
)
def test_bad_input_one_line_error(tmp_path, tiny_env, args, message):
    result = run(["prelabel", str(SAMPLES / "chelsea.jpg"), "--out", str(tmp_path / "x.json"), *args], tiny_env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "x.json").exists()


def test_missing_weights_one_line_error(tmp_path):
    result = run(["prelabel", str(SAMPLES / "chelsea.jpg"), "--prompt", "cat", "--out", str(tmp_path / "x.json"),
                  "--gdino-model", str(tmp_path / "no-such-model")])
    assert result.returncode == 2
    assert "cannot load Grounding DINO" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_images(tmp_path, tiny_env):
    result = run(["prelabel", str(tmp_path), "--prompt", "cat", "--out", str(tmp_path / "x.json")], tiny_env)
    assert result.returncode == 2 and "no image files found" in result.stderr


def test_demo_falls_back_to_tiny_models_offline(tmp_path):
    env = {"AUTOLABEL_GDINO_MODEL": "", "AUTOLABEL_SAM_CHECKPOINT": "", "AUTOLABEL_SAM_MODEL_TYPE": ""}
    out = tmp_path / "demo.json"
    result = run(["demo", "--out", str(out), "--tiny-dir", str(tmp_path / "tiny")], env)
    assert result.returncode == 0, result.stderr
    assert "falling back to tiny random models" in result.stderr
    assert "TINY RANDOM MODELS" in result.stderr
    data = json.loads(out.read_text())
    assert len(data["images"]) == 4
    assert data["info"]["tiny_models"] is True


def test_make_tiny_prints_a_spec_for_every_registered_backend_that_loads(tmp_path):
    from serverless.models import registry
    from sync.commands.models import tiny_variable

    result = subprocess.run(
        [*AUTOLABEL, "models", "make-tiny", str(tmp_path / "m")], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
    for backend in registry.backends():
        spec = registry.parse_spec(exports[tiny_variable(backend.name)], backend.kind, {})
        assert spec.backend == backend.name
        assert backend.on_disk(spec.weights) is not None, backend.name


def test_make_tiny_names_an_unknown_backend_in_one_line(tmp_path):
    result = subprocess.run(
        [*AUTOLABEL, "models", "make-tiny", str(tmp_path), "--backend", "yolo-wrld"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2 and "'yolo-wrld'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not result.stdout
