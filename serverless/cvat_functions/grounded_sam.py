"""Grounded-SAM as a cvat-sdk detection function: a detector's boxes, a segmenter's masks, shapes by label type.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.grounded_sam -p ontology=str:site.yaml \\
        [-p score_attribute=bool:true] [--conv-mask-to-poly]

Each label is declared with its ontology ``type`` and answered with that shape:

- ``mask``: the SAM mask of the box, encoded with ``cvat_sdk.masks.encode_mask``; with
  ``conv_mask_to_poly`` the largest polygon ring of the mask instead (never a mask).
- ``polygon``: the largest polygon ring of the SAM mask.
- ``rectangle``: the box (SAM is not run for it).

The segmenter decodes all boxes of a frame that need a mask in one batched call after one
embedding. A detector whose detections carry masks (SAM 3) needs no segmenter: its own masks
are used and none is loaded. The models are Grounding DINO and SAM unless ``-p detector=str:SPEC`` /
``-p segmenter=str:SPEC``, the environment or the ontology's ``models`` name others.
"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

import numpy as np

from serverless.convert.cvat_contract import needs_mask
from serverless.cvat_functions.common import (
    OntologyDetectionFunction,
    context_options,
    resolve_ontology,
    resolve_score_attribute,
)
from serverless.models.base import Detector, Segmenter
from serverless.models.grounded_sam import add_masks
from serverless.ontology import Ontology

if TYPE_CHECKING:
    import PIL.Image
    from cvat_sdk.api_client.models import LabeledShapeRequest
    from cvat_sdk.auto_annotation import DetectionFunctionContext

__all__ = ["GroundedSamFunction", "create"]


class GroundedSamFunction(OntologyDetectionFunction):
    """``spec`` from the ontology (label types kept); ``detect`` runs the `Detector`, then the
    `Segmenter` for the boxes of mask and polygon labels."""

    def __init__(
        self, ontology: Ontology, detector: Detector, segmenter: Segmenter | None, *, score_attribute: bool = False
    ) -> None:
        super().__init__(ontology.part("objects"), lambda label: label.type, score_attribute=score_attribute)
        self.detector = detector
        self.segmenter = segmenter

    def detect(self, context: DetectionFunctionContext, image: PIL.Image.Image) -> list[LabeledShapeRequest]:
        """Shapes for one frame: see the module docstring for the shape of each label type.

        Scores are at or above ``context.conf_threshold`` when given, else each label's
        ontology threshold; detections whose mask is empty are dropped."""
        conf_threshold, conv_mask_to_poly = context_options(context)
        array, det = self.detections(self.detector, image, conf_threshold)
        if self.segmenter is None:  # a detector with masks of its own (SAM 3)
            return self.shapes(det, conv_mask_to_poly=conv_mask_to_poly)
        segment = np.array([needs_mask(self.label_types[name]) for name in det.labels.tolist()], dtype=bool)
        return self.shapes(add_masks(self.segmenter, array, det, only=segment), conv_mask_to_poly=conv_mask_to_poly)


def create(
    ontology: str | PathLike[str] | Ontology | None = None,
    gdino_model: str | None = None,
    sam_checkpoint: str | None = None,
    sam_model_type: str | None = None,
    device: str | None = None,
    score_attribute: bool | None = None,
    detector: str | None = None,
    segmenter: str | None = None,
) -> GroundedSamFunction:
    """The function for ``ontology`` (a YAML path; default ``AUTOLABEL_ONTOLOGY``).

    ``detector`` / ``segmenter`` are model specs; ``gdino_model`` and ``sam_checkpoint`` /
    ``sam_model_type`` are shorthand for Grounding DINO and SAM specs. Unset, they come from
    ``AUTOLABEL_*`` (``AUTOLABEL_GDINO_MODEL``, ``AUTOLABEL_SAM_CHECKPOINT``, ...), then the
    ontology's ``models`` (see `ModelSettings.from_env`); both models are loaded once per
    process, their weights located before either loads. ``score_attribute=True`` declares and
    fills the ``score`` attribute (the task's labels must have it; see
    `serverless.cvat_functions.common`).
    """
    from serverless.pipeline import ModelSettings, load_models

    loaded = resolve_ontology(ontology)
    with_score = resolve_score_attribute(score_attribute, loaded)
    settings = ModelSettings.from_env(
        detector=detector,
        segmenter=segmenter,
        gdino_model=gdino_model,
        sam_checkpoint=sam_checkpoint,
        sam_model_type=sam_model_type,
        device=device,
        ontology=loaded,
    )
    detector, segmenter = load_models(settings, loaded, masks=True)
    return GroundedSamFunction(loaded, detector, segmenter, score_attribute=with_score)
