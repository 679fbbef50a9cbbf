"""Metrics and threshold sweep of image-level labels (CVAT tags) against the truth's tags.

A run's tag on a sample is right (TP) when the truth carries that tag on that sample, wrong
(FP) otherwise; a truth tag the run did not give is a miss (FN). Counting is on the label
sets of `sync.evaluate.data.TagData`, i.e. at the thresholds the run applied (every stored
tag is a prediction), as box metrics are taken over every stored box.

- per label: precision, recall, F1 and support (the samples whose truth carries the label),
  with `sync.evaluate.metrics.ClassMetrics`' rules for undefined values (None);
- micro: the same from the counts summed over labels;
- macro: the unweighted mean of the per-label values over the labels that either side uses
  (a label nobody gave says nothing); an undefined value counts as 0 there, as in
  scikit-learn with ``zero_division=0``;
- accuracy: the share of samples whose tag set is exactly the truth's (subset accuracy; two
  empty sets match);
- top-1 accuracy, for single-label setups (e.g. a softmax over the tags): over the samples
  whose truth has exactly one tag, the share where the run's highest-scored tag is that tag
  (a sample the run gave no tag counts as wrong; equal scores: the first label in order).

The threshold sweep per label is `sync.evaluate.sweep.sweep_scores`, the rules of the box
sweep (exact optima, ties keep the current threshold: `ClassSweep.keeps`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sync.evaluate.data import EvalError, TagData
from sync.evaluate.metrics import ClassMetrics
from sync.evaluate.seconds import ActionSeconds
from sync.evaluate.sweep import ClassSweep, sweep_scores

__all__ = ["Averages", "TagMetrics", "evaluate_tags", "sample_counts", "sweep_tags", "tag_counts_dict"]


def tag_counts_dict(m: ClassMetrics) -> dict[str, float | int | None]:
    """The tag view of a `ClassMetrics`: no AP, ``support`` for the truth count."""
    return {
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "support": m.truth,
        "predictions": m.predictions,
        "tp": m.tp,
        "fp": m.fp,
        "fn": m.fn,
    }


@dataclass(frozen=True)
class Averages:
    """Macro averages: unweighted means over ``labels`` labels (None when there are none)."""

    precision: float | None
    recall: float | None
    f1: float | None
    labels: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "labels": self.labels}


@dataclass(frozen=True, eq=False)
class TagMetrics:
    """The result of `evaluate_tags` (see the module docstring for each number)."""

    labels: tuple[str, ...]
    per_label: dict[str, ClassMetrics]
    micro: ClassMetrics
    macro: Averages
    samples: int
    exact: int
    """Samples whose tag set is exactly the truth's."""
    top1_samples: int
    """Samples whose truth has exactly one tag."""
    top1_correct: int

    @property
    def accuracy(self) -> float | None:
        return None if self.samples == 0 else self.exact / self.samples

    @property
    def top1_accuracy(self) -> float | None:
        return None if self.top1_samples == 0 else self.top1_correct / self.top1_samples

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "per_label": {label: tag_counts_dict(m) for label, m in self.per_label.items()},
            "micro": tag_counts_dict(self.micro),
            "macro": self.macro.to_dict(),
            "samples": self.samples,
            "accuracy": self.accuracy,
            "exact": self.exact,
            "top1_accuracy": self.top1_accuracy,
            "top1_samples": self.top1_samples,
            "top1_correct": self.top1_correct,
        }


def _macro(per_label: Mapping[str, ClassMetrics]) -> Averages:
    used = [m for m in per_label.values() if m.truth or m.predictions]
    if not used:
        return Averages(None, None, None, 0)

    def mean(name: str) -> float:
        return float(np.mean([getattr(m, name) or 0.0 for m in used]))

    return Averages(mean("precision"), mean("recall"), mean("f1"), len(used))


def _top1(data: TagData) -> tuple[int, int]:
    """``(samples with exactly one true tag, of which the run's best tag is it)``."""
    single = data.truth.sum(axis=1) == 1
    if not single.any():
        return 0, 0
    scores = data.scores[single]
    given = ~np.isnan(scores).all(axis=1)
    best = np.argmax(np.where(np.isnan(scores), -np.inf, scores), axis=1)
    true = np.argmax(data.truth[single], axis=1)
    return int(single.sum()), int(np.sum(given & (best == true)))


def evaluate_tags(data: TagData) -> TagMetrics:
    """Per-label, micro and macro P/R/F1, subset accuracy and top-1 accuracy of ``data``."""
    if not isinstance(data, TagData):
        raise EvalError(f"evaluate_tags needs TagData, got {type(data).__name__}")
    predicted, truth = data.predicted, data.truth
    tp = np.sum(predicted & truth, axis=0)
    fp = np.sum(predicted & ~truth, axis=0)
    fn = np.sum(~predicted & truth, axis=0)
    per_label = {
        label: ClassMetrics.from_counts(
            tp=int(tp[k]), fp=int(fp[k]), fn=int(fn[k]), truth=int(tp[k] + fn[k]),
            predictions=int(tp[k] + fp[k]), map=None, map50=None,
        )
        for k, label in enumerate(data.labels)
    }
    micro = ClassMetrics.from_counts(
        tp=int(tp.sum()), fp=int(fp.sum()), fn=int(fn.sum()), truth=int(truth.sum()),
        predictions=int(predicted.sum()), map=None, map50=None,
    )
    top1_samples, top1_correct = _top1(data)
    return TagMetrics(
        labels=data.labels,
        per_label=per_label,
        micro=micro,
        macro=_macro(per_label),
        samples=int(truth.shape[0]),
        exact=int(np.sum(np.all(predicted == truth, axis=1))),
        top1_samples=top1_samples,
        top1_correct=top1_correct,
    )


def sample_counts(data: TagData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, fp, fn)`` tag counts per sample (int64), for per-sample scores such as F1."""
    predicted, truth = data.predicted, data.truth
    return (
        np.sum(predicted & truth, axis=1).astype(np.int64),
        np.sum(predicted & ~truth, axis=1).astype(np.int64),
        np.sum(~predicted & truth, axis=1).astype(np.int64),
    )


def sweep_tags(
    data: TagData, *, floors: Mapping[str, float] | None = None, seconds: ActionSeconds = ActionSeconds()
) -> dict[str, ClassSweep]:
    """The threshold sweep of every tag label (in label order): the run's tags of the label
    and whether the truth carries it on their sample. ``floors``: the run's threshold per
    label (`sync.evaluate.data.EvalData.pred_thresholds`; other keys are ignored)."""
    floors = dict(floors or {})
    predicted = data.predicted
    out: dict[str, ClassSweep] = {}
    for k, label in enumerate(data.labels):
        rows = predicted[:, k]
        out[label] = sweep_scores(
            label, data.scores[rows, k], data.truth[rows, k], int(data.truth[:, k].sum()),
            current=floors.get(label), seconds=seconds,
        )
    return out
