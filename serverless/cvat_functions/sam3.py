"""SAM 3 as a cvat-sdk detection function: instance masks, polygons or boxes straight from the ontology's prompts.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.sam3 -p ontology=str:site.yaml \\
        [-p weights=str:facebook/sam3] [-p score_attribute=bool:true]

`serverless.cvat_functions.detector` with the ``sam3`` backend (SAM 3 (transformers)); see it for
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
    """The function for ``ontology`` (default ``AUTOLABEL_ONTOLOGY``) over ``sam3:<weights>``
    (default: the backend's default weights)."""
    return create_for_backend("sam3", ontology, weights, device, score_attribute)
