"""The bulk pre-labeler: model settings, model loading and batched runs over image files.

One model object (`GroundingDino` or `GroundedSam`) serves this pipeline, the Nuclio
functions and the cvat-sdk function modules alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from serverless.detections import Detections
from serverless.images import ImageError, read_image
from serverless.ontology import Ontology

__all__ = ["Detector", "FrameResult", "ModelSettings", "load_detector", "prelabel_files"]


class Detector(Protocol):
    def detect(
        self, images: Sequence[np.ndarray], ontology: Ontology, *, threshold: float | None = None
    ) -> list[Detections]: ...


@dataclass(frozen=True)
class ModelSettings:
    """Where the weights are. Resolution: explicit value → environment → public default."""

    gdino_model: str
    sam_checkpoint: str | None = None
    sam_model_type: str = "vit_h"
    device: str | None = None

    @classmethod
    def from_env(
        cls,
        *,
        gdino_model: str | None = None,
        sam_checkpoint: str | None = None,
        sam_model_type: str | None = None,
        device: str | None = None,
    ) -> ModelSettings:
        from serverless.models.grounding_dino import DEFAULT_GDINO_MODEL

        return cls(
            gdino_model=gdino_model or os.environ.get("AUTOLABEL_GDINO_MODEL") or DEFAULT_GDINO_MODEL,
            sam_checkpoint=sam_checkpoint or os.environ.get("AUTOLABEL_SAM_CHECKPOINT") or None,
            sam_model_type=sam_model_type or os.environ.get("AUTOLABEL_SAM_MODEL_TYPE") or "vit_h",
            device=device or os.environ.get("AUTOLABEL_DEVICE") or None,
        )

    @property
    def tiny(self) -> bool:
        """True when any configured model is a random-init tiny model."""
        from serverless.models.tiny import is_tiny

        return is_tiny(self.gdino_model) or is_tiny(self.sam_checkpoint)


def load_detector(settings: ModelSettings, *, masks: bool) -> Detector:
    """Grounding DINO alone, or Grounded-SAM when ``masks`` is asked for."""
    from serverless.models.grounded_sam import GroundedSam
    from serverless.models.grounding_dino import GroundingDino
    from serverless.models.sam import SamSegmenter

    detector = GroundingDino.load(settings.gdino_model, device=settings.device)
    if not masks:
        return detector
    segmenter = SamSegmenter.load(settings.sam_model_type, settings.sam_checkpoint, device=settings.device)
    return GroundedSam(detector, segmenter)


@dataclass(frozen=True)
class FrameResult:
    """One input file: its detections, or the reason it was skipped."""

    path: Path
    width: int = 0
    height: int = 0
    detections: Detections | None = None
    error: str | None = None
    seconds: float = field(default=0.0, compare=False)


def prelabel_files(
    files: Sequence[Path],
    detector: Detector,
    ontology: Ontology,
    *,
    threshold: float | None = None,
    batch_size: int = 4,
    on_result: Callable[[FrameResult], None] | None = None,
) -> Iterator[FrameResult]:
    """Run ``detector`` over ``files`` in batches; unreadable files are reported, not fatal."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        images: list[np.ndarray] = []
        readable: list[Path] = []
        for path in batch:
            try:
                images.append(read_image(path))
                readable.append(path)
            except ImageError as err:
                result = FrameResult(path=path, error=str(err))
                if on_result:
                    on_result(result)
                yield result
        if not images:
            continue
        began = time.perf_counter()
        outputs = detector.detect(images, ontology, threshold=threshold)
        per_image = (time.perf_counter() - began) / len(images)
        for path, image, det in zip(readable, images, outputs, strict=True):
            result = FrameResult(path, image.shape[1], image.shape[0], det, seconds=per_image)
            if on_result:
                on_result(result)
            yield result
