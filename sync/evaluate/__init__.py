"""Evaluation of pre-labels against human corrections.

Importing this package imports nothing heavy; faster-coco-eval and matplotlib are imported
inside the functions that use them.

Modules (each small, named for what it holds):
- `sync.evaluate.data`: `EvalData`, the aligned pre-label/truth input of every step, `TagData`
  (its image-level labels as label sets per sample) and `EvalError`.
- `sync.evaluate.load`: which runs to compare (defaults: latest pre-label run, latest human
  revision per sample) and loading them from the store.
- `sync.evaluate.coco`: faster-coco-eval objects built straight from `EvalData`, one evaluation.
- `sync.evaluate.metrics`: `evaluate_detections`: mAP, P/R/F1 at one IoU, the `MatchTable`.
- `sync.evaluate.sweep`: per-class threshold sweep from the match table (best F1, least time).
- `sync.evaluate.tags`: tags (CVAT tags): per-label, micro and macro P/R/F1, exact-match and
  top-1 accuracy, and their threshold sweep (the box sweep's rules).
- `sync.evaluate.edits`: what annotators changed (accepted/adjusted/relabeled/deleted/added),
  the confusion matrix and the time estimate.
- `sync.evaluate.seconds`: `ActionSeconds`, seconds per annotator action.
- `sync.evaluate.report`: `evaluate_run` (all of the above for one run), ranking, the report dict.
- `sync.evaluate.hard_samples`: budgets and hard-sample orders for `autolabel select`.
- `sync.evaluate.table`, `sync.evaluate.html`: the report as rich tables and as one HTML page.
- `sync.evaluate.tune`: writing chosen thresholds back into an ontology file.
"""
