"""A detector (Grounding DINO by default) as a cvat-sdk detection function: one rectangle per box.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.grounding_dino -p ontology=str:site.yaml \\
        [-p score_attribute=bool:true]

Every object label of the ontology is declared as a ``rectangle`` label (task labels of type
``rectangle`` or ``any`` match it); use `serverless.cvat_functions.grounded_sam` for mask or
polygon labels. ``-p detector=str:SPEC`` runs another registered detector: this module is
`serverless.cvat_functions.detector` with Grounding DINO as the default.
"""

from __future__ import annotations

from os import PathLike

from serverless.cvat_functions.detector import DetectorFunction
from serverless.cvat_functions.detector import create as create_detector
from serverless.ontology import Ontology

__all__ = ["GroundingDinoFunction", "create"]

GroundingDinoFunction = DetectorFunction
"""The detection function class (its former name)."""


def create(
    ontology: str | PathLike[str] | Ontology | None = None,
    gdino_model: str | None = None,
    device: str | None = None,
    score_attribute: bool | None = None,
    detector: str | None = None,
) -> DetectorFunction:
    """The function for ``ontology`` (a YAML path; default ``AUTOLABEL_ONTOLOGY``).

    ``detector`` is a model spec (``-p detector=str:grounding-dino:DIR``); ``gdino_model`` (hub
    id or ``save_pretrained`` directory) is shorthand for ``grounding-dino:<it>``. Unset, they
    come from the environment, then the ontology's ``models`` (`ModelSettings.from_env`);
    ``device`` defaults to ``AUTOLABEL_DEVICE``. The model is loaded once per process.
    ``score_attribute=True`` declares and fills the ``score`` attribute (the task's labels must
    have it; see `serverless.cvat_functions.common`).
    """
    return create_detector(
        ontology, detector=detector, device=device, score_attribute=score_attribute, gdino_model=gdino_model
    )
