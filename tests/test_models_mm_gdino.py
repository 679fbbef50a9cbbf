"""MM-Grounding-DINO: Grounding DINO's code path (`GroundingDino` loaded with
`MM_GROUNDING_DINO`) on seeded synthetic outputs and on the real tiny model written by
`serverless.models.mm_grounding_dino.write_tiny`."""

from __future__ import annotations

import numpy as np
import pytest

from serverless.models.grounding_dino import GroundingDino, grounded_detections
from serverless.models.mm_grounding_dino import BACKEND, MM_GROUNDING_DINO
from serverless.models.registry import ModelLoadError, loaded_keys
from serverless.ontology import parse_ontology

ONTOLOGY = parse_ontology(
    """\
defaults: {threshold: 0.3, text_threshold: 0.25, nms_iou: 0.5, max_detections: 100}
labels:
  - {name: person, prompts: [person, worker], threshold: 0.6}
  - {name: cat}
  - {name: hard-hat, prompts: [hard hat], threshold: 0.4}
"""
)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def mm(tiny_root) -> GroundingDino:
    return GroundingDino.load(BACKEND.tiny(tiny_root, 0), device="cpu", architecture=MM_GROUNDING_DINO)


@pytest.fixture(scope="module")
def chunks(mm):
    return mm.encode_ontology(ONTOLOGY)


def _outputs(chunks, seed: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    (chunk,) = chunks
    probs = rng.uniform(0, 0.05, size=(queries, len(chunk.token_phrase))).astype(np.float32)
    boxes = np.column_stack([np.linspace(0.1, 0.9, queries), np.full(queries, 0.5), np.full((queries, 2), 0.05)])
    return probs, boxes.astype(np.float32)


def _token(chunks, phrase: int, nth: int = 0) -> int:
    """The index of the ``nth`` token of phrase ``phrase`` in the (only) caption."""
    return int(np.flatnonzero(chunks[0].token_phrase == phrase)[nth])


# --------------------------------------------------------------------------- synthetic outputs


def test_the_model_reads_bert_ids_that_the_tiny_tokenizer_keeps(mm):
    from transformers.models.mm_grounding_dino.modeling_mm_grounding_dino import SPECIAL_TOKENS

    assert mm.tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"]) == SPECIAL_TOKENS
    assert type(mm.model).__name__ == "MMGroundingDinoForObjectDetection"


def test_the_caption_maps_every_prompt_to_its_label(chunks):
    (chunk,) = chunks
    assert chunk.chunk.text == "person . worker . cat . hard hat ."
    assert chunk.chunk.label_ids == (0, 0, 1, 2)
    assert sorted(set(chunk.token_phrase.tolist())) == [-1, 0, 1, 2, 3]
    assert len(np.flatnonzero(chunk.token_phrase == 3)) == 2, "hard hat: two tokens, one phrase"


@pytest.mark.parametrize("seed", [0, 1])
def test_prompts_map_to_labels_with_per_label_thresholds_and_the_override(chunks, seed):
    probs, boxes = _outputs(chunks, seed, 6)
    probs[0, _token(chunks, 1)] = 0.8  # worker → person (0.8 >= 0.6)
    probs[1, _token(chunks, 3, 1)] = 0.5  # "hat" of hard hat → hard-hat (0.5 >= 0.4)
    probs[2, _token(chunks, 2)] = 0.35  # cat (0.35 >= 0.3)
    probs[3, _token(chunks, 0)] = 0.55  # person at 0.55 < 0.6: dropped
    probs[4, 0] = 0.99  # [CLS] is no phrase
    found = grounded_detections([(probs, boxes)], chunks, ONTOLOGY, image_size=(200, 100))
    assert found.labels.tolist() == ["person", "hard-hat", "cat"]
    assert found.class_ids.tolist() == [0, 2, 1]
    np.testing.assert_allclose(found.scores, [0.8, 0.5, 0.35])
    override = grounded_detections([(probs, boxes)], chunks, ONTOLOGY, image_size=(200, 100), threshold=0.45)
    assert override.labels.tolist() == ["person", "person", "hard-hat"]  # 0.55 passes, 0.35 does not


def test_boxes_are_relative_to_the_image_and_clipped(chunks):
    probs, boxes = _outputs(chunks, 0, 3)
    probs[:, _token(chunks, 2)] = 0.9
    boxes[:] = [[0.5, 0.5, 0.2, 0.2], [0.95, 0.5, 0.2, 0.2], [0.5, 0.02, 0.1, 0.1]]
    found = grounded_detections([(probs, boxes)], chunks, ONTOLOGY, image_size=(200, 100))
    order = np.argsort(found.xyxy[:, 0])
    np.testing.assert_allclose(found.xyxy[order], [[80, 40, 120, 60], [90, 0, 110, 7], [170, 40, 200, 60]], atol=1e-4)


def test_nms_is_class_wise_unless_agnostic_and_max_detections_keeps_the_best(chunks):
    probs, boxes = _outputs(chunks, 2, 5)
    cat, hat = _token(chunks, 2), _token(chunks, 3)
    for query, token, score in [(0, cat, 0.9), (1, cat, 0.8), (2, hat, 0.7), (3, cat, 0.6), (4, cat, 0.5)]:
        probs[query, token] = score
    boxes[:] = [[0.2, 0.2, 0.2, 0.2], [0.21, 0.21, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2], [0.7, 0.7, 0.1, 0.1], [0.4, 0.8, 0.1, 0.1]]
    found = grounded_detections([(probs, boxes)], chunks, ONTOLOGY, image_size=(100, 100), threshold=0.1)
    np.testing.assert_allclose(found.scores, [0.9, 0.7, 0.6, 0.5])
    assert found.labels.tolist() == ["cat", "hard-hat", "cat", "cat"]
    agnostic = parse_ontology(
        "defaults: {class_agnostic_nms: true, max_detections: 2}\n"
        "labels: [{name: person, prompts: [person, worker]}, {name: cat}, {name: hard-hat, prompts: [hard hat]}]\n"
    )
    found = grounded_detections([(probs, boxes)], chunks, agnostic, image_size=(100, 100), threshold=0.1)
    np.testing.assert_allclose(found.scores, [0.9, 0.6])


# --------------------------------------------------------------------------- the tiny model


def test_results_do_not_depend_on_batching(mm):
    ontology = parse_ontology("defaults: {threshold: 0.05, text_threshold: 0.0}\nlabels: [{name: cat}, {name: cup}]\n")
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in [(40, 60, 3), (70, 30, 3), (40, 60, 3)]]
    batch = mm.detect(images, ontology)
    assert sum(len(d) for d in batch) > 0
    for det, image in zip(batch, images, strict=True):
        (alone,) = mm.detect([image], ontology)
        assert alone.labels.tolist() == det.labels.tolist()
        np.testing.assert_allclose(alone.xyxy, det.xyxy, atol=1e-3)
        assert np.all(det.xyxy[:, 2] <= image.shape[1]) and np.all(det.xyxy[:, 3] <= image.shape[0])


def test_the_backend_builds_a_detector_bound_to_the_ontology(mm, tiny_root):
    weights = BACKEND.tiny(tiny_root, 0)  # the fixture's model, reused
    assert weights == mm.model_id == str(tiny_root / "mm-grounding-dino")
    detector = BACKEND.build(weights, BACKEND.locate(weights, False), ONTOLOGY, "cpu")
    assert detector.model is mm and detector.labels == ("person", "cat", "hard-hat")
    assert ("mm-grounding-dino", weights, "cpu") in loaded_keys()


# --------------------------------------------------------------------------- weights


def test_the_default_and_its_variable():
    assert BACKEND.parse("", {}) == "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"
    assert BACKEND.parse("", {"AUTOLABEL_MM_GDINO_MODEL": "/m/mm"}) == "/m/mm"
    assert BACKEND.parse("/x", {"AUTOLABEL_GDINO_MODEL": "/m/gdino"}) == "/x"


def test_missing_or_wrong_weights_are_a_one_line_model_load_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    gdino = tmp_path / "gdino"
    gdino.mkdir()
    (gdino / "config.json").write_text('{"model_type": "grounding-dino"}')
    failures = [
        (lambda: BACKEND.locate(str(tmp_path / "nowhere"), True), "directory does not exist"),
        (lambda: BACKEND.locate(BACKEND.parse("", {}), False), "AUTOLABEL_MM_GDINO_MODEL"),
        (lambda: GroundingDino.load(str(tmp_path), device="cpu", architecture=MM_GROUNDING_DINO),
         "cannot load MM-Grounding-DINO"),
        (lambda: GroundingDino.load(str(gdino), device="cpu", architecture=MM_GROUNDING_DINO),
         "holds a 'grounding-dino' model, not 'mm-grounding-dino'"),
    ]
    for call, words in failures:
        with pytest.raises(ModelLoadError) as err:
            call()
        assert words in str(err.value) and "\n" not in str(err.value)
