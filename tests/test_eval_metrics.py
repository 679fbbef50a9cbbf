"""COCO metrics and per-prediction matching (`sync.evaluate.metrics`), against plain pycocotools.

pycocotools (COCO + loadRes + COCOeval on COCO JSON built here with a plain loop and
pycocotools' own RLE encoder) is the independent oracle: summary stats, per-class AP, PR
curves and, from its ``evalImgs``, the TP/FP/FN outcome of every prediction and truth.
The helpers above the tests are shared with tests/test_eval_sweep.py.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serverless.detections import Detections
from sync.evaluate.data import EvalData, EvalError
from sync.evaluate.metrics import DetectionMetrics, evaluate_detections

WIDTH, HEIGHT = 64, 48


def det(
    boxes: Sequence[Sequence[float]],
    classes: Sequence[int],
    labels: Sequence[str],
    *,
    scores: Sequence[float] | None = None,
    crowd: Sequence[bool] | None = None,
    masks: np.ndarray | None = None,
) -> Detections:
    """A `Detections` from plain lists (truth when ``crowd`` is given)."""
    xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    ids = np.asarray(classes, dtype=np.int64).reshape(-1)
    data = {"annotation_id": np.arange(len(ids), dtype=np.int64)}
    if crowd is not None:
        data["iscrowd"] = np.asarray(crowd, dtype=bool).reshape(-1)
        data["pre_annotation_id"] = np.full(len(ids), -1, np.int64)
    return Detections(
        xyxy=xyxy,
        scores=np.ones(len(ids), np.float32) if scores is None else np.asarray(scores, np.float32),
        class_ids=ids,
        labels=np.asarray([labels[i] for i in ids], dtype=str),
        masks=masks,
        data=data,
    )


def eval_data(
    labels: Sequence[str], truth: Sequence[Detections], pred: Sequence[Detections], *, size=(WIDTH, HEIGHT), **kw
) -> EvalData:
    n = len(truth)
    return EvalData(
        labels=tuple(labels),
        sample_ids=np.arange(n, dtype=np.int64),
        uris=tuple(f"img/{i}.png" for i in range(n)),
        sizes=np.tile(np.asarray(size, dtype=np.int64), (n, 1)),
        truth=tuple(truth),
        pred=tuple(pred),
        **kw,
    )


def _mask_of(box: np.ndarray, ellipse: bool, width: int, height: int) -> np.ndarray:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    mask = np.zeros((height, width), bool)
    if ellipse:
        yy, xx = np.mgrid[0:height, 0:width]
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, max((x2 - x1) / 2, 0.5), max((y2 - y1) / 2, 0.5)
        mask = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0
    else:
        mask[y1:y2, x1:x2] = True
    return mask


def synthetic(
    seed: int, *, images: int = 40, classes: int = 4, masks: bool = False, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> EvalData:
    """Jittered truth boxes as predictions, some relabeled, plus false positives and misses;
    about 10% of the truth is crowd; some images have no truth, no predictions, or neither.
    Objects span 3 px to 70% of the frame (``size`` = width, height)."""
    rng = np.random.default_rng(seed)
    width, height = size
    frame = np.array([width, height], dtype=np.float64)
    labels = tuple(f"c{i}" for i in range(classes))
    truth, pred = [], []
    for i in range(images):
        kind = i % 10
        k = 0 if kind in (0, 1) else int(rng.integers(1, 8))
        xy = rng.uniform(0, frame - 8, (k, 2))
        wh = rng.uniform(3, 0.7 * frame, (k, 2))
        tb = np.hstack([xy, np.minimum(xy + wh, frame)])
        tc = rng.integers(0, classes, k)
        crowd = rng.random(k) < 0.1
        hit = rng.random(k) < 0.75
        box_size = np.hstack([tb[hit, 2:] - tb[hit, :2]] * 2)
        pb = tb[hit] + rng.normal(0, 0.12, (int(hit.sum()), 4)) * box_size
        pc = tc[hit].copy()
        relabel = rng.random(len(pc)) < 0.15
        pc[relabel] = rng.integers(0, classes, int(relabel.sum()))
        f = 0 if kind in (0, 2) else int(rng.integers(0, 4))
        fxy = rng.uniform(0, frame - 8, (f, 2))
        fb = np.hstack([fxy, np.minimum(fxy + rng.uniform(3, 0.5 * frame, (f, 2)), frame)])
        boxes = np.vstack([pb, fb]).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        if kind == 2:
            boxes = boxes[:0]
        cls = np.concatenate([pc, rng.integers(0, classes, f)])[: len(boxes)]
        scores = rng.uniform(0.05, 1.0, len(boxes))
        tm = pm = None
        if masks:
            empty = np.zeros((0, height, width), bool)
            tm = np.stack([_mask_of(b, not c, width, height) for b, c in zip(tb, crowd)]) if k else empty
            pm = np.stack([_mask_of(b, True, width, height) for b in boxes]) if len(boxes) else empty
        truth.append(det(tb, tc, labels, crowd=crowd, masks=tm))
        pred.append(det(boxes, cls, labels, scores=scores, masks=pm))
    return eval_data(labels, truth, pred, size=size)


def coco_json(data: EvalData, iou_type: str = "bbox") -> tuple[dict, list[dict]]:
    """The equivalent COCO JSON, built the plain way (one loop, pycocotools' own RLE encoder):
    truth dataset and results list. Results carry no "bbox" for segm, so loadRes takes the
    mask area (as detectron2 does)."""
    from pycocotools import mask as mask_utils

    images = [{"id": i + 1, "width": int(w), "height": int(h)} for i, (w, h) in enumerate(data.sizes.tolist())]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(data.labels)]
    anns, results = [], []
    for i, (t, p) in enumerate(zip(data.truth, data.pred)):
        crowd = t.data["iscrowd"] if "iscrowd" in t.data else np.zeros(len(t), bool)
        for j in range(len(t)):
            x1, y1, x2, y2 = (float(v) for v in t.xyxy[j])
            ann = {
                "id": len(anns) + 1,
                "image_id": i + 1,
                "category_id": int(t.class_ids[j]) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": int(crowd[j]),
            }
            if iou_type == "segm":
                rle = mask_utils.encode(np.asfortranarray(t.masks[j].astype(np.uint8)))
                ann["segmentation"] = rle
                ann["area"] = float(mask_utils.area(rle))
            anns.append(ann)
        for j in range(len(p)):
            x1, y1, x2, y2 = (float(v) for v in p.xyxy[j])
            res = {"image_id": i + 1, "category_id": int(p.class_ids[j]) + 1, "score": float(p.scores[j])}
            if iou_type == "segm":
                res["segmentation"] = mask_utils.encode(np.asfortranarray(p.masks[j].astype(np.uint8)))
            else:
                res["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            results.append(res)
    return {"images": images, "annotations": anns, "categories": categories}, results


def pycocotools_eval(data: EvalData, iou_type: str = "bbox", *, max_dets: int = 100, iou_thrs=None):
    """A plain pycocotools COCOeval (evaluate, accumulate, summarize) of ``data`` (at
    ``iou_thrs`` instead of COCO's ten IoU thresholds when given)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_json, results = coco_json(data, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_json
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
        if not results:
            dt.dataset = {"images": gt_json["images"], "annotations": [], "categories": gt_json["categories"]}
            dt.createIndex()
        e = COCOeval(gt, dt, iou_type)
        if max_dets != 100:
            e.params.maxDets = [1, 10, max_dets]
        if iou_thrs is not None:
            e.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def pycocotools_matches(e, iou: float) -> dict[str, np.ndarray]:
    """Per-prediction and per-truth outcome at ``iou`` from pycocotools' ``evalImgs`` (area "all",
    the largest maxDets): tp / ignored / matched truth row per result row; fn per truth row."""
    t = int(np.flatnonzero(np.isclose(e.params.iouThrs, iou))[0])
    n_dt = len(e.cocoDt.anns)
    n_gt = len(e.cocoGt.anns)
    tp = np.zeros(n_dt, bool)
    ignored = np.zeros(n_dt, bool)
    truth_row = np.full(n_dt, -1, np.int64)
    fn = np.zeros(n_gt, bool)
    all_area = list(e.params.areaRng[0])
    for ev in e.evalImgs:
        if ev is None or list(ev["aRng"]) != all_area:
            continue
        for d, dt_id in enumerate(ev["dtIds"]):
            gt_id = int(ev["dtMatches"][t, d])
            ignored[dt_id - 1] = bool(ev["dtIgnore"][t, d]) and gt_id > 0
            tp[dt_id - 1] = gt_id > 0 and not ev["dtIgnore"][t, d]
            truth_row[dt_id - 1] = gt_id - 1 if gt_id > 0 else -1
        for g, gt_id in enumerate(ev["gtIds"]):
            fn[gt_id - 1] = not ev["gtIgnore"][g] and int(ev["gtMatches"][t, g]) == 0
    return {"tp": tp, "ignored": ignored, "truth_row": truth_row, "fn": fn}


# --------------------------------------------------------------------------- parity with pycocotools


def _ap(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def _assert_matches_oracle(ours: DetectionMetrics, oracle, iou: float) -> None:
    want = pycocotools_matches(oracle, iou)
    table = ours.matches
    np.testing.assert_array_equal(table.tp, want["tp"])
    np.testing.assert_array_equal(table.ignored, want["ignored"])
    # the truth each prediction matched: map pycocotools' truth row to (sample, index in sample)
    matched = want["truth_row"] >= 0
    truth_index = np.full(len(table.tp), -1)
    truth_index[matched] = table.truth_det_index[want["truth_row"][matched]]
    np.testing.assert_array_equal(table.truth_index, truth_index)
    assert np.all(table.truth_sample_index[want["truth_row"][matched]] == table.sample_index[matched])
    np.testing.assert_array_equal(table.fn, want["fn"])
    labels = ours.labels
    for c, label in enumerate(labels):
        m = ours.per_class[label]
        assert m.tp == int(want["tp"][table.class_id == c].sum())
        assert m.fp == int((~want["tp"] & ~want["ignored"])[table.class_id == c].sum())
        assert m.fn == int(want["fn"][table.truth_class_id == c].sum())
    assert ours.overall.tp == int(want["tp"].sum())
    assert ours.overall.fp == int((~want["tp"] & ~want["ignored"]).sum())
    assert ours.overall.fn == int(want["fn"].sum())


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_parity_with_pycocotools(iou_type):
    data = synthetic(7, images=40, classes=4, masks=iou_type == "segm", size=(300, 220))
    oracle = pycocotools_eval(data, iou_type)
    t75 = int(np.flatnonzero(np.isclose(oracle.params.iouThrs, 0.75))[0])
    area_free = [0, 1, 2, 6, 7, 8]  # AP, AP50, AP75, AR1, AR10, AR100
    for iou, t in ((0.5, 0), (0.75, t75)):
        full = evaluate_detections(data, iou=iou, iou_type=iou_type, area_ranges=True)
        assert full.coco_stats.shape == (12,)
        np.testing.assert_allclose(full.coco_stats, oracle.stats, rtol=0, atol=1e-9)
        ours = evaluate_detections(data, iou=iou, iou_type=iou_type)  # area "all" only, the default
        np.testing.assert_allclose(ours.coco_stats[area_free], oracle.stats[area_free], rtol=0, atol=1e-9)
        assert np.isnan(np.delete(ours.coco_stats, area_free)).all()
        assert ours.to_dict() == full.to_dict()
        assert ours.overall.map == pytest.approx(oracle.stats[0], abs=1e-9)
        assert ours.overall.map50 == pytest.approx(oracle.stats[1], abs=1e-9)
        precision = oracle.eval["precision"]  # T x R x K x A x M
        for c, label in enumerate(data.labels):
            want_map = _ap(precision[:, :, c, 0, -1])
            want_map50 = _ap(precision[0, :, c, 0, -1])
            got = ours.per_class[label]
            assert (got.map is None) == (want_map is None)
            if want_map is not None:
                assert got.map == pytest.approx(want_map, abs=1e-9)
                assert got.map50 == pytest.approx(want_map50, abs=1e-9)
                recall, curve = ours.pr_curves[label]
                np.testing.assert_allclose(recall, oracle.params.recThrs, atol=1e-12)
                np.testing.assert_allclose(curve, precision[t, :, c, 0, -1], atol=1e-9)
        _assert_matches_oracle(ours, oracle, iou)
    # the data exercises what it claims to
    table = ours.matches
    assert table.ignored.any() and table.fp.any() and table.fn.any() and table.truth_crowd.any()
    assert np.all(oracle.stats[3:6] > -1)  # small, medium and large objects all present


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_parity_at_an_iou_outside_cocos_thresholds(iou_type):
    """At an IoU that is not one of COCO's ten (0.6 is not: COCO's third is 0.6000000000000001),
    the matches and the PR curve are pycocotools' at exactly that IoU, while the summary and
    the APs stay COCO's standard ones."""
    data = synthetic(11, images=40, classes=3, masks=iou_type == "segm", size=(300, 220))
    standard = pycocotools_eval(data, iou_type)
    area_free = [0, 1, 2, 6, 7, 8]
    for iou in (0.3, 0.6, 0.9):
        oracle = pycocotools_eval(data, iou_type, iou_thrs=[iou])
        ours = evaluate_detections(data, iou=iou, iou_type=iou_type)
        np.testing.assert_allclose(ours.coco_stats[area_free], standard.stats[area_free], rtol=0, atol=1e-9)
        for c, label in enumerate(data.labels):
            want = _ap(standard.eval["precision"][:, :, c, 0, -1])
            assert ours.per_class[label].map == (None if want is None else pytest.approx(want, abs=1e-9))
            if want is not None:
                np.testing.assert_allclose(ours.pr_curves[label][1], oracle.eval["precision"][0, :, c, 0, -1], atol=1e-9)
        _assert_matches_oracle(ours, oracle, iou)
        assert ours.to_dict() == evaluate_detections(data, iou=iou, iou_type=iou_type, area_ranges=True).to_dict()


def test_an_iou_exactly_at_the_threshold_matches():
    """IoU >= the chosen IoU matches, also when it is exactly that value (here 0.6 = 60/100,
    which COCO's own 0.6000000000000001 would miss)."""
    labels = ("a",)
    truth = det([[0, 0, 10, 10]], [0], labels, crowd=[False])
    pred = det([[0, 0, 10, 6]], [0], labels, scores=[0.9])
    data = eval_data(labels, [truth], [pred])
    m = evaluate_detections(data, iou=0.6)
    assert m.matches.tp.tolist() == [True] and m.matches.iou.tolist() == [0.6]
    assert m.pr_curves["a"][1].min() == 1.0
    _assert_matches_oracle(m, pycocotools_eval(data, iou_thrs=[0.6]), 0.6)
    assert evaluate_detections(data, iou=0.6000000000000001).overall.tp == 0


def test_box_iou_is_bit_identical_to_pycocotools():
    """The vectorised box IoU handed to faster-coco-eval equals pycocotools' maskApi bbIou exactly."""
    from pycocotools import mask as mask_utils

    from sync.evaluate.coco import _box_ious, _groups, build_coco

    data = synthetic(5, images=30, classes=3, size=(300, 220))
    pair = build_coco(data)
    groups = _groups(pair)
    ious = _box_ious(pair, groups)
    assert len(groups.n_dt) > 20 and pair.truth_crowd[groups.gt_rows].any()
    for g in range(len(groups.n_dt)):
        dt = groups.dt_rows[groups.dt_start[g] : groups.dt_start[g] + groups.n_dt[g]]
        gt = groups.gt_rows[groups.gt_start[g] : groups.gt_start[g] + groups.n_gt[g]]
        # pycocotools' order: predictions by descending score (stable), truth as stored
        assert np.all(np.diff(-pair.pred_score[dt].astype(np.float64)) >= 0)
        want = mask_utils.iou(
            pair.pred_bbox[dt].tolist(), pair.truth_bbox[gt].tolist(), pair.truth_crowd[gt].astype(np.uint8).tolist()
        )
        got = ious[groups.iou_start[g] : groups.iou_start[g] + len(dt) * len(gt)].reshape(len(dt), len(gt))
        assert np.array_equal(got, np.asarray(want).reshape(len(dt), len(gt)))


def test_parity_with_more_than_100_predictions_per_image_and_class():
    """COCO keeps 100 predictions per image for its numbers; the matches still cover all of them."""
    rng = np.random.default_rng(3)
    labels = ("a", "b")
    xy = rng.uniform(0, 50, (130, 2))
    boxes = np.hstack([xy, xy + rng.uniform(2, 12, (130, 2))])
    truth = det(boxes[:120], [0] * 120, labels, crowd=[False] * 120)
    pred = det(boxes[10:], [0] * 120, labels, scores=np.linspace(1.0, 0.01, 120))
    data = eval_data(labels, [truth], [pred])
    ours = evaluate_detections(data, area_ranges=True)
    np.testing.assert_allclose(ours.coco_stats, pycocotools_eval(data).stats, rtol=0, atol=1e-9)
    assert evaluate_detections(data).to_dict() == ours.to_dict()
    _assert_matches_oracle(ours, pycocotools_eval(data, max_dets=120), 0.5)
    # predictions 10..119 lie exactly on truth 10..119; those beyond COCO's 100 still match,
    # the last 10 (no truth under them) are false positives
    assert ours.matches.tp[100:110].all() and not ours.matches.tp[110:].any()
    assert ours.per_class["a"].tp == 110 and ours.per_class["a"].fn == 10 and ours.per_class["a"].fp == 10


# --------------------------------------------------------------------------- COCO pitfalls


def test_truth_with_the_first_annotation_id_counts():
    """pycocotools treats annotation id 0 as 'unmatched': the first truth must still match."""
    labels = ("cat",)
    truth = det([[10, 10, 30, 30]], [0], labels, crowd=[False])
    pred = det([[10, 10, 30, 30]], [0], labels, scores=[0.9])
    m = evaluate_detections(eval_data(labels, [truth], [pred]))
    assert (m.overall.tp, m.overall.fp, m.overall.fn) == (1, 0, 0)
    assert m.overall.map == pytest.approx(1.0) and m.overall.f1 == 1.0
    assert m.matches.truth_index.tolist() == [0] and m.matches.iou.tolist() == [1.0]


def test_equal_iou_goes_to_the_later_truth_as_in_pycocotools():
    labels = ("box",)
    truth = det([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0], labels, crowd=[False, False])
    pred = det([[1, 0, 11, 10], [1, 0, 11, 10]], [0, 0], labels, scores=[0.9, 0.8])
    data = eval_data(labels, [truth], [pred])
    m = evaluate_detections(data)
    # both IoUs are 90 / 110; COCO's scan keeps the last best, so the first prediction takes truth 1
    assert m.matches.truth_index.tolist() == [1, 0]
    assert m.matches.iou.tolist() == [90 / 110, 90 / 110]
    _assert_matches_oracle(m, pycocotools_eval(data), 0.5)


def test_crowd_region_is_neither_tp_nor_fp_nor_fn():
    labels = ("person",)
    truth = det([[0, 0, 40, 40], [45, 5, 60, 20], [0, 42, 10, 48]], [0, 0, 0], labels, crowd=[True, False, True])
    pred = det([[5, 5, 15, 15], [45, 5, 60, 20]], [0, 0], labels, scores=[0.9, 0.8])
    m = evaluate_detections(eval_data(labels, [truth], [pred]))
    t = m.matches
    assert t.ignored.tolist() == [True, False] and t.tp.tolist() == [False, True]
    assert t.truth_index.tolist() == [0, 1]
    # crowd IoU is the intersection over the prediction's own area: fully inside → 1
    assert t.iou[0] == pytest.approx(1.0)
    pc = m.per_class["person"]
    assert (pc.tp, pc.fp, pc.fn, pc.truth, pc.predictions) == (1, 0, 0, 1, 2)
    assert pc.precision == 1.0 and pc.recall == 1.0
    assert t.truth_matched.tolist() == [True, True, False]  # the missed crowd (row 2) is no FN
    assert not t.fn.any()


def test_empty_images():
    labels = ("a",)
    box = [[10, 10, 30, 30]]
    empty_t = det(np.zeros((0, 4)), [], labels, crowd=[])
    empty_p = det(np.zeros((0, 4)), [], labels, scores=[])
    only_pred = (empty_t, det(box + [[40, 5, 60, 25]], [0, 0], labels, scores=[0.9, 0.4]))
    only_truth = (det(box, [0], labels, crowd=[False]), empty_p)
    both = (det(box, [0], labels, crowd=[False]), det(box, [0], labels, scores=[0.7]))

    m = evaluate_detections(eval_data(labels, [only_pred[0]], [only_pred[1]]))
    assert (m.overall.tp, m.overall.fp, m.overall.fn, m.overall.truth) == (0, 2, 0, 0)
    assert m.overall.map is None and m.overall.precision == 0.0 and m.overall.recall is None

    m = evaluate_detections(eval_data(labels, [only_truth[0]], [only_truth[1]]))
    assert (m.overall.tp, m.overall.fp, m.overall.fn) == (0, 0, 1)
    assert m.overall.precision is None and m.overall.recall == 0.0 and m.overall.f1 == 0.0
    assert m.overall.map == 0.0 and m.pr_curves["a"][1].max() == 0.0

    m = evaluate_detections(eval_data(labels, [empty_t], [empty_p]))
    assert (m.overall.tp, m.overall.fp, m.overall.fn, m.overall.predictions) == (0, 0, 0, 0)
    assert m.overall.map is None and m.overall.f1 is None and m.pr_curves == {}

    # an image empty on both sides changes nothing
    pairs = [only_pred, only_truth, both]
    base = evaluate_detections(eval_data(labels, [t for t, _ in pairs], [p for _, p in pairs]))
    pairs.insert(1, (empty_t, empty_p))
    more = evaluate_detections(eval_data(labels, [t for t, _ in pairs], [p for _, p in pairs]))
    assert more.to_dict() == base.to_dict()
    assert (base.overall.tp, base.overall.fp, base.overall.fn) == (1, 2, 1)


def test_class_without_truth_has_no_map():
    labels = ("a", "ghost", "unused")
    truth = det([[10, 10, 30, 30]], [0], labels, crowd=[False])
    pred = det([[10, 10, 30, 30], [40, 10, 60, 30]], [0, 1], labels, scores=[0.9, 0.95])
    m = evaluate_detections(eval_data(labels, [truth], [pred]))
    ghost, unused = m.per_class["ghost"], m.per_class["unused"]
    assert ghost.map is None and ghost.map50 is None and ghost.recall is None
    assert (ghost.fp, ghost.predictions, ghost.precision, ghost.f1) == (1, 1, 0.0, 0.0)
    assert unused.to_dict() == {
        "map": None, "map50": None, "precision": None, "recall": None, "f1": None,
        "tp": 0, "fp": 0, "fn": 0, "truth": 0, "predictions": 0,
    }
    assert m.per_class["a"].map == pytest.approx(1.0)
    assert m.overall.map == pytest.approx(1.0)  # COCO averages over classes with truth only
    assert set(m.pr_curves) == {"a"}
    assert list(m.to_dict()["per_class"]) == list(labels)


# --------------------------------------------------------------------------- options


def test_bad_options_name_the_option():
    data = synthetic(1, images=3, classes=2)
    for bad in (0, 1, 1.5, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(EvalError, match="iou"):
            evaluate_detections(data, iou=bad)
    with pytest.raises(EvalError, match="iou_type"):
        evaluate_detections(data, iou_type="keypoints")
    with pytest.raises(EvalError, match="iou_type 'segm'"):
        evaluate_detections(data, iou_type="segm")


def test_to_dict_is_json_ready():
    import json

    m = evaluate_detections(synthetic(2, images=10, classes=3))
    d = json.loads(json.dumps(m.to_dict()))
    assert set(d) == {"overall", "per_class"}
    assert set(d["overall"]) == {"map", "map50", "precision", "recall", "f1", "tp", "fp", "fn", "truth", "predictions"}
    assert d["overall"]["tp"] == m.overall.tp


# --------------------------------------------------------------------------- properties


@st.composite
def _scenes(draw):
    n_classes = draw(st.integers(1, 3))
    labels = tuple(f"k{i}" for i in range(n_classes))
    n_images = draw(st.integers(1, 4))
    total_pred = draw(st.integers(0, 14))
    scores = (np.arange(total_pred, dtype=np.float64) + 1) / (total_pred + 1)  # distinct
    scores = scores[np.asarray(draw(st.permutations(range(total_pred))), dtype=np.int64)]
    box = st.tuples(st.integers(0, 50), st.integers(0, 36), st.integers(2, 14), st.integers(2, 12))

    def boxes(n):
        raw = draw(st.lists(box, min_size=n, max_size=n))
        return [[x, y, x + w, y + h] for x, y, w, h in raw]

    split = sorted(draw(st.lists(st.integers(0, total_pred), min_size=n_images - 1, max_size=n_images - 1)))
    bounds = [0, *split, total_pred]
    truth, pred = [], []
    for i in range(n_images):
        k = draw(st.integers(0, 4))
        tb = boxes(k)
        truth.append(det(np.reshape(tb, (-1, 4)), draw(st.lists(st.integers(0, n_classes - 1), min_size=k, max_size=k)),
                         labels, crowd=draw(st.lists(st.booleans(), min_size=k, max_size=k))))
        n = bounds[i + 1] - bounds[i]
        # predictions near the truth (to get matches) or anywhere
        pb = []
        for j in range(n):
            if tb and draw(st.booleans()):
                x1, y1, x2, y2 = tb[draw(st.integers(0, len(tb) - 1))]
                d = draw(st.integers(-2, 2))
                pb.append([max(x1 + d, 0), max(y1 + d, 0), x2 + d + 1, y2 + d + 1])
            else:
                pb.extend(boxes(1))
        pred.append(det(np.reshape(pb, (-1, 4)), draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)),
                        labels, scores=scores[bounds[i]:bounds[i + 1]]))
    return labels, truth, pred, draw(st.randoms(use_true_random=False))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenes())
def test_order_does_not_matter_and_counts_add_up(scene):
    labels, truth, pred, rnd = scene
    m = evaluate_detections(eval_data(labels, truth, pred))
    for c in [*m.per_class.values(), m.overall]:
        assert c.tp + c.fn == c.truth
        ignored = c.predictions - c.tp - c.fp
        assert ignored >= 0
    t = m.matches
    assert int(t.ignored.sum()) == m.overall.predictions - m.overall.tp - m.overall.fp
    assert not (t.tp & t.ignored).any()
    assert np.all((t.iou >= 0.5) == (t.truth_index >= 0))
    # each non-crowd truth is matched by at most one TP
    keys = t.sample_index[t.tp] * 1000 + t.truth_index[t.tp]
    assert len(np.unique(keys)) == len(keys)

    order = list(range(len(truth)))
    rnd.shuffle(order)
    perms = [np.asarray(rnd.sample(range(len(p)), len(p)), dtype=np.int64) for p in pred]
    shuffled = evaluate_detections(
        eval_data(labels, [truth[i] for i in order], [pred[i][perms[i]] for i in order])
    )
    assert shuffled.to_dict() == m.to_dict()
    np.testing.assert_array_equal(shuffled.coco_stats, m.coco_stats)
