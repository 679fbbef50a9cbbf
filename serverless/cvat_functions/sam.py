"""A segmenter (SAM by default) as a cvat-sdk interaction function: clicks (and an optional box) → one mask.

Interaction functions run through cvat-cli's agent, which needs CVAT Enterprise/Online
(``cvat-cli function create-native "SAM" --function-module serverless.cvat_functions.sam``,
then ``cvat-cli function run-agent ID --function-module serverless.cvat_functions.sam``). On a
community server use the Nuclio SAM function instead (``docs/deploy.md``).

- ``spec``: at least one positive point, negative points allowed (``min_neg_points=0``), a
  bounding box optional (``min_bounding_boxes=0``).
- ``preprocess_image``: the frame's embedding (`Segmenter.embed`), which the agent
  caches per frame, so later clicks on the frame only run the light mask decoder.
- ``detect``: one ``InteractionResultShape(type="mask")`` whose ``points`` are
  ``cvat_sdk.masks.encode_mask`` of SAM's mask over its tight box; an empty mask gives ``[]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from serverless.cvat_functions.common import rgb_array
from serverless.models.base import Embedding, Segmenter

if TYPE_CHECKING:
    import PIL.Image
    from cvat_sdk.auto_annotation import InteractionFunctionContext, InteractionPrompts, InteractionResultShape

__all__ = ["SamInteractionFunction", "create"]


class SamInteractionFunction:
    """``spec`` / ``preprocess_image`` / ``detect`` over a loaded `Segmenter`."""

    def __init__(self, segmenter: Segmenter) -> None:
        import cvat_sdk.auto_annotation as cvataa

        self.segmenter = segmenter
        self.spec = cvataa.InteractionFunctionSpec(min_pos_points=1, min_neg_points=0, min_bounding_boxes=0)

    def preprocess_image(self, context: InteractionFunctionContext, image: PIL.Image.Image) -> Embedding:
        """The frame's embedding (computed once per distinct frame)."""
        return self.segmenter.embed(rgb_array(image))

    def detect(
        self, context: InteractionFunctionContext, pp_image: Embedding, prompts: InteractionPrompts
    ) -> list[InteractionResultShape]:
        """The mask SAM predicts for ``prompts`` on the embedded frame ``pp_image``."""
        import cvat_sdk.auto_annotation as cvataa
        from cvat_sdk.masks import encode_mask

        from serverless.convert.polygons import mask_bbox

        positive = np.asarray(prompts.pos_points, dtype=np.float32).reshape(-1, 2)
        negative = np.asarray(prompts.neg_points, dtype=np.float32).reshape(-1, 2)
        box = None if prompts.bounding_box is None else np.asarray(prompts.bounding_box, dtype=np.float32).reshape(4)
        mask = self.segmenter.segment_points(pp_image, positive, negative, box)
        bbox = mask_bbox(mask)
        if bbox is None:
            return []
        return [cvataa.InteractionResultShape(type="mask", points=encode_mask(mask, bbox=list(bbox)))]


def create(
    sam_checkpoint: str | None = None,
    sam_model_type: str | None = None,
    device: str | None = None,
    segmenter: str | None = None,
) -> SamInteractionFunction:
    """The function over the segmenter ``segmenter`` (a model spec, e.g. ``sam:vit_b``), or
    SAM ``sam_model_type`` (default ``AUTOLABEL_SAM_MODEL_TYPE``, else ``vit_h``) loaded from
    ``sam_checkpoint`` (default ``AUTOLABEL_SAM_CHECKPOINT``, else the public checkpoint),
    once per process."""
    from serverless.models import registry
    from serverless.pipeline import ModelSettings

    settings = ModelSettings.from_env(
        segmenter=segmenter, sam_checkpoint=sam_checkpoint, sam_model_type=sam_model_type, device=device
    )
    return SamInteractionFunction(registry.load_segmenter(settings.segmenter, device=settings.device))
