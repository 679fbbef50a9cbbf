"""Tests for serverless.convert.coco: Detections ↔ COCO JSON, and pycocotools compatibility."""

from __future__ import annotations

import copy
import json
import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from serverless.convert.coco import (
    CocoFormatError,
    CocoImage,
    box_mask,
    decode_rle,
    encode_masks,
    from_coco,
    read_coco,
    to_coco,
    write_coco,
)
from serverless.convert.polygons import mask_bbox
from serverless.detections import Detections

CATEGORIES = ["cat", "dog"]

# pycocotools' decode (used by COCO.annToMask and COCOeval) warns under numpy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _det(xyxy, scores=None, labels=None, masks=None, polygons=None, data=None) -> Detections:
    n = len(xyxy)
    labels = ["cat"] * n if labels is None else labels
    return Detections(
        xyxy=np.asarray(xyxy, np.float32).reshape(n, 4),
        scores=[0.5] * n if scores is None else scores,
        class_ids=[CATEGORIES.index(name) for name in labels],
        labels=labels,
        masks=masks,
        polygons=polygons,
        data=data or {},
    )


def _coco_api(data: dict) -> COCO:
    api = COCO()
    api.dataset = copy.deepcopy(data)
    api.createIndex()
    return api


def _evaluate(data: dict, iou_type: str) -> float:
    gt = _coco_api(data)
    dt = gt.loadRes(copy.deepcopy(data["annotations"]))
    evaluator = COCOeval(gt, dt, iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


# ----------------------------------------------------------------------------- to_coco
def test_boxes_by_hand():
    image = CocoImage(id=7, file_name="a.jpg", width=10, height=8)
    det = _det([[1, 2, 5, 6], [0.5, 0.25, 3.75, 4]], scores=[0.9, 0.456], labels=["dog", "cat"])
    data = to_coco([image], [det], CATEGORIES, info={"description": "test"})
    assert data == {
        "info": {"description": "test"},
        "licenses": [],
        "images": [{"id": 7, "file_name": "a.jpg", "width": 10, "height": 8}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 2, "bbox": [1.0, 2.0, 4.0, 4.0],
             "area": 16.0, "iscrowd": 0, "score": 0.9, "segmentation": []},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0.5, 0.25, 3.25, 3.75],
             "area": 12.1875, "iscrowd": 0, "score": 0.456, "segmentation": []},
        ],
        "categories": [
            {"id": 1, "name": "cat", "supercategory": ""},
            {"id": 2, "name": "dog", "supercategory": ""},
        ],
    }
    assert json.loads(json.dumps(data)) == data


def test_mask_by_hand():
    # 4 wide, 3 high; pixels (x, y) = (1, 0), (2, 0), (1, 1)
    mask = np.zeros((3, 4), bool)
    mask[0, 1:3] = True
    mask[1, 1] = True
    data = to_coco([CocoImage(1, "a.png", 4, 3)], [_det([[1, 0, 3, 2]], masks=mask[None])],
                   CATEGORIES)
    (ann,) = data["annotations"]
    assert ann["area"] == 3.0
    assert ann["bbox"] == [1.0, 0.0, 2.0, 2.0]
    # column-major runs: 3 background, 2 foreground, 1 background, 1 foreground, 5 background
    assert ann["segmentation"] == {"size": [3, 4], "counts": "321O4"}
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["counts"] == b"321O4"


def test_polygons_are_written_as_flat_lists():
    ring = np.array([[1, 1], [5, 1], [5, 5], [1, 5]], np.float32)
    det = _det([[1, 1, 5, 5], [0, 0, 2, 2]], polygons=((ring,), ()))
    data = to_coco([CocoImage(1, "a.png", 8, 8)], [det], CATEGORIES)
    first, second = data["annotations"]
    assert first["segmentation"] == [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]
    assert first["area"] == 16.0  # as pycocotools rasterizes the polygon
    assert second["segmentation"] == [] and second["area"] == 4.0


def test_annotation_ids_start_at_one_across_images():
    images = [CocoImage(1, "a", 4, 4), CocoImage(2, "b", 4, 4)]
    dets = [_det([[0, 0, 1, 1]] * 2), _det([[0, 0, 2, 2]])]
    data = to_coco(images, dets, CATEGORIES)
    assert [a["id"] for a in data["annotations"]] == [1, 2, 3]
    assert [a["image_id"] for a in data["annotations"]] == [1, 1, 2]


def test_iscrowd_comes_from_data():
    det = _det([[0, 0, 1, 1]] * 2, data={"iscrowd": np.array([True, False])})
    data = to_coco([CocoImage(1, "a", 4, 4)], [det], CATEGORIES)
    assert [a["iscrowd"] for a in data["annotations"]] == [1, 0]


def test_unknown_label_is_named():
    with pytest.raises(ValueError, match="zebra"):
        to_coco([CocoImage(1, "a", 4, 4)], [_det([[0, 0, 1, 1]], labels=["cat"]).with_columns(
            labels=["zebra"])], CATEGORIES)


@pytest.mark.parametrize(
    ("images", "dets", "categories", "message"),
    [
        ([CocoImage(1, "a", 4, 4)], [], CATEGORIES, "align"),
        ([CocoImage(1, "a", 4, 4)] * 2, [Detections.empty()] * 2, CATEGORIES, "unique"),
        ([CocoImage(1, "a", 0, 4)], [Detections.empty()], CATEGORIES, "positive size"),
        ([CocoImage(1, "a", 4, 4)], [Detections.empty()], ["cat", "cat"], "duplicates"),
        ([CocoImage(1, "a", 4, 4)], [_det([[0, 0, 1, 1]], masks=np.ones((1, 3, 4), bool))],
         CATEGORIES, r"masks must have shape \(N, 4, 4\)"),
    ],
)
def test_to_coco_rejects_bad_arguments(images, dets, categories, message):
    with pytest.raises(ValueError, match=message):
        to_coco(images, dets, categories)


def test_empty_inputs():
    data = to_coco([], [], [])
    assert data["images"] == [] and data["annotations"] == [] and data["categories"] == []
    assert from_coco(data) == ([], [], [])


# ----------------------------------------------------------------------------- pycocotools
def _sample_dataset() -> dict:
    mask = np.zeros((20, 30), bool)
    mask[2:9, 3:12] = True
    mask[5:7, 12:20] = True
    masks = np.stack([mask, np.roll(mask, (8, 9), axis=(0, 1))])
    boxes = [mask_bbox(m) for m in masks]
    images = [CocoImage(1, "a.png", 30, 20), CocoImage(2, "b.png", 30, 20)]
    dets = [
        _det(boxes, scores=[0.9, 0.8], labels=["cat", "dog"], masks=masks),
        _det([[1, 1, 11, 9], [15, 2, 29, 19]], scores=[0.7, 0.6], labels=["dog", "cat"]),
    ]
    return to_coco(images, dets, CATEGORIES)


def test_pycocotools_loads_the_output():
    data = _sample_dataset()
    api = _coco_api(data)
    assert sorted(api.getImgIds()) == [1, 2]
    assert sorted(api.getCatIds()) == [1, 2]
    assert len(api.getAnnIds()) == 4
    assert api.annToMask(api.anns[1]).sum() == api.anns[1]["area"]
    dt = api.loadRes(copy.deepcopy(data["annotations"]))
    assert len(dt.getAnnIds()) == 4


def test_pycocotools_bbox_evaluation_of_the_output_against_itself():
    assert _evaluate(_sample_dataset(), "bbox") == pytest.approx(1.0)


def test_pycocotools_segm_evaluation_of_masks_against_themselves():
    data = _sample_dataset()
    data["images"] = data["images"][:1]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == 1]
    assert _evaluate(data, "segm") == pytest.approx(1.0)


# ----------------------------------------------------------------------------- from_coco
def test_from_coco_by_hand():
    data = {
        "images": [
            {"id": 3, "file_name": "x.jpg", "width": 6, "height": 4},
            {"id": 1, "file_name": "y.jpg", "width": 6, "height": 4},
        ],
        "categories": [{"id": 9, "name": "zebra"}, {"id": 2, "name": "ant"}],
        "annotations": [
            {"id": 5, "image_id": 3, "category_id": 9, "bbox": [1, 1, 2, 2], "score": 0.25},
            {"id": 6, "image_id": 3, "category_id": 2, "bbox": [0, 0, 1, 1], "iscrowd": 1},
        ],
    }
    images, categories, dets = from_coco(data)
    assert images == [CocoImage(3, "x.jpg", 6, 4), CocoImage(1, "y.jpg", 6, 4)]
    assert categories == ["ant", "zebra"]  # sorted by category id
    first, second = dets
    np.testing.assert_array_equal(first.xyxy, [[1, 1, 3, 3], [0, 0, 1, 1]])
    assert first.labels.tolist() == ["zebra", "ant"]
    assert first.class_ids.tolist() == [1, 0]
    assert first.scores.tolist() == [0.25, 1.0]
    assert first.masks is None and first.polygons is None
    assert first.data["coco_id"].tolist() == [5, 6]
    assert first.data["iscrowd"].tolist() == [False, True]
    assert len(second) == 0 and second.masks is None


def test_from_coco_polygons_and_boxes_in_one_image():
    data = {
        "images": [{"id": 1, "file_name": "a", "width": 6, "height": 5}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2],
             "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
            {"image_id": 1, "category_id": 1, "bbox": [0, 3, 2, 2], "segmentation": []},
        ],
    }
    (_,), _, (det,) = from_coco(data)
    expected = np.zeros((2, 5, 6), bool)
    expected[0, 1:3, 1:4] = True  # continuous coordinates: pixels 1..3 x 1..2
    expected[1, 3:5, 0:2] = True  # a box-only annotation becomes its box's pixels
    np.testing.assert_array_equal(det.masks, expected)
    np.testing.assert_array_equal(det.polygons[0][0], [[1, 1], [4, 1], [4, 3], [1, 3]])
    assert det.polygons[1] == ()
    assert det.data["coco_id"].tolist() == [-1, -1]


def test_from_coco_uncompressed_rle():
    mask = np.zeros((3, 2), bool)
    mask[1:, 1] = True  # column-major: 4 background, 2 foreground
    data = {
        "images": [{"id": 1, "file_name": "a", "width": 2, "height": 3}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 1, 2],
                         "iscrowd": 1, "segmentation": {"size": [3, 2], "counts": [4, 2]}}],
    }
    (det,) = from_coco(data)[2]
    np.testing.assert_array_equal(det.masks[0], mask)


# ----------------------------------------------------------------------------- mask codec
RLE_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8)


def _runs(counts: str) -> list[int] | None:
    """pycocotools' ``rleFrString`` in plain Python (the oracle's parse, without its buffer
    overrun on strings that end inside a value): the run lengths, or None when malformed."""
    runs, p = [], 0
    while p < len(counts):
        x = k = 0
        more = True
        while more:
            if p >= len(counts) or not 48 <= ord(counts[p]) < 112:
                return None
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        runs.append(x + runs[-2] if len(runs) > 2 else x)
    return runs


@settings(max_examples=400, deadline=None)
@given(counts=RLE_TEXT | st.binary(max_size=6).map(lambda b: b.decode("latin-1")),
       height=st.integers(1, 5), width=st.integers(1, 5))
def test_decode_rle_decodes_what_pycocotools_does_and_refuses_the_rest(counts, height, width):
    runs = _runs(counts)
    try:
        got = decode_rle({"size": [height, width], "counts": counts}, height, width)
    except ValueError as err:
        if runs is None:
            assert str(err) == "malformed compressed RLE string"
        else:
            assert str(err) == f"run lengths must be >= 0 and cover {height}x{width} pixels"
            assert min(runs, default=0) < 0 or sum(runs) != height * width
        return
    assert runs is not None and min(runs, default=0) >= 0 and sum(runs) == height * width
    want = mask_util.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == bool and got.shape == (height, width)
    # bytes counts (pycocotools' own) and the uncompressed runs give the same mask
    np.testing.assert_array_equal(decode_rle({"counts": counts.encode("ascii")}, height, width), want)
    np.testing.assert_array_equal(decode_rle({"counts": runs}, height, width), want)


@settings(max_examples=100, deadline=None)
@given(arrays(bool, st.tuples(st.integers(0, 3), st.integers(1, 6), st.integers(1, 7))))
def test_encode_masks_is_pycocotools_encoding_with_str_counts(masks):
    got = encode_masks(masks)
    assert len(got) == len(masks)
    for mask, rle in zip(masks, got):
        want = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle == {"size": [int(v) for v in want["size"]], "counts": want["counts"].decode("ascii")}
        np.testing.assert_array_equal(decode_rle(rle, *mask.shape), mask)
    # any memory order and any integer dtype encode alike
    assert encode_masks(np.asfortranarray(masks.astype(np.uint8))) == got


def test_decode_rle_refuses_counts_of_the_wrong_type_and_empty_or_full_masks_round_trip():
    for counts in (None, 3, [1.5, 2], [True, 5], {"a": 1}):
        with pytest.raises(ValueError, match="expected a string or a list of integers"):
            decode_rle({"size": [2, 3], "counts": counts}, 2, 3)
    with pytest.raises(ValueError, match="run lengths must be >= 0 and cover 2x3 pixels"):
        decode_rle({"counts": [2**32, -2**32 + 6]}, 2, 3)
    for mask in (np.zeros((1, 2, 3), bool), np.ones((1, 2, 3), bool)):
        (rle,) = encode_masks(mask)
        np.testing.assert_array_equal(decode_rle(rle, 2, 3), mask[0])
    assert encode_masks(np.zeros((0, 2, 3), bool)) == []


COORD = st.one_of(st.integers(-4, 14), st.integers(-8, 28).map(lambda v: v / 2), st.floats(-4, 14))


@settings(max_examples=300, deadline=None)
@given(x=COORD, y=COORD, w=COORD.map(abs), h=COORD.map(abs), height=st.integers(1, 9), width=st.integers(1, 11))
def test_box_mask_is_cocos_rasterization_of_the_box(x, y, w, h, height, width):
    want = mask_util.decode(mask_util.frPyObjects(np.array([[x, y, w, h]], np.float64), height, width))[:, :, 0]
    np.testing.assert_array_equal(box_mask([x, y, x + w, y + h], height, width), want.astype(bool))


boxes = st.tuples(
    st.integers(0, 15), st.integers(0, 11), st.integers(0, 8), st.integers(0, 8)
).map(lambda b: [b[0] / 2, b[1] / 2, b[0] / 2 + b[2], b[1] / 2 + b[3]])


@st.composite
def image_detections(draw, with_masks: bool):
    n = draw(st.integers(0, 4))
    labels = draw(st.lists(st.sampled_from(CATEGORIES), min_size=n, max_size=n))
    scores = draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n))
    if with_masks:
        masks = draw(arrays(bool, (n, 6, 8)))
        xyxy = [mask_bbox(m) or (0, 0, 0, 0) for m in masks]
        return _det(xyxy, scores, labels, masks=masks)
    xyxy = draw(st.lists(boxes, min_size=n, max_size=n))
    return _det(xyxy, scores, labels)


@settings(max_examples=100)
@given(st.lists(st.booleans(), max_size=4).flatmap(
    lambda flags: st.tuples(*[image_detections(f) for f in flags])
))
def test_round_trip_preserves_boxes_labels_scores_masks(dets):
    images = [CocoImage(10 + i, f"{i}.png", 8, 6) for i in range(len(dets))]
    data = to_coco(images, dets, CATEGORIES)
    assert json.loads(json.dumps(data)) == data
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    back_images, categories, back = from_coco(data)
    assert back_images == images and categories == CATEGORIES
    for original, restored in zip(dets, back):
        np.testing.assert_array_equal(restored.xyxy, original.xyxy)
        np.testing.assert_array_equal(restored.scores, original.scores)
        assert restored.labels.tolist() == original.labels.tolist()
        assert restored.class_ids.tolist() == original.class_ids.tolist()
        if original.masks is None or len(original) == 0:
            assert restored.masks is None
        else:
            np.testing.assert_array_equal(restored.masks, original.masks)
    if data["annotations"]:
        _coco_api(data).loadRes(copy.deepcopy(data["annotations"]))


def test_polygon_round_trip():
    ring = np.array([[1, 1], [5, 1], [5, 4]], np.float32)
    det = _det([[1, 1, 5, 4]], polygons=((ring,),))
    (_, _, (back,)) = from_coco(to_coco([CocoImage(1, "a", 8, 6)], [det], CATEGORIES))
    np.testing.assert_array_equal(back.polygons[0][0], ring)
    assert back.masks is not None and back.masks.shape == (1, 6, 8)


# ----------------------------------------------------------------------------- validation
def _valid() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 3}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}
            for i in range(4)
        ],
    }


def _set(path: str, value):
    def mutate(data):
        *parents, last = path.split(".")
        target = data
        for part in parents:
            name, _, index = part.partition("[")
            target = target[name][int(index[:-1])] if index else target[name]
        name, _, index = last.partition("[")
        if index:
            target[name][int(index[:-1])] = value
        else:
            target[name] = value
        return data

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("annotations[3].bbox", [1, 2]),
         "annotations[3].bbox: expected 4 numbers, got [1, 2]"),
        (_set("annotations[0].bbox", [0, 0, "w", 1]), "annotations[0].bbox: expected 4 numbers"),
        (_set("annotations[0].bbox", [0, 0, -1, 1]),
         "annotations[0].bbox: expected a non-negative"),
        (_set("annotations[2].image_id", 8), "annotations[2].image_id: unknown image id 8"),
        (_set("annotations[1].category_id", 4),
         "annotations[1].category_id: unknown category id 4"),
        (_set("annotations[0].score", 1.5),
         "annotations[0].score: expected a number in 0..1, got 1.5"),
        (_set("annotations[0].score", "high"), "annotations[0].score: expected a finite number"),
        (_set("annotations[0].iscrowd", 2), "annotations[0].iscrowd: expected 0 or 1"),
        (_set("annotations[0].segmentation", [[0, 0, 1, 1]]), "annotations[0].segmentation[0]"),
        (_set("annotations[0].segmentation", {"size": [3, 4], "counts": "!!"}),
         "annotations[0].segmentation.counts: malformed"),
        (_set("annotations[0].segmentation", {"size": [3, 4], "counts": "o"}),
         "annotations[0].segmentation.counts: malformed"),
        (_set("annotations[0].segmentation", {"size": [3, 4], "counts": "3"}),
         "annotations[0].segmentation.counts: run lengths"),
        (_set("annotations[0].segmentation", {"size": [3, 4], "counts": [3, 2]}),
         "annotations[0].segmentation.counts: run lengths"),
        (_set("annotations[0].segmentation", {"size": [4, 3], "counts": [12]}),
         "annotations[0].segmentation.size: expected [3, 4], got [4, 3]"),
        (_set("annotations[0].segmentation", 5), "annotations[0].segmentation: expected a list"),
        (_set("annotations[0]", []), "annotations[0]: expected an object, got list"),
        (_set("images[0].width", -4), "images[0].width: expected a positive integer, got -4"),
        (_set("images[0].height", 2.5), "images[0].height: expected an integer, got 2.5"),
        (_set("images[0].file_name", None), "images[0].file_name: expected a string"),
        (lambda d: d["images"].append(dict(d["images"][0])) or d,
         "images[1].id: duplicate image id 1"),
        (lambda d: d["categories"].append({"id": 1, "name": "dog"}) or d,
         "categories[1].id: duplicate category id 1"),
        (lambda d: d["categories"].append({"id": 2, "name": "cat"}) or d,
         "categories[1].name: duplicate category name 'cat'"),
        (_set("annotations[2].id", 1), "annotations[2].id: duplicate annotation id 1"),
        (_set("images", {}), "images: expected a list, got dict"),
        (lambda d: d.pop("categories") and d, "categories: expected a list, got NoneType"),
    ],
)
def test_validation_errors_name_the_path(mutate, message):
    data = mutate(_valid())
    with pytest.raises(CocoFormatError) as info:
        from_coco(data, source="gt.json")
    assert str(info.value).startswith("gt.json: ")
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_valid_data_with_unique_ids_passes():
    images, categories, dets = from_coco(_valid())
    assert len(dets[0]) == 4 and categories == ["cat"]


def test_top_level_must_be_an_object():
    with pytest.raises(CocoFormatError, match="<coco>: expected a JSON object"):
        from_coco([])


# ----------------------------------------------------------------------------- files
def test_write_then_read(tmp_path):
    data = _sample_dataset()
    path = tmp_path / "out.json"
    write_coco(path, data)
    assert read_coco(path) == data
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left


def test_write_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_coco(tmp_path / "bad.json", {"x": float("nan")})
    assert not (tmp_path / "bad.json").exists()


def test_read_reports_the_json_error_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [],\n  "annotations": [1,, 2]}')
    with pytest.raises(CocoFormatError, match=r"broken\.json: invalid JSON at line 2 column 21"):
        read_coco(path)


def test_read_refuses_non_object_json(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[]")
    with pytest.raises(CocoFormatError, match="expected a JSON object"):
        read_coco(path)


# ----------------------------------------------------------------------------- hostile values
FLOAT32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("annotations[1].bbox", [1e308, 0, 1e308, 5]),
         "annotations[1].bbox: expected pixel coordinates within ±16777216, got [1e+308, 0, 1e+308, 5]"),
        (_set("annotations[0].bbox", [1, 1, 3.5e38, 5]), "annotations[0].bbox: expected pixel coordinates"),
        (_set("annotations[0].bbox", [FLOAT32_MAX, 0, 0, 0]), "annotations[0].bbox: expected pixel coordinates"),
        (_set("annotations[0].bbox", [-1e20, 0, 1, 1]), "annotations[0].bbox: expected pixel coordinates"),
        (_set("annotations[0].bbox", [0, 0, 10**400, 1]), "annotations[0].bbox: expected 4 numbers"),
        (_set("annotations[0].bbox", [0, 0, float("inf"), 1]), "annotations[0].bbox: expected 4 numbers"),
        (_set("annotations[0].bbox", [0, float("nan"), 1, 1]), "annotations[0].bbox: expected 4 numbers"),
        (_set("annotations[0].score", 10**400), "annotations[0].score: expected a finite number"),
        (_set("annotations[2].segmentation", [[0, 0, 1e30, 0, 1, 1]]),
         "annotations[2].segmentation[0]: expected pixel coordinates within ±16777216"),
        (_set("annotations[0].segmentation", [[]]),
         "annotations[0].segmentation[0]: expected an even number >= 6 of coordinates (3 or more x, y points), got 0"),
        (_set("annotations[0].segmentation", [[0, 0, 1, 1, 2, 2], []]), "annotations[0].segmentation[1]: expected"),
        (_set("annotations[0].segmentation", [[0, 0, 1, 1, 2]]), "got 5"),
        (_set("annotations[0].id", 2**63), "annotations[0].id: expected an integer from"),
        (_set("annotations[0].image_id", -(2**63) - 1), "annotations[0].image_id: expected an integer from"),
        (_set("images[0].width", 2**31), "images[0].width: expected an integer from 1 to 2147483647"),
    ],
)
def test_values_that_do_not_fit_what_they_become_are_refused(mutate, message):
    """Every number must be finite and fit its stored type (float32 coordinates, 64-bit ids,
    32-bit image sizes) once converted; the message names the field."""
    with pytest.raises(CocoFormatError) as info:
        from_coco(mutate(_valid()), source="gt.json")
    assert message in str(info.value)


def test_messages_quote_a_huge_or_deep_value_briefly():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for bad in ([0.5] * 100_000, deep, "x" * 100_000, 7**2000):
        with pytest.raises(CocoFormatError) as info:
            from_coco(_set("annotations[0].bbox", [0, 0, 1, bad])(_valid()))
        assert "annotations[0].bbox: expected 4 numbers" in str(info.value) and len(str(info.value)) < 300


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=8),
    max_leaves=16,
)
COORDINATES = st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(10**40), max_value=10**40)


@settings(max_examples=300, deadline=None)
@given(
    bbox=st.lists(COORDINATES, min_size=4, max_size=4) | JSON_VALUES,
    segmentation=st.lists(st.lists(COORDINATES, max_size=8), max_size=2) | JSON_VALUES,
    score=COORDINATES | JSON_VALUES,
)
def test_any_annotation_gives_checked_detections_or_a_format_error(bbox, segmentation, score):
    data = _valid()
    data["annotations"][0].update(bbox=bbox, segmentation=segmentation, score=score)
    try:
        _, _, (det,) = from_coco(data, source="gt.json")
    except CocoFormatError as error:
        assert str(error).startswith("gt.json: annotations[0].")
        return
    assert np.isfinite(det.xyxy).all() and (np.abs(det.xyxy) <= 2**24).all()
    assert (det.xyxy[:, 2:] >= det.xyxy[:, :2]).all()
    for rings in det.polygons or ():
        for ring in rings:
            assert ring.shape[0] >= 3 and (np.abs(ring) <= 2**24).all()


def test_read_refuses_deep_nesting_and_huge_integers_with_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CocoFormatError, match=r"deep\.json: invalid JSON: arrays or objects nested too deeply"):
        read_coco(deep)
    digits = tmp_path / "digits.json"
    digits.write_text('{"images": [], "x": ' + "9" * 5000 + "}")
    with pytest.raises(CocoFormatError, match=r"digits\.json: invalid JSON: an integer of 5000 digits"):
        read_coco(digits)
    negative = tmp_path / "negative.json"
    negative.write_text('{"images": [-' + "1" * 101 + "]}")
    with pytest.raises(CocoFormatError, match="an integer of 101 digits"):
        read_coco(negative)
    fine = tmp_path / "fine.json"
    fine.write_text('{"big": ' + "1" * 100 + ', "nested": ' + "[" * 200 + "]" * 200 + "}")
    assert read_coco(fine)["big"] == int("1" * 100)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_write_coco_gives_the_mode_a_plain_open_would(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_coco(tmp_path / "new.json", {"images": []})
        with open(tmp_path / "plain.json", "w") as plain:
            plain.write("{}")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "new.json").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)


def test_write_coco_keeps_an_existing_files_mode(tmp_path):
    path = tmp_path / "kept.json"
    path.write_text("{}")
    path.chmod(0o640)
    write_coco(path, {"images": []})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and read_coco(path) == {"images": []}
    assert [p.name for p in tmp_path.iterdir()] == ["kept.json"]
