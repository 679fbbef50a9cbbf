"""Evaluation of image-level labels (tags): `sync.evaluate.data.TagData`, the metrics and
sweep of `sync.evaluate.tags`, and the tags section of the report, table and HTML page.

Expected numbers are counted by hand in the comments and re-counted here with Python sets
(`set_oracle`), never read from the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from serverless.detections import Detections
from sync.evaluate.data import EvalData, EvalError, TagData
from sync.evaluate.html import TAG_PLOT_ID, render_html
from sync.evaluate.report import build_report, evaluate_run, rank_runs
from sync.evaluate.table import print_report
from sync.evaluate.tags import evaluate_tags, sample_counts, sweep_tags

LABELS = ("indoor", "outdoor", "people", "vehicle")
TRUTH = [{"indoor"}, {"outdoor", "people"}, {"outdoor"}, set(), {"indoor"}]
PRED = [{"indoor": 0.9}, {"outdoor": 0.8}, {"indoor": 0.6, "outdoor": 0.7}, {"people": 0.55}, {}]
"""Five images. ``vehicle`` is in the ontology but neither side uses it."""


def tags(items, *, truth: bool = False, size=(40, 30)) -> Detections:
    """Tag rows of one image as the store reads them: full-frame boxes, shape type ``tag``."""
    names = list(items)
    n = len(names)
    return Detections(
        xyxy=np.tile(np.array([0, 0, *size], np.float32), (n, 1)).reshape(-1, 4),
        scores=np.array([1.0 if truth else items[k] for k in names], np.float32),
        class_ids=np.full(n, -1, np.int64),
        labels=np.array(names, dtype=str) if n else np.zeros(0, dtype="<U1"),
        data={"shape_type": np.array(["tag"] * n, dtype=str) if n else np.zeros(0, dtype="<U3")},
    )


def tag_data(truth=TRUTH, pred=PRED, labels=LABELS) -> TagData:
    return TagData.from_detections(
        labels, [tags(dict.fromkeys(t, 1.0), truth=True) for t in truth], [tags(p) for p in pred]
    )


def set_oracle(truth, pred, labels):
    """Per-label counts and the set-level numbers, from Python sets."""
    counts = {}
    for label in labels:
        tp = sum(label in t and label in p for t, p in zip(truth, pred))
        fp = sum(label not in t and label in p for t, p in zip(truth, pred))
        fn = sum(label in t and label not in p for t, p in zip(truth, pred))
        counts[label] = (tp, fp, fn)
    exact = sum(t == set(p) for t, p in zip(truth, pred))
    single = [(t, p) for t, p in zip(truth, pred) if len(t) == 1]
    top1 = sum(bool(p) and max(p, key=lambda k: p[k]) in t for t, p in single)
    return counts, exact, len(single), top1


def ratio(num, den):
    return None if den == 0 else num / den


# ---------------------------------------------------------------------------- metrics


def test_metrics_of_hand_built_tag_sets():
    """indoor: TP s0, FP s2, FN s4 → P = R = F1 = 1/2; outdoor: TP s1, s2 → 1; people: FP s3,
    FN s1 → 0; micro 3 TP, 2 FP, 2 FN → 0.6. Macro over the three labels used (vehicle says
    nothing): (1/2 + 1 + 0) / 3. Exact sets: only s0 → 1/5. Top-1 over s0, s2, s4 (one true
    tag each): indoor 0.9 right, outdoor 0.7 over indoor 0.6 right, no tag wrong → 2/3."""
    m = evaluate_tags(tag_data())
    counts, exact, single, top1 = set_oracle(TRUTH, PRED, LABELS)
    hand = {"indoor": (1, 1, 1), "outdoor": (2, 0, 0), "people": (0, 1, 1), "vehicle": (0, 0, 0)}
    assert counts == hand
    for label, (tp, fp, fn) in hand.items():
        got = m.per_label[label]
        assert (got.tp, got.fp, got.fn, got.truth, got.predictions) == (tp, fp, fn, tp + fn, tp + fp)
        assert got.precision == ratio(tp, tp + fp) and got.recall == ratio(tp, tp + fn)
        assert got.f1 == ratio(2 * tp, 2 * tp + fp + fn)
    assert m.per_label["vehicle"].f1 is None and m.per_label["people"].f1 == 0.0
    assert (m.micro.tp, m.micro.fp, m.micro.fn) == (3, 2, 2)
    assert m.micro.precision == pytest.approx(0.6) and m.micro.recall == pytest.approx(0.6)
    assert m.micro.f1 == pytest.approx(0.6)
    assert m.macro.labels == 3
    assert m.macro.precision == pytest.approx(0.5) and m.macro.recall == pytest.approx(0.5)
    assert m.macro.f1 == pytest.approx(0.5)
    assert (exact, single, top1) == (1, 3, 2)
    assert m.accuracy == pytest.approx(1 / 5) and (m.exact, m.samples) == (1, 5)
    assert m.top1_accuracy == pytest.approx(2 / 3) and (m.top1_samples, m.top1_correct) == (3, 2)
    assert sample_counts(tag_data())[0].tolist() == [1, 1, 1, 0, 0]


def test_single_label_softmax_setup_and_the_undefined_cases():
    """Each image has one true tag and the run tagged each with its top class only."""
    truth = [{"cat"}, {"dog"}, {"dog"}, {"cat"}]
    pred = [{"cat": 0.7}, {"cat": 0.6}, {"dog": 0.9}, {"cat": 0.51}]
    m = evaluate_tags(tag_data(truth, pred, ("cat", "dog")))
    assert m.top1_accuracy == pytest.approx(3 / 4) and m.accuracy == pytest.approx(3 / 4)
    assert m.per_label["cat"].precision == pytest.approx(2 / 3) and m.per_label["dog"].recall == pytest.approx(1 / 2)

    # equal scores: the first label in order is the run's top tag
    tie = evaluate_tags(tag_data([{"dog"}], [{"cat": 0.5, "dog": 0.5}], ("cat", "dog")))
    assert tie.top1_samples == 1 and tie.top1_accuracy == 0.0

    # no true tag anywhere: no top-1, no recall; nothing given: no macro
    empty = evaluate_tags(tag_data([set(), set()], [{}, {}], ("cat",)))
    assert empty.top1_accuracy is None and empty.micro.recall is None and empty.macro.f1 is None
    assert empty.accuracy == 1.0  # two empty sets match


def test_tag_data_keeps_the_highest_of_a_tag_given_twice_and_refuses_unknown_labels():
    twice = Detections(
        xyxy=np.zeros((2, 4), np.float32), scores=np.array([0.4, 0.8], np.float32),
        class_ids=np.zeros(2, np.int64), labels=np.array(["cat", "cat"]),
    )
    data = TagData.from_detections(("cat",), [Detections.empty()], [twice])
    assert data.scores.tolist() == [[pytest.approx(0.8)]] and not data.truth.any()
    with pytest.raises(EvalError, match="'dog'"):
        TagData.from_detections(("cat",), [tags({"dog": 1.0}, truth=True)], [Detections.empty()])
    with pytest.raises(EvalError, match="shape"):
        TagData(labels=("cat",), truth=np.zeros((2, 2), bool), scores=np.zeros((2, 2), np.float32))


# ---------------------------------------------------------------------------- property


SCORES = st.one_of(st.none(), st.sampled_from([0.2, 0.35, 0.5, 0.5, 0.65, 0.8, 0.95, 1.0]))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(1, 10), k=st.integers(1, 3))
def test_counts_add_up_and_the_swept_f1_is_the_f1_at_its_threshold(data, n, k):
    labels = tuple(f"t{j}" for j in range(k))
    truth = [data.draw(st.sets(st.sampled_from(labels))) for _ in range(n)]
    pred = []
    for _ in range(n):
        drawn = {label: data.draw(SCORES) for label in labels}
        pred.append({label: s for label, s in drawn.items() if s is not None})
    current = data.draw(st.one_of(st.none(), st.sampled_from([0.2, 0.5])))
    pred = [{label: s for label, s in p.items() if current is None or s >= current} for p in pred]
    td = tag_data(truth, pred, labels)
    m = evaluate_tags(td)

    counts, exact, _, _ = set_oracle(truth, pred, labels)
    for label in labels:
        got = m.per_label[label]
        assert (got.tp, got.fp, got.fn) == counts[label]
        assert got.tp + got.fn == got.truth == sum(label in t for t in truth)
        assert got.tp + got.fp == got.predictions == sum(label in p for p in pred)
    assert m.micro.tp == sum(c[0] for c in counts.values()) and m.micro.fp == sum(c[1] for c in counts.values())
    assert m.micro.fn == sum(c[2] for c in counts.values()) and m.exact == exact
    assert sum(x.sum() for x in sample_counts(td)) == m.micro.tp + m.micro.fp + m.micro.fn

    floors = {} if current is None else dict.fromkeys(labels, current)
    for label, sweep in sweep_tags(td, floors=floors).items():
        given_scores = [(p[label], label in t) for t, p in zip(truth, pred) if label in p]
        support = sum(label in t for t in truth)

        def f1_at(threshold, given_scores=given_scores, support=support):
            kept = [right for s, right in given_scores if np.float32(s) >= np.float32(threshold)]
            tp = sum(kept)
            return ratio(2 * tp, len(kept) + support)  # 2TP / (2TP + FP + FN): FP + TP kept, FN + TP truth

        best = sweep.best_f1
        if not given_scores or not support:
            assert best is None
            continue
        assert best.f1 == pytest.approx(f1_at(best.threshold))
        candidates = {s for s, _ in given_scores}
        assert best.f1 == pytest.approx(max(f1_at(s) or 0.0 for s in candidates))
        if current is not None:
            assert sweep.current == current and best.threshold >= current
            if sweep.keeps(current, "f1"):  # no evidence for a change: the current threshold stays
                assert best.threshold == current


# ---------------------------------------------------------------------------- report


def eval_data(*, boxes: bool, name: str = "clip") -> EvalData:
    """The five images of `TRUTH`/`PRED`, with or without one box of a cat on each."""
    n = len(TRUTH)
    cat = Detections(xyxy=np.array([[2, 2, 20, 20]], np.float32), scores=np.array([0.9], np.float32),
                     class_ids=np.zeros(1, np.int64), labels=np.array(["cat"]))
    shapes = tuple(cat if boxes else Detections.empty() for _ in range(n))
    return EvalData(
        labels=("cat",) if boxes else (), sample_ids=np.arange(1, n + 1), uris=tuple(f"{i}.png" for i in range(n)),
        sizes=np.full((n, 2), 40), truth=shapes, pred=shapes, pred_name=name,
        pred_thresholds={"cat": 0.5, "indoor": 0.5, "outdoor": 0.5, "people": 0.5, "vehicle": 0.5},
        tags=tag_data(),
    )


def rendered(report) -> str:
    console = Console(record=True, width=160)
    print_report(report, console)
    return console.export_text()


def test_a_run_of_tags_only_reports_only_its_tags():
    evaluation = evaluate_run(eval_data(boxes=False))
    assert evaluation.boxes is None and evaluation.edits is None and not evaluation.sweeps
    report = build_report("photos", [evaluation])
    json.dumps(report, allow_nan=False)
    assert report["overall"] is None and report["iou"] is None
    tags_part = report["tags"]
    assert tags_part["per_label"]["outdoor"] == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2, "predictions": 2, "tp": 2, "fp": 0, "fn": 0,
    }
    assert tags_part["accuracy"] == pytest.approx(0.2) and tags_part["top1_accuracy"] == pytest.approx(2 / 3)
    # indoor: scores 0.9 (right) and 0.6 (wrong): keeping >= 0.9 gives F1 2/3 against 1/2 at 0.5
    indoor = tags_part["thresholds"]["indoor"]
    assert indoor["current"] == 0.5 and indoor["best_f1"]["f1"] == pytest.approx(2 / 3)
    assert 0.6 < indoor["best_f1"]["threshold"] <= 0.9 and "min_time" not in indoor

    text = rendered(report)
    assert "Box metrics" not in text and "IoU" not in text and "seconds per action" not in text
    assert "Tags (image-level labels) of clip" in text and "micro" in text and "macro" in text
    assert "0.200 (1 of 5 samples)" in text and "top-1 accuracy: 0.667" in text

    page = render_html(report)
    assert "Box metrics" not in page and 'id="pr-curves"' not in page and f'id="{TAG_PLOT_ID}"' in page
    assert "Tags (image-level labels) per label" in page and "top-1 accuracy: 0.667" in page


def test_a_run_with_shapes_and_tags_reports_both_and_ranks_tag_only_runs_by_their_f1():
    both = evaluate_run(eval_data(boxes=True, name="both"))
    report = build_report("photos", [both])
    assert report["overall"]["f1"] == 1.0 and report["tags"]["micro"]["tp"] == 3
    text = rendered(report)
    assert "Box metrics of both" in text and "Tags (image-level labels) of both" in text
    page = render_html(report)
    assert 'id="pr-curves"' in page and f'id="{TAG_PLOT_ID}"' in page

    perfect = EvalData(**{**eval_data(boxes=False, name="perfect").__dict__,
                          "tags": tag_data(pred=[dict.fromkeys(t, 0.9) for t in TRUTH])})
    runs = [evaluate_run(eval_data(boxes=False)), evaluate_run(perfect)]
    assert [e.name for e in rank_runs(runs, "f1")] == ["perfect", "clip"]
    many = build_report("photos", runs, rank_by="f1")
    assert "tags F1" in rendered(many) and "tags acc." in render_html(many)
    assert math.isclose(many["runs"][0]["tags"]["micro"]["f1"], 1.0)
