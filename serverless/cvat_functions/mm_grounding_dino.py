"""MM-Grounding-DINO as a cvat-sdk detection function: open-vocabulary boxes.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.mm_grounding_dino -p ontology=str:site.yaml \\
        [-p weights=str:openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det] [-p score_attribute=bool:true]

`serverless.cvat_functions.detector` with the ``mm-grounding-dino`` backend (MM-Grounding-DINO (transformers)); see it for
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
    """The function for ``ontology`` (default ``AUTOLABEL_ONTOLOGY``) over ``mm-grounding-dino:<weights>``
    (default: the backend's default weights)."""
    return create_for_backend("mm-grounding-dino", ontology, weights, device, score_attribute)
