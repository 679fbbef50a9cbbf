"""Any registered classifier (CLIP, SigLIP) as a cvat-sdk detection function that returns tags.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.classifier -p ontology=str:site.yaml \\
        [-p classifier=str:clip:google/siglip-base-patch16-224] [-p score_attribute=bool:true]

The ontology's ``tag`` labels are declared as labels of type ``tag`` (task labels of type
``tag`` or ``any`` match them) and each frame is answered with its tags
(``LabeledImageRequest``, `serverless.convert.cvat_shapes.to_cvat_tags`): at most
``defaults.max_detections`` per frame, each at or above ``context.conf_threshold`` when given,
else its label's ontology threshold. Object labels are a detector's
(`serverless.cvat_functions.detector`) and are not declared here. `serverless.cvat_functions.clip`
is this function with the ``clip`` backend fixed.
"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

from serverless.cvat_functions.common import (
    FunctionConfigError,
    OntologyDetectionFunction,
    check_conf_threshold,
    context_options,
    resolve_ontology,
    resolve_score_attribute,
    rgb_array,
)
from serverless.models.base import Classifier
from serverless.ontology import Ontology

if TYPE_CHECKING:
    import PIL.Image
    from cvat_sdk.api_client.models import LabeledImageRequest
    from cvat_sdk.auto_annotation import DetectionFunctionContext

__all__ = ["ClassifierFunction", "create"]


class ClassifierFunction(OntologyDetectionFunction):
    """``spec`` from the ontology's tag labels; ``detect`` runs the loaded `Classifier`."""

    def __init__(self, ontology: Ontology, classifier: Classifier, *, score_attribute: bool = False) -> None:
        super().__init__(ontology.part("tags"), lambda label: "tag", score_attribute=score_attribute)
        self.classifier = classifier

    def detect(self, context: DetectionFunctionContext, image: PIL.Image.Image) -> list[LabeledImageRequest]:
        """The frame's tags (frame 0, spec label ids, the score attribute when declared)."""
        from serverless.convert.cvat_contract import SCORE_ATTRIBUTE_ID
        from serverless.convert.cvat_shapes import to_cvat_tags

        conf_threshold, _ = context_options(context)
        (tags,) = self.classifier.classify([rgb_array(image)], threshold=check_conf_threshold(conf_threshold))
        label_ids = {name: index for index, name in enumerate(self.ontology.label_names)}
        spec_ids = {name: SCORE_ATTRIBUTE_ID for name in self.ontology.label_names} if self.score_attribute else {}
        return to_cvat_tags(tags, label_ids, score_spec_ids=spec_ids)


def create(
    ontology: str | PathLike[str] | Ontology | None = None,
    classifier: str | None = None,
    device: str | None = None,
    score_attribute: bool | None = None,
) -> ClassifierFunction:
    """The function for ``ontology``'s tag labels (a YAML path; default ``AUTOLABEL_ONTOLOGY``).

    ``classifier`` is a model spec (``-p classifier=str:clip:DIR``); unset, it comes from
    ``AUTOLABEL_CLASSIFIER``, then the ontology's ``models.classifier``, else ``clip``
    (`ModelSettings.from_env`). Loaded once per process. ``score_attribute=True`` declares and
    fills the ``score`` attribute (the task's labels must have it)."""
    from serverless.pipeline import ModelSettings, load_classifier

    loaded = resolve_ontology(ontology)
    if not loaded.has_tags:
        raise FunctionConfigError("ontology: it has no tag labels (type: tag) for a classifier to answer")
    with_score = resolve_score_attribute(score_attribute, loaded)
    settings = ModelSettings.from_env(classifier=classifier, device=device, ontology=loaded)
    return ClassifierFunction(loaded, load_classifier(settings, loaded), score_attribute=with_score)
