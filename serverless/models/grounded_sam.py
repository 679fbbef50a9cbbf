"""Grounded-SAM: boxes from Grounding DINO, then every box of a frame decoded by SAM at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serverless.detections import Detections
from serverless.models.grounding_dino import GroundingDino
from serverless.models.sam import SamSegmenter
from serverless.ontology import Ontology

__all__ = ["GroundedSam"]


class GroundedSam:
    """Detector + segmenter; ``detect`` returns `Detections` with full-frame masks."""

    def __init__(self, detector: GroundingDino, segmenter: SamSegmenter) -> None:
        self.detector = detector
        self.segmenter = segmenter

    def add_masks(self, image: np.ndarray, detections: Detections) -> Detections:
        """Masks for the boxes of one frame: one embedding, one batched decode."""
        if len(detections) == 0:
            return detections.with_columns(masks=np.zeros((0, *image.shape[:2]), dtype=bool))
        embedding = self.segmenter.embed(image)
        return detections.with_columns(masks=self.segmenter.segment_boxes(embedding, detections.xyxy))

    def detect(
        self, images: Sequence[np.ndarray], ontology: Ontology, *, threshold: float | None = None
    ) -> list[Detections]:
        boxes = self.detector.detect(images, ontology, threshold=threshold)
        return [self.add_masks(image, det) for image, det in zip(images, boxes, strict=True)]
