"""`autolabel functions render` and serverless.render: what lands in each function directory,
and the checked-in functions never drift from a fresh render of their ontology."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from serverless.ontology import load_ontology, parse_ontology
from serverless.render import (
    BROWSER_SAM_ID,
    KINDS,
    RenderError,
    RenderOptions,
    render,
    render_functions,
)
from sync.commands.functions import app

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "serverless" / "functions"
SAMPLES = ROOT / "samples"

BASE_AT_SHA = "IDEA-Research/grounding-dino-base@" + "0123456789abcdef" * 2 + "01234567"

SITE = """\
# a comment that must survive into the rendered copy
name: site-safety
score_attribute: true
defaults: {threshold: 0.3}
labels:
  - {name: person, prompts: [person, worker], threshold: 0.45}
  - {name: hard hat, prompts: [hard hat, helmet], type: mask}
  - {name: ladder, type: polygon}
"""


@pytest.fixture()
def site_file(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(SITE, encoding="utf-8")
    return path


def _yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _spec(path: Path):
    return json.loads(_yaml(path)["metadata"]["annotations"]["spec"])


def _env(path: Path) -> dict[str, str]:
    return {item["name"]: item["value"] for item in _yaml(path)["spec"]["env"]}


def invoke(*args):
    return CliRunner().invoke(app, list(map(str, args)))


# ----------------------------------------------------------------------------- the checked-in functions
def test_checked_in_functions_equal_a_fresh_render_of_the_checked_in_ontology(tmp_path):
    written = render_functions(load_ontology(FUNCTIONS / "ontology.yaml"), tmp_path)
    assert [p.name for p in written] == list(KINDS)
    for directory in written:
        for fresh in sorted(directory.iterdir()):
            shipped = FUNCTIONS / directory.name / fresh.name
            assert shipped.is_file(), f"{shipped} is missing: render the checked-in functions again"
            assert shipped.read_text(encoding="utf-8") == fresh.read_text(encoding="utf-8"), (
                f"{shipped} differs from a fresh render; run: autolabel functions render "
                "--ontology serverless/functions/ontology.yaml --out serverless/functions"
            )
        shipped_files = {p.name for p in (FUNCTIONS / directory.name).iterdir() if p.suffix in (".py", ".yaml")}
        assert shipped_files == {p.name for p in directory.iterdir()}


def test_checked_in_ontology_is_the_80_coco_classes_with_masks():
    ontology = load_ontology(FUNCTIONS / "ontology.yaml")
    assert len(ontology.labels) == 80
    assert ontology.name is None
    assert ontology.label_names[:3] == ("person", "bicycle", "car")
    assert {label.type for label in ontology.labels} == {"mask"}
    assert ontology.labels[ontology.index("mouse")].prompts == ("computer mouse",)


# ----------------------------------------------------------------------------- layout and content
def test_render_writes_one_directory_per_kind_with_the_documented_files(site_file, tmp_path):
    out = tmp_path / "out"
    result = invoke("render", "--ontology", site_file, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out / kind) for kind in KINDS]
    for kind in ("grounding-dino", "grounded-sam"):
        assert sorted(p.name for p in (out / kind).iterdir()) == [
            "function-gpu.yaml",
            "function.yaml",
            "main.py",
            "ontology.yaml",
        ]
    for kind in ("sam", "sam-interactor"):
        assert sorted(p.name for p in (out / kind).iterdir()) == ["function-gpu.yaml", "function.yaml", "main.py"]


def test_function_names_come_from_the_ontology_except_the_browser_sam(site_file, tmp_path):
    render_functions(load_ontology(site_file), tmp_path)
    names = {kind: _yaml(tmp_path / kind / "function.yaml")["metadata"]["name"] for kind in KINDS}
    assert names == {
        "grounding-dino": "site-safety-grounding-dino",
        "grounded-sam": "site-safety-grounded-sam",
        "sam": BROWSER_SAM_ID,
        "sam-interactor": "site-safety-sam-interactor",
    }
    unnamed = render(parse_ontology("labels: [{name: cat}]"))
    assert [f.name for f in unnamed] == ["grounding-dino", "grounded-sam", BROWSER_SAM_ID, "sam-interactor"]


def test_detector_dirs_carry_the_ontology_that_main_py_loads_and_the_spec_came_from(site_file, tmp_path):
    render_functions(load_ontology(site_file), tmp_path)
    for kind in ("grounding-dino", "grounded-sam"):
        directory = tmp_path / kind
        assert (directory / "ontology.yaml").read_text(encoding="utf-8") == SITE  # verbatim, comments kept
        copy = load_ontology(directory / "ontology.yaml")
        assert copy == load_ontology(site_file)
        for file in ("function.yaml", "function-gpu.yaml"):
            assert [label["name"] for label in _spec(directory / file)] == list(copy.label_names)
        main = (directory / "main.py").read_text(encoding="utf-8")
        assert 'Path(__file__).with_name("ontology.yaml")' in main
        compile(main, str(directory / "main.py"), "exec")
    assert _spec(tmp_path / "grounding-dino" / "function.yaml") == _spec(
        tmp_path / "grounding-dino" / "function-gpu.yaml"
    )


def test_spec_label_types_and_score_attribute(site_file, tmp_path):
    render_functions(load_ontology(site_file), tmp_path)
    gdino = _spec(tmp_path / "grounding-dino" / "function.yaml")
    grounded = _spec(tmp_path / "grounded-sam" / "function.yaml")
    assert [label["type"] for label in gdino] == ["rectangle", "rectangle", "rectangle"]  # boxes only
    assert [label["type"] for label in grounded] == ["rectangle", "mask", "polygon"]  # as the ontology says
    score = {
        "name": "score",
        "input_type": "number",
        "mutable": False,
        "values": ["0", "100", "1"],
        "default_value": "0",
    }
    assert all(label["attributes"] == [score] for label in gdino + grounded)
    for kind in ("sam", "sam-interactor"):
        assert _yaml(tmp_path / kind / "function.yaml")["metadata"]["annotations"]["spec"] == "[]"

    plain = render(parse_ontology("labels: [{name: cat}]"), kinds="grounding-dino")[0]
    (label,) = json.loads(yaml.safe_load(plain.files["function.yaml"])["metadata"]["annotations"]["spec"])
    assert label["attributes"] == []


def test_interactor_annotations(site_file, tmp_path):
    render_functions(load_ontology(site_file), tmp_path, kinds=["sam", "sam-interactor"])
    for kind in ("sam", "sam-interactor"):
        annotations = _yaml(tmp_path / kind / "function.yaml")["metadata"]["annotations"]
        assert annotations["type"] == "interactor"
        assert (annotations["version"], annotations["min_pos_points"], annotations["min_neg_points"]) == ("2", "1", "0")
        assert "startswith_box" not in annotations


def test_weights_environment_and_build(site_file, tmp_path):
    render_functions(load_ontology(site_file), tmp_path)
    assert _env(tmp_path / "grounding-dino" / "function.yaml") == {
        "AUTOLABEL_GDINO_MODEL": "/opt/weights/grounding-dino",
        "AUTOLABEL_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    grounded_gpu = _env(tmp_path / "grounded-sam" / "function-gpu.yaml")
    assert grounded_gpu["AUTOLABEL_GDINO_MODEL"] == "/opt/weights/grounding-dino"
    assert grounded_gpu["AUTOLABEL_SAM_CHECKPOINT"] == "/opt/weights/sam/sam_vit_h.pth"
    assert grounded_gpu["AUTOLABEL_SAM_MODEL_TYPE"] == "vit_h"
    assert grounded_gpu["AUTOLABEL_DEVICE"] == "cuda"
    assert grounded_gpu["NVIDIA_VISIBLE_DEVICES"] == "all"
    build = _yaml(tmp_path / "grounded-sam" / "function.yaml")["spec"]["build"]
    post = [d["value"] for d in build["directives"]["postCopy"]]
    assert post[0].startswith("pip install --no-cache-dir --find-links /opt/nuclio/wheels")
    assert "autolabel_cvat-*.whl)[models]" in post[0]
    assert post[1] == (
        "python -m serverless.weights fetch --dest /opt/weights "
        "--grounding-dino IDEA-Research/grounding-dino-tiny --sam vit_h"
    )
    for kind in ("sam", "sam-interactor"):  # SAM images do not carry Grounding DINO
        post = _yaml(tmp_path / kind / "function.yaml")["spec"]["build"]["directives"]["postCopy"]
        assert post[1]["value"] == "python -m serverless.weights fetch --dest /opt/weights --no-gdino --sam vit_h"
    gpu = _yaml(tmp_path / "sam" / "function-gpu.yaml")["spec"]
    assert gpu["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert gpu["triggers"]["myHttpTrigger"]["maxWorkers"] == 1
    assert _yaml(tmp_path / "sam" / "function.yaml")["spec"]["triggers"]["myHttpTrigger"]["maxWorkers"] == 2


def test_sam_size_option_leaves_the_browser_sam_on_vit_h(site_file, tmp_path):
    result = invoke(
        "render",
        "--ontology",
        site_file,
        "--out",
        tmp_path,
        "--sam-model-type",
        "vit_b",
        "--gdino-model",
        BASE_AT_SHA,
    )
    assert result.exit_code == 0, result.output
    assert (
        _env(tmp_path / "sam-interactor" / "function.yaml")["AUTOLABEL_SAM_CHECKPOINT"]
        == "/opt/weights/sam/sam_vit_b.pth"
    )
    assert _env(tmp_path / "grounded-sam" / "function.yaml")["AUTOLABEL_SAM_MODEL_TYPE"] == "vit_b"
    assert _env(tmp_path / "sam" / "function.yaml")["AUTOLABEL_SAM_MODEL_TYPE"] == "vit_h"
    post = _yaml(tmp_path / "grounding-dino" / "function.yaml")["spec"]["build"]["directives"]["postCopy"]
    assert post[-1]["value"].endswith(f"--grounding-dino {BASE_AT_SHA}")


def test_main_py_is_three_lines_over_the_adapter(tmp_path):
    render_functions(load_ontology(SAMPLES / "ontology.yaml"), tmp_path)
    factories = {
        "grounding-dino": "grounding_dino_function",
        "grounded-sam": "grounded_sam_function",
        "sam": "sam_embedding_function",
        "sam-interactor": "sam_interactor_function",
    }
    for kind, factory in factories.items():
        text = (tmp_path / kind / "main.py").read_text(encoding="utf-8")
        code = [line for line in text.split('"""')[-1].splitlines() if line.strip()]
        assert code[-1].startswith(f"init_context, handler = {factory}(")
        assert f"from serverless.nuclio_adapter import {factory}" in code
        assert len(code) <= 3


# ----------------------------------------------------------------------------- behaviour of the command
def test_render_is_deterministic_and_leaves_other_files_alone(site_file, tmp_path):
    render_functions(load_ontology(site_file), tmp_path)
    first = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    wheel = tmp_path / "grounding-dino" / "wheels" / "autolabel_cvat-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"wheel")
    render_functions(load_ontology(site_file), tmp_path)
    assert {p: p.read_bytes() for p in first} == first
    assert wheel.read_bytes() == b"wheel"
    assert not [p for p in tmp_path.rglob(".*")], "temporary files left behind"


def test_kinds_option_renders_only_those(site_file, tmp_path):
    result = invoke("render", "--ontology", site_file, "--out", tmp_path, "--kinds", "sam-interactor, grounding-dino")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["grounding-dino", "sam-interactor"]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--kinds", "grounding-dino,yolo"], "unknown function kind 'yolo'"),
        (["--kinds", ","], "no function kind"),
        (["--sam-model-type", "vit_x"], "sam_model_type must be one of vit_h, vit_l, vit_b"),
        (["--gdino-model", "x; rm -rf /"], "gdino_model must be a Hugging Face hub id"),
        (["--gdino-model", "IDEA-Research/grounding-dino-base"], "needs a pinned revision"),
        (["--gdino-model", "IDEA-Research/grounding-dino-base@main"], "not a 40-hex commit sha"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(site_file, tmp_path, args, expected):
    out = tmp_path / "out"
    result = invoke("render", "--ontology", site_file, "--out", out, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert expected in result.stderr
    assert not out.exists()


def test_bad_ontology_exits_2_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels:\n  - name: cat\n    threshold: 1.5\n", encoding="utf-8")
    result = invoke("render", "--ontology", bad, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {bad}:3: labels[0].threshold: must be a number in 0..1, got 1.5"
    assert not (tmp_path / "out").exists()
    missing = invoke("render", "--ontology", tmp_path / "nope.yaml", "--out", tmp_path / "out")
    assert missing.exit_code == 2 and "ontology file not found" in missing.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 20_000 + "]" * 20_000, ":1: YAML error: nested too deeply to be an ontology"),
        ("labels:\n  - name: hat\n    prompts: [" + " ".join(["hard"] * 300) + "]\n",
         ":3: labels[0].prompts[0]: is at least 303 tokens as a caption"),
    ],
    ids=["nested-yaml", "prompt-over-256-tokens"],
)
def test_hostile_ontologies_exit_2_with_one_short_line(tmp_path, text, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    result = invoke("render", "--ontology", bad, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output[-500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}{expected}") and len(lines[0]) < 400
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_a_render_error(site_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RenderError, match="cannot write"):
        render_functions(load_ontology(site_file), blocker)
    result = invoke("render", "--ontology", site_file, "--out", blocker)
    assert result.exit_code == 2 and result.stderr.startswith("error: cannot write")


def test_render_options_are_checked():
    with pytest.raises(RenderError, match="vit_x"):
        RenderOptions(sam_model_type="vit_x")
    with pytest.raises(RenderError, match="unknown function kind"):
        render(parse_ontology("labels: [{name: cat}]"), kinds=["sam2"])


def test_command_module_imports_no_heavy_library():
    code = (
        "import sys, sync.commands.functions, serverless.render\n"
        "print([m for m in ('torch', 'transformers', 'segment_anything', 'cv2') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stderr
