"""OWLv2: post-processing on seeded synthetic outputs, prompt limits, and the real tiny model
(written by `serverless.models.owlv2.write_tiny`, loaded through transformers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serverless.models import owlv2
from serverless.models.owlv2 import BACKEND, Owlv2, decode_owl, label_scores, owl_detections
from serverless.models.registry import ModelLoadError
from serverless.ontology import OntologyError, parse_ontology

ONTOLOGY = parse_ontology(
    """\
defaults: {threshold: 0.3, nms_iou: 0.5, max_detections: 100}
labels:
  - {name: person, prompts: [person, worker], threshold: 0.6}
  - {name: cat}
  - {name: cup, prompts: [cup, a photo of a cup], threshold: 0.2}
"""
)
# query (prompt) → label: person, worker → 0; cat → 1; cup, a photo of a cup → 2
QUERY_LABEL = torch.tensor([0, 0, 1, 2, 2])


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def owl(tiny_root) -> Owlv2:
    return Owlv2.load(BACKEND.tiny(tiny_root, 0), device="cpu")


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


# --------------------------------------------------------------------------- synthetic outputs


@pytest.mark.parametrize("seed", [0, 1])
def test_label_scores_take_the_best_prompt_of_each_label(seed):
    scores = torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 7, 5)).astype(np.float32))
    out = label_scores(scores, QUERY_LABEL, 4)
    assert out.shape == (2, 7, 4)
    expected = np.stack(
        [scores[..., [0, 1]].amax(-1).numpy(), scores[..., 2].numpy(), scores[..., [3, 4]].amax(-1).numpy()], axis=-1
    )
    np.testing.assert_array_equal(out[..., :3].numpy(), expected)
    assert torch.isneginf(out[..., 3]).all(), "a label without prompts never scores"


def test_label_scores_reduce_any_axis_in_any_prompt_order():
    scores = torch.tensor([[0.1, 0.9], [0.7, 0.2], [0.3, 0.3], [0.5, 0.4]])  # 4 prompts (dim 0), 2 boxes
    got = label_scores(scores, torch.tensor([2, 0, 2, 0]), 4, dim=0)
    assert got.shape == (4, 2)
    np.testing.assert_allclose(got[0].numpy(), [0.7, 0.4])
    np.testing.assert_allclose(got[2].numpy(), [0.3, 0.9])
    assert torch.isneginf(got[[1, 3]]).all(), "a label without prompts never wins"
    batch = torch.from_numpy(np.random.default_rng(4).normal(size=(3, 5, 11)).astype(np.float32))  # (B, P, A)
    along = label_scores(batch, QUERY_LABEL, 3, dim=1)
    np.testing.assert_array_equal(along.numpy(), label_scores(batch.transpose(1, 2), QUERY_LABEL, 3).transpose(1, 2))


def _square_outputs(boxes: list[list[float]], label_probs: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(label_probs, np.float32), np.asarray(boxes, np.float32)


def test_boxes_are_scaled_by_the_padded_square_and_clipped_to_a_non_square_image():
    # a 200x100 image is padded at the bottom to 200x200: boxes are relative to that square
    probs, boxes = _square_outputs(
        [
            [0.25, 0.25, 0.1, 0.1],  # inside: (40, 40, 60, 60)
            [0.50, 0.45, 0.2, 0.2],  # crosses the bottom edge into the padding: y2 clipped to 100
            [0.50, 0.75, 0.2, 0.2],  # wholly in the padding: dropped
            [0.02, 0.10, 0.1, 0.1],  # crosses the left edge: x1 clipped to 0
        ],
        [[0.9, 0.0, 0.0]] * 4,
    )
    xyxy, scores, labels = decode_owl(probs, boxes, image_size=(200, 100), thresholds=np.full(3, 0.5, np.float32))
    np.testing.assert_allclose(xyxy, [[40, 40, 60, 60], [80, 70, 120, 100], [0, 10, 14, 30]], atol=1e-4)
    assert labels.tolist() == [0, 0, 0] and scores.dtype == np.float32 and xyxy.dtype == np.float32

    # transformers' own OWLv2 post-processing agrees on the scaling (before our clipping)
    from transformers import Owlv2ImageProcessor
    from transformers.models.owlv2.modeling_owlv2 import Owlv2ObjectDetectionOutput

    outputs = Owlv2ObjectDetectionOutput(
        logits=torch.logit(torch.from_numpy(probs))[None].clamp(-20, 20), pred_boxes=torch.from_numpy(boxes)[None]
    )
    (theirs,) = Owlv2ImageProcessor().post_process_object_detection(outputs, threshold=0.5, target_sizes=[(100, 200)])
    np.testing.assert_allclose(theirs["boxes"][0].numpy(), xyxy[0], atol=1e-3)


def test_a_portrait_image_is_padded_on_the_right():
    probs, boxes = _square_outputs([[0.25, 0.5, 0.1, 0.1], [0.75, 0.5, 0.1, 0.1]], [[0.9, 0, 0], [0.9, 0, 0]])
    xyxy, _, _ = decode_owl(probs, boxes, image_size=(100, 200), thresholds=np.zeros(3, np.float32))
    np.testing.assert_allclose(xyxy, [[40, 90, 60, 110]], atol=1e-4)  # the second box is in the padding


def test_each_box_takes_its_best_label_and_that_labels_threshold():
    thresholds = np.array([0.6, 0.3, 0.2], np.float32)
    probs, boxes = _square_outputs(
        [[0.5, 0.5, 0.2, 0.2]] * 4,
        [
            [0.55, 0.10, 0.00],  # person at 0.55 < 0.6: dropped
            [0.10, 0.35, 0.00],  # cat at 0.35 >= 0.3: kept
            [0.50, 0.00, 0.25],  # best is person (0.5 < 0.6): dropped, not handed to cup
            [0.00, 0.00, 0.21],  # cup at 0.21 >= 0.2: kept
        ],
    )
    _, scores, labels = decode_owl(probs, boxes, image_size=(100, 100), thresholds=thresholds)
    assert labels.tolist() == [1, 2]
    np.testing.assert_allclose(scores, [0.35, 0.21])


def test_prompts_map_to_labels_and_thresholds_apply_end_to_end():
    """Synthetic per-prompt logits → label scores → detections: a box found by 'worker' is a
    person, by 'a photo of a cup' a cup; each label's threshold, or the one override."""
    logits = torch.full((4, 5), _logit(0.01))
    logits[0, 1] = _logit(0.7)  # worker → person (0.7 >= 0.6)
    logits[1, 4] = _logit(0.25)  # a photo of a cup → cup (0.25 >= 0.2)
    logits[2, 0] = _logit(0.5)  # person at 0.5 < 0.6
    logits[3, 2] = _logit(0.4)  # cat (0.4 >= 0.3)
    probs = torch.sigmoid(label_scores(logits, QUERY_LABEL, 3)).numpy()
    boxes = np.array([[0.1, 0.1, 0.1, 0.1], [0.3, 0.3, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.7, 0.7, 0.1, 0.1]], np.float32)
    found = owl_detections(probs, boxes, ONTOLOGY, image_size=(100, 100))
    assert found.labels.tolist() == ["person", "cat", "cup"]
    assert found.class_ids.tolist() == [0, 1, 2]
    np.testing.assert_allclose(found.scores, [0.7, 0.4, 0.25], rtol=1e-5)
    override = owl_detections(probs, boxes, ONTOLOGY, image_size=(100, 100), threshold=0.3)
    assert override.labels.tolist() == ["person", "person", "cat"]  # 0.5 now passes, 0.25 no longer does
    assert owl_detections(probs, boxes, ONTOLOGY, image_size=(100, 100), threshold=1.0).labels.tolist() == []


def test_nms_is_class_wise_unless_agnostic_and_max_detections_keeps_the_best():
    probs = np.zeros((5, 3), np.float32)
    probs[[0, 1, 2, 3, 4], [1, 1, 2, 1, 1]] = [0.9, 0.8, 0.7, 0.6, 0.5]
    boxes = np.array(
        [
            [0.20, 0.20, 0.2, 0.2],
            [0.21, 0.21, 0.2, 0.2],  # overlaps box 0, same label: suppressed
            [0.20, 0.20, 0.2, 0.2],  # same place, another label: kept class-wise
            [0.70, 0.70, 0.1, 0.1],
            [0.40, 0.80, 0.1, 0.1],
        ],
        np.float32,
    )
    found = owl_detections(probs, boxes, ONTOLOGY, image_size=(100, 100), threshold=0.1)
    np.testing.assert_allclose(found.scores, [0.9, 0.7, 0.6, 0.5])
    assert found.labels.tolist() == ["cat", "cup", "cat", "cat"]
    agnostic = parse_ontology(
        "defaults: {class_agnostic_nms: true, max_detections: 2}\nlabels: [{name: person}, {name: cat}, {name: cup}]\n"
    )
    found = owl_detections(probs, boxes, agnostic, image_size=(100, 100), threshold=0.1)
    np.testing.assert_allclose(found.scores, [0.9, 0.6])  # box 2 goes with box 0; cut to 2


def test_no_boxes_give_empty_detections():
    found = owl_detections(np.zeros((0, 3), np.float32), np.zeros((0, 4), np.float32), ONTOLOGY, image_size=(10, 10))
    assert len(found) == 0 and found.xyxy.shape == (0, 4)


# --------------------------------------------------------------------------- the tiny model


def test_a_prompt_longer_than_the_text_encoder_is_refused_when_binding(owl):
    # the tiny tokenizer spells unknown words letter by letter: 14 letters + start + end = 16
    owl.bind(parse_ontology("labels: [{name: fits, prompts: [abcdefghijklmn]}]\n"))
    long = parse_ontology("labels:\n  - {name: ok}\n  - {name: wordy, prompts: [cat, abcdefghijklmno]}\n")
    with pytest.raises(OntologyError) as err:
        owl.bind(long)
    message = str(err.value)
    assert "\n" not in message
    assert "'wordy' (labels[1])" in message and "'abcdefghijklmno'" in message and "17 tokens" in message
    with pytest.raises(OntologyError, match="abcdefghijklmno"):
        owl.detect([np.zeros((8, 8, 3), np.uint8)], long)


def test_staged_forward_equals_the_models_own_forward(owl):
    image = np.random.default_rng(1).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    probs, boxes = owl.forward(owl.preprocess([image]), owl.encode_ontology(ONTOLOGY))
    prompts = [p for label in ONTOLOGY.labels for p in label.prompts]
    inputs = owl.processor(text=[prompts], images=[image], return_tensors="pt")
    with torch.inference_mode():
        outputs = owl.model(**inputs)
    expected = label_scores(torch.sigmoid(outputs.logits[0]), QUERY_LABEL, 3).numpy()
    np.testing.assert_allclose(probs[0], expected, atol=1e-5)
    np.testing.assert_allclose(boxes[0], outputs.pred_boxes[0].numpy(), atol=1e-5)


def test_text_and_score_batches_do_not_change_results(owl, monkeypatch):
    image = np.random.default_rng(2).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    pixels = owl.preprocess([image])
    whole = owl.forward(pixels, owl.encode_ontology(ONTOLOGY))
    monkeypatch.setattr(owlv2, "TEXT_BATCH", 2)
    monkeypatch.setattr(owlv2, "SCORE_BATCH", 2)
    rebatched = ONTOLOGY.with_thresholds({"cat": 0.31})  # same prompts, encoded afresh
    parts = owl.forward(pixels, owl.encode_ontology(rebatched))
    np.testing.assert_allclose(parts[0], whole[0], atol=1e-5)
    np.testing.assert_array_equal(parts[1], whole[1])


def test_results_do_not_depend_on_batching(owl):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in [(48, 80, 3), (120, 40, 3), (3, 2, 3), (64, 64, 3)]]
    batch = owl.detect(images, ONTOLOGY, threshold=0.0)
    assert sum(len(d) for d in batch) > 0
    for det, image in zip(batch, images, strict=True):
        (alone,) = owl.detect([image], ONTOLOGY, threshold=0.0)
        assert alone.labels.tolist() == det.labels.tolist()
        np.testing.assert_allclose(alone.scores, det.scores, atol=1e-5)
        np.testing.assert_allclose(alone.xyxy, det.xyxy, atol=1e-3)
        height, width = image.shape[:2]
        assert np.all(det.xyxy[:, [0, 2]] <= width) and np.all(det.xyxy[:, [1, 3]] <= height)
        assert np.all(det.xyxy >= 0) and np.all(np.diff(det.scores) <= 0)


def test_the_backend_builds_a_detector_bound_to_the_ontology(owl, tiny_root):
    weights = BACKEND.tiny(tiny_root, 0)  # the fixture's model, reused
    assert weights == owl.model_id == str(tiny_root / "owlv2")
    detector = BACKEND.build(weights, BACKEND.locate(weights, False), ONTOLOGY, "cpu")
    assert detector.model is owl and detector.labels == ("person", "cat", "cup")
    assert BACKEND.on_disk(weights) == weights


# --------------------------------------------------------------------------- weights


def test_the_default_and_its_variable():
    assert BACKEND.parse("", {}) == "google/owlv2-base-patch16-ensemble"
    assert BACKEND.parse("", {"AUTOLABEL_OWLV2_MODEL": "/m/owl"}) == "/m/owl"
    assert BACKEND.parse(" /x ", {"AUTOLABEL_OWLV2_MODEL": "/m/owl"}) == "/x"


def test_missing_weights_are_a_one_line_model_load_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    failures = [
        (lambda: BACKEND.locate(str(tmp_path / "nowhere"), True), "directory does not exist"),
        (lambda: BACKEND.locate(BACKEND.parse("", {}), False), "AUTOLABEL_OWLV2_MODEL"),
        (lambda: Owlv2.load(str(tmp_path), device="cpu"), "cannot load OWLv2"),
    ]
    other = tmp_path / "clip"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "clip"}')
    failures.append((lambda: Owlv2.load(str(other), device="cpu"), "holds a 'clip' model, not 'owlv2'"))
    for call, words in failures:
        with pytest.raises(ModelLoadError) as err:
            call()
        assert words in str(err.value) and "\n" not in str(err.value)
