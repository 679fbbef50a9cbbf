"""What an evaluation compares: one pre-label run against one truth, sample by sample.

`EvalData` is the one input of every evaluation step (metrics, threshold sweep, edit
breakdown, hard-sample selection). It is built from the store by `sync.evaluate.load`, or
directly from `Detections` in tests and benchmarks.

Image-level labels (CVAT tags, stored as rows of shape type ``tag`` with the whole frame as
their box) are no shapes: every store read of the evaluation takes them out of the geometry
with the store's `sync.store.convert.split_tags`, and `TagData` holds them as per-sample
label sets (`EvalData.tags`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from serverless.detections import Detections

__all__ = ["EvalData", "EvalError", "TagData"]


class EvalError(ValueError):
    """An evaluation cannot run: its message names the run, sample, label or option at fault."""


def _frozen(array: np.ndarray, dtype: type) -> np.ndarray:
    array = np.array(array, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class TagData:
    """The image-level labels of a pre-label run and of the truth, as label sets per sample.

    - ``labels``: the tag label names; column ``k`` is ``labels[k]``.
    - ``truth``: bool (N, K): sample ``i`` carries tag ``k`` in the truth.
    - ``scores``: float32 (N, K): the score of the run's tag ``k`` on sample ``i``, NaN where
      the run gave no such tag (a tag stored twice counts once, at its highest score). A
      tag the run stored is a tag it predicted: the run applied its thresholds already.

    Rows are the samples of the `EvalData` that holds it, in its order.
    """

    labels: tuple[str, ...]
    truth: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        object.__setattr__(self, "truth", _frozen(self.truth, bool))
        object.__setattr__(self, "scores", _frozen(self.scores, np.float32))
        k = len(self.labels)
        if self.truth.ndim != 2 or self.truth.shape[1] != k or self.scores.shape != self.truth.shape:
            raise EvalError(
                f"TagData: truth and scores must both have shape (samples, {k} labels), "
                f"got {self.truth.shape} and {self.scores.shape}"
            )
        given = self.scores[~np.isnan(self.scores)]
        if given.size and (given.min() < 0 or given.max() > 1):
            raise EvalError("TagData: scores must lie in 0..1 (NaN: no tag)")

    @property
    def predicted(self) -> np.ndarray:
        """bool (N, K): the run gave tag ``k`` on sample ``i``."""
        return ~np.isnan(self.scores)

    @classmethod
    def from_detections(
        cls, labels: Sequence[str], truth: Sequence[Detections], pred: Sequence[Detections]
    ) -> TagData:
        """Label sets from per-sample tag annotations (their ``labels`` and, for ``pred``, their
        ``scores``). Labels missing from ``labels`` raise `EvalError` naming them."""
        index = {name: k for k, name in enumerate(labels)}
        if len(truth) != len(pred):
            raise EvalError(f"TagData: {len(truth)} truth samples but {len(pred)} pred samples")
        truth_sets = np.zeros((len(truth), len(index)), dtype=bool)
        scores = np.full((len(pred), len(index)), np.nan, dtype=np.float32)
        for i, (t, p) in enumerate(zip(truth, pred)):
            for name in t.labels.tolist():
                truth_sets[i, cls._column(index, name)] = True
            for name, score in zip(p.labels.tolist(), p.scores.tolist()):
                k = cls._column(index, name)
                scores[i, k] = score if np.isnan(scores[i, k]) else max(scores[i, k], score)
        return cls(labels=tuple(labels), truth=truth_sets, scores=scores)

    @staticmethod
    def _column(index: Mapping[str, int], name: object) -> int:
        if str(name) not in index:
            raise EvalError(f"TagData: tag {name!r} is not one of the labels {sorted(index)}")
        return index[str(name)]


@dataclass(frozen=True, eq=False)
class EvalData:
    """A pre-label run (``pred``) and the truth (``truth``), aligned per sample.

    - ``labels``: the class names; class id ``i`` is ``labels[i]``. Every `Detections` here has
      ``class_ids`` filled from this index (never -1).
    - ``sample_ids``, ``uris``, ``sizes``: the evaluated samples (ascending id); ``sizes[i]`` is
      ``(width, height)``.
    - ``truth[i]`` / ``pred[i]``: the annotations of sample ``i``. ``data`` of both carries
      ``annotation_id`` (int64, the store's row id, -1 when not stored); truth also carries
      ``pre_annotation_id`` (int64: the pred annotation it was corrected from, -1 when
      unknown) and ``iscrowd`` (bool: COCO crowd regions, never counted as misses).
      Human annotations without a score read as 1.0. ``masks`` (full-frame, bool) are
      present on both sides only when loaded for mask evaluation. Neither holds tags.
    - ``pred_thresholds``: the score threshold per label the run was made with (nothing below
      it was kept, so a threshold sweep starts there), or None when unknown; tag labels too.
    - ``tags``: the image-level labels of both sides (`TagData`, one row per sample), or None
      when neither side nor the run's ontology has any.
    """

    labels: tuple[str, ...]
    sample_ids: np.ndarray
    uris: tuple[str, ...]
    sizes: np.ndarray
    truth: tuple[Detections, ...]
    pred: tuple[Detections, ...]
    truth_name: str = "truth"
    pred_name: str = "pred"
    pred_thresholds: Mapping[str, float] | None = None
    notes: tuple[str, ...] = field(default=())
    """Human-readable facts about how the data was chosen (shown in reports)."""
    pred_has_scores: bool = True
    """False when the pre-labels carry no scores (an import without them reads as 1.0
    everywhere): no threshold can be chosen, and mAP does not rank them."""
    tags: TagData | None = None

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        if not (len(self.uris) == len(self.truth) == len(self.pred) == n) or np.shape(self.sizes) not in ((n, 2),):
            if not (n == 0 and len(self.truth) == len(self.pred) == len(self.uris) == 0):
                raise EvalError("sample_ids, uris, sizes, truth and pred must be aligned per sample")
        k = len(self.labels)
        for side, items in (("truth", self.truth), ("pred", self.pred)):
            for i, det in enumerate(items):
                ids = det.class_ids
                if ids.size and (ids.min() < 0 or ids.max() >= k):
                    raise EvalError(f"{side} of sample {int(self.sample_ids[i])}: class_ids must index labels")
        if self.tags is not None and self.tags.truth.shape[0] != n:
            raise EvalError(f"tags must have one row per sample ({n}), got {self.tags.truth.shape[0]}")

    @property
    def has_shapes(self) -> bool:
        """True when some sample has a shape (box, polygon or mask) on either side."""
        return any(len(t) or len(p) for t, p in zip(self.truth, self.pred))

    @property
    def has_masks(self) -> bool:
        """True when every sample has masks on both sides (mask metrics are possible)."""
        return bool(self.truth) and all(
            (t.masks is not None or len(t) == 0) and (p.masks is not None or len(p) == 0)
            for t, p in zip(self.truth, self.pred)
        ) and any(t.masks is not None or p.masks is not None for t, p in zip(self.truth, self.pred))
