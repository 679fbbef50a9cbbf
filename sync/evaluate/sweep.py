"""Per-class confidence-threshold sweep: which score threshold gives the best F1, and which
the least annotator time.

A threshold ``t`` keeps the predictions with ``score >= t``. Scores are stored as float32 and
thresholds are compared with them in float32 (which is what ``det.scores >= t`` does in
NumPy 2), so a threshold read as ``0.7`` keeps a score stored as ``float32(0.7)``.

COCO's greedy matching handles predictions in descending score order, so raising the
threshold removes predictions from the end of every image's list and leaves the matches of
the kept ones unchanged. TP(t) and FP(t) are therefore cumulative sums over the `MatchTable`
of one evaluation; nothing is re-evaluated per threshold, and the optima are exact: the
candidates are the distinct scores of the class (each keeps a different set), plus "keep
nothing" (a threshold just above the highest score) for the time optimum.

Estimated annotator seconds at ``t`` for one class:
``TP(t) * verify + FP(t) * delete + (truth - TP(t)) * draw``; predictions on crowd regions
cost nothing (COCO ignores them: they are neither TP nor FP).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serverless.detections import plain_float
from sync.evaluate.data import EvalError
from sync.evaluate.metrics import DetectionMetrics
from sync.evaluate.seconds import ActionSeconds

__all__ = ["ClassSweep", "ThresholdChoice", "sweep_scores", "sweep_thresholds"]


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class ThresholdChoice:
    """One threshold of a class and what it gives: precision (None if nothing counted is
    kept), recall (None without truth), F1 (None when both are missing), seconds (estimated
    annotator time for the class at that threshold).

    ``threshold`` is the one number to show and to write: the class's current threshold when
    it keeps exactly these predictions, else the shortest decimal in ``lowest``..``highest``
    (`sync.evaluate.tune.pick_threshold`). Every threshold in that range (both ends inclusive,
    compared as float32) keeps the same predictions, and none of them is below the sweep's
    floor. ``score`` is the lowest score kept (just above the highest score for "keep
    nothing").
    """

    threshold: float
    lowest: float
    highest: float
    precision: float | None
    recall: float | None
    f1: float | None
    seconds: float
    score: float = math.nan

    def to_dict(self) -> dict[str, float | None]:
        return {
            "threshold": self.threshold,
            "score": _opt(self.score),
            "lowest": self.lowest,
            "highest": self.highest,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "seconds": self.seconds,
        }


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64).copy()
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ClassSweep:
    """The sweep of one class.

    - ``floor``: the lowest threshold that can be judged (the run's threshold for the label,
      else the lowest score of the class, else 0); ``current``: the run's threshold or None.
    - ``thresholds``: ascending, ``floor`` then every multiple of 0.01 above it up to 1;
      ``precision``/``recall``/``f1``/``seconds`` at each (NaN where undefined), for plotting.
    - ``best_f1``: the exact F1 optimum over the class's scores >= floor (ties: the lower
      threshold); None without truth or without predictions >= floor.
    - ``min_time``: the exact minimum of estimated seconds (ties: the lower threshold; "keep
      nothing" only when strictly better); without truth it is "keep nothing"; None without
      predictions >= floor.
    - ``best_f1_ties`` / ``min_time_ties``: the ``(lowest, highest)`` threshold ranges of every
      choice as good as the optimum. Among ties the one holding ``current`` wins, and its
      ``threshold`` is ``current`` itself: with no evidence for a change, nothing changes.
    """

    label: str
    floor: float
    current: float | None
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    seconds: np.ndarray
    best_f1: ThresholdChoice | None
    min_time: ThresholdChoice | None
    best_f1_ties: tuple[tuple[float, float], ...] = ()
    min_time_ties: tuple[tuple[float, float], ...] = ()

    def keeps(self, threshold: float | None, by: str) -> bool:
        """True when ``threshold`` is as good as the optimum ``by`` ``"f1"`` or ``"time"``
        (it lies in the range of one of the tied optima): a tuned value should stay there."""
        ties = self.best_f1_ties if by == "f1" else self.min_time_ties
        return any(_in_range(threshold, lowest, highest) for lowest, highest in ties)

    def __post_init__(self) -> None:
        for name in ("thresholds", "precision", "recall", "f1", "seconds"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
            if getattr(self, name).shape != self.thresholds.shape:
                raise EvalError(f"ClassSweep {self.label!r}: {name} must have one value per threshold")

    def to_dict(self) -> dict[str, Any]:
        def curve(values: np.ndarray) -> list[float | None]:
            return [None if math.isnan(v) else round(v, 6) for v in values.tolist()]

        return {
            "label": self.label,
            "floor": self.floor,
            "current": self.current,
            "thresholds": curve(self.thresholds),
            "precision": curve(self.precision),
            "recall": curve(self.recall),
            "f1": curve(self.f1),
            "seconds": curve(self.seconds),
            "best_f1": None if self.best_f1 is None else self.best_f1.to_dict(),
            "min_time": None if self.min_time is None else self.min_time.to_dict(),
        }


def _check_floor(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EvalError(f"threshold floor of label {label!r} must be a number in 0..1, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise EvalError(f"threshold floor of label {label!r} must be a number in 0..1, got {value!r}")
    return value


class _Counts:
    """TP/FP of one class as functions of the threshold (cumulative sums over ascending scores)."""

    def __init__(self, scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, truth: int, seconds: ActionSeconds):
        order = np.argsort(scores, kind="stable")
        self.scores = scores[order]
        self.tp_below = np.concatenate([[0], np.cumsum(tp[order])])
        self.fp_below = np.concatenate([[0], np.cumsum(fp[order])])
        self.truth = truth
        self.seconds = seconds

    def at(self, thresholds: np.ndarray) -> dict[str, np.ndarray]:
        """Counts and rates when keeping ``score >= t`` for each float32 ``t``."""
        below = np.searchsorted(self.scores, thresholds.astype(np.float32), side="left")
        tp = (self.tp_below[-1] - self.tp_below[below]).astype(np.float64)
        fp = (self.fp_below[-1] - self.fp_below[below]).astype(np.float64)
        fn = self.truth - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
            recall = tp / self.truth if self.truth else np.full(tp.shape, np.nan)
            f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        s = self.seconds
        secs = tp * s.verify + fp * s.delete + fn * s.draw
        return {"precision": precision, "recall": recall, "f1": f1, "seconds": secs}


def _in_range(value: float | None, lowest: float, highest: float) -> bool:
    return value is not None and np.float32(lowest) <= np.float32(value) <= np.float32(highest)


def _choice(
    candidate: np.float32, lowest: float, values: dict[str, np.ndarray], i: int, current: float | None
) -> ThresholdChoice:
    """The choice of keeping ``score >= candidate`` (row ``i`` of ``values``); ``lowest`` is the
    lowest threshold that keeps the same predictions."""
    from sync.evaluate.tune import pick_threshold

    highest = plain_float(candidate)
    return ThresholdChoice(
        threshold=float(current) if _in_range(current, lowest, highest) else pick_threshold(lowest, highest),
        lowest=lowest,
        highest=highest,
        precision=_opt(values["precision"][i]),
        recall=_opt(values["recall"][i]),
        f1=_opt(values["f1"][i]),
        seconds=float(values["seconds"][i]),
        score=highest,
    )


def _nothing(above_max: float, truth: int, seconds: ActionSeconds, current: float | None) -> ThresholdChoice:
    """The choice of keeping nothing: any threshold above the highest score (written as 1.0)."""
    highest = max(1.0, above_max)
    value = float(current) if _in_range(current, above_max, highest) else 1.0
    if truth:
        return ThresholdChoice(value, above_max, highest, None, 0.0, 0.0, truth * seconds.draw, score=above_max)
    return ThresholdChoice(value, above_max, highest, None, None, None, 0.0, score=above_max)


def _pick(ties: list[int], ranges: list[tuple[float, float]], current: float | None) -> int:
    """Among tied optima (ascending), the one whose range holds ``current``, else the lowest."""
    for k, (lowest, highest) in zip(ties, ranges):
        if _in_range(current, lowest, highest):
            return k
    return ties[0]


def _optima(
    counts: _Counts, candidates: np.ndarray, scores: np.ndarray, floor: float, truth: int,
    seconds: ActionSeconds, current: float | None,
) -> tuple[ThresholdChoice | None, ThresholdChoice | None, tuple, tuple]:
    """``(best_f1, min_time, best_f1 ties, min_time ties)`` over the candidate thresholds."""
    if not candidates.size:
        return None, None, (), ()
    values = counts.at(candidates)

    def lowest(k: int) -> float:
        """The lowest threshold keeping what candidate ``k`` keeps: just above the next lower
        score, never under the floor."""
        position = int(np.searchsorted(counts.scores, candidates[k], side="left"))
        if position == 0:
            return floor
        return max(floor, plain_float(np.nextafter(counts.scores[position - 1], np.float32(np.inf))))

    above_max = plain_float(np.nextafter(scores.max(), np.float32(np.inf)))
    nothing_range = (above_max, max(1.0, above_max))
    if not truth:
        return None, _nothing(above_max, truth, seconds, current), (), (nothing_range,)
    f1_ties = np.flatnonzero(values["f1"] == np.nanmax(values["f1"])).tolist()
    f1_ranges = [(lowest(k), plain_float(candidates[k])) for k in f1_ties]
    i = _pick(f1_ties, f1_ranges, current)
    best_f1 = _choice(candidates[i], lowest(i), values, i, current)
    keep_nothing = truth * seconds.draw
    fastest = float(values["seconds"].min())
    time_ties = np.flatnonzero(values["seconds"] == fastest).tolist() if fastest <= keep_nothing else []
    time_ranges = [(lowest(k), plain_float(candidates[k])) for k in time_ties]
    if keep_nothing <= fastest:
        time_ranges.append(nothing_range)
    if time_ties and not _in_range(current, *nothing_range):
        j = _pick(time_ties, time_ranges, current)
        min_time = _choice(candidates[j], lowest(j), values, j, current)
    else:  # keeping nothing is strictly better, or as good and already the current choice
        min_time = _nothing(above_max, truth, seconds, current)
    return best_f1, min_time, tuple(f1_ranges), tuple(time_ranges)


def _sweep_class(
    label: str, scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, truth: int, seconds: ActionSeconds,
    current: float | None,
) -> ClassSweep:
    if current is not None:
        floor = current
    elif scores.size:
        floor = plain_float(scores.min())
    else:
        floor = 0.0
    floor32 = np.float32(floor)
    counts = _Counts(scores, tp, fp, truth, seconds)

    steps = np.arange(0, 101) / 100.0
    grid = np.concatenate([[floor], steps[steps > floor]])
    curves = counts.at(grid)

    candidates = np.unique(scores[scores >= floor32])  # ascending float32
    best_f1, min_time, f1_ties, time_ties = _optima(counts, candidates, scores, floor, truth, seconds, current)
    return ClassSweep(
        label=label,
        floor=floor,
        current=current,
        thresholds=grid,
        precision=curves["precision"],
        recall=curves["recall"],
        f1=curves["f1"],
        seconds=curves["seconds"],
        best_f1=best_f1,
        min_time=min_time,
        best_f1_ties=f1_ties,
        min_time_ties=time_ties,
    )


def sweep_scores(
    label: str,
    scores: np.ndarray,
    tp: np.ndarray,
    truth: int,
    *,
    current: float | None = None,
    seconds: ActionSeconds = ActionSeconds(),
) -> ClassSweep:
    """The sweep of one label from its predictions alone: ``scores`` (float32 as stored) and
    ``tp`` (bool: the prediction is right; every other one is a false positive), with
    ``truth`` true items in all. For predictions whose rightness does not depend on which
    others are kept, such as image-level tags (a tag is right when the image carries it).
    The same rules as `sweep_thresholds`: ``current`` is the run's threshold (the floor)."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    tp = np.asarray(tp, dtype=bool).reshape(-1)
    if scores.shape != tp.shape:
        raise EvalError(f"sweep of label {label!r}: scores and tp must have one value per prediction")
    if isinstance(truth, bool) or not isinstance(truth, (int, np.integer)) or truth < int(tp.sum()):
        raise EvalError(f"sweep of label {label!r}: truth must be a count >= the true positives, got {truth!r}")
    floor = None if current is None else _check_floor(label, current)
    return _sweep_class(label, scores, tp, ~tp, int(truth), seconds, floor)


def sweep_thresholds(
    metrics: DetectionMetrics,
    *,
    seconds: ActionSeconds = ActionSeconds(),
    floors: Mapping[str, float] | None = None,
) -> dict[str, ClassSweep]:
    """The threshold sweep of every label of ``metrics`` (in label order), from its `MatchTable`.

    ``floors``: the run's score threshold per label (``EvalData.pred_thresholds``): the sweep
    starts there and reports it as ``current``. Labels missing from it start at their lowest
    score; keys that are not labels of ``metrics`` are ignored. Values must lie in 0..1.
    """
    if not isinstance(seconds, ActionSeconds):
        raise EvalError(f"seconds must be an ActionSeconds, got {type(seconds).__name__}")
    floors = dict(floors or {})
    table = metrics.matches
    scores32 = table.score.astype(np.float32)
    order = np.argsort(table.class_id, kind="stable")
    bounds = np.searchsorted(table.class_id[order], np.arange(len(metrics.labels) + 1), side="left")
    fp = table.fp
    out: dict[str, ClassSweep] = {}
    for c, label in enumerate(metrics.labels):
        rows = order[bounds[c] : bounds[c + 1]]
        current = _check_floor(label, floors[label]) if label in floors else None
        out[label] = _sweep_class(
            label, scores32[rows], table.tp[rows], fp[rows], metrics.per_class[label].truth, seconds, current
        )
    return out
