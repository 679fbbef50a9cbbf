"""Edit breakdown: what annotators did to each pre-label, checked on inputs whose answer is known by construction,
by conservation laws, and against a plain per-sample reference implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serverless.detections import Detections
from sync.evaluate import edits
from sync.evaluate.data import EvalData, EvalError
from sync.evaluate.edits import ACTIONS, IOU_BANDS, EditCounts, edit_breakdown
from sync.evaluate.seconds import ActionSeconds

LABELS = ("cat", "dog", "car")
CAT, DOG, CAR, BG = 0, 1, 2, 3
BOX = [10.0, 10.0, 110.0, 110.0]  # 100 x 100 px


def det(boxes, classes=None, *, ids=None, pre=None, crowd=None, masks=None) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    classes = np.zeros(n, np.int64) if classes is None else np.asarray(classes, np.int64).reshape(-1)
    data = {}
    if ids is not None:
        data["annotation_id"] = np.asarray(ids, np.int64).reshape(-1)
    if pre is not None:
        data["pre_annotation_id"] = np.asarray(pre, np.int64).reshape(-1)
    if crowd is not None:
        data["iscrowd"] = np.asarray(crowd, bool).reshape(-1)
    return Detections(
        xyxy=boxes,
        scores=np.ones(n, np.float32),
        class_ids=classes,
        labels=np.array(LABELS)[classes] if n else np.zeros(0, str),
        masks=masks,
        data=data,
    )


def make_data(samples: list[tuple[Detections, Detections]], labels=LABELS) -> EvalData:
    """``samples``: (pred, truth) per sample."""
    n = len(samples)
    return EvalData(
        labels=tuple(labels),
        sample_ids=np.arange(1, n + 1, dtype=np.int64),
        uris=tuple(f"s{i}.jpg" for i in range(n)),
        sizes=np.full((n, 2), 200, np.int64) if n else np.zeros((0, 2), np.int64),
        truth=tuple(t for _, t in samples),
        pred=tuple(p for p, _ in samples),
    )


def one(pred: Detections, truth: Detections, **kw):
    return edit_breakdown(make_data([(pred, truth)]), **kw)


def shifted(box, dx=0.0, dy=0.0):
    return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]


def counts(b) -> tuple[int, ...]:
    o = b.overall
    return (o.accepted, o.adjusted, o.relabeled, o.deleted, o.added)


def band_of(iou: float) -> str:
    """The IoU band by its definition (independent of the implementation's digitize)."""
    if iou >= 0.95:
        return "0.95-1.0"
    if iou >= 0.9:
        return "0.9-0.95"
    if iou >= 0.75:
        return "0.75-0.9"
    if iou >= 0.5:
        return "0.5-0.75"
    return "<0.5"


# --------------------------------------------------------------------------- each action alone
def test_accepted_when_linked_and_unchanged():
    b = one(det([BOX], [DOG], ids=[7]), det([BOX], [DOG], pre=[7]))
    assert counts(b) == (1, 0, 0, 0, 0)
    assert b.per_class["dog"] == EditCounts(accepted=1)
    assert b.per_class["cat"] == EditCounts() and b.per_class["car"] == EditCounts()
    assert b.matched_by == {"shape_id": 1, "iou": 0}
    assert b.confusion[DOG, DOG] == 1 and b.confusion.sum() == 1
    assert sum(b.adjusted_iou.values()) == 0
    assert b.per_sample.tolist() == [[1, 0, 0, 0, 0]]


@pytest.mark.parametrize(("move", "expected"), [(0.5, "accepted"), (0.75, "adjusted")])
def test_tolerance_px_decides_whether_a_box_moved(move, expected):
    b = one(det([BOX], ids=[1]), det([shifted(BOX, dx=move)], pre=[1]), tolerance_px=0.5)
    assert getattr(b.overall, expected) == 1 and b.overall.matched == 1


@pytest.mark.parametrize("dx", [2.0, 4.0, 10.0, 25.0, 50.0])
def test_moved_box_is_adjusted_in_its_iou_band(dx):
    # 100x100 box shifted by dx along x: intersection (100-dx)*100, union (100+dx)*100.
    iou = (100 - dx) / (100 + dx)
    b = one(det([BOX], [CAR], ids=[3]), det([shifted(BOX, dx=dx)], [CAR], pre=[3]))
    assert counts(b) == (0, 1, 0, 0, 0)
    assert b.adjusted_iou == {band: int(band == band_of(iou)) for band in IOU_BANDS}
    assert b.confusion[CAR, CAR] == 1


def test_move_by_10px_is_in_band_075_09():
    b = one(det([BOX], ids=[1]), det([shifted(BOX, dx=10)], pre=[1]))
    assert b.adjusted_iou["0.75-0.9"] == 1 and b.overall.adjusted == 1


def test_far_move_without_link_is_a_delete_and_an_add():
    # IoU 1/3 < match_iou: without the shape id the two are different objects.
    b = one(det([BOX], ids=[1]), det([shifted(BOX, dx=50)], pre=[-1]))
    assert counts(b) == (0, 0, 0, 1, 1)
    assert b.confusion[CAT, BG] == 1 and b.confusion[BG, CAT] == 1


@pytest.mark.parametrize(("dx", "band"), [(0.0, "0.95-1.0"), (10.0, "0.75-0.9")])
def test_relabel_with_and_without_move(dx, band):
    b = one(det([BOX], [CAT], ids=[4]), det([shifted(BOX, dx=dx)], [DOG], pre=[4]))
    assert counts(b) == (0, 0, 1, 0, 0)
    assert b.per_class["cat"].relabeled == 1 and b.per_class["dog"] == EditCounts()
    assert b.relabeled_iou[band] == 1 and sum(b.relabeled_iou.values()) == 1
    assert sum(b.adjusted_iou.values()) == 0
    assert b.confusion[CAT, DOG] == 1 and b.confusion.sum() == 1


def test_deleted_prelabel():
    b = one(det([BOX], [CAR], ids=[1]), det([]))
    assert counts(b) == (0, 0, 0, 1, 0)
    assert b.per_class["car"].deleted == 1
    assert b.confusion[CAR, BG] == 1 and b.confusion.sum() == 1


def test_added_shape_counts_under_truth_label():
    b = one(det([]), det([BOX], [DOG], pre=[-1]))
    assert counts(b) == (0, 0, 0, 0, 1)
    assert b.per_class["dog"].added == 1
    assert b.confusion[BG, DOG] == 1 and b.confusion.sum() == 1
    assert b.per_sample.tolist() == [[0, 0, 0, 0, 1]]


# --------------------------------------------------------------------------- matching rules
def test_shape_id_beats_a_better_iou_candidate():
    # pred 0 (id 10) sits 30 px away; pred 1 (id 11) sits exactly on the truth, but the truth
    # came from pred 0 (the annotator moved it onto the other one's spot and deleted that one).
    far = shifted(BOX, dx=30)
    b = one(det([far, BOX], ids=[10, 11]), det([BOX], pre=[10]))
    assert counts(b) == (0, 1, 0, 1, 0)
    assert b.matched_by == {"shape_id": 1, "iou": 0}
    assert b.adjusted_iou[band_of(70 / 130)] == 1


def test_iou_fallback_when_ids_are_missing():
    # No annotation_id / pre_annotation_id columns at all (e.g. truth imported from a file).
    b = one(det([BOX, shifted(BOX, dx=10)], [CAT, DOG]), det([shifted(BOX, dx=10), BOX], [DOG, CAT]))
    assert counts(b) == (2, 0, 0, 0, 0)
    assert b.matched_by == {"shape_id": 0, "iou": 2}
    assert b.confusion[CAT, CAT] == 1 and b.confusion[DOG, DOG] == 1


def test_iou_fallback_for_a_stale_link():
    # pre_annotation_id 99 names no pred of this sample: the truth is matched by IoU instead.
    b = one(det([BOX], ids=[1]), det([shifted(BOX, dx=4)], pre=[99]))
    assert counts(b) == (0, 1, 0, 0, 0)
    assert b.matched_by == {"shape_id": 0, "iou": 1}


def test_greedy_takes_the_highest_iou_first():
    # pred 0 = BOX+20, pred 1 = BOX; truth 0 = BOX-10, truth 1 = BOX+2. IoUs (shift d: (100-d)/(100+d)):
    # p0-t0 70/130, p0-t1 82/118, p1-t0 90/110, p1-t1 98/102. Greedy takes p1-t1 (0.96) first, then
    # p0-t0 (0.54). Going pred by pred would give p0-t1 (0.69) and p1-t0 (0.82) instead.
    pred = det([shifted(BOX, dx=20), BOX])
    truth = det([shifted(BOX, dx=-10), shifted(BOX, dx=2)])
    b = one(pred, truth)
    assert counts(b) == (0, 2, 0, 0, 0)
    assert b.adjusted_iou == {band: int(band in (band_of(98 / 102), band_of(70 / 130))) for band in IOU_BANDS}


def test_match_iou_threshold_is_inclusive():
    # IoU exactly 0.5: intersection 100x50, union 100x100.
    half = [10.0, 10.0, 110.0, 60.0]
    assert one(det([BOX]), det([half]), match_iou=0.5).overall.adjusted == 1
    assert counts(one(det([BOX]), det([half]), match_iou=0.51)) == (0, 0, 0, 1, 1)


def test_duplicate_links_pair_first_with_first():
    # Two preds share id 5 and two truths name it: pred 0 - truth 0 by id; the rest by IoU.
    pred = det([BOX, shifted(BOX, dx=60)], ids=[5, 5])
    truth = det([BOX, shifted(BOX, dx=60)], pre=[5, 5])
    b = one(pred, truth)
    assert b.matched_by == {"shape_id": 1, "iou": 1}
    assert counts(b) == (2, 0, 0, 0, 0)


def test_crowd_truth_is_never_matched_nor_added():
    pred = det([BOX], ids=[1])
    truth = det([BOX, shifted(BOX, dx=200)], pre=[1, -1], crowd=[True, True])
    b = one(pred, truth)
    assert counts(b) == (0, 0, 0, 1, 0)
    assert b.confusion.sum() == 1 and b.confusion[CAT, BG] == 1
    assert b.time.manual_seconds == 0 and b.time.saved_fraction is None


def test_empty_samples_and_empty_data():
    b = edit_breakdown(make_data([(det([]), det([])), (det([BOX]), det([])), (det([]), det([]))]))
    assert b.per_sample.tolist() == [[0] * 5, [0, 0, 0, 1, 0], [0] * 5]
    assert b.per_sample.dtype == np.int64
    empty = edit_breakdown(make_data([]))
    assert empty.per_sample.shape == (0, 5) and counts(empty) == (0,) * 5
    assert empty.confusion.shape == (4, 4) and empty.confusion.sum() == 0
    assert set(empty.per_class) == set(LABELS)
    assert empty.time.saved_fraction is None
    json.dumps(empty.to_dict())


# --------------------------------------------------------------------------- masks
def square_mask(x0, y0, x1, y1, size=(40, 40)) -> np.ndarray:
    m = np.zeros(size, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_changed_inside_an_unchanged_box_is_adjusted():
    box = [0.0, 0.0, 20.0, 20.0]
    pm = square_mask(0, 0, 20, 20)
    tm = pm.copy()
    tm[10:20, 10:20] = False  # annotator cut a quarter: mask IoU 300/400 = 0.75
    b = one(det([box], ids=[1], masks=pm[None]), det([box], pre=[1], masks=tm[None]))
    assert counts(b) == (0, 1, 0, 0, 0)
    assert b.adjusted_iou == {band: int(band == "0.75-0.9") for band in IOU_BANDS}


def test_identical_masks_are_accepted():
    box = [0.0, 0.0, 20.0, 20.0]
    m = square_mask(2, 3, 18, 20)[None]
    b = one(det([box], masks=m), det([box], masks=m))
    assert counts(b) == (1, 0, 0, 0, 0) and b.matched_by["iou"] == 1


def test_mask_iou_replaces_box_iou_for_matching():
    # Same box, disjoint masks: box IoU 1 but mask IoU 0, so no match without a link.
    box = [0.0, 0.0, 20.0, 20.0]
    b = one(det([box], masks=square_mask(0, 0, 10, 20)[None]), det([box], masks=square_mask(10, 0, 20, 20)[None]))
    assert counts(b) == (0, 0, 0, 1, 1)


def test_mask_sizes_must_agree():
    box = [0.0, 0.0, 5.0, 5.0]
    data = make_data([(det([box], masks=np.ones((1, 8, 8), bool)), det([box], masks=np.ones((1, 9, 8), bool)))])
    with pytest.raises(EvalError, match="sample 1: pred masks"):
        edit_breakdown(data)


# --------------------------------------------------------------------------- time and confusion
def mixed_sample() -> tuple[Detections, Detections]:
    """One of each action: cat accepted, cat adjusted, dog relabeled to car, car deleted, dog added."""
    a, b_, c, d, e = (shifted(BOX, dx=150 * i) for i in range(5))
    pred = det([a, b_, c, d], [CAT, CAT, DOG, CAR], ids=[1, 2, 3, 4])
    truth = det([a, shifted(b_, dy=10), c, e], [CAT, CAT, CAR, DOG], pre=[1, 2, 3, -1])
    return pred, truth


def test_time_arithmetic_with_custom_seconds():
    secs = ActionSeconds(verify=1, adjust=2, relabel=3, delete=5, draw=11)
    b = edit_breakdown(make_data([mixed_sample()]), seconds=secs)
    assert counts(b) == (1, 1, 1, 1, 1)
    # 4 truth shapes drawn by hand vs 1 verify + 1 adjust + 1 relabel + 1 delete + 1 draw.
    assert b.time.manual_seconds == 4 * 11
    assert b.time.with_prelabels_seconds == 1 + 2 + 3 + 5 + 11
    assert b.time.saved_seconds == 44 - 22
    assert b.time.saved_fraction == pytest.approx(0.5)
    assert b.time.seconds == secs
    cat, dog, car = (b.time_per_class[name] for name in LABELS)
    assert (cat.manual_seconds, cat.with_prelabels_seconds) == (2 * 11, 1 + 2)
    assert (dog.manual_seconds, dog.with_prelabels_seconds) == (1 * 11, 3 + 11)  # relabel under the pred's class
    assert (car.manual_seconds, car.with_prelabels_seconds) == (1 * 11, 5)
    assert dog.saved_seconds == 11 - 14
    assert b.to_dict()["seconds"] == secs.to_dict()


def test_confusion_matrix_cells():
    b = edit_breakdown(make_data([mixed_sample(), mixed_sample()]))
    expected = np.zeros((4, 4), np.int64)
    expected[CAT, CAT] = 2 * 2  # accepted + adjusted
    expected[DOG, CAR] = 2  # relabeled
    expected[CAR, BG] = 2  # deleted
    expected[BG, DOG] = 2  # added
    assert b.confusion_labels == (*LABELS, "background")
    np.testing.assert_array_equal(b.confusion, expected)
    assert b.per_sample.tolist() == [[1, 1, 1, 1, 1]] * 2
    assert b.edits_per_sample.tolist() == [4, 4]


def test_to_dict_is_json_ready():
    out = json.loads(json.dumps(edit_breakdown(make_data([mixed_sample()])).to_dict()))
    assert set(out) >= {"overall", "per_class", "adjusted_iou", "matched_by", "confusion", "time", "time_per_class",
                        "seconds"}
    assert out["overall"]["pre_labels"] == 4 and out["overall"]["truth"] == 4
    assert out["confusion"]["labels"] == [*LABELS, "background"]
    assert out["confusion"]["matrix"][DOG][CAR] == 1
    assert out["per_class"]["cat"]["accepted"] == 1
    assert list(out["adjusted_iou"]) == list(IOU_BANDS)


# --------------------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"match_iou": 0.0}, "match_iou"),
        ({"match_iou": 1.01}, "match_iou"),
        ({"match_iou": float("nan")}, "match_iou"),
        ({"match_iou": True}, "match_iou"),
        ({"tolerance_px": -0.1}, "tolerance_px"),
        ({"tolerance_px": float("nan")}, "tolerance_px"),
        ({"seconds": {"draw": 1}}, "seconds"),
    ],
)
def test_invalid_options_name_the_option(kwargs, name):
    with pytest.raises(EvalError, match=name):
        edit_breakdown(make_data([mixed_sample()]), **kwargs)


def test_non_integer_ids_are_refused():
    pred = Detections(
        xyxy=np.array([BOX], np.float32), scores=np.ones(1), class_ids=np.zeros(1, np.int64), labels=["cat"],
        data={"annotation_id": np.array([1.5])},
    )
    with pytest.raises(EvalError, match="annotation_id"):
        edit_breakdown(make_data([(pred, det([BOX]))]))


# --------------------------------------------------------------------------- random data: laws and oracle
def random_data(seed: int, n_samples: int, with_masks: bool) -> EvalData:
    """Small boxes on an integer grid (many overlaps and exact IoU ties); truths copy, nudge, relabel
    or replace preds; ids are sometimes missing, stale or duplicated; some truths are crowd."""
    rng = np.random.default_rng(seed)
    size = 16
    samples = []
    for _ in range(n_samples):
        n_p, n_t = int(rng.integers(0, 7)), int(rng.integers(0, 7))
        xy = rng.integers(0, size - 2, (n_p, 2))
        pb = np.hstack([xy, xy + rng.integers(1, 8, (n_p, 2))]).clip(0, size).astype(float)
        pc = rng.integers(0, 3, n_p)
        pid = rng.choice(np.arange(-1, 7), n_p)  # -1 and repeats allowed
        tb, tc, pre = np.zeros((n_t, 4)), rng.integers(0, 3, n_t), np.full(n_t, -1)
        for j in range(n_t):
            src = int(rng.integers(0, n_p)) if n_p and rng.random() < 0.75 else None
            if src is None:
                xy = rng.integers(0, size - 2, 2)
                tb[j] = np.concatenate([xy, xy + rng.integers(1, 8, 2)]).clip(0, size)
            else:
                tb[j] = pb[src] + rng.choice([0.0, 0.0, 0.5, 1.0, 2.0]) * rng.integers(-1, 2, 4)
                tb[j] = tb[j].clip(0, size)
                tb[j, 2:] = np.maximum(tb[j, 2:], tb[j, :2])
                tc[j] = pc[src] if rng.random() < 0.8 else tc[j]
                pre[j] = pid[src] if rng.random() < 0.6 else rng.choice([-1, 9])
        crowd = rng.random(n_t) < 0.1
        pm = tm = None
        if with_masks:
            pm = np.zeros((n_p, size, size), bool)
            for i, (x0, y0, x1, y1) in enumerate(pb.astype(int)):
                pm[i, y0:y1, x0:x1] = True
            tm = np.zeros((n_t, size, size), bool)
            for j, (x0, y0, x1, y1) in enumerate(np.floor(tb).astype(int)):
                tm[j, y0:y1, x0:x1] = True
            tm ^= rng.random(tm.shape) < 0.03
        samples.append((det(pb, pc, ids=pid, masks=pm), det(tb, tc, pre=pre, crowd=crowd, masks=tm)))
    return make_data(samples)


def reference(data: EvalData, match_iou: float, tol: float) -> dict:
    """Straightforward per-sample edit breakdown: the oracle for the vectorized one."""
    k = len(data.labels)
    per_sample = np.zeros((len(data.sample_ids), 5), np.int64)
    per_class = np.zeros((k, 5), np.int64)
    confusion = np.zeros((k + 1, k + 1), np.int64)
    bands = {"adjusted": dict.fromkeys(IOU_BANDS, 0), "relabeled": dict.fromkeys(IOU_BANDS, 0)}
    matched_by = {"shape_id": 0, "iou": 0}
    for s, (pred, truth) in enumerate(zip(data.pred, data.truth)):
        pid = pred.data.get("annotation_id", np.full(len(pred), -1))
        pre = truth.data.get("pre_annotation_id", np.full(len(truth), -1))
        crowd = truth.data.get("iscrowd", np.zeros(len(truth), bool))
        use_masks = pred.masks is not None and truth.masks is not None

        def iou(i: int, j: int) -> float:
            if use_masks:
                a, b = pred.masks[i], truth.masks[j]
                union = int((a | b).sum())
                return int((a & b).sum()) / union if union else 0.0
            px1, py1, px2, py2 = (float(v) for v in pred.xyxy[i])
            tx1, ty1, tx2, ty2 = (float(v) for v in truth.xyxy[j])
            inter = max(min(px2, tx2) - max(px1, tx1), 0.0) * max(min(py2, ty2) - max(py1, ty1), 0.0)
            union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
            return inter / union if union > 0 else 0.0

        match: dict[int, int] = {}
        first: dict[int, int] = {}
        for i, a in enumerate(pid.tolist()):
            if a >= 0 and a not in first:
                first[a] = i
        for j in range(len(truth)):
            if crowd[j] or pre[j] < 0:
                continue
            i = first.get(int(pre[j]))
            if i is not None and i not in match:
                match[i] = j
                matched_by["shape_id"] += 1
        edges = sorted(
            (-iou(i, j), i, j)
            for i in range(len(pred))
            for j in range(len(truth))
            if i not in match and j not in match.values() and not crowd[j] and iou(i, j) >= match_iou
        )
        for _, i, j in edges:
            if i not in match and j not in match.values():
                match[i] = j
                matched_by["iou"] += 1
        for i in range(len(pred)):
            pc = int(pred.class_ids[i])
            if i not in match:
                action = 3
                confusion[pc, k] += 1
            else:
                j = match[i]
                tc = int(truth.class_ids[j])
                confusion[pc, tc] += 1
                still = all(abs(float(a) - float(b)) <= tol for a, b in zip(pred.xyxy[i], truth.xyxy[j]))
                if use_masks:
                    a, b = pred.masks[i], truth.masks[j]
                    still = still and (iou(i, j) >= 0.99 or (not a.any() and not b.any()))
                action = 2 if tc != pc else 0 if still else 1
                if action in (1, 2):
                    bands["adjusted" if action == 1 else "relabeled"][band_of(iou(i, j))] += 1
            per_sample[s, action] += 1
            per_class[pc, action] += 1
        for j in range(len(truth)):
            if not crowd[j] and j not in match.values():
                tc = int(truth.class_ids[j])
                per_sample[s, 4] += 1
                per_class[tc, 4] += 1
                confusion[k, tc] += 1
    return {
        "per_sample": per_sample,
        "per_class": per_class,
        "confusion": confusion,
        "bands": bands,
        "matched_by": matched_by,
    }


RANDOM_CASES = dict(
    seed=st.integers(0, 2**32 - 1),
    n_samples=st.integers(0, 12),
    with_masks=st.booleans(),
    match_iou=st.sampled_from([0.3, 0.5, 0.75, 1.0]),
    tol=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
)


@settings(max_examples=60, deadline=None)
@given(**RANDOM_CASES)
def test_counts_are_conserved(seed, n_samples, with_masks, match_iou, tol):
    data = random_data(seed, n_samples, with_masks)
    b = edit_breakdown(data, match_iou=match_iou, tolerance_px=tol)
    n_pred = sum(len(p) for p in data.pred)
    crowd = [t.data["iscrowd"] for t in data.truth]
    n_truth = sum(int((~c).sum()) for c in crowd)
    o = b.overall
    assert o.accepted + o.adjusted + o.relabeled + o.deleted == n_pred == o.pre_labels
    assert o.accepted + o.adjusted + o.relabeled + o.added == n_truth == o.truth
    assert b.matched_by["shape_id"] + b.matched_by["iou"] == o.matched
    assert sum(b.adjusted_iou.values()) == o.adjusted and sum(b.relabeled_iou.values()) == o.relabeled
    assert b.per_sample.sum(axis=0).tolist() == [getattr(o, a) for a in ACTIONS]
    assert sum(c.pre_labels for c in b.per_class.values()) == n_pred
    k = len(LABELS)
    pred_per_class = np.bincount(np.concatenate([p.class_ids for p in data.pred] or [np.zeros(0, int)]), minlength=k)
    truth_per_class = np.bincount(
        np.concatenate([t.class_ids[~c] for t, c in zip(data.truth, crowd)] or [np.zeros(0, int)]), minlength=k
    )
    assert b.confusion[:k].sum(axis=1).tolist() == pred_per_class.tolist()
    assert b.confusion[:, :k].sum(axis=0).tolist() == truth_per_class.tolist()
    assert b.confusion.sum() == n_pred + o.added == n_truth + o.deleted
    assert b.time.manual_seconds == pytest.approx(n_truth * b.time.seconds.draw)
    assert sum(t.manual_seconds for t in b.time_per_class.values()) == pytest.approx(b.time.manual_seconds)
    assert sum(t.with_prelabels_seconds for t in b.time_per_class.values()) == pytest.approx(
        b.time.with_prelabels_seconds
    )


def assert_matches_reference(data: EvalData, match_iou: float, tol: float) -> None:
    got = edit_breakdown(data, match_iou=match_iou, tolerance_px=tol)
    ref = reference(data, match_iou, tol)
    np.testing.assert_array_equal(got.per_sample, ref["per_sample"])
    np.testing.assert_array_equal(np.array([[getattr(got.per_class[n], a) for a in ACTIONS] for n in LABELS]),
                                  ref["per_class"])
    np.testing.assert_array_equal(got.confusion, ref["confusion"])
    assert got.adjusted_iou == ref["bands"]["adjusted"]
    assert got.relabeled_iou == ref["bands"]["relabeled"]
    assert got.matched_by == ref["matched_by"]


@settings(max_examples=80, deadline=None)
@given(**RANDOM_CASES)
def test_vectorized_path_equals_the_per_sample_reference(seed, n_samples, with_masks, match_iou, tol):
    assert_matches_reference(random_data(seed, n_samples, with_masks), match_iou, tol)


@pytest.mark.parametrize("cells", [1, 40, 400])
def test_chunking_does_not_change_the_result(monkeypatch, cells):
    # Tiny chunk budgets force many chunks (one sample each at the extreme).
    monkeypatch.setattr(edits, "_CHUNK_CELLS", cells)
    for seed in range(3):
        assert_matches_reference(random_data(seed, 30, with_masks=seed == 1), 0.5, 0.5)
