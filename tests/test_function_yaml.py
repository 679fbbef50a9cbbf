"""Every function.yaml we ship or render passes the checks CVAT's lambda manager relies on
(``cvat_protocol.md`` §1 and Gotchas): the checked-in files and fresh renders of several
ontologies, including generated ones. The checker itself is tested on broken configs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serverless.ontology import Defaults, Label, Ontology, load_ontology, parse_ontology
from serverless.render import RenderOptions, render

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "serverless" / "functions"
SAMPLES = ROOT / "samples"

LABEL_TYPES = {"rectangle", "polygon", "mask", "points", "skeleton", "ellipse", "polyline", "tag", "unknown"}
INPUT_TYPES = {"number", "checkbox", "select", "radio", "text"}
NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]+$")
MIN_BODY = 33_554_432


def _int(value):
    """CVAT parses numeric annotations with int(); booleans are not numbers."""
    if isinstance(value, bool):
        raise TypeError("boolean")
    return int(value)


def _spec_problems(text) -> list[str]:
    if not isinstance(text, str):
        return [f"metadata.annotations.spec must be a JSON string, got {type(text).__name__}"]
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as err:
        return [f"metadata.annotations.spec does not parse as JSON: {err}"]
    if not isinstance(labels, list):
        return ["metadata.annotations.spec must be a JSON list of labels"]
    problems = []
    names = set()
    for i, label in enumerate(labels):
        where = f"spec[{i}]"
        if not isinstance(label, dict) or not isinstance(label.get("name"), str) or not label["name"]:
            problems.append(f"{where}: a label needs a non-empty string name")
            continue
        if label["name"] in names:
            problems.append(f"{where}: duplicate label name {label['name']!r}")
        names.add(label["name"])
        if label.get("type", "unknown") not in LABEL_TYPES:
            problems.append(f"{where}: unknown label type {label.get('type')!r}")
        attributes = label.get("attributes", [])
        if not isinstance(attributes, list):
            problems.append(f"{where}: attributes must be a list")
            continue
        attribute_names = set()
        for j, attribute in enumerate(attributes):
            spot = f"{where}.attributes[{j}]"
            if not isinstance(attribute, dict) or not {"name", "input_type", "values"} <= set(attribute):
                problems.append(f"{spot}: needs name, input_type and values")
                continue
            if attribute["name"] in attribute_names:
                problems.append(f"{spot}: duplicate attribute name {attribute['name']!r}")
            attribute_names.add(attribute["name"])
            if attribute["input_type"] not in INPUT_TYPES:
                problems.append(f"{spot}: unknown input_type {attribute['input_type']!r}")
            values = attribute["values"]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                problems.append(f"{spot}: values must be a list of strings")
            elif attribute["input_type"] == "number":
                if len(values) != 3 or not all(v.isnumeric() for v in values):
                    problems.append(f"{spot}: number values must be 3 isnumeric strings [min, max, step]")
                default = attribute.get("default_value", values[0])
                if not isinstance(default, str) or not default.isnumeric():
                    problems.append(f"{spot}: number default_value must be an isnumeric string")
    return problems


def problems(config, *, gpu: bool) -> list[str]:
    """What CVAT (2.17 and later) or Nuclio would choke on in one function config."""
    found: list[str] = []
    if not isinstance(config, dict):
        return ["the file must hold a mapping"]
    metadata = config.get("metadata") or {}
    spec = config.get("spec") or {}
    name = metadata.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        found.append(f"metadata.name must match {NAME_RE.pattern}, got {name!r}")
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        return found + ["metadata.annotations missing"]
    for key, value in annotations.items():
        if not isinstance(value, str):
            found.append(f"metadata.annotations.{key} must be a string (Nuclio stores strings), got {value!r}")
    kind = annotations.get("type")
    if kind not in ("detector", "interactor"):
        found.append(f"metadata.annotations.type must be detector or interactor, got {kind!r}")
    found += _spec_problems(annotations.get("spec"))
    if kind == "detector" and not json.loads(annotations.get("spec") or "[]"):
        found.append("a detector needs spec labels")
    if kind == "interactor":
        try:
            if _int(annotations.get("version", 1)) < 2:
                found.append("an interactor needs version >= 2 (the UI disables older ones)")
        except (TypeError, ValueError):
            found.append(f"version must be an integer, got {annotations.get('version')!r}")
        try:
            if _int(annotations["min_pos_points"]) < 0:
                found.append("min_pos_points must be >= 0")
        except (KeyError, TypeError, ValueError):
            found.append("an interactor needs an integer min_pos_points")
        try:
            if _int(annotations["min_neg_points"]) != 0:
                found.append("min_neg_points must be 0 (negative clicks allowed, none required)")
        except (KeyError, TypeError, ValueError):
            found.append("an interactor needs min_neg_points 0")
        if "startswith_box" in annotations and str(annotations["startswith_box"]).lower() in ("false", "0", "", "none"):
            found.append("never write startswith_box: false (CVAT parses it with bool(str): it means true)")
    description = spec.get("description")
    if not isinstance(description, str) or not description.strip():
        found.append("spec.description is mandatory (CVAT 2.17 fails the whole function list without it)")
    if spec.get("handler") != "main:handler":
        found.append(f"spec.handler must be main:handler, got {spec.get('handler')!r}")
    if not str(spec.get("runtime", "")).startswith("python:3"):
        found.append(f"spec.runtime must be python:3.x, got {spec.get('runtime')!r}")
    timeout = re.fullmatch(r"(\d+)s", str(spec.get("eventTimeout", "")))
    if not timeout or int(timeout.group(1)) < 30:
        found.append(f"spec.eventTimeout must be at least 30s, got {spec.get('eventTimeout')!r}")
    env = spec.get("env", [])
    if not isinstance(env, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str)
        for item in env
    ):
        found.append("spec.env must be a list of {name, value} strings")
    elif len({item["name"] for item in env}) != len(env):
        found.append("spec.env names must be unique")
    triggers = [t for t in (spec.get("triggers") or {}).values() if isinstance(t, dict) and t.get("kind") == "http"]
    if len(triggers) != 1:
        found.append(f"spec.triggers needs exactly one http trigger, got {len(triggers)}")
    for trigger in triggers:
        body = (trigger.get("attributes") or {}).get("maxRequestBodySize")
        if not isinstance(body, int) or body < MIN_BODY:
            found.append(f"maxRequestBodySize must be >= {MIN_BODY}, got {body!r}")
        workers = trigger.get("maxWorkers")
        if not isinstance(workers, int) or workers < 1:
            found.append(f"maxWorkers must be a positive integer, got {workers!r}")
        if gpu and workers != 1:
            found.append(f"a GPU function must have maxWorkers 1 (one model copy per GPU), got {workers!r}")
        if not isinstance(trigger.get("workerAvailabilityTimeoutMilliseconds"), int):
            found.append("workerAvailabilityTimeoutMilliseconds must be an integer")
    limits = (spec.get("resources") or {}).get("limits") or {}
    if gpu:
        if not isinstance(limits.get("nvidia.com/gpu"), int) or limits["nvidia.com/gpu"] < 1:
            found.append("a GPU function needs resources.limits nvidia.com/gpu >= 1")
        if "cuda" not in str((spec.get("build") or {}).get("baseImage", "")):
            found.append("a GPU function needs a CUDA base image")
    elif "nvidia.com/gpu" in limits:
        found.append("a CPU function must not ask for nvidia.com/gpu")
    attributes = (spec.get("platform") or {}).get("attributes") or {}
    if (attributes.get("restartPolicy") or {}).get("name") != "always" or attributes.get("mountMode") != "volume":
        found.append("spec.platform.attributes needs restartPolicy always and mountMode volume")
    return found


def pair_problems(cpu, gpu) -> list[str]:
    """function.yaml and function-gpu.yaml must describe the same function to CVAT."""
    found = []
    if cpu["metadata"]["name"] != gpu["metadata"]["name"]:
        found.append("CPU and GPU files must have the same metadata.name")
    cpu_annotations, gpu_annotations = cpu["metadata"]["annotations"], gpu["metadata"]["annotations"]
    if cpu_annotations.get("spec") != gpu_annotations.get("spec"):
        found.append("CPU and GPU spec labels differ (main.py reads one, CVAT the other)")
    if cpu_annotations != gpu_annotations:
        found.append("CPU and GPU annotations differ")
    return found


def _load(text: str):
    return yaml.safe_load(text)


def _check_rendered(ontology: Ontology, options: RenderOptions | None = None) -> None:
    for function in render(ontology, options=options):
        cpu = _load(function.files["function.yaml"])
        gpu = _load(function.files["function-gpu.yaml"])
        assert problems(cpu, gpu=False) == [], function.kind
        assert problems(gpu, gpu=True) == [], function.kind
        assert pair_problems(cpu, gpu) == [], function.kind


# ----------------------------------------------------------------------------- checked-in files
CHECKED_IN = sorted(FUNCTIONS.glob("*/function*.yaml"))


def test_every_checked_in_function_has_both_files():
    dirs = sorted(p.name for p in FUNCTIONS.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    assert dirs == ["grounded-sam", "grounding-dino", "sam", "sam-interactor"]
    assert [p.relative_to(FUNCTIONS).as_posix() for p in CHECKED_IN] == [
        f"{d}/{f}" for d in dirs for f in ("function-gpu.yaml", "function.yaml")
    ]


@pytest.mark.parametrize("path", CHECKED_IN, ids=lambda p: p.relative_to(FUNCTIONS).as_posix())
def test_checked_in_function_yaml_passes_cvat_checks(path):
    config = _load(path.read_text(encoding="utf-8"))
    assert problems(config, gpu=path.name == "function-gpu.yaml") == []


@pytest.mark.parametrize("directory", sorted({p.parent for p in CHECKED_IN}), ids=lambda p: p.name)
def test_checked_in_cpu_and_gpu_files_have_identical_specs(directory):
    cpu = _load((directory / "function.yaml").read_text(encoding="utf-8"))
    gpu = _load((directory / "function-gpu.yaml").read_text(encoding="utf-8"))
    assert pair_problems(cpu, gpu) == []


def test_checked_in_ids_and_types():
    by_dir = {p.parent.name: _load(p.read_text(encoding="utf-8")) for p in CHECKED_IN if p.name == "function.yaml"}
    assert {d: c["metadata"]["name"] for d, c in by_dir.items()} == {
        "grounding-dino": "grounding-dino",
        "grounded-sam": "grounded-sam",
        "sam": "pth-facebookresearch-sam-vit-h",
        "sam-interactor": "sam-interactor",
    }
    kinds = {d: c["metadata"]["annotations"]["type"] for d, c in by_dir.items()}
    assert kinds == {
        "grounding-dino": "detector",
        "grounded-sam": "detector",
        "sam": "interactor",
        "sam-interactor": "interactor",
    }
    spec = json.loads(by_dir["grounding-dino"]["metadata"]["annotations"]["spec"])
    assert [label["name"] for label in spec] == list(load_ontology(FUNCTIONS / "ontology.yaml").label_names)
    assert len(spec) == 80


# ----------------------------------------------------------------------------- fresh renders
def test_rendered_sample_ontology_passes_cvat_checks():
    _check_rendered(load_ontology(SAMPLES / "ontology.yaml"))


def test_rendered_named_ontology_with_scores_and_small_sam_passes_cvat_checks():
    ontology = parse_ontology(
        "name: site-safety\nscore_attribute: true\nlabels:\n"
        "  - {name: 'hard hat', prompts: [hard hat, helmet], threshold: 0.4, type: mask}\n"
        "  - {name: 'Person: worker #1', prompts: [worker], type: polygon}\n"
        "  - {name: \"ladder 'alu'\", prompts: [ladder]}\n"
    )
    _check_rendered(
        ontology, RenderOptions(sam_model_type="vit_b", gdino_model="IDEA-Research/grounding-dino-base@" + "ab" * 20)
    )


_names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=16).filter(
    lambda s: s == s.strip() and s.strip()
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(_names, min_size=1, max_size=6, unique_by=str.casefold),
    types=st.lists(st.sampled_from(["rectangle", "polygon", "mask"]), min_size=6, max_size=6),
    score=st.booleans(),
)
def test_any_ontology_renders_valid_yaml_with_the_exact_label_names(names, types, score):
    ontology = Ontology(
        labels=[Label(name, (f"thing {i}",), type=types[i]) for i, name in enumerate(names)],
        defaults=Defaults(),
        score_attribute=score,
    )
    _check_rendered(ontology)
    for function in render(ontology, kinds="grounding-dino,grounded-sam"):
        for file in ("function.yaml", "function-gpu.yaml"):
            spec = json.loads(_load(function.files[file])["metadata"]["annotations"]["spec"])
            assert [label["name"] for label in spec] == names
            assert all(bool(label["attributes"]) == score for label in spec)


# ----------------------------------------------------------------------------- the checker can fail
def _valid_pair():
    (function,) = render(load_ontology(SAMPLES / "ontology.yaml"), kinds="sam-interactor")
    return _load(function.files["function.yaml"]), _load(function.files["function-gpu.yaml"])


def _valid_detector():
    (function,) = render(load_ontology(SAMPLES / "ontology.yaml"), kinds="grounding-dino")
    return _load(function.files["function.yaml"])


BREAKAGES = [
    ("no description", lambda c: c["spec"].pop("description"), "spec.description"),
    ("spec as list", lambda c: c["metadata"]["annotations"].__setitem__("spec", []), "JSON string"),
    ("spec not JSON", lambda c: c["metadata"]["annotations"].__setitem__("spec", "[{"), "does not parse"),
    ("version 1", lambda c: c["metadata"]["annotations"].__setitem__("version", "1"), "version"),
    ("no negatives", lambda c: c["metadata"]["annotations"].__setitem__("min_neg_points", "-1"), "min_neg_points"),
    (
        "startswith_box false",
        lambda c: c["metadata"]["annotations"].__setitem__("startswith_box", "false"),
        "startswith_box",
    ),
    (
        "small body",
        lambda c: c["spec"]["triggers"]["myHttpTrigger"]["attributes"].__setitem__("maxRequestBodySize", 4194304),
        "maxRequestBodySize",
    ),
    ("bad type", lambda c: c["metadata"]["annotations"].__setitem__("type", "segmenter"), "type"),
    ("bad name", lambda c: c["metadata"].__setitem__("name", "sam interactor"), "metadata.name"),
]


@pytest.mark.parametrize("what,breaks,expected", BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_checker_catches_broken_interactor_config(what, breaks, expected):
    cpu, _ = _valid_pair()
    assert problems(cpu, gpu=False) == []
    broken = copy.deepcopy(cpu)
    breaks(broken)
    assert any(expected in p for p in problems(broken, gpu=False)), what


def test_checker_catches_broken_detector_and_gpu_configs():
    detector = _valid_detector()
    spec = json.loads(detector["metadata"]["annotations"]["spec"])
    duplicate = copy.deepcopy(detector)
    duplicate["metadata"]["annotations"]["spec"] = json.dumps(spec + spec[:1])
    assert any("duplicate label name" in p for p in problems(duplicate, gpu=False))
    decimal = copy.deepcopy(detector)
    spec[0]["attributes"] = [{"name": "score", "input_type": "number", "values": ["0", "1", "0.1"]}]
    decimal["metadata"]["annotations"]["spec"] = json.dumps(spec)
    assert any("isnumeric" in p for p in problems(decimal, gpu=False))

    cpu, gpu = _valid_pair()
    assert problems(gpu, gpu=True) == [] and pair_problems(cpu, gpu) == []
    assert any("nvidia.com/gpu" in p for p in problems(cpu, gpu=True))  # a CPU file posing as GPU
    two_workers = copy.deepcopy(gpu)
    two_workers["spec"]["triggers"]["myHttpTrigger"]["maxWorkers"] = 2
    assert any("maxWorkers 1" in p for p in problems(two_workers, gpu=True))
    other = copy.deepcopy(gpu)
    other["metadata"]["annotations"]["spec"] = '[{"name": "x"}]'
    assert any("spec labels differ" in p for p in pair_problems(cpu, other))
