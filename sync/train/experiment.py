"""``autolabel experiment thresholds``: which pre-label threshold trains the best model?

One model per threshold, trained on the pre-labels alone (``--labels prelabel:RUN`` at that
``--threshold``), plus one trained on the human labels as the reference; each is then run on
the human-corrected samples of the validation split (never trained on: the split is the
dataset's, fixed per sample, shared by every model) and measured against the humans with the
evaluator of ``autolabel eval`` (mAP50 and mAP; the full report per model besides). Published
results found moderate thresholds (0.2–0.5) best and very high ones worse (recall collapses);
this measures it on the team's own data.

Everything is checked before the first model trains: every threshold's training set
(`sync.train.plan.prepare_training`: classes present in train and val, sides not empty) and
the evaluation samples. Each model is a recorded training run (``<name>-t<threshold>``,
``<name>-human``) and its predictions a pre-label run of the same name, so ``autolabel eval``
and ``autolabel lineage`` can look at any of them later.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync.train.plan import LabelSource, TrainingError, TrainingPlan, prepare_training
from sync.train.run import DATA, TrainOptions, TrainingResult, check_options, removed_on_error, run_plan
from sync.views import latest_truth_per_sample

if TYPE_CHECKING:
    from serverless.ontology import Ontology
    from sync.store import RunInfo, Store

__all__ = ["ExperimentRow", "ThresholdExperiment", "parse_thresholds", "threshold_experiment"]

EVAL_THRESHOLD = 0.001
"""The trained models' score threshold on the evaluation samples (as ultralytics' own
validation): mAP needs every prediction."""


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"0.2,0.3,0.5"`` → sorted unique thresholds in 0..1 (`TrainingError` naming the bad one)."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise TrainingError(f"--thresholds: {part!r} is not a number (give e.g. 0.2,0.3,0.5,0.8)") from None
        if not 0.0 <= value <= 1.0:
            raise TrainingError(f"--thresholds: {part} is not in 0..1")
        values.append(value)
    if not values or len(set(values)) != len(values):
        raise TrainingError(f"--thresholds must list distinct numbers in 0..1, got {text!r}")
    return tuple(sorted(values))


@dataclass(frozen=True)
class ExperimentRow:
    """One trained model and how it did on the human-corrected validation samples."""

    label: str
    """``"0.3"`` or ``"human"``."""
    threshold: float | None
    training: str
    run: str
    """The pre-label run of its predictions on the evaluation samples."""
    train_boxes: int
    metrics: dict[str, float | None]
    """``map50`` and ``map`` on the evaluation samples (the evaluator's overall; None when
    undefined). Precision and recall at the evaluation threshold are in the report."""


@dataclass(frozen=True)
class ThresholdExperiment:
    dataset: str
    prelabels: str
    samples: int
    """Evaluation samples: human-corrected, in the validation split."""
    rows: tuple[ExperimentRow, ...]
    report: dict[str, Any] = field(repr=False)
    """The `sync.evaluate.report.build_report` of every model on the evaluation samples."""

    @property
    def reference(self) -> ExperimentRow:
        return next(row for row in self.rows if row.threshold is None)

    def to_dict(self) -> dict[str, Any]:
        rows = [{"labels": r.label, "threshold": r.threshold, "training_run": r.training, "run": r.run,
                 "train_boxes": r.train_boxes, **r.metrics} for r in self.rows]
        return {"dataset": self.dataset, "prelabels": self.prelabels, "samples": self.samples, "rows": rows}


def _prelabel_source(store: Store, dataset: str, prelabels: str | None) -> RunInfo:
    """The named run, else `autolabel eval`'s default pre-label run (the latest pre-label run,
    else the latest import with role prediction)."""
    from sync.evaluate.data import EvalError
    from sync.evaluate.load import default_pred

    if prelabels is not None:
        return store.get_run(dataset, prelabels)
    try:
        return default_pred(store, dataset)
    except EvalError:
        raise TrainingError(f"dataset {dataset!r} has no finished pre-label run to train on; "
                            "pre-label it first, or name a run with --prelabels") from None


def _eval_samples(store: Store, dataset: str, plan: TrainingPlan) -> list[Any]:
    """The human-corrected samples of the validation split (`TrainingError` when none)."""
    truth, _ = latest_truth_per_sample(store, dataset)
    val = [s for s in store.samples(dataset) if plan.splits.get(s.uri) == "val" and s.id in truth]
    if not val:
        raise TrainingError(f"dataset {dataset!r} has no human-corrected sample in the validation split to measure "
                            "the models on (pull corrections, or change --val/--seed)")
    return val


def _plans(store: Store, dataset: str, thresholds: Sequence[float], run: RunInfo, options: TrainOptions,
           out: Path, ontology: Ontology | None) -> list[tuple[str, float | None, TrainingPlan]]:
    """Every model's checked training set, before any training (all or none left on disk)."""
    configs: list[tuple[str, float | None, LabelSource]] = [
        (f"t{t:g}", t, LabelSource("prelabel", run.name)) for t in thresholds]
    configs.append(("human", None, LabelSource("human")))
    plans = []
    try:
        for suffix, threshold, source in configs:
            try:
                plan = prepare_training(store, dataset, source, out / suffix / DATA, threshold=threshold,
                                        val=options.val, seed=options.seed, ontology=ontology)
            except TrainingError as err:
                what = f"threshold {threshold:g}" if threshold is not None else "the human reference"
                raise TrainingError(f"{what}: {err}") from None
            plans.append((suffix, threshold, plan))
    except BaseException:
        for suffix, _, _ in configs:
            shutil.rmtree(out / suffix, ignore_errors=True)
        raise
    return plans


def _predict(store: Store, dataset: str, result: TrainingResult, samples: Sequence[Any], name: str,
             ontology: Ontology, device: str | None) -> RunInfo:
    """The trained model's pre-labels of ``samples``, recorded as pre-label run ``name``."""
    from serverless.pipeline import ModelSettings, load_pipeline, prelabel_files
    from sync.prelabel_store import RunRecorder

    settings = ModelSettings(detector=f"yolo:{result.weights}", device=device)
    files = [Path(s.uri) for s in samples]
    recorder = RunRecorder(store, dataset, name, ontology, settings, {"threshold": EVAL_THRESHOLD}, files=files)
    detector, _ = load_pipeline(settings, ontology, masks=False)
    for frame in prelabel_files(files, detector, threshold=EVAL_THRESHOLD):
        if frame.error is None:
            recorder.record(frame.path, frame.width, frame.height, frame.detections, frame.tags)
    return recorder.finish()


def _ontology(classes: Sequence[str], given: Ontology | None) -> Ontology:
    if given is not None:
        return given.part("objects")
    from serverless.ontology import parse_ontology

    labels = "".join(f"  - {{name: {name!r}}}\n" for name in classes)
    return parse_ontology(f"name: experiment\nlabels:\n{labels}", "the trained classes")


def threshold_experiment(
    store: Store,
    dataset: str,
    thresholds: Sequence[float],
    options: TrainOptions,
    out: Path,
    *,
    prelabels: str | None = None,
    name: str = "thresholds",
    ontology: Ontology | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> ThresholdExperiment:
    """Train and measure one model per threshold plus the human reference (module docstring)."""
    from sync.evaluate.load import choose_runs, load_eval
    from sync.evaluate.report import build_report, evaluate_run

    run = _prelabel_source(store, dataset, prelabels)
    base, _, out = check_options(store, dataset, options, out=out, name=f"{name}-human")
    taken = {r.name for r in store.list_runs(dataset)} | {r.name for r in store.list_training_runs(dataset)}
    names = [f"{name}-t{t:g}" for t in thresholds] + [f"{name}-human"]
    clash = [n for n in names if n in taken]
    if clash:
        raise TrainingError(f"dataset {dataset!r} already has a run named {clash[0]!r}; give another --name")
    with removed_on_error(out):
        plans = _plans(store, dataset, thresholds, run, options, out, ontology)
        samples = _eval_samples(store, dataset, plans[-1][2])
    rows = []
    for (suffix, threshold, plan), run_name in zip(plans, names, strict=True):
        on_step(f"training {run_name} ({plan.export.train} images, labels {plan.source.text}"
                + (f" at >= {threshold:g})" if threshold is not None else ")"))
        result = run_plan(store, plan, options, base, out / suffix, run_name)
        on_step(f"measuring {run_name} on {len(samples)} human-corrected validation samples")
        predicted = _predict(store, dataset, result, samples, run_name, _ontology(plan.classes, ontology),
                             options.device)
        boxes = sum(plan.metadata["instances"]["train"].values())
        rows.append((suffix, threshold, run_name, predicted.name, boxes))
    selection = choose_runs(store, dataset, preds=[r[3] for r in rows])
    evaluations = [evaluate_run(data) for data in load_eval(store, selection)]
    report = build_report(dataset, evaluations, rank_by="map50")
    found = []
    for (suffix, threshold, training, predicted, boxes), evaluation in zip(rows, evaluations, strict=True):
        overall = evaluation.boxes.overall.to_dict() if evaluation.boxes is not None else {}
        metrics = {key: overall.get(key) for key in ("map50", "map")}
        found.append(ExperimentRow("human" if threshold is None else f"{threshold:g}", threshold, training,
                                   predicted, boxes, metrics))
    return ThresholdExperiment(dataset, run.name, len(selection.sample_ids), tuple(found), report)
