"""Any registered detector as a cvat-sdk detection function.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.detector -p ontology=str:site.yaml \\
        -p detector=str:owlv2:google/owlv2-base-patch16-ensemble [-p score_attribute=bool:true] \\
        [--conv-mask-to-poly]

A box detector (Grounding DINO, MM-Grounding-DINO, OWLv2, YOLO-World, a trained YOLO) declares
every object label of the ontology as a ``rectangle`` label and answers it with boxes (use
`serverless.cvat_functions.grounded_sam` to add a segmenter's masks). A detector whose
detections carry masks (SAM 3, `DetectorBackend.masks`) declares each label with its ontology
``type`` and answers it with that shape: masks (polygons with ``--conv-mask-to-poly``),
polygons, or boxes. The ontology's ``tag`` labels are a classifier's
(`serverless.cvat_functions.classifier`) and are not declared here.

The per-backend modules (`serverless.cvat_functions.owlv2`, ``.yolo_world``, ``.yolo``,
``.mm_grounding_dino``, ``.sam3``, ``.grounding_dino``) are this function with the backend
fixed: ``-p weights=str:...`` then names only its weights.
"""

from __future__ import annotations

from collections.abc import Callable
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

__all__ = ["DetectorFunction", "create", "create_for_backend", "spec_for"]


class DetectorFunction(OntologyDetectionFunction):
    """``spec`` from the ontology's object labels; ``detect`` runs the loaded `Detector` on one
    frame. ``masks``: the detector's detections carry masks, so labels keep their types."""

    def __init__(
        self, ontology: Ontology, detector: Detector, *, masks: bool = False, score_attribute: bool = False
    ) -> None:
        objects = ontology.part("objects")
        super().__init__(objects, (lambda label: label.type) if masks else (lambda label: "rectangle"),
                         score_attribute=score_attribute)
        self.detector = detector
        self.masks = masks

    def detect(self, context: DetectionFunctionContext, image: PIL.Image.Image) -> list[LabeledShapeRequest]:
        """Shapes for one frame (see the module docstring), with scores at or above
        ``context.conf_threshold`` when given, else each label's ontology threshold."""
        conf_threshold, conv_mask_to_poly = context_options(context)
        _, det = self.detections(self.detector, image, conf_threshold)
        if not self.masks and det.masks is not None:
            det = det.with_columns(masks=None, polygons=None)
        return self.shapes(det, conv_mask_to_poly=conv_mask_to_poly)


def create(
    ontology: str | PathLike[str] | Ontology | None = None,
    detector: str | None = None,
    device: str | None = None,
    score_attribute: bool | None = None,
    gdino_model: str | None = None,
) -> DetectorFunction:
    """The function for ``ontology`` (a YAML path; default ``AUTOLABEL_ONTOLOGY``).

    ``detector`` is a model spec (``-p detector=str:yolo-world:/w/yolov8s-worldv2.pt``);
    ``gdino_model`` is shorthand for ``grounding-dino:<it>``. Unset, the detector comes from
    the environment (``AUTOLABEL_DETECTOR``), then the ontology's ``models``
    (`ModelSettings.from_env`); ``device`` defaults to ``AUTOLABEL_DEVICE``. The model is
    loaded once per process. ``score_attribute=True`` declares and fills the ``score``
    attribute (the task's labels must have it; see `serverless.cvat_functions.common`).
    """
    from serverless.models.registry import backend
    from serverless.pipeline import ModelSettings, load_detector

    loaded = resolve_ontology(ontology)
    with_score = resolve_score_attribute(score_attribute, loaded)
    settings = ModelSettings.from_env(detector=detector, gdino_model=gdino_model, device=device, ontology=loaded)
    masks = bool(getattr(backend(settings.detector.backend), "masks", False))
    return DetectorFunction(
        loaded, load_detector(settings, loaded, masks=False), masks=masks, score_attribute=with_score
    )


def create_for_backend(name: str) -> Callable[..., DetectorFunction]:
    """The ``create`` of a per-backend module: `create` with the detector backend fixed to
    ``name``; ``weights`` (``-p weights=str:...``) completes its spec, and without them the
    backend's default weights apply (its ``AUTOLABEL_*`` variable, else the public ones)."""

    def create_backend(
        ontology: str | PathLike[str] | Ontology | None = None,
        weights: str | None = None,
        device: str | None = None,
        score_attribute: bool | None = None,
    ) -> DetectorFunction:
        return create(ontology, detector=spec_for(name, weights), device=device, score_attribute=score_attribute)

    create_backend.__doc__ = (
        f"The function for ``ontology`` (default ``AUTOLABEL_ONTOLOGY``) over ``{name}:<weights>`` "
        "(default: the backend's default weights)."
    )
    return create_backend


def spec_for(name: str, weights: str | None) -> str:
    """``name:weights``, or the bare backend ``name`` without weights; `FunctionConfigError`
    for weights that are not a non-empty string."""
    from serverless.cvat_functions.common import FunctionConfigError

    if weights is not None and (not isinstance(weights, str) or not weights.strip()):
        raise FunctionConfigError(f"weights must be a non-empty string (-p weights=str:...), got {weights!r}")
    return f"{name}:{weights.strip()}" if weights else name
