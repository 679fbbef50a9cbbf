"""One evaluation of a pre-label run (metrics, thresholds, edits) and the report of several.

`evaluate_run` computes the matching once (one COCO evaluation per geometry) and derives the
threshold sweep, per-sample counts and the edit breakdown from it; tags (image-level labels)
are evaluated apart (`sync.evaluate.tags`). `build_report` ranks the runs and lays
everything out as the JSON-ready dict that ``--json`` writes and the table and HTML
renderers read (`sync.evaluate.table`, `sync.evaluate.html`).

A run with tags and no shape on either side has no box part: its ``boxes``, ``edits`` (and
in the report ``overall``, ``per_class``, ``edits``, ``iou``) are None, and only its
``tags`` section is filled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sync.evaluate.data import EvalData, EvalError
from sync.evaluate.seconds import ActionSeconds

__all__ = ["RANK_BY", "RunEvaluation", "build_report", "evaluate_run", "rank_runs"]

RANK_BY = ("map", "map50", "f1", "saved")
"""What `rank_runs` can order by: box mAP@[.5:.95], box mAP@.5, F1 at the run's own
thresholds (boxes; the tags' micro F1 for a run without boxes), or estimated annotator
seconds saved."""


@dataclass(frozen=True)
class RunEvaluation:
    """Everything measured about one pre-label run against the truth."""

    data: EvalData
    boxes: Any | None
    """`sync.evaluate.metrics.DetectionMetrics` on boxes; None for a run of tags only."""
    masks: Any | None
    """The same on masks, when both sides have masks."""
    sweeps: Mapping[str, Any]
    """``{label: sync.evaluate.sweep.ClassSweep}`` (from the box matching)."""
    edits: Any | None
    """`sync.evaluate.edits.EditBreakdown`; None without boxes."""
    tags: Any | None = None
    """`sync.evaluate.tags.TagMetrics`, when the data has tags."""
    tag_sweeps: Mapping[str, Any] = field(default_factory=dict)
    """``{tag label: sync.evaluate.sweep.ClassSweep}``."""

    @property
    def name(self) -> str:
        return self.data.pred_name

    def per_sample_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tp, fp, fn)`` per sample: boxes at the evaluation IoU (from the one matching)
        plus tags (each tag given or missed counts as one)."""
        n = len(self.data.sample_ids)
        tp, fp, fn = (np.zeros(n, np.int64) for _ in range(3))
        if self.boxes is not None:
            m = self.boxes.matches
            tp += np.bincount(m.sample_index[m.tp], minlength=n)
            fp += np.bincount(m.sample_index[~m.tp & ~m.ignored], minlength=n)
            missed = ~m.truth_crowd & ~m.truth_matched
            fn += np.bincount(m.truth_sample_index[missed], minlength=n)
        if self.data.tags is not None:
            from sync.evaluate.tags import sample_counts

            for total, part in zip((tp, fp, fn), sample_counts(self.data.tags)):
                total += part
        return tp, fp, fn


def evaluate_run(
    data: EvalData,
    *,
    iou: float = 0.5,
    seconds: ActionSeconds = ActionSeconds(),
    masks: bool | None = None,
    match_iou: float = 0.5,
    tolerance_px: float = 0.5,
) -> RunEvaluation:
    """Metrics (boxes, and masks when ``masks`` or, if None, when `EvalData.has_masks`),
    the per-class threshold sweep and the edit breakdown of one run; the tags' metrics and
    sweep when it has tags. Data with tags and no shape on either side gets no box part."""
    from sync.evaluate.edits import edit_breakdown
    from sync.evaluate.metrics import evaluate_detections
    from sync.evaluate.sweep import sweep_thresholds
    from sync.evaluate.tags import evaluate_tags, sweep_tags

    if masks and not data.has_masks:
        raise EvalError("mask metrics asked for, but the annotations carry no masks")
    tags = evaluate_tags(data.tags) if data.tags is not None else None
    # without scores every pre-label reads 1.0: no threshold keeps some and drops others
    tag_sweeps = (
        sweep_tags(data.tags, floors=data.pred_thresholds, seconds=seconds)
        if data.tags is not None and data.pred_has_scores else {}
    )
    if tags is not None and not data.has_shapes:
        return RunEvaluation(data=data, boxes=None, masks=None, sweeps={}, edits=None, tags=tags, tag_sweeps=tag_sweeps)
    boxes = evaluate_detections(data, iou=iou, iou_type="bbox")
    with_masks = masks if masks is not None else data.has_masks
    mask_metrics = evaluate_detections(data, iou=iou, iou_type="segm") if with_masks else None
    sweeps = sweep_thresholds(boxes, seconds=seconds, floors=data.pred_thresholds) if data.pred_has_scores else {}
    edits = edit_breakdown(data, match_iou=match_iou, tolerance_px=tolerance_px, seconds=seconds)
    return RunEvaluation(
        data=data, boxes=boxes, masks=mask_metrics, sweeps=sweeps, edits=edits, tags=tags, tag_sweeps=tag_sweeps
    )


def _rank_value(evaluation: RunEvaluation, by: str) -> float:
    if evaluation.boxes is None:
        tags = evaluation.tags
        value = tags.micro.f1 if by == "f1" and tags is not None else None
        return float("-inf") if value is None else float(value)
    overall = evaluation.boxes.overall
    value = {
        "map": overall.map,
        "map50": overall.map50,
        "f1": overall.f1,
        "saved": evaluation.edits.time.saved_seconds,
    }[by]
    return float("-inf") if value is None or value != value else float(value)


def rank_runs(evaluations: Sequence[RunEvaluation], by: str = "map") -> list[RunEvaluation]:
    """Best first by ``by`` (one of `RANK_BY`); ties keep the order given."""
    if by not in RANK_BY:
        raise EvalError(f"--rank-by must be one of {', '.join(RANK_BY)}, got {by!r}")
    return sorted(evaluations, key=lambda e: -_rank_value(e, by))


def _curves(metrics: Any) -> dict[str, dict[str, list[float]]]:
    return {
        label: {"recall": [round(float(v), 6) for v in r], "precision": [round(float(v), 6) for v in p]}
        for label, (r, p) in metrics.pr_curves.items()
    }


def _tag_sweep(sweep: Any) -> dict[str, Any]:
    """A tag label's sweep for the report: F1 only (no annotator-time model for tags)."""
    entry = {k: v for k, v in sweep.to_dict().items() if k not in ("seconds", "min_time")}
    if entry["best_f1"] is not None:
        entry["best_f1"] = {k: v for k, v in entry["best_f1"].items() if k != "seconds"}
    return entry


def tag_section(evaluation: RunEvaluation) -> dict[str, Any] | None:
    """The ``tags`` entry of a run: `TagMetrics.to_dict` plus ``thresholds``, the sweep per
    tag label (``floor``, ``current``, the curves and ``best_f1``); None without tags."""
    if evaluation.tags is None:
        return None
    return {
        **evaluation.tags.to_dict(),
        "thresholds": {label: _tag_sweep(sweep) for label, sweep in evaluation.tag_sweeps.items()},
    }


def run_section(evaluation: RunEvaluation, rank: int) -> dict[str, Any]:
    """The report entry of one run (see `build_report`)."""
    boxes = evaluation.boxes.to_dict() if evaluation.boxes is not None else {"overall": None, "per_class": None}
    return {
        "name": evaluation.name,
        "rank": rank,
        "scores": evaluation.data.pred_has_scores,
        "overall": boxes["overall"],
        "per_class": boxes["per_class"],
        "masks": None if evaluation.masks is None else evaluation.masks.to_dict(),
        "thresholds": {label: sweep.to_dict() for label, sweep in evaluation.sweeps.items()},
        "pr_curves": _curves(evaluation.boxes) if evaluation.boxes is not None else {},
        "edits": None if evaluation.edits is None else evaluation.edits.to_dict(),
        "tags": tag_section(evaluation),
    }


def build_report(
    dataset: str,
    evaluations: Sequence[RunEvaluation],
    *,
    rank_by: str = "map",
    seconds: ActionSeconds = ActionSeconds(),
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The report as a JSON-ready dict: ``overall``, ``per_class`` and ``tags`` of the best
    run for scripts, and ``runs``, every run best first (``rank`` 1 is the best)."""
    if not evaluations:
        raise EvalError("nothing to report: no run was evaluated")
    ranked = rank_runs(evaluations, rank_by)
    runs = [run_section(e, i) for i, e in enumerate(ranked, start=1)]
    first = evaluations[0].data
    all_notes = [*first.notes, *notes]
    unscored = [e.name for e in evaluations if not e.data.pred_has_scores]
    if unscored:
        names = ", ".join(repr(name) for name in unscored)
        all_notes.append(
            f"{names} carry no scores (imported without them): no threshold sweep, and their mAP treats every "
            "pre-label as equally sure" + (" — rank with --rank-by f1 or saved" if rank_by in ("map", "map50") else "")
        )
    if first.pred_thresholds is None:
        all_notes.append("the runs record no thresholds: the sweep starts at the lowest stored score")
    else:
        all_notes.append(
            "thresholds below a run's own cannot be judged (those pre-labels were never kept); the sweep starts there"
        )
    boxes = ranked[0].boxes
    return {
        "dataset": dataset,
        "truth": first.truth_name,
        "iou": None if boxes is None else float(boxes.iou),
        "iou_type": None if boxes is None else "bbox",
        "rank_by": rank_by,
        "samples": int(len(first.sample_ids)),
        "seconds": seconds.to_dict(),
        "notes": all_notes,
        "overall": runs[0]["overall"],
        "per_class": runs[0]["per_class"],
        "tags": runs[0]["tags"],
        "runs": runs,
    }
