"""The model contracts every door is written against: `Detector`, `Segmenter`, `Classifier`.

A door (a Nuclio function, a cvat-sdk function module, ``autolabel prelabel``, ``autolabel
cvat prelabel``, ``autolabel serve``) holds one of these protocols, never a model class; a
model joins by implementing one and adding an entry to `serverless.models.registry`. Nothing
here knows about Nuclio, HTTP, CVAT or the store, and nothing here imports torch.

Images are RGB uint8 arrays of shape (H, W, 3). Boxes are float pixels ``x1, y1, x2, y2``
with ``x2``/``y2`` exclusive (`serverless.detections`). Scores are floats in 0..1.

**A detector is bound to its label set when it is built.** An open-vocabulary model
(Grounding DINO, OWLv2, YOLO-World, SAM 3) is built for an ontology: the weights are loaded
once per process and shared, the binding (captions, text embeddings, a class list) is made
once per ontology. A closed-vocabulary one (a trained YOLO) has its classes anyway. Binding
at construction is what lets every door know the labels before the first frame (a CVAT
function spec, a cvat-sdk ``DetectionFunctionSpec``), keeps per-ontology preparation out of
the per-frame path, and avoids a per-call label set that a stateful model (YOLO-World's
``set_classes``) would have to swap under concurrent requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from serverless.detections import Detections

if TYPE_CHECKING:
    import torch

    from serverless.ontology import Ontology

__all__ = [
    "KINDS",
    "BatchEmbedder",
    "BoundClassifier",
    "BoundDetector",
    "Classifier",
    "Compilable",
    "Detector",
    "Embedding",
    "EmbeddingExporter",
    "Kind",
    "Segmenter",
    "Tags",
    "check_threshold",
    "compiled_networks",
    "embed_all",
    "frames_per_pass",
]

Kind = Literal["detector", "segmenter", "classifier"]
KINDS: tuple[Kind, ...] = ("detector", "segmenter", "classifier")
"""The model kinds, in the order `autolabel models list` shows them."""


def check_threshold(threshold: float | None) -> float | None:
    """``threshold`` when it is None or a number in 0..1; ValueError naming it otherwise.
    Every `Detector` and `Classifier` checks its ``threshold`` argument with this, and so do
    the doors that take a threshold from a request (Nuclio, cvat-sdk's ``conf_threshold``)."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold must lie in 0..1, got {threshold!r}")  # noqa: TRY004 - one error for callers
    if not 0.0 <= threshold <= 1.0:  # also rejects NaN; compared before float(), which an int of 400 digits overflows
        raise ValueError(f"threshold must lie in 0..1, got {threshold}")
    return float(threshold)


@runtime_checkable
class Detector(Protocol):
    """Boxes (and, for some models, full-frame masks) for a fixed label set.

    ``labels[i]`` is the label with class id ``i``; for a detector built for an ontology
    they are the ontology's label names, in order.
    """

    @property
    def labels(self) -> tuple[str, ...]:
        """The label names, indexed by class id."""
        ...

    def detect(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Detections]:
        """One `Detections` per image, in order (``[]`` for no images).

        ``threshold`` (0..1, else ValueError) replaces every label's score threshold; None
        applies each label's own (the ontology's per-label thresholds). Scores are at or above
        the threshold that applies; ``class_ids`` index `labels` and ``labels`` repeat the
        names. Results do not depend on how images are batched, and there are at most the
        ontology's ``defaults.max_detections`` per image. ``masks``, when present, are
        (N, H, W) bool.
        """
        ...


@runtime_checkable
class Embedding(Protocol):
    """One frame's image embedding, computed by `Segmenter.embed`; opaque otherwise."""

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the frame that was embedded."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """Promptable masks: embed a frame once (the costly part), then prompt it many times."""

    def embed(self, image: np.ndarray) -> Embedding:
        """The embedding of one frame; a frame seen recently may be served from a cache."""
        ...

    def segment_boxes(self, embedding: Embedding, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, H, W) bool masks for N boxes (N may be 0), decoded together."""
        ...

    def segment_points(
        self,
        embedding: Embedding,
        positive: np.ndarray,
        negative: np.ndarray | None = None,
        box_xyxy: np.ndarray | None = None,
    ) -> np.ndarray:
        """One (H, W) bool mask from clicks ``(K, 2)`` ``x, y`` and an optional box.
        ValueError when there is neither a point nor a box."""
        ...


@runtime_checkable
class BatchEmbedder(Segmenter, Protocol):
    """A segmenter whose image encoder takes several frames in one forward pass (an optional
    capability: `embed_all` uses it when present). Pre-labelling at scale embeds a batch of
    frames at once, and one encoder pass over N frames keeps a GPU busier than N passes."""

    def embed_many(self, images: Sequence[np.ndarray]) -> list[Embedding]:
        """One embedding per frame, in order, as `Segmenter.embed` gives it (up to float
        noise), the new frames encoded together: frames in the cache are served from it and
        not encoded again, the others are encoded (a frame repeated in the batch once) and
        cached."""
        ...


def frames_per_pass(device: str, gpu: int, cpu: int) -> int:
    """How many frames an image encoder takes in one forward pass on ``device``: ``gpu`` on an
    accelerator, ``cpu`` on the CPU. A CPU is busy with one frame already (batching gains it
    nothing) while a batch's attention maps multiply its memory; a GPU needs frames together
    to stay busy. The one place the SAM-family encoders make this choice."""
    return max(1, cpu if device == "cpu" or device.startswith("cpu:") else gpu)


def embed_all(segmenter: Segmenter, images: Sequence[np.ndarray]) -> list[Embedding]:
    """The embedding of each frame, in order: the segmenter's `BatchEmbedder.embed_many` when
    it has one, else `Segmenter.embed` frame by frame. The one place that makes this choice."""
    if not images:
        return []
    if isinstance(segmenter, BatchEmbedder):
        return segmenter.embed_many(images)
    return [segmenter.embed(image) for image in images]


@runtime_checkable
class Compilable(Protocol):
    """A loaded model that names the networks worth ``torch.compile`` (an optional capability:
    ``--compile``, `serverless.models.registry.compile_networks`): the modules its hot path
    calls, with fixed or few input shapes where possible (SAM's image encoder, not its prompt
    decoder), each compiled in place with ``nn.Module.compile`` so the model's own calls go
    through the compiled code."""

    def compiled_networks(self) -> Mapping[str, torch.nn.Module]:
        """``{name for messages: module}``; empty when nothing is worth compiling."""
        ...


def compiled_networks(*models: object) -> dict[str, torch.nn.Module]:
    """The networks of each of ``models`` that is `Compilable`, merged (the others name none).
    The wrappers (`BoundDetector`, `BoundClassifier`, Grounded-SAM) answer with their parts'."""
    found: dict[str, torch.nn.Module] = {}
    for model in models:
        if isinstance(model, Compilable):
            found.update(model.compiled_networks())
    return found


@runtime_checkable
class EmbeddingExporter(Segmenter, Protocol):
    """A segmenter whose embeddings a browser-side decoder can read (SAM's, for CVAT's SAM
    plugin, which decodes clicks in the browser)."""

    @property
    def browser_decoder(self) -> str | None:
        """The browser decoder the exported embedding fits (``"sam-vit-h"``: CVAT's SAM
        plugin), or None when no known decoder reads it (other SAM sizes)."""
        ...

    def export_embedding(self, embedding: Embedding) -> np.ndarray:
        """The embedding as the float32 array the decoder reads (SAM: ``[1, 256, 64, 64]``)."""
        ...


@dataclass(frozen=True, eq=False)
class Tags:
    """Image-level labels of one image, in descending score order: a CVAT tag per row."""

    class_ids: np.ndarray
    """int64 (K,): indices into the classifier's `Classifier.labels`."""
    scores: np.ndarray
    """float32 (K,) in 0..1."""
    labels: np.ndarray
    """str (K,): the label names."""

    def __post_init__(self) -> None:
        class_ids = np.asarray(self.class_ids).reshape(-1)
        if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
            raise ValueError(f"class_ids must be integers, got dtype {class_ids.dtype}")
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        labels = np.asarray(self.labels, dtype=str).reshape(-1)
        if not len(class_ids) == len(scores) == len(labels):
            raise ValueError(
                f"class_ids, scores and labels must have one length, got {len(class_ids)}, {len(scores)}, {len(labels)}"
            )
        if np.any(~np.isfinite(scores)) or np.any((scores < 0) | (scores > 1)):
            raise ValueError("scores must lie in 0..1")
        for name, value in (("class_ids", class_ids.astype(np.int64)), ("scores", scores), ("labels", labels)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.class_ids)


@runtime_checkable
class Classifier(Protocol):
    """Image-level labels with scores (CVAT tags) for a fixed label set."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The label names, indexed by class id."""
        ...

    def classify(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Tags]:
        """One `Tags` per image, in order (``[]`` for no images); ``threshold`` as in
        `Detector.detect` (None: each label's own)."""
        ...



# --------------------------------------------------------------------------- binding


class _PromptedDetector(Protocol):
    def detect(
        self, images: Sequence[np.ndarray], ontology: Ontology, *, threshold: float | None = None
    ) -> list[Detections]: ...


class _PromptedClassifier(Protocol):
    def classify(self, images: Sequence[np.ndarray], ontology: Ontology, *, threshold: float | None = None) -> list[Tags]: ...


class BoundDetector:
    """An open-vocabulary model (loaded once, prompted with any ontology) bound to one
    ontology: the `Detector` every door holds. The model's per-ontology work (text encodings,
    caption chunks) is cached by the model itself, keyed by the ontology."""

    def __init__(self, model: _PromptedDetector, ontology: Ontology) -> None:
        self.model = model
        self.ontology = ontology

    @property
    def labels(self) -> tuple[str, ...]:
        return self.ontology.label_names

    def detect(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Detections]:
        """The model's ``detect`` with the bound ontology."""
        return self.model.detect(images, self.ontology, threshold=threshold)

    def compiled_networks(self) -> dict[str, torch.nn.Module]:
        """The model's (`Compilable`)."""
        return compiled_networks(self.model)


class BoundClassifier:
    """A zero-shot classifier bound to one ontology's tag labels: a `Classifier`."""

    def __init__(self, model: _PromptedClassifier, ontology: Ontology) -> None:
        self.model = model
        self.ontology = ontology

    @property
    def labels(self) -> tuple[str, ...]:
        return self.ontology.label_names

    def classify(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Tags]:
        """The model's ``classify`` with the bound ontology."""
        return self.model.classify(images, self.ontology, threshold=threshold)

    def compiled_networks(self) -> dict[str, torch.nn.Module]:
        """The model's (`Compilable`)."""
        return compiled_networks(self.model)
