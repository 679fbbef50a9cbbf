"""CLIP / SigLIP zero-shot tags as a cvat-sdk detection function.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.clip -p ontology=str:site.yaml \\
        [-p weights=str:openai/clip-vit-base-patch32] [-p score_attribute=bool:true]

`serverless.cvat_functions.classifier` with the ``clip`` backend; see it for the labels
declared and the tags returned.
"""

from __future__ import annotations

from os import PathLike

from serverless.cvat_functions.classifier import ClassifierFunction
from serverless.cvat_functions.classifier import create as create_classifier
from serverless.cvat_functions.detector import spec_for
from serverless.ontology import Ontology

__all__ = ["create"]


def create(
    ontology: str | PathLike[str] | Ontology | None = None,
    weights: str | None = None,
    device: str | None = None,
    score_attribute: bool | None = None,
) -> ClassifierFunction:
    """The function for ``ontology`` (default ``AUTOLABEL_ONTOLOGY``) over ``clip:<weights>``
    (default: ``AUTOLABEL_CLIP_MODEL``, else ``openai/clip-vit-base-patch32``)."""
    return create_classifier(ontology, classifier=spec_for("clip", weights), device=device, score_attribute=score_attribute)
