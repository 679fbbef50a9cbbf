"""COCO metrics of a pre-label run against the truth, and the per-prediction matches.

`evaluate_detections` runs one faster-coco-eval evaluation (see `sync.evaluate.coco`) and
derives everything else from it with NumPy:

- mAP (IoU .50:.95) and mAP50, overall and per class: COCO's numbers (area "all", 100
  detections per image), identical to pycocotools on the equivalent COCO JSON.
- precision / recall / F1 at one IoU (``iou``, default 0.5) over every stored prediction,
  i.e. at the run's own score thresholds. Matching is COCO's: per image and class, predictions
  in descending score order each take the unmatched truth of highest IoU >= ``iou``; a
  prediction on a crowd region (``iscrowd``) is ignored (neither TP nor FP) and a missed crowd
  region is no FN.
- `MatchTable`: that matching, one row per prediction and per truth, computed once; the
  threshold sweep, hard-sample selection and reports all derive from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sync.evaluate.coco import IOU_TYPES, CocoPair, build_coco, paused_gc, run_coco
from sync.evaluate.data import EvalData, EvalError

__all__ = ["ClassMetrics", "DetectionMetrics", "MatchTable", "evaluate_detections"]


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class (or of all classes together).

    ``map``/``map50`` are COCO AP over IoU .50:.95 and at .50 (None when undefined: no truth).
    ``precision``/``recall``/``f1`` and the counts are at the evaluation's IoU over every
    prediction; precision is None without counted predictions, recall None without truth,
    F1 = 2TP / (2TP + FP + FN) is None when both are missing. ``truth`` counts non-crowd
    truth; ``predictions`` counts every prediction, including those ignored on crowd regions
    (so ``tp + fp + ignored == predictions`` and ``tp + fn == truth``).
    """

    map: float | None
    map50: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    tp: int
    fp: int
    fn: int
    truth: int
    predictions: int

    @classmethod
    def from_counts(
        cls, *, tp: int, fp: int, fn: int, truth: int, predictions: int, map: float | None, map50: float | None
    ) -> ClassMetrics:
        return cls(
            map=map,
            map50=map50,
            precision=_ratio(tp, tp + fp),
            recall=_ratio(tp, truth),
            f1=_ratio(2 * tp, 2 * tp + fp + fn),
            tp=int(tp),
            fp=int(fp),
            fn=int(fn),
            truth=int(truth),
            predictions=int(predictions),
        )

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "map": self.map,
            "map50": self.map50,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "truth": self.truth,
            "predictions": self.predictions,
        }


def _frozen(array: np.ndarray, dtype: Any) -> np.ndarray:
    array = np.array(array, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class MatchTable:
    """COCO's greedy matching at one IoU, column by column (read-only arrays).

    Prediction rows (one per stored prediction, sample by sample, then in `Detections` order):

    - ``sample_index``: index into the `EvalData` samples; ``det_index``: index within that
      sample's ``pred``; ``class_id``; ``score`` (float64 of the stored float32 score).
    - ``tp``: matched a non-crowd truth of the same class at IoU >= ``iou``.
    - ``ignored``: matched a crowd region instead (neither TP nor FP).
    - ``truth_index``: the matched truth's index within that sample's ``truth`` (-1 if none);
      ``iou``: the IoU of that match (-1 if none; for a crowd region: intersection over the
      prediction's area, COCO's crowd IoU).

    A prediction is a false positive when neither ``tp`` nor ``ignored``.

    Truth rows (one per truth annotation, same order): ``truth_sample_index``,
    ``truth_det_index``, ``truth_class_id``, ``truth_crowd``, ``truth_matched`` (a non-crowd
    truth matched by a TP; a crowd region matched by at least one ignored prediction). A
    non-crowd truth that is not matched is a false negative.
    """

    iou_threshold: float
    sample_index: np.ndarray
    det_index: np.ndarray
    class_id: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    truth_index: np.ndarray
    iou: np.ndarray
    truth_sample_index: np.ndarray
    truth_det_index: np.ndarray
    truth_class_id: np.ndarray
    truth_crowd: np.ndarray
    truth_matched: np.ndarray

    def __post_init__(self) -> None:
        for name, dtype in (
            ("sample_index", np.int64), ("det_index", np.int64), ("class_id", np.int64), ("score", np.float64),
            ("tp", bool), ("ignored", bool), ("truth_index", np.int64), ("iou", np.float64),
            ("truth_sample_index", np.int64), ("truth_det_index", np.int64), ("truth_class_id", np.int64),
            ("truth_crowd", bool), ("truth_matched", bool),
        ):
            object.__setattr__(self, name, _frozen(getattr(self, name), dtype))
        n, m = len(self.sample_index), len(self.truth_sample_index)
        for name in ("det_index", "class_id", "score", "tp", "ignored", "truth_index", "iou"):
            if len(getattr(self, name)) != n:
                raise EvalError(f"MatchTable.{name} must have one row per prediction ({n})")
        for name in ("truth_det_index", "truth_class_id", "truth_crowd", "truth_matched"):
            if len(getattr(self, name)) != m:
                raise EvalError(f"MatchTable.{name} must have one row per truth ({m})")

    @property
    def fp(self) -> np.ndarray:
        """bool per prediction: neither a TP nor ignored on a crowd region."""
        return ~(self.tp | self.ignored)

    @property
    def fn(self) -> np.ndarray:
        """bool per truth: a non-crowd truth no prediction matched."""
        return ~(self.truth_matched | self.truth_crowd)


@dataclass(frozen=True, eq=False)
class DetectionMetrics:
    """The result of `evaluate_detections`.

    - ``overall``: ``map``/``map50`` are COCO's summary AP (stats[0]/stats[1]); precision,
      recall and F1 are micro-averaged (counts summed over classes).
    - ``per_class``: every label of ``labels``, in order.
    - ``pr_curves``: per label with truth, ``(recall, precision)`` at ``iou``: COCO's
      interpolated precision at the 101 recall points 0, 0.01, ..., 1 over every prediction.
    - ``coco_stats``: COCO's 12 summary numbers (pycocotools ``COCOeval.stats``; -1 = undefined;
      NaN for the small/medium/large numbers unless evaluated with ``area_ranges=True``).
    """

    iou_type: str
    iou: float
    labels: tuple[str, ...]
    overall: ClassMetrics
    per_class: dict[str, ClassMetrics]
    matches: MatchTable
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]]
    coco_stats: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "per_class": {label: m.to_dict() for label, m in self.per_class.items()},
        }


def _check_iou(iou: object) -> float:
    if isinstance(iou, bool) or not isinstance(iou, (int, float, np.integer, np.floating)):
        raise EvalError(f"iou must be a number strictly between 0 and 1, got {iou!r}")
    value = float(iou)
    if not math.isfinite(value) or not 0.0 < value < 1.0:
        raise EvalError(f"iou must be a number strictly between 0 and 1, got {iou!r}")
    return value


def _undefined(value: float) -> float | None:
    return None if value < 0 else float(value)


def _match_table(pair: CocoPair, truth_row: np.ndarray, match_iou: np.ndarray, iou: float) -> MatchTable:
    """The `MatchTable` of COCO's matches (``truth_row`` per prediction row, -1 = none)."""
    n_pred, n_truth = len(pair.pred_class), len(pair.truth_class)
    matched = truth_row >= 0
    on_crowd = np.zeros(n_pred, bool)
    on_crowd[matched] = pair.truth_crowd[truth_row[matched]]
    truth_matched = np.zeros(n_truth, bool)
    truth_matched[truth_row[matched]] = True
    truth_index = np.full(n_pred, -1, np.int64)
    truth_index[matched] = pair.truth_index[truth_row[matched]]
    return MatchTable(
        iou_threshold=iou,
        sample_index=pair.pred_sample,
        det_index=pair.pred_index,
        class_id=pair.pred_class,
        score=pair.pred_score.astype(np.float64),
        tp=matched & ~on_crowd,
        ignored=matched & on_crowd,
        truth_index=truth_index,
        iou=match_iou,
        truth_sample_index=pair.truth_sample,
        truth_det_index=pair.truth_index,
        truth_class_id=pair.truth_class,
        truth_crowd=pair.truth_crowd,
        truth_matched=truth_matched,
    )


def evaluate_detections(
    data: EvalData, *, iou: float = 0.5, iou_type: str = "bbox", area_ranges: bool = False
) -> DetectionMetrics:
    """COCO metrics of ``data.pred`` against ``data.truth`` and the matches at ``iou``.

    ``iou_type``: "bbox" (boxes) or "segm" (masks; ``data`` must carry masks on both sides).
    ``iou``: the IoU at which precision, recall, F1, the matches and the PR curves are taken,
    strictly between 0 and 1; mAP stays COCO's (IoU .50:.95) whatever it is.
    ``area_ranges``: also evaluate small/medium/large objects (all 12 COCO summary numbers;
    slower); without it those six numbers are NaN and everything reported is unchanged.
    Raises `EvalError` naming the option or sample at fault.
    """
    iou = _check_iou(iou)
    if iou_type not in IOU_TYPES:
        raise EvalError(f"iou_type must be one of {', '.join(IOU_TYPES)}, got {iou_type!r}")
    if not data.labels:
        raise EvalError(f"{data.pred_name} vs {data.truth_name}: no labels to evaluate")
    if len(data.sample_ids) == 0:
        raise EvalError(f"{data.pred_name} vs {data.truth_name}: no samples to evaluate")

    with paused_gc():
        pair = build_coco(data, iou_type)
    run = run_coco(pair, iou, area_ranges=area_ranges)
    k = len(data.labels)

    table = _match_table(pair, run.truth_row, run.match_iou, iou)
    tp = table.tp

    tp_k = np.bincount(pair.pred_class[tp], minlength=k)
    fp_k = np.bincount(pair.pred_class[table.fp], minlength=k)
    pred_k = np.bincount(pair.pred_class, minlength=k)
    truth_k = np.bincount(pair.truth_class[~pair.truth_crowd], minlength=k)
    fn_k = truth_k - tp_k

    def ap(values: np.ndarray) -> float | None:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else None

    at50 = 0  # COCO's IoU thresholds are 0.50, 0.55, ..., 0.95
    per_class: dict[str, ClassMetrics] = {}
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    recall_points = np.linspace(0.0, 1.0, 101)
    recall_points.setflags(write=False)
    for c, label in enumerate(data.labels):
        per_class[label] = ClassMetrics.from_counts(
            tp=int(tp_k[c]), fp=int(fp_k[c]), fn=int(fn_k[c]), truth=int(truth_k[c]), predictions=int(pred_k[c]),
            map=ap(run.precision[:, :, c]), map50=ap(run.precision[at50, :, c]),
        )
        curve = run.curve_precision[:, c]
        if truth_k[c] > 0 and np.all(curve > -1):
            pr_curves[label] = (recall_points, _frozen(curve, np.float64))

    overall = ClassMetrics.from_counts(
        tp=int(tp_k.sum()), fp=int(fp_k.sum()), fn=int(fn_k.sum()), truth=int(truth_k.sum()),
        predictions=int(pred_k.sum()), map=_undefined(run.stats[0]), map50=_undefined(run.stats[1]),
    )
    return DetectionMetrics(
        iou_type=iou_type,
        iou=iou,
        labels=tuple(data.labels),
        overall=overall,
        per_class=per_class,
        matches=table,
        pr_curves=pr_curves,
        coco_stats=_frozen(run.stats, np.float64),
    )
