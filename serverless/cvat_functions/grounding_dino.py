"""A detector (Grounding DINO by default) as a cvat-sdk detection function: one rectangle per box.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.grounding_dino -p ontology=str:site.yaml \\
        [-p score_attribute=bool:true]

Every ontology label is declared as a ``rectangle`` label (task labels of type ``rectangle``
or ``any`` match it); use `serverless.cvat_functions.grounded_sam` for mask or polygon labels.
``-p detector=str:SPEC`` runs another registered detector (`serverless.models.registry`).
"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

from serverless.cvat_functions.common import (
    OntologyDetectionFunction,
    context_options,
    resolve_ontology,
    resolve_score_attribute,
)
from serverless.models.base import Detector
from serverless.ontology import Ontology

if TYPE_CHECKING:
    import PIL.Image
    from cvat_sdk.api_client.models import LabeledShapeRequest
    from cvat_sdk.auto_annotation import DetectionFunctionContext

__all__ = ["GroundingDinoFunction", "create"]


class GroundingDinoFunction(OntologyDetectionFunction):
    """``spec`` from the ontology; ``detect`` runs the loaded `Detector` on one frame."""

    def __init__(self, ontology: Ontology, detector: Detector, *, score_attribute: bool = False) -> None:
        super().__init__(ontology, lambda label: "rectangle", score_attribute=score_attribute)
        self.detector = detector

    def detect(self, context: DetectionFunctionContext, image: PIL.Image.Image) -> list[LabeledShapeRequest]:
        """Rectangles (``points = [x1, y1, x2, y2]`` in pixels) with scores at or above
        ``context.conf_threshold`` when given, else each label's ontology threshold."""
        conf_threshold, _ = context_options(context)
        _, det = self.detections(self.detector, image, conf_threshold)
        return self.shapes(det)


def create(
    ontology: str | PathLike[str] | Ontology | None = None,
    gdino_model: str | None = None,
    device: str | None = None,
    score_attribute: bool | None = None,
    detector: str | None = None,
) -> GroundingDinoFunction:
    """The function for ``ontology`` (a YAML path; default ``AUTOLABEL_ONTOLOGY``).

    ``detector`` is a model spec (``-p detector=str:grounding-dino:DIR``); ``gdino_model`` (hub
    id or ``save_pretrained`` directory) is shorthand for ``grounding-dino:<it>``. Unset, they
    come from the environment, then the ontology's ``models`` (`ModelSettings.from_env`);
    ``device`` defaults to ``AUTOLABEL_DEVICE``. The model is loaded once per process.
    ``score_attribute=True`` declares and fills the ``score`` attribute (the task's labels must
    have it; see `serverless.cvat_functions.common`).
    """
    from serverless.pipeline import ModelSettings, load_detector

    loaded = resolve_ontology(ontology)
    with_score = resolve_score_attribute(score_attribute, loaded)
    settings = ModelSettings.from_env(detector=detector, gdino_model=gdino_model, device=device, ontology=loaded)
    return GroundingDinoFunction(loaded, load_detector(settings, loaded, masks=False), score_attribute=with_score)
