"""`autolabel functions render` for backends other than Grounding DINO and SAM: a function per
role, spec labels per role, and every model's variable points where the build's fetch writes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from serverless import weights
from serverless.ontology import parse_ontology
from serverless.render import WEIGHTS_ROOT, RenderError, RenderOptions, render
from sync.commands.functions import app

SHA = "0123456789abcdef" * 2 + "01234567"
DIGEST = "ab" * 32
MIXED = """\
name: yard
score_attribute: true
labels:
  - {name: truck, prompts: [truck, lorry]}
  - {name: cone, type: mask}
  - {name: fence, type: polygon}
  - {name: rainy, prompts: [a photo on a rainy day], type: tag}
  - {name: night, prompts: [a photo at night], type: tag}
"""
PINS = (
    ("owlv2", f"google/owlv2-base-patch16-ensemble@{SHA}"),
    ("sam2", f"facebook/sam2.1-hiera-tiny@{SHA}"),
    ("clip", f"openai/clip-vit-base-patch32@{SHA}"),
    ("sam3", f"facebook/sam3@{SHA}"),
    ("yolo-world", f"https://example.org/v8.3.0/yolov8s-worldv2.pt#sha256={DIGEST}"),
    ("yolo-world-clip", f"openai/clip-vit-base-patch32@{SHA}"),
    ("yolo", f"https://example.org/runs/detect/train/weights/best.pt#sha256={DIGEST}"),
)


@pytest.fixture(scope="module")
def mixed():
    return parse_ontology(MIXED, "yard.yaml")


def by_kind(functions):
    return {f.kind: f for f in functions}


def config(function, gpu=False):
    return yaml.safe_load(function.files["function-gpu.yaml" if gpu else "function.yaml"])


def env_of(function) -> dict[str, str]:
    return {item["name"]: item["value"] for item in config(function)["spec"]["env"]}


def fetch_args(function) -> list[str]:
    post = config(function)["spec"]["build"]["directives"]["postCopy"]
    command = next(d["value"] for d in post if "serverless.weights fetch" in d["value"])
    return shlex.split(command)[3:]  # after "python -m serverless.weights"


def fetched_paths(args: list[str]) -> set[str]:
    """Where `python -m serverless.weights fetch` ARGS writes each model (parsed by its own parser)."""
    parsed = weights._parser().parse_args(args)
    dest = Path(parsed.dest)
    paths = {str(dest / name) for name in weights.args_names(parsed.hf)}
    for text in parsed.file:
        name, value = weights.parse_pair(text, "--file")
        paths.add(str(weights.file_target(dest, name, weights.FileSource.parse(value))))
    paths |= {str(weights.sam_checkpoint_path(dest, t)) for t in parsed.sam}
    if not parsed.no_gdino:
        paths.add(str(dest / weights.GDINO_DIR))
    return paths


def model_paths(env: dict[str, str]) -> set[str]:
    """Every weights path the function's variables name (spec strings split on ':')."""
    found = set()
    for name in ("AUTOLABEL_DETECTOR", "AUTOLABEL_SEGMENTER", "AUTOLABEL_CLASSIFIER", "AUTOLABEL_GDINO_MODEL",
                 "AUTOLABEL_SAM_CHECKPOINT"):
        found |= {part for part in env.get(name, "").split(":") if part.startswith(WEIGHTS_ROOT)}
    return found


def test_a_mixed_ontology_gets_a_function_per_role_with_the_labels_each_can_give(mixed):
    options = RenderOptions(detector="owlv2", segmenter="sam2", weights=PINS)
    functions = by_kind(render(mixed, options=options))
    assert list(functions) == ["owlv2", "owlv2-sam2", "sam2-interactor", "clip"]
    spec = {kind: json.loads(config(f)["metadata"]["annotations"]["spec"]) for kind, f in functions.items()}
    assert [(label["name"], label["type"]) for label in spec["owlv2"]] == [
        ("truck", "rectangle"), ("cone", "rectangle"), ("fence", "rectangle")]
    assert [(label["name"], label["type"]) for label in spec["owlv2-sam2"]] == [
        ("truck", "rectangle"), ("cone", "mask"), ("fence", "polygon")]
    assert [(label["name"], label["type"]) for label in spec["clip"]] == [("rainy", "tag"), ("night", "tag")]
    assert all(label["attributes"][0]["name"] == "score" for label in spec["clip"])
    assert spec["sam2-interactor"] == []
    names = {kind: config(f)["metadata"]["name"] for kind, f in functions.items()}
    assert names == {"owlv2": "yard-owlv2", "owlv2-sam2": "yard-owlv2-sam2", "sam2-interactor": "yard-sam2-interactor",
                     "clip": "yard-clip"}
    assert "classifier_function" in functions["clip"].files["main.py"] and "ontology.yaml" in functions["clip"].files
    assert "detector_function" in functions["owlv2"].files["main.py"]
    assert "sam_interactor_function" in functions["sam2-interactor"].files["main.py"]


@pytest.mark.parametrize(
    ("options", "kinds"),
    [
        (RenderOptions(detector="owlv2", segmenter="sam2", weights=PINS), None),
        (RenderOptions(detector="yolo-world", weights=PINS), None),
        (RenderOptions(detector="yolo", segmenter="sam2", weights=PINS), None),
        (RenderOptions(detector="sam3", weights=PINS), None),
        (RenderOptions(detector=f"owlv2:google/owlv2-base-patch16-ensemble@{SHA}", classifier=f"clip:x/y@{SHA}"), "detector,classifier"),
    ],
)
def test_every_model_variable_points_where_the_build_fetches_it(mixed, options, kinds):
    for function in render(mixed, kinds, options):
        for gpu in (False, True):
            env = {item["name"]: item["value"] for item in config(function, gpu)["spec"]["env"]}
            assert env["HF_HUB_OFFLINE"] == "1"
            paths = model_paths(env)
            assert paths, function.kind
            assert paths == fetched_paths(fetch_args(function)), function.kind


def test_a_masking_detector_keeps_label_types_and_gets_no_pipeline(mixed):
    functions = by_kind(render(mixed, options=RenderOptions(detector="sam3", weights=PINS)))
    assert "sam3" in functions and not any(kind.startswith("sam3-") for kind in functions)
    spec = json.loads(config(functions["sam3"])["metadata"]["annotations"]["spec"])
    assert [label["type"] for label in spec] == ["rectangle", "mask", "polygon"]


def test_a_tags_only_ontology_renders_only_its_classifier():
    only_tags = parse_ontology("labels:\n  - {name: rainy, type: tag}\n  - {name: sunny, type: tag}\n")
    functions = render(only_tags, options=RenderOptions(weights=PINS))
    assert [f.kind for f in functions] == ["clip"]
    assert env_of(functions[0])["AUTOLABEL_CLASSIFIER"] == f"clip:{WEIGHTS_ROOT}/clip"
    assert fetch_args(functions[0])[-1] == f"clip=openai/clip-vit-base-patch32@{SHA}"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (RenderOptions(detector="owlv2"), "--weights owlv2=OWNER/REPO@<commit sha>"),
        (RenderOptions(detector="owlv2:google/owlv2-base-patch16-ensemble"), "--weights owlv2=OWNER/REPO@<commit sha>"),
        (RenderOptions(detector="owlv2", weights=(("owlv2", "google/owlv2-base-patch16-ensemble@main"),)), "not a 40-hex commit sha"),
        (RenderOptions(detector="yolo-world", weights=(("yolo-world", "https://x.org/w.pt"),)), "sha256"),
        (RenderOptions(detector="owl-v2"), "unknown model backend 'owl-v2'"),
        (RenderOptions(detector="sam2"), "sam2 is a segmenter, not a detector"),
    ],
)
def test_unpinned_or_unknown_models_are_refused_naming_them(mixed, options, message):
    with pytest.raises(RenderError) as caught:
        render(mixed, options=options)
    assert message in str(caught.value)


def test_the_cli_renders_other_backends_and_refuses_unpinned_ones_in_one_line(tmp_path):
    ontology = tmp_path / "yard.yaml"
    ontology.write_text(MIXED, encoding="utf-8")
    pins = [arg for name, value in PINS for arg in ("--weights", f"{name}={value}")]
    result = CliRunner().invoke(app, ["render", "--ontology", str(ontology), "--out", str(tmp_path / "out"),
                                      "--detector", "yolo-world", "--segmenter", "sam2", *pins])
    assert result.exit_code == 0, result.output
    assert [Path(line).name for line in result.stdout.splitlines()] == [
        "yolo-world", "yolo-world-sam2", "sam2-interactor", "clip"]
    assert (tmp_path / "out" / "yolo-world" / "function-gpu.yaml").is_file()
    refused = CliRunner().invoke(app, ["render", "--ontology", str(ontology), "--out", str(tmp_path / "o2"),
                                       "--detector", "owlv2"])
    assert refused.exit_code == 2 and "owlv2" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    ("ontology", "options", "kinds", "message"),
    [
        (MIXED, RenderOptions(detector="sam3", weights=PINS), "pipeline", "sam3 gives masks itself"),
        ("labels: [{name: rainy, type: tag}]\n", RenderOptions(weights=PINS), "detector", "only tag labels"),
        ("labels: [{name: truck}]\n", RenderOptions(weights=PINS), "classifier", "no tag labels"),
        (MIXED, RenderOptions(weights=PINS), "tracker", "unknown function kind 'tracker'"),
    ],
)
def test_a_function_the_models_cannot_give_is_refused_saying_why(ontology, options, kinds, message):
    with pytest.raises(RenderError) as caught:
        render(parse_ontology(ontology), kinds, options)
    assert message in str(caught.value)
