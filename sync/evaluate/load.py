"""Choosing and loading what to evaluate from the store: pre-label run(s) against a truth.

Defaults (what ``autolabel eval`` does without ``--pred``/``--truth``):

- **pred**: the latest finished pre-label run of the dataset; failing that, the latest
  ``import`` run with role ``prediction`` (``autolabel import --as-run``).
- **truth**: per sample, the latest human revision that covers it (CVAT revisions are per
  job, so this is usually several runs); for samples without one, the latest ``import`` with
  role ``revision`` (``autolabel import --as-revision``). The same rule as ``autolabel export``
  (`sync.export.choice`), minus its last resort (pre-labels are never their own truth).

Samples are the ones covered by the truth and by every pred run, minus the **training
samples**: every sample that a finished training run of the dataset trained on (its ``train``
split) is left out when a pred run's ``model_revision`` is that training run's
``weights_sha256`` (pre-labels made with the trained weights). So several runs (a trained
model and the foundation model it is compared with) are evaluated on exactly the same samples,
and those are held out from the trained weights. The ``val`` split stays in: its labels never
drove a gradient step, though ultralytics picks ``best.pt`` by its score on them (a slightly
optimistic estimate); a strict test set is the samples the training run never saw at all.
A note per training run says how many samples it took out (`Selection.notes`).

Tags (image-level labels, rows of shape type ``tag``) are split from the shapes as they are
read (`sync.store.convert.split_tags`): shapes go to the box/mask evaluation, tags to
`EvalData.tags` as label sets per sample, on the same samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serverless.detections import Detections
from sync.crowd import crowd_column
from sync.evaluate.data import EvalData, EvalError, TagData
from sync.evaluate.delivered import delivered_predictions
from sync.store.convert import TAG, split_tags
from sync.views import group_by_run, latest_truth_per_sample

if TYPE_CHECKING:
    from sync.store import RunInfo, SampleInfo, Store, TrainingRunInfo

__all__ = ["Selection", "choose_runs", "default_pred", "has_scores", "load_eval", "run_thresholds", "trained_on",
           "wants_masks"]

MASK_SHAPES = ("mask", "polygon")


@dataclass(frozen=True)
class Selection:
    """The runs an evaluation compares and the samples it covers."""

    dataset: str
    preds: tuple[RunInfo, ...]
    """`RunInfo` of each pre-label run, in the order asked."""
    truth: Mapping[int, RunInfo]
    """``{sample_id: RunInfo}``: the truth run of each sample."""
    sample_ids: tuple[int, ...]
    truth_description: str
    notes: tuple[str, ...] = ()
    """What was left out and why (samples a run does not cover, samples trained on)."""


def default_pred(store: Store, dataset: str) -> RunInfo:
    run = store.latest_run(dataset, "prelabel")
    if run is not None:
        return run
    imports = [
        r for r in store.list_runs(dataset, kind="import") if r.finished and (r.params or {}).get("role") == "prediction"
    ]
    if imports:
        return imports[-1]
    raise EvalError(
        f"dataset {dataset!r} has no finished pre-label run: run `autolabel prelabel --dataset {dataset}`, "
        "import one with `autolabel import --as-run`, or name runs with --pred"
    )


def _truth_map(store: Store, dataset: str, truth: str | None) -> tuple[dict[int, RunInfo], str]:
    if truth is not None:
        run = store.get_run(dataset, truth)
        if not run.finished:
            raise EvalError(f"truth run {truth!r} is not finished yet")
        return {sid: run for sid in store.covered_samples(run)}, f"{run.name} ({run.kind})"
    chosen, kind = latest_truth_per_sample(store, dataset)
    if not chosen:
        raise EvalError(
            f"dataset {dataset!r} has no human revision to compare with: pull corrections with "
            "`autolabel cvat pull`, import them with `autolabel import --as-revision`, or name a run with --truth"
        )
    names = sorted({run.name for run in chosen.values()})
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return chosen, f"{kind}: {shown}"


def choose_runs(store: Store, dataset: str, *, preds: Sequence[str] = (), truth: str | None = None) -> Selection:
    """Which runs to compare and on which samples (see the module docstring for defaults):
    those covered by the truth and every pred run, less the samples any pred run's trained
    weights were trained on (their ``train`` split). `EvalError` (or the store's `StoreError`
    for unknown names) when there is nothing to compare, or nothing held out."""
    store.get_dataset(dataset)
    if len(set(preds)) != len(preds):
        raise EvalError(f"--pred names a run twice: {list(preds)}")
    pred_runs = tuple(store.get_run(dataset, name) for name in preds) or (default_pred(store, dataset),)
    for run in pred_runs:
        if not run.finished:
            raise EvalError(f"run {run.name!r} is not finished: finish (or resume) it before evaluating")
    truth_of, description = _truth_map(store, dataset, truth)
    truth_run_ids = {run.id for run in truth_of.values()}
    for run in pred_runs:
        if run.id in truth_run_ids:
            raise EvalError(f"run {run.name!r} is both a prediction and the truth; name another with --pred/--truth")
    common = set(truth_of)
    notes = []
    for run in pred_runs:
        covered = set(store.covered_samples(run))
        missing = len(common - covered)
        if missing:
            notes.append(f"{missing} samples with a truth are not covered by run {run.name!r} and are left out")
        common &= covered
    if not common:
        names = ", ".join(repr(r.name) for r in pred_runs)
        raise EvalError(f"no sample of dataset {dataset!r} is covered by both {names} and the truth ({description})")
    common, held_out_notes = _held_out(store, pred_runs, common)
    notes.extend(held_out_notes)
    return Selection(
        dataset=dataset,
        preds=pred_runs,
        truth={sid: truth_of[sid] for sid in sorted(common)},
        sample_ids=tuple(sorted(common)),
        truth_description=description,
        notes=tuple(notes),
    )


def trained_on(store: Store, runs: Sequence[RunInfo]) -> list[tuple[TrainingRunInfo, RunInfo, frozenset[int]]]:
    """``[(training run, pred run, ids of its train split)]``: each finished training run of a
    run's dataset whose weights made one of ``runs`` (``model_revision`` equal to its
    ``weights_sha256``), once, with the first such run, oldest training run first."""
    found: dict[int, tuple[TrainingRunInfo, RunInfo, frozenset[int]]] = {}
    for run in runs:
        if not run.model_revision:
            continue
        for training in store.training_runs_for_weights(run.model_revision):
            if training.dataset_id != run.dataset_id or training.id in found:
                continue
            split = store.training_samples(training)
            found[training.id] = (training, run, frozenset(i for i, s in split.items() if s.split == "train"))
    return [found[k] for k in sorted(found)]


def _held_out(store: Store, runs: Sequence[RunInfo], common: set[int]) -> tuple[set[int], list[str]]:
    """``common`` without the samples that the weights of any of ``runs`` were trained on
    (`trained_on`), and one note per training run; `EvalError` naming the training runs when
    no sample is left."""
    held_out, notes = set(common), []
    trainings = trained_on(store, runs)
    for training, run, train in trainings:
        used = len(common & train)
        held_out -= train
        count = "1 sample is" if used == 1 else f"{used} samples are"
        notes.append(
            f"{count} left out because training run {training.name!r} trained on them "
            f"(run {run.name!r} was made with its weights): every run is evaluated on the held-out samples only"
        )
    if not held_out:
        names = ", ".join(repr(training.name) for training, _, _ in trainings)
        which = "training run" if len(trainings) == 1 else "training runs"
        raise EvalError(
            f"no held-out sample to evaluate: {which} {names} trained on all {len(common)} samples that have a "
            "truth and pre-labels of every run; correct pre-labels of samples it never saw, then evaluate"
        )
    return held_out, notes


def _ontology_labels(run: RunInfo) -> tuple[list[str], list[str]]:
    """``(shape labels, tag labels)`` of the run's ontology, in its order (an unreadable
    ontology: the labels of the recorded thresholds, as shape labels)."""
    if not run.ontology_yaml:
        return [], []
    from serverless.ontology import OntologyError, parse_ontology

    try:
        labels = parse_ontology(run.ontology_yaml, f"run {run.name}").labels
    except OntologyError:
        return list(run.thresholds or {}), []
    return [label.name for label in labels if label.type != TAG], [label.name for label in labels if label.type == TAG]


def _with_extra(labels: list[str], parts: Sequence[Mapping[int, Detections]]) -> list[str]:
    """``labels`` followed by every other label found in ``parts`` (sorted)."""
    extra = {str(v) for part in parts for det in part.values() for v in det.labels.tolist()}
    return labels + sorted(extra - set(labels))


def run_thresholds(run: RunInfo, labels: Sequence[str]) -> dict[str, float] | None:
    """The score threshold each label had in a run: one ``--threshold`` for every label when
    the run was made with one (``params["threshold"]``), else the recorded per-label ones."""
    override = (run.params or {}).get("threshold")
    if isinstance(override, (int, float)) and not isinstance(override, bool):
        return {label: float(override) for label in labels}
    return dict(run.thresholds) if run.thresholds else None


def _with_crowd(det: Detections) -> Detections:
    crowd = crowd_column(det.data.get("attributes"), len(det))
    return det.with_columns(data={**det.data, "iscrowd": crowd})


def _filled_masks(det: Detections, width: int, height: int) -> Detections:
    """Every detection with a full-frame mask: stored masks as they are; otherwise the
    store's rule for rows without one (`serverless.convert.polygons.shape_mask`)."""
    if det.masks is not None or len(det) == 0:
        if det.masks is None:
            return det.with_columns(masks=np.zeros((0, height, width), dtype=bool))
        return det
    from serverless.convert.polygons import shape_mask

    masks = np.zeros((len(det), height, width), dtype=bool)
    for i in range(len(det)):
        masks[i] = shape_mask(det.polygons[i] if det.polygons is not None else (), det.xyxy[i], height, width)
    return det.with_columns(masks=masks)


def has_scores(run: RunInfo) -> bool:
    """False for runs whose annotations were stored without scores: human revisions and
    imports of files without ``score`` (they read back as 1.0)."""
    if run.kind == "human":
        return False
    return not (run.kind == "import" and (run.params or {}).get("with_scores") is False)


def _deleted_labels(truth: Mapping[int, RunInfo]) -> tuple[dict[int, frozenset[str]], tuple[str, ...]]:
    """Labels deleted in CVAT after the push, per sample (from the label changes each human
    revision recorded when it was pulled), and notes on every label change."""
    gone: dict[int, frozenset[str]] = {}
    notes: dict[str, None] = {}
    for sample_id, run in truth.items():
        changes = (run.params or {}).get("label_changes") or {}
        where = f"CVAT task {run.cvat_task_id}"
        for old, new in (changes.get("renamed") or {}).items():
            notes[f"label {old!r} was renamed {new!r} in {where}: its shapes count as {old!r}"] = None
        deleted = frozenset(changes.get("deleted") or ())
        if deleted:
            gone[sample_id] = deleted
        for name in sorted(deleted):
            notes[f"label {name!r} was deleted in {where} after the push: its pre-labels there are left out "
                  "(a label change, not annotators' deletions)"] = None
        for name in changes.get("added") or ():
            notes[f"label {name!r} was added in {where} after the push"] = None
    return gone, tuple(notes)


def _without(parts: dict[int, Detections], gone: Mapping[int, frozenset[str]]) -> dict[int, Detections]:
    """``parts`` without the pre-labels whose label was deleted in CVAT for that sample."""
    result = dict(parts)
    for sample_id, labels in gone.items():
        det = result.get(sample_id)
        if det is not None and len(det):
            result[sample_id] = det[~np.isin(det.labels, sorted(labels))]
    return result


def _left_out_note(count: int) -> tuple[str, ...]:
    if not count:
        return ()
    return (f"{count} pre-labels with an empty mask had no shape to show in CVAT and are left out",)


def wants_masks(store: Store, selection: Selection) -> bool:
    """True when mask metrics make sense: some pre-label and some truth shape is a mask or
    polygon (boxes on the other side are rasterized)."""

    def any_mask(run: RunInfo, ids: Sequence[int]) -> bool:
        for det in store.annotations_of(run, sample_ids=ids).values():
            if np.isin(det.data["shape_type"], MASK_SHAPES).any():
                return True
        return False

    groups = group_by_run(dict(selection.truth))
    return any(any_mask(run, selection.sample_ids) for run in selection.preds) and any(
        any_mask(run, ids) for run, ids in groups
    )


def load_eval(store: Store, selection: Selection, *, masks: bool = False) -> list[EvalData]:
    """One `EvalData` per pred run of ``selection``, all on the same samples and labels.

    Labels: those of the first run's ontology in their order, then any other label found on
    either side (sorted); shape labels and tag labels apart. With ``masks``, every shape gets
    a full-frame mask. Pre-labels are compared in the shape the annotators were shown
    (`sync.evaluate.delivered`). ``EvalData.tags`` is None when neither side has a tag."""
    ids = list(selection.sample_ids)
    samples = store.samples(selection.dataset, ids=ids)
    by_id = {s.id: s for s in samples}
    truth_parts: dict[int, Detections] = {}
    truth_tags: dict[int, Detections] = {}
    for run, run_ids in group_by_run(dict(selection.truth)):
        for sample_id, det in store.annotations_of(run, sample_ids=run_ids, masks=masks).items():
            truth_parts[sample_id], truth_tags[sample_id] = split_tags(det)
    sizes_of = {i: (by_id[i].width, by_id[i].height) for i in ids}
    shown = [delivered_predictions(store, run, ids, selection.truth, sizes_of, masks=masks) for run in selection.preds]
    gone, schema_notes = _deleted_labels(selection.truth)
    pred_parts = [_without(part.detections, gone) for part in shown]
    pred_tags = [_without(part.tags, gone) for part in shown]
    shape_labels, tag_labels = _ontology_labels(selection.preds[0])
    labels = _with_extra(shape_labels, [truth_parts, *pred_parts])
    tag_labels = _with_extra(tag_labels, [truth_tags, *pred_tags])
    index = {name: i for i, name in enumerate(labels)}
    any_tag = any(len(det) for part in (truth_tags, *pred_tags) for det in part.values())

    def indexed(det: Detections, sample: SampleInfo) -> Detections:
        class_ids = np.fromiter((index[str(v)] for v in det.labels.tolist()), dtype=np.int64, count=len(det))
        det = det.with_columns(class_ids=class_ids)
        return _filled_masks(det, sample.width, sample.height) if masks else det

    sizes = np.array([(by_id[i].width, by_id[i].height) for i in ids], dtype=np.int64).reshape(-1, 2)
    uris = tuple(by_id[i].uri for i in ids)
    truth = tuple(_with_crowd(indexed(truth_parts[i], by_id[i])) for i in ids)
    result = []
    for run, part, tags, delivered in zip(selection.preds, pred_parts, pred_tags, shown):
        tag_data = None
        if any_tag:
            empty = Detections.empty()
            tag_data = TagData.from_detections(
                tag_labels, [truth_tags.get(i, empty) for i in ids], [tags.get(i, empty) for i in ids]
            )
        result.append(
            EvalData(
                labels=tuple(labels),
                sample_ids=np.array(ids, dtype=np.int64),
                uris=uris,
                sizes=sizes,
                truth=truth,
                pred=tuple(indexed(part[i], by_id[i]) for i in ids),
                truth_name=selection.truth_description,
                pred_name=run.name,
                pred_thresholds=run_thresholds(run, labels + tag_labels),
                notes=selection.notes + schema_notes + _left_out_note(delivered.left_out),
                pred_has_scores=has_scores(run),
                tags=tag_data,
            )
        )
    return result
