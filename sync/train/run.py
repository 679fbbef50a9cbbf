"""A training run end to end: check, export, record, train, seal — and resume.

Order, so that bad input loses nothing and writes nothing: the base model and every option
are checked, the training set is chosen, split, exported to ``OUT/data`` and checked
(`sync.train.plan.prepare_training`); only then is the training run created in the store
(labels, threshold, split per sample with the run each label came from, base model,
hyper-parameters, versions), ultralytics trains into ``OUT/train``, and the run is sealed with
the best weights' sha256 and the final validation metrics.

An interrupted training (Ctrl-C, a killed process) leaves its run open in the store and
ultralytics' ``OUT/train/weights/last.pt`` on disk; `resume_training` carries on from there
(or starts the same training again when no epoch had finished) and seals the same run.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync.store import TrainingRunInfo, TrainingSampleIn
from sync.train import ultra
from sync.train.plan import LabelSource, TrainingError, TrainingPlan, prepare_training

if TYPE_CHECKING:
    from serverless.ontology import Ontology
    from sync.store import Store

__all__ = [
    "TrainOptions",
    "TrainingResult",
    "check_options",
    "default_out",
    "removed_on_error",
    "resume_training",
    "run_plan",
    "train_detector",
    "unfinished_run",
]

DATA = "data"
"""The YOLO dataset folder under OUT."""
TRAIN = "train"
"""ultralytics' run folder under OUT (weights in ``train/weights/{best,last}.pt``)."""


@dataclass(frozen=True)
class TrainOptions:
    """What ``autolabel train`` was asked (the hyper-parameters go to ultralytics as they are)."""

    labels: str = "human"
    threshold: float | None = None
    model: str = "yolo11n.pt"
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16
    device: str | None = None
    workers: int = 8
    val: float = 0.2
    seed: int = 0
    plots: bool = True
    duplicates_together: bool = False
    """Keep each duplicate group of the stored image embeddings on one side of the split."""

    def settings(self) -> dict[str, Any]:
        """ultralytics ``train`` arguments (and the run's recorded ``params``)."""
        found = {"epochs": self.epochs, "imgsz": self.imgsz, "batch": self.batch, "workers": self.workers,
                 "plots": self.plots, "seed": self.seed}
        return found | ({"device": self.device} if self.device else {})

    def check(self) -> None:
        for name, value, least in (("epochs", self.epochs, 1), ("imgsz", self.imgsz, 32), ("workers", self.workers, 0)):
            if value < least:
                raise TrainingError(f"--{name} must be at least {least}, got {value}")
        if self.batch == 0 or self.batch < -1:
            raise TrainingError(f"--batch must be a positive count (or -1: ultralytics chooses), got {self.batch}")


@dataclass(frozen=True)
class TrainingResult:
    run: TrainingRunInfo
    weights: Path
    metrics: Mapping[str, float]


def default_out(dataset: str, name: str) -> Path:
    """``autolabel-runs/<dataset>/<training run name>`` in the working directory."""
    return Path("autolabel-runs") / dataset / name


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainingError(f"--out {out}: exists and is not an empty folder; choose a new one, or --resume a run")


def _seal(store: Store, run: TrainingRunInfo, weights: Path, metrics: Mapping[str, float]) -> TrainingResult:
    from sync.prelabel_store import file_sha256

    done = store.finish_training_run(run, weights_path=str(weights.resolve()), weights_sha256=file_sha256(weights),
                                     metrics=dict(metrics))
    return TrainingResult(done, weights.resolve(), dict(metrics))


def train_detector(
    store: Store,
    dataset: str,
    options: TrainOptions,
    *,
    out: Path | None = None,
    name: str | None = None,
    ontology: Ontology | None = None,
    on_plan: Callable[[TrainingPlan, TrainingRunInfo], None] | None = None,
) -> TrainingResult:
    """Train a detector on ``dataset``'s labels and record it (module docstring). ``on_plan``
    is told the checked plan and the open run before training starts (to show them)."""
    base, name, out = check_options(store, dataset, options, out=out, name=name)
    with removed_on_error(out):
        plan = prepare_training(store, dataset, LabelSource.parse(options.labels), out / DATA,
                                threshold=options.threshold, val=options.val, seed=options.seed, ontology=ontology,
                                duplicates_together=options.duplicates_together)
    return run_plan(store, plan, options, base, out, name, on_plan=on_plan)


@contextlib.contextmanager
def removed_on_error(out: Path) -> Iterator[None]:
    """Remove ``out`` when the block fails and ``out`` did not exist before it."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise


def check_options(
    store: Store, dataset: str, options: TrainOptions, *, out: Path | None, name: str | None
) -> tuple[str, str, Path]:
    """``(base model for ultralytics, run name, output folder)`` once every option is checked
    (`TrainingError`); nothing is written."""
    options.check()
    LabelSource.parse(options.labels)
    store.get_dataset(dataset)
    base = ultra.resolve_base_model(options.model)
    ultra.check_device(options.device)
    name = name or store.next_training_run_name(dataset)
    if any(r.name == name for r in store.list_training_runs(dataset)):
        raise TrainingError(f"dataset {dataset!r} already has a training run named {name!r}")
    out = (out or default_out(dataset, name)).resolve()
    _check_out(out)
    return base, name, out


def run_plan(
    store: Store,
    plan: TrainingPlan,
    options: TrainOptions,
    base: str,
    out: Path,
    name: str,
    *,
    on_plan: Callable[[TrainingPlan, TrainingRunInfo], None] | None = None,
) -> TrainingResult:
    """Record the training run of a checked ``plan``, train it into ``out`` and seal it."""
    run = store.create_training_run(
        plan.dataset, name=name, labels=plan.source.text, threshold=plan.threshold, val_fraction=plan.val,
        seed=plan.seed, base_model=options.model, params=options.settings() | {"base_model_file": base},
        versions=ultra.versions(), classes=plan.classes, export=plan.summary(), out_dir=str(out),
        samples=[TrainingSampleIn(sid, split, run_id) for sid, split, run_id in plan.samples()],
    )
    if on_plan is not None:
        on_plan(plan, run)
    weights, metrics = ultra.train(plan.data_yaml, base, out, options.settings())
    return _seal(store, run, weights, metrics)


def unfinished_run(store: Store, dataset: str, name: str | None) -> TrainingRunInfo:
    """The training run ``--resume`` carries on: the one named, else the newest open one."""
    if name is not None:
        run = store.get_training_run(dataset, name)
        if run.finished:
            raise TrainingError(f"training run {name!r} is finished; nothing to resume")
        return run
    open_runs = [r for r in store.list_training_runs(dataset) if not r.finished]
    if not open_runs:
        raise TrainingError(f"dataset {dataset!r} has no unfinished training run to resume")
    return open_runs[-1]


def resume_training(store: Store, dataset: str, name: str | None = None) -> TrainingResult:
    """Carry on an interrupted training run from ``OUT/train/weights/last.pt``; when no epoch
    had finished, start it again with its recorded settings on its exported data."""
    run = unfinished_run(store, dataset, name)
    out = Path(run.out_dir or "")
    data_yaml = out / DATA / "data.yaml"
    if not data_yaml.is_file():
        raise TrainingError(f"training run {run.name!r}: its exported data {data_yaml} is gone; start a new training")
    last = out / TRAIN / "weights" / "last.pt"
    if last.is_file():
        weights, metrics = ultra.resume(last)
    else:
        params = dict(run.params or {})
        base = params.pop("base_model_file", run.base_model)
        weights, metrics = ultra.train(data_yaml, base, out, params)
    return _seal(store, run, weights, metrics)
