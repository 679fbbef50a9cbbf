"""``autolabel lineage``: from a pre-label run (or a training run) back to what its model was
trained on — labels, threshold, split, the runs whose labels fed it, metrics, versions."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from sync.store import StoreError
from sync.train.plan import TrainingError

if TYPE_CHECKING:
    from sync.store import Store, TrainingRunInfo

__all__ = ["lineage_of", "training_runs_of"]


def training_runs_of(store: Store, dataset: str, name: str) -> tuple[str, list[TrainingRunInfo]]:
    """``(what NAME is, its training runs)``: a training run itself, or a run whose
    ``model_revision`` is trained weights' sha256 (`TrainingError` for a run of another model)."""
    try:
        return "training run", [store.get_training_run(dataset, name)]
    except StoreError:
        pass
    run = store.get_run(dataset, name)
    found = store.training_runs_for_weights(run.model_revision) if run.model_revision else []
    if not found:
        raise TrainingError(
            f"run {name!r} was made with {run.model_id or 'an unrecorded model'}, not with weights a training run "
            "of this store produced"
        )
    return f"{run.kind} run made with {run.model_id} ({run.model_revision})", found


def _describe(store: Store, training: TrainingRunInfo) -> tuple[list[str], dict[str, Any]]:
    samples = store.training_samples(training)
    fed = Counter((s.run_id, s.split) for s in samples.values())
    names = {}
    for run_id in {r for r, _ in fed if r is not None}:
        run = store.run_by_id(run_id)
        names[run_id] = f"{run.name} ({run.kind})"
    sources = [{"run": names.get(r, "?"), "split": split, "samples": n} for (r, split), n in sorted(fed.items(), key=str)]
    threshold = f" at score >= {training.threshold:g}" if training.threshold is not None else ""
    split = Counter(s.split for s in samples.values())
    lines = [
        f"training run {training.name}: labels {training.labels}{threshold}, base model {training.base_model}",
        f"  split: {split['train']} train / {split['val']} val samples (val fraction {training.val_fraction:g}, "
        f"seed {training.seed})",
        *(f"  {s['samples']} {s['split']} samples labelled by {s['run']}" for s in sources),
        f"  classes: {', '.join(training.classes or ())}",
        f"  weights: {training.weights_path} ({training.weights_sha256 or 'unfinished'})",
        f"  metrics: {training.metrics or {}}; versions: {training.versions or {}}",
    ]
    data = {
        "name": training.name, "labels": training.labels, "threshold": training.threshold,
        "base_model": training.base_model, "val_fraction": training.val_fraction, "seed": training.seed,
        "split": dict(split), "sources": sources, "classes": list(training.classes or ()),
        "params": dict(training.params or {}), "versions": dict(training.versions or {}),
        "weights_path": training.weights_path, "weights_sha256": training.weights_sha256,
        "metrics": dict(training.metrics or {}), "finished": training.finished,
    }
    return lines, data


def lineage_of(store: Store, dataset: str, name: str) -> dict[str, Any]:
    """``{"lines": [...], "data": {...}}``: what run ``name`` is and each training run behind it."""
    what, trainings = training_runs_of(store, dataset, name)
    lines = [f"{name}: {what}"]
    described = []
    for training in trainings:
        more, data = _describe(store, training)
        lines += more
        described.append(data)
    return {"lines": lines, "data": {"dataset": dataset, "run": name, "is": what, "training_runs": described}}
