"""SAM 3: post-processing on seeded synthetic model outputs, and the tiny random model end to end
through the real loaders (`Sam3Model` / `Sam3Processor` ``from_pretrained``)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from serverless.models import registry
from serverless.models.sam3 import BACKEND, PROMPT_BATCH, Sam3, decode_instances
from serverless.ontology import Defaults, OntologyError, parse_ontology


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def outputs(scores, boxes, masks=None, presence=None):
    """Sam3Model outputs for P prompts x Q queries on one frame: ``scores`` (P, Q) query
    probabilities, ``boxes`` (P, Q, 4) normalised xyxy, ``masks`` (P, Q, h, w) mask logits,
    ``presence`` (P,) presence probabilities (default: certain)."""
    from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput

    scores = np.asarray(scores, np.float64)
    n_prompts, n_queries = scores.shape
    if masks is None:
        masks = np.random.default_rng(0).normal(size=(n_prompts, n_queries, 8, 8))
    # sigmoid(40) is 1.0 in float32: "certain" leaves the query scores exactly as given
    presence_logits = np.full(n_prompts, 40.0) if presence is None else np.array([logit(p) for p in presence])
    return Sam3ImageSegmentationOutput(
        pred_logits=torch.tensor(np.log(scores / (1 - scores)), dtype=torch.float32),
        pred_boxes=torch.tensor(np.asarray(boxes), dtype=torch.float32),
        pred_masks=torch.tensor(np.asarray(masks), dtype=torch.float32),
        presence_logits=torch.tensor(presence_logits[:, None], dtype=torch.float32),
    )


@pytest.fixture(scope="module")
def image_processor():
    from transformers import Sam3ImageProcessor

    return Sam3ImageProcessor()


def decode(image_processor, batches, *, frame=(40, 60), thresholds=(0.5, 0.2), names=("person", "cat"), **defaults):
    return decode_instances(
        image_processor,
        batches,
        frame_size=frame,
        thresholds=np.asarray(thresholds, np.float32),
        names=names,
        defaults=Defaults(**defaults),
    )


def apart(n_prompts: int, n_queries: int) -> np.ndarray:
    """Boxes that never overlap: query q of prompt p sits in its own cell of a grid."""
    boxes = np.zeros((n_prompts, n_queries, 4))
    for p in range(n_prompts):
        for q in range(n_queries):
            x, y = q / n_queries, p / n_prompts
            boxes[p, q] = [x, y, x + 0.5 / n_queries, y + 0.5 / n_prompts]
    return boxes


# --------------------------------------------------------------------------- post-processing


def test_each_prompt_counts_for_its_label_at_that_labels_threshold(image_processor):
    # prompts: person, worker (label 0, threshold 0.5), cat (label 1, threshold 0.2)
    scores = [[0.6, 0.45, 0.01], [0.5, 0.3, 0.01], [0.25, 0.19, 0.9]]
    det = decode(image_processor, [(outputs(scores, apart(3, 3)), np.array([0, 0, 1]))])
    assert det.labels.tolist() == ["cat", "person", "person", "cat"]
    assert det.class_ids.tolist() == [1, 0, 0, 1]
    np.testing.assert_allclose(det.scores, [0.9, 0.6, 0.5, 0.25], atol=1e-5)  # 0.5 is kept: at or above
    assert np.all(np.diff(det.scores) <= 0)


def test_the_presence_score_multiplies_every_query_score(image_processor):
    scores = [[0.8, 0.6], [0.8, 0.6]]
    det = decode(image_processor, [(outputs(scores, apart(2, 2), presence=[0.5, 1 - 1e-9]), np.array([1, 0]))])
    # cat prompt: 0.4 and 0.3 (>= 0.2); person prompt: 0.8 and 0.6 (>= 0.5)
    np.testing.assert_allclose(det.scores, [0.8, 0.6, 0.4, 0.3], atol=1e-5)
    assert det.labels.tolist() == ["person", "person", "cat", "cat"]


def test_one_threshold_for_every_label_replaces_their_own(image_processor):
    scores = [[0.6, 0.45], [0.25, 0.15]]
    batch = [(outputs(scores, apart(2, 2)), np.array([0, 1]))]
    det = decode(image_processor, batch, thresholds=(0.1, 0.1))
    np.testing.assert_allclose(sorted(det.scores), [0.15, 0.25, 0.45, 0.6], atol=1e-5)
    assert len(decode(image_processor, batch, thresholds=(1.0, 1.0))) == 0


def test_boxes_and_masks_are_scaled_to_a_non_square_frame_and_clipped(image_processor):
    boxes = [[[0.25, 0.5, 0.75, 1.0], [-0.1, 0.2, 1.2, 0.5]]]
    masks = np.full((1, 2, 8, 8), -0.1)
    masks[0, 0, :, :4] = 0.1  # sigmoid 0.525: in; -0.1 (0.475): out, at the processor's 0.5
    masks[0, 1, 4:, :] = 0.1
    det = decode(image_processor, [(outputs([[0.9, 0.8]], boxes, masks), np.array([1]))], frame=(30, 60))
    np.testing.assert_allclose(det.xyxy, [[15, 15, 45, 30], [0, 6, 60, 15]], atol=1e-4)
    assert det.masks.dtype == bool and det.masks.shape == (2, 30, 60)
    expected = np.zeros((2, 30, 60), bool)
    expected[0, :, :30] = True
    expected[1, 15:, :] = True
    np.testing.assert_array_equal(det.masks, expected)


def test_a_labels_prompts_merge_by_nms_and_labels_stay_apart(image_processor):
    same = [0.1, 0.1, 0.6, 0.6]
    boxes = np.array([[same, [0.7, 0.7, 0.9, 0.9]], [same, [0.7, 0.7, 0.9, 0.9]], [same, [0, 0, 0.05, 0.05]]])
    scores = [[0.9, 0.01], [0.7, 0.01], [0.6, 0.01]]  # person, worker (both person), cat
    batch = [(outputs(scores, boxes), np.array([0, 0, 1]))]
    det = decode(image_processor, batch)
    assert det.labels.tolist() == ["person", "cat"]  # worker's box merged into person's
    np.testing.assert_allclose(det.scores, [0.9, 0.6], atol=1e-5)
    agnostic = decode(image_processor, batch, class_agnostic_nms=True)
    assert agnostic.labels.tolist() == ["person"]


def test_at_most_max_detections_the_best_first_each_with_its_own_mask(image_processor):
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.55, 0.95, size=(2, 5))
    boxes = apart(2, 5)
    masks = np.full((2, 5, 20, 20), -5.0)
    for p in range(2):
        for q in range(5):  # each query's mask fills its own box
            x1, y1, x2, y2 = (boxes[p, q] * 20).round().astype(int)
            masks[p, q, y1:y2, x1:x2] = 5.0
    batches = [
        (outputs(scores[:1], boxes[:1], masks[:1]), np.array([0])),
        (outputs(scores[1:], boxes[1:], masks[1:]), np.array([1])),
    ]
    det = decode(image_processor, iter(batches), frame=(200, 200), max_detections=4)
    assert len(det) == 4
    np.testing.assert_allclose(det.scores, np.sort(scores.ravel())[::-1][:4], atol=1e-5)
    for box, mask in zip(det.xyxy, det.masks, strict=True):
        ys, xs = np.nonzero(mask)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=6)
    one_batch = [(outputs(scores, boxes, masks), np.array([0, 1]))]
    together = decode(image_processor, one_batch, frame=(200, 200), max_detections=4)
    np.testing.assert_array_equal(together.masks, det.masks)
    np.testing.assert_allclose(together.xyxy, det.xyxy)


def test_nothing_above_threshold_is_an_empty_result_with_frame_sized_masks(image_processor):
    det = decode(image_processor, [(outputs([[0.1, 0.05]], apart(1, 2)), np.array([0]))], frame=(7, 9))
    assert len(det) == 0 and det.masks.shape == (0, 7, 9)


# --------------------------------------------------------------------------- the tiny model

ONTOLOGY = """\
defaults: {threshold: 0.05, max_detections: 5}
labels:
  - {name: person, prompts: [person, worker], threshold: 0.99}
  - {name: cat}
  - {name: cup, prompts: [cup, coffee cup], type: mask}
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return BACKEND.tiny(tmp_path_factory.mktemp("sam3-tiny"), 0)


@pytest.fixture(scope="module")
def sam3(tiny_dir):
    return Sam3.load(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)]


@contextmanager
def counting(*modules):
    """How many times each module ran inside the block."""
    calls = [0] * len(modules)
    def counter(i):
        return lambda *_: calls.__setitem__(i, calls[i] + 1)

    handles = [module.register_forward_hook(counter(i)) for i, module in enumerate(modules)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def test_the_tiny_model_loads_through_the_registry_and_gives_frame_sized_masks(tiny_dir, frames):
    from serverless.models.tiny import is_tiny

    assert is_tiny(tiny_dir) and BACKEND.masks
    spec = registry.parse_spec(f"sam3:{tiny_dir}", "detector", {})
    ontology = parse_ontology(ONTOLOGY)
    detector = registry.load_detector(spec, ontology, device="cpu", source=registry.locate(spec, download=False))
    assert detector.labels == ("person", "cat", "cup")
    batch = detector.detect(frames)
    for det, frame in zip(batch, frames, strict=True):
        height, width = frame.shape[:2]
        assert 0 < len(det) <= 5
        assert det.masks is not None and det.masks.dtype == bool and det.masks.shape == (len(det), height, width)
        assert det.masks.any(axis=(1, 2)).any()
        assert np.all(det.xyxy >= 0) and np.all(det.xyxy[:, [0, 2]] <= width) and np.all(det.xyxy[:, [1, 3]] <= height)
        assert "person" not in det.labels.tolist()  # its own threshold, 0.99
        assert np.all(np.diff(det.scores) <= 0)
    for det, frame in zip(batch, frames, strict=True):  # batching changes nothing
        (alone,) = detector.detect([frame])
        np.testing.assert_array_equal(alone.xyxy, det.xyxy)
        np.testing.assert_array_equal(alone.masks, det.masks)
    overridden = detector.detect(frames[:1], threshold=0.0)[0]
    assert "person" in overridden.labels.tolist()
    assert len(detector.detect(frames[:1], threshold=1.0)[0]) == 0


def test_vision_features_once_per_frame_and_text_once_per_ontology(sam3, frames, monkeypatch):
    prompts = [f"thing {i}" for i in range(PROMPT_BATCH + 1)]  # two batches of prompts
    ontology = parse_ontology(
        "labels:\n" + "".join(f"  - {{name: label-{i}, prompts: ['{p}']}}\n" for i, p in enumerate(prompts))
    )
    from serverless.models import sam3 as module

    monkeypatch.setattr(module, "CPU_VISION_BATCH", module.VISION_BATCH)  # a GPU's frames per pass, here
    model = sam3.model
    with counting(model.vision_encoder, model.text_encoder, model.detr_decoder) as calls:
        detector = sam3.bind(ontology)
        assert sam3.bind(ontology).labels == detector.labels
        assert calls == [0, 1, 0]  # the prompts' text, once for the ontology
        detector.detect(frames, threshold=0.0)
    vision, text, decoder = calls
    assert vision == 1  # the frames together, once for all the prompts (VISION_BATCH of them at most)
    assert decoder == 2 * len(frames)  # two batches of prompts per frame
    assert text == 1


def test_the_vision_encoder_takes_at_most_its_frames_per_pass(sam3, frames, monkeypatch):
    from serverless.models import sam3 as module

    detector = sam3.bind(parse_ontology(ONTOLOGY))
    monkeypatch.setattr(module, "CPU_VISION_BATCH", module.VISION_BATCH)
    together = detector.detect(frames, threshold=0.0)
    monkeypatch.setattr(module, "CPU_VISION_BATCH", 1)  # as on a CPU by default
    with counting(sam3.model.vision_encoder) as calls:
        apart = detector.detect(frames, threshold=0.0)
    assert calls == [len(frames)]
    for a, b in zip(together, apart, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        assert np.mean(a.masks != b.masks) < 1e-3


def test_a_prompt_longer_than_the_text_encoder_reads_is_refused_when_bound(sam3):
    long = "a " + "very " * 8 + "long prompt about a cup"
    ontology = parse_ontology(f"labels:\n  - {{name: cat}}\n  - {{name: cup, prompts: [cup, '{long}']}}\n")
    assert sam3.count_tokens(long) > sam3.max_prompt_tokens == 32
    with pytest.raises(OntologyError, match=r"label 'cup' \(labels\[1\]\): prompt 'a very .*long prompt about a cup'"):
        sam3.bind(ontology)


def test_specs_default_to_the_environment_then_facebook_sam3():
    assert registry.parse_spec("sam3", "detector", {}).weights == "facebook/sam3"
    assert registry.parse_spec("sam3", "detector", {"AUTOLABEL_SAM3_MODEL": "/m/sam3"}).weights == "/m/sam3"
    assert registry.parse_spec("sam3:/w/s3", "detector", {"AUTOLABEL_SAM3_MODEL": "/m"}).weights == "/w/s3"


def test_missing_weights_are_a_one_line_model_load_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = [
        lambda: registry.locate(registry.parse_spec(f"sam3:{tmp_path / 'absent'}", "detector", {})),
        lambda: registry.locate(registry.parse_spec("sam3:nobody/no-sam3-here", "detector", {}), download=False),
        lambda: Sam3.load(str(tmp_path), device="cpu"),  # a directory without a model
    ]
    for case in cases:
        with pytest.raises(registry.ModelLoadError) as caught:
            case()
        message = str(caught.value)
        assert "SAM 3" in message and "\n" not in message
    assert "AUTOLABEL_SAM3_MODEL" in str(pytest.raises(registry.ModelLoadError, cases[1]).value)


def test_the_tiny_weights_hold_no_denormal_floats(sam3):
    """Denormals make random-weight models orders of magnitude slower on CPU (ENVIRONMENT.md)."""
    smallest = torch.finfo(torch.float32).tiny
    for name, value in sam3.model.state_dict().items():
        if value.is_floating_point():
            assert not torch.any((value != 0) & (value.abs() < smallest)), name
