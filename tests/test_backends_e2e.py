"""Every registered backend end to end on the sample photos with its tiny weights: through
``autolabel prelabel`` and through its rendered Nuclio function served by ``autolabel serve``
over real HTTP, called as CVAT's lambda manager calls it. (The cvat-sdk modules:
``tests/test_cvat_functions_backends.py``; the protocols: ``tests/test_models_protocols.py``.)"""

from __future__ import annotations

import base64
import json

import pytest

from serverless.models import registry
from serverless.ontology import parse_ontology
from serverless.render import RenderOptions, render_functions
from serverless.serve import FunctionHost, ServeOptions
from tests.conftest import SAMPLES
from tests.test_serve import CVAT_DASHBOARD_HEADERS, CVAT_DIRECT_HEADERS, INVOKE, call, cvat_body, invocation_headers, png_b64

SHA = "0123456789abcdef" * 2 + "01234567"
ONTOLOGY = """\
name: e2e
defaults: {threshold: 0.0, text_threshold: 0.0, max_detections: 4}
labels:
  - {name: person, prompts: [person, astronaut]}
  - {name: cup, type: mask}
  - {name: rocket, type: polygon}
  - {name: sunny, prompts: [a sunny day], type: tag}
  - {name: indoor, prompts: [indoors], type: tag}
"""
DETECTORS = registry.backends("detector")
SEGMENTERS = [b for b in registry.backends("segmenter") if b.name != "sam"]  # SAM 1: tests/test_nuclio_functions.py


@pytest.fixture(scope="module")
def tiny_specs(tiny_models) -> dict[str, str]:
    root = tiny_models.gdino_dir.parent
    return {b.name: f"{b.name}:{b.tiny(root, 0)}" for b in registry.backends()}


@pytest.fixture(scope="module")
def ontology_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e") / "ontology.yaml"
    path.write_text(ONTOLOGY, encoding="utf-8")
    return path


@pytest.mark.parametrize("backend", DETECTORS, ids=[b.name for b in DETECTORS])
def test_prelabel_runs_every_detector_with_the_classifier_on_the_samples(backend, tiny_specs, ontology_file, tmp_path):
    from typer.testing import CliRunner

    from sync.cli import app

    out = tmp_path / "out.json"
    command = ["prelabel", str(SAMPLES), "--ontology", str(ontology_file), "--out", str(out),
               "--detector", tiny_specs[backend.name], "--classifier", tiny_specs["clip"], "--device", "cpu"]
    result = CliRunner().invoke(app, command, env={"HF_HUB_OFFLINE": "1"})  # in process: models load once
    assert result.exit_code == 0, result.output[-2000:]
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == len(list(SAMPLES.glob("*.jpg")))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert coco["annotations"] and {names[a["category_id"]] for a in coco["annotations"]} <= {"person", "cup", "rocket"}
    if backend.masks:
        assert any("segmentation" in a for a in coco["annotations"])


def rendered(tmp_path, ontology_file, options: RenderOptions, kinds: str):
    from serverless.ontology import load_ontology

    pins = tuple((b.name, f"acme/{b.name}@{SHA}") for b in registry.backends())
    pins += (("yolo-world", f"https://example.org/yolov8s-worldv2.pt#sha256={'ab' * 32}"),
             ("yolo-world-clip", f"acme/clip@{SHA}"),
             ("yolo", f"https://example.org/best.pt#sha256={'cd' * 32}"))  # one checkpoint file, no default
    options = RenderOptions(detector=options.detector, segmenter=options.segmenter, weights=pins)
    return render_functions(load_ontology(ontology_file), tmp_path / "functions", kinds, options)


def point_at_tiny_weights(directory, tiny_specs: dict[str, str], tiny_env: dict[str, str]) -> None:
    """Rewrite a rendered function's variables from the image's /opt/weights paths to the tiny
    weights, as if its build had fetched them there."""
    import yaml

    path = directory / "function.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for item in config["spec"]["env"]:
        name, value = item["name"], item["value"]
        if name in ("AUTOLABEL_DETECTOR", "AUTOLABEL_SEGMENTER", "AUTOLABEL_CLASSIFIER"):
            item["value"] = tiny_specs[value.split(":")[0]]
        elif name in tiny_env:
            item["value"] = tiny_env[name]
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def served(tmp_path_factory, ontology_file, tiny_specs, tiny_models):
    """A rendered detector function per detector backend, a pipeline and an interactor per
    other segmenter, and the classifier: served at once on real ports."""
    tmp = tmp_path_factory.mktemp("served")
    dirs = []
    for backend in DETECTORS:
        dirs += rendered(tmp / backend.name, ontology_file, RenderOptions(detector=backend.name), "detector")
    for segmenter in SEGMENTERS:
        dirs += rendered(tmp / segmenter.name, ontology_file,
                         RenderOptions(detector="grounding-dino", segmenter=segmenter.name), "pipeline,interactor")
    dirs += rendered(tmp / "classifier", ontology_file, RenderOptions(), "classifier")
    for directory in dirs:
        point_at_tiny_weights(directory, tiny_specs, tiny_models.environment())
    with FunctionHost(dirs, ServeOptions(port=0, function_ports="ephemeral")) as host:
        yield host


def listing(host) -> dict:
    answer = call(host.dashboard_port, "GET", "/api/functions", CVAT_DASHBOARD_HEADERS)
    assert answer.status == 200
    return answer.json()


def invoke(host, name: str, **fields):
    return call(host.dashboard_port, "POST", INVOKE, invocation_headers(name), cvat_body(**fields))


@pytest.mark.parametrize("backend", DETECTORS, ids=[b.name for b in DETECTORS])
def test_each_detector_function_answers_cvat_with_its_labels(served, backend):
    name = f"e2e-{backend.name}"
    spec = json.loads(listing(served)[name]["metadata"]["annotations"]["spec"])
    assert [label["name"] for label in spec] == ["person", "cup", "rocket"]
    answer = invoke(served, name, image=png_b64(160, 120), threshold=0.0)
    assert answer.status == 200, answer.body[:500]
    items = answer.json()
    assert items and {item["label"] for item in items} <= {"person", "cup", "rocket"}
    kinds = {item["type"] for item in items}
    assert kinds <= ({"rectangle", "mask", "polygon"} if backend.masks else {"rectangle"})
    assert len(items) <= 4
    bad = invoke(served, name, image="not base64 at all!", threshold=0.0)
    assert bad.status == 400 and "error" in bad.json()
    # bytes that are not an image: 422 from every function of the process, whichever libraries
    # the others imported (ultralytics patches PIL.Image.open process-wide)
    not_image = invoke(served, name, image=base64.b64encode(b"GIF89a but not really" * 8).decode(), threshold=0.0)
    assert not_image.status == 422 and "error" in not_image.json()


@pytest.mark.parametrize("segmenter", SEGMENTERS, ids=[b.name for b in SEGMENTERS])
def test_each_segmenter_serves_a_pipeline_and_an_interactor(served, segmenter):
    functions = listing(served)
    pipeline = f"e2e-grounding-dino-{segmenter.name}"
    interactor = f"e2e-{segmenter.name}-interactor"
    assert functions[interactor]["metadata"]["annotations"]["type"] == "interactor"
    items = invoke(served, pipeline, image=png_b64(160, 120), threshold=0.0).json()
    assert {item["type"] for item in items} <= {"rectangle", "mask", "polygon"}
    answer = invoke(served, interactor, image=png_b64(96, 64), pos_points=[[40, 30]], neg_points=[[5, 5]], obj_bbox=None)
    assert answer.status == 200
    reply = answer.json()
    x1, y1, x2, y2 = reply["bounds"]
    assert len(reply["mask"]) == y2 - y1 + 1 and all(len(row) == x2 - x1 + 1 for row in reply["mask"])
    none = invoke(served, interactor, image=png_b64(96, 64), pos_points=[], neg_points=[], obj_bbox=None)
    assert none.status == 422 and "error" in none.json()


def test_the_classifier_function_answers_tags(served):
    spec = json.loads(listing(served)["e2e-clip"]["metadata"]["annotations"]["spec"])
    assert [(label["name"], label["type"]) for label in spec] == [("sunny", "tag"), ("indoor", "tag")]
    items = invoke(served, "e2e-clip", image=png_b64(160, 120), threshold=0.0).json()
    assert items and all(item["type"] == "tag" and item["label"] in {"sunny", "indoor"} for item in items)
    assert all(item["attributes"] == [] for item in items)
    direct = call(served.functions["e2e-clip"].port, "POST", "/", CVAT_DIRECT_HEADERS,
                  cvat_body(image=png_b64(160, 120), threshold=1.0))
    assert direct.status == 200 and all(item["confidence"] >= 1.0 for item in direct.json())
