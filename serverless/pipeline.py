"""The bulk pre-labeler: which models to run (`ModelSettings`), loading them as one
`Detector` (`load_detector`) and a `Classifier` (`load_classifier`; both: `load_pipeline`),
and batched runs over image files (`prelabel_files`).

The pre-labeler holds a `Detector` and a `Classifier`, never a model class: any registered
backend serves it, as it serves the Nuclio functions and the cvat-sdk function modules. The
ontology decides what runs: its object labels (rectangle, polygon, mask) go to the detector,
its ``tag`` labels (image-level) to the classifier; an ontology of tags alone runs no detector.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import numpy as np

from serverless.detections import Detections
from serverless.images import ImageError, read_image
from serverless.models.base import Classifier, Detector, Kind, Segmenter, Tags
from serverless.models.registry import ModelSpec, ModelSpecError, parse_spec
from serverless.read_ahead import read_ahead

if TYPE_CHECKING:
    from serverless.models.registry import WeightsSource
    from serverless.ontology import Ontology

__all__ = [
    "DEFAULT_CLASSIFIER",
    "Classifier",
    "Detector",
    "FrameResult",
    "ModelSettings",
    "ModelSpecError",
    "load_classifier",
    "load_detector",
    "load_models",
    "label_batch",
    "load_pipeline",
    "locate_pipeline",
    "prelabel_files",
    "read_image_or_reason",
]

DEFAULT_CLASSIFIER = "clip"
"""The classifier of an ontology with ``tag`` labels when none is named (the ``clip``
backend's default weights)."""


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


def _classifier(given: str | None, environ: Mapping[str, str], ontology: Ontology | None) -> ModelSpec | None:
    """The classifier of `ModelSettings.from_env`: given → ``AUTOLABEL_CLASSIFIER`` → the
    ontology's ``models.classifier`` → `DEFAULT_CLASSIFIER` when the ontology has tag labels.
    With an ontology without tag labels there is none: a classifier given or named by the
    ontology is then an error naming it (the environment's, a default for every ontology,
    is left unused)."""
    named = ontology.models.classifier if ontology is not None else None
    candidates = [
        ("given", given),
        ("AUTOLABEL_CLASSIFIER", environ.get("AUTOLABEL_CLASSIFIER")),
        ("the ontology's models.classifier", named),
    ]
    if ontology is not None and not ontology.has_tags:
        for origin, text in (candidates[0], candidates[2]):
            if text:
                raise ModelSpecError(
                    f"classifier {text!r} (from {origin}) was named, but the ontology has no tag labels "
                    "(image-level labels, type: tag) for it to give"
                )
        return None
    if ontology is not None:
        candidates.append(("the default", DEFAULT_CLASSIFIER))
    if not any(text for _, text in candidates):
        return None
    return _choose("classifier", candidates, environ)


COMPILE_VARIABLE = "AUTOLABEL_COMPILE"
"""``1``/``true``/``yes``: `ModelSettings.from_env` compiles the models (``--compile`` for the
function doors, which take no options)."""


def _compile_setting(given: bool | None, environ: Mapping[str, str]) -> bool:
    if given is not None:
        return given
    value = environ.get(COMPILE_VARIABLE, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ModelSpecError(f"{COMPILE_VARIABLE} must be 1, true, yes, 0, false or no, got {environ[COMPILE_VARIABLE]!r}")


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
    ``AUTOLABEL_CLASSIFIER`` → ``models.classifier`` → ``clip``), for an ontology that has tag
    labels only: naming one for an ontology without any is an error. ``compile``: given →
    ``AUTOLABEL_COMPILE`` → off.
    """

    detector: ModelSpec
    segmenter: ModelSpec
    device: str | None = None
    classifier: ModelSpec | None = None
    """The classifier for the ontology's ``tag`` labels; None: the ontology has none named."""
    compile: bool = False
    """``torch.compile`` the models' hot networks once loaded (`serverless.models.registry.compile_models`):
    a speed option (results equal up to float noise), so not part of a run's parameters."""

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
        compile: bool = False,  # noqa: A002 - the option's name
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
        object.__setattr__(self, "compile", bool(compile))

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
        compile: bool | None = None,  # noqa: A002 - the option's name
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
        classifier_spec = _classifier(classifier, env, ontology)
        return cls(
            detector_spec, segmenter_spec, device or env.get("AUTOLABEL_DEVICE") or None, classifier=classifier_spec,
            compile=_compile_setting(compile, env),
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

    def classifier_for(self, ontology: Ontology) -> ModelSpec | None:
        """The classifier that serves ``ontology``'s tag labels: the one set, else
        `DEFAULT_CLASSIFIER`; None when the ontology has no tag labels."""
        if not ontology.has_tags:
            return None
        return self.classifier or parse_spec(DEFAULT_CLASSIFIER, "classifier")

    def model_id(self, ontology: Ontology) -> str:
        """The model a pre-label run of ``ontology`` records (its provenance ``model_id``): the
        detector's (`gdino_model`) when the ontology has object labels, else the classifier's
        spec (an ontology of tags alone runs no detector)."""
        classifier = self.classifier_for(ontology)
        return classifier.text if not ontology.has_objects and classifier is not None else self.gdino_model

    def model_revision(self, ontology: Ontology) -> str | None:
        """The model revision a pre-label run of ``ontology`` records beside `model_id` (its
        provenance ``model_revision``): ``sha256:<hex>`` of the checkpoint file of a ``yolo``
        detector (a trained checkpoint: its path alone does not say which training wrote it;
        the digest is what training records hold for the weights they wrote) when the ontology
        has object labels; None otherwise, and when the checkpoint is not there (loading it then
        says why). Hashes the file (`serverless.weights.file_sha256`); loads nothing."""
        if self.detector.backend != "yolo" or not ontology.has_objects:
            return None
        from serverless.models.registry import backend
        from serverless.weights import file_sha256

        checkpoint = backend("yolo").on_disk(self.detector.weights)
        return file_sha256(checkpoint) if checkpoint else None

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
    segmenter (else None), each loaded once per process (and compiled when the settings say so:
    `serverless.models.registry.compile_models`). A detector whose detections carry
    masks of their own (SAM 3: `DetectorBackend.masks`) needs no segmenter: none is loaded.

    Where every model comes from is settled first (`serverless.models.registry.locate`), so
    missing weights fail in seconds with one line, before anything heavy is loaded.
    """
    from serverless.models import registry

    detector_source = registry.locate(settings.detector)
    segmenter_source = registry.locate(settings.segmenter) if _needs_segmenter(settings, masks) else None
    detector = registry.load_detector(settings.detector, ontology, device=settings.device, source=detector_source)
    segmenter = None
    if segmenter_source is not None:
        segmenter = registry.load_segmenter(settings.segmenter, device=settings.device, source=segmenter_source)
    if settings.compile:
        registry.compile_models(detector, segmenter)
    return detector, segmenter


def _needs_segmenter(settings: ModelSettings, masks: bool) -> bool:
    """Whether ``masks`` need the settings' segmenter: not when the detector's detections carry
    masks of their own (SAM 3: `DetectorBackend.masks`)."""
    from serverless.models import registry

    return masks and not bool(getattr(registry.backend(settings.detector.backend), "masks", False))


def locate_pipeline(settings: ModelSettings, ontology: Ontology, *, masks: bool) -> None:
    """Settle where every model `load_pipeline` would load comes from, loading none
    (`serverless.models.registry.locate`): missing weights fail in seconds with one line
    (`ModelLoadError`). For a caller whose models load elsewhere on this machine (Ray workers)."""
    from serverless.models import registry

    specs = []
    if ontology.has_objects:
        specs.append(settings.detector)
        if _needs_segmenter(settings, masks):
            specs.append(settings.segmenter)
    if (classifier := settings.classifier_for(ontology)) is not None:
        specs.append(classifier)
    for spec in specs:
        registry.locate(spec)


def load_detector(settings: ModelSettings, ontology: Ontology, *, masks: bool) -> Detector:
    """`load_models` as one `Detector`: the detector alone (a masking detector's masks are its
    own), or with the segmenter's masks (`GroundedSam`) when ``masks`` is asked for."""
    detector, segmenter = load_models(settings, ontology, masks=masks)
    if segmenter is None:
        return detector
    from serverless.models.grounded_sam import GroundedSam

    return GroundedSam(detector, segmenter)


def load_classifier(settings: ModelSettings, ontology: Ontology) -> Classifier:
    """The classifier of ``settings`` for ``ontology``'s tag labels (`ModelSettings.classifier_for`),
    loaded once per process; `OntologyError` when the ontology has no tag labels. The weights
    are located first (`serverless.models.registry.locate`): missing ones fail in seconds."""
    from serverless.models import registry

    ontology.part("tags")  # OntologyError naming what is missing
    spec = settings.classifier_for(ontology)
    return _classifier_of(settings, spec, ontology, registry.locate(spec))


def _classifier_of(settings: ModelSettings, spec: ModelSpec, ontology: Ontology, source: WeightsSource) -> Classifier:
    """``spec``'s classifier for ``ontology`` from ``source``, compiled when the settings say so."""
    from serverless.models import registry

    classifier = registry.load_classifier(spec, ontology, device=settings.device, source=source)
    if settings.compile:
        registry.compile_models(classifier)
    return classifier


def load_pipeline(
    settings: ModelSettings, ontology: Ontology, *, masks: bool
) -> tuple[Detector | None, Classifier | None]:
    """What pre-labelling ``ontology`` runs: the detector (`load_detector`) when it has object
    labels, the classifier (`load_classifier`) when it has tag labels, else None for each.
    Every model's weights are located before any is loaded."""
    from serverless.models import registry

    classifier_spec = settings.classifier_for(ontology)
    classifier_source = registry.locate(classifier_spec) if classifier_spec is not None else None
    detector = load_detector(settings, ontology, masks=masks) if ontology.has_objects else None
    classifier = None
    if classifier_spec is not None:
        classifier = _classifier_of(settings, classifier_spec, ontology, classifier_source)
    return detector, classifier


@dataclass(frozen=True)
class FrameResult:
    """One input file: its detections and tags, or the reason it was skipped."""

    path: Path
    width: int = 0
    height: int = 0
    detections: Detections | None = None
    """The detector's (empty when none ran)."""
    error: str | None = None
    seconds: float = field(default=0.0, compare=False)
    tags: Tags | None = None
    """The classifier's image-level labels, or None when no classifier ran."""


def label_batch(
    images: Sequence[np.ndarray],
    detector: Detector | None,
    classifier: Classifier | None,
    *,
    threshold: float | None = None,
) -> tuple[list[Detections], list[Tags | None]]:
    """One batch through the pre-labeler's models: per image, the detector's `Detections`
    (empty when there is no detector) and the classifier's `Tags` (None when there is none);
    ``threshold`` replaces every label's own in both."""
    if detector is None and classifier is None:
        raise ValueError("give a detector, a classifier or both")
    outputs = detector.detect(images, threshold=threshold) if detector is not None else None
    tags = classifier.classify(images, threshold=threshold) if classifier is not None else None
    return (
        list(outputs) if outputs is not None else [Detections.empty() for _ in images],
        list(tags) if tags is not None else [None] * len(images),
    )


def read_image_or_reason(path: Path) -> tuple[np.ndarray | None, str | None]:
    """`read_image` as a value: the image, or why it could not be read (the `ImageError`'s
    message). Module-level, so a worker process of `prelabel_files` (or a Ray task of
    `sync.ray_prelabel`) can run it."""
    try:
        return read_image(path), None
    except ImageError as err:
        return None, str(err)


def _ignore_interrupt() -> None:
    """A decoding worker leaves Ctrl-C (SIGINT, sent to the terminal's whole process group) to
    the main process, which stops the workers as the run stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Decoding workers start with ``forkserver`` where there is one (Linux), else ``spawn``:
    never a fork of a process whose model threads may already run."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _decoded(
    files: Sequence[Path], workers: int, look_ahead: int
) -> Generator[tuple[Path, np.ndarray | None, str | None], None, None]:
    """``(path, image, error)`` per file, in order: `read_image_or_reason` here when ``workers``
    is 0, else in ``workers`` processes with at most ``look_ahead`` files submitted ahead of the one
    yielded (`serverless.read_ahead.read_ahead`: the memory bound)."""
    pool = None
    if workers:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context(), initializer=_ignore_interrupt)
    try:
        for path, (image, error) in read_ahead(files, read_image_or_reason, pool, look_ahead):
            yield path, image, error
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def prelabel_files(
    files: Sequence[Path],
    detector: Detector | None,
    *,
    classifier: Classifier | None = None,
    threshold: float | None = None,
    batch_size: int = 4,
    on_result: Callable[[FrameResult], None] | None = None,
    workers: int = 0,
) -> Iterator[FrameResult]:
    """Run ``detector`` and ``classifier`` (either may be None, not both) over ``files`` in
    batches; ``threshold`` replaces every label's own in both. Unreadable files are reported,
    not fatal: in each batch, its unreadable files' results come first, then its images'.

    ``workers``: 0 reads the images in this thread; N > 0 reads them (`read_image`) in N
    processes, at most two batches per worker ahead of the models, with the same results in
    the same order. The workers start with ``forkserver`` (else ``spawn``), which imports the
    calling program's main module again: a script that calls this with workers needs the
    ``if __name__ == "__main__":`` guard."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be at least 0, got {workers}")
    if detector is None and classifier is None:
        raise ValueError("give a detector, a classifier or both")
    decoded = _decoded(files, workers, look_ahead=2 * batch_size * workers)
    try:
        yield from _labelled(decoded, len(files), detector, classifier, threshold, batch_size, on_result)
    finally:
        decoded.close()  # the workers stop with the run, finished or not


def _labelled(
    decoded: Iterator[tuple[Path, np.ndarray | None, str | None]],
    count: int,
    detector: Detector | None,
    classifier: Classifier | None,
    threshold: float | None,
    batch_size: int,
    on_result: Callable[[FrameResult], None] | None,
) -> Iterator[FrameResult]:
    """`prelabel_files`' batches over the ``count`` decoded files."""
    for start in range(0, count, batch_size):
        images: list[np.ndarray] = []
        readable: list[Path] = []
        for path, image, error in islice(decoded, min(batch_size, count - start)):
            if image is not None:
                images.append(image)
                readable.append(path)
                continue
            result = FrameResult(path=path, error=error)
            if on_result:
                on_result(result)
            yield result
        if not images:
            continue
        began = time.perf_counter()
        outputs, tags = label_batch(images, detector, classifier, threshold=threshold)
        per_image = (time.perf_counter() - began) / len(images)
        for path, image, det, image_tags in zip(readable, images, outputs, tags, strict=True):
            result = FrameResult(path, image.shape[1], image.shape[0], det, seconds=per_image, tags=image_tags)
            if on_result:
                on_result(result)
            yield result
