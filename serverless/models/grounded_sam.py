"""Grounded-SAM: boxes from any `Detector`, then every box of a frame decoded by any
`Segmenter` at once (one embedding, one batched decode). A batch of frames is embedded together
(`embed_all`: one encoder pass when the segmenter is a `BatchEmbedder`), only the frames with a
box to segment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from serverless.detections import Detections
from serverless.models.base import Detector, Embedding, Segmenter, compiled_networks, embed_all

if TYPE_CHECKING:
    import torch

__all__ = ["GroundedSam", "add_masks"]


def add_masks(
    segmenter: Segmenter, image: np.ndarray, detections: Detections, only: np.ndarray | None = None
) -> Detections:
    """``detections`` of one frame with full-frame masks for their boxes: one embedding, one
    batched decode. ``only`` (bool (N,)) picks the boxes to segment; the others get empty
    masks. Nothing to segment, no segmenter run."""
    chosen = np.ones(len(detections), dtype=bool) if only is None else np.asarray(only, dtype=bool)
    if chosen.shape != (len(detections),):
        raise ValueError(f"only must have shape ({len(detections)},), got {chosen.shape}")
    embedding = segmenter.embed(image) if chosen.any() else None
    return _with_masks(segmenter, image, detections, chosen, embedding)


def _with_masks(
    segmenter: Segmenter, image: np.ndarray, detections: Detections, chosen: np.ndarray, embedding: Embedding | None
) -> Detections:
    """``detections`` with masks for the ``chosen`` boxes decoded against ``embedding`` (None
    when nothing is chosen), empty masks for the others."""
    masks = np.zeros((len(detections), *image.shape[:2]), dtype=bool)
    if embedding is not None:
        masks[chosen] = segmenter.segment_boxes(embedding, detections.xyxy[chosen])
    return detections.with_columns(masks=masks)


class GroundedSam:
    """A detector and a segmenter as one `Detector` whose detections carry full-frame masks."""

    def __init__(self, detector: Detector, segmenter: Segmenter) -> None:
        self.detector = detector
        self.segmenter = segmenter

    @property
    def labels(self) -> tuple[str, ...]:
        return self.detector.labels

    def compiled_networks(self) -> dict[str, torch.nn.Module]:
        """The detector's and the segmenter's (`serverless.models.base.Compilable`)."""
        return compiled_networks(self.detector, self.segmenter)

    def add_masks(self, image: np.ndarray, detections: Detections) -> Detections:
        """`add_masks` with this segmenter."""
        return add_masks(self.segmenter, image, detections)

    def detect(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Detections]:
        """The detector's boxes for each image, each with its mask: the frames that have a box
        are embedded together (`embed_all`), then each frame's boxes are decoded at once."""
        found = self.detector.detect(images, threshold=threshold)
        boxed = [i for i, det in enumerate(found) if len(det)]
        embeddings: dict[int, Embedding] = dict(
            zip(boxed, embed_all(self.segmenter, [images[i] for i in boxed]), strict=True)
        )
        return [
            _with_masks(self.segmenter, image, det, np.ones(len(det), dtype=bool), embeddings.get(i))
            for i, (image, det) in enumerate(zip(images, found, strict=True))
        ]
