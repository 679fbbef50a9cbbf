"""Grounded-SAM as a cvat-sdk detection function: boxes from Grounding DINO, shapes by label type.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.grounded_sam -p ontology=str:site.yaml \\
        [-p score_attribute=bool:true] [--conv-mask-to-poly]

Each label is declared with its ontology ``type`` and answered with that shape:

- ``mask``: the SAM mask of the box, encoded with ``cvat_sdk.masks.encode_mask``; with
  ``conv_mask_to_poly`` the largest polygon ring of the mask instead (never a mask).
- ``polygon``: the largest polygon ring of the SAM mask.
- ``rectangle``: the box (SAM is not run for it).

SAM decodes all boxes of a frame that need a mask in one batched call after one embedding.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

from serverless.cvat_functions.common import (
    OntologyDetectionFunction,
    context_options,
    labels_of_type,
    resolve_ontology,
    resolve_score_attribute,
)
from serverless.ontology import Ontology

__all__ = ["GroundedSamFunction", "create"]


class GroundedSamFunction(OntologyDetectionFunction):
    """``spec`` from the ontology (label types kept); ``detect`` runs a `GroundedSam`."""

    def __init__(self, ontology: Ontology, model: Any, *, score_attribute: bool = False) -> None:
        super().__init__(ontology, lambda label: label.type, score_attribute=score_attribute)
        self.model = model

    def detect(self, context: Any, image: Any) -> list[Any]:
        """Shapes for one frame: see the module docstring for the shape of each label type.

        Scores are at or above ``context.conf_threshold`` when given, else each label's
        ontology threshold; detections whose mask is empty are dropped."""
        conf_threshold, conv_mask_to_poly = context_options(context)
        array, det = self.detections(self.model.detector, image, conf_threshold)
        boxes = det[labels_of_type(det, self.ontology, ["rectangle"])]
        segmented = self.model.add_masks(array, det[labels_of_type(det, self.ontology, ["mask", "polygon"])])
        polygon_only = labels_of_type(segmented, self.ontology, ["polygon"])
        return [
            *self.shapes(boxes),
            *self.shapes(segmented[~polygon_only], as_polygons=conv_mask_to_poly),
            *self.shapes(segmented[polygon_only], as_polygons=True),
        ]


def create(
    ontology: str | PathLike[str] | Ontology | None = None,
    gdino_model: str | None = None,
    sam_checkpoint: str | None = None,
    sam_model_type: str | None = None,
    device: str | None = None,
    score_attribute: bool | None = None,
) -> GroundedSamFunction:
    """The function for ``ontology`` (a YAML path; default ``AUTOLABEL_ONTOLOGY``).

    Weights default to ``AUTOLABEL_GDINO_MODEL``, ``AUTOLABEL_SAM_CHECKPOINT``,
    ``AUTOLABEL_SAM_MODEL_TYPE`` and ``AUTOLABEL_DEVICE`` (see `ModelSettings.from_env`);
    both models are loaded once per process. ``score_attribute=True`` declares and fills the
    ``score`` attribute (the task's labels must have it; see `serverless.cvat_functions.common`).
    """
    from serverless.pipeline import ModelSettings, load_detector

    loaded = resolve_ontology(ontology)
    with_score = resolve_score_attribute(score_attribute, loaded)
    settings = ModelSettings.from_env(
        gdino_model=gdino_model,
        sam_checkpoint=sam_checkpoint,
        sam_model_type=sam_model_type,
        device=device,
    )
    return GroundedSamFunction(loaded, load_detector(settings, masks=True), score_attribute=with_score)
