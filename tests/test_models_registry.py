"""Spec strings, the backend registry and how a door resolves its models (`ModelSettings`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serverless.models import registry
from serverless.models.base import KINDS
from serverless.models.registry import ModelLoadError, ModelSpecError, parse_spec
from serverless.ontology import parse_ontology
from serverless.pipeline import ModelSettings
from tests.conftest import ROOT

GDINO = "IDEA-Research/grounding-dino-tiny"


@pytest.mark.parametrize(
    ("text", "kind", "environ", "expected"),
    [
        ("grounding-dino", "detector", {}, "grounding-dino:" + GDINO),
        ("grounding-dino", "detector", {"AUTOLABEL_GDINO_MODEL": "/m/gd"}, "grounding-dino:/m/gd"),
        ("grounding-dino:/m/gd", "detector", {"AUTOLABEL_GDINO_MODEL": "/other"}, "grounding-dino:/m/gd"),
        (" grounding-dino:acme/gd ", "detector", {}, "grounding-dino:acme/gd"),
        ("sam", "segmenter", {}, "sam:vit_h"),
        ("sam", "segmenter", {"AUTOLABEL_SAM_MODEL_TYPE": "vit_b"}, "sam:vit_b"),
        ("sam", "segmenter", {"AUTOLABEL_SAM_MODEL_TYPE": "vit_b", "AUTOLABEL_SAM_CHECKPOINT": "/w/b.pth"},
         "sam:vit_b:/w/b.pth"),
        ("sam", "segmenter", {"AUTOLABEL_SAM_CHECKPOINT": "/w/h.pth"}, "sam:vit_h:/w/h.pth"),
        ("sam:vit_b", "segmenter", {"AUTOLABEL_SAM_CHECKPOINT": "/w/h.pth"}, "sam:vit_b"),
        ("sam:vit_l:/w/l.pth", "segmenter", {}, "sam:vit_l:/w/l.pth"),
        ("sam:/t/sam_tiny.json:/t/sam_tiny.pth", "segmenter", {}, "sam:/t/sam_tiny.json:/t/sam_tiny.pth"),
        ("sam:/t/sam_tiny.json", "segmenter", {}, "sam:/t/sam_tiny.json"),
        ("sam:vit_b:C:/w/b.pth", "segmenter", {}, "sam:vit_b:C:/w/b.pth"),
    ],
)
def test_specs_parse_to_their_canonical_text(text, kind, environ, expected):
    spec = parse_spec(text, kind, environ)
    assert spec.text == str(spec) == expected and spec.kind == kind
    assert parse_spec(spec.text, kind, {}) == spec


@pytest.mark.parametrize(
    ("text", "kind", "fragment"),
    [
        ("", "detector", "must be a non-empty string"),
        ("yolov5:best.pt", "detector", "detector spec 'yolov5:best.pt': unknown model backend 'yolov5'; expected"),
        ("yolo:best.onnx", "detector", "detector spec 'yolo:best.onnx': the checkpoint must be the path of an"),
        ("sam:vit_b", "detector", "sam is a segmenter, not a detector"),
        ("grounding-dino", "segmenter", "grounding-dino is a detector, not a segmenter"),
        ("sam:vit_q", "segmenter", "the model type must be one of vit_h, vit_l, vit_b or a .json file"),
        ("sam:vit_b:", "segmenter", "the checkpoint after the model type is empty"),
        ("sam:/t/model.pth", "segmenter", "the model type must be one of"),
        ("Grounding-DINO:x", "detector", "unknown model backend 'Grounding-DINO'"),
    ],
)
def test_bad_specs_are_named_as_written(text, kind, fragment):
    with pytest.raises(ModelSpecError) as info:
        parse_spec(text, kind, {})
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


_PATH = st.text(st.sampled_from("abc/_-.:"), min_size=1, max_size=12).map(lambda s: "/" + s)


@given(model_type=st.sampled_from(["vit_h", "vit_l", "vit_b", "/cfg/tiny.json"]), checkpoint=st.none() | _PATH)
def test_sam_weights_round_trip(model_type, checkpoint):
    from serverless.models.sam import split_weights

    text = f"sam:{model_type}" + (f":{checkpoint}" if checkpoint else "")
    spec = parse_spec(text, "segmenter", {})
    assert spec.text == text
    assert split_weights(spec.weights) == (model_type, checkpoint)


def test_the_registry_lists_each_backend_once_detectors_first():
    found = registry.backends()
    names = [b.name for b in found]
    assert len(set(names)) == len(names) == len(registry.BACKEND_MODULES)
    assert [b.kind for b in found] == sorted((b.kind for b in found), key=KINDS.index), "detectors first"
    assert names[0] == "grounding-dino" and {"sam", "clip"} <= set(names)
    assert [b.name for b in registry.backends("segmenter")][0] == "sam"
    assert all(b.kind == "classifier" for b in registry.backends("classifier"))
    with pytest.raises(ModelSpecError, match="unknown model backend 'nope'"):
        registry.backend("nope")


def test_locating_missing_weights_is_one_line_before_anything_loads(tmp_path):
    with pytest.raises(ModelLoadError, match="no SAM checkpoint configured for model type"):
        registry.locate(parse_spec(f"sam:{tmp_path}/tiny.json", "segmenter", {}))
    with pytest.raises(ModelLoadError, match="does not exist"):
        registry.locate(parse_spec(f"sam:vit_b:{tmp_path}/gone.pth", "segmenter", {}))
    with pytest.raises(ModelLoadError, match="the directory does not exist"):
        registry.locate(parse_spec(f"grounding-dino:{tmp_path}/gone", "detector", {}))
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
        registry.locate(parse_spec("grounding-dino:acme/never-cached", "detector", {}), download=False)


# --------------------------------------------------------------------------- resolution

MODELS = """\
models:
  detector: grounding-dino:/from/ontology
  segmenter: sam:vit_l
labels: [{name: cat}]
"""


@pytest.mark.parametrize(
    ("given", "environ", "detector", "segmenter"),
    [
        ({}, {}, "grounding-dino:/from/ontology", "sam:vit_l"),
        ({}, {"AUTOLABEL_GDINO_MODEL": "/env"}, "grounding-dino:/env", "sam:vit_l"),
        ({}, {"AUTOLABEL_DETECTOR": "grounding-dino:/spec", "AUTOLABEL_GDINO_MODEL": "/env"},
         "grounding-dino:/spec", "sam:vit_l"),
        ({"gdino_model": "/cli"}, {"AUTOLABEL_DETECTOR": "grounding-dino:/spec"}, "grounding-dino:/cli", "sam:vit_l"),
        ({"detector": "grounding-dino"}, {"AUTOLABEL_GDINO_MODEL": "/env"}, "grounding-dino:/env", "sam:vit_l"),
        ({}, {"AUTOLABEL_SAM_MODEL_TYPE": "vit_b"}, "grounding-dino:/from/ontology", "sam:vit_b"),
        ({}, {"AUTOLABEL_SEGMENTER": "sam:vit_b:/s.pth", "AUTOLABEL_SAM_CHECKPOINT": "/h.pth"},
         "grounding-dino:/from/ontology", "sam:vit_b:/s.pth"),
        ({"sam_model_type": "vit_b"}, {"AUTOLABEL_SAM_CHECKPOINT": "/env.pth"}, "grounding-dino:/from/ontology",
         "sam:vit_b:/env.pth"),  # the shorthand merges option by option, as before
        ({"segmenter": "sam:vit_b"}, {"AUTOLABEL_SAM_MODEL_TYPE": "vit_l"}, "grounding-dino:/from/ontology",
         "sam:vit_b"),
    ],
)
def test_explicit_then_environment_then_ontology_then_defaults(given, environ, detector, segmenter):
    ontology = parse_ontology(MODELS)
    settings = ModelSettings.from_env(**given, ontology=ontology, environ=environ)
    assert (settings.detector.text, settings.segmenter.text) == (detector, segmenter)


def test_defaults_without_an_ontology_or_environment():
    settings = ModelSettings.from_env(environ={})
    assert (settings.detector.text, settings.segmenter.text, settings.device) == (f"grounding-dino:{GDINO}", "sam:vit_h", None)
    assert ModelSettings.from_env(environ={"AUTOLABEL_DEVICE": "cpu"}).device == "cpu"


@pytest.mark.parametrize(
    ("given", "environ", "fragment"),
    [
        ({"detector": "grounding-dino:/a", "gdino_model": "/b"}, {}, "give --detector or --gdino-model, not both"),
        ({"segmenter": "sam", "sam_checkpoint": "/c.pth"}, {}, "not both"),
        ({}, {"AUTOLABEL_DETECTOR": "yolov5"}, "unknown model backend 'yolov5'"),
        ({}, {"AUTOLABEL_DETECTOR": "yolov5"}, "(from AUTOLABEL_DETECTOR)"),
        ({"sam_model_type": "vit_q"}, {}, "the model type must be one of"),
        ({"detector": "sam:vit_b"}, {}, "(from given)"),
    ],
)
def test_resolution_errors_say_what_and_where(given, environ, fragment):
    with pytest.raises(ModelSpecError) as info:
        ModelSettings.from_env(**given, environ=environ)
    assert fragment in str(info.value)


def test_the_old_fields_read_from_the_specs():
    settings = ModelSettings(gdino_model="/m/gd", sam_checkpoint="/w/t.pth", sam_model_type="/w/t.json", device="cpu")
    assert settings.detector.text == "grounding-dino:/m/gd" and settings.segmenter.text == "sam:/w/t.json:/w/t.pth"
    assert (settings.gdino_model, settings.sam_model_type, settings.sam_checkpoint) == ("/m/gd", "/w/t.json", "/w/t.pth")
    public = ModelSettings()
    assert (public.gdino_model, public.sam_model_type, public.sam_checkpoint) == (GDINO, "vit_h", None)
    assert ModelSettings("grounding-dino:/x", "sam:vit_b") == ModelSettings(gdino_model="/x", sam_model_type="vit_b")


def test_tiny_settings_are_recognised(tiny_models):
    assert ModelSettings.from_env(environ=tiny_models.environment()).tiny
    assert not ModelSettings.from_env(environ={}).tiny


# --------------------------------------------------------------------------- autolabel models list


def test_models_list_shows_backends_defaults_and_disk_without_torch(tiny_models, tmp_path):
    code = (
        "import sys\n"
        "sys.argv = ['autolabel', 'models', 'list']\n"
        "from sync.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'segment_anything') if m in sys.modules])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "250", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "AUTOLABEL_CACHE": str(tmp_path / "cache")}
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert "HEAVY []" in plain.stdout, plain.stdout + plain.stderr
    assert f"grounding-dino:{GDINO}" in plain.stdout and "sam:vit_h" in plain.stdout
    assert plain.stdout.count("no (fetched on first use") == len(registry.backends()) - 1  # all but yolo:
    assert "default: none: the yolo backend has no default weights: give yolo:PATH" in plain.stdout  # no default
    tiny = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**env, **tiny_models.environment(), "COLUMNS": "80"})
    # readable at 80 columns: the specs and paths a user copies are never cut or wrapped
    assert str(tiny_models.gdino_dir) in tiny.stdout and str(tiny_models.sam_checkpoint) in tiny.stdout
    assert tiny.stdout.count("no (fetched") == len(registry.backends()) - 3  # all but yolo and the two made tiny
