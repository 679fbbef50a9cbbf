"""COCO evaluation of an `EvalData`: faster-coco-eval objects built straight from it, one
evaluation, and COCO's greedy matching at one IoU.

`build_coco` makes faster-coco-eval ``COCO`` instances whose datasets hold what pycocotools
would hold after ``COCO(truth_json)`` and ``COCO.loadRes(pred_json)`` of the equivalent COCO
JSON, so evaluating them gives pycocotools' numbers. They are built from concatenated columns
(one dict per annotation, no deep copies, no ``loadRes`` pass):

- image id = sample index + 1 (``EvalData.sample_ids`` may start at 0, which COCO treats as
  "no image"); ``width``/``height`` from ``EvalData.sizes``.
- category id = class id + 1; every label of ``EvalData.labels`` is a category, so classes
  without truth are evaluated too (their AP is undefined).
- annotation ids count from 1 in concatenation order (sample by sample, then detection by
  detection): id 0 means "unmatched" inside COCO's matcher, so it is never used.
- ``bbox`` = ``[x1, y1, x2 - x1, y2 - y1]`` in float64 pixels from ``Detections.xyxy``.
- ``area``: box area for ``bbox`` evaluation (as ``loadRes`` computes it for results),
  mask pixel count for ``segm`` evaluation.
- truth ``iscrowd`` from ``truth.data["iscrowd"]`` when present (else 0); results are never crowd.
- ``segm``: masks are RLE-encoded by the project's COCO mask codec
  (`serverless.convert.coco.encode_masks`, faster-coco-eval's encoder: pycocotools' encoding).

`run_coco` runs one ``COCOeval_faster`` evaluation, which gives the summary, the per-class APs
and the PR curves at the chosen IoU (added to its IoU thresholds when it is not one of COCO's
ten). Two things are done here instead, each for a reason `run_coco` states: box IoU matrices
are computed in one vectorised pass (bit-identical to COCO's) and handed to the evaluation, and
COCO's greedy matching at the chosen IoU is redone in NumPy on the run's IoU matrices.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from sync.evaluate.data import EvalData, EvalError

__all__ = ["IOU_TYPES", "CocoPair", "CocoRun", "build_coco", "paused_gc", "run_coco"]

IOU_TYPES = ("bbox", "segm")


@dataclass(frozen=True, eq=False)
class CocoPair:
    """COCO truth (``gt``) and results (``dt``) of one `EvalData`, plus the maps back to it.

    Annotation id ``k`` of ``gt`` is row ``k - 1`` of the ``truth_*`` columns; annotation id
    ``k`` of ``dt`` is row ``k - 1`` of the ``pred_*`` columns.
    """

    gt: Any
    """faster_coco_eval.COCO with the truth."""
    dt: Any
    """faster_coco_eval.COCO with the predictions (as ``loadRes`` would build it)."""
    iou_type: str
    truth_sample: np.ndarray
    """int64: index into ``EvalData`` samples of each truth row."""
    truth_index: np.ndarray
    """int64: index within that sample's truth `Detections`."""
    truth_class: np.ndarray
    """int64: class id of each truth row."""
    truth_crowd: np.ndarray
    """bool: truth row is a crowd region."""
    pred_sample: np.ndarray
    pred_index: np.ndarray
    pred_class: np.ndarray
    pred_score: np.ndarray
    """float32: the stored score of each prediction row."""
    truth_bbox: np.ndarray
    """float64 (N, 4): COCO ``[x, y, w, h]`` of each truth row's box."""
    pred_bbox: np.ndarray
    """float64 (N, 4): the same for each prediction row."""
    n_classes: int
    max_per_image_class: int
    """The largest number of predictions of one class in one image (0 when none)."""


def _columns(items: tuple, *, crowd: bool) -> dict[str, np.ndarray]:
    counts = np.fromiter((len(d) for d in items), dtype=np.int64, count=len(items))
    total = int(counts.sum())
    sample = np.repeat(np.arange(len(items), dtype=np.int64), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(items) else np.zeros(0, np.int64)
    index = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
    if total:
        xyxy = np.concatenate([d.xyxy for d in items]).astype(np.float64)
        cls = np.concatenate([d.class_ids for d in items]).astype(np.int64)
        score = np.concatenate([d.scores for d in items])
    else:
        xyxy, cls, score = np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, np.float32)
    out = {"sample": sample, "index": index, "xyxy": xyxy, "cls": cls, "score": score}
    if crowd:
        flags = [
            np.asarray(d.data["iscrowd"], dtype=bool) if "iscrowd" in d.data else np.zeros(len(d), bool) for d in items
        ]
        out["crowd"] = np.concatenate(flags) if total else np.zeros(0, bool)
    return out


def _rles(items: tuple, side: str, data: EvalData) -> tuple[list[dict], np.ndarray]:
    """RLE and pixel area of every mask of ``items`` in concatenation order."""
    from serverless.convert.coco import encode_masks

    rles: list[dict] = []
    areas: list[np.ndarray] = []
    for i, det in enumerate(items):
        if not len(det):
            continue
        masks = det.masks
        width, height = (int(v) for v in data.sizes[i])
        if masks is None or masks.shape[1:] != (height, width):
            shape = None if masks is None else masks.shape[1:]
            raise EvalError(
                f"iou_type 'segm': {side} of sample {int(data.sample_ids[i])} needs full-frame masks of "
                f"{height}x{width} (height x width), got {shape}"
            )
        rles.extend(encode_masks(masks))
        areas.append(masks.sum(axis=(1, 2), dtype=np.int64))
    area = np.concatenate(areas).astype(np.float64) if areas else np.zeros(0)
    return rles, area


def _xywh(xyxy: np.ndarray) -> np.ndarray:
    """COCO ``bbox`` rows ``[x, y, w, h]`` of ``xyxy`` rows."""
    bbox = np.empty_like(xyxy)
    bbox[:, :2] = xyxy[:, :2]
    bbox[:, 2:] = xyxy[:, 2:] - xyxy[:, :2]
    return bbox


def _annotation_dicts(
    data: EvalData, iou_type: str, t: dict[str, np.ndarray], p: dict[str, np.ndarray], t_bbox: np.ndarray,
    p_bbox: np.ndarray,
) -> tuple[list[dict], list[dict]]:
    """The truth and result annotation dicts (see the module docstring), from the columns."""
    t_ids = np.arange(1, len(t["cls"]) + 1).tolist()
    p_ids = np.arange(1, len(p["cls"]) + 1).tolist()
    t_img = (t["sample"] + 1).tolist()
    p_img = (p["sample"] + 1).tolist()
    t_cat = (t["cls"] + 1).tolist()
    p_cat = (p["cls"] + 1).tolist()
    t_crowd = t["crowd"].astype(np.int64).tolist()
    # float32 scores widened to float64, exactly as json.dumps(float(score)) would carry them
    p_score = p["score"].astype(np.float64).tolist()
    if iou_type == "bbox":
        t_area, p_area = t_bbox[:, 2] * t_bbox[:, 3], p_bbox[:, 2] * p_bbox[:, 3]
        gt_anns = [
            {"id": a, "image_id": im, "category_id": c, "bbox": b, "area": ar, "iscrowd": cr}
            for a, im, c, b, ar, cr in zip(t_ids, t_img, t_cat, t_bbox.tolist(), t_area.tolist(), t_crowd)
        ]
        dt_anns = [
            {"id": a, "image_id": im, "category_id": c, "bbox": b, "score": s, "area": ar, "iscrowd": 0}
            for a, im, c, b, s, ar in zip(p_ids, p_img, p_cat, p_bbox.tolist(), p_score, p_area.tolist())
        ]
        return gt_anns, dt_anns
    from faster_coco_eval.core import mask as mask_utils

    t_rle, t_marea = _rles(data.truth, "truth", data)
    p_rle, p_marea = _rles(data.pred, "pred", data)
    # loadRes derives a result's bbox from its mask (unused by mask IoU, kept for fidelity)
    mask_bbox = np.asarray(mask_utils.toBbox(p_rle), dtype=np.float64).reshape(-1, 4) if p_rle else p_bbox
    gt_anns = [
        {"id": a, "image_id": im, "category_id": c, "bbox": b, "area": ar, "iscrowd": cr, "segmentation": r}
        for a, im, c, b, ar, cr, r in zip(t_ids, t_img, t_cat, t_bbox.tolist(), t_marea.tolist(), t_crowd, t_rle)
    ]
    dt_anns = [
        {"id": a, "image_id": im, "category_id": c, "bbox": b, "score": s, "area": ar, "iscrowd": 0, "segmentation": r}
        for a, im, c, b, s, ar, r in zip(p_ids, p_img, p_cat, mask_bbox.tolist(), p_score, p_marea.tolist(), p_rle)
    ]
    return gt_anns, dt_anns


def build_coco(data: EvalData, iou_type: str = "bbox") -> CocoPair:
    """COCO truth and results of ``data`` for ``iou_type`` ("bbox" or "segm").

    Raises `EvalError` for an unknown ``iou_type`` or, with "segm", missing masks.
    """
    if iou_type not in IOU_TYPES:
        raise EvalError(f"iou_type must be one of {', '.join(IOU_TYPES)}, got {iou_type!r}")
    if iou_type == "segm" and not data.has_masks:
        raise EvalError("iou_type 'segm' needs masks on both truth and pred of every sample; load them with masks")
    from faster_coco_eval import COCO

    t = _columns(data.truth, crowd=True)
    p = _columns(data.pred, crowd=False)
    images = [
        {"id": i + 1, "width": int(w), "height": int(h), "file_name": uri}
        for i, ((w, h), uri) in enumerate(zip(np.asarray(data.sizes).tolist(), data.uris))
    ]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(data.labels)]

    t_bbox, p_bbox = _xywh(t["xyxy"]), _xywh(p["xyxy"])
    gt_anns, dt_anns = _annotation_dicts(data, iou_type, t, p, t_bbox, p_bbox)

    gt = COCO({"images": images, "annotations": gt_anns, "categories": categories}, print_function=_quiet)
    dt = COCO(
        {"images": list(images), "annotations": dt_anns, "categories": [dict(c) for c in categories]},
        print_function=_quiet,
    )
    if len(p["cls"]):
        group = p["sample"] * max(len(data.labels), 1) + p["cls"]
        max_group = int(np.bincount(group).max())
    else:
        max_group = 0
    return CocoPair(
        gt=gt,
        dt=dt,
        iou_type=iou_type,
        truth_sample=t["sample"],
        truth_index=t["index"],
        truth_class=t["cls"],
        truth_crowd=t["crowd"],
        pred_sample=p["sample"],
        pred_index=p["index"],
        pred_class=p["cls"],
        pred_score=p["score"],
        truth_bbox=t_bbox,
        pred_bbox=p_bbox,
        n_classes=len(data.labels),
        max_per_image_class=max_group,
    )


def _quiet(*_args: object, **_kwargs: object) -> None:
    """faster-coco-eval's progress messages are not wanted in reports."""



@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector.

    Building and evaluating COCO objects allocates a dozen Python objects per annotation (none
    of them in reference cycles, so reference counting frees them); with the collector on,
    each allocation burst triggers full-heap scans that cost a quarter of the run or more.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --------------------------------------------------------------------------- groups and IoU


def _ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in lengths])`` without the loop."""
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)


@dataclass(frozen=True, eq=False)
class _Groups:
    """The (image, class) pairs with both predictions and truth, COCO's unit of matching.

    ``dt_rows[dt_start[g] : dt_start[g] + n_dt[g]]`` are group ``g``'s prediction rows in COCO's
    order (descending score, stable); ``gt_rows[gt_start[g] : ...]`` its truth rows in stored
    order. The IoU of the ``d``-th prediction and ``j``-th truth of group ``g`` is
    ``iou[iou_start[g] + d * n_gt[g] + j]`` (the layout of COCO's per-pair IoU matrices).
    """

    sample: np.ndarray
    cls: np.ndarray
    dt_rows: np.ndarray
    dt_start: np.ndarray
    n_dt: np.ndarray
    gt_rows: np.ndarray
    gt_start: np.ndarray
    n_gt: np.ndarray
    iou_start: np.ndarray


def _groups(pair: CocoPair) -> _Groups:
    k = max(pair.n_classes, 1)
    p_key = pair.pred_sample * k + pair.pred_class
    t_key = pair.truth_sample * k + pair.truth_class
    keys = np.intersect1d(p_key, t_key)
    p_rows = np.flatnonzero(np.isin(p_key, keys))
    t_rows = np.flatnonzero(np.isin(t_key, keys))
    # lexsort: last key first; every sort here is stable, so ties keep the stored order
    score = pair.pred_score.astype(np.float64)[p_rows]
    dt_rows = p_rows[np.lexsort((p_rows, -score, p_key[p_rows]))]
    gt_rows = t_rows[np.argsort(t_key[t_rows], kind="stable")]
    n_dt = np.searchsorted(p_key[dt_rows], keys, side="right") - np.searchsorted(p_key[dt_rows], keys, side="left")
    n_gt = np.searchsorted(t_key[gt_rows], keys, side="right") - np.searchsorted(t_key[gt_rows], keys, side="left")
    sizes = n_dt * n_gt
    return _Groups(
        sample=keys // k,
        cls=keys % k,
        dt_rows=dt_rows,
        dt_start=np.cumsum(n_dt) - n_dt,
        n_dt=n_dt,
        gt_rows=gt_rows,
        gt_start=np.cumsum(n_gt) - n_gt,
        n_gt=n_gt,
        iou_start=np.cumsum(sizes) - sizes,
    )


def _pair_index(groups: _Groups) -> tuple[np.ndarray, np.ndarray]:
    """Prediction row and truth row of every IoU entry, in the layout of `_Groups`."""
    per_dt = np.repeat(groups.n_gt, groups.n_dt)  # one entry per (prediction, truth) pair
    dt_pos = np.repeat(np.arange(len(groups.dt_rows)), per_dt)
    group_of_dt = np.repeat(np.arange(len(groups.n_dt)), groups.n_dt)
    gt_pos = np.repeat(groups.gt_start[group_of_dt], per_dt) + _ragged_arange(per_dt)
    return groups.dt_rows[dt_pos], groups.gt_rows[gt_pos]


def _box_ious(pair: CocoPair, groups: _Groups) -> np.ndarray:
    """COCO's box IoU (pycocotools ``maskApi.c`` ``bbIou``, operation for operation, so the
    values are bit-identical) of every pair of `_Groups`; a crowd truth's IoU is the
    intersection over the prediction's area."""
    dt, gt = _pair_index(groups)
    d = pair.pred_bbox[dt]
    g = pair.truth_bbox[gt]
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    da = d[:, 2] * d[:, 3]
    ga = g[:, 2] * g[:, 3]
    inter = w * h
    union = np.where(pair.truth_crowd[gt], da, da + ga - inter)
    overlap = (w > 0) & (h > 0)
    out = np.zeros(len(dt))
    np.divide(inter, union, out=out, where=overlap)
    return out


@functools.cache
def _box_evaluator_class() -> type:
    """``COCOeval_faster`` given its box IoU matrices (faster-coco-eval is imported lazily).

    The one override of faster-coco-eval in this project, for speed only: its ``computeIoU``
    is a Python method called once per (image, category) pair with both truth and
    predictions (about 33,000 calls, 0.5 to 0.6 s, for the 5,000-image benchmark, where the
    whole of `evaluate_detections` takes about 1.2 s; see docs/benchmarks.md). `_box_ious`
    computes the same matrices (bit-identical, tested) in one vectorised pass. Everything
    else, and every mask IoU, is faster-coco-eval's own.
    """
    from faster_coco_eval import COCOeval_faster

    class GivenBoxIoU(COCOeval_faster):
        """Looks the IoU matrix of each (image, category) up instead of computing it."""

        def __init__(self, *args: Any, ious: dict[tuple[int, int], np.ndarray], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.given_ious = ious

        def computeIoU(self, imgId: int, catId: int) -> np.ndarray:  # faster-coco-eval's names
            return self.given_ious[int(imgId), int(catId)]

    return GivenBoxIoU


# --------------------------------------------------------------------------- matching


def _last_best(values: np.ndarray, candidate: np.ndarray, starts: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Per segment, the position of the last candidate with the largest value (-1 if none)."""
    key = np.where(candidate, values, -np.inf)
    best = np.maximum.reduceat(key, starts)
    hit = candidate & (key == best[segment])
    return np.maximum.reduceat(np.where(hit, np.arange(len(key)), -1), starts)


def _greedy_match(pair: CocoPair, groups: _Groups, ious: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """COCO's greedy matching at one IoU threshold over area "all" (faster-coco-eval's
    ``MatchDetectionsToGroundTruth``, vectorised over all groups, one prediction rank at a time).

    Per group, predictions in descending score order each take, among the truth not yet taken
    with IoU >= threshold, the non-crowd one of highest IoU (ties: the later one); only when
    there is none, the crowd region of highest IoU (crowd regions can be taken many times).
    Returns, per prediction row, the matched truth row (-1) and the IoU (-1).
    """
    threshold = min(threshold, 1 - 1e-10)
    n_pred = len(pair.pred_class)
    truth_row = np.full(n_pred, -1, np.int64)
    match_iou = np.full(n_pred, -1.0)
    taken = np.zeros(len(groups.gt_rows), bool)
    crowd_pos = pair.truth_crowd[groups.gt_rows]
    max_rank = int(groups.n_dt.max()) if len(groups.n_dt) else 0
    for rank in range(max_rank):
        active = np.flatnonzero(groups.n_dt > rank)
        lengths = groups.n_gt[active]
        local = _ragged_arange(lengths)
        entry = np.repeat(groups.iou_start[active] + rank * lengths, lengths) + local
        pos = np.repeat(groups.gt_start[active], lengths) + local
        values = ious[entry]
        crowd = crowd_pos[pos]
        ok = (values >= threshold) & ~(taken[pos] & ~crowd)
        starts = np.cumsum(lengths) - lengths
        segment = np.repeat(np.arange(len(active)), lengths)
        choice = _last_best(values, ok & ~crowd, starts, segment)
        fallback = choice < 0
        if fallback.any():
            choice[fallback] = _last_best(values, ok & crowd, starts, segment)[fallback]
        hit = choice >= 0
        chosen = choice[hit]
        rows = groups.dt_rows[groups.dt_start[active[hit]] + rank]
        truth_row[rows] = groups.gt_rows[pos[chosen]]
        match_iou[rows] = values[chosen]
        taken[pos[chosen]] = True
    return truth_row, match_iou


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True, eq=False)
class CocoRun:
    """What one COCO evaluation of a `CocoPair` gives (see `run_coco`)."""

    stats: np.ndarray
    """float64 (12,): COCO's summary (AP, AP50, AP75, AP S/M/L, AR 1/10/100, AR S/M/L); -1 = undefined."""
    precision: np.ndarray
    """float64 (10, 101, K): interpolated precision per IoU .50:.95, recall point and category
    (area "all", 100 detections per image); -1 where the category has no truth."""
    iou: float
    curve_precision: np.ndarray
    """float64 (101, K): interpolated precision at ``iou`` over every prediction; -1 = no truth."""
    truth_row: np.ndarray
    """int64 per prediction row: the truth row (possibly a crowd region) it matched at ``iou``, or -1."""
    match_iou: np.ndarray
    """float64 per prediction row: the IoU of that match (crowd: intersection over the
    prediction's area), or -1."""


def _summary(precision: np.ndarray, recall: np.ndarray, params: Any) -> np.ndarray:
    """pycocotools' ``COCOeval.summarize()`` numbers for detection, read at maxDets 1/10/100
    over COCO's ten IoU thresholds (``precision``/``recall`` hold only those).

    faster-coco-eval's own ``summarize`` cannot serve: it reads AP at the last ``maxDets``
    (which `run_coco` raises above 100 when an image holds more predictions of one class),
    averages over every threshold of ``params.iouThrs`` (which may hold the chosen IoU as an
    eleventh) and lays its numbers out by the area ranges evaluated.
    """
    labels = list(params.areaRngLbl)
    max_dets = list(params.maxDets)

    def mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    def ap(iou_thr: float | None = None, area: str = "all") -> float:
        if area not in labels:
            return float("nan")  # area range not evaluated
        s = precision if iou_thr is None else precision[np.flatnonzero(thresholds == iou_thr)]
        return mean(s[:, :, :, labels.index(area), max_dets.index(100)])

    def ar(max_det: int = 100, area: str = "all") -> float:
        if area not in labels:
            return float("nan")
        return mean(recall[:, :, labels.index(area), max_dets.index(max_det)])

    thresholds = np.asarray(params.iouThrs)[: len(precision)]
    return np.array(
        [
            ap(), ap(0.5), ap(0.75), ap(area="small"), ap(area="medium"), ap(area="large"),
            ar(1), ar(10), ar(100), ar(area="small"), ar(area="medium"), ar(area="large"),
        ]
    )


def _evaluator(pair: CocoPair, groups: _Groups) -> tuple[Any, np.ndarray | None]:
    """The ``COCOeval_faster`` of ``pair`` (for boxes given its IoU matrices) and those box IoUs."""
    if pair.iou_type != "bbox":
        from faster_coco_eval import COCOeval_faster

        return COCOeval_faster(pair.gt, pair.dt, pair.iou_type, print_function=_quiet), None
    ious = _box_ious(pair, groups)
    shapes = zip(groups.iou_start.tolist(), groups.n_dt.tolist(), groups.n_gt.tolist())
    keys = zip((groups.sample + 1).tolist(), (groups.cls + 1).tolist())
    given = {key: ious[start : start + d * g].reshape(d, g) for key, (start, d, g) in zip(keys, shapes)}
    return _box_evaluator_class()(pair.gt, pair.dt, "bbox", print_function=_quiet, ious=given), ious


def run_coco(pair: CocoPair, iou: float = 0.5, *, area_ranges: bool = False) -> CocoRun:
    """One faster-coco-eval evaluation of ``pair``, plus COCO's greedy matches at ``iou``.

    The evaluation is COCO's standard one (IoU .50:.95, 1/10/100 detections per image) on
    area "all"; with ``area_ranges`` also on small/medium/large objects, which gives all 12
    summary numbers but costs about 40% more (the C++ evaluation runs once per area range).
    Without it, the area-range numbers (stats 3-5 and 9-11) are NaN and the six others (AP,
    AP50, AP75, AR1, AR10, AR100) and every per-class AP are the same either way. When an
    image holds more than 100 predictions of one class the evaluation also runs at that many
    (an extra ``maxDets`` entry, which leaves the standard numbers unchanged: COCO's greedy
    matching is prefix-stable), so every prediction counts. When ``iou`` is not one of COCO's
    ten thresholds it is evaluated as an eleventh, left out of the summary and the APs.

    The PR curves at ``iou`` are faster-coco-eval's (its interpolated precision at that
    threshold, over every prediction). The matches at ``iou`` are COCO's greedy matching
    redone in NumPy (`_greedy_match`) on the run's own IoU matrices: faster-coco-eval reports
    matches only as ``eval["matched"]``, the union over all its IoU thresholds and area ranges
    keeping the largest IoU per pair, which does not say which truth a prediction matched at
    one threshold; a second evaluation at ``iou`` alone gives them but costs 0.3 to 0.5 s on
    the benchmark (a quarter to a third of the whole), against about 15 ms here.
    """
    groups = _groups(pair)
    with paused_gc():
        evaluator, ious = _evaluator(pair, groups)
        params = evaluator.params
        standard = len(params.iouThrs)
        if not np.any(params.iouThrs == iou):
            params.iouThrs = np.append(params.iouThrs, iou)
        at_iou = int(np.flatnonzero(params.iouThrs == iou)[0])
        if pair.max_per_image_class > 100:
            params.maxDets = [1, 10, 100, pair.max_per_image_class]
        if not area_ranges:
            keep = list(params.areaRngLbl).index("all")
            params.areaRng = [params.areaRng[keep]]
            params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
        if ious is None:  # masks: the IoU matrices faster-coco-eval computed from the RLEs
            blocks = [
                np.asarray(evaluator.ious[key], dtype=np.float64).reshape(-1)
                for key in zip((groups.sample + 1).tolist(), (groups.cls + 1).tolist())
            ]
            ious = np.concatenate(blocks) if blocks else np.zeros(0)
    params = evaluator.params
    all_area = list(params.areaRngLbl).index("all")
    precision = np.asarray(evaluator.eval["precision"], dtype=np.float64)[:, :, :, all_area]  # T x R x K x M
    recall = np.asarray(evaluator.eval["recall"], dtype=np.float64)
    stats = _summary(evaluator.eval["precision"][:standard], recall[:standard], params)
    truth_row, match_iou = _greedy_match(pair, groups, ious, float(iou))
    return CocoRun(
        stats=stats,
        precision=precision[:standard, :, :, params.maxDets.index(100)],
        iou=float(iou),
        curve_precision=precision[at_iou, :, :, -1],
        truth_row=truth_row,
        match_iou=match_iou,
    )
