"""The cvat-sdk function modules of every registered detector and classifier, built from tiny
weights as cvat-cli builds them (its ``FunctionLoader`` with ``-p`` parameters), their output
checked by cvat-sdk's own driver, and run end to end against the fake CVAT."""

from __future__ import annotations

import importlib.util

import cvat_sdk.auto_annotation as cvataa
import PIL.Image
import pytest
from cvat_cli._internal.common import FunctionLoader
from cvat_sdk import models
from cvat_sdk.masks import decode_mask

from serverless.cvat_functions import FunctionConfigError
from serverless.models import registry
from tests.conftest import SAMPLES
from tests.test_cvat_functions import context, make_task, plain, remap

ONTOLOGY_YAML = """\
defaults: {threshold: 0.0, text_threshold: 0.0, max_detections: 5}
score_attribute: true
labels:
  - {name: person, prompts: [person, astronaut]}
  - {name: cup, type: mask}
  - {name: cat, type: polygon}
  - {name: sunny, prompts: [a sunny day], type: tag}
  - {name: indoor, prompts: [indoors], type: tag}
"""
DETECTORS = registry.backends("detector")
CLASSIFIERS = registry.backends("classifier")


def module_of(backend: registry.Backend) -> tuple[str, dict]:
    """The backend's own module (``-p weights=...``) when it has one, else the generic one."""
    own = f"serverless.cvat_functions.{backend.name.replace('-', '_')}"
    generic = "serverless.cvat_functions." + ("detector" if backend.kind == "detector" else "classifier")
    if backend.name != "grounding-dino" and importlib.util.find_spec(own) is not None:
        return own, {}
    return generic, {"kind": backend.kind}


@pytest.fixture(scope="module")
def ontology_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("backends") / "ontology.yaml"
    path.write_text(ONTOLOGY_YAML, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def image() -> PIL.Image.Image:
    with PIL.Image.open(SAMPLES / "coffee.jpg") as img:
        return img.convert("RGB").resize((160, 120))


def remapped(function, items, **options) -> tuple[list, list]:
    """(tags, shapes) as cvat-sdk's driver remaps a frame's output."""
    tags, shapes = remap(function, items, **options)
    return tags, shapes


def load(backend, tiny_models, ontology_file, **extra):
    weights = backend.tiny(tiny_models.gdino_dir.parent, 0)
    module, generic = module_of(backend)
    parameters = {"ontology": str(ontology_file), "device": "cpu", **extra}
    if generic:
        parameters[generic["kind"]] = f"{backend.name}:{weights}"
    else:
        parameters["weights"] = weights
    return FunctionLoader(module, None, parameters).load()


@pytest.mark.parametrize("backend", DETECTORS, ids=[b.name for b in DETECTORS])
def test_each_detector_module_declares_its_object_labels_and_the_driver_accepts_its_shapes(
    backend, tiny_models, ontology_file, image
):
    function = load(backend, tiny_models, ontology_file, score_attribute=True)
    masks = bool(backend.masks)
    spec = [(label.name, plain(label.type)) for label in function.spec.labels]
    assert spec == [("person", "rectangle"), ("cup", "mask" if masks else "rectangle"),
                    ("cat", "polygon" if masks else "rectangle")]
    shapes = function.detect(context(), image)
    assert shapes, "tiny weights at threshold 0 give shapes"
    tags, mapped = remapped(function, shapes)
    assert tags == []
    kinds = {plain(shape.type) for shape in mapped}
    assert kinds <= ({"rectangle", "mask", "polygon"} if masks else {"rectangle"})
    assert all(0 <= int(shape.attributes[0].value) <= 100 for shape in mapped)
    converted = function.detect(context(conv_mask_to_poly=True), image)
    _, polygons = remapped(function, converted, conv_mask_to_poly=True, types={"cup": "polygon"} if masks else None)
    assert "mask" not in {plain(shape.type) for shape in polygons}
    high = function.detect(context(conf_threshold=1.0), image)
    assert all(float(shape.attributes[0].value) == 100 for shape in high)


@pytest.mark.parametrize("backend", CLASSIFIERS, ids=[b.name for b in CLASSIFIERS])
def test_each_classifier_module_declares_tag_labels_and_returns_tags_the_driver_accepts(
    backend, tiny_models, ontology_file, image
):
    function = load(backend, tiny_models, ontology_file, score_attribute=True)
    assert [(label.name, plain(label.type)) for label in function.spec.labels] == [("sunny", "tag"), ("indoor", "tag")]
    tags = function.detect(context(), image)
    assert tags and all(isinstance(tag, models.LabeledImageRequest) and tag.frame == 0 for tag in tags)
    assert len(tags) <= 5 and len({tag.label_id for tag in tags}) == len(tags)
    mapped, shapes = remapped(function, tags)
    assert shapes == []
    assert [tag.label_id for tag in mapped] == [100 + tag.label_id for tag in tags]
    scores = [int(tag.attributes[0].value) for tag in tags]
    assert scores == sorted(scores, reverse=True)
    assert function.detect(context(conf_threshold=1.0), image) == [] or all(s == 100 for s in scores)


def test_a_classifier_needs_tag_labels_and_says_so(tiny_models, tmp_path):
    objects_only = tmp_path / "objects.yaml"
    objects_only.write_text("labels:\n  - {name: cup}\n", encoding="utf-8")
    with pytest.raises(FunctionConfigError, match="no tag labels"):
        load(CLASSIFIERS[0], tiny_models, objects_only)


def frame_files(tmp_path):
    frames = []
    for name in ("coffee.jpg", "astronaut.jpg"):
        with PIL.Image.open(SAMPLES / name) as img:
            path = tmp_path / name.replace(".jpg", ".png")
            img.convert("RGB").resize((160, 120)).save(path)
            frames.append(path)
    return frames


TASK_TYPES = {"person": "rectangle", "cup": "mask", "cat": "polygon", "sunny": "tag", "indoor": "tag"}


@pytest.mark.parametrize("backend", DETECTORS, ids=[b.name for b in DETECTORS])
def test_annotate_task_with_each_detector_module(backend, fake_cvat, tmp_path, tiny_models, ontology_file):
    """cvat-sdk's annotate_task with the module on a task of any-typed labels: shapes stored."""
    types = {name: "any" for name in TASK_TYPES}
    client, task = make_task(fake_cvat, tmp_path, frame_files(tmp_path), types)
    function = load(backend, tiny_models, ontology_file)
    with client:
        cvataa.annotate_task(client, task.id, function, clear_existing=True)
        stored = task.get_annotations()
        names = {label.id: label.name for label in task.get_labels()}
    assert stored.shapes and not stored.tags
    assert {names[s.label_id] for s in stored.shapes} <= {"person", "cup", "cat"}
    assert all(s.source == "auto" for s in stored.shapes)
    assert {plain(s.type) for s in stored.shapes} <= ({"rectangle", "mask", "polygon"} if backend.masks else {"rectangle"})


def test_annotate_task_with_the_classifier_and_a_masking_detector(fake_cvat, tmp_path, tiny_models, ontology_file):
    client, task = make_task(fake_cvat, tmp_path, frame_files(tmp_path), TASK_TYPES)
    classifier = load(CLASSIFIERS[0], tiny_models, ontology_file)
    maskers = [b for b in DETECTORS if b.masks] or DETECTORS[:1]
    detector = load(maskers[0], tiny_models, ontology_file)
    with client:
        cvataa.annotate_task(client, task.id, classifier, clear_existing=True)
        cvataa.annotate_task(client, task.id, detector)
        stored = task.get_annotations()
        names = {label.id: label.name for label in task.get_labels()}
    assert {tag.frame for tag in stored.tags} == {0, 1}
    assert {names[tag.label_id] for tag in stored.tags} <= {"sunny", "indoor"}
    assert all(tag.source == "auto" for tag in stored.tags)
    assert stored.shapes and {names[s.label_id] for s in stored.shapes} <= {"person", "cup", "cat"}
    for shape in stored.shapes:
        assert plain(shape.type) == TASK_TYPES[names[shape.label_id]] or plain(shape.type) == "rectangle"
        if plain(shape.type) == "mask":
            assert decode_mask(shape.points, image_width=160, image_height=120).any()


@pytest.mark.parametrize("weights", ["", "  ", 3])
def test_a_backend_module_names_bad_weights(weights, ontology_file):
    with pytest.raises(FunctionConfigError, match="weights must be a non-empty string"):
        FunctionLoader("serverless.cvat_functions.owlv2", None, {"ontology": str(ontology_file), "weights": weights}).load()


def test_importing_every_function_module_imports_no_model_library():
    import subprocess
    import sys

    from tests.conftest import ROOT

    modules = ["detector", "classifier", "grounded_sam", "grounding_dino", "owlv2", "yolo_world", "yolo",
               "mm_grounding_dino", "sam3", "clip", "sam"]
    code = "; ".join(f"import serverless.cvat_functions.{m}" for m in modules)
    code += "; import sys; print(sorted(m for m in ('torch', 'transformers', 'ultralytics') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.stdout.strip() == "[]", result.stderr
