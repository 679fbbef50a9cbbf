"""The CVAT contract, written once: the ``score`` attribute, the shape each label type is
delivered as, and what the installed cvat-sdk can carry.

Every door that hands detections to CVAT reads its rules from here: task creation
(`cvat_bridge.tasks.labels_spec`), push and ``cvat prelabel`` (through
`serverless.convert.cvat_shapes.delivered_shape_dicts`), the rendered Nuclio ``function.yaml``
spec, the Nuclio detector replies and the cvat-sdk detection function modules.

- **Score attribute.** A label may carry a ``number`` attribute named ``score`` holding the
  detection score as an integer percent: values ``0..100`` step ``1``, default ``0``,
  immutable. CVAT accepts only ``str.isnumeric()`` values for number attributes, so the value
  is always an integer percent string (`serverless.convert.nuclio.score_percent`).
- **Shape per label type** (`shape_type_for`): a label typed ``rectangle`` gets boxes; a
  ``polygon`` label gets the largest ring of the detection's mask; a ``mask`` label gets the
  mask itself, or its largest ring when the caller asked masks to become polygons
  (``conv_mask_to_poly``). A detection without a mask is always a box. Only ``polygon`` and
  ``mask`` labels need a segmenter (`needs_mask`).
- **SDK capability** (`sdk_shapes_have_score`): cvat-sdk >= 2.2x has a ``score`` field on
  ``LabeledShapeRequest`` (2.17 has none); shapes carry the score there only when it exists.
- **Tags** (`TAG_TYPE`): a label typed ``tag`` is an image-level label (a classifier's): CVAT
  holds it as a *tag* of a frame (``LabeledImageRequest``: ``frame``, ``label_id``,
  ``attributes``, and ``source`` outside cvat-sdk's auto-annotation driver), never as a
  shape. No cvat-sdk (2.17 to 2.80) has a ``score`` field on tags, so a tag's score travels
  only in its label's ``score`` attribute (`tag_score_field`). CVAT numbers tags apart from
  shapes: a tag id and a shape id of one task may be equal.
- **Review reason attribute** (`qa_reason_attribute_spec`, `qa_reason_value`): a review task
  (``autolabel cvat push --samples`` of a ``qa mistakes`` selection) declares on every label
  an immutable ``text`` attribute named ``qa_reason`` with default ``""`` (the spec CVAT 2.17
  and 2.54 store for a text attribute: ``values [""]``), and each suspect shape carries its
  reason there as ``{spec_id, value}``; other shapes carry none (CVAT shows the default).
  CVAT stores an attribute value in at most `QA_REASON_MAX_CHARS` characters
  (``AttributeVal.value``), so a longer reason is cut to fit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cvat_sdk.api_client.models import AttributeRequest

__all__ = [
    "QA_REASON_ATTRIBUTE",
    "QA_REASON_MAX_CHARS",
    "SCORE_ATTRIBUTE",
    "SCORE_ATTRIBUTE_ID",
    "SCORE_DEFAULT",
    "SCORE_VALUES",
    "SHAPE_TYPES",
    "TAG_TYPE",
    "needs_mask",
    "qa_reason_attribute_spec",
    "qa_reason_value",
    "score_attribute_request",
    "score_attribute_spec",
    "sdk_functions_send_attributes",
    "sdk_shapes_have_score",
    "shape_type_for",
    "shape_types_for",
    "tag_score_field",
]

SCORE_ATTRIBUTE = "score"
"""The name of the per-label number attribute that carries the detection score."""

SCORE_VALUES = ("0", "100", "1")
"""CVAT ``values`` of the score attribute: minimum, maximum and step (an integer percent)."""

SCORE_DEFAULT = "0"
"""The score attribute's default value (shapes drawn by hand)."""

SCORE_ATTRIBUTE_ID = 0
"""The spec id of the score attribute inside each label of a cvat-sdk detection function
(cvat-sdk's driver remaps it to the task's attribute id)."""

SHAPE_TYPES = ("rectangle", "polygon", "mask")
"""The label types detections are delivered as (the ontology's object label types)."""

TAG_TYPE = "tag"
"""The label type of image-level labels, delivered as CVAT tags (the task label's type too)."""

QA_REASON_ATTRIBUTE = "qa_reason"
"""The name of the per-label text attribute of a review task that shows a suspect's reason."""

QA_REASON_MAX_CHARS = 4096
"""The longest attribute value CVAT stores (``AttributeVal.value``, a 4096-character field)."""


def score_attribute_spec() -> dict[str, Any]:
    """The score attribute as CVAT's JSON label spec takes it (task creation, a Nuclio
    ``function.yaml`` ``spec``): a fresh dict on every call."""
    return {
        "name": SCORE_ATTRIBUTE,
        "input_type": "number",
        "mutable": False,
        "values": list(SCORE_VALUES),
        "default_value": SCORE_DEFAULT,
    }


def qa_reason_attribute_spec() -> dict[str, Any]:
    """The review reason attribute as CVAT's JSON label spec takes it (task creation): an
    immutable ``text`` attribute defaulting to ``""``; a fresh dict on every call."""
    return {"name": QA_REASON_ATTRIBUTE, "input_type": "text", "mutable": False, "values": [""], "default_value": ""}


def qa_reason_value(reason: str) -> str:
    """A suspect's reason as the value of its shape's ``qa_reason`` attribute: the text itself,
    cut to `QA_REASON_MAX_CHARS` (ending in ``…``) when longer. ValueError for a non-string."""
    if not isinstance(reason, str):
        raise ValueError(f"a review reason must be a string, got {type(reason).__name__}")
    if len(reason) <= QA_REASON_MAX_CHARS:
        return reason
    return reason[: QA_REASON_MAX_CHARS - 1] + "…"


def score_attribute_request(spec_id: int = SCORE_ATTRIBUTE_ID) -> AttributeRequest:
    """The score attribute as a cvat-sdk ``AttributeRequest`` for a ``DetectionFunctionSpec``:
    what ``cvat_sdk.auto_annotation.number_attribute_spec`` makes (immutable, no default),
    built from the model itself so that every cvat-sdk from 2.17 has it."""
    from cvat_sdk.api_client import models

    spec = score_attribute_spec()
    return models.AttributeRequest(
        name=spec["name"], id=spec_id, input_type=spec["input_type"], values=spec["values"], mutable=spec["mutable"]
    )


@functools.cache
def sdk_shapes_have_score() -> bool:
    """Whether the installed cvat-sdk's ``LabeledShapeRequest`` has a ``score`` field (2.2x
    and later do, 2.17 does not): shapes carry their score there only when it does."""
    from cvat_sdk.api_client import models

    return "score" in models.LabeledShapeRequest.attribute_map


@functools.cache
def tag_score_field() -> bool:
    """Whether the installed cvat-sdk's ``LabeledImageRequest`` (a tag) has a ``score`` field:
    none so far (2.17 to 2.80), so tags carry their score in the ``score`` attribute only."""
    from cvat_sdk.api_client import models

    return "score" in models.LabeledImageRequest.attribute_map


@functools.cache
def sdk_functions_send_attributes() -> bool:
    """Whether the installed cvat-sdk's auto-annotation driver accepts label attributes in a
    function's spec (``cvat_sdk.attributes`` exists; cvat-sdk 2.17's driver refuses them)."""
    try:
        import cvat_sdk.attributes  # noqa: F401
    except ImportError:
        return False
    return True


def _check_label_type(label_type: str) -> str:
    if label_type not in SHAPE_TYPES:
        raise ValueError(f"label types must be rectangle, polygon or mask, got {label_type!r}")
    return label_type


def needs_mask(label_type: str) -> bool:
    """Whether detections of a label of this type need a mask (a segmenter run) to be
    delivered as their label's shape: ``polygon`` and ``mask`` labels do."""
    return _check_label_type(label_type) != "rectangle"


def shape_type_for(label_type: str, *, has_mask: bool, conv_mask_to_poly: bool = False) -> str:
    """The CVAT shape type a detection of a label of ``label_type`` is delivered as.

    ``rectangle`` without a mask (or for a ``rectangle`` label); with a mask, the label's own
    type, except that ``conv_mask_to_poly`` turns ``mask`` into ``polygon``. Another label
    type raises ValueError naming it.
    """
    _check_label_type(label_type)
    if not has_mask or label_type == "rectangle":
        return "rectangle"
    if label_type == "mask" and conv_mask_to_poly:
        return "polygon"
    return label_type


def shape_types_for(
    label_types: Iterable[str], *, has_mask: bool, conv_mask_to_poly: bool = False
) -> list[str]:
    """`shape_type_for` of each label type, in order; the ValueError names every bad type."""
    types = list(label_types)
    bad = sorted({str(kind) for kind in types} - set(SHAPE_TYPES))
    if bad:
        raise ValueError(f"label types must be rectangle, polygon or mask, got {bad}")
    return [shape_type_for(kind, has_mask=has_mask, conv_mask_to_poly=conv_mask_to_poly) for kind in types]
