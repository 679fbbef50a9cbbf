"""Per-class threshold sweep (`sync.evaluate.sweep`).

The oracle for the optima is a brute-force recount: keep the predictions with score >= t,
re-run plain pycocotools on them for every candidate t, and count TP/FP/FN from its evalImgs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.evaluate.data import EvalData, EvalError
from sync.evaluate.metrics import evaluate_detections
from sync.evaluate.seconds import ActionSeconds
from sync.evaluate.sweep import ClassSweep, sweep_thresholds
from tests.test_eval_metrics import _scenes, det, eval_data, pycocotools_eval, pycocotools_matches, synthetic


def _filtered(data: EvalData, threshold: float) -> EvalData:
    return eval_data(data.labels, data.truth, [p[p.scores >= threshold] for p in data.pred], size=tuple(data.sizes[0]))


def _recount(data: EvalData, threshold: float, iou: float) -> dict[str, tuple[int, int, int]]:
    """(tp, fp, fn) per label when only predictions with score >= threshold are kept (pycocotools)."""
    kept = _filtered(data, threshold)
    outcome = pycocotools_matches(pycocotools_eval(kept), iou)
    pred_cls = np.concatenate([p.class_ids for p in kept.pred]) if kept.pred else np.zeros(0, np.int64)
    truth_cls = np.concatenate([t.class_ids for t in kept.truth])
    fp = ~outcome["tp"] & ~outcome["ignored"]
    return {
        label: (
            int(outcome["tp"][pred_cls == c].sum()),
            int(fp[pred_cls == c].sum()),
            int(outcome["fn"][truth_cls == c].sum()),
        )
        for c, label in enumerate(data.labels)
    }


def _brute_force(data: EvalData, iou: float, seconds: ActionSeconds, floors: dict[str, float]):
    """Best F1 and least seconds per label over every distinct score >= floor (ties: lower t),
    and "keep nothing" for time when strictly better."""
    scores = np.concatenate([p.scores for p in data.pred])
    classes = np.concatenate([p.class_ids for p in data.pred])
    counts = {float(t): _recount(data, float(t), iou) for t in np.unique(scores)}
    best = {}
    for c, label in enumerate(data.labels):
        own = np.unique(scores[classes == c])
        own = own[own >= np.float32(floors.get(label, 0.0))]
        truth = sum(int(((t.class_ids == c) & ~t.data["iscrowd"]).sum()) for t in data.truth)
        if not own.size:
            best[label] = (None, None)
            continue
        rows = []
        for t in own:  # ascending, so the first best is the lower threshold
            tp, fp, fn = counts[float(t)][label]
            assert tp + fn == truth
            f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None
            secs = tp * seconds.verify + fp * seconds.delete + fn * seconds.draw
            rows.append((float(t), f1, secs, tp, fp))
        if truth == 0:
            best[label] = (None, ("nothing", 0.0))
            continue
        f1_row = max(rows, key=lambda r: (r[1], -r[0]))
        time_row = min(rows, key=lambda r: (r[2], r[0]))
        nothing = truth * seconds.draw
        best[label] = (f1_row, ("nothing", nothing) if nothing < time_row[2] else time_row)
    return best


@pytest.mark.parametrize(
    ("seed", "iou", "seconds", "floors"),
    [
        (11, 0.5, ActionSeconds(), {}),
        (12, 0.75, ActionSeconds(delete=0.5, draw=60.0), {"c0": 0.3, "c2": 0.55}),
        (13, 0.5, ActionSeconds(verify=20.0, delete=25.0, draw=5.0), {}),
    ],
)
def test_optima_match_a_brute_force_pycocotools_recount(seed, iou, seconds, floors):
    data = synthetic(seed, images=10, classes=3, size=(120, 90))
    sweeps = sweep_thresholds(evaluate_detections(data, iou=iou), seconds=seconds, floors=floors)
    want = _brute_force(data, iou, seconds, floors)
    for label in data.labels:
        sweep, (f1_row, time_row) = sweeps[label], want[label]
        if f1_row is None:
            assert sweep.best_f1 is None
        else:
            threshold, f1, secs, tp, fp = f1_row
            assert np.float32(sweep.best_f1.score) == np.float32(threshold)
            assert sweep.best_f1.f1 == pytest.approx(f1)
            assert sweep.best_f1.seconds == pytest.approx(secs)
            assert sweep.best_f1.precision == pytest.approx(tp / (tp + fp))
        if time_row is None:
            assert sweep.min_time is None
        elif time_row[0] == "nothing":
            scores = np.concatenate([p.scores[p.class_ids == data.labels.index(label)] for p in data.pred])
            assert sweep.min_time.seconds == pytest.approx(time_row[1])
            assert np.float32(sweep.min_time.score) > scores.max()
            assert sweep.min_time.precision is None
        else:
            assert np.float32(sweep.min_time.score) == np.float32(time_row[0])
            assert sweep.min_time.seconds == pytest.approx(time_row[2])
        if label in floors:
            assert sweep.floor == floors[label] and sweep.current == floors[label]
            assert sweep.thresholds[0] == floors[label]
        else:
            assert sweep.current is None
    # the cases are not degenerate: some optimum lies above the lowest score
    assert any(s.best_f1 and s.best_f1.score > s.thresholds[0] for s in sweeps.values())


def _one_class(scores, is_tp, truth: int) -> EvalData:
    """One image: ``truth`` objects in a row; each prediction is on the next unclaimed one (TP)
    or far away (FP)."""
    labels = ("thing",)
    t_boxes = [[10 * i, 0, 10 * i + 8, 8] for i in range(truth)]
    p_boxes, next_truth = [], 0
    for ok in is_tp:
        if ok:
            p_boxes.append(t_boxes[next_truth])
            next_truth += 1
        else:
            p_boxes.append([100, 50, 108, 58])
    truth_det = det(np.reshape(t_boxes, (-1, 4)), [0] * truth, labels, crowd=[False] * truth)
    pred_det = det(np.reshape(p_boxes, (-1, 4)), [0] * len(p_boxes), labels, scores=scores)
    return eval_data(labels, [truth_det], [pred_det], size=(200, 100))


SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
IS_TP = [True, False, False, False, False, True]  # truth 2: a sure hit, four false alarms, a late hit


def test_time_model_keeps_a_low_precision_threshold_when_deleting_is_cheap():
    metrics = evaluate_detections(_one_class(SCORES, IS_TP, truth=2))
    s = sweep_thresholds(metrics, seconds=ActionSeconds(verify=7, delete=1.5, draw=30))["thing"]
    # t=0.9: 1 TP, 1 miss → F1 2/3, 7 + 30 = 37 s; t=0.4: 2 TP, 4 FP → F1 0.5, 14 + 6 = 20 s
    assert s.best_f1.score == 0.9 and s.best_f1.f1 == pytest.approx(2 / 3) and s.best_f1.seconds == 37
    assert s.min_time.score == 0.4 and s.min_time.seconds == 20
    assert s.min_time.precision == pytest.approx(2 / 6) and s.min_time.recall == 1.0


def test_time_model_prefers_precision_when_deleting_is_expensive():
    metrics = evaluate_detections(_one_class(SCORES, IS_TP, truth=2))
    s = sweep_thresholds(metrics, seconds=ActionSeconds(verify=7, delete=10, draw=30))["thing"]
    # t=0.4: 14 + 40 = 54 s; t=0.9: 37 s; keep nothing: 60 s
    assert s.min_time.score == 0.9 and s.min_time.seconds == 37


def test_time_model_keeps_nothing_when_drawing_is_cheaper_than_checking():
    metrics = evaluate_detections(_one_class(SCORES, IS_TP, truth=2))
    s = sweep_thresholds(metrics, seconds=ActionSeconds(verify=7, delete=1.5, draw=1))["thing"]
    assert s.min_time.seconds == 2 and s.min_time.recall == 0.0 and s.min_time.precision is None
    assert np.float32(s.min_time.score) > np.float32(0.9)
    assert s.min_time.score < 0.9 + 1e-6


def test_ties_go_to_the_lower_threshold():
    # truth 2; hit, two false alarms, hit: F1 is 2/3 at 0.9 (1 TP, 1 miss) and at 0.6 (2 TP, 2 FP)
    metrics = evaluate_detections(_one_class([0.9, 0.8, 0.7, 0.6], [True, False, False, True], truth=2))
    s = sweep_thresholds(metrics, seconds=ActionSeconds(verify=7, delete=0, draw=7))["thing"]
    assert s.best_f1.f1 == pytest.approx(2 / 3) and s.best_f1.score == 0.6
    # 14 s at 0.9, 0.8, 0.7 and 0.6, and 14 s keeping nothing (not strictly better)
    assert s.min_time.seconds == 14 and s.min_time.score == 0.6


def test_classes_without_truth_or_without_predictions():
    labels = ("seen", "ghost", "missed")
    truth = det([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 2], labels, crowd=[False, False])
    pred = det([[0, 0, 10, 10], [50, 50, 60, 60], [70, 50, 80, 60]], [0, 1, 1], labels, scores=[0.8, 0.6, 0.3])
    sweeps = sweep_thresholds(evaluate_detections(eval_data(labels, [truth], [pred], size=(100, 100))))
    ghost, missed = sweeps["ghost"], sweeps["missed"]
    assert ghost.best_f1 is None
    assert ghost.min_time.seconds == 0.0 and np.float32(ghost.min_time.score) > np.float32(0.6)
    assert ghost.floor == pytest.approx(0.3) and np.isnan(ghost.recall).all()
    assert missed.best_f1 is None and missed.min_time is None and missed.floor == 0.0
    assert np.all(missed.seconds == ActionSeconds().draw) and np.all(missed.recall == 0.0)
    assert sweeps["seen"].best_f1.f1 == 1.0 and sweeps["seen"].min_time.seconds == ActionSeconds().verify


def test_predictions_on_crowd_regions_cost_nothing():
    labels = ("person",)
    truth = det([[0, 0, 40, 40], [50, 0, 60, 10]], [0, 0], labels, crowd=[True, False])
    pred = det([[5, 5, 15, 15], [50, 0, 60, 10]], [0, 0], labels, scores=[0.9, 0.5])
    s = sweep_thresholds(evaluate_detections(eval_data(labels, [truth], [pred], size=(100, 100))))["person"]
    # at 0.5 both are kept: one verified TP, the crowd one costs nothing
    assert s.min_time.score == 0.5 and s.min_time.seconds == ActionSeconds().verify
    assert s.best_f1.score == 0.5 and s.best_f1.precision == 1.0


def test_floors_are_checked():
    metrics = evaluate_detections(_one_class(SCORES, IS_TP, truth=2))
    for bad in (-0.1, 1.5, float("nan"), "0.3", True):
        with pytest.raises(EvalError, match="'thing'"):
            sweep_thresholds(metrics, floors={"thing": bad})
    # keys that are not labels are ignored; the grid starts at the floor, then the 0.01 steps
    s = sweep_thresholds(metrics, floors={"thing": 0.555, "other": 0.2})["thing"]
    assert s.thresholds[:3].tolist() == [0.555, 0.56, 0.57] and s.thresholds[-1] == 1.0
    assert s.best_f1.score == 0.9 and s.min_time.score == 0.9  # 0.4 (20 s) is below the floor


def test_curves_recount_the_match_table_and_serialise():
    data = synthetic(21, images=12, classes=3)
    metrics = evaluate_detections(data)
    seconds = ActionSeconds(verify=5, delete=2, draw=40)
    sweeps = sweep_thresholds(metrics, seconds=seconds)
    table = metrics.matches
    for c, label in enumerate(data.labels):
        s = sweeps[label]
        assert np.all(np.diff(s.thresholds) > 0) and s.thresholds[-1] == 1.0
        truth = metrics.per_class[label].truth
        for t, p, r, secs in zip(s.thresholds, s.precision, s.recall, s.seconds):
            kept = (table.class_id == c) & (table.score.astype(np.float32) >= np.float32(t))
            tp, fp = int((kept & table.tp).sum()), int((kept & table.fp).sum())
            assert secs == pytest.approx(tp * 5 + fp * 2 + (truth - tp) * 40)
            assert (math.isnan(p) and tp + fp == 0) or p == pytest.approx(tp / (tp + fp))
            assert r == pytest.approx(tp / truth)
        d = json.loads(json.dumps(s.to_dict()))
        assert len(d["thresholds"]) == len(d["f1"]) == len(s.thresholds)
        assert d["best_f1"]["threshold"] == s.best_f1.threshold and d["best_f1"]["score"] == s.best_f1.score


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenes(), st.floats(0, 0.9), st.sampled_from([ActionSeconds(), ActionSeconds(delete=20, draw=3)]))
def test_optima_dominate_every_grid_point(scene, floor, seconds):
    labels, truth, pred, _ = scene
    metrics = evaluate_detections(eval_data(labels, truth, pred))
    floors = {labels[0]: floor}
    for label, s in sweep_thresholds(metrics, seconds=seconds, floors=floors).items():
        assert isinstance(s, ClassSweep)
        if s.best_f1 is not None:
            assert np.all(np.nan_to_num(s.f1, nan=0.0) <= s.best_f1.f1)
            assert s.best_f1.score >= s.floor
        if s.min_time is not None:
            assert np.all(s.min_time.seconds <= s.seconds)
            assert s.min_time.score >= s.floor
        elif metrics.per_class[label].truth:
            # nothing to tune: every grid point keeps nothing
            assert np.all(s.seconds == metrics.per_class[label].truth * seconds.draw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenes(), st.floats(0, 0.9), st.sampled_from([ActionSeconds(), ActionSeconds(delete=20, draw=3)]))
def test_each_choice_range_keeps_exactly_what_its_threshold_keeps_and_is_maximal(scene, floor, seconds):
    """Every threshold from ``lowest`` to ``highest`` keeps the same predictions as ``score``;
    one float32 step below ``lowest`` keeps more (unless that is under the floor), and "keep
    nothing" reaches up to 1.0."""
    labels, truth, pred, _ = scene
    metrics = evaluate_detections(eval_data(labels, truth, pred))
    table = metrics.matches
    for c, (label, s) in enumerate(sweep_thresholds(metrics, seconds=seconds, floors={labels[0]: floor}).items()):
        own = table.score[table.class_id == c].astype(np.float32)
        for choice in (s.best_f1, s.min_time):
            if choice is None:
                continue
            lo, at, hi = (np.float32(v) for v in (choice.lowest, choice.score, choice.highest))
            assert lo <= at <= hi and choice.lowest >= s.floor
            shown = np.float32(choice.threshold)  # the value shown and written: in the range too
            assert lo <= shown <= hi or (choice.threshold == 1.0 and lo > 1.0)
            kept = own >= at
            assert np.array_equal(own >= lo, kept) and np.array_equal(own >= np.float32(min(hi, 1.0)), kept)
            step_down = np.nextafter(lo, np.float32(-np.inf))
            if step_down >= np.float32(s.floor):
                assert (own >= step_down).sum() > kept.sum()
            if not kept.any():
                assert choice.highest >= 1.0
