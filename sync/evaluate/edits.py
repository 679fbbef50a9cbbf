"""What annotators changed: each pre-label accepted, adjusted, relabeled or deleted; each missed object added.

Matching, per sample:

1. By id: a truth annotation whose ``pre_annotation_id`` equals a pred's ``annotation_id``
   (both >= 0) is that pred, corrected (its CVAT shape survived). When ids repeat, the first
   pred with an id pairs with the first truth naming it; the others fall through to step 2.
2. By IoU, class-agnostic, among what step 1 left: greedy by descending IoU (ties: lower pred
   index, then lower truth index), pairs need IoU >= ``match_iou``. The IoU is the mask IoU
   when both sides of the sample have masks, the box IoU otherwise.

Crowd truth (``iscrowd``) is never matched and never counted as added. A matched pair is
*accepted* when the label is the same and the geometry did not move (every box coordinate
within ``tolerance_px``; with masks, mask IoU >= 0.99 as well, unless both are rectangles), *adjusted* when the label is
the same and the geometry moved, *relabeled* when the label changed (moved or not). An
unmatched pred was *deleted*; an unmatched non-crowd truth was *added*.

The matching is vectorized: boxes are padded into ``(samples, max_pred, max_truth)`` IoU
tensors in chunks, and the greedy selection runs as rounds of "locally dominant" pairs (a pair
that is the best of its row and of its column under the greedy order is exactly a pair the
sequential greedy would take), each round over all samples at once. Only masks go sample by
sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from serverless.detections import Detections
from sync.evaluate.data import EvalData, EvalError
from sync.evaluate.seconds import ActionSeconds

__all__ = [
    "ACTIONS",
    "IOU_BANDS",
    "EditBreakdown",
    "EditCounts",
    "TimeEstimate",
    "edit_breakdown",
]

ACTIONS: tuple[str, ...] = ("accepted", "adjusted", "relabeled", "deleted", "added")
"""The columns of `EditBreakdown.per_sample`, in order."""

IOU_BANDS: tuple[str, ...] = ("0.95-1.0", "0.9-0.95", "0.75-0.9", "0.5-0.75", "<0.5")
"""IoU bands of changed pairs, high to low; a band includes its lower edge."""
_BAND_EDGES = np.array([0.5, 0.75, 0.9, 0.95])  # np.digitize index 4 -> "0.95-1.0", ..., 0 -> "<0.5"

MASK_SAME_IOU = 0.99
"""Mask IoU at or above which a mask counts as unchanged."""

_CHUNK_CELLS = 1 << 20
"""Upper bound on samples * max_pred * max_truth per padded chunk (memory stays at a few tens of MB)."""

_ACCEPTED, _ADJUSTED, _RELABELED, _DELETED = 0, 1, 2, 3


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class EditCounts:
    """How many annotations each action touched.

    Per class, accepted/adjusted/relabeled/deleted count under the pre-label's class and added
    under the truth's class.
    """

    accepted: int = 0
    adjusted: int = 0
    relabeled: int = 0
    deleted: int = 0
    added: int = 0

    @property
    def pre_labels(self) -> int:
        """Pre-labels shown to the annotator."""
        return self.accepted + self.adjusted + self.relabeled + self.deleted

    @property
    def matched(self) -> int:
        """Pre-labels kept in some form (accepted, adjusted or relabeled)."""
        return self.accepted + self.adjusted + self.relabeled

    @property
    def truth(self) -> int:
        """Kept pre-labels plus added shapes. Overall this is the number of non-crowd truth
        annotations; per class it counts relabeled pairs under the pre-label's class."""
        return self.matched + self.added

    @property
    def edits(self) -> int:
        """Actions that changed something (adjusted + relabeled + deleted + added)."""
        return self.adjusted + self.relabeled + self.deleted + self.added

    @property
    def accepted_fraction(self) -> float | None:
        """Share of pre-labels accepted unchanged (None without pre-labels)."""
        return self.accepted / self.pre_labels if self.pre_labels else None

    def to_dict(self) -> dict[str, int | float | None]:
        return {
            "accepted": self.accepted,
            "adjusted": self.adjusted,
            "relabeled": self.relabeled,
            "deleted": self.deleted,
            "added": self.added,
            "pre_labels": self.pre_labels,
            "matched": self.matched,
            "truth": self.truth,
            "edits": self.edits,
            "accepted_fraction": self.accepted_fraction,
        }


@dataclass(frozen=True)
class TimeEstimate:
    """Annotation time in seconds, by hand against with pre-labels.

    ``manual_seconds`` = non-crowd truth annotations * ``seconds.draw``;
    ``with_prelabels_seconds`` = accepted*verify + adjusted*adjust + relabeled*relabel +
    deleted*delete + added*draw; ``saved_seconds`` is their difference (negative when the
    pre-labels cost time) and ``saved_fraction`` = saved / manual (None when manual is 0).
    """

    manual_seconds: float
    with_prelabels_seconds: float
    saved_seconds: float
    saved_fraction: float | None
    seconds: ActionSeconds

    @classmethod
    def from_counts(cls, counts: EditCounts, truth_count: int, seconds: ActionSeconds) -> TimeEstimate:
        """The estimate for ``counts`` when the truth holds ``truth_count`` non-crowd annotations."""
        manual = float(truth_count * seconds.draw)
        with_prelabels = float(
            counts.accepted * seconds.verify
            + counts.adjusted * seconds.adjust
            + counts.relabeled * seconds.relabel
            + counts.deleted * seconds.delete
            + counts.added * seconds.draw
        )
        saved = manual - with_prelabels
        return cls(manual, with_prelabels, saved, saved / manual if manual else None, seconds)

    def to_dict(self, *, include_seconds: bool = True) -> dict:
        out: dict = {
            "manual_seconds": self.manual_seconds,
            "with_prelabels_seconds": self.with_prelabels_seconds,
            "saved_seconds": self.saved_seconds,
            "saved_fraction": self.saved_fraction,
        }
        if include_seconds:
            out["seconds"] = self.seconds.to_dict()
        return out


@dataclass(frozen=True, eq=False)
class EditBreakdown:
    """What annotators changed in one pre-label run (see the module docstring for the rules).

    - ``adjusted_iou`` / ``relabeled_iou``: adjusted / relabeled pairs per IoU band
      (`IOU_BANDS`; the matching IoU: mask IoU when both sides have masks, box IoU otherwise).
      "<0.5" only occurs for id matches.
    - ``matched_by``: pairs matched through the CVAT shape id (``"shape_id"``) and by IoU (``"iou"``).
    - ``per_sample``: int64 (n_samples, 5), columns `ACTIONS`, rows aligned with
      ``EvalData.sample_ids``.
    - ``confusion``: int64 (K+1, K+1) over ``confusion_labels`` = labels + ("background",);
      rows are the pre-label's class (background for added shapes), columns the truth's class
      (background for deleted pre-labels).
    """

    overall: EditCounts
    per_class: dict[str, EditCounts]
    adjusted_iou: dict[str, int]
    relabeled_iou: dict[str, int]
    matched_by: dict[str, int]
    per_sample: np.ndarray
    confusion: np.ndarray
    confusion_labels: tuple[str, ...]
    time: TimeEstimate
    time_per_class: dict[str, TimeEstimate]
    match_iou: float = 0.5
    tolerance_px: float = 0.5
    sample_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def edits_per_sample(self) -> np.ndarray:
        """int64 (n_samples,): adjusted + relabeled + deleted + added per sample."""
        return self.per_sample[:, 1:].sum(axis=1)

    def to_dict(self) -> dict:
        """A JSON-ready summary (no per-sample rows)."""
        return {
            "overall": self.overall.to_dict(),
            "per_class": {name: counts.to_dict() for name, counts in self.per_class.items()},
            "adjusted_iou": dict(self.adjusted_iou),
            "relabeled_iou": dict(self.relabeled_iou),
            "matched_by": dict(self.matched_by),
            "confusion": {"labels": list(self.confusion_labels), "matrix": self.confusion.tolist()},
            "time": self.time.to_dict(include_seconds=False),
            "time_per_class": {
                name: estimate.to_dict(include_seconds=False) for name, estimate in self.time_per_class.items()
            },
            "seconds": self.time.seconds.to_dict(),
            "options": {"match_iou": self.match_iou, "tolerance_px": self.tolerance_px},
        }


# --------------------------------------------------------------------------- entry point
def edit_breakdown(
    data: EvalData,
    *,
    match_iou: float = 0.5,
    tolerance_px: float = 0.5,
    seconds: ActionSeconds = ActionSeconds(),
) -> EditBreakdown:
    """Classify every pre-label and truth annotation of ``data`` by the action that produced it.

    ``match_iou`` in (0, 1] is the IoU an unlinked pair needs to count as one object;
    ``tolerance_px`` (pixels, >= 0) is how far a box coordinate may move and still count as
    unchanged. ``seconds`` prices each action for the time estimate.
    """
    _check_options(match_iou, tolerance_px, seconds)
    flat = _Flat.gather(data)
    match_t, kind, pair_iou, pair_mask_same = _match(flat, data, float(match_iou))

    k = len(data.labels)
    n = len(data.sample_ids)
    matched = match_t >= 0
    safe_t = np.where(matched, match_t, 0)
    same_label = matched & (flat.p_cls == flat.t_cls[safe_t]) if flat.t_cls.size else np.zeros_like(matched)
    if flat.t_xyxy.size:
        box_same = np.all(np.abs(flat.p_xyxy - flat.t_xyxy[safe_t]) <= tolerance_px, axis=1)
    else:
        box_same = np.zeros(matched.shape, bool)
    action = np.full(match_t.shape, _DELETED, np.int64)
    action[matched & ~same_label] = _RELABELED
    # Two rectangles are the same shape when their boxes are; their masks are only rasterized boxes.
    both_boxes = matched & flat.p_box & (flat.t_box[safe_t] if flat.t_box.size else False)
    unchanged = box_same & (pair_mask_same | both_boxes)
    action[same_label & ~unchanged] = _ADJUSTED
    action[same_label & unchanged] = _ACCEPTED

    truth_matched = np.zeros(len(flat.t_cls), bool)
    truth_matched[match_t[matched]] = True
    added = ~truth_matched & ~flat.t_crowd
    real_truth = ~flat.t_crowd

    by_class = np.bincount(flat.p_cls * 4 + action, minlength=4 * k).reshape(k, 4)
    added_by_class = np.bincount(flat.t_cls[added], minlength=k)
    truth_by_class = np.bincount(flat.t_cls[real_truth], minlength=k)
    per_sample = np.zeros((n, 5), np.int64)
    per_sample[:, :4] = np.bincount(flat.p_sample * 4 + action, minlength=4 * n).reshape(n, 4)
    per_sample[:, 4] = np.bincount(flat.t_sample[added], minlength=n)
    per_sample.setflags(write=False)

    rows = np.concatenate([flat.p_cls, np.full(int(added.sum()), k, np.int64)])
    cols = np.concatenate([np.where(matched, flat.t_cls[safe_t] if flat.t_cls.size else k, k), flat.t_cls[added]])
    confusion = np.bincount(rows * (k + 1) + cols, minlength=(k + 1) ** 2).reshape(k + 1, k + 1).astype(np.int64)
    confusion.setflags(write=False)

    per_class = {
        name: EditCounts(*(int(c) for c in by_class[i]), added=int(added_by_class[i]))
        for i, name in enumerate(data.labels)
    }
    overall = EditCounts(*(int(c) for c in by_class.sum(axis=0)), added=int(added_by_class.sum()))
    time_per_class = {
        name: TimeEstimate.from_counts(per_class[name], int(truth_by_class[i]), seconds)
        for i, name in enumerate(data.labels)
    }
    return EditBreakdown(
        overall=overall,
        per_class=per_class,
        adjusted_iou=_bands(pair_iou[action == _ADJUSTED]),
        relabeled_iou=_bands(pair_iou[action == _RELABELED]),
        matched_by={"shape_id": int(np.count_nonzero(kind == 1)), "iou": int(np.count_nonzero(kind == 2))},
        per_sample=per_sample,
        confusion=confusion,
        confusion_labels=(*data.labels, "background"),
        time=TimeEstimate.from_counts(overall, int(real_truth.sum()), seconds),
        time_per_class=time_per_class,
        match_iou=float(match_iou),
        tolerance_px=float(tolerance_px),
        sample_ids=np.asarray(data.sample_ids),
    )


def _check_options(match_iou: float, tolerance_px: float, seconds: ActionSeconds) -> None:
    def real(value: object) -> bool:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))

    if not real(match_iou) or not (0.0 < float(match_iou) <= 1.0):
        raise EvalError(f"match_iou must be a number in (0, 1], got {match_iou!r}")
    if not real(tolerance_px) or not math.isfinite(float(tolerance_px)) or float(tolerance_px) < 0:
        raise EvalError(f"tolerance_px must be a finite number of pixels >= 0, got {tolerance_px!r}")
    if not isinstance(seconds, ActionSeconds):
        raise EvalError(f"seconds must be an ActionSeconds, got {type(seconds).__name__}")


def _bands(iou: np.ndarray) -> dict[str, int]:
    counts = np.bincount(np.digitize(iou, _BAND_EDGES), minlength=5)
    return {band: int(counts[4 - i]) for i, band in enumerate(IOU_BANDS)}


# --------------------------------------------------------------------------- flat columns
@dataclass(frozen=True)
class _Flat:
    """Pred and truth annotations of all samples, concatenated in sample order."""

    p_counts: np.ndarray
    p_offsets: np.ndarray
    p_sample: np.ndarray
    p_xyxy: np.ndarray
    p_cls: np.ndarray
    p_id: np.ndarray
    p_box: np.ndarray
    t_counts: np.ndarray
    t_offsets: np.ndarray
    t_sample: np.ndarray
    t_xyxy: np.ndarray
    t_cls: np.ndarray
    t_pre: np.ndarray
    t_crowd: np.ndarray
    t_box: np.ndarray

    @classmethod
    def gather(cls, data: EvalData) -> _Flat:
        sample_ids = data.sample_ids
        p_ids, t_pre, t_crowd = [], [], []
        for i, (pred, truth) in enumerate(zip(data.pred, data.truth)):
            p_ids.append(_int_column(pred, "annotation_id", "pred", sample_ids[i]))
            t_pre.append(_int_column(truth, "pre_annotation_id", "truth", sample_ids[i]))
            t_crowd.append(_crowd_column(truth, sample_ids[i]))
        p_counts, p_offsets, p_sample = _layout([len(d) for d in data.pred])
        t_counts, t_offsets, t_sample = _layout([len(d) for d in data.truth])
        return cls(
            p_counts=p_counts,
            p_offsets=p_offsets,
            p_sample=p_sample,
            p_xyxy=_concat([d.xyxy for d in data.pred], np.float64, (0, 4)),
            p_cls=_concat([d.class_ids for d in data.pred], np.int64, (0,)),
            p_id=_concat(p_ids, np.int64, (0,)),
            p_box=_concat([_box_only(d) for d in data.pred], bool, (0,)),
            t_counts=t_counts,
            t_offsets=t_offsets,
            t_sample=t_sample,
            t_xyxy=_concat([d.xyxy for d in data.truth], np.float64, (0, 4)),
            t_cls=_concat([d.class_ids for d in data.truth], np.int64, (0,)),
            t_pre=_concat(t_pre, np.int64, (0,)),
            t_crowd=_concat(t_crowd, bool, (0,)),
            t_box=_concat([_box_only(d) for d in data.truth], bool, (0,)),
        )


def _layout(counts: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts_ = np.asarray(counts, np.int64).reshape(-1)
    offsets = np.zeros(len(counts_) + 1, np.int64)
    np.cumsum(counts_, out=offsets[1:])
    return counts_, offsets, np.repeat(np.arange(len(counts_), dtype=np.int64), counts_)


def _concat(parts: list[np.ndarray], dtype: type, empty_shape: tuple[int, ...]) -> np.ndarray:
    if not parts:
        return np.zeros(empty_shape, dtype)
    return np.concatenate(parts).astype(dtype, copy=False)


def _int_column(det: Detections, name: str, side: str, sample_id: object) -> np.ndarray:
    column = det.data.get(name)
    if column is None:
        return np.full(len(det), -1, np.int64)
    if column.size and column.dtype.kind not in "iu":
        raise EvalError(f"{side} of sample {int(sample_id)}: data[{name!r}] must hold integers, got {column.dtype}")
    return column.reshape(-1)


def _box_only(det: Detections) -> np.ndarray:
    """True where the annotation is a rectangle (``shape_type`` column; unknown → False)."""
    kinds = det.data.get("shape_type")
    if kinds is None:
        return np.zeros(len(det), bool)
    return np.asarray(kinds).reshape(-1) == "rectangle"


def _crowd_column(det: Detections, sample_id: object) -> np.ndarray:
    column = det.data.get("iscrowd")
    if column is None:
        return np.zeros(len(det), bool)
    if column.size and column.dtype.kind not in "biu":
        raise EvalError(f"truth of sample {int(sample_id)}: data['iscrowd'] must be boolean, got {column.dtype}")
    return column.reshape(-1).astype(bool)


# --------------------------------------------------------------------------- matching
def _match(flat: _Flat, data: EvalData, match_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per flat pred: matched flat truth index (-1), how (0 none, 1 id, 2 IoU), pair IoU, mask unchanged."""
    n_pred = len(flat.p_cls)
    match_t = np.full(n_pred, -1, np.int64)
    kind = np.zeros(n_pred, np.int8)
    pair_iou = np.zeros(n_pred, np.float64)
    pair_mask_same = np.ones(n_pred, bool)
    mask_samples = _mask_samples(data)
    for s0, s1 in _chunks(flat.p_counts, flat.t_counts):
        _match_chunk(flat, data, s0, s1, match_iou, mask_samples, match_t, kind, pair_iou, pair_mask_same)
    return match_t, kind, pair_iou, pair_mask_same


def _mask_samples(data: EvalData) -> set[int]:
    """Samples where both sides have masks and something to compare (mask IoU replaces box IoU)."""
    out = set()
    for i, (pred, truth) in enumerate(zip(data.pred, data.truth)):
        if pred.masks is None or truth.masks is None or not len(pred) or not len(truth):
            continue
        if pred.masks.shape[1:] != truth.masks.shape[1:]:
            raise EvalError(
                f"sample {int(data.sample_ids[i])}: pred masks are {pred.masks.shape[1:]} but truth masks "
                f"are {truth.masks.shape[1:]} (height, width)"
            )
        out.add(i)
    return out


def _chunks(p_counts: np.ndarray, t_counts: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive sample ranges whose padded (samples, max_pred, max_truth) tensor stays small."""
    chunks = []
    start, max_p, max_t = 0, 1, 1
    for i, (p, t) in enumerate(zip(p_counts.tolist(), t_counts.tolist())):
        new_p, new_t = max(max_p, p), max(max_t, t)
        if i > start and (i - start + 1) * new_p * new_t > _CHUNK_CELLS:
            chunks.append((start, i))
            start, new_p, new_t = i, max(1, p), max(1, t)
        max_p, max_t = new_p, new_t
    if len(p_counts) > start:
        chunks.append((start, len(p_counts)))
    return chunks


def _box_iou(pb: np.ndarray, tb: np.ndarray) -> np.ndarray:
    """(c, P, 4) x (c, T, 4) float64 boxes -> (c, P, T) IoU; 0 where the union is empty."""
    p = pb[:, :, None, :]
    t = tb[:, None, :, :]
    iw = np.minimum(p[..., 2], t[..., 2]) - np.maximum(p[..., 0], t[..., 0])
    ih = np.minimum(p[..., 3], t[..., 3]) - np.maximum(p[..., 1], t[..., 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_p = (pb[..., 2] - pb[..., 0]) * (pb[..., 3] - pb[..., 1])
    area_t = (tb[..., 2] - tb[..., 0]) * (tb[..., 3] - tb[..., 1])
    union = area_p[:, :, None] + area_t[:, None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _mask_iou(pred_masks: np.ndarray, truth_masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask IoU (P, T) and "mask unchanged" (IoU >= 0.99, or both masks empty)."""
    pixels = pred_masks.shape[1] * pred_masks.shape[2]
    dtype = np.float32 if pixels < (1 << 24) else np.float64  # exact pixel counts
    pm = pred_masks.reshape(len(pred_masks), -1).astype(dtype)
    tm = truth_masks.reshape(len(truth_masks), -1).astype(dtype)
    inter = (pm @ tm.T).astype(np.float64)
    area_p = pm.sum(axis=1, dtype=np.float64)
    area_t = tm.sum(axis=1, dtype=np.float64)
    union = area_p[:, None] + area_t[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    same = (iou >= MASK_SAME_IOU) | ((area_p[:, None] == 0) & (area_t[None, :] == 0))
    return iou, same


def _id_links(
    p_id: np.ndarray, t_pre: np.ndarray, p_open: np.ndarray, t_open: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(chunk sample, pred, truth)`` index arrays of the pairs linked by CVAT shape id: the
    first open pred holding an id with the first open truth naming it."""
    linked = (p_id >= 0)[:, :, None] & (p_id[:, :, None] == t_pre[:, None, :])
    linked &= p_open[:, :, None] & t_open[:, None, :]
    has = linked.any(axis=2)
    first_t = linked.argmax(axis=2)
    first_p = linked.argmax(axis=1)
    cs, cp = np.nonzero(has)
    ct = first_t[cs, cp]
    keep = first_p[cs, ct] == cp
    return cs[keep], cp[keep], ct[keep]


def _match_chunk(
    flat: _Flat,
    data: EvalData,
    s0: int,
    s1: int,
    match_iou: float,
    mask_samples: set[int],
    match_t: np.ndarray,
    kind: np.ndarray,
    pair_iou: np.ndarray,
    pair_mask_same: np.ndarray,
) -> None:
    n_p, n_t = flat.p_counts[s0:s1], flat.t_counts[s0:s1]
    c, P, T = s1 - s0, int(n_p.max(initial=0)), int(n_t.max(initial=0))
    if P == 0 or T == 0:
        return
    pf = np.arange(flat.p_offsets[s0], flat.p_offsets[s1])
    tf = np.arange(flat.t_offsets[s0], flat.t_offsets[s1])
    ps, pp = flat.p_sample[pf] - s0, pf - flat.p_offsets[flat.p_sample[pf]]
    ts, tp = flat.t_sample[tf] - s0, tf - flat.t_offsets[flat.t_sample[tf]]

    pb = np.zeros((c, P, 4))
    pb[ps, pp] = flat.p_xyxy[pf]
    tb = np.zeros((c, T, 4))
    tb[ts, tp] = flat.t_xyxy[tf]
    p_flat = np.full((c, P), -1, np.int64)
    p_flat[ps, pp] = pf
    t_flat = np.full((c, T), -1, np.int64)
    t_flat[ts, tp] = tf
    p_id = np.full((c, P), -1, np.int64)
    p_id[ps, pp] = flat.p_id[pf]
    t_pre = np.full((c, T), -1, np.int64)
    t_pre[ts, tp] = flat.t_pre[tf]
    p_open = p_flat >= 0
    t_open = (t_flat >= 0) & ~flat.t_crowd[np.maximum(t_flat, 0)]

    iou = _box_iou(pb, tb)
    mask_same = None
    for s in sorted(i for i in mask_samples if s0 <= i < s1):
        m_iou, m_same = _mask_iou(data.pred[s].masks, data.truth[s].masks)
        a, b = m_iou.shape
        iou[s - s0, :a, :b] = m_iou
        if mask_same is None:
            mask_same = np.ones((c, P, T), bool)
        mask_same[s - s0, :a, :b] = m_same

    def record(cs: np.ndarray, cp: np.ndarray, ct: np.ndarray, how: int) -> None:
        preds = p_flat[cs, cp]
        match_t[preds] = t_flat[cs, ct]
        kind[preds] = how
        pair_iou[preds] = iou[cs, cp, ct]
        if mask_same is not None:
            pair_mask_same[preds] = mask_same[cs, cp, ct]
        p_open[cs, cp] = False
        t_open[cs, ct] = False

    # 1. by id: the first pred holding an id pairs with the first open truth naming it.
    cs, cp, ct = _id_links(p_id, t_pre, p_open, t_open)
    if cs.size:
        record(cs, cp, ct, 1)

    # 2. greedy by IoU in rounds of locally dominant pairs.
    key = np.where(p_open[:, :, None] & t_open[:, None, :] & (iou >= match_iou), iou, -1.0)
    rows = np.arange(c)
    while True:
        has = key.max(axis=2) >= 0
        active = has.any(axis=1)
        if not active.any():
            break
        if not active.all():
            key, rows, has = key[active], rows[active], has[active]
        best_t = key.argmax(axis=2)  # first maximum: lower truth index wins ties
        best_p = key.argmax(axis=1)  # first maximum: lower pred index wins ties
        a, cp = np.nonzero(has)
        ct = best_t[a, cp]
        keep = best_p[a, ct] == cp
        a, cp, ct = a[keep], cp[keep], ct[keep]
        record(rows[a], cp, ct, 2)
        key[a, cp, :] = -1.0
        key[a, :, ct] = -1.0
