"""Tests for serverless.convert.nuclio: detector items, interactor replies, SAM embeddings."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from serverless.convert.nuclio import (
    embedding_reply,
    plain_float,
    score_percent,
    to_detector_items,
    to_interactor_reply,
)
from serverless.detections import Detections


def _det(xyxy, scores=None, labels=None, masks=None, polygons=None) -> Detections:
    n = len(xyxy)
    return Detections(
        xyxy=np.asarray(xyxy, np.float32).reshape(n, 4),
        scores=[0.5] * n if scores is None else scores,
        class_ids=[0] * n,
        labels=["cat"] * n if labels is None else labels,
        masks=masks,
        polygons=polygons,
    )


def _assert_plain_json(value) -> None:
    """Only dict/list/str/int/float/bool, and json.dumps round-trips it."""
    if isinstance(value, dict):
        assert all(type(k) is str for k in value)
        for v in value.values():
            _assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain_json(v)
    else:
        assert type(value) in (str, int, float, bool), type(value)
    assert json.loads(json.dumps(value)) == value


# ----------------------------------------------------------------------------- rectangles
def test_rectangle_items_by_hand():
    det = _det([[1, 2, 5, 6], [0.5, 0.25, 3.75, 4]], scores=[0.9, 0.456], labels=["cat", "dog"])
    items = to_detector_items(det, image_size=(10, 8))
    assert items == [
        {"label": "cat", "type": "rectangle", "points": [1.0, 2.0, 5.0, 6.0], "confidence": 0.9},
        {
            "label": "dog",
            "type": "rectangle",
            "points": [0.5, 0.25, 3.75, 4.0],
            "confidence": 0.456,
        },
    ]
    _assert_plain_json(items)


def test_rectangles_are_clipped_to_the_image_and_dropped_when_outside():
    det = _det([[-5, 2, 12.5, 8], [20, 20, 30, 30], [3, -4, 4, 0]])
    items = to_detector_items(det, image_size=(10, 6))
    assert [item["points"] for item in items] == [[0.0, 2.0, 10.0, 6.0]]


def test_score_attribute_is_an_integer_percent_string():
    det = _det([[0, 0, 1, 1]] * 4, scores=[0.456, 1.0, 0.0, 0.994])
    items = to_detector_items(det, image_size=(2, 2), score_attribute=True)
    values = [item["attributes"] for item in items]
    assert values == [
        [{"name": "score", "value": "46"}],
        [{"name": "score", "value": "100"}],
        [{"name": "score", "value": "0"}],
        [{"name": "score", "value": "99"}],
    ]
    assert all(v[0]["value"].isnumeric() for v in values)
    assert "attributes" not in to_detector_items(det, image_size=(2, 2))[0]


def test_empty_detections_give_no_items():
    assert to_detector_items(Detections.empty(), image_size=(4, 4)) == []
    assert to_detector_items(Detections.empty(with_masks_shape=(4, 4)), image_size=(4, 4)) == []


@pytest.mark.parametrize("size", [(0, 4), (4, -1), "big", (3,)])
def test_bad_image_size_is_refused(size):
    with pytest.raises(ValueError, match="image_size"):
        to_detector_items(_det([[0, 0, 1, 1]]), image_size=size)


# ----------------------------------------------------------------------------- masks
def test_mask_item_by_hand():
    # A 5x4 frame; the mask is an L in the 3 wide, 2 high box x 1..3, y 1..2:
    #   . . . . .
    #   . # # # .
    #   . # . . .
    #   . . . . .
    mask = np.zeros((4, 5), bool)
    mask[1, 1:4] = True
    mask[2, 1] = True
    det = _det([[1, 1, 4, 3]], scores=[0.75], masks=mask[None])
    items = to_detector_items(det, image_size=(5, 4), score_attribute=True)
    assert items == [
        {
            "label": "cat",
            "type": "mask",
            # too thin for tolerance 1: the rectangle around the pixels' extent
            "points": [1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0],
            "mask": [255, 255, 255, 255, 0, 0, 1, 1, 3, 2],
            "confidence": 0.75,
            "attributes": [{"name": "score", "value": "75"}],
        }
    ]
    _assert_plain_json(items)


def test_mask_item_uses_the_largest_given_polygon():
    mask = np.zeros((6, 6), bool)
    mask[1:4, 1:4] = True
    small = np.array([[0, 0], [1, 0], [1, 1]], np.float32)
    big = np.array([[1, 1], [4, 1], [4, 4], [1, 4]], np.float32)
    det = _det([[1, 1, 4, 4]], masks=mask[None], polygons=((small, big),))
    (item,) = to_detector_items(det, image_size=(6, 6))
    assert item["points"] == [1.0, 1.0, 4.0, 1.0, 4.0, 4.0, 1.0, 4.0]


def test_mask_item_polygon_is_clipped_to_the_image():
    mask = np.zeros((4, 4), bool)
    mask[0:2, 0:2] = True
    ring = np.array([[-1, -1], [6, -1], [6, 2], [-1, 2]], np.float32)
    det = _det([[0, 0, 2, 2]], masks=mask[None], polygons=((ring,),))
    (item,) = to_detector_items(det, image_size=(4, 4))
    assert item["points"] == [0.0, 0.0, 4.0, 0.0, 4.0, 2.0, 0.0, 2.0]


def test_empty_masks_are_dropped():
    masks = np.zeros((2, 3, 3), bool)
    masks[1, 2, 2] = True
    det = _det([[0, 0, 1, 1], [2, 2, 3, 3]], labels=["a", "b"], masks=masks)
    items = to_detector_items(det, image_size=(3, 3))
    assert [item["label"] for item in items] == ["b"]
    assert items[0]["mask"] == [255, 2, 2, 2, 2]


def test_mask_touching_the_bottom_right_corner():
    mask = np.zeros((3, 4), bool)
    mask[1:, 2:] = True
    (item,) = to_detector_items(_det([[2, 1, 4, 3]], masks=mask[None]), image_size=(4, 3))
    assert item["mask"] == [255, 255, 255, 255, 2, 1, 3, 2]


def test_masks_must_match_the_image_size():
    det = _det([[0, 0, 1, 1]], masks=np.ones((1, 3, 4), bool))
    with pytest.raises(ValueError, match="image_size"):
        to_detector_items(det, image_size=(3, 4))


def test_as_polygons_gives_polygon_items():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    masks = np.stack([mask, np.zeros_like(mask)])
    det = _det([[1, 1, 4, 4], [0, 0, 1, 1]], masks=masks)
    items = to_detector_items(det, image_size=(5, 5), as_polygons=True)
    assert items == [
        {
            "label": "cat",
            "type": "polygon",
            "points": [1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 1.0],
            "confidence": 0.5,
        }
    ]


def test_as_polygons_keeps_rectangles_without_ring_or_mask():
    ring = np.array([[1, 1], [3, 1], [3, 3]], np.float32)
    det = _det([[1, 1, 3, 3], [0, 0, 2, 2]], polygons=((ring,), ()))
    items = to_detector_items(det, image_size=(4, 4), as_polygons=True)
    assert [item["type"] for item in items] == ["polygon", "rectangle"]
    assert items[0]["points"] == [1.0, 1.0, 3.0, 1.0, 3.0, 3.0]


frame_masks = st.tuples(st.integers(1, 10), st.integers(1, 10)).flatmap(
    lambda hw: arrays(bool, hw)
)


@settings(max_examples=200, deadline=None)  # no wall-clock limit: CI machines are shared
@given(frame_masks, st.floats(0, 1, width=32), st.booleans())
def test_mask_items_properties(mask, score, as_polygons):
    height, width = mask.shape
    det = _det([[0, 0, width, height]], scores=[score], masks=mask[None])
    items = to_detector_items(
        det, image_size=(width, height), score_attribute=True, as_polygons=as_polygons
    )
    if not mask.any():
        assert items == []
        return
    (item,) = items
    _assert_plain_json(item)
    assert item["confidence"] == plain_float(score)
    points = item["points"]
    assert len(points) % 2 == 0 and len(points) >= 6
    assert all(0 <= x <= width for x in points[0::2])
    assert all(0 <= y <= height for y in points[1::2])
    if as_polygons:
        assert item["type"] == "polygon" and "mask" not in item
        return
    assert item["type"] == "mask"
    xtl, ytl, xbr, ybr = item["mask"][-4:]
    assert 0 <= xtl <= xbr < width and 0 <= ytl <= ybr < height
    assert len(item["mask"]) == (xbr - xtl + 1) * (ybr - ytl + 1) + 4
    assert set(item["mask"][:-4]) <= {0, 255}
    crop = np.asarray(item["mask"][:-4]).reshape(ybr - ytl + 1, xbr - xtl + 1) > 0
    rebuilt = np.zeros_like(mask)
    rebuilt[ytl : ybr + 1, xtl : xbr + 1] = crop
    np.testing.assert_array_equal(rebuilt, mask)


# ----------------------------------------------------------------------------- interactor
def test_interactor_reply_by_hand():
    mask = np.zeros((4, 5), bool)
    mask[1, 1:4] = True
    mask[2, 1] = True
    reply = to_interactor_reply(mask)
    assert reply == {"mask": [[255, 255, 255], [255, 0, 0]], "bounds": [1, 1, 3, 2]}
    _assert_plain_json(reply)


def test_interactor_reply_for_an_empty_mask_still_has_a_mask():
    assert to_interactor_reply(np.zeros((3, 3), bool)) == {"mask": [[0]], "bounds": [0, 0, 0, 0]}


@pytest.mark.parametrize(("x", "y"), [(0, 0), (4, 2)])
def test_interactor_reply_for_a_corner_pixel(x, y):
    mask = np.zeros((3, 5), bool)
    mask[y, x] = True
    assert to_interactor_reply(mask) == {"mask": [[255]], "bounds": [x, y, x, y]}


def test_interactor_reply_refuses_non_boolean_masks():
    with pytest.raises(ValueError, match="boolean"):
        to_interactor_reply(np.ones((2, 2), np.float32))


@settings(max_examples=100)
@given(frame_masks)
def test_interactor_reply_rebuilds_the_mask(mask):
    reply = to_interactor_reply(mask)
    if not mask.any():
        return
    x1, y1, x2, y2 = reply["bounds"]
    crop = np.asarray(reply["mask"]) > 0
    assert crop.shape == (y2 - y1 + 1, x2 - x1 + 1)
    rebuilt = np.zeros_like(mask)
    rebuilt[y1 : y2 + 1, x1 : x2 + 1] = crop
    np.testing.assert_array_equal(rebuilt, mask)


# ----------------------------------------------------------------------------- embedding
def test_embedding_reply_is_little_endian_float32_base64():
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    reply = embedding_reply(embedding)
    assert list(reply) == ["blob"] and isinstance(reply["blob"], str)
    raw = base64.b64decode(reply["blob"])
    assert len(raw) == 4_194_304
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(1, 256, 64, 64), embedding)


def test_embedding_reply_casts_other_dtypes_and_layouts():
    embedding = np.arange(256 * 64 * 64, dtype=np.float64).reshape(1, 256, 64, 64)
    big_endian_transposed = np.asfortranarray(embedding.astype(">f4"))
    for value in (embedding, big_endian_transposed):
        raw = base64.b64decode(embedding_reply(value)["blob"])
        assert raw == embedding.astype("<f4").tobytes()


@pytest.mark.parametrize("shape", [(256, 64, 64), (1, 256, 64, 63), (1, 3, 64, 64)])
def test_embedding_reply_names_a_wrong_shape(shape):
    with pytest.raises(ValueError, match=re.escape(f"(1, 256, 64, 64), got {shape}")):
        embedding_reply(np.zeros(shape, np.float32))


def test_embedding_reply_refuses_non_numeric_and_non_finite_values():
    with pytest.raises(ValueError, match="numeric"):
        embedding_reply(np.full((1, 256, 64, 64), "x"))
    bad = np.zeros((1, 256, 64, 64), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        embedding_reply(bad)


# ----------------------------------------------------------------------------- helpers
def test_score_percent_and_plain_float():
    assert score_percent(np.float32(0.456)) == "46"
    assert plain_float(np.float32(0.9)) == 0.9
    assert type(plain_float(np.float32(3))) is float


def test_converters_do_not_import_torch():
    code = (
        "import sys; import serverless.convert.polygons, serverless.convert.nuclio, "
        "serverless.convert.cvat_shapes, serverless.convert.coco; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
