"""YOLO-World as a cvat-sdk detection function: fast open-vocabulary boxes.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.yolo_world -p ontology=str:site.yaml \\
        [-p weights=str:/weights/yolov8s-worldv2.pt] [-p score_attribute=bool:true]

`serverless.cvat_functions.detector` with the ``yolo-world`` backend (YOLO-World (ultralytics)); see it for
the labels declared and the shapes returned.
"""

from __future__ import annotations

from os import PathLike

from serverless.cvat_functions.detector import DetectorFunction, create_for_backend
from serverless.ontology import Ontology

__all__ = ["create"]


def create(
    ontology: str | PathLike[str] | Ontology | None = None,
    weights: str | None = None,
    device: str | None = None,
    score_attribute: bool | None = None,
) -> DetectorFunction:
    """The function for ``ontology`` (default ``AUTOLABEL_ONTOLOGY``) over ``yolo-world:<weights>``
    (default: the backend's default weights)."""
    return create_for_backend("yolo-world", ontology, weights, device, score_attribute)
