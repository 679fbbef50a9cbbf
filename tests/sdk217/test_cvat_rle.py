"""CVAT mask RLE (`serverless.convert.cvat_shapes.encode_mask` / `decode_mask`): the fallback
used where ``cvat_sdk.masks`` is missing (cvat-sdk 2.17) reads the masks recorded from real
CVAT servers, round-trips, rejects malformed input, and matches ``cvat_sdk.masks`` exactly
wherever that module exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from serverless.convert import cvat_shapes
from serverless.convert.cvat_shapes import _decode_rle, _encode_rle, decode_mask, encode_mask
from tests.bridge_support import SDK_IS_217

GOLDEN = Path(__file__).resolve().parent.parent / "fake_cvat" / "golden_data"


def recorded_masks() -> list[list[float]]:
    """The ``points`` of every mask shape in the recorded CVAT exchanges."""
    found: list[list[float]] = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "mask" and isinstance(node.get("points"), list):
                found.append(node["points"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(GOLDEN.glob("*/05_annotations_put_patch_get.json")):
        walk(json.loads(path.read_text()))
    return found


def test_the_installed_sdk_decides_which_codec_runs():
    assert (cvat_shapes._sdk_masks is None) == SDK_IS_217


def test_masks_recorded_from_cvat_round_trip_through_the_fallback():
    masks = recorded_masks()
    assert len(masks) >= 2
    for points in masks:
        left, top, right, bottom = (int(v) for v in points[-4:])
        width, height = right + 3, bottom + 2
        mask = _decode_rle(points, width, height)
        assert mask[top : bottom + 1, left : right + 1].sum() == sum(points[1:-4:2])
        assert not mask[:top].any() and not mask[:, :left].any()
        assert _encode_rle(mask, [left, top, right + 1, bottom + 1]) == [int(v) for v in points]
        assert np.array_equal(decode_mask(points, image_width=width, image_height=height), mask)


@st.composite
def masks_and_boxes(draw):
    mask = draw(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
    height, width = mask.shape
    x1, y1 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    x2, y2 = draw(st.integers(x1 + 1, width)), draw(st.integers(y1 + 1, height))
    return mask, [x1, y1, x2, y2]


@settings(max_examples=300, deadline=None)
@given(masks_and_boxes())
def test_fallback_round_trips_and_matches_cvat_sdk_masks(case):
    mask, box = case
    height, width = mask.shape
    points = _encode_rle(mask, box)
    inside = np.zeros_like(mask)
    inside[box[1] : box[3], box[0] : box[2]] = mask[box[1] : box[3], box[0] : box[2]]
    assert np.array_equal(_decode_rle(points, width, height), inside)
    assert np.array_equal(_decode_rle([float(v) for v in points], width, height), inside)
    assert sum(points[:-4]) == (box[2] - box[0]) * (box[3] - box[1])
    if cvat_shapes._sdk_masks is not None:
        sdk = cvat_shapes._sdk_masks
        assert sdk.encode_mask(mask, bbox=box) == points == encode_mask(mask, box)
        assert np.array_equal(sdk.decode_mask(points, image_width=width, image_height=height), inside)


BAD = {
    "too short": ([1, 0, 0, 0], 4, 4),
    "not integers": ([1.5, 0, 0, 0, 0], 4, 4),
    "box outside the image": ([1, 0, 0, 4, 0], 4, 4),
    "runs do not fill the box": ([2, 0, 0, 0, 0], 4, 4),
    "empty image": ([1, 0, 0, 0, 0], 0, 4),
}


@pytest.mark.parametrize("name", list(BAD))
def test_malformed_masks_are_value_errors_like_cvat_sdk(name):
    points, width, height = BAD[name]
    with pytest.raises(ValueError):
        _decode_rle(points, width, height)
    with pytest.raises(ValueError):
        decode_mask(points, image_width=width, image_height=height)
    with pytest.raises(ValueError):
        _encode_rle(np.zeros((3, 3), bool), [0, 0, 4, 3])
