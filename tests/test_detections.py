from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serverless.detections import Detections, DetectionsError


def make(xyxy, scores=None, class_ids=None, labels=None, **kw) -> Detections:
    xyxy = np.asarray(xyxy, dtype=np.float32)
    n = len(xyxy)
    return Detections(
        xyxy=xyxy,
        scores=np.linspace(0.9, 0.5, n) if scores is None else scores,
        class_ids=np.zeros(n, int) if class_ids is None else class_ids,
        labels=["a"] * n if labels is None else labels,
        **kw,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xyxy": np.zeros((3, 5))}, "xyxy must have shape (N, 4), got (3, 5)"),
        ({"xyxy": [[0, 0, np.nan, 1]]}, "xyxy must be finite"),
        ({"xyxy": [[5, 0, 1, 1]]}, "x2 >= x1"),
        ({"xyxy": [[0, 0, 1, 1]], "scores": [0.5, 0.5]}, "scores must have shape (1,), got (2,)"),
        ({"xyxy": [[0, 0, 1, 1]], "scores": [1.5]}, "scores must lie in 0..1"),
        ({"xyxy": [[0, 0, 1, 1]], "class_ids": [0.5]}, "class_ids must be integers"),
        ({"xyxy": [[0, 0, 1, 1]], "labels": ["a", "b"]}, "labels must have shape (1,)"),
        ({"xyxy": [[0, 0, 1, 1]], "masks": np.zeros((2, 4, 4), bool)}, "masks must have shape (1, H, W)"),
        ({"xyxy": [[0, 0, 1, 1]], "masks": np.zeros((1, 4, 4), np.uint8)}, "masks must be boolean"),
        ({"xyxy": [[0, 0, 1, 1]], "polygons": ()}, "polygons must have 1 entries"),
        ({"xyxy": [[0, 0, 1, 1]], "polygons": ((np.zeros((2, 2)),),)}, "polygons[0] rings must have shape"),
        ({"xyxy": [[0, 0, 1, 1]], "data": {"x": np.arange(3)}}, "data['x'] must have length 1"),
    ],
)
def test_validation_names_the_bad_field(kwargs, message):
    with pytest.raises(DetectionsError) as info:
        make(**kwargs)
    assert message in str(info.value)


def test_frozen_columns_and_fields():
    det = make([[0, 0, 2, 2]])
    with pytest.raises(ValueError):
        det.xyxy[0, 0] = 5
    with pytest.raises(AttributeError):
        det.scores = np.ones(1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        det.data["new"] = np.ones(1)  # type: ignore[index]


def test_empty_and_len():
    det = Detections.empty()
    assert len(det) == 0 and det.xyxy.shape == (0, 4)
    assert len(det.nms(0.5)) == 0
    assert len(Detections.empty(with_masks_shape=(3, 4)).masks) == 0


def test_boolean_filter_applies_to_every_column():
    masks = np.zeros((3, 4, 4), bool)
    masks[1, 1, 1] = True
    det = make(
        [[0, 0, 1, 1], [1, 1, 3, 3], [2, 2, 4, 4]],
        scores=[0.1, 0.8, 0.5],
        class_ids=[0, 1, 2],
        labels=["a", "b", "c"],
        masks=masks,
        polygons=tuple((np.array([[0, 0], [1, 0], [1, 1]]),) for _ in range(3)),
        data={"src": np.array(["x", "y", "z"])},
    )
    kept = det[det.scores > 0.3]
    assert kept.labels.tolist() == ["b", "c"]
    assert kept.class_ids.tolist() == [1, 2]
    assert kept.masks.shape == (2, 4, 4) and kept.masks[0, 1, 1]
    assert len(kept.polygons) == 2
    assert kept.data["src"].tolist() == ["y", "z"]
    with pytest.raises(DetectionsError, match="boolean index must have shape"):
        det[np.array([True, False])]


def test_concatenate_and_mismatches():
    a = make([[0, 0, 1, 1]], labels=["a"])
    b = make([[1, 1, 2, 2], [0, 0, 3, 3]], labels=["bb", "b"], class_ids=[1, 1])
    both = Detections.concatenate([a, b])
    assert len(both) == 3 and both.labels.tolist() == ["a", "bb", "b"]
    with pytest.raises(DetectionsError, match="masks present in some parts only"):
        Detections.concatenate([a, make([[0, 0, 1, 1]], masks=np.zeros((1, 2, 2), bool))])
    assert len(Detections.concatenate([])) == 0


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference_nms(xyxy, scores, classes, thr, agnostic):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(
            (not agnostic and classes[i] != classes[j]) or _iou(xyxy[i], xyxy[j]) <= thr for j in keep
        ):
            keep.append(i)
    return keep


boxes = st.lists(
    st.tuples(
        st.integers(0, 50), st.integers(0, 50), st.integers(1, 30), st.integers(1, 30), st.integers(0, 2)
    ),
    min_size=0,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(boxes, st.floats(0.1, 0.9), st.booleans())
def test_nms_matches_reference(items, thr, agnostic):
    xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in items], np.float32).reshape(-1, 4)
    classes = np.array([c for *_, c in items], np.int64)
    scores = np.linspace(0.95, 0.05, len(items)).astype(np.float32) if items else np.zeros(0, np.float32)
    det = make(xyxy, scores=scores, class_ids=classes, labels=[str(c) for c in classes])
    kept = det.nms(thr, class_agnostic=agnostic)
    expected = _reference_nms(xyxy.tolist(), scores.tolist(), classes.tolist(), thr, agnostic)
    assert sorted(kept.scores.tolist()) == sorted(scores[expected].tolist())


def test_nms_class_wise_keeps_overlapping_boxes_of_other_classes():
    det = make([[0, 0, 10, 10], [0, 0, 10, 10]], scores=[0.9, 0.8], class_ids=[0, 1], labels=["a", "b"])
    assert len(det.nms(0.5)) == 2
    assert len(det.nms(0.5, class_agnostic=True)) == 1
    with pytest.raises(ValueError, match="iou_threshold"):
        det.nms(1.5)


def test_clip_and_area():
    det = make([[-5, -5, 20, 8]]).clip(10, 6)
    assert det.xyxy.tolist() == [[0, 0, 10, 6]]
    assert det.area.tolist() == [60]


def test_concatenate_skips_empty_parts_and_shares_frozen_columns():
    masks = np.zeros((1, 3, 3), bool)
    with_masks = make([[0, 0, 1, 1]], masks=masks)
    joined = Detections.concatenate([Detections.empty(), with_masks])
    assert len(joined) == 1 and joined.masks is not None
    assert with_masks.with_columns().masks is with_masks.masks  # no copy of a frozen column


def test_labels_checked_even_with_no_boxes_and_bool_index_refused():
    with pytest.raises(DetectionsError, match="labels must have shape"):
        make(np.zeros((0, 4)), scores=[], class_ids=np.zeros(0, int), labels=["x", "y"])
    with pytest.raises(DetectionsError, match="single bool"):
        make([[0, 0, 1, 1]])[True]
