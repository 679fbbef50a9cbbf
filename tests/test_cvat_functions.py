"""cvat-sdk function modules (`serverless.cvat_functions`) with tiny models, checked the way
cvat-sdk's own driver checks them (its ``_AnnotationMapper`` and context class), loaded the way
cvat-cli loads them (its ``FunctionLoader``)."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from pathlib import Path

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image
import pytest
from cvat_cli._internal.agent_driver_interaction import _InteractionPromptsImpl
from cvat_cli._internal.common import FunctionLoader
from cvat_sdk import models
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from cvat_sdk.masks import decode_mask

from serverless.convert.cvat_contract import SCORE_ATTRIBUTE_ID
from serverless.cvat_functions import FunctionConfigError
from serverless.ontology import OntologyError, load_ontology
from tests.fake_cvat import fixtures as fake_cvat_fixtures
from tests.fake_cvat.fixtures import ADMIN_PASSWORD, ADMIN_USERNAME

ROOT = Path(__file__).resolve().parent.parent

ONTOLOGY_YAML = """\
name: cf-test
defaults: {threshold: 0.9, text_threshold: 0.25, nms_iou: 0.5}
score_attribute: true
labels:
  - name: person
    prompts: [person, astronaut]
    threshold: 0.97
  - name: cat
    type: polygon
    threshold: 0.995
  - name: cup
    prompts: [cup, coffee]
    type: mask
    threshold: 0.995
  - name: rocket
    type: rectangle
"""


@pytest.fixture(scope="module")
def env(tiny_models):
    """Tiny model weights through the AUTOLABEL_* environment, as a deployment sets them."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in tiny_models.environment().items():
            patch.setenv(key, value)
        patch.setenv("AUTOLABEL_DEVICE", "cpu")
        patch.delenv("AUTOLABEL_ONTOLOGY", raising=False)
        yield patch


@pytest.fixture(scope="module")
def ontology_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cvat-functions") / "ontology.yaml"
    path.write_text(ONTOLOGY_YAML, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def image() -> PIL.Image.Image:
    with PIL.Image.open(ROOT / "samples" / "astronaut.jpg") as img:
        return img.convert("RGB").resize((160, 120))


@pytest.fixture(scope="module")
def gdino(env, ontology_file):
    """The function exactly as `cvat-cli ... --function-module M -p ontology=str:FILE
    -p score_attribute=bool:true` builds it."""
    parameters = {"ontology": str(ontology_file), "score_attribute": True}
    return FunctionLoader("serverless.cvat_functions.grounding_dino", None, parameters).load()


@pytest.fixture(scope="module")
def grounded_sam(env, ontology_file):
    parameters = {"ontology": str(ontology_file), "score_attribute": True}
    return FunctionLoader("serverless.cvat_functions.grounded_sam", None, parameters).load()


@pytest.fixture(scope="module")
def sam(env):
    return FunctionLoader("serverless.cvat_functions.sam", None, {}).load()


def context(conf_threshold=None, conv_mask_to_poly=False):
    return _DetectionFunctionContextImpl(
        frame_name="frame.jpg", conf_threshold=conf_threshold, conv_mask_to_poly=conv_mask_to_poly
    )


def dataset_labels(spec, *, types=None, no_attributes=False):
    """Task labels with the spec's names (different ids), as CVAT would return them (without
    any attribute with ``no_attributes``)."""
    labels = []
    for label in spec.labels:
        attributes = [] if no_attributes else [
            models.Attribute._from_openapi_data(
                name=a.name, mutable=False, input_type=a.input_type, values=a.values, id=700 + a.id, default_value="0"
            )
            for a in getattr(label, "attributes", [])
        ]
        kind = (types or {}).get(label.name, plain(label.type))
        labels.append(
            models.Label._from_openapi_data(
                name=label.name, id=100 + label.id, type=kind, attributes=attributes, sublabels=[]
            )
        )
    return labels


def remap(function, shapes, *, conv_mask_to_poly=False, types=None, frame=7, no_attributes=False):
    """What annotate_task does with a frame's output (on copies: the driver edits shapes in
    place); raises BadFunctionError on a violation."""
    mapper = _AnnotationMapper(
        logging.getLogger("test"),
        function.spec.labels,
        dataset_labels(function.spec, types=types, no_attributes=no_attributes),
        allow_unmatched_labels=False,
        conv_mask_to_poly=conv_mask_to_poly,
    )
    return mapper.validate_and_remap(copy.deepcopy(list(shapes)), frame)


def plain(value) -> str:
    """An SDK enum or a plain string, as a string."""
    return str(getattr(value, "value", value))


def score_of(shape) -> float:
    return float(shape.score)


def key(shape):
    return (int(shape.label_id), shape.type.value, tuple(round(float(p), 3) for p in shape.points))


# --------------------------------------------------------------------------- spec


def test_specs_follow_the_ontology(gdino, grounded_sam, ontology_file):
    ontology = load_ontology(ontology_file)
    for function, types in (
        (gdino, ["rectangle"] * 4),
        (grounded_sam, [label.type for label in ontology.labels]),
    ):
        labels = function.spec.labels
        assert [label.name for label in labels] == list(ontology.label_names)
        assert [label.id for label in labels] == list(range(len(ontology.labels)))
        assert [plain(label.type) for label in labels] == types
        for label in labels:
            (score,) = label.attributes
            assert score.name == "score"
            assert score.id == SCORE_ATTRIBUTE_ID
            assert plain(score.input_type) == "number"
            assert score.values == ["0", "100", "1"]
            assert score.mutable is False


def test_spec_has_no_attributes_without_score_attribute(env, tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text("labels:\n  - name: person\n  - name: cup\n    type: mask\n", encoding="utf-8")
    from serverless.cvat_functions import grounded_sam

    function = grounded_sam.create(ontology=str(path))
    assert [(label.name, plain(label.type), label.attributes) for label in function.spec.labels] == [
        ("person", "rectangle", []),
        ("cup", "mask", []),
    ]


def test_the_score_attribute_is_declared_only_when_asked(env, ontology_file, image, caplog):
    """Issue 9 B10: the ontology's ``score_attribute: true`` made the spec declare ``score``, and
    cvat-sdk's driver stops at an attribute the task lacks (CVAT's lambda path drops it)."""
    from serverless.cvat_functions import grounding_dino

    with caplog.at_level(logging.WARNING, logger="serverless.cvat_functions.common"):
        function = grounding_dino.create(ontology=str(ontology_file))
    assert load_ontology(ontology_file).score_attribute
    assert all(label.attributes == [] for label in function.spec.labels)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "-p score_attribute=bool:true" in warning and "no score is written" in warning
    # the driver accepts it against task labels without the attribute, and its shapes carry none
    _, remapped = remap(function, function.detect(context(conf_threshold=0.3), image), no_attributes=True)
    assert remapped and all(shape.attributes == [] for shape in remapped)

    caplog.clear()
    asked = grounding_dino.create(ontology=str(ontology_file), score_attribute=True)
    assert [a.name for label in asked.spec.labels for a in label.attributes] == ["score"] * 4
    assert caplog.records == []
    with pytest.raises(FunctionConfigError, match=r"score_attribute must be true or false .*got 'yes'"):
        grounding_dino.create(ontology=str(ontology_file), score_attribute="yes")


def test_sam_spec_allows_clicks_negatives_and_an_optional_box(sam):
    assert sam.spec == cvataa.InteractionFunctionSpec(min_pos_points=1, min_neg_points=0, min_bounding_boxes=0)


# --------------------------------------------------------------------------- create()


def test_create_without_ontology_names_the_parameter(env):
    from serverless.cvat_functions import grounding_dino

    with pytest.raises(FunctionConfigError, match=r"-p ontology=str:FILE.*AUTOLABEL_ONTOLOGY"):
        grounding_dino.create()
    with pytest.raises(FunctionConfigError, match="no ontology"):
        FunctionLoader("serverless.cvat_functions.grounded_sam", None, {}).load()


def test_create_reads_autolabel_ontology(env, ontology_file, monkeypatch):
    from serverless.cvat_functions import grounding_dino

    monkeypatch.setenv("AUTOLABEL_ONTOLOGY", str(ontology_file))
    function = grounding_dino.create()
    assert function.ontology == load_ontology(ontology_file)


def test_create_reports_a_broken_ontology_with_its_line(env, tmp_path):
    from serverless.cvat_functions import grounding_dino

    path = tmp_path / "bad.yaml"
    path.write_text("labels:\n  - name: person\n    threshold: 1.5\n", encoding="utf-8")
    with pytest.raises(OntologyError, match=r"bad\.yaml:3: labels\[0\]\.threshold"):
        grounding_dino.create(ontology=str(path))


def test_create_reports_missing_weights(env, ontology_file, tmp_path):
    from serverless.cvat_functions import grounding_dino
    from serverless.models.registry import ModelLoadError

    with pytest.raises(ModelLoadError, match="cannot load Grounding DINO"):
        grounding_dino.create(ontology=str(ontology_file), gdino_model=str(tmp_path / "nothing-here"))


def test_create_takes_model_specs_through_cvat_cli_parameters(env, ontology_file, tiny_models, monkeypatch):
    """``-p detector=str:SPEC`` / ``-p segmenter=str:SPEC`` (cvat-cli's FunctionLoader), with no
    AUTOLABEL_* model variable: the specs alone pick the models."""
    from serverless.models.registry import ModelSpecError

    for key in tiny_models.environment():
        monkeypatch.delenv(key)
    detector = f"grounding-dino:{tiny_models.gdino_dir}"
    segmenter = f"sam:{tiny_models.sam_model_type}:{tiny_models.sam_checkpoint}"
    params = {"ontology": str(ontology_file), "detector": detector, "segmenter": segmenter}
    function = FunctionLoader("serverless.cvat_functions.grounded_sam", None, params).load()
    assert function.detector.labels == load_ontology(ontology_file).label_names
    sam = FunctionLoader("serverless.cvat_functions.sam", None, {"segmenter": segmenter}).load()
    assert sam.segmenter is function.segmenter
    from serverless.cvat_functions import grounding_dino

    with pytest.raises(ModelSpecError, match="sam is a segmenter, not a detector"):
        grounding_dino.create(ontology=str(ontology_file), detector="sam:vit_b")


def test_importing_the_modules_does_not_import_torch():
    code = (
        "import sys\n"
        "import serverless.cvat_functions.grounding_dino, serverless.cvat_functions.grounded_sam, "
        "serverless.cvat_functions.sam\n"
        "heavy = [m for m in ('torch', 'transformers', 'segment_anything') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- Grounding DINO


@pytest.fixture(scope="module")
def gdino_runs(gdino, image):
    """Outputs at a few uniform thresholds and at the ontology's per-label thresholds."""
    return {t: gdino.detect(context(conf_threshold=t), image) for t in (0.3, 0.9, 0.99, None)}


def test_grounding_dino_returns_rectangles_the_driver_accepts(gdino, gdino_runs, image):
    shapes = gdino_runs[0.3]
    assert shapes, "the tiny model gives boxes at 0.3 on this frame"
    for shape in shapes:
        assert shape.type.value == "rectangle"
        assert shape.frame == 0
        assert not hasattr(shape, "id") and not hasattr(shape, "source")
        x1, y1, x2, y2 = shape.points
        assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
        (attribute,) = shape.attributes
        assert attribute.spec_id == SCORE_ATTRIBUTE_ID
        assert attribute.value == str(round(score_of(shape) * 100))

    expected_labels = [100 + shape.label_id for shape in shapes]
    tags, remapped = remap(gdino, shapes)
    assert tags == []
    assert [shape.label_id for shape in remapped] == expected_labels
    assert all(shape.frame == 7 and shape.source == "auto" for shape in remapped)
    assert all(attribute.spec_id == 700 + SCORE_ATTRIBUTE_ID for shape in remapped for attribute in shape.attributes)


@pytest.mark.parametrize("low, high", [(0.3, 0.9), (0.9, 0.99), (0.3, 0.99)])
def test_conf_threshold_keeps_exactly_the_boxes_at_or_above_it(gdino_runs, low, high):
    above_low = {key(s): score_of(s) for s in gdino_runs[low]}
    at_high = {key(s): score_of(s) for s in gdino_runs[high]}
    assert all(score >= high for score in at_high.values())
    # Greedy NMS never lets a lower-scored box affect a higher one, so raising the threshold
    # removes exactly the boxes below it.
    assert at_high == {k: score for k, score in above_low.items() if score >= high}
    assert len(at_high) < len(above_low), "the thresholds are chosen to separate these runs"


def test_without_conf_threshold_each_label_keeps_its_ontology_threshold(gdino_runs, ontology_file):
    ontology = load_ontology(ontology_file)
    shapes = gdino_runs[None]
    assert shapes
    # Every label threshold is >= the 0.9 default; NMS is class-wise, so the per-label run is
    # the uniform 0.9 run minus each label's boxes below that label's own threshold.
    uniform = {key(s): (s.label_id, score_of(s)) for s in gdino_runs[0.9]}
    expected = {k for k, (label, score) in uniform.items() if score >= ontology.threshold_for(label)}
    assert {key(s) for s in shapes} == expected
    assert len(expected) < len(uniform), "a label threshold above the default drops some boxes here"


def test_an_out_of_range_conf_threshold_is_refused(gdino, image):
    with pytest.raises(FunctionConfigError, match="conf_threshold"):
        gdino.detect(context(conf_threshold=1.5), image)


# --------------------------------------------------------------------------- Grounded-SAM


@pytest.fixture(scope="module")
def gsam_runs(grounded_sam, image):
    return {
        conv: grounded_sam.detect(context(conf_threshold=0.999, conv_mask_to_poly=conv), image)
        for conv in (False, True)
    }


def test_grounded_sam_shapes_follow_label_types_and_decode(grounded_sam, gsam_runs, image):
    shapes = gsam_runs[False]
    types = {label.id: plain(label.type) for label in grounded_sam.spec.labels}
    seen = {shape.type.value for shape in shapes}
    assert {"rectangle", "mask"} <= seen, f"expected boxes and masks from the tiny model, got {seen}"
    for shape in shapes:
        assert shape.type.value == types[shape.label_id]
        assert score_of(shape) >= 0.999
        assert not hasattr(shape, "source")
        if shape.type.value == "mask":
            mask = decode_mask(shape.points, image_width=image.width, image_height=image.height)
            left, top, right, bottom = (int(v) for v in shape.points[-4:])
            ys, xs = np.nonzero(mask)
            assert len(xs) > 0
            # encode_mask was given the mask's tight box: the encoded box is exactly its extent.
            assert (xs.min(), ys.min(), xs.max(), ys.max()) == (left, top, right, bottom)
        elif shape.type.value == "polygon":
            assert len(shape.points) >= 6 and len(shape.points) % 2 == 0
    _, remapped = remap(grounded_sam, shapes)
    assert len(remapped) == len(shapes)


def test_conv_mask_to_poly_returns_polygons_instead_of_masks(grounded_sam, gsam_runs):
    plain, converted = gsam_runs[False], gsam_runs[True]
    assert not any(shape.type.value == "mask" for shape in converted)
    masks = sorted(s.label_id for s in plain if s.type.value == "mask")
    polygons_for_mask_labels = sorted(s.label_id for s in converted if s.type.value == "polygon" and s.label_id in {2})
    assert masks and polygons_for_mask_labels == masks
    assert sorted(key(s) for s in plain if s.type.value != "mask") == sorted(
        key(s) for s in converted if not (s.type.value == "polygon" and s.label_id == 2)
    )
    # The driver's own check with conv_mask_to_poly (mask labels map to polygon task labels).
    _, remapped = remap(grounded_sam, converted, conv_mask_to_poly=True, types={"cup": "polygon"})
    assert len(remapped) == len(converted)
    with pytest.raises(cvataa.BadFunctionError, match="type 'mask'"):
        remap(grounded_sam, plain, conv_mask_to_poly=True, types={"cup": "polygon"})


# --------------------------------------------------------------------------- SAM (interaction)


def test_sam_preprocess_embeds_the_frame_once(sam, image):
    embedding = sam.preprocess_image(
        cvataa.InteractionFunctionContext.__new__(cvataa.InteractionFunctionContext), image
    )
    assert embedding.original_size == (image.height, image.width)
    assert embedding.to_numpy().shape == (1, 256, 64, 64)
    again = sam.preprocess_image(None, image)
    assert again is embedding  # cached by content hash


@pytest.mark.parametrize(
    "pos, neg, box",
    [
        (((80.0, 60.0),), (), None),
        (((80.0, 60.0), (40.0, 30.0)), ((150.0, 110.0),), None),
        (((80.0, 60.0),), (), ((20.0, 10.0), (140.0, 100.0))),
    ],
)
def test_sam_detect_returns_the_segmenters_mask(sam, image, pos, neg, box):
    embedding = sam.preprocess_image(None, image)
    prompts = _InteractionPromptsImpl(pos_points=pos, neg_points=neg, bounding_box=box)
    shapes = sam.detect(None, embedding, prompts)
    expected = sam.segmenter.segment_points(
        embedding,
        np.array(pos, dtype=np.float32),
        np.array(neg, dtype=np.float32).reshape(-1, 2),
        None if box is None else np.array(box, dtype=np.float32).reshape(4),
    )
    assert expected.any(), "the tiny SAM gives a non-empty mask for these prompts"
    (shape,) = shapes
    assert isinstance(shape, cvataa.InteractionResultShape)
    assert shape.type == "mask"
    decoded = decode_mask(shape.points, image_width=image.width, image_height=image.height)
    np.testing.assert_array_equal(decoded, expected)


# --------------------------------------------------------------------------- end to end (fake CVAT)

fake_cvat = fake_cvat_fixtures.fake_cvat  # the started fake CVAT server fixture

SCORE_SPEC = {
    "name": "score",
    "mutable": False,
    "input_type": "number",
    "values": ["0", "100", "1"],
    "default_value": "0",
}


@pytest.fixture()
def frames(tmp_path, image) -> list[Path]:
    """Two small PNG frames: the astronaut and the cat photograph."""
    paths = [tmp_path / "frame_0.png", tmp_path / "frame_1.png"]
    image.save(paths[0])
    with PIL.Image.open(ROOT / "samples" / "chelsea.jpg") as other:
        other.convert("RGB").resize((160, 120)).save(paths[1])
    return paths


def make_task(fake_cvat, tmp_path, frames, label_types, *, score=True):
    from cvat_sdk import Client
    from cvat_sdk.core.client import Config
    from cvat_sdk.core.proxies.tasks import ResourceType

    client = Client(fake_cvat.url, config=Config(status_check_period=0.01, cache_dir=tmp_path / "sdk-cache"))
    client.login((ADMIN_USERNAME, ADMIN_PASSWORD))
    attributes = [dict(SCORE_SPEC)] if score else []
    labels = [{"name": name, "type": kind, "attributes": list(attributes)} for name, kind in label_types.items()]
    task = client.tasks.create_from_data(
        spec={"name": "auto-annotate", "labels": labels},
        resources=[str(p) for p in frames],
        resource_type=ResourceType.LOCAL,
    )
    return client, task


def test_annotate_task_with_grounded_sam_uploads_task_shapes(fake_cvat, tmp_path, frames, grounded_sam, gsam_runs):
    types = {"person": "rectangle", "cat": "polygon", "cup": "mask", "rocket": "rectangle"}
    client, task = make_task(fake_cvat, tmp_path, frames, types)
    with client:
        cvataa.annotate_task(client, task.id, grounded_sam, conf_threshold=0.999, clear_existing=True)
        stored = task.get_annotations().shapes
        task_labels = {label.id: label for label in task.get_labels()}

    expected_first = gsam_runs[False]  # the same frame (PNG round trip), same threshold
    assert expected_first and stored
    assert sorted(s.frame for s in stored if s.frame == 0) == [0] * len(expected_first)
    assert {s.frame for s in stored} <= {0, 1}
    for shape in stored:
        label = task_labels[shape.label_id]
        assert plain(shape.type) == types[label.name]
        assert shape.source == "auto"
        (attribute,) = shape.attributes
        assert attribute.spec_id == label.attributes[0].id
        assert 99 <= int(attribute.value) <= 100
        if plain(shape.type) == "mask":
            assert decode_mask(shape.points, image_width=160, image_height=120).any()
    first = sorted((task_labels[s.label_id].name, plain(s.type)) for s in stored if s.frame == 0)
    names = {label.id: label.name for label in grounded_sam.spec.labels}
    assert first == sorted((names[s.label_id], plain(s.type)) for s in expected_first)


def test_cvat_cli_auto_annotate_runs_the_module(fake_cvat, tmp_path, frames, env, ontology_file, gdino, gdino_runs):
    """`cvat-cli task auto-annotate --function-module ... -p ontology=str:FILE`, in a subprocess."""
    types = dict.fromkeys(("person", "cat", "cup", "rocket"), "any")
    client, task = make_task(fake_cvat, tmp_path, frames, types)
    run_env = {
        **os.environ,
        "PASS": ADMIN_PASSWORD,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    command = [
        sys.executable,
        "-m",
        "cvat_cli",
        "--server-host",
        fake_cvat.url,
        "--auth",
        ADMIN_USERNAME,
        "task",
        "auto-annotate",
        str(task.id),
        "--function-module",
        "serverless.cvat_functions.grounding_dino",
        "-p",
        f"ontology=str:{ontology_file}",
        "-p",
        "device=str:cpu",
        "-p",
        "score_attribute=bool:true",
        "--conf-threshold",
        "0.99",
        "--clear-existing",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=run_env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    with client:
        stored = task.get_annotations().shapes
        names = {label.id: label.name for label in task.get_labels()}
    assert stored
    assert {plain(s.type) for s in stored} == {"rectangle"}
    assert {names[s.label_id] for s in stored} <= set(types)
    assert all(int(s.attributes[0].value) >= 99 for s in stored)
    # Frame 0 holds what the same function returns in-process for that frame.
    spec_names = {label.id: label.name for label in gdino.spec.labels}
    assert sorted((names[s.label_id], *(round(p, 2) for p in s.points)) for s in stored if s.frame == 0) == sorted(
        (spec_names[s.label_id], *(round(float(p), 2) for p in s.points)) for s in gdino_runs[0.99]
    )


def test_cvat_cli_on_a_task_without_score_drops_it_as_the_lambda_path_does(fake_cvat, tmp_path, frames, env,
                                                                          ontology_file):
    """Issue 9 B10 through the real cvat-cli: an ontology with ``score_attribute: true`` on a task
    whose labels lack ``score`` stopped with a BadFunctionError traceback."""
    types = dict.fromkeys(("person", "cat", "cup", "rocket"), "any")
    client, task = make_task(fake_cvat, tmp_path, frames, types, score=False)
    run_env = {
        **os.environ,
        "PASS": ADMIN_PASSWORD,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    command = [
        sys.executable, "-m", "cvat_cli", "--server-host", fake_cvat.url, "--auth", ADMIN_USERNAME,
        "task", "auto-annotate", str(task.id), "--function-module", "serverless.cvat_functions.grounding_dino",
        "-p", f"ontology=str:{ontology_file}", "-p", "device=str:cpu", "--conf-threshold", "0.9",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=run_env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "-p score_attribute=bool:true" in result.stderr
    with client:
        stored = task.get_annotations().shapes
    assert stored and all(shape.attributes == [] for shape in stored)


SDK_217 = ROOT / ".cache" / "sdk-2.17"
SCRIPT_217 = """\
import sys
import cvat_sdk
import cvat_sdk.auto_annotation as cvataa
from cvat_sdk import Client, Config
from cvat_sdk.core.proxies.tasks import ResourceType

assert cvat_sdk.__version__.startswith("2.17."), cvat_sdk.__version__
from serverless.cvat_functions import FunctionConfigError, grounding_dino

client = Client(URL, config=Config(status_check_period=0.01, cache_dir=CACHE))
client.login((USER, PASSWORD))
labels = [{"name": name, "type": "any", "attributes": []} for name in ("person", "cat", "cup", "rocket")]
task = client.tasks.create_from_data(spec={"name": "old", "labels": labels}, resource_type=ResourceType.LOCAL,
                                     resources=FRAMES)
try:
    grounding_dino.create(ontology=ONTOLOGY, score_attribute=True)
except FunctionConfigError as error:
    print("REFUSED", error)
function = grounding_dino.create(ontology=ONTOLOGY)
cvataa.annotate_task(client, task.id, function, clear_existing=True)
shapes = task.get_annotations().shapes
print("SHAPES", len(shapes), sum(len(s.attributes) for s in shapes))
"""


def test_cvat_sdk_2_17_runs_the_module_with_a_score_ontology(fake_cvat_217, tmp_path, frames, tiny_models):
    """cvat-sdk 2.17's driver refuses any label attribute: the module declares none there, and
    asking for one is a clear error. (2.17's context has no conf_threshold: the ontology's
    thresholds apply.)"""
    ontology_file = tmp_path / "low.yaml"
    ontology_file.write_text(
        "defaults: {threshold: 0.3}\nscore_attribute: true\nlabels:\n  - name: person\n  - name: cat\n"
        "  - name: cup\n  - name: rocket\n",
        encoding="utf-8",
    )
    constants = (
        f"URL = {fake_cvat_217.url!r}\nUSER = {ADMIN_USERNAME!r}\nPASSWORD = {ADMIN_PASSWORD!r}\n"
        f"CACHE = {str(tmp_path / 'sdk-cache')!r}\nONTOLOGY = {str(ontology_file)!r}\n"
        f"FRAMES = {[str(p) for p in frames]!r}\n"
    )
    environment = {
        **os.environ,
        **tiny_models.environment(),
        "AUTOLABEL_DEVICE": "cpu",
        "PYTHONPATH": os.pathsep.join([str(SDK_217), str(ROOT)]),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run([sys.executable, "-c", constants + SCRIPT_217], capture_output=True, text=True, cwd=ROOT,
                          env=environment, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REFUSED score_attribute: this cvat-sdk cannot send label attributes" in done.stdout
    count, attributes = (int(v) for v in done.stdout.split("SHAPES ", 1)[1].split())
    assert count > 0 and attributes == 0
