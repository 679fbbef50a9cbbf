"""What the cvat-sdk detection functions share: the ontology, the spec and the shapes.

Contract (``cvat_sdk.auto_annotation.interface``, enforced by ``annotate_task``'s driver):

- ``spec.labels``: one ``label_spec(name, id)`` per ontology label, ``id`` = the label's index
  in the ontology; only with ``score_attribute=True`` (``-p score_attribute=bool:true``) each
  label carries the ``score`` number attribute of the CVAT contract
  (`serverless.convert.cvat_contract.score_attribute_request`, spec id `SCORE_ATTRIBUTE_ID`).
- Shapes follow the contract too: `serverless.convert.cvat_shapes.delivered_shape_dicts`
  gives each detection its label type's shape, as push does.
- ``detect`` returns ``LabeledShapeRequest`` objects with ``frame = 0``, ``label_id`` = spec id,
  no ``id`` and no ``source`` (the driver sets ``source: "auto"`` itself and refuses a preset
  one); attribute values are integer percent strings.
- ``context.conf_threshold``: when given, one threshold for every label (as CVAT's own
  torchvision functions apply it); when None, each label's ontology threshold.
- ``context.conv_mask_to_poly``: no ``mask`` shape may be returned; masks become polygons.

Why the score attribute is opt-in here while the ontology's ``score_attribute`` decides it for
the Nuclio functions: CVAT's lambda manager matches a function's attributes to the task's by
name and drops those the task lacks, but cvat-sdk's driver checks the spec against the task
before the first frame and stops (``BadFunctionError``) at an attribute the task lacks
(cvat-sdk 2.17 refuses label attributes altogether), and a function cannot see the task's
labels when it declares its spec. So by default these modules declare no attribute and run on
any task, as the lambda path does on a task without ``score``; pass
``-p score_attribute=bool:true`` for tasks whose labels have the attribute (or add cvat-cli's
``--allow-unmatched-labels``, which drops it where the task lacks it, as the lambda path does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from serverless.convert.cvat_contract import SCORE_ATTRIBUTE_ID, score_attribute_request, sdk_functions_send_attributes
from serverless.detections import Detections
from serverless.models.base import Detector, check_threshold
from serverless.ontology import Label, Ontology, load_ontology

if TYPE_CHECKING:
    import PIL.Image
    from cvat_sdk.api_client.models import LabeledShapeRequest
    from cvat_sdk.auto_annotation import DetectionFunctionContext, DetectionFunctionSpec

__all__ = [
    "ONTOLOGY_ENV",
    "FunctionConfigError",
    "OntologyDetectionFunction",
    "check_conf_threshold",
    "context_options",
    "detection_spec",
    "resolve_ontology",
    "resolve_score_attribute",
    "rgb_array",
    "shape_requests",
]

ONTOLOGY_ENV = "AUTOLABEL_ONTOLOGY"
"""Environment variable naming the ontology file when ``create`` gets no ``ontology``."""

log = logging.getLogger(__name__)


class FunctionConfigError(ValueError):
    """A function module's ``create`` parameters are missing or wrong; the message names the
    parameter and what was expected."""


def resolve_ontology(ontology: str | PathLike[str] | Ontology | None) -> Ontology:
    """The ontology given (a loaded `Ontology` or a YAML path), else the file named by
    ``AUTOLABEL_ONTOLOGY``. Raises `FunctionConfigError` when neither is set and
    `serverless.ontology.OntologyError` when the file is invalid."""
    if isinstance(ontology, Ontology):
        return ontology
    if ontology is None or (isinstance(ontology, str) and not ontology.strip()):
        ontology = os.environ.get(ONTOLOGY_ENV) or None
    if ontology is None:
        raise FunctionConfigError(
            f"no ontology: pass -p ontology=str:FILE to cvat-cli (create(ontology=FILE)) or set {ONTOLOGY_ENV}"
        )
    if not isinstance(ontology, (str, PathLike)):
        raise FunctionConfigError(f"ontology must be a file path or an Ontology, got {type(ontology).__name__}")
    return load_ontology(ontology)


def resolve_score_attribute(value: Any, ontology: Ontology) -> bool:
    """Whether the spec declares the ``score`` attribute: only when asked (``score_attribute``
    = True, cvat-cli ``-p score_attribute=bool:true``); see the module docstring for why the
    ontology's ``score_attribute`` does not decide it here. Asking needs cvat-sdk >= 2.2x."""
    if value is None:
        if ontology.score_attribute:
            log.warning(
                "the ontology asks for a score attribute: cvat-sdk functions declare it only with "
                "-p score_attribute=bool:true (the task's labels must then have it); no score is written"
            )
        return False
    if not isinstance(value, bool):
        raise FunctionConfigError(f"score_attribute must be true or false (-p score_attribute=bool:true), got {value!r}")
    if value and not sdk_functions_send_attributes():
        raise FunctionConfigError(
            "score_attribute: this cvat-sdk cannot send label attributes (cvat-sdk 2.17 refuses them); "
            "leave score_attribute out"
        )
    return value


def context_options(context: DetectionFunctionContext) -> tuple[Any, bool]:
    """``(conf_threshold, conv_mask_to_poly)`` of a detection context (cvat-sdk 2.17's context has
    neither: None and False)."""
    return getattr(context, "conf_threshold", None), bool(getattr(context, "conv_mask_to_poly", False))


def rgb_array(image: PIL.Image.Image) -> np.ndarray:
    """A PIL image (any mode) as an (H, W, 3) uint8 RGB array."""
    if not hasattr(image, "convert"):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    return np.array(image.convert("RGB"), dtype=np.uint8)


def detection_spec(
    ontology: Ontology, label_types: Mapping[str, str], *, score_attribute: bool = False
) -> DetectionFunctionSpec:
    """The ``DetectionFunctionSpec`` of an ontology; ``label_types`` gives each label's CVAT
    type by name; with ``score_attribute`` each label declares the ``score`` attribute."""
    import cvat_sdk.auto_annotation as cvataa

    labels = []
    for index, label in enumerate(ontology.labels):
        attributes = [score_attribute_request(SCORE_ATTRIBUTE_ID)] if score_attribute else []
        labels.append(cvataa.label_spec(label.name, index, type=label_types[label.name], attributes=attributes))
    return cvataa.DetectionFunctionSpec(labels=labels)


def shape_requests(
    det: Detections,
    ontology: Ontology,
    label_types: Mapping[str, str],
    *,
    conv_mask_to_poly: bool = False,
    score_attribute: bool = False,
) -> list[LabeledShapeRequest]:
    """``LabeledShapeRequest``s for a frame as the driver wants them (frame 0, spec label ids,
    no source; the score attribute only when the spec declares it), each of the shape the CVAT
    contract gives its label type (`serverless.convert.cvat_shapes.delivered_shape_dicts`;
    detections whose mask is empty are left out)."""
    from serverless.convert.cvat_shapes import delivered_shape_dicts
    from serverless.convert.cvat_shapes import shape_requests as requests

    label_ids = {name: index for index, name in enumerate(ontology.label_names)}
    spec_ids = {name: SCORE_ATTRIBUTE_ID for name in ontology.label_names} if score_attribute else {}
    shapes, _ = delivered_shape_dicts(
        det, label_types, label_ids, frame=0, score_spec_ids=spec_ids, conv_mask_to_poly=conv_mask_to_poly, source=None
    )
    return requests(shapes)


def check_conf_threshold(value: Any) -> float | None:
    """``context.conf_threshold`` as a float in 0..1, or None."""
    try:
        return check_threshold(value)
    except ValueError:
        raise FunctionConfigError(f"conf_threshold must be None or a number in 0..1, got {value!r}") from None


class OntologyDetectionFunction:
    """Base of the ontology-driven detection functions: holds the ontology and the spec.

    Subclasses implement ``detect(context, image)`` over a `Detector` built for the ontology.
    """

    def __init__(self, ontology: Ontology, label_type: Callable[[Label], str], *, score_attribute: bool = False) -> None:
        self.ontology = ontology
        self.score_attribute = score_attribute
        self.label_types = {label.name: label_type(label) for label in ontology.labels}
        self.spec = detection_spec(ontology, self.label_types, score_attribute=score_attribute)

    def detections(
        self, detector: Detector, image: PIL.Image.Image, conf_threshold: Any
    ) -> tuple[np.ndarray, Detections]:
        """The RGB frame and the detector's boxes at the context's threshold (None: the
        ontology's per-label thresholds)."""
        array = rgb_array(image)
        threshold = check_conf_threshold(conf_threshold)
        return array, detector.detect([array], threshold=threshold)[0]

    def shapes(self, det: Detections, *, conv_mask_to_poly: bool = False) -> list[LabeledShapeRequest]:
        """`shape_requests` with this function's label types and score attribute choice."""
        return shape_requests(
            det, self.ontology, self.label_types, conv_mask_to_poly=conv_mask_to_poly, score_attribute=self.score_attribute
        )
