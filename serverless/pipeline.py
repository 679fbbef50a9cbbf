"""The bulk pre-labeler: which models to run (`ModelSettings`), loading them as one
`Detector` (`load_detector`) and batched runs over image files (`prelabel_files`).

The pre-labeler holds a `Detector`, never a model class: any registered backend serves it, as
it serves the Nuclio functions and the cvat-sdk function modules.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import numpy as np

from serverless.detections import Detections
from serverless.images import ImageError, read_image
from serverless.models.base import Detector, Kind, Segmenter
from serverless.models.registry import ModelSpec, ModelSpecError, parse_spec

if TYPE_CHECKING:
    from serverless.ontology import Ontology

__all__ = [
    "Detector",
    "FrameResult",
    "ModelSettings",
    "ModelSpecError",
    "load_detector",
    "load_models",
    "prelabel_files",
]


def _shorthand_segmenter(model_type: str | None, checkpoint: str | None) -> str:
    model_type = model_type or "vit_h"
    return f"sam:{model_type}:{checkpoint}" if checkpoint else f"sam:{model_type}"


def _choose(kind: Kind, candidates: Sequence[tuple[str, str | None]], environ: Mapping[str, str]) -> ModelSpec:
    """The first candidate spec that is set, parsed; errors say where it came from."""
    for origin, text in candidates:
        if text:
            try:
                return parse_spec(text, kind, environ)
            except ModelSpecError as err:
                raise ModelSpecError(f"{err} (from {origin})") from None
    raise ModelSpecError(f"no {kind} spec")  # the candidates end with a default


def _one_of(spec: str | None, shorthand: str | None, names: str) -> str | None:
    if spec and shorthand:
        raise ModelSpecError(f"give {names}, not both")
    return spec or shorthand


@dataclass(frozen=True, init=False)
class ModelSettings:
    """Which models a door runs, as parsed spec strings (`serverless.models.registry`).

    Resolution, done once at the door: an explicit spec (``--detector``, or the shorthand
    ``--gdino-model X`` = ``grounding-dino:X``; ``--segmenter``, or ``--sam-model-type`` /
    ``--sam-checkpoint`` = ``sam:TYPE[:CHECKPOINT]``) → the environment (``AUTOLABEL_DETECTOR``,
    or the shorthand ``AUTOLABEL_GDINO_MODEL``; ``AUTOLABEL_SEGMENTER``, or
    ``AUTOLABEL_SAM_MODEL_TYPE`` / ``AUTOLABEL_SAM_CHECKPOINT``) → the ontology's
    ``models: {detector, segmenter}`` → the defaults ``grounding-dino`` and ``sam`` (vit_h).
    The classifier (for ``tag`` labels) resolves the same way (``--classifier`` →
    ``AUTOLABEL_CLASSIFIER`` → ``models.classifier``).
    """

    detector: ModelSpec
    segmenter: ModelSpec
    device: str | None = None
    classifier: ModelSpec | None = None
    """The classifier for the ontology's ``tag`` labels; None: the ontology has none named."""

    def __init__(
        self,
        detector: ModelSpec | str | None = None,
        segmenter: ModelSpec | str | None = None,
        device: str | None = None,
        *,
        classifier: ModelSpec | str | None = None,
        gdino_model: str | None = None,
        sam_checkpoint: str | None = None,
        sam_model_type: str | None = None,
    ) -> None:
        """Explicit settings (no environment): specs, or the Grounding DINO / SAM shorthand."""
        chosen_detector = _one_of(
            str(detector) if detector else None,
            f"grounding-dino:{gdino_model}" if gdino_model else None,
            "a detector spec or gdino_model",
        )
        shorthand = _shorthand_segmenter(sam_model_type, sam_checkpoint) if sam_model_type or sam_checkpoint else None
        chosen_segmenter = _one_of(
            str(segmenter) if segmenter else None, shorthand, "a segmenter spec or sam_model_type/sam_checkpoint"
        )
        object.__setattr__(self, "detector", parse_spec(chosen_detector or "grounding-dino", "detector", {}))
        object.__setattr__(self, "segmenter", parse_spec(chosen_segmenter or "sam", "segmenter", {}))
        object.__setattr__(self, "device", device or None)
        object.__setattr__(self, "classifier", parse_spec(str(classifier), "classifier", {}) if classifier else None)

    @classmethod
    def from_env(
        cls,
        *,
        detector: str | None = None,
        segmenter: str | None = None,
        classifier: str | None = None,
        gdino_model: str | None = None,
        sam_checkpoint: str | None = None,
        sam_model_type: str | None = None,
        device: str | None = None,
        ontology: Ontology | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ModelSettings:
        """Resolve the settings (see the class docstring); ``environ`` defaults to
        ``os.environ``. `ModelSpecError` names the bad spec and where it came from."""
        env = os.environ if environ is None else environ
        models = ontology.models if ontology is not None else None
        given_sam = sam_model_type or sam_checkpoint
        env_sam = env.get("AUTOLABEL_SAM_MODEL_TYPE") or env.get("AUTOLABEL_SAM_CHECKPOINT")
        detector_spec = _choose(
            "detector",
            [
                ("given", _one_of(detector, gdino_model and f"grounding-dino:{gdino_model}", "--detector or --gdino-model")),
                ("AUTOLABEL_DETECTOR", env.get("AUTOLABEL_DETECTOR")),
                ("AUTOLABEL_GDINO_MODEL", env.get("AUTOLABEL_GDINO_MODEL") and "grounding-dino"),
                ("the ontology's models.detector", models.detector if models else None),
                ("the default", "grounding-dino"),
            ],
            env,
        )
        shorthand = (
            _shorthand_segmenter(
                sam_model_type or env.get("AUTOLABEL_SAM_MODEL_TYPE"),
                sam_checkpoint or env.get("AUTOLABEL_SAM_CHECKPOINT"),
            )
            if given_sam
            else None
        )
        segmenter_spec = _choose(
            "segmenter",
            [
                ("given", _one_of(segmenter, shorthand, "--segmenter or --sam-model-type/--sam-checkpoint")),
                ("AUTOLABEL_SEGMENTER", env.get("AUTOLABEL_SEGMENTER")),
                ("AUTOLABEL_SAM_MODEL_TYPE/AUTOLABEL_SAM_CHECKPOINT", env_sam and "sam"),
                ("the ontology's models.segmenter", models.segmenter if models else None),
                ("the default", "sam"),
            ],
            env,
        )
        classifier_text = classifier or env.get("AUTOLABEL_CLASSIFIER") or (models.classifier if models else None)
        classifier_spec = (
            _choose(
                "classifier",
                [
                    ("given", classifier),
                    ("AUTOLABEL_CLASSIFIER", env.get("AUTOLABEL_CLASSIFIER")),
                    ("the ontology's models.classifier", models.classifier if models else None),
                ],
                env,
            )
            if classifier_text
            else None
        )
        return cls(
            detector_spec, segmenter_spec, device or env.get("AUTOLABEL_DEVICE") or None, classifier=classifier_spec
        )

    @property
    def gdino_model(self) -> str:
        """The detector's model id as runs record it: the weights of a ``grounding-dino``
        spec (a hub id or directory), else the whole spec."""
        return self.detector.weights if self.detector.backend == "grounding-dino" else self.detector.text

    @property
    def sam_model_type(self) -> str:
        """The SAM size (or encoder JSON) of a ``sam`` segmenter, else the whole spec."""
        from serverless.models.sam import split_weights

        return split_weights(self.segmenter.weights)[0] if self.segmenter.backend == "sam" else self.segmenter.text

    @property
    def sam_checkpoint(self) -> str | None:
        """The checkpoint of a ``sam`` segmenter; None: the public one of its size."""
        from serverless.models.sam import split_weights

        return split_weights(self.segmenter.weights)[1] if self.segmenter.backend == "sam" else None

    @property
    def tiny(self) -> bool:
        """True when any configured model is a random-init tiny model."""
        from serverless.models.tiny import is_tiny

        parts = [*self.detector.weights.split(":"), *self.segmenter.weights.split(":")]
        parts += self.classifier.weights.split(":") if self.classifier else []
        return any(is_tiny(part) for part in parts if part)


@overload
def load_models(settings: ModelSettings, ontology: Ontology, *, masks: Literal[True]) -> tuple[Detector, Segmenter]: ...
@overload
def load_models(settings: ModelSettings, ontology: Ontology, *, masks: bool) -> tuple[Detector, Segmenter | None]: ...
def load_models(settings: ModelSettings, ontology: Ontology, *, masks: bool) -> tuple[Detector, Segmenter | None]:
    """The settings' detector bound to ``ontology`` and, when ``masks`` is asked for, its
    segmenter (else None), each loaded once per process.

    Where every model comes from is settled first (`serverless.models.registry.locate`), so
    missing weights fail in seconds with one line, before anything heavy is loaded.
    """
    from serverless.models import registry

    detector_source = registry.locate(settings.detector)
    segmenter_source = registry.locate(settings.segmenter) if masks else None
    detector = registry.load_detector(settings.detector, ontology, device=settings.device, source=detector_source)
    if segmenter_source is None:
        return detector, None
    return detector, registry.load_segmenter(settings.segmenter, device=settings.device, source=segmenter_source)


def load_detector(settings: ModelSettings, ontology: Ontology, *, masks: bool) -> Detector:
    """`load_models` as one `Detector`: the detector alone, or with the segmenter's masks
    (`GroundedSam`) when ``masks`` is asked for."""
    detector, segmenter = load_models(settings, ontology, masks=masks)
    if segmenter is None:
        return detector
    from serverless.models.grounded_sam import GroundedSam

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
        outputs = detector.detect(images, threshold=threshold)
        per_image = (time.perf_counter() - began) / len(images)
        for path, image, det in zip(readable, images, outputs, strict=True):
            result = FrameResult(path, image.shape[1], image.shape[0], det, seconds=per_image)
            if on_result:
                on_result(result)
            yield result
