"""The ontology: which labels to detect, how to prompt Grounding DINO for them, and how to
map its answers back to labels.

An ontology is written by hand in YAML::

    name: site-safety            # optional; becomes part of Nuclio function names
    defaults: {threshold: 0.3, text_threshold: 0.25, nms_iou: 0.5, class_agnostic_nms: false,
               max_detections: 100}
    score_attribute: false       # CVAT spec labels carry a "score" number attribute
    models:                      # optional: which models serve it (serverless.models.registry)
      detector: grounding-dino:IDEA-Research/grounding-dino-tiny
      segmenter: sam:vit_b
    labels:
      - name: person
        prompts: [person, worker]  # optional; defaults to [name]
        threshold: 0.35            # optional, overrides defaults.threshold
        type: rectangle            # rectangle | polygon | mask
      - name: ladder

Every key is checked: unknown keys, wrong types and out-of-range values raise
`OntologyError` naming the file, the 1-based line and the field path, e.g.
``site.yaml:7: labels[1].threshold: must be a number in 0..1, got 1.5``. The values are
checked in one place, the dataclasses (`Defaults`, `Label`, `Models`, `Ontology`), which raise
`OntologyFieldError` with the field's path; the YAML reader only maps the document's shape
onto them (mappings, known keys) and each path back to its line.

``models`` names the detector and segmenter as spec strings; a spec given on the command
line or in the environment takes precedence (`serverless.pipeline.ModelSettings`).

Prompts (the phrases sent to Grounding DINO) are stored normalized (see
`normalize_phrase`); each belongs to exactly one label, and none may contain ``"."``,
which separates phrases in a Grounding DINO caption. A label id is the index of the label
in `Ontology.labels`.

Long ontologies do not fit one caption (Grounding DINO reads at most 256 tokens):
`chunk_prompts` splits the phrases into captions that each fit, never truncating. A single
prompt that cannot fit a caption is refused when the ontology is read: without a tokenizer,
its tokens are bounded from below by its words (runs of text between spaces holding a letter
or digit) plus its ASCII punctuation marks (each its own token for BERT-style tokenizers),
plus 3 for ``[CLS]``, the closing ``"."`` and ``[SEP]``; a prompt whose bound exceeds 256 is
refused. Prompts under that bound that still do not fit are refused by `chunk_prompts`.
`phrase_to_label` maps a decoded phrase back to a label id.

This module imports neither torch nor a tokenizer; token counting is passed in.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

__all__ = [
    "LABEL_TYPES",
    "OBJECT_TYPES",
    "MAX_DETECTIONS",
    "MAX_PROMPT_TOKENS",
    "Defaults",
    "Label",
    "Models",
    "Ontology",
    "OntologyError",
    "OntologyFieldError",
    "PromptChunk",
    "UnknownLabelError",
    "build_chunk",
    "chunk_prompts",
    "load_ontology",
    "normalize_phrase",
    "ontology_from_prompt",
    "parse_ontology",
    "phrase_to_label",
    "prompt_phrases",
    "prompt_tokens_at_least",
]

LABEL_TYPES = ("rectangle", "polygon", "mask", "tag")
"""CVAT label types an ontology label may have: the shapes a detector (and segmenter) gives,
and ``tag``, an image-level label a classifier gives (`Ontology.part`)."""
OBJECT_TYPES = ("rectangle", "polygon", "mask")
"""The label types of objects (shapes); the others are image-level."""
"""Shapes a label can be annotated with in CVAT; ``mask`` and ``polygon`` need SAM."""

NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
"""Allowed ontology names and function kinds (they end up in Nuclio function names)."""

_WORD = re.compile(r"\w+")
_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")

MAX_PROMPT_TOKENS = 256
"""Tokens Grounding DINO reads in one caption, special tokens included."""
MAX_DETECTIONS = 10_000
"""The largest ``defaults.max_detections`` accepted."""


class OntologyError(ValueError):
    """An ontology (YAML file, prompt string or Python object) is invalid, or a label
    name, label id or phrase asked of it does not fit it."""


class UnknownLabelError(OntologyError, KeyError):
    """A label name is not in the ontology. Also a `KeyError`, for mapping-like use."""

    __str__ = ValueError.__str__  # not KeyError's repr-quoting


class OntologyFieldError(OntologyError):
    """A field holds an invalid value. ``path`` locates it within the object that raised
    (``("prompts", 1)``, ``("labels", 2, "name")``) and ``problem`` says what is wrong; the
    message is ``<context><path>: <problem>``."""

    def __init__(self, path: Sequence[str | int], problem: str, *, context: str = "") -> None:
        self.path = tuple(path)
        self.problem = problem
        super().__init__(f"{context}{_path_text(self.path)}: {problem}")


def _path_text(path: Sequence[str | int]) -> str:
    """``("labels", 1, "prompts", 0)`` → ``labels[1].prompts[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Invalid(Exception):
    """Internal: a value failed a check; ``path`` locates it inside the value (a list
    item), the raiser adds the field."""

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


class _Null:
    """A null written in a YAML file: unlike a key left out, no field accepts it."""

    def __repr__(self) -> str:
        return "null"


_NULL = _Null()


def _checked(obj: object, checks: Sequence[tuple[str, Callable[[Any], Any]]], context: str) -> None:
    """Run each field's check on a frozen dataclass and store the normalized value;
    the first failure is an `OntologyFieldError` naming the field."""
    for name, check in checks:
        try:
            object.__setattr__(obj, name, check(getattr(obj, name)))
        except _Invalid as err:
            raise OntologyFieldError((name, *err.path), str(err), context=context) from None


# --------------------------------------------------------------------------- values


def normalize_phrase(text: str) -> str:
    """The canonical form of a prompt phrase: lowercase, runs of whitespace collapsed to one
    space, stripped, and trailing ``"."`` dropped (``"  Hard   Hat. "`` → ``"hard hat"``).

    Used for prompts, for comparing prompts across labels and for matching decoded
    Grounding DINO phrases.
    """
    phrase = " ".join(text.lower().split())
    while phrase.endswith("."):
        phrase = phrase[:-1].rstrip()
    return phrase


def _describe(value: Any) -> str:
    """A short rendering of an offending value for error messages."""
    if value is None or value is _NULL:
        return "null"
    if isinstance(value, (bool, ScalarBoolean, np.bool_)):
        return f"{str(bool(value)).lower()} (a boolean)"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, str):
        text = str(value)
        return repr(text) if len(text) <= 60 else f"{text[:40]!r}… ({len(text)} characters)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, ScalarBoolean, np.bool_))


def _unit(value: Any) -> float:
    """A number in 0..1 (booleans are not numbers)."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise _Invalid(f"must be a number in 0..1, got {_describe(value)}")
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise _Invalid(f"must be a number in 0..1, got {_describe(value)}")
    return number


def _max_detections(value: Any) -> int:
    if _is_bool(value) or not isinstance(value, numbers.Integral) or not 1 <= value <= MAX_DETECTIONS:
        raise _Invalid(f"must be an integer in 1..{MAX_DETECTIONS}, got {_describe(value)}")
    return int(value)


def prompt_tokens_at_least(phrase: str) -> int:
    """A lower bound on the tokens of ``phrase`` as a caption on its own (``"<phrase> ."`` with
    ``[CLS]`` and ``[SEP]``), without a tokenizer: every space-separated word holding a letter or
    digit is at least one token, every ASCII punctuation mark is one."""
    words = sum(1 for word in phrase.split() if any(c.isalnum() for c in word))
    marks = sum(1 for c in phrase if c in _ASCII_PUNCTUATION)
    return words + marks + 3


def _optional_unit(value: Any) -> float | None:
    return None if value is None else _unit(value)


def _boolean(value: Any) -> bool:
    if not _is_bool(value):
        raise _Invalid(f"must be true or false, got {_describe(value)}")
    return bool(value)


def _label_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string, got {_describe(value)}")
    if value != value.strip():
        raise _Invalid(f"must not start or end with whitespace, got {_describe(value)}")
    return str(value)


def _prompt(value: Any) -> str:
    """A normalized prompt phrase."""
    if not isinstance(value, str):
        raise _Invalid(f"must be a non-empty string, got {_describe(value)}")
    phrase = normalize_phrase(value)
    if not phrase:
        raise _Invalid(f"must be a non-empty phrase, got {_describe(value)}")
    if "." in phrase:
        raise _Invalid(
            f"must not contain '.' (Grounding DINO's phrase separator), got {_describe(value)}"
        )
    needed = prompt_tokens_at_least(phrase)
    if needed > MAX_PROMPT_TOKENS:
        raise _Invalid(
            f"is at least {needed} tokens as a caption, more than the {MAX_PROMPT_TOKENS} Grounding DINO "
            f"reads; shorten it, got {_describe(value)}"
        )
    return phrase


def _label_type(value: Any) -> str:
    if not isinstance(value, str) or value not in LABEL_TYPES:
        raise _Invalid(f"must be one of {', '.join(LABEL_TYPES)}, got {_describe(value)}")
    return str(value)


def _kebab_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise _Invalid(
            "must be lowercase letters, digits and inner hyphens "
            f"(^[a-z0-9]([a-z0-9-]*[a-z0-9])?$), got {_describe(value)}"
        )
    return str(value)


def _prompt_list(value: Any) -> tuple[str, ...]:
    """Normalized prompts, none repeated."""
    if isinstance(value, (str, Mapping)) or not isinstance(value, Iterable):
        raise _Invalid(f"must be a non-empty list of strings, got {_describe(value)}")
    prompts = tuple(value)
    if not prompts:
        raise _Invalid("must be a non-empty list of strings, got an empty list")
    normalized: list[str] = []
    for index, item in enumerate(prompts):
        try:
            phrase = _prompt(item)
        except _Invalid as err:
            raise _Invalid(str(err), (index,)) from None
        if phrase in normalized:
            raise _Invalid(f"{phrase!r} repeats prompts[{normalized.index(phrase)}]", (index,))
        normalized.append(phrase)
    return tuple(normalized)


def _model_spec(kind: str) -> Callable[[Any], str | None]:
    """A check of an optional model spec string of ``kind`` (its syntax and backend; the
    weights are looked for only when the model is loaded)."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Invalid(f"must be a model spec string such as 'grounding-dino' or 'sam:vit_b', got {_describe(value)}")
        from serverless.models.registry import ModelSpecError, parse_spec

        try:
            parse_spec(value, kind, environ={})  # type: ignore[arg-type]
        except ModelSpecError as err:
            raise _Invalid(str(err)) from None
        return str(value).strip()

    return check


def _check_conflicts(labels: Sequence[Label]) -> None:
    """`OntologyFieldError` for the first cross-label problem: a duplicate name (compared
    case-insensitively) or a prompt shared by two labels."""
    names: dict[str, int] = {}
    owners: dict[str, int] = {}
    for i, label in enumerate(labels):
        key = label.name.casefold()
        if key in names:
            j = names[key]
            raise OntologyFieldError(
                ("labels", i, "name"),
                f"duplicate label name {label.name!r}: labels[{j}] is already "
                f"{labels[j].name!r} (names are compared case-insensitively)",
            )
        names[key] = i
        for k, phrase in enumerate(label.prompts):
            j = owners.setdefault(phrase, i)
            if j != i:
                raise OntologyFieldError(
                    ("labels", i, "prompts", k),
                    f"prompt {phrase!r} already belongs to label {labels[j].name!r} "
                    f"(labels[{j}]); a prompt must map to exactly one label",
                )


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class Defaults:
    """Detection settings applied to every label unless the label overrides them."""

    threshold: float = 0.3
    """Minimum box score (Grounding DINO ``box_threshold``) of a detection, 0..1."""
    text_threshold: float = 0.25
    """Minimum token score for a token to count in a decoded phrase, 0..1."""
    nms_iou: float = 0.5
    """IoU above which non-maximum suppression drops the lower-scored box, 0..1."""
    class_agnostic_nms: bool = False
    """Suppress overlapping boxes across labels (true) or within each label only (false)."""
    max_detections: int = 100
    """At most this many detections per frame (the highest-scored, after NMS), 1..10000: bounds
    the work after detection (SAM, polygons) and the size of a function's reply."""

    def __post_init__(self) -> None:
        checks = [
            ("threshold", _unit),
            ("text_threshold", _unit),
            ("nms_iou", _unit),
            ("class_agnostic_nms", _boolean),
            ("max_detections", _max_detections),
        ]
        _checked(self, checks, "defaults.")


@dataclass(frozen=True)
class Label:
    """One CVAT label and the phrases that prompt the detector for it."""

    name: str
    """The CVAT label name, unique in its ontology (case-insensitively)."""
    prompts: tuple[str, ...]
    """Phrases sent to Grounding DINO for this label, normalized (`normalize_phrase`),
    non-empty, without ``"."``; a list is accepted and stored as a tuple."""
    threshold: float | None = None
    """Box score threshold for this label, 0..1; None means ``Defaults.threshold``."""
    type: str = "rectangle"
    """The CVAT shape: one of `LABEL_TYPES`."""

    def __post_init__(self) -> None:
        checks = [("name", _label_name), ("prompts", _prompt_list), ("threshold", _optional_unit), ("type", _label_type)]
        _checked(self, checks, f"label {_describe(self.name)}: " if isinstance(self.name, str) else "label: ")


@dataclass(frozen=True)
class Models:
    """Which models serve the ontology, as spec strings (`serverless.models.registry`);
    None leaves the choice to the command line, the environment or the defaults."""

    detector: str | None = None
    """e.g. ``grounding-dino:IDEA-Research/grounding-dino-tiny`` or ``grounding-dino``."""
    segmenter: str | None = None
    """e.g. ``sam:vit_b``, ``sam:vit_b:/weights/sam_vit_b.pth``."""
    classifier: str | None = None
    """e.g. ``clip:openai/clip-vit-base-patch32`` (for the ontology's ``tag`` labels)."""

    def __post_init__(self) -> None:
        checks = [(kind, _model_spec(kind)) for kind in ("detector", "segmenter", "classifier")]
        _checked(self, checks, "models.")

    def to_dict(self) -> dict[str, str]:
        """The specs that are set."""
        named = (("detector", self.detector), ("segmenter", self.segmenter), ("classifier", self.classifier))
        return {name: value for name, value in named if value}


@dataclass(frozen=True)
class Ontology:
    """What to detect: labels (their index is the label id), shared defaults and an
    optional name. Frozen; equality and `content_hash` ignore `source`."""

    labels: tuple[Label, ...]
    """The labels in order; at least one. A list is accepted and stored as a tuple."""
    defaults: Defaults = Defaults()
    """Settings for labels that do not override them."""
    name: str | None = None
    """Prefix of rendered function names; matches `NAME_PATTERN` when given."""
    score_attribute: bool = False
    """When true, CVAT spec labels carry a ``score`` number attribute."""
    models: Models = Models()
    """The models named for this ontology (none by default)."""
    source: str | None = field(default=None, compare=False, repr=False)
    """The YAML text this was parsed from, or None when built otherwise."""

    def __post_init__(self) -> None:
        labels = self.labels
        if isinstance(labels, (str, Mapping)) or not isinstance(labels, Iterable):
            raise OntologyFieldError(("labels",), f"must be a non-empty list of labels, got {_describe(labels)}")
        labels = tuple(labels)
        if not labels:
            raise OntologyFieldError(("labels",), "must be a non-empty list of labels, got an empty list")
        for i, label in enumerate(labels):
            if not isinstance(label, Label):
                raise OntologyFieldError(("labels", i), f"must be a Label, got {_describe(label)}")
        object.__setattr__(self, "labels", labels)
        for name, cls in (("defaults", Defaults), ("models", Models)):
            if not isinstance(getattr(self, name), cls):
                raise OntologyFieldError((name,), f"must be a {cls.__name__}, got {_describe(getattr(self, name))}")
        named = [("name", lambda value: value if value is None else _kebab_name(value))]
        _checked(self, [*named, ("score_attribute", _boolean)], "")
        _check_conflicts(labels)

    @property
    def label_names(self) -> tuple[str, ...]:
        """Label names in label-id order."""
        return tuple(label.name for label in self.labels)

    def index(self, name: str) -> int:
        """The label id of the label called exactly ``name``.

        Raises `UnknownLabelError` (an `OntologyError` and a `KeyError`) naming the label.
        """
        for i, label in enumerate(self.labels):
            if label.name == name:
                return i
        hint = ""
        if isinstance(name, str):
            for label in self.labels:
                if label.name.casefold() == name.casefold():
                    hint = f"; did you mean {label.name!r}?"
        raise UnknownLabelError(
            f"unknown label {name!r}; the ontology has "
            f"{', '.join(map(repr, self.label_names))}{hint}"
        )

    def threshold_for(self, label_id: int) -> float:
        """The box score threshold of a label: its own, else ``defaults.threshold``."""
        if _is_bool(label_id) or not isinstance(label_id, numbers.Integral):
            raise OntologyError(f"label id must be an integer, got {_describe(label_id)}")
        if not 0 <= label_id < len(self.labels):
            raise OntologyError(f"label id must be in 0..{len(self.labels) - 1}, got {label_id}")
        own = self.labels[int(label_id)].threshold
        return self.defaults.threshold if own is None else own

    @property
    def thresholds(self) -> np.ndarray:
        """float32 (L,) box score thresholds indexed by label id (a fresh array)."""
        return np.array([self.threshold_for(i) for i in range(len(self.labels))], dtype=np.float32)

    def thresholds_or(self, threshold: float | None) -> np.ndarray:
        """float32 (L,) thresholds a model applies: each label's own (`thresholds`) when
        ``threshold`` is None, else ``threshold`` for every label (the one override a door or
        a request gives; checked by the caller with `serverless.models.base.check_threshold`)."""
        if threshold is None:
            return self.thresholds
        return np.full(len(self.labels), threshold, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """A canonical plain-data form (dicts, lists, str, float, bool): every default
        spelled out, prompts normalized, ``threshold`` omitted when the label has none,
        ``models`` only when some model is named.
        Dumped as YAML it parses back to an equal ontology."""
        result: dict[str, Any] = {}
        if self.name is not None:
            result["name"] = self.name
        result["defaults"] = {
            "threshold": self.defaults.threshold,
            "text_threshold": self.defaults.text_threshold,
            "nms_iou": self.defaults.nms_iou,
            "class_agnostic_nms": self.defaults.class_agnostic_nms,
            "max_detections": self.defaults.max_detections,
        }
        result["score_attribute"] = self.score_attribute
        if self.models.to_dict():
            result["models"] = self.models.to_dict()
        labels = []
        for label in self.labels:
            item: dict[str, Any] = {"name": label.name, "prompts": list(label.prompts)}
            if label.threshold is not None:
                item["threshold"] = label.threshold
            item["type"] = label.type
            labels.append(item)
        result["labels"] = labels
        return result

    @property
    def content_hash(self) -> str:
        """sha256 hex digest of the canonical JSON of `to_dict`: comments, key order,
        formatting and prompt spelling (case, spacing) do not change it; any value does."""
        canonical = json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def with_thresholds(self, mapping: Mapping[str, float | None]) -> Ontology:
        """A new ontology whose named labels get the given thresholds (None resets a label
        to ``defaults.threshold``). Unknown names and values outside 0..1 raise
        `OntologyError`. The result has no `source`."""
        new = list(self.labels)
        for name, value in mapping.items():
            i = self.index(name)
            try:
                threshold = _optional_unit(value)
            except _Invalid as err:
                raise OntologyError(f"threshold for label {name!r}: {err}") from None
            new[i] = replace(new[i], threshold=threshold)
        return replace(self, labels=tuple(new), source=None)

    @property
    def has_objects(self) -> bool:
        """True when some label is an object (rectangle, polygon or mask: a detector's)."""
        return any(label.type in OBJECT_TYPES for label in self.labels)

    @property
    def has_tags(self) -> bool:
        """True when some label is a ``tag`` (image-level: a classifier's)."""
        return any(label.type == "tag" for label in self.labels)

    def part(self, kind: str) -> Ontology:
        """The labels a model kind answers, as an ontology of their own (same defaults, name,
        models, score attribute): ``"objects"`` (rectangle, polygon, mask: what detectors and
        segmenters give) or ``"tags"`` (image-level: what classifiers give). An ontology
        that is all of one part is returned as it is (same `content_hash`); `OntologyError`
        when the part is empty, naming what to add."""
        if kind not in ("objects", "tags"):
            raise ValueError(f"kind must be 'objects' or 'tags', got {kind!r}")
        wanted = [label for label in self.labels if (label.type == "tag") == (kind == "tags")]
        if len(wanted) == len(self.labels):
            return self
        if not wanted:
            if kind == "tags":
                raise OntologyError(
                    "the ontology has no tag labels for a classifier: give image-level labels `type: tag`"
                )
            raise OntologyError(
                "the ontology has only tag labels (image-level, for a classifier); a detector needs "
                "labels of type rectangle, polygon or mask"
            )
        return replace(self, labels=tuple(wanted), source=None)

    def function_name(self, kind: str) -> str:
        """The Nuclio function name for a model kind: ``"<name>-<kind>"``, or ``kind``
        when the ontology has no name (``"grounding-dino"`` → ``"site-safety-grounding-dino"``)."""
        try:
            _kebab_name(kind)
        except _Invalid as err:
            raise OntologyError(f"function kind: {err}") from None
        return kind if self.name is None else f"{self.name}-{kind}"


# --------------------------------------------------------------------------- YAML parsing


def _line(node: Any, default: int = 1) -> int:
    """1-based line where a ruamel node starts."""
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return default
    return lc.line + 1


def _key_line(mapping: Any, key: Any) -> int:
    try:
        return mapping.lc.key(key)[0] + 1
    except (AttributeError, KeyError, TypeError):  # e.g. a key merged in with <<
        return _line(mapping)


def _value_line(mapping: Any, key: Any) -> int:
    if mapping.get(key) is None:  # ruamel places an empty value after its key's line
        return _key_line(mapping, key)
    try:
        return mapping.lc.value(key)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return _key_line(mapping, key)


def _item_line(seq: Any, index: int, default: int) -> int:
    try:
        return seq.lc.item(index)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return default


def _line_of(doc: Any, path: Sequence[str | int]) -> int:
    """The 1-based line of the value at ``path`` in a ruamel document, or of the deepest
    node on the way that exists (a missing key: its mapping)."""
    node, line = doc, _line(doc)
    for part in path:
        if isinstance(node, Mapping) and part in node:
            line, node = _value_line(node, part), node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            line, node = _item_line(node, part, line), node[part]
        else:
            break
    return line


def _keys(cls: type) -> tuple[str, ...]:
    """The YAML keys of a dataclass: its fields (but ``source``)."""
    return tuple(f.name for f in fields(cls) if f.name != "source")


def _plain(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """Constructor arguments from a YAML mapping; a null value becomes `_NULL`."""
    return {str(key): _NULL if value is None else value for key, value in mapping.items()}


class _Reader:
    """Maps one YAML document onto the dataclasses, which check every value; an
    `OntologyFieldError` from them is re-raised naming the file and the field's line."""

    def __init__(self, source: str, doc: Any) -> None:
        self.source = source
        self.doc = doc
        self.implicit: set[int] = set()  # labels whose prompt is their name

    def fail(self, path: Sequence[str | int], problem: str, where: str | None = None) -> OntologyFieldError:
        line = _line_of(self.doc, path)
        return OntologyFieldError(path, problem, context=f"{self.source}:{line}: " if where is None else where)

    def located(self, prefix: tuple[str | int, ...], err: OntologyFieldError) -> OntologyFieldError:
        path = prefix + err.path
        if len(path) >= 4 and path[0] == "labels" and path[2] == "prompts" and path[1] in self.implicit:
            line = _line_of(self.doc, path[:2] + ("name",))
            where = f"{self.source}:{line}: {_path_text(path[:2])}.name (its prompt)"
            return OntologyFieldError((), err.problem, context=where)
        return self.fail(path, err.problem)

    def check_keys(self, mapping: Mapping[Any, Any], allowed: tuple[str, ...], prefix: tuple[str | int, ...]) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                line = _key_line(mapping, key)
                problem = f"unknown key; expected one of {', '.join(allowed)}{hint}"
                raise OntologyFieldError((*prefix, str(key)), problem, context=f"{self.source}:{line}: ")

    def section(self, key: str, cls: type[Defaults | Models]) -> Defaults | Models:
        mapping = self.doc[key]
        if not isinstance(mapping, Mapping):
            raise self.fail((key,), f"must be a mapping of {', '.join(_keys(cls))}, got {_describe(mapping)}")
        self.check_keys(mapping, _keys(cls), (key,))
        try:
            return cls(**_plain(mapping))
        except OntologyFieldError as err:
            raise self.located((key,), err) from None

    def label(self, seq: list[Any], i: int) -> Label:
        item, path = seq[i], ("labels", i)
        if not isinstance(item, Mapping):
            hint = f" (write '- name: {item}')" if isinstance(item, str) else ""
            raise self.fail(path, f"must be a mapping with a 'name'{hint}, got {_describe(item)}")
        self.check_keys(item, _keys(Label), path)
        if "name" not in item:
            raise self.fail((*path, "name"), "missing; every label needs a name")
        args = _plain(item)
        if "prompts" not in args:
            self.implicit.add(i)
            args["prompts"] = (args["name"],)
        try:
            return Label(**args)
        except OntologyFieldError as err:
            if i in self.implicit and err.path[:1] == ("prompts",):
                raise self.fail((*path, "name"), f"used as the prompt: {err.problem}; give explicit prompts") from None
            raise self.located(path, err) from None

    def ontology(self, text: str) -> Ontology:
        doc = self.doc
        if not isinstance(doc, Mapping):
            got = "an empty document" if doc is None else _describe(doc)
            raise self.fail((), f"must be a mapping with a 'labels' list, got {got}", f"{self.source}:{_line(doc)}: document")
        self.check_keys(doc, _keys(Ontology), ())
        if "labels" not in doc:
            raise self.fail(("labels",), "missing; expected a non-empty list of labels")
        args = _plain(doc)
        for key, cls in (("defaults", Defaults), ("models", Models)):
            if key in doc:
                args[key] = self.section(key, cls)
        if isinstance(doc["labels"], list):
            args["labels"] = [self.label(doc["labels"], i) for i in range(len(doc["labels"]))]
        try:
            return Ontology(**args, source=text)
        except OntologyFieldError as err:
            raise self.located((), err) from None


def parse_ontology(text: str, source: str = "<string>") -> Ontology:
    """Parse and check an ontology from YAML text.

    ``source`` names the text in error messages (a file name). Raises `OntologyError`
    with ``source:line: field.path: expected..., got ...`` for YAML syntax errors, unknown
    keys, wrong types, values out of range, duplicate label names and shared prompts.
    The returned ontology keeps ``text`` as `Ontology.source`.
    """
    if not isinstance(text, str):
        raise OntologyError(f"{source}: ontology text must be a str, got {_describe(text)}")
    try:
        doc = YAML(typ="rt").load(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = ", ".join(part for part in (err.context, err.problem) if part) or str(err)
        raise OntologyError(f"{source}:{line}: YAML syntax error: {what}") from err
    except YAMLError as err:  # e.g. a control character (ReaderError)
        position = getattr(err, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
        raise OntologyError(f"{source}:{line}: YAML error: {err}") from err
    except RecursionError:
        raise OntologyError(f"{source}:1: YAML error: nested too deeply to be an ontology") from None
    return _Reader(source, doc).ontology(text)


def load_ontology(path: str | PathLike[str]) -> Ontology:
    """Read and parse an ontology YAML file (UTF-8); errors name the path as given."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OntologyError(f"{path}: ontology file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise OntologyError(f"{path}: cannot read ontology file: {err}") from err
    return parse_ontology(text, source=str(path))


def ontology_from_prompt(prompt: str) -> Ontology:
    """An ontology from a Grounding-DINO-style caption, as given on the command line:
    ``"person. ladder . Hard hat"`` → labels ``person``, ``ladder``, ``hard hat``, each
    prompted by its own (normalized) name, with default settings and no name."""
    if not isinstance(prompt, str):
        raise OntologyError(f"prompt must be a str, got {_describe(prompt)}")
    phrases = [p for p in (normalize_phrase(part) for part in prompt.split(".")) if p]
    if not phrases:
        raise OntologyError(
            "prompt is empty: expected phrases separated by '.', e.g. 'person. ladder', "
            f"got {prompt!r}"
        )
    seen: set[str] = set()
    for phrase in phrases:
        if phrase in seen:
            raise OntologyError(f"prompt repeats the phrase {phrase!r}, got {prompt!r}")
        seen.add(phrase)
    return Ontology(labels=tuple(Label(p, (p,)) for p in phrases))


# --------------------------------------------------------------------------- prompting


@dataclass(frozen=True)
class PromptChunk:
    """One Grounding DINO caption and where each of its phrases sits in it."""

    text: str
    """The caption: phrases joined by ``" . "`` and ending in ``" ."``
    (``"person . worker . ladder ."``)."""
    phrases: tuple[str, ...]
    """The normalized phrases, in caption order."""
    label_ids: tuple[int, ...]
    """The label id of each phrase."""
    char_spans: tuple[tuple[int, int], ...]
    """``[start, end)`` character offsets of each phrase in `text`."""


def prompt_phrases(ontology: Ontology) -> list[tuple[str, int]]:
    """Every prompt of the ontology as ``(normalized phrase, label id)``, in label order
    and, within a label, in prompt order (all aliases)."""
    return [(phrase, i) for i, label in enumerate(ontology.labels) for phrase in label.prompts]


def build_chunk(phrases: Sequence[tuple[str, int]]) -> PromptChunk:
    """The caption for ``(phrase, label id)`` pairs, in the given order. Phrases are
    normalized; an empty sequence, an empty phrase or one containing ``"."`` raises
    `OntologyError`."""
    if not phrases:
        raise OntologyError("a prompt chunk needs at least one phrase, got none")
    texts: list[str] = []
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    position = 0
    for phrase, label_id in phrases:
        try:
            normalized = _prompt(phrase)
        except _Invalid as err:
            raise OntologyError(f"phrase for label id {label_id}: {err}") from None
        spans.append((position, position + len(normalized)))
        position += len(normalized) + len(" . ")
        texts.append(normalized)
        ids.append(int(label_id))
    return PromptChunk(" . ".join(texts) + " .", tuple(texts), tuple(ids), tuple(spans))


def chunk_prompts(
    ontology: Ontology, count_tokens: Callable[[str], int], max_tokens: int = 256
) -> list[PromptChunk]:
    """Split the ontology's phrases (`prompt_phrases`) into captions that each fit the
    text encoder.

    ``count_tokens(caption)`` must return the length of the whole tokenized caption as the
    model sees it, special tokens included (Grounding DINO reads at most 256). Greedy:
    each chunk takes as many of the next phrases as fit, ``count_tokens(chunk.text) <=
    max_tokens``. Every phrase lands in exactly one chunk, in order, never split; aliases of
    one label may land in different chunks. A phrase that does not fit even alone raises
    `OntologyError` naming its label: nothing is ever truncated.
    """
    if _is_bool(max_tokens) or not isinstance(max_tokens, numbers.Integral) or max_tokens < 1:
        raise OntologyError(f"max_tokens must be a positive integer, got {_describe(max_tokens)}")
    chunks: list[PromptChunk] = []
    current: list[tuple[str, int]] = []
    fitted: PromptChunk | None = None
    for phrase, label_id in prompt_phrases(ontology):
        candidate = build_chunk([*current, (phrase, label_id)])
        if count_tokens(candidate.text) <= max_tokens:
            current.append((phrase, label_id))
            fitted = candidate
            continue
        if fitted is not None:
            chunks.append(fitted)
        alone = build_chunk([(phrase, label_id)])
        needed = count_tokens(alone.text)
        if needed > max_tokens:
            raise OntologyError(
                f"label {_describe(ontology.labels[label_id].name)} (labels[{label_id}]): prompt "
                f"{_describe(phrase)} needs {needed} tokens as a caption on its own, more than "
                f"max_tokens={max_tokens}; shorten the prompt"
            )
        current = [(phrase, label_id)]
        fitted = alone
    if fitted is not None:
        chunks.append(fitted)
    return chunks


def phrase_to_label(phrase: str, ontology: Ontology) -> int | None:
    """The label id a free-text phrase (e.g. a decoded Grounding DINO span: ``"worker"``,
    ``"Person."``, ``"hard hat person"``) refers to, or None.

    An exact match of the normalized phrase with a prompt wins. Otherwise the prompt that
    shares the most distinct words with the phrase wins; ties go to the prompt whose words
    are most covered (shared words / prompt words), then to the first in ontology order.
    Words are runs of letters and digits, so ``"hard - hat"`` matches ``"hard-hat"``.
    None when no word is shared.
    """
    normalized = normalize_phrase(phrase)
    if not normalized:
        return None
    aliases = prompt_phrases(ontology)
    for alias, label_id in aliases:
        if alias == normalized:
            return label_id
    words = set(_WORD.findall(normalized))
    best: tuple[int, float] = (0, 0.0)
    best_id: int | None = None
    for alias, label_id in aliases:
        alias_words = set(_WORD.findall(alias))
        shared = len(words & alias_words)
        if not shared:
            continue
        score = (shared, shared / len(alias_words))
        if score > best:
            best, best_id = score, label_id
    return best_id
