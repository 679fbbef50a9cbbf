"""OWLv2 as a cvat-sdk detection function: open-vocabulary boxes.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.owlv2 -p ontology=str:site.yaml \\
        [-p weights=str:google/owlv2-base-patch16-ensemble] [-p score_attribute=bool:true]

`serverless.cvat_functions.detector` with the ``owlv2`` backend (OWLv2 (transformers)); see it for
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
    """The function for ``ontology`` (default ``AUTOLABEL_ONTOLOGY``) over ``owlv2:<weights>``
    (default: the backend's default weights)."""
    return create_for_backend("owlv2", ontology, weights, device, score_attribute)
