"""Grounding DINO post-processing on seeded synthetic outputs (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from serverless.models.grounding_dino import decode_grounding, token_phrase_index

# caption "person . hard hat ." with BERT-like offsets: [CLS] person . hard hat . [SEP]
CAPTION_OFFSETS = [(0, 0), (0, 6), (7, 8), (9, 13), (14, 17), (18, 19), (0, 0)]
SPANS = [(0, 6), (9, 17)]


def test_token_phrase_index_maps_words_and_skips_separators():
    assert token_phrase_index(CAPTION_OFFSETS, SPANS).tolist() == [-1, 0, -1, 1, 1, -1, -1]


def test_token_phrase_index_handles_word_pieces():
    # "ladder" split into "lad" "##der"
    offsets = [(0, 0), (0, 3), (3, 6), (7, 8), (0, 0)]
    assert token_phrase_index(offsets, [(0, 6)]).tolist() == [-1, 0, 0, -1, -1]


def _outputs(seed: int, queries: int = 12):
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 0.2, size=(queries, len(CAPTION_OFFSETS))).astype(np.float32)
    boxes = np.column_stack(
        [rng.uniform(0.2, 0.8, queries), rng.uniform(0.2, 0.8, queries), rng.uniform(0.05, 0.3, queries),
         rng.uniform(0.05, 0.3, queries)]
    ).astype(np.float32)
    return probs, boxes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_picks_best_phrase_and_thresholds(seed):
    probs, boxes = _outputs(seed)
    probs[3, 1] = 0.9  # query 3 → "person"
    probs[5, 4] = 0.7  # query 5 → "hard hat" (second word)
    probs[5, 1] = 0.4
    probs[7, 0] = 0.99  # [CLS] is not a phrase: ignored
    probs[8, 2] = 0.99  # separator: ignored
    xyxy, scores, phrase = decode_grounding(
        probs, boxes, token_phrase_index(CAPTION_OFFSETS, SPANS), image_size=(640, 480),
        box_threshold=0.35, text_threshold=0.25,
    )
    assert phrase.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [0.9, 0.7])
    cx, cy, w, h = boxes[3]
    np.testing.assert_allclose(xyxy[0], [(cx - w / 2) * 640, (cy - h / 2) * 480, (cx + w / 2) * 640, (cy + h / 2) * 480],
                               rtol=1e-5)


def test_decode_clips_to_image_and_text_threshold():
    probs = np.zeros((2, len(CAPTION_OFFSETS)), np.float32)
    probs[0, 1] = 0.5
    probs[1, 3] = 0.3
    boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.2, 0.2]], np.float32)
    xyxy, scores, phrase = decode_grounding(
        probs, boxes, token_phrase_index(CAPTION_OFFSETS, SPANS), image_size=(100, 50),
        box_threshold=0.2, text_threshold=0.4,
    )
    assert phrase.tolist() == [0]
    assert xyxy.tolist() == [[0.0, 0.0, 25.0, 12.5]]


def test_decode_without_phrases_is_empty():
    xyxy, scores, phrase = decode_grounding(
        np.ones((3, 2), np.float32), np.ones((3, 4), np.float32), np.array([-1, -1]), image_size=(10, 10),
        box_threshold=0.1, text_threshold=0.1,
    )
    assert xyxy.shape == (0, 4) and scores.shape == (0,) and phrase.shape == (0,)
