"""What a training run trains on, checked before anything trains: labels per sample, the
split, the exported YOLO dataset and its classes.

**Labels** (``--labels``):

- ``human``: the latest human revision of each sample (else an import with role
  ``revision``): only samples a human corrected;
- ``prelabel:RUN``: the finished pre-label run ``RUN`` (or an import with role
  ``prediction``) for every sample it covers, its pre-labels scored below ``--threshold``
  dropped;
- ``mixed`` (or ``mixed:RUN``): human revisions where they exist, else the latest pre-label
  run (or ``RUN``) at ``--threshold``.

**Split.** The whole dataset is split once by `sync.export.yolo.split_of` (a sample's side is
drawn from the sha256 of the seed and its URI): a sample keeps its side whatever labels a
training run uses, so every model of one dataset, seed and fraction is validated on the same
samples, and the split is recorded per sample in the store. With ``--duplicates-together``
the duplicate groups of the stored image embeddings are then kept whole on one side
(`sync.qa.splits.leak_free_split`), and how many samples moved is recorded.

**Checks** (`TrainingError`, one line, before any training and before the store is written):
an empty choice, an empty train or val side, a class without examples in train or in val, a
label outside the ontology (when one is given) or an ontology label without examples.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync.export.choice import ExportChoice, SampleChoice, source_of
from sync.export.yolo import METADATA_FILE, export_yolo, split_of
from sync.views import latest_runs_per_sample, latest_truth_per_sample

if TYPE_CHECKING:
    from serverless.ontology import Ontology
    from sync.export.choice import ExportSummary
    from sync.store import Store

__all__ = ["LABEL_MODES", "LabelSource", "TrainingError", "TrainingPlan", "choose_training_labels", "class_counts",
           "dataset_split", "prepare_training"]

LABEL_MODES = ("human", "prelabel", "mixed")


class TrainingError(ValueError):
    """A training run cannot start as asked: the message names the option, run, class or path."""


@dataclass(frozen=True)
class LabelSource:
    """Where the training labels come from (``--labels``, module docstring)."""

    mode: str
    run: str | None = None

    @classmethod
    def parse(cls, text: str) -> LabelSource:
        mode, sep, run = str(text).strip().partition(":")
        if mode not in LABEL_MODES or (mode == "human" and sep) or (mode == "prelabel" and not run.strip()):
            raise TrainingError(f"--labels must be human, prelabel:RUN, mixed or mixed:RUN, got {text!r}")
        return cls(mode, run.strip() or None)

    @property
    def text(self) -> str:
        return f"{self.mode}:{self.run}" if self.run else self.mode

    @property
    def has_prelabels(self) -> bool:
        return self.mode != "human"


def _prelabel_run(store: Store, dataset: str, name: str) -> Any:
    run = store.get_run(dataset, name)
    if not run.finished:
        raise TrainingError(f"run {name!r} of dataset {dataset!r} is not finished; finish (or resume) it first")
    if source_of(run) not in ("prelabel", "import-prediction"):
        raise TrainingError(f"run {name!r} holds {source_of(run)} labels, not pre-labels; use --labels human or mixed")
    return run


def choose_training_labels(store: Store, dataset: str, source: LabelSource) -> ExportChoice:
    """The run each sample's training labels come from (module docstring)."""
    ds = store.get_dataset(dataset)
    chosen: dict[int, Any] = {}
    if source.mode in ("prelabel", "mixed"):
        if source.run is not None:
            run = _prelabel_run(store, dataset, source.run)
            chosen = dict.fromkeys(store.covered_samples(run), run)
        else:
            chosen = latest_runs_per_sample(store, ds, ("prelabel",))
    if source.mode in ("human", "mixed"):
        chosen.update(latest_truth_per_sample(store, ds)[0])
    samples = store.samples(ds)
    return ExportChoice(
        dataset=ds.name,
        rule=f"--labels {source.text}",
        chosen=tuple(SampleChoice(s, chosen[s.id], source_of(chosen[s.id])) for s in samples if s.id in chosen),
        left_out=tuple(s for s in samples if s.id not in chosen),
    )


def dataset_split(
    store: Store, dataset: str, val: float, seed: int, *, duplicates_together: bool = False
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """``({uri: "train" | "val"}, duplicates)`` for every sample of the dataset (module
    docstring). With ``duplicates_together`` every duplicate group of the stored image
    embeddings is kept on one side (`sync.qa.splits.leak_free_split`) and ``duplicates`` says
    what moved (else None); `TrainingError` when the dataset has no image embeddings."""
    if not 0.0 < val < 1.0:
        raise TrainingError(f"--val must lie strictly between 0 and 1, got {val}")
    if not duplicates_together:
        return split_of([s.uri for s in store.samples(dataset)], val, seed), None
    from sync.qa.errors import QaError
    from sync.qa.splits import leak_free_split

    try:
        found = leak_free_split(store, dataset, val, seed)
    except QaError as error:
        raise TrainingError(f"--duplicates-together: {error}") from None
    return dict(found.splits), found.summary()


@dataclass(frozen=True)
class TrainingPlan:
    """A checked training set: the labels per sample, the split, and the YOLO dataset written."""

    dataset: str
    source: LabelSource
    threshold: float | None
    val: float
    seed: int
    choice: ExportChoice
    splits: Mapping[str, str]
    export: ExportSummary
    metadata: Mapping[str, Any]
    """The export's ``autolabel_export.json``."""

    @property
    def data_yaml(self) -> Path:
        return self.export.out / "data.yaml"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.export.categories

    def samples(self) -> list[tuple[int, str, int]]:
        """``(sample id, split, run id)`` of every exported sample."""
        return [(r["sample_id"], r["split"], r["run_id"]) for r in self.metadata["samples"]]

    def summary(self) -> dict[str, Any]:
        """What the store records as the training run's ``export``."""
        keys = ("choice", "exported_counts", "instances", "dropped", "skipped", "names", "min_score", "duplicates")
        return {key: self.metadata.get(key) for key in keys}


def _check_sides(choice: ExportChoice, splits: Mapping[str, str], val: float, source: LabelSource) -> None:
    if not choice.chosen:
        what = {"human": "human revision", "prelabel": f"sample in run {source.run!r}",
                "mixed": "human revision or pre-label run"}[source.mode]
        raise TrainingError(
            f"dataset {choice.dataset!r} has nothing to train on with --labels {source.text}: no {what} covers "
            f"any of its {len(choice.left_out)} samples"
        )
    sides = [splits[c.sample.uri] for c in choice.chosen]
    for side in ("train", "val"):
        if side not in sides:
            raise TrainingError(
                f"the {side} split would be empty: of the {len(sides)} labelled samples none falls in {side} at "
                f"--val {val:g} (label more samples, or change --val or --seed)"
            )


def _check_classes(metadata: Mapping[str, Any], source: LabelSource, ontology: Ontology | None) -> None:
    instances = metadata["instances"]
    names = list(metadata["names"])
    if ontology is not None:
        wanted = [label.name for label in ontology.part("objects").labels]
        extra = sorted(set(names) - set(wanted))
        if extra:
            raise TrainingError(
                f"--labels {source.text} has labels {extra} that ontology {ontology.name!r} does not have "
                f"(its object labels: {wanted})"
            )
        names = wanted
    if not names:
        raise TrainingError(f"--labels {source.text}: the chosen samples hold no box to train on")
    for side in ("train", "val"):
        empty = [name for name in names if not instances[side].get(name)]
        if empty:
            raise TrainingError(
                f"class {empty[0]!r} has no examples in the {side} split"
                + (f" (nor {', '.join(map(repr, empty[1:]))})" if len(empty) > 1 else "")
                + " with --labels " + source.text + "; label more samples, lower --threshold or change --val/--seed"
            )


def prepare_training(
    store: Store,
    dataset: str,
    source: LabelSource,
    data_dir: Path,
    *,
    threshold: float | None,
    val: float,
    seed: int,
    ontology: Ontology | None = None,
    duplicates_together: bool = False,
) -> TrainingPlan:
    """Choose, split and export the training set to ``data_dir`` (a YOLO dataset folder) and
    check it (module docstring); ``duplicates_together``: no duplicate group spans train and
    val (`dataset_split`; the metadata's ``duplicates`` says what moved). On `TrainingError`
    nothing is left in ``data_dir``."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise TrainingError(f"--threshold must lie in 0..1, got {threshold}")
    if threshold is not None and not source.has_prelabels:
        raise TrainingError("--threshold applies to pre-labels; --labels human has none")
    splits, duplicates = dataset_split(store, dataset, val, seed, duplicates_together=duplicates_together)
    choice = choose_training_labels(store, dataset, source)
    _check_sides(choice, splits, val, source)
    summary = export_yolo(
        store, dataset, data_dir, val=val, seed=seed, choice=choice, splits=splits, min_score=threshold,
        overwrite=True,
    )
    metadata = json.loads((summary.out / METADATA_FILE).read_text(encoding="utf-8")) | {"duplicates": duplicates}
    try:
        if not summary.val or not summary.train:
            side = "val" if not summary.val else "train"
            raise TrainingError(f"the {side} split would be empty: its samples are not local image files "
                                f"({len(summary.skipped)} skipped, e.g. {summary.skipped[0][0] if summary.skipped else '-'})")
        _check_classes(metadata, source, ontology)
    except TrainingError:
        shutil.rmtree(summary.out, ignore_errors=True)
        raise
    return TrainingPlan(dataset, source, threshold, val, seed, choice, splits, summary, metadata)


def class_counts(plan: TrainingPlan) -> Sequence[tuple[str, int, int]]:
    """``(class, train instances, val instances)`` per class of the plan."""
    inst = plan.metadata["instances"]
    return [(name, inst["train"].get(name, 0), inst["val"].get(name, 0)) for name in plan.classes]
