"""Grounded-SAM: boxes from any `Detector`, then every box of a frame decoded by any
`Segmenter` at once (one embedding, one batched decode)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serverless.detections import Detections
from serverless.models.base import Detector, Segmenter

__all__ = ["GroundedSam", "add_masks"]


def add_masks(
    segmenter: Segmenter, image: np.ndarray, detections: Detections, only: np.ndarray | None = None
) -> Detections:
    """``detections`` of one frame with full-frame masks for their boxes: one embedding, one
    batched decode. ``only`` (bool (N,)) picks the boxes to segment; the others get empty
    masks. Nothing to segment, no segmenter run."""
    masks = np.zeros((len(detections), *image.shape[:2]), dtype=bool)
    chosen = np.ones(len(detections), dtype=bool) if only is None else np.asarray(only, dtype=bool)
    if chosen.shape != (len(detections),):
        raise ValueError(f"only must have shape ({len(detections)},), got {chosen.shape}")
    if chosen.any():
        masks[chosen] = segmenter.segment_boxes(segmenter.embed(image), detections.xyxy[chosen])
    return detections.with_columns(masks=masks)


class GroundedSam:
    """A detector and a segmenter as one `Detector` whose detections carry full-frame masks."""

    def __init__(self, detector: Detector, segmenter: Segmenter) -> None:
        self.detector = detector
        self.segmenter = segmenter

    @property
    def labels(self) -> tuple[str, ...]:
        return self.detector.labels

    def add_masks(self, image: np.ndarray, detections: Detections) -> Detections:
        """`add_masks` with this segmenter."""
        return add_masks(self.segmenter, image, detections)

    def detect(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Detections]:
        """The detector's boxes for each image, each with its mask."""
        boxes = self.detector.detect(images, threshold=threshold)
        return [self.add_masks(image, det) for image, det in zip(images, boxes, strict=True)]
