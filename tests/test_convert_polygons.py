"""Tests for serverless.convert.polygons: masks ↔ rings, tight mask boxes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from serverless.convert.polygons import (
    largest_ring,
    mask_bbox,
    mask_to_polygons,
    masks_to_polygons,
    polygons_to_mask,
    ring_area,
)
from serverless.detections import Detections


def _mask(height: int, width: int, *pixels: tuple[int, int]) -> np.ndarray:
    """A (height, width) mask with the given (x, y) pixels set."""
    mask = np.zeros((height, width), dtype=bool)
    for x, y in pixels:
        mask[y, x] = True
    return mask


masks = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda hw: arrays(bool, hw)
)


# ----------------------------------------------------------------------------- mask_bbox
def test_mask_bbox_is_tight_and_exclusive():
    mask = _mask(4, 5, (1, 1), (2, 1), (3, 1), (1, 2))
    assert mask_bbox(mask) == (1, 1, 4, 3)


def test_mask_bbox_of_empty_mask_is_none():
    assert mask_bbox(np.zeros((3, 3), bool)) is None


@pytest.mark.parametrize(("x", "y", "expected"), [(0, 0, (0, 0, 1, 1)), (4, 2, (4, 2, 5, 3))])
def test_mask_bbox_of_corner_pixels(x, y, expected):
    assert mask_bbox(_mask(3, 5, (x, y))) == expected


def test_mask_bbox_returns_python_ints():
    box = mask_bbox(_mask(3, 3, (1, 1)))
    assert all(type(v) is int for v in box)


@pytest.mark.parametrize(
    ("mask", "message"),
    [(np.zeros((2, 2), np.uint8), "boolean"), (np.zeros((1, 2, 2), bool), r"\(H, W\)")],
)
def test_mask_bbox_rejects_bad_masks(mask, message):
    with pytest.raises(ValueError, match=message):
        mask_bbox(mask)


@given(masks)
def test_mask_bbox_matches_nonzero(mask):
    box = mask_bbox(mask)
    if not mask.any():
        assert box is None
        return
    ys, xs = np.nonzero(mask)
    assert box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


# ----------------------------------------------------------------------------- mask_to_polygons
def test_empty_mask_has_no_rings():
    assert mask_to_polygons(np.zeros((4, 4), bool)) == ()


def test_block_gives_its_boundary_pixel_corners():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True  # a 3 wide, 2 high block: pixels x 1..3, y 1..2
    (ring,) = mask_to_polygons(mask, tolerance=0)
    assert ring.dtype == np.float32
    np.testing.assert_array_equal(ring, [[1, 1], [1, 2], [2, 2], [3, 2], [3, 1], [2, 1]])


def test_block_too_thin_for_the_tolerance_becomes_its_extent_rectangle():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    # approxPolyDP(1.0) reduces the 4 corners above to a diagonal of 2 points.
    (ring,) = mask_to_polygons(mask, tolerance=1.0)
    np.testing.assert_array_equal(ring, [[1, 1], [4, 1], [4, 3], [1, 3]])


def test_block_wider_than_the_tolerance_keeps_its_corners():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    (ring,) = mask_to_polygons(mask, tolerance=1.0)
    np.testing.assert_array_equal(ring, [[1, 1], [1, 3], [3, 3], [3, 1]])


def test_single_pixel_becomes_its_unit_square():
    (ring,) = mask_to_polygons(_mask(5, 5, (4, 4)))
    np.testing.assert_array_equal(ring, [[4, 4], [5, 4], [5, 5], [4, 5]])


def test_one_pixel_wide_line_becomes_its_extent_rectangle():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 2] = True
    (ring,) = mask_to_polygons(mask)
    np.testing.assert_array_equal(ring, [[2, 1], [3, 1], [3, 5], [2, 5]])


def test_rings_are_sorted_largest_first():
    mask = np.zeros((8, 8), bool)
    mask[6, 6] = True  # a single pixel: its unit square has area 1
    mask[1:5, 1:5] = True  # a 4x4 block: contour area 9
    rings = mask_to_polygons(mask)
    assert len(rings) == 2
    assert ring_area(rings[0]) == 9.0
    np.testing.assert_array_equal(rings[1], [[6, 6], [7, 6], [7, 7], [6, 7]])


def test_zero_tolerance_keeps_every_contour_pixel():
    mask = np.zeros((6, 7), bool)
    mask[1:4, 1:5] = True
    (ring,) = mask_to_polygons(mask, tolerance=0)
    assert ring.shape == (10, 2)
    (simplified,) = mask_to_polygons(mask, tolerance=1.0)
    assert simplified.shape == (4, 2)


def test_holes_are_ignored():
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False
    assert len(mask_to_polygons(mask)) == 1


@pytest.mark.parametrize("tolerance", [-1.0, float("nan")])
def test_bad_tolerance_is_refused(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        mask_to_polygons(_mask(3, 3, (1, 1)), tolerance)


def test_non_boolean_mask_is_refused():
    with pytest.raises(ValueError, match="boolean"):
        mask_to_polygons(np.ones((3, 3), np.uint8))


@settings(max_examples=200)
@given(masks, st.sampled_from([0.0, 1.0, 2.5]))
def test_rings_are_valid_and_inside_the_pixel_extent(mask, tolerance):
    rings = mask_to_polygons(mask, tolerance)
    if not mask.any():
        assert rings == ()
        return
    height, width = mask.shape
    areas = [ring_area(r) for r in rings]
    assert areas == sorted(areas, reverse=True)
    for ring in rings:
        assert ring.dtype == np.float32 and ring.ndim == 2 and ring.shape[1] == 2
        assert ring.shape[0] >= 3
        assert ring_area(ring) > 0
        assert ring.min() >= 0
        assert ring[:, 0].max() <= width and ring[:, 1].max() <= height


@settings(max_examples=200)
@given(masks)
def test_exact_rings_cover_the_mask(mask):
    """With tolerance 0, rasterizing the rings gives back at least every mask pixel."""
    height, width = mask.shape
    filled = polygons_to_mask(mask_to_polygons(mask, 0), height, width)
    assert not np.any(mask & ~filled)


# ----------------------------------------------------------------------------- polygons_to_mask
def test_polygons_to_mask_inverts_a_block_contour():
    mask = np.zeros((5, 6), bool)
    mask[1:4, 2:5] = True
    np.testing.assert_array_equal(polygons_to_mask(mask_to_polygons(mask), 5, 6), mask)


def test_polygons_to_mask_takes_the_union_of_overlapping_rings():
    square = np.array([[1, 1], [4, 1], [4, 4], [1, 4]], np.float32)
    mask = polygons_to_mask([square, square + 1], 7, 7)
    expected = np.zeros((7, 7), bool)
    expected[1:5, 1:5] = True
    expected[2:6, 2:6] = True
    np.testing.assert_array_equal(mask, expected)


def test_polygons_to_mask_cuts_off_outside_parts():
    ring = np.array([[-5, -5], [2, -5], [2, 2], [-5, 2]], np.float32)
    mask = polygons_to_mask([ring], 4, 4)
    expected = np.zeros((4, 4), bool)
    expected[:3, :3] = True
    np.testing.assert_array_equal(mask, expected)


def test_polygons_to_mask_of_no_rings_is_empty():
    assert not polygons_to_mask([], 3, 4).any()
    assert polygons_to_mask([], 3, 4).shape == (3, 4)


@pytest.mark.parametrize(
    ("rings", "height", "width", "message"),
    [
        ([np.zeros((2, 2))], 3, 3, r"rings\[0\] must have shape \(K>=3, 2\), got \(2, 2\)"),
        ([np.full((3, 2), np.nan)], 3, 3, "finite"),
        ([], 0, 3, "positive"),
    ],
)
def test_polygons_to_mask_rejects_bad_input(rings, height, width, message):
    with pytest.raises(ValueError, match=message):
        polygons_to_mask(rings, height, width)


# ----------------------------------------------------------------------------- largest_ring
def test_largest_ring_picks_by_area():
    small = np.array([[0, 0], [1, 0], [1, 1]], np.float32)
    big = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], np.float32)
    np.testing.assert_array_equal(largest_ring((small, big)), big)
    assert largest_ring(()) is None
    assert largest_ring(None) is None


# ----------------------------------------------------------------------------- masks_to_polygons
def test_masks_to_polygons_fills_the_polygons_column():
    masks_ = np.zeros((2, 5, 5), bool)
    masks_[0, 1:4, 1:4] = True
    det = Detections(
        xyxy=[[1, 1, 4, 4], [0, 0, 1, 1]],
        scores=[0.5, 0.4],
        class_ids=[0, 0],
        labels=["a", "a"],
        masks=masks_,
    )
    out = masks_to_polygons(det)
    assert out.polygons[1] == ()  # the empty mask has no ring
    np.testing.assert_array_equal(out.polygons[0][0], [[1, 1], [1, 3], [3, 3], [3, 1]])
    assert out.masks is not None and len(out) == 2


def test_masks_to_polygons_requires_masks():
    det = Detections(xyxy=[[0, 0, 1, 1]], scores=[1.0], class_ids=[0], labels=["a"])
    with pytest.raises(ValueError, match="masks"):
        masks_to_polygons(det)
