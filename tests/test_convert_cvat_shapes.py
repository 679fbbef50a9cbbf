"""Tests for serverless.convert.cvat_shapes: Detections ↔ cvat-sdk shapes."""

from __future__ import annotations

import numpy as np
import pytest
from cvat_sdk import masks as cvat_masks
from cvat_sdk import models
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from serverless.convert.cvat_shapes import from_cvat_shapes, to_cvat_shapes
from serverless.convert.polygons import mask_bbox
from serverless.detections import Detections

LABEL_IDS = {"cat": 5, "dog": 6}
LABEL_NAMES = {5: "cat", 6: "dog"}


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


def _mask_det(mask: np.ndarray, score: float = 0.5) -> Detections:
    box = mask_bbox(mask) or (0, 0, 0, 0)
    return _det([box], scores=[score], masks=mask[None])


frame_masks = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda hw: arrays(bool, hw)
)


# ----------------------------------------------------------------------------- to_cvat_shapes
def test_rectangles_by_hand():
    det = _det([[1, 2, 5, 6], [0.5, 0.25, 3.75, 4]], scores=[0.9, 0.456], labels=["cat", "dog"])
    shapes = to_cvat_shapes(det, LABEL_IDS, frame=3, score_spec_id=11)
    assert all(isinstance(s, models.LabeledShapeRequest) for s in shapes)
    assert [s.to_dict() for s in shapes] == [
        {
            "type": "rectangle",
            "frame": 3,
            "label_id": 5,
            "points": [1.0, 2.0, 5.0, 6.0],
            "source": "auto",
            "occluded": False,
            "z_order": 0,
            "attributes": [{"spec_id": 11, "value": "90"}],
            "score": 0.9,
        },
        {
            "type": "rectangle",
            "frame": 3,
            "label_id": 6,
            "points": [0.5, 0.25, 3.75, 4.0],
            "source": "auto",
            "occluded": False,
            "z_order": 0,
            "attributes": [{"spec_id": 11, "value": "46"}],
            "score": 0.456,
        },
    ]


def test_score_field_follows_the_sdk_model():
    assert "score" in models.LabeledShapeRequest.attribute_map  # cvat-sdk 2.80
    (shape,) = to_cvat_shapes(_det([[0, 0, 1, 1]], scores=[0.25]), LABEL_IDS, frame=0)
    assert shape.score == 0.25
    assert shape.attributes == []


def test_source_is_passed_through():
    (shape,) = to_cvat_shapes(_det([[0, 0, 1, 1]]), LABEL_IDS, frame=0, source="semi-auto")
    assert shape.source == "semi-auto"


def test_mask_shape_by_hand():
    # 5x4 frame, L-shaped mask in the box x 1..3, y 1..2 (inclusive):
    #   row 1: # # #   row 2: # . .
    mask = np.zeros((4, 5), bool)
    mask[1, 1:4] = True
    mask[2, 1] = True
    (shape,) = to_cvat_shapes(_mask_det(mask), LABEL_IDS, frame=0)
    assert shape.type.value == "mask"
    # runs over the 3x2 crop "111100": 0 background, 4 foreground, 2 background; inclusive box
    assert shape.points == [0.0, 4.0, 2.0, 1.0, 1.0, 3.0, 2.0]


def test_mask_encoding_uses_the_inclusive_box_at_the_image_edge():
    mask = np.zeros((3, 4), bool)
    mask[1:, 2:] = True  # touches the right and bottom edges
    (shape,) = to_cvat_shapes(_mask_det(mask), LABEL_IDS, frame=0)
    assert shape.points[-4:] == [2.0, 1.0, 3.0, 2.0]
    decoded = cvat_masks.decode_mask(shape.points, image_width=4, image_height=3)
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize(("x", "y"), [(0, 0), (6, 4)])
def test_one_pixel_mask_at_the_corners(x, y):
    mask = np.zeros((5, 7), bool)
    mask[y, x] = True
    (shape,) = to_cvat_shapes(_mask_det(mask), LABEL_IDS, frame=0)
    assert shape.points == [0.0, 1.0, float(x), float(y), float(x), float(y)]
    back = from_cvat_shapes([shape], LABEL_NAMES, width=7, height=5)
    np.testing.assert_array_equal(back.masks[0], mask)
    np.testing.assert_array_equal(back.xyxy[0], [x, y, x + 1, y + 1])


def test_empty_masks_are_dropped():
    masks = np.zeros((2, 3, 3), bool)
    masks[1, 0, 0] = True
    det = _det([[0, 0, 1, 1], [0, 0, 1, 1]], labels=["cat", "dog"], masks=masks)
    shapes = to_cvat_shapes(det, LABEL_IDS, frame=0)
    assert [s.label_id for s in shapes] == [6]


def test_as_polygons_gives_the_largest_ring():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    (shape,) = to_cvat_shapes(_mask_det(mask), LABEL_IDS, frame=2, as_polygons=True)
    assert shape.type.value == "polygon"
    assert shape.points == [1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 1.0]


def test_as_polygons_skips_empty_masks_and_keeps_plain_boxes():
    masks = np.zeros((1, 3, 3), bool)
    assert to_cvat_shapes(_det([[0, 0, 1, 1]], masks=masks), LABEL_IDS, frame=0,
                          as_polygons=True) == []
    (shape,) = to_cvat_shapes(_det([[0, 0, 1, 1]]), LABEL_IDS, frame=0, as_polygons=True)
    assert shape.type.value == "rectangle"


def test_missing_label_is_named():
    det = _det([[0, 0, 1, 1]] * 2, labels=["cat", "zebra"])
    with pytest.raises(ValueError, match="zebra"):
        to_cvat_shapes(det, LABEL_IDS, frame=0)


@pytest.mark.parametrize("frame", [-1, 1.5, True])
def test_bad_frame_is_refused(frame):
    with pytest.raises(ValueError, match="frame"):
        to_cvat_shapes(_det([[0, 0, 1, 1]]), LABEL_IDS, frame=frame)


def test_empty_detections_give_no_shapes():
    assert to_cvat_shapes(Detections.empty(), LABEL_IDS, frame=0) == []
    assert to_cvat_shapes(Detections.empty(with_masks_shape=(3, 3)), {}, frame=0) == []


# ----------------------------------------------------------------------------- round trips
@settings(max_examples=200)
@given(frame_masks)
def test_cvat_sdk_encode_decode_round_trip_with_our_box(mask):
    box = mask_bbox(mask)
    if box is None:
        return
    height, width = mask.shape
    encoded = cvat_masks.encode_mask(mask, bbox=list(box))
    x1, y1, x2, y2 = box
    assert encoded[-4:] == [x1, y1, x2 - 1, y2 - 1]  # inclusive on the wire
    assert sum(encoded[:-4]) == (x2 - x1) * (y2 - y1)
    decoded = cvat_masks.decode_mask(encoded, image_width=width, image_height=height)
    np.testing.assert_array_equal(decoded, mask)


@settings(max_examples=200)
@given(frame_masks, st.floats(0, 1, width=32), st.integers(0, 1000))
def test_mask_round_trip_through_shapes(mask, score, frame):
    height, width = mask.shape
    det = _mask_det(mask, score)
    shapes = to_cvat_shapes(det, LABEL_IDS, frame=frame)
    if not mask.any():
        assert shapes == []
        return
    back = from_cvat_shapes(shapes, LABEL_NAMES, width=width, height=height)
    np.testing.assert_array_equal(back.masks, det.masks)
    np.testing.assert_array_equal(back.xyxy, det.xyxy)
    np.testing.assert_array_equal(back.scores, det.scores)
    assert back.labels.tolist() == ["cat"]
    assert back.data["frame"].tolist() == [frame]
    assert back.data["source"].tolist() == ["auto"]
    assert back.data["cvat_id"].tolist() == [-1]


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 50), st.integers(0, 50), st.integers(0, 50), st.integers(0, 50),
            st.sampled_from(["cat", "dog"]), st.floats(0, 1, width=32),
        ),
        max_size=6,
    )
)
def test_rectangle_round_trip(rows):
    xyxy = [[min(a, c), min(b, d), max(a, c) + 0.5, max(b, d) + 0.25] for a, b, c, d, *_ in rows]
    det = _det(xyxy, scores=[r[5] for r in rows], labels=[r[4] for r in rows])
    shapes = to_cvat_shapes(det, LABEL_IDS, frame=1)
    back = from_cvat_shapes(
        shapes, LABEL_NAMES, width=64, height=64, label_index={"cat": 0, "dog": 1}
    )
    np.testing.assert_array_equal(back.xyxy, det.xyxy)
    np.testing.assert_array_equal(back.scores, det.scores)
    assert back.labels.tolist() == det.labels.tolist()
    assert back.class_ids.tolist() == [0 if r[4] == "cat" else 1 for r in rows]
    assert back.masks is None and back.polygons is None


# ----------------------------------------------------------------------------- from_cvat_shapes
# Shapes as a CVAT 2.17 server returns them (no "score").
SERVER_SHAPES = [
    {"type": "rectangle", "occluded": False, "outside": False, "z_order": 0, "rotation": 0.0,
     "points": [10.0, 20.0, 110.0, 120.0], "id": 84, "frame": 0, "label_id": 5, "group": 0,
     "source": "manual", "attributes": [], "elements": []},
    {"type": "polygon", "occluded": False, "outside": False, "z_order": 0, "rotation": 0,
     "points": [0.0, 200.0, 160.0, 150.0, 319.0, 200.0, 319.0, 239.0, 0.0, 239.0], "id": 86,
     "frame": 0, "label_id": 6, "group": None, "source": "manual", "attributes": [],
     "elements": []},
    {"type": "skeleton", "occluded": False, "outside": False, "z_order": 0, "rotation": 0,
     "points": [], "id": 88, "frame": 0, "label_id": 5, "group": None, "source": "manual",
     "attributes": [], "elements": [{"type": "points", "points": [40.0, 40.0]}]},
    {"type": "points", "points": [1.0, 2.0], "id": 90, "frame": 0, "label_id": 5},
]


def test_server_shapes_without_masks():
    det = from_cvat_shapes(SERVER_SHAPES, LABEL_NAMES, width=320, height=240,
                           label_index={"dog": 1})
    assert len(det) == 2  # skeleton and points are skipped
    np.testing.assert_array_equal(det.xyxy, [[10, 20, 110, 120], [0, 150, 319, 239]])
    assert det.labels.tolist() == ["cat", "dog"]
    assert det.class_ids.tolist() == [-1, 1]
    assert det.scores.tolist() == [1.0, 1.0]
    assert det.masks is None
    assert det.polygons[0] == ()
    np.testing.assert_array_equal(
        det.polygons[1][0], [[0, 200], [160, 150], [319, 200], [319, 239], [0, 239]]
    )
    assert det.data["cvat_id"].tolist() == [84, 86]
    assert det.data["source"].tolist() == ["manual", "manual"]
    assert det.data["frame"].tolist() == [0, 0]


def test_a_mask_shape_fills_masks_for_every_detection():
    mask = np.zeros((6, 8), bool)
    mask[2:4, 5:7] = True
    shapes = [
        {"type": "rectangle", "points": [1.0, 1.0, 3.0, 2.0], "label_id": 5, "frame": 4,
         "id": 1, "source": "manual", "score": 0.5},
        {"type": "polygon", "points": [0, 3, 2, 3, 2, 5], "label_id": 6, "frame": 4},
        {"type": "mask", "points": cvat_masks.encode_mask(mask, bbox=[5, 2, 7, 4]),
         "label_id": 6, "frame": 4, "id": 3, "source": "auto", "score": 0.75},
    ]
    det = from_cvat_shapes(shapes, LABEL_NAMES, width=8, height=6)
    assert det.masks.shape == (3, 6, 8)
    box_mask = np.zeros((6, 8), bool)
    box_mask[1:2, 1:3] = True  # pixels whose centre is inside [1, 3) x [1, 2)
    np.testing.assert_array_equal(det.masks[0], box_mask)
    triangle = np.zeros((6, 8), bool)
    triangle[3, 0:3] = True
    triangle[4, 1:3] = True
    triangle[5, 2] = True
    np.testing.assert_array_equal(det.masks[1], triangle)
    np.testing.assert_array_equal(det.masks[2], mask)
    np.testing.assert_array_equal(det.xyxy, [[1, 1, 3, 2], [0, 3, 2, 5], [5, 2, 7, 4]])
    assert det.scores.tolist() == [0.5, 1.0, 0.75]
    assert det.data["cvat_id"].tolist() == [1, -1, 3]
    assert det.data["source"].tolist() == ["manual", "", "auto"]
    assert [len(rings) for rings in det.polygons] == [0, 1, 0]


def test_sdk_models_are_read():
    mask = np.zeros((4, 4), bool)
    mask[3, 3] = True
    shapes = [
        models.LabeledShape(type="mask", frame=2, label_id=5, id=9, source="auto", score=0.25,
                            points=cvat_masks.encode_mask(mask, bbox=[3, 3, 4, 4]),
                            occluded=False, z_order=0, rotation=0.0, outside=False,
                            attributes=[]),
        models.LabeledShapeRequest(type="rectangle", frame=2, label_id=6,
                                   points=[0.0, 0.0, 2.0, 2.0]),
    ]
    det = from_cvat_shapes(shapes, LABEL_NAMES, width=4, height=4)
    assert det.labels.tolist() == ["cat", "dog"]
    np.testing.assert_array_equal(det.masks[0], mask)
    np.testing.assert_array_equal(det.xyxy, [[3, 3, 4, 4], [0, 0, 2, 2]])
    assert det.data["cvat_id"].tolist() == [9, -1]
    assert det.scores.tolist() == [0.25, 1.0]


def test_rotated_rectangle_becomes_its_enclosing_box():
    shape = {"type": "rectangle", "points": [0.0, 0.0, 4.0, 2.0], "rotation": 90.0,
             "label_id": 5, "frame": 0}
    det = from_cvat_shapes([shape], LABEL_NAMES, width=10, height=10)
    np.testing.assert_allclose(det.xyxy, [[1, -1, 3, 3]], atol=1e-6)


def test_empty_input_gives_empty_detections_with_data_columns():
    det = from_cvat_shapes([], LABEL_NAMES, width=4, height=4)
    assert len(det) == 0 and det.masks is None and det.polygons is None
    assert sorted(det.data) == ["cvat_id", "frame", "shape_type", "source"]
    assert det.data["cvat_id"].dtype == np.int64


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"type": "rectangle", "points": [0, 0, 1, 1], "label_id": 99},
         r"shapes\[0\] \(rectangle\): label_id 99"),
        ({"type": "rectangle", "points": [0, 0, 1], "label_id": 5}, "expected 4 points, got 3"),
        ({"type": "polygon", "points": [0, 0, 1, 1], "label_id": 5}, "even number >= 6"),
        ({"type": "mask", "points": [1, 0, 0, 5, 5], "label_id": 5}, r"shapes\[0\] \(mask\)"),
        ({"type": "rectangle", "points": ["a", 0, 1, 1], "label_id": 5}, "numbers"),
    ],
)
def test_bad_shapes_are_named(shape, message):
    with pytest.raises(ValueError, match=message):
        from_cvat_shapes([shape], LABEL_NAMES, width=4, height=4)


def test_bad_frame_size_is_refused():
    with pytest.raises(ValueError, match="positive"):
        from_cvat_shapes([], LABEL_NAMES, width=0, height=4)


def test_polygon_round_trip_with_as_polygons():
    det = from_cvat_shapes(SERVER_SHAPES[:2], LABEL_NAMES, width=320, height=240)
    shapes = to_cvat_shapes(det, LABEL_IDS, frame=0, as_polygons=True, source="manual")
    assert [s.type.value for s in shapes] == ["rectangle", "polygon"]
    assert shapes[0].points == SERVER_SHAPES[0]["points"]
    assert shapes[1].points == SERVER_SHAPES[1]["points"]


def test_shape_type_column_keeps_each_shapes_cvat_type():
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    from cvat_sdk.masks import encode_mask

    shapes = [
        {"type": "rectangle", "points": [0, 0, 2, 2], "label_id": 1, "frame": 0},
        {"type": "mask", "points": encode_mask(mask, [1, 1, 3, 3]), "label_id": 1, "frame": 0},
    ]
    det = from_cvat_shapes(shapes, {1: "a"}, width=4, height=4)
    assert det.data["shape_type"].tolist() == ["rectangle", "mask"]


def test_source_can_be_left_out_for_the_sdk_driver():
    det = Detections(xyxy=[[0, 0, 2, 2]], scores=[0.5], class_ids=[0], labels=["a"])
    (shape,) = to_cvat_shapes(det, {"a": 3}, frame=0, source=None)
    assert "source" not in shape.to_dict()
    (shape,) = to_cvat_shapes(det, {"a": 3}, frame=0)
    assert shape.to_dict()["source"] == "auto"
