"""What an evaluation compares: one pre-label run against one truth, sample by sample.

`EvalData` is the one input of every evaluation step (metrics, threshold sweep, edit
breakdown, hard-sample selection). It is built from the store by `sync.evaluate.load`, or
directly from `Detections` in tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from serverless.detections import Detections

__all__ = ["EvalData", "EvalError"]


class EvalError(ValueError):
    """An evaluation cannot run: its message names the run, sample, label or option at fault."""


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
      present on both sides only when loaded for mask evaluation.
    - ``pred_thresholds``: the score threshold per label the run was made with (nothing below
      it was kept, so a threshold sweep starts there), or None when unknown.
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

    @property
    def has_masks(self) -> bool:
        """True when every sample has masks on both sides (mask metrics are possible)."""
        return bool(self.truth) and all(
            (t.masks is not None or len(t) == 0) and (p.masks is not None or len(p) == 0)
            for t, p in zip(self.truth, self.pred)
        ) and any(t.masks is not None or p.masks is not None for t, p in zip(self.truth, self.pred))
