"""Tests for serverless.ontology: YAML parsing and its errors, hashing, prompt chunking
and phrase → label mapping."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from serverless.ontology import (
    LABEL_TYPES,
    Defaults,
    Label,
    Models,
    Ontology,
    OntologyError,
    OntologyFieldError,
    PromptChunk,
    UnknownLabelError,
    build_chunk,
    chunk_prompts,
    load_ontology,
    normalize_phrase,
    ontology_from_prompt,
    parse_ontology,
    phrase_to_label,
    prompt_phrases,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

SITE = """\
name: site-safety            # optional
defaults: {threshold: 0.3, text_threshold: 0.25, nms_iou: 0.5}
score_attribute: false
labels:
  - name: person
    prompts: [person, worker]
    threshold: 0.35
    type: rectangle
  - name: ladder
"""


def words_counter(text: str) -> int:
    """A stand-in tokenizer: one token per word or '.', plus [CLS] and [SEP]."""
    return len(text.split()) + 2


def make_ontology(*labels: tuple[str, list[str]] | str, **kwargs) -> Ontology:
    built = []
    for item in labels:
        name, prompts = (item, [item]) if isinstance(item, str) else item
        built.append(Label(name, tuple(prompts)))
    return Ontology(labels=tuple(built), **kwargs)


def dump_yaml(data: dict) -> str:
    stream = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, stream)
    return stream.getvalue()


# --------------------------------------------------------------------------- valid input


def test_example_parses_with_its_values():
    ontology = parse_ontology(SITE, source="site.yaml")
    assert ontology.name == "site-safety"
    assert ontology.defaults == Defaults(0.3, 0.25, 0.5, False)
    assert ontology.score_attribute is False
    assert ontology.labels == (
        Label("person", ("person", "worker"), 0.35, "rectangle"),
        Label("ladder", ("ladder",), None, "rectangle"),
    )
    assert ontology.label_names == ("person", "ladder")
    assert ontology.source == SITE
    assert ontology.index("ladder") == 1
    assert ontology.threshold_for(0) == pytest.approx(0.35)
    assert ontology.threshold_for(1) == pytest.approx(0.3)
    assert ontology.thresholds.dtype == np.float32
    np.testing.assert_allclose(ontology.thresholds, [0.35, 0.3])
    assert ontology.function_name("grounding-dino") == "site-safety-grounding-dino"
    assert prompt_phrases(ontology) == [("person", 0), ("worker", 0), ("ladder", 1)]
    # values are plain Python types, not ruamel scalars
    assert type(ontology.labels[0].threshold) is float
    assert type(ontology.labels[0].name) is str


def test_minimal_ontology_takes_every_default():
    ontology = parse_ontology("labels:\n  - name: Hard Hat\n")
    assert ontology.defaults == Defaults()
    assert (Defaults().threshold, Defaults().text_threshold, Defaults().nms_iou) == (0.3, 0.25, 0.5)
    assert Defaults().class_agnostic_nms is False
    assert ontology.name is None
    assert ontology.score_attribute is False
    assert ontology.labels == (Label("Hard Hat", ("hard hat",), None, "rectangle"),)
    assert ontology.function_name("grounding-dino") == "grounding-dino"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "defaults: {class_agnostic_nms: true}\nlabels: [{name: a}]\n",
            {"class_agnostic_nms": True},
        ),
        ("defaults: {threshold: 1}\nlabels: [{name: a}]\n", {"threshold": 1.0}),
        (
            "defaults: {threshold: 0, nms_iou: 0.7}\nlabels: [{name: a}]\n",
            {"threshold": 0.0, "nms_iou": 0.7},
        ),
        ("defaults: {}\nlabels: [{name: a}]\n", {}),
    ],
)
def test_defaults_are_overridable(text, expected):
    assert parse_ontology(text).defaults == Defaults(**expected)


@pytest.mark.parametrize("kind", LABEL_TYPES)
def test_every_label_type_parses(kind):
    ontology = parse_ontology(f"labels:\n  - name: a\n    type: {kind}\n")
    assert ontology.labels[0].type == kind


def test_score_attribute_true():
    assert parse_ontology("score_attribute: true\nlabels: [{name: a}]\n").score_attribute is True


def test_prompts_are_normalized():
    ontology = parse_ontology(
        "labels:\n  - name: vest\n    prompts: ['Hi-Vis  Vest.', ' safety vest ']\n"
    )
    assert ontology.labels[0].prompts == ("hi-vis vest", "safety vest")


def test_bundled_sample_ontology_loads():
    ontology = load_ontology(ROOT / "samples" / "ontology.yaml")
    assert "person" in ontology.label_names
    assert ontology.source is not None


def test_load_ontology_reads_a_file(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(SITE, encoding="utf-8")
    assert load_ontology(path) == parse_ontology(SITE)
    assert load_ontology(str(path)).source == SITE


def test_load_ontology_names_the_file_in_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("labels:\n  - name: a\n    threshold: 2\n", encoding="utf-8")
    with pytest.raises(OntologyError, match=r"bad\.yaml:3: labels\[0\]\.threshold"):
        load_ontology(path)


def test_missing_file_is_an_ontology_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(OntologyError, match="not found") as info:
        load_ontology(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- errors


def test_error_message_format_exactly():
    text = (
        "name: site-safety\n"
        "labels:\n"
        "  - name: person\n"
        "    prompts: [person, worker]\n"
        "    threshold: 0.35\n"
        "  - name: ladder\n"
        "    threshold: 1.5\n"
    )
    with pytest.raises(OntologyError) as info:
        parse_ontology(text, source="site.yaml")
    assert str(info.value) == "site.yaml:7: labels[1].threshold: must be a number in 0..1, got 1.5"
    assert isinstance(info.value, ValueError)


ERROR_CASES = [
    # (id, text, line, field path, fragment of the message)
    ("top-level list", "- a\n- b\n", 1, "document", "must be a mapping"),
    ("top-level scalar", "person\n", 1, "document", "got 'person'"),
    ("empty document", "", 1, "document", "empty document"),
    ("comments only", "# nothing\n", 1, "document", "empty document"),
    ("yaml syntax", "labels:\n  - name: a\n   bad: x\n", 3, "YAML syntax error", "expected"),
    (
        "yaml duplicate key",
        "labels:\n  - name: a\n    name: b\n",
        3,
        "YAML syntax error",
        "duplicate key",
    ),
    ("labels missing", "name: x\n", 1, "labels", "missing"),
    ("labels empty", "name: x\nlabels: []\n", 2, "labels", "got an empty list"),
    ("labels null", "name: x\nlabels:\n", 2, "labels", "got null"),
    ("labels not a list", "labels: {name: a}\n", 1, "labels", "got a mapping"),
    ("label a string", "labels:\n  - person\n", 2, "labels[0]", "write '- name: person'"),
    ("label null", "labels:\n  - name: a\n  -\n", 3, "labels[1]", "got null"),
    (
        "label without name",
        "labels:\n  - name: a\n  - prompts: [b]\n",
        3,
        "labels[1].name",
        "missing",
    ),
    ("name not a string", "labels:\n  - name: 12\n", 2, "labels[0].name", "got 12"),
    ("name a boolean", "labels:\n  - name: true\n", 2, "labels[0].name", "got true (a boolean)"),
    ("name blank", "labels:\n  - name: '  '\n", 2, "labels[0].name", "non-empty string"),
    ("name padded", "labels:\n  - name: ' person'\n", 2, "labels[0].name", "whitespace"),
    (
        "duplicate names case-insensitive",
        "labels:\n  - name: person\n  - name: ladder\n  - name: Person\n    prompts: [human]\n",
        4,
        "labels[2].name",
        "duplicate label name 'Person'",
    ),
    (
        "empty prompt list",
        "labels:\n  - name: a\n    prompts: []\n",
        3,
        "labels[0].prompts",
        "got an empty list",
    ),
    ("prompts null", "labels:\n  - name: a\n    prompts:\n", 3, "labels[0].prompts", "got null"),
    (
        "prompts a string",
        "labels:\n  - name: a\n    prompts: a\n",
        3,
        "labels[0].prompts",
        "non-empty list",
    ),
    (
        "blank prompt",
        "labels:\n  - name: a\n    prompts:\n      - a\n      - '   '\n",
        5,
        "labels[0].prompts[1]",
        "non-empty phrase",
    ),
    (
        "empty prompt",
        "labels:\n  - name: a\n    prompts: [a, '']\n",
        3,
        "labels[0].prompts[1]",
        "non-empty phrase",
    ),
    (
        "dot-only prompt",
        "labels:\n  - name: a\n    prompts: ['.']\n",
        3,
        "labels[0].prompts[0]",
        "non-empty phrase",
    ),
    (
        "prompt not a string",
        "labels:\n  - name: a\n    prompts: [3]\n",
        3,
        "labels[0].prompts[0]",
        "got 3",
    ),
    (
        "prompt repeated in one label",
        "labels:\n  - name: a\n    prompts: [worker, ' Worker.']\n",
        3,
        "labels[0].prompts[1]",
        "repeats prompts[0]",
    ),
    (
        "prompt shared by two labels",
        "labels:\n  - name: person\n    prompts: [person, worker]\n"
        "  - name: builder\n    prompts:\n      - builder\n      - 'Worker.'\n",
        7,
        "labels[1].prompts[1]",
        "already belongs to label 'person'",
    ),
    (
        "default prompt shared",
        "labels:\n  - name: human\n    prompts: [human, person]\n  - name: person\n",
        4,
        "labels[1].name (its prompt)",
        "already belongs to label 'human'",
    ),
    (
        "prompt with separator",
        "labels:\n  - name: flag\n    prompts: [u.s. flag]\n",
        3,
        "labels[0].prompts[0]",
        "must not contain '.'",
    ),
    (
        "name with separator",
        "labels:\n  - name: U.S. flag\n",
        2,
        "labels[0].name",
        "used as the prompt",
    ),
    (
        "threshold too big",
        "labels:\n  - name: a\n    threshold: 1.5\n",
        3,
        "labels[0].threshold",
        "got 1.5",
    ),
    (
        "threshold negative",
        "labels:\n  - name: a\n    threshold: -0.1\n",
        3,
        "labels[0].threshold",
        "got -0.1",
    ),
    (
        "threshold string",
        "labels:\n  - name: a\n    threshold: '0.3'\n",
        3,
        "labels[0].threshold",
        "got '0.3'",
    ),
    (
        "threshold bool",
        "labels:\n  - name: a\n    threshold: true\n",
        3,
        "labels[0].threshold",
        "got true",
    ),
    (
        "threshold anchored bool",
        "labels:\n  - name: a\n    threshold: &t false\n",
        3,
        "labels[0].threshold",
        "boolean",
    ),
    (
        "threshold nan",
        "labels:\n  - name: a\n    threshold: .nan\n",
        3,
        "labels[0].threshold",
        "got nan",
    ),
    (
        "threshold null",
        "labels:\n  - name: a\n    threshold:\n",
        3,
        "labels[0].threshold",
        "got null",
    ),
    (
        "threshold list",
        "labels:\n  - name: a\n    threshold: [0.3]\n",
        3,
        "labels[0].threshold",
        "got a list",
    ),
    (
        "defaults threshold",
        "defaults: {threshold: 2}\nlabels: [{name: a}]\n",
        1,
        "defaults.threshold",
        "got 2",
    ),
    (
        "defaults text_threshold",
        "defaults:\n  text_threshold: -1\nlabels: [{name: a}]\n",
        2,
        "defaults.text_threshold",
        "got -1",
    ),
    (
        "defaults nms_iou",
        "defaults:\n  nms_iou: high\nlabels: [{name: a}]\n",
        2,
        "defaults.nms_iou",
        "got 'high'",
    ),
    (
        "defaults class_agnostic_nms",
        "defaults:\n  class_agnostic_nms: 1\nlabels: [{name: a}]\n",
        2,
        "defaults.class_agnostic_nms",
        "must be true or false, got 1",
    ),
    (
        "defaults not a mapping",
        "defaults: 0.3\nlabels: [{name: a}]\n",
        1,
        "defaults",
        "must be a mapping",
    ),
    (
        "score_attribute",
        "labels: [{name: a}]\nscore_attribute: 'yes'\n",
        2,
        "score_attribute",
        "got 'yes'",
    ),
    (
        "bad type",
        "labels:\n  - name: a\n    type: box\n",
        3,
        "labels[0].type",
        "rectangle, polygon, mask, tag, got 'box'",
    ),
    (
        "type wrong case",
        "labels:\n  - name: a\n    type: Mask\n",
        3,
        "labels[0].type",
        "got 'Mask'",
    ),
    ("name uppercase", "name: Site-Safety\nlabels: [{name: a}]\n", 1, "name", "got 'Site-Safety'"),
    ("name underscore", "name: site_safety\nlabels: [{name: a}]\n", 1, "name", "^[a-z0-9]"),
    ("name trailing hyphen", "labels: [{name: a}]\nname: site-\n", 2, "name", "got 'site-'"),
    ("name not a string", "name: 7\nlabels: [{name: a}]\n", 1, "name", "got 7"),
    ("unknown top key", "name: x\nlables: []\n", 2, "lables", "did you mean 'labels'"),
    (
        "unknown defaults key",
        "defaults:\n  treshold: 0.3\nlabels: [{name: a}]\n",
        2,
        "defaults.treshold",
        "unknown key",
    ),
    (
        "unknown label key",
        "labels:\n  - name: a\n    prompt: [a]\n",
        3,
        "labels[0].prompt",
        "did you mean 'prompts'",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "path", "fragment"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors_name_file_line_and_field(text, line, path, fragment):
    with pytest.raises(OntologyError) as info:
        parse_ontology(text, source="site.yaml")
    message = str(info.value)
    assert message.startswith(f"site.yaml:{line}: {path}"), message
    assert fragment in message, message


def test_yaml_error_keeps_the_cause():
    with pytest.raises(OntologyError) as info:
        parse_ontology("labels: [a\n")
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Label("a", "a"), "prompts: must be a non-empty list of strings, got 'a'"),
        (lambda: Label("a", ()), "prompts: must be a non-empty list"),
        (lambda: Label("a", ("a.b",)), "prompts[0]: must not contain '.'"),
        (lambda: Label("a", ("a",), threshold=1.2), "threshold: must be a number in 0..1, got 1.2"),
        (lambda: Label("a", ("a",), type="box"), "type: must be one of"),
        (lambda: Label(3, ("a",)), "name: must be a non-empty string, got 3"),
        (
            lambda: Defaults(threshold=True),
            "defaults.threshold: must be a number in 0..1, got true",
        ),
        (lambda: Defaults(class_agnostic_nms="no"), "defaults.class_agnostic_nms"),
        (lambda: Ontology(labels=()), "labels: must be a non-empty list"),
        (lambda: Ontology(labels=("a",)), "labels[0]: must be a Label, got 'a'"),
        (lambda: make_ontology("a", "A"), "labels[1].name: duplicate label name 'A'"),
        (
            lambda: make_ontology(("a", ["x"]), ("b", ["X"])),
            "labels[1].prompts[0]: prompt 'x' already belongs",
        ),
        (lambda: make_ontology("a", name="Bad Name"), "name: must be lowercase"),
        (lambda: make_ontology("a", score_attribute=1), "score_attribute: must be true or false"),
    ],
)
def test_python_construction_is_checked_too(build, fragment):
    with pytest.raises(OntologyError) as info:
        build()
    assert fragment in str(info.value)


def test_python_construction_normalizes_and_freezes():
    label = Label("Person", ["Person", "Worker."])
    assert label.prompts == ("person", "worker")
    ontology = Ontology(labels=[label])
    assert isinstance(ontology.labels, tuple)
    assert ontology.source is None
    with pytest.raises(AttributeError):
        ontology.name = "x"  # type: ignore[misc]
    assert Label("a", ("a",), threshold=np.float32(0.5)).threshold == 0.5


# --------------------------------------------------------------------------- hashing and dicts

SAME_AS_SITE = [
    # comments, flow/block style, key order, quoting, omitted defaults and default prompts
    pytest.param(SITE, id="identical"),
    pytest.param(
        "# Site safety ontology\n"
        "labels:\n"
        "- name: person   # people\n"
        "  type: rectangle\n"
        "  threshold: 0.350\n"
        "  prompts:\n"
        "    - Person\n"
        "    - 'worker.'\n"
        "- {name: ladder, prompts: [ladder]}\n"
        "score_attribute: false\n"
        'name: "site-safety"\n',
        id="reformatted",
    ),
    pytest.param(
        "name: site-safety\n"
        "defaults:\n"
        "  nms_iou: 0.5\n"
        "  class_agnostic_nms: false\n"
        "labels:\n"
        "  - name: person\n"
        "    prompts: [person, worker]\n"
        "    threshold: 0.35\n"
        "  - name: ladder\n",
        id="explicit-default-values",
    ),
]


@pytest.mark.parametrize("text", SAME_AS_SITE)
def test_content_hash_ignores_formatting(text):
    base = parse_ontology(SITE)
    other = parse_ontology(text)
    assert other == base
    assert other.content_hash == base.content_hash
    assert len(base.content_hash) == 64
    int(base.content_hash, 16)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(SITE.replace("threshold: 0.35", "threshold: 0.36"), id="label-threshold"),
        pytest.param(SITE.replace("threshold: 0.3,", "threshold: 0.31,"), id="default-threshold"),
        pytest.param(SITE.replace("    threshold: 0.35\n", ""), id="threshold-removed"),
        pytest.param(SITE.replace("type: rectangle", "type: mask"), id="type"),
        pytest.param(SITE.replace("worker", "builder"), id="prompt"),
        pytest.param(SITE.replace("[person, worker]", "[worker, person]"), id="prompt-order"),
        pytest.param(
            SITE.replace("score_attribute: false", "score_attribute: true"), id="score-attribute"
        ),
        pytest.param(SITE.replace("name: site-safety", "name: site"), id="name"),
        pytest.param(SITE.replace("name: site-safety            # optional\n", ""), id="no-name"),
        pytest.param(
            SITE.replace("nms_iou: 0.5}", "nms_iou: 0.5, class_agnostic_nms: true}"),
            id="agnostic-nms",
        ),
    ],
)
def test_content_hash_changes_with_content(text):
    assert parse_ontology(text).content_hash != parse_ontology(SITE).content_hash


def test_source_does_not_affect_equality_or_hash():
    a = parse_ontology(SITE)
    b = parse_ontology("# comment\n" + SITE)
    assert a.source != b.source
    assert a == b and hash(a) == hash(b)


def test_to_dict_is_canonical_plain_data():
    data = parse_ontology(SITE).to_dict()
    assert data == {
        "name": "site-safety",
        "defaults": {
            "threshold": 0.3,
            "text_threshold": 0.25,
            "nms_iou": 0.5,
            "class_agnostic_nms": False,
            "max_detections": 100,
        },
        "score_attribute": False,
        "labels": [
            {
                "name": "person",
                "prompts": ["person", "worker"],
                "threshold": 0.35,
                "type": "rectangle",
            },
            {"name": "ladder", "prompts": ["ladder"], "type": "rectangle"},
        ],
    }
    assert type(data["labels"]) is list and type(data["labels"][0]["name"]) is str


@pytest.mark.parametrize(
    "text",
    [
        SITE,
        "labels:\n  - name: Hard Hat\n    type: mask\n",
        "score_attribute: true\nlabels: [{name: a, threshold: 0}]\n",
    ],
)
def test_to_dict_round_trips_through_yaml(text):
    ontology = parse_ontology(text)
    again = parse_ontology(dump_yaml(ontology.to_dict()))
    assert again == ontology
    assert again.content_hash == ontology.content_hash


def test_to_dict_round_trips_through_pyyaml():
    yaml = pytest.importorskip("yaml")
    ontology = parse_ontology(SITE)
    assert parse_ontology(yaml.safe_dump(ontology.to_dict())) == ontology


# --------------------------------------------------------------------------- label access


def test_with_thresholds_replaces_named_labels_only():
    ontology = parse_ontology(SITE)
    tuned = ontology.with_thresholds({"ladder": 0.42})
    assert tuned.labels[1].threshold == pytest.approx(0.42)
    assert tuned.labels[0] == ontology.labels[0]
    assert ontology.labels[1].threshold is None  # the original is unchanged
    assert tuned.source is None
    assert tuned.content_hash != ontology.content_hash
    np.testing.assert_allclose(tuned.thresholds, [0.35, 0.42])


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({}, [0.35, 0.3]),
        ({"person": 0.5, "ladder": 0.6}, [0.5, 0.6]),
        ({"person": None}, [0.3, 0.3]),
        ({"person": np.float32(0.25)}, [0.25, 0.3]),
        ({"ladder": 1}, [0.35, 1.0]),
    ],
)
def test_with_thresholds_table(mapping, expected):
    np.testing.assert_allclose(parse_ontology(SITE).with_thresholds(mapping).thresholds, expected)


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [
        ({"dog": 0.5}, "unknown label 'dog'"),
        ({"Person": 0.5}, "did you mean 'person'?"),
        ({"person": 1.5}, "threshold for label 'person': must be a number in 0..1, got 1.5"),
        ({"person": "0.5"}, "got '0.5'"),
    ],
)
def test_with_thresholds_rejects_bad_input(mapping, fragment):
    with pytest.raises(OntologyError) as info:
        parse_ontology(SITE).with_thresholds(mapping)
    assert fragment in str(info.value)


def test_index_unknown_label_is_a_key_error_naming_it():
    ontology = parse_ontology(SITE)
    with pytest.raises(KeyError) as info:
        ontology.index("helmet")
    assert isinstance(info.value, UnknownLabelError) and isinstance(info.value, OntologyError)
    assert str(info.value).startswith("unknown label 'helmet'")


@pytest.mark.parametrize("label_id", [-1, 2, 1.0, True])
def test_threshold_for_rejects_bad_ids(label_id):
    with pytest.raises(OntologyError, match="label id"):
        parse_ontology(SITE).threshold_for(label_id)


def test_threshold_for_accepts_numpy_ints():
    assert parse_ontology(SITE).threshold_for(np.int64(0)) == pytest.approx(0.35)


@pytest.mark.parametrize("kind", ["", "Grounding-DINO", "-sam", "sam_hq"])
def test_function_name_rejects_bad_kinds(kind):
    with pytest.raises(OntologyError, match="function kind"):
        parse_ontology(SITE).function_name(kind)


# --------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("person", "person"),
        ("  Hard   Hat ", "hard hat"),
        ("Person.", "person"),
        ("person . ", "person"),
        ("person..", "person"),
        ("hard\that\n", "hard hat"),
        ("hi-vis vest", "hi-vis vest"),
        ("", ""),
        (" . ", ""),
        ("u.s. flag", "u.s. flag"),
    ],
)
def test_normalize_phrase(text, expected):
    assert normalize_phrase(text) == expected


@pytest.mark.parametrize(
    ("prompt", "names"),
    [
        ("person. ladder . hard hat", ("person", "ladder", "hard hat")),
        ("Person.", ("person",)),
        ("person . ladder .", ("person", "ladder")),
        ("  Hard  Hat ..", ("hard hat",)),
        ("a. . b", ("a", "b")),
    ],
)
def test_ontology_from_prompt(prompt, names):
    ontology = ontology_from_prompt(prompt)
    assert ontology.label_names == names
    assert all(label.prompts == (label.name,) for label in ontology.labels)
    assert ontology.defaults == Defaults() and ontology.name is None and ontology.source is None


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("", "prompt is empty"),
        ("   ", "prompt is empty"),
        (" . .", "prompt is empty"),
        ("a. A", "repeats"),
    ],
)
def test_ontology_from_prompt_errors(prompt, fragment):
    with pytest.raises(OntologyError, match=fragment):
        ontology_from_prompt(prompt)


PHRASE_ONTOLOGY = make_ontology(
    ("person", ["person", "worker"]),
    "ladder",
    ("hard hat", ["hard hat", "helmet"]),
    ("cap", ["cap", "hat"]),
    ("life jacket", ["life jacket", "life vest"]),
    ("safety vest", ["safety vest", "hi-vis vest"]),
)


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("person", 0),
        ("worker", 0),
        ("Person.", 0),
        ("  WORKER  ", 0),
        ("ladder", 1),
        ("hard hat", 2),
        ("helmet", 2),
        ("hat", 3),  # exact alias beats partial overlap with "hard hat"
        ("hard hat person", 2),  # two shared words beat one
        ("hard - hat", 2),  # BERT decodes "hard-hat" with spaces around "-"
        ("red hat", 3),  # tie on one word: "hat" is fully covered, "hard hat" only half
        ("hard", 2),
        ("vest", 4),  # tie on words and coverage ("life vest", "safety vest"): ontology order
        ("safety", 5),
        ("hi-vis", 5),
        ("hi vis vest", 5),
        ("ladder person", 0),  # equal overlap and coverage: ontology order
        ("dog", None),
        ("", None),
        (".", None),
        ("-", None),
    ],
)
def test_phrase_to_label(phrase, expected):
    assert phrase_to_label(phrase, PHRASE_ONTOLOGY) == expected


@pytest.mark.parametrize(
    "phrases",
    [
        [("person", 0)],
        [("person", 0), ("worker", 0), ("ladder", 1)],
        [("hard hat", 2), ("hi-vis vest", 5)],
        [("a", 0), ("b", 1), ("c", 2), ("d", 3)],
    ],
)
def test_build_chunk_spans(phrases):
    chunk = build_chunk(phrases)
    assert chunk.text == " . ".join(p for p, _ in phrases) + " ."
    assert chunk.phrases == tuple(p for p, _ in phrases)
    assert chunk.label_ids == tuple(i for _, i in phrases)
    assert len(chunk.char_spans) == len(phrases)
    for (start, end), phrase in zip(chunk.char_spans, chunk.phrases, strict=True):
        assert chunk.text[start:end] == phrase


def test_build_chunk_example():
    chunk = build_chunk([("person", 0), ("worker", 0), ("ladder", 1)])
    assert chunk == PromptChunk(
        "person . worker . ladder .",
        ("person", "worker", "ladder"),
        (0, 0, 1),
        ((0, 6), (9, 15), (18, 24)),
    )


def test_build_chunk_normalizes():
    chunk = build_chunk([("  Hard  Hat.", 0)])
    assert chunk.text == "hard hat ."
    assert chunk.char_spans == ((0, 8),)


@pytest.mark.parametrize(
    ("phrases", "fragment"),
    [
        ([], "at least one phrase"),
        ([("a.b", 0)], "must not contain '.'"),
        ([(" ", 0)], "non-empty"),
    ],
)
def test_build_chunk_errors(phrases, fragment):
    with pytest.raises(OntologyError, match=fragment):
        build_chunk(phrases)


def lvis_ontology() -> Ontology:
    names = [
        line.strip()
        for line in (DATA / "lvis_300.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    labels = []
    for i, name in enumerate(names):
        prompts = [name, f"{name} object"] if i % 10 == 0 else [name]  # some aliases
        labels.append(Label(name, tuple(prompts)))
    return Ontology(labels=tuple(labels))


def check_chunks(
    chunks: list[PromptChunk], ontology: Ontology, count_tokens, max_tokens: int
) -> None:
    """The chunking contract: within budget, every phrase once and in order, greedy, spans right."""
    assert chunks
    flat = [pair for chunk in chunks for pair in zip(chunk.phrases, chunk.label_ids, strict=True)]
    assert flat == prompt_phrases(ontology)
    for chunk in chunks:
        assert count_tokens(chunk.text) <= max_tokens
        assert chunk == build_chunk(list(zip(chunk.phrases, chunk.label_ids, strict=True)))
        for (start, end), phrase in zip(chunk.char_spans, chunk.phrases, strict=True):
            assert chunk.text[start:end] == phrase
    for chunk, following in zip(chunks, chunks[1:], strict=False):
        grown = build_chunk(
            [
                *zip(chunk.phrases, chunk.label_ids, strict=True),
                (following.phrases[0], following.label_ids[0]),
            ]
        )
        assert count_tokens(grown.text) > max_tokens  # greedy: the next phrase did not fit


def test_lvis_fixture_has_300_distinct_multiword_names():
    ontology = lvis_ontology()
    assert len(ontology.labels) == 300
    assert all(len(name.split()) >= 2 for name in ontology.label_names)


def test_chunk_prompts_300_labels():
    ontology = lvis_ontology()
    chunks = chunk_prompts(ontology, words_counter, max_tokens=256)
    assert len(chunks) >= 3
    check_chunks(chunks, ontology, words_counter, 256)
    # every phrase maps back to its own label
    for phrase, label_id in prompt_phrases(ontology):
        assert phrase_to_label(phrase, ontology) == label_id
        assert phrase_to_label(phrase.upper() + ".", ontology) == label_id


def test_chunk_prompts_one_chunk_when_everything_fits():
    ontology = parse_ontology(SITE)
    (chunk,) = chunk_prompts(ontology, words_counter)
    assert chunk.text == "person . worker . ladder ."
    assert chunk.label_ids == (0, 0, 1)


def test_chunk_prompts_aliases_may_split_across_chunks():
    ontology = parse_ontology(SITE)
    # "person ." = 4 tokens, "person . worker ." = 6, "worker . ladder ." = 6
    chunks = chunk_prompts(ontology, words_counter, max_tokens=5)
    assert [c.phrases for c in chunks] == [("person",), ("worker",), ("ladder",)]
    chunks = chunk_prompts(ontology, words_counter, max_tokens=6)
    assert [c.phrases for c in chunks] == [("person", "worker"), ("ladder",)]


def test_chunk_prompts_counts_whole_captions():
    seen = []

    def count(text):
        seen.append(text)
        return words_counter(text)

    chunks = chunk_prompts(lvis_ontology(), count, max_tokens=256)
    assert {c.text for c in chunks} <= set(seen)


def test_chunk_prompts_too_long_phrase_names_the_label():
    long_prompt = " ".join(["very"] * 200) + " long ladder"  # under the load-time bound of 256
    ontology = make_ontology("person", ("ladder", ["ladder", long_prompt]))
    with pytest.raises(OntologyError) as info:
        chunk_prompts(ontology, words_counter, max_tokens=128)
    message = str(info.value)
    assert "label 'ladder'" in message and "labels[1]" in message and "max_tokens=128" in message
    assert len(message) < 300  # the prompt is abbreviated, not dumped


def test_chunk_prompts_too_long_first_phrase():
    with pytest.raises(OntologyError, match="label 'hard hat'"):
        chunk_prompts(make_ontology("hard hat"), words_counter, max_tokens=4)  # needs 5


@pytest.mark.parametrize("max_tokens", [0, -1, 2.5, True])
def test_chunk_prompts_rejects_bad_budget(max_tokens):
    with pytest.raises(OntologyError, match="max_tokens"):
        chunk_prompts(parse_ontology(SITE), words_counter, max_tokens=max_tokens)


WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8).filter(
    lambda w: w.strip("-")
)
PHRASES = st.lists(
    st.lists(WORDS, min_size=1, max_size=5).map(" ".join), min_size=1, max_size=40, unique=True
)
COUNTERS = st.sampled_from(
    [
        words_counter,
        lambda text: len(text) // 3 + 2,  # a character-based tokenizer
        lambda text: sum(1 + len(word) // 4 for word in text.split()) + 2,  # word pieces
    ]
)


@settings(max_examples=200, deadline=None)
@given(phrases=PHRASES, data=st.data(), count_tokens=COUNTERS, max_tokens=st.integers(1, 80))
def test_chunk_prompts_invariants(phrases, data, count_tokens, max_tokens):
    # group the phrases into labels of 1..3 aliases
    labels = []
    rest = list(phrases)
    while rest:
        size = data.draw(st.integers(1, min(3, len(rest))))
        labels.append(Label(f"label {len(labels)}", tuple(rest[:size])))
        rest = rest[size:]
    ontology = Ontology(labels=tuple(labels))
    too_long = [
        p
        for p, _ in prompt_phrases(ontology)
        if count_tokens(build_chunk([(p, 0)]).text) > max_tokens
    ]
    if too_long:
        with pytest.raises(OntologyError, match="shorten the prompt"):
            chunk_prompts(ontology, count_tokens, max_tokens)
        return
    chunks = chunk_prompts(ontology, count_tokens, max_tokens)
    check_chunks(chunks, ontology, count_tokens, max_tokens)


@settings(max_examples=100, deadline=None)
@given(phrases=PHRASES)
def test_every_prompt_maps_back_to_its_label(phrases):
    ontology = Ontology(labels=tuple(Label(f"l{i}", (p,)) for i, p in enumerate(phrases)))
    for i, phrase in enumerate(phrases):
        assert phrase_to_label(phrase, ontology) == i
        assert phrase_to_label(f" {phrase.upper()} .", ontology) == i


def test_module_does_not_import_torch():
    code = "import sys, serverless.ontology; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --------------------------------------------------------------------------- hostile input (issue 9)


def test_max_detections_defaults_to_100_and_is_settable():
    assert Defaults().max_detections == 100
    assert parse_ontology("labels: [{name: a}]\n").defaults.max_detections == 100
    ontology = parse_ontology("defaults: {max_detections: 7}\nlabels: [{name: a}]\n")
    assert ontology.defaults.max_detections == 7
    assert ontology.to_dict()["defaults"]["max_detections"] == 7
    assert ontology.content_hash != parse_ontology("labels: [{name: a}]\n").content_hash


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "true", "'10'", "10001"])
def test_max_detections_must_be_a_positive_integer(value):
    with pytest.raises(OntologyError) as info:
        parse_ontology(f"labels: [{{name: a}}]\ndefaults:\n  max_detections: {value}\n", "o.yaml")
    assert str(info.value).startswith("o.yaml:3: defaults.max_detections: must be an integer in 1..10000")
    with pytest.raises(OntologyError, match="defaults.max_detections"):
        Defaults(max_detections=0)


def test_deeply_nested_yaml_is_a_one_line_error():
    depth = 20_000  # as bad as 100,000 (the recursion limit is 1,000) and five times faster to scan
    with pytest.raises(OntologyError) as info:
        parse_ontology("[" * depth + "]" * depth, "deep.yaml")
    assert str(info.value) == "deep.yaml:1: YAML error: nested too deeply to be an ontology"


def test_a_prompt_certainly_over_256_tokens_is_refused_when_read():
    long_prompt = " ".join(["hard"] * 254)  # 254 words + [CLS] + "." + [SEP] = at least 257 tokens
    text = f"labels:\n  - name: hat\n    prompts:\n      - hat\n      - {long_prompt}\n"
    with pytest.raises(OntologyError) as info:
        parse_ontology(text, "site.yaml")
    message = str(info.value)
    assert message.startswith("site.yaml:5: labels[0].prompts[1]: is at least 257 tokens")
    assert len(message) < 300  # the prompt is abbreviated, not dumped
    short = " ".join(["hard"] * 253)  # at least 256 tokens: may still fit, left to chunk_prompts
    assert parse_ontology(f"labels:\n  - name: hat\n    prompts: [{short}]\n").labels[0].prompts == (short,)


def test_a_command_line_prompt_over_256_tokens_is_refused_briefly():
    with pytest.raises(OntologyError) as info:
        ontology_from_prompt("person . " + " ".join(["x"] * 300))
    assert "at least 303 tokens" in str(info.value) and len(str(info.value)) < 300


# --------------------------------------------------------------------------- models (issue 10)

MODELS = """\
models:
  detector: grounding-dino:IDEA-Research/grounding-dino-tiny
  segmenter: sam:vit_b
labels: [{name: a}]
"""


def test_models_name_the_detector_and_segmenter():
    ontology = parse_ontology(MODELS)
    assert ontology.models == Models("grounding-dino:IDEA-Research/grounding-dino-tiny", "sam:vit_b")
    assert ontology.to_dict()["models"] == {
        "detector": "grounding-dino:IDEA-Research/grounding-dino-tiny",
        "segmenter": "sam:vit_b",
    }
    assert parse_ontology("models: {segmenter: sam}\nlabels: [{name: a}]\n").models == Models(None, "sam")
    assert ontology.content_hash != parse_ontology("labels: [{name: a}]\n").content_hash


def test_an_ontology_without_models_keeps_its_canonical_form():
    ontology = parse_ontology("labels: [{name: a}]\n")
    assert ontology.models == Models() and "models" not in ontology.to_dict()


@pytest.mark.parametrize(
    ("text", "line", "path", "fragment"),
    [
        ("labels: [{name: a}]\nmodels:\n  detector: yolov5:best.pt\n", 3, "models.detector", "unknown model backend 'yolov5'"),
        ("labels: [{name: a}]\nmodels:\n  detector: sam:vit_b\n", 3, "models.detector", "sam is a segmenter"),
        ("labels: [{name: a}]\nmodels:\n  segmenter: sam:vit_q\n", 3, "models.segmenter", "model type must be one of"),
        ("labels: [{name: a}]\nmodels:\n  segmenter: 3\n", 3, "models.segmenter", "got 3"),
        ("labels: [{name: a}]\nmodels:\n  segmenter:\n", 3, "models.segmenter", "got null"),
        ("labels: [{name: a}]\nmodels:\n  classifier: grounding-dino\n", 3, "models.classifier", "is a detector, not a classifier"),
        ("labels: [{name: a}]\nmodels:\n  detectr: grounding-dino\n", 3, "models.detectr", "did you mean 'detector'"),
        ("labels: [{name: a}]\nmodels: grounding-dino\n", 2, "models", "must be a mapping of detector, segmenter"),
        ("labels: [{name: a}]\nmodel: {}\n", 2, "model", "did you mean 'models'"),
    ],
)
def test_model_errors_name_file_line_and_field(text, line, path, fragment):
    with pytest.raises(OntologyError) as info:
        parse_ontology(text, source="site.yaml")
    message = str(info.value)
    assert message.startswith(f"site.yaml:{line}: {path}"), message
    assert fragment in message, message


def test_models_built_in_python_are_checked_too():
    with pytest.raises(OntologyError, match="models.detector: detector spec 'yolov5'"):
        Models(detector="yolov5")
    with pytest.raises(OntologyError, match="models: must be a Models"):
        Ontology(labels=(Label("a", ("a",)),), models={"detector": "grounding-dino"})


def test_field_errors_carry_their_path():
    with pytest.raises(OntologyFieldError) as info:
        parse_ontology("labels:\n  - name: a\n    prompts: [b, ' B.']\n", "o.yaml")
    assert info.value.path == ("labels", 0, "prompts", 1) and info.value.problem == "'b' repeats prompts[0]"
    with pytest.raises(OntologyFieldError) as info:
        Label("a", ("x", "a.b"))
    assert info.value.path == ("prompts", 1) and str(info.value).startswith("label 'a': prompts[1]: ")


# --------------------------------------------------------------------------- parts: objects and tags

MIXED = """\
labels:
  - {name: car, prompts: [car], threshold: 0.4}
  - {name: sunny, prompts: [a sunny day], type: tag}
  - {name: person, type: mask}
  - {name: night, prompts: [a photo at night], type: tag, threshold: 0.2}
"""


def test_part_splits_objects_from_tags_keeping_order_and_settings():
    ontology = parse_ontology(MIXED, "mixed.yaml")
    assert ontology.has_objects and ontology.has_tags
    objects, tags = ontology.part("objects"), ontology.part("tags")
    assert objects.label_names == ("car", "person")
    assert tags.label_names == ("sunny", "night")
    assert tags.thresholds.tolist() == pytest.approx([ontology.defaults.threshold, 0.2])
    assert objects.defaults == tags.defaults == ontology.defaults
    assert len({ontology.content_hash, objects.content_hash, tags.content_hash}) == 3


def test_part_of_a_single_kind_ontology_is_itself_and_the_missing_part_is_named():
    only_objects = parse_ontology("labels:\n  - {name: car}\n", "o.yaml")
    assert only_objects.part("objects") is only_objects
    with pytest.raises(OntologyError, match="no tag labels"):
        only_objects.part("tags")
    only_tags = parse_ontology("labels:\n  - {name: sunny, type: tag}\n", "t.yaml")
    assert only_tags.part("tags") is only_tags and not only_tags.has_objects
    with pytest.raises(OntologyError, match="only tag labels"):
        only_tags.part("objects")
    with pytest.raises(ValueError, match="objects"):
        only_tags.part("shapes")
