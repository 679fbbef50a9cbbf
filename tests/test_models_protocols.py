"""Conformance: every registered backend, built from its tiny weights through the registry,
behaves as its protocol (`serverless.models.base`) says. A new backend is checked here by
adding its registry entry; a new kind needs its check in `CHECKS`."""

from __future__ import annotations

import numpy as np
import pytest

from serverless.detections import Detections
from serverless.images import read_image
from serverless.models import registry
from serverless.models.base import (
    KINDS,
    Classifier,
    Detector,
    Embedding,
    EmbeddingExporter,
    Segmenter,
    Tags,
    check_threshold,
)
from serverless.ontology import Ontology, parse_ontology
from tests.conftest import SAMPLES

BACKENDS = registry.backends()

# Low thresholds so random tiny weights find boxes; per-label thresholds apart so "each label
# its own threshold" is visible; few detections per frame so the segmenters stay quick.
ONTOLOGY = """\
defaults: {threshold: 0.05, text_threshold: 0.0, max_detections: 6}
labels:
  - {name: person, prompts: [person, worker], threshold: 0.3}
  - {name: cat}
  - {name: cup, type: mask, threshold: 0.15}
  - {name: sunny, prompts: [a sunny day], type: tag, threshold: 0.02}
  - {name: indoor, prompts: [indoors, inside a room], type: tag}
"""
# Detectors answer the object labels, classifiers the tag labels (`Ontology.part`).


@pytest.fixture(scope="module")
def tiny_root(tiny_models):
    return tiny_models.gdino_dir.parent


@pytest.fixture(scope="module")
def ontology() -> Ontology:
    return parse_ontology(ONTOLOGY, "conformance.yaml")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Frames of three sizes, two of one size (they may share a forward pass)."""
    photo = read_image(SAMPLES / "coffee.jpg")
    other = read_image(SAMPLES / "astronaut.jpg")
    small = np.random.default_rng(0).integers(0, 255, (30, 41, 3), dtype=np.uint8)
    return [photo, other, small, np.ascontiguousarray(photo[::-1])]


def build(backend: registry.Backend, tiny_root, ontology: Ontology):
    spec = registry.parse_spec(f"{backend.name}:{backend.tiny(tiny_root, 0)}", backend.kind, {})
    source = registry.locate(spec, download=False)
    assert backend.on_disk(spec.weights) is not None, "tiny weights are on disk"
    if backend.kind == "detector":
        return registry.load_detector(spec, ontology, device="cpu", source=source)
    if backend.kind == "segmenter":
        return registry.load_segmenter(spec, device="cpu", source=source)
    return registry.load_classifier(spec, ontology, device="cpu", source=source)


# --------------------------------------------------------------------------- detectors


def check_detections(det: Detections, image: np.ndarray, labels: tuple[str, ...], floor: np.ndarray, cap: int) -> None:
    height, width = image.shape[:2]
    assert isinstance(det, Detections)
    assert det.xyxy.dtype == np.float32 and det.xyxy.shape == (len(det), 4)
    assert np.all(det.xyxy[:, [0, 2]] >= 0) and np.all(det.xyxy[:, [0, 2]] <= width)
    assert np.all(det.xyxy[:, [1, 3]] >= 0) and np.all(det.xyxy[:, [1, 3]] <= height)
    assert np.all((det.scores >= 0) & (det.scores <= 1))
    assert np.all((det.class_ids >= 0) & (det.class_ids < len(labels)))
    assert det.labels.tolist() == [labels[i] for i in det.class_ids]
    assert np.all(det.scores >= floor[det.class_ids] - 1e-6), "a score under the threshold that applies"
    assert len(det) <= cap
    if det.masks is not None:
        assert det.masks.dtype == bool and det.masks.shape == (len(det), height, width)


def check_detector(detector: Detector, ontology: Ontology, frames: list[np.ndarray]) -> None:
    ontology = ontology.part("objects")
    assert isinstance(detector, Detector)
    assert detector.labels == ontology.label_names and all(isinstance(n, str) for n in detector.labels)
    assert detector.detect([]) == []
    cap = ontology.defaults.max_detections
    batch = detector.detect(frames)
    assert len(batch) == len(frames)
    for det, image in zip(batch, frames, strict=True):
        check_detections(det, image, detector.labels, ontology.thresholds, cap)
    assert sum(len(det) for det in batch) > 0, "the checks above must not be vacuous"
    for det, image in zip(batch, frames, strict=True):  # batching changes nothing
        (alone,) = detector.detect([image])
        assert alone.labels.tolist() == det.labels.tolist()
        np.testing.assert_allclose(alone.xyxy, det.xyxy, atol=0.5)
    everyone = np.full(len(ontology.labels), 0.35, np.float32)
    for det, image in zip(detector.detect(frames, threshold=0.35), frames, strict=True):
        check_detections(det, image, detector.labels, everyone, cap)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            detector.detect(frames[:1], threshold=bad)


# --------------------------------------------------------------------------- segmenters


def check_segmenter(segmenter: Segmenter, ontology: Ontology, frames: list[np.ndarray]) -> None:
    assert isinstance(segmenter, Segmenter)
    image = frames[0]
    height, width = image.shape[:2]
    embedding = segmenter.embed(image)
    assert isinstance(embedding, Embedding) and tuple(embedding.original_size) == (height, width)
    boxes = np.array([[10, 10, 100, 80], [0, 0, width, height], [50.5, 20, 60, 200]], np.float32)
    masks = segmenter.segment_boxes(embedding, boxes)
    assert masks.dtype == bool and masks.shape == (3, height, width)
    np.testing.assert_array_equal(segmenter.segment_boxes(segmenter.embed(image.copy()), boxes), masks)
    assert segmenter.segment_boxes(embedding, np.zeros((0, 4), np.float32)).shape == (0, height, width)
    prompts = [
        (np.array([[40, 30]]), np.array([[5, 5]]), None),
        (np.array([[40, 30]]), None, None),
        (np.zeros((0, 2)), None, np.array([10, 10, 100, 80])),
        (np.array([[40, 30], [60, 50]]), np.zeros((0, 2)), np.array([10, 10, 100, 80])),
    ]
    for positive, negative, box in prompts:
        mask = segmenter.segment_points(embedding, positive, negative, box)
        assert mask.dtype == bool and mask.shape == (height, width)
    with pytest.raises(ValueError):
        segmenter.segment_points(embedding, np.zeros((0, 2)))
    small = frames[2]
    assert segmenter.segment_boxes(segmenter.embed(small), boxes[:1]).shape == (1, *small.shape[:2])
    if isinstance(segmenter, EmbeddingExporter):
        blob = segmenter.export_embedding(embedding)
        assert isinstance(blob, np.ndarray) and blob.dtype == np.float32 and blob.size > 0
        assert segmenter.browser_decoder is None or isinstance(segmenter.browser_decoder, str)


# --------------------------------------------------------------------------- classifiers


def check_classifier(classifier: Classifier, ontology: Ontology, frames: list[np.ndarray]) -> None:
    ontology = ontology.part("tags")
    assert isinstance(classifier, Classifier)
    assert classifier.labels == ontology.label_names
    assert classifier.classify([]) == []
    results = classifier.classify(frames)
    assert len(results) == len(frames)
    for tags in results:
        assert isinstance(tags, Tags)
        assert np.all((tags.class_ids >= 0) & (tags.class_ids < len(classifier.labels)))
        assert tags.labels.tolist() == [classifier.labels[i] for i in tags.class_ids]
        assert np.all(tags.scores >= ontology.thresholds[tags.class_ids] - 1e-6)
        assert np.all(np.diff(tags.scores) <= 0), "tags come in descending score order"
    for tags in classifier.classify(frames, threshold=0.5):
        assert np.all(tags.scores >= 0.5 - 1e-6)
    with pytest.raises(ValueError, match="threshold"):
        classifier.classify(frames[:1], threshold=2.0)


CHECKS = {"detector": check_detector, "segmenter": check_segmenter, "classifier": check_classifier}


def test_every_kind_has_a_conformance_check():
    assert set(CHECKS) == set(KINDS)
    assert {b.kind for b in BACKENDS} <= set(KINDS)


@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
def test_backend_satisfies_its_protocol(backend, tiny_root, ontology, frames):
    CHECKS[backend.kind](build(backend, tiny_root, ontology), ontology, frames)


# Every detector with one segmenter and every segmenter with one detector: GroundedSam holds
# the two protocols only, so each backend needs to take part once (not every product of them).
_DETECTORS, _SEGMENTERS = registry.backends("detector"), registry.backends("segmenter")
PAIRS = [(d, _SEGMENTERS[0]) for d in _DETECTORS] + [(_DETECTORS[0], s) for s in _SEGMENTERS[1:]]


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{d.name}+{s.name}" for d, s in PAIRS])
def test_every_detector_with_every_segmenter_is_a_masking_detector(pair, tiny_root, ontology, frames):
    from serverless.models.grounded_sam import GroundedSam

    detector, segmenter = (build(backend, tiny_root, ontology) for backend in pair)
    grounded = GroundedSam(detector, segmenter)
    check_detector(grounded, ontology, frames[2:])
    for det, image in zip(grounded.detect(frames[2:]), frames[2:], strict=True):
        assert det.masks is not None and det.masks.shape == (len(det), *image.shape[:2])


@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
def test_a_backend_loads_once_and_binds_per_ontology(backend, tiny_root, ontology):
    first = build(backend, tiny_root, ontology)
    assert build(backend, tiny_root, ontology) is first
    if backend.kind != "segmenter":
        other = parse_ontology("labels: [{name: dog, type: %s}]\n" % ("tag" if backend.kind == "classifier" else "rectangle"))
        rebound = build(backend, tiny_root, other)
        assert rebound is not first and rebound.labels == ("dog",)


@pytest.mark.parametrize("value", [None, 0, 1, 0.5, np.float32(0.25), np.int64(1)])
def test_check_threshold_accepts_none_and_numbers_in_0_1(value):
    assert check_threshold(value) == (None if value is None else float(value))


@pytest.mark.parametrize("value", [True, "0.5", [0.5], -0.1, 1.5, float("nan"), float("inf"), 10**400, -(10**400)])
def test_check_threshold_refuses_anything_else_with_a_value_error(value):
    with pytest.raises(ValueError, match="threshold must lie in 0..1"):
        check_threshold(value)
